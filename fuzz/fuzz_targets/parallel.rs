//! Random trees of nurseries whose children run in parallel on a
//! four-thread executor (and inline), checked by the oracles that do not
//! depend on the interleaving: see tests/fuzz_program/parallel.rs. Run with
//! `cargo fuzz run parallel --sanitizer none`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/fuzz_program/mod.rs"]
mod fuzz_program;

fuzz_target!(|data: &[u8]| {
    let program = fuzz_program::parallel::decode(data);
    if let Err(why) = fuzz_program::parallel::run(&program) {
        panic!("{why}\nprogram: {program:?}");
    }
});
