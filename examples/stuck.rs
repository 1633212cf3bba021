//! A task that cannot be cancelled: behind a shield with no deadline, it
//! awaits a timer from another crate. Press Ctrl+C: the polite task cleans
//! up, the stubborn one keeps waiting (the shield protects its await), the
//! grace period (1 s here) runs out, and the report names the stubborn task,
//! the line that spawned it and the shield that holds it; then the program
//! exits with status 130. A second Ctrl+C within that second forces the
//! shutdown at once.
//!
//! Without the shield the timer would simply be dropped on Ctrl+C: every
//! await is a cancellation point. A shield meant for cleanup should carry a
//! deadline (`CancelScope::new().shield(true).timeout(…)`), which this one
//! lacks on purpose.
//!
//! ```text
//! cargo run --example stuck
//! ```

use std::time::Duration;

use hatchery::{Builder, CancelScope, sleep};

fn main() {
    Builder::new()
        .grace_period(Duration::from_secs(1))
        .run(|n| async move {
            n.named("polite").spawn(async {
                println!("polite: working");
                let worked = sleep(Duration::from_secs(3600)).await;
                println!("polite: cancelled, cleaned up");
                Ok(worked?)
            });
            n.named("stubborn").spawn(async {
                println!("stubborn: waiting, shielded, on a timer that ignores cancellation");
                CancelScope::new()
                    .shield(true)
                    .run(async {
                        async_io::Timer::after(Duration::from_secs(3600)).await;
                        Ok(())
                    })
                    .await?;
                println!("stubborn: done");
                Ok(())
            });
            Ok(())
        })
        .expect("nothing fails here");
}
