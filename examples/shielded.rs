//! Three tasks write records that must not be cut in half (each write takes
//! 2 s, inside a shielded scope); three others just wait. Press Ctrl+C: the
//! waiting tasks are cancelled at once, the writers finish the record in
//! flight, and the program exits with status 130.
//!
//! ```text
//! cargo run --example shielded
//! ```

use std::time::Duration;

use hatchery::{CancelScope, checkpoint, run, sleep};

fn main() {
    run(|n| async move {
        for i in 1..=3 {
            n.named(format!("writer {i}")).spawn(async move {
                for record in 1.. {
                    println!("writer {i}: writing record {record}");
                    // A cancel from outside cannot cut the write short.
                    CancelScope::new()
                        .shield(true)
                        .run(async { Ok(sleep(Duration::from_secs(2)).await?) })
                        .await?;
                    println!("writer {i}: record {record} done");
                    // Between records, the cancellation gets through.
                    if let Err(cancelled) = checkpoint().await {
                        println!("writer {i}: stopping after record {record}");
                        return Err(cancelled.into());
                    }
                }
                Ok(())
            });
            n.named(format!("waiter {i}")).spawn(async move {
                println!("waiter {i}: waiting");
                let waited = sleep(Duration::from_secs(3600)).await;
                if waited.is_err() {
                    println!("waiter {i}: cancelled");
                }
                Ok(waited?)
            });
        }
        Ok(())
    })
    .expect("nothing fails here");
}
