//! A task that ignores cancellation: it awaits a timer that knows nothing
//! about cancel scopes (any future from another crate can do this). Press
//! Ctrl+C: the polite task cleans up, the stubborn one does not, the grace
//! period (1 s here) runs out, and the report names the stubborn task and the
//! line that spawned it; then the program exits with status 130. A second
//! Ctrl+C within that second forces the shutdown at once.
//!
//! ```text
//! cargo run --example stuck
//! ```

use std::time::Duration;

use hatchery::{Builder, Cancelled, Nursery, sleep};

fn main() {
    Builder::new()
        .grace_period(Duration::from_secs(1))
        .run(|n: Nursery<'_, Cancelled>| async move {
            n.spawn_named("polite", async {
                println!("polite: working");
                let worked = sleep(Duration::from_secs(3600)).await;
                println!("polite: cancelled, cleaned up");
                worked
            });
            n.spawn_named("stubborn", async {
                println!("stubborn: waiting on a timer that ignores cancellation");
                async_io::Timer::after(Duration::from_secs(3600)).await;
                println!("stubborn: done");
                Ok(())
            });
            Ok(())
        })
        .expect("nothing fails here");
}
