//! Random trees of nurseries, cancel scopes and tasks, checked against a
//! model: see tests/fuzz_program/mod.rs for the program language and the
//! invariants. Run with `cargo fuzz run nursery_tree --sanitizer none`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/fuzz_program/mod.rs"]
mod fuzz_program;

fuzz_target!(|data: &[u8]| {
    let program = fuzz_program::decode(data);
    if let Err(why) = fuzz_program::run(&program) {
        panic!("{why}\nprogram: {program:?}");
    }
});
