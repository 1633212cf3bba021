//! One workload, run a given number of times, for counting instructions and
//! locked operations per child under callgrind (`benches/instructions.sh`),
//! where times cannot be trusted: a count does not depend on the machine's
//! load or on how expensive its atomics are.
//!
//! ```text
//! cargo bench --bench instructions --no-run   # builds it
//! benches/instructions.sh                      # the table
//! target/release/deps/instructions-* WORKLOAD REPS
//! ```
//!
//! Each run does the workload once to warm up (pools, buffers, lazily made
//! runtimes), then `REPS` more times; the script runs it with two values of
//! `REPS` and divides the difference by the work done, so setup and warm-up
//! cancel out.

mod common;
mod workloads;

use workloads::WORKLOADS;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` runs every bench binary with `--bench`: nothing to do.
    if args.iter().any(|arg| arg == "--bench") || args.is_empty() {
        println!("usage: instructions WORKLOAD REPS  (or `list`); see benches/instructions.sh");
        return;
    }
    if args[0] == "list" {
        for (name, units, _) in WORKLOADS {
            println!("{name} {units}");
        }
        return;
    }
    let Some((_, _, setup)) = WORKLOADS.iter().find(|(name, _, _)| *name == args[0]) else {
        eprintln!("no workload {:?}; `list` names them", args[0]);
        std::process::exit(2);
    };
    let reps: usize = args.get(1).and_then(|reps| reps.parse().ok()).unwrap_or(1);
    let mut once = setup();
    once();
    for _ in 0..reps {
        once();
    }
}
