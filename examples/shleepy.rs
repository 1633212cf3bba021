//! Two tasks sleep for 5 s and 10 s. Press Ctrl+C: each one cleans up, and the
//! program exits with status 130 (143 after SIGTERM). Nothing else appears on
//! stderr but the one line that says a graceful shutdown started.
//!
//! ```text
//! cargo run --example shleepy
//! ```

use std::time::{Duration, Instant};

use hatchery::{Cancelled, run, sleep};

fn main() {
    let out = run(|n| async move {
        for (name, secs) in [("shleepy", 5), ("shleepier", 10)] {
            n.named(name).spawn(async move {
                let start = Instant::now();
                println!("{name}: going to sleep for {secs} s");
                let slept = sleep(Duration::from_secs(secs)).await;
                // Cleanup runs on both paths: this is where files get closed,
                // buffers flushed, peers told goodbye.
                match slept {
                    Ok(()) => println!("{name}: woke up after {secs} s, cleaned up"),
                    Err(Cancelled) => println!(
                        "{name}: cancelled after {:.1} s, cleaned up",
                        start.elapsed().as_secs_f64()
                    ),
                }
                Ok(slept?)
            });
        }
        Ok(())
    });
    // Reached only without a signal: `run` exits with 130/143 after one.
    out.expect("nothing fails here");
    println!("both slept their fill");
}
