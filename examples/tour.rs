//! A guided tour of hatchery: nurseries, cancel scopes, deadlines, shields,
//! start(), and errors. Runs by itself in about a second:
//!
//! ```text
//! cargo run --example tour
//! ```

use std::io;
use std::time::{Duration, Instant};

use futures::executor::block_on;
use hatchery::{
    Builder, CancelScope, Started, TimedOut, fail_after, move_on_after, nursery, sleep,
    sleep_forever,
};

fn say(start: Instant, what: impl std::fmt::Display) {
    println!("[{:>5} ms] {what}", start.elapsed().as_millis());
}

/// Says something when dropped.
struct Bye(Instant, &'static str);

impl Drop for Bye {
    fn drop(&mut self) {
        say(self.0, self.1);
    }
}

fn main() {
    let t = Instant::now();
    block_on(async {
        act_1_nurseries(t).await;
        act_2_deadlines(t).await;
        act_3_shields(t).await;
        act_4_start(t).await;
        act_5_errors(t).await;
    });
    act_6_ctrl_c(t);
    say(t, "tour finished: no task outlived its nursery.");
}

async fn act_1_nurseries(t: Instant) {
    println!("\n== Act 1: a nursery waits for all of its children ==");
    let names = ["small", "medium", "large"];
    let names = &names; // children may borrow from this frame
    nursery(|n| async move {
        for (i, name) in names.iter().enumerate() {
            n.spawn(async move {
                sleep(Duration::from_millis(30 * (i as u64 + 1))).await?;
                say(t, format!("child: the {name} download finished"));
                Ok(())
            });
        }
        say(t, "body: spawned 3 children, and the body is done already");
        Ok(())
    })
    .await
    .expect("no child fails here");
    say(t, "nursery returned: only now, after all three children");
}

async fn act_2_deadlines(t: Instant) {
    println!("\n== Act 2: deadlines cancel a whole tree, and the scope catches it ==");
    let out = move_on_after(Duration::from_millis(100), async {
        nursery(|n| async move {
            for i in 1..=2 {
                n.spawn(async move {
                    let result = sleep(Duration::from_secs(3600)).await;
                    say(
                        t,
                        format!("worker {i}: cancelled ({result:?}), cleaning up"),
                    );
                    Ok(result?)
                });
            }
            sleep_forever().await?;
            Ok(())
        })
        .await?;
        Ok("finished")
    })
    .await;
    say(
        t,
        format!("move_on_after(100 ms) returned {out:?}: it caught its own deadline"),
    );

    let timed_out = fail_after(Duration::from_millis(20), async {
        sleep(Duration::from_secs(3600)).await?;
        Ok(())
    })
    .await;
    if let Err(error) = timed_out {
        say(
            t,
            format!(
                "fail_after(20 ms) returned an error (a timeout: {}): {error}",
                error.downcast_ref::<TimedOut>().is_some()
            ),
        );
    }
}

async fn act_3_shields(t: Instant) {
    println!("\n== Act 3: a shield lets cleanup finish inside a cancelled scope ==");
    let scope = CancelScope::new().timeout(Duration::from_millis(50));
    let handle = scope.handle();
    let out = scope
        .run(async {
            let result = sleep_forever().await;
            say(t, "cancelled by the deadline; flushing behind a shield...");
            CancelScope::new()
                .shield(true)
                .run(async {
                    sleep(Duration::from_millis(50)).await?; // would fail without the shield
                    say(t, "...flushed 3 buffered records");
                    Ok(())
                })
                .await?;
            Ok(result.map(|never| match never {})?)
        })
        .await;
    say(
        t,
        format!(
            "scope returned {out:?}; cancel_called={}, cancelled_caught={}",
            handle.cancel_called(),
            handle.cancelled_caught()
        ),
    );
}

async fn act_4_start(t: Instant) {
    println!("\n== Act 4: start() waits until a child says it is ready ==");
    nursery(|n| async move {
        let port = n
            .start(|status: Started<u16>| async move {
                sleep(Duration::from_millis(20)).await?; // binding a socket, say
                status.started(8080);
                say(t, "server: ready, now serving until cancelled");
                let result = sleep_forever().await;
                say(t, "server: shutting down");
                result?;
                Ok(())
            })
            .await?;
        say(
            t,
            format!("body: the server listens on port {port}; talking to it..."),
        );
        sleep(Duration::from_millis(20)).await?;
        say(t, "body: done, cancelling the nursery (the server with it)");
        n.cancel_scope().cancel();
        Ok(())
    })
    .await
    .expect("nothing fails here");
}

async fn act_5_errors(t: Instant) {
    println!("\n== Act 5: a failing child cancels its siblings; every error is reported ==");
    let result = nursery(|n| async move {
        n.named("uploader").spawn(async move {
            let result = sleep(Duration::from_secs(3600)).await;
            say(
                t,
                "uploader: cancelled because a sibling failed; cleaned up",
            );
            result?;
            Ok(())
        });
        n.named("config-loader").spawn(async move {
            sleep(Duration::from_millis(20)).await?;
            say(t, "config-loader: failing");
            Err(io::Error::new(io::ErrorKind::NotFound, "config.toml not found").into())
        });
        sleep_forever().await?;
        Ok(())
    })
    .await;
    match result {
        Ok(_) => unreachable!("the config loader always fails"),
        Err(error) => {
            say(
                t,
                format!("nursery returned after everyone finished:\n    {error}"),
            );
        }
    }
}

fn act_6_ctrl_c(t: Instant) {
    println!("\n== Act 6: Ctrl+C cancels the root scope; a stuck shutdown is explained ==");
    println!("(the tour sends itself SIGINT; watch stderr for hatchery's own lines)");
    let out = Builder::new()
        .grace_period(Duration::from_millis(300))
        .exit_on_signal(false) // so the tour can go on; a program would exit 130
        .run(|n| async move {
            n.named("saver").spawn(async move {
                let result = sleep(Duration::from_secs(3600)).await;
                say(t, "saver: cancelled; flushed its buffers");
                Ok(result?)
            });
            n.named("reader").spawn(async move {
                // A future from another crate cannot see the cancellation:
                // the nursery drops it there (and `_bye` runs).
                let _bye = Bye(
                    t,
                    "reader: dropped at its foreign await, nobody waits on it",
                );
                async_io::Timer::after(Duration::from_secs(3600)).await;
                Ok(())
            });
            n.named("stubborn").spawn(async move {
                // Behind a shield without a deadline, nothing reaches it: the
                // report will name this task and this file's line that
                // spawned it (a cleanup shield should carry a deadline).
                CancelScope::new()
                    .shield(true)
                    .run(async {
                        async_io::Timer::after(Duration::from_secs(3600)).await;
                        Ok(())
                    })
                    .await?;
                Ok(())
            });
            sleep(Duration::from_millis(20)).await?;
            say(t, "body: sending myself SIGINT, as Ctrl+C would");
            interrupt_myself();
            if sleep(Duration::from_secs(2)).await.is_ok() {
                // A process started in the background by a script inherits
                // SIGINT as ignored, and hatchery leaves it that way.
                say(
                    t,
                    "body: SIGINT is ignored in this process; cancelling by hand",
                );
                n.cancel_scope().cancel();
            }
            Ok(())
        });
    match out {
        Err(error) => match error.interrupted() {
            Some(signal) => say(
                t,
                format!(
                    "run returned once the shutdown was forced: {error} (a program would exit {})",
                    signal.exit_code()
                ),
            ),
            None => say(
                t,
                format!("run returned once the shutdown was forced: {error}"),
            ),
        },
        Ok(_) => unreachable!("the run was interrupted"),
    }
}

#[cfg(unix)]
fn interrupt_myself() {
    signal_hook::low_level::raise(signal_hook::consts::SIGINT).expect("raise(SIGINT)");
}

#[cfg(not(unix))]
fn interrupt_myself() {
    println!("(no signals on this platform: skipping the act)");
}
