//! The `nursery_tree` programs with `Report::capture()` after every step:
//! the report never panics, never lists a task twice, and never misses a
//! spawned task that has run and not ended (see tests/fuzz_program/mod.rs).
//! Run with `cargo fuzz run report_capture --sanitizer none`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/fuzz_program/mod.rs"]
mod fuzz_program;

fuzz_target!(|data: &[u8]| {
    let program = fuzz_program::decode_reporting(data);
    if let Err(why) = fuzz_program::run(&program) {
        panic!("{why}\nprogram: {program:?}");
    }
});
