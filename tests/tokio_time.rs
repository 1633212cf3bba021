//! Inside a tokio runtime, hatchery's time is tokio's: its deadlines and
//! sleeps follow tokio's clock, paused or not, as `tokio::time::timeout`
//! does. Found by an adversarial round: under `start_paused`, tokio jumped
//! its clock an hour past a hatchery deadline it did not know of (the body
//! "finished" inside a one-second `move_on_after`). (`run`'s tokio root is
//! a multi-thread runtime, whose clock tokio does not let pause.)

#![cfg(feature = "tokio")]

use std::time::Duration;

use hatchery::{Builder, Cancelled, move_on_after, sleep, typed};

/// A current-thread runtime with tokio's clock paused from the start, as
/// `#[tokio::test(start_paused = true)]` builds.
fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap()
}

#[test]
fn a_deadline_under_tokios_paused_clock_fires_before_a_longer_tokio_sleep() {
    let out = paused_runtime().block_on(async {
        let start = tokio::time::Instant::now();
        let out = typed::move_on_after(Duration::from_secs(1), async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok::<_, Cancelled>("the hour passed")
        })
        .await;
        (out, start.elapsed())
    });
    assert_eq!(out, (Ok(None), Duration::from_secs(1)));
}

#[test]
fn hatchery_sleep_under_tokios_paused_clock_takes_tokios_time() {
    let real = std::time::Instant::now();
    let elapsed = paused_runtime().block_on(async {
        let start = tokio::time::Instant::now();
        sleep(Duration::from_secs(60)).await.unwrap();
        // Tokio's own timers and hatchery's, in one clock.
        let out = move_on_after(Duration::from_secs(5), async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            sleep(Duration::from_secs(10)).await?;
            Ok(())
        })
        .await
        .unwrap();
        assert_eq!(out, None);
        start.elapsed()
    });
    assert_eq!(elapsed, Duration::from_secs(65));
    // Not 65 seconds of real time: the paused clock jumped.
    assert!(
        real.elapsed() < Duration::from_secs(30),
        "{:?}",
        real.elapsed()
    );
}

/// Runs `f` on a thread of its own; fails the test if it takes more than
/// ten seconds (a hang, not a slow machine: the work takes milliseconds).
fn within_ten_seconds<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (send, receive) = std::sync::mpsc::channel();
    std::thread::spawn(move || send.send(f()));
    receive
        .recv_timeout(Duration::from_secs(10))
        .expect("hung: no timer fired")
}

/// A 20 ms `move_on_after` around an hour's sleep, driven by futures'
/// `block_on` inside `runtime` entered (which nothing else drives).
fn twenty_ms_deadline_undriven(runtime: &tokio::runtime::Runtime) -> Result<Option<()>, Cancelled> {
    let _entered = runtime.enter();
    futures::executor::block_on(typed::move_on_after(Duration::from_millis(20), async {
        sleep(Duration::from_secs(3600)).await?;
        Ok::<_, Cancelled>(())
    }))
}

/// A current-thread runtime fires its timers only while its `block_on`
/// runs: entered with `Handle::enter` and driven by another executor, its
/// timer never fires, and hatchery's deadlines must not depend on it (a
/// review found `move_on_after` and `run`'s grace period hanging there).
#[test]
fn a_deadline_fires_in_an_entered_current_thread_runtime_driven_by_another_executor() {
    let out = within_ten_seconds(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        twenty_ms_deadline_undriven(&runtime)
    });
    assert_eq!(out, Ok(None));
}

/// Inside a tokio runtime, `spawn_blocking` closures run on tokio's
/// blocking pool: tokio's types work in them (a new user found
/// `Handle::current()` panicking there on the tokio root: smol's pool ran
/// them, outside the runtime).
#[test]
fn spawn_blocking_on_the_tokio_root_runs_inside_the_runtime() {
    let out = Builder::new().tokio().run(|n| async move {
        n.spawn_blocking(|_cancel| {
            let handle = tokio::runtime::Handle::try_current();
            assert!(handle.is_ok(), "no tokio runtime in spawn_blocking");
            Ok(())
        });
        Ok(())
    });
    assert_eq!(out.unwrap(), Some(()));
}

/// Under a paused clock, tokio does not jump its clock while a blocking
/// closure runs (as for `tokio::task::spawn_blocking`): a closure of 30
/// short steps inside a five-second `move_on_after` finishes them all (a
/// review found it told to stop after none: the clock jumped to the
/// deadline at once).
#[test]
fn a_paused_clock_waits_for_a_blocking_closure() {
    let steps = paused_runtime().block_on(async {
        let steps = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = std::sync::Arc::clone(&steps);
        let out = move_on_after(
            Duration::from_secs(5),
            hatchery::nursery(move |n| async move {
                n.spawn_blocking(move |cancel| {
                    for _ in 0..30 {
                        if cancel.is_cancelled() {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(2));
                        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Ok(())
                });
                Ok(())
            }),
        )
        .await
        .unwrap();
        assert!(out.is_some(), "the deadline passed");
        steps.load(std::sync::atomic::Ordering::Relaxed)
    });
    assert_eq!(steps, 30);
}

/// A grace period under a paused clock that tokio holds (a tokio blocking
/// task runs, so it does not auto-advance) lasts in tokio's time: the work
/// inside `cancel_gracefully` finishes however long it takes in real time
/// (a review found the grace cut at one real second: the real-time
/// fallback timer completed the wait without asking tokio's clock).
#[test]
fn a_grace_period_under_a_held_paused_clock_is_tokios_time() {
    use hatchery::CancellableExt;
    let out = paused_runtime().block_on(async {
        typed::nursery(|n: hatchery::Nursery<'_, Cancelled>| async move {
            n.cancel_scope().cancel();
            let work = tokio::task::spawn_blocking(|| {
                std::thread::sleep(Duration::from_millis(1200));
                "drained"
            });
            let how = work.cancel_gracefully(Duration::from_secs(1), |_| {}).await;
            assert!(matches!(how, Ok(Ok("drained"))), "{how:?}");
            Ok(())
        })
        .await
    });
    assert!(matches!(out, Ok(Some(()))), "{out:?}");
}

/// The real-time fallback counts what is left on tokio's clock, which a
/// test may have moved ahead of the real one (`advance`, then `resume`): a
/// 20 ms deadline then fires after 20 ms, not an hour (a review).
#[test]
fn the_fallback_timer_counts_on_tokios_clock_ahead_of_the_real_one() {
    let out = within_ten_seconds(|| {
        let runtime = paused_runtime();
        runtime.block_on(async {
            tokio::time::advance(Duration::from_secs(3600)).await;
            tokio::time::resume();
        });
        twenty_ms_deadline_undriven(&runtime)
    });
    assert_eq!(out, Ok(None));
}

/// A paused clock resumed (from another thread) while a deadline waits in
/// an entered runtime that nothing drives: the fallback looks at tokio's
/// clock again after it first fired too early, and the deadline fires (a
/// review: the fallback was dropped, and nothing ever woke the task).
#[test]
fn a_paused_clock_resumed_while_a_deadline_waits_in_an_undriven_runtime() {
    let out = within_ten_seconds(|| {
        let runtime = paused_runtime();
        let handle = runtime.handle().clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            let _entered = handle.enter();
            tokio::time::resume();
        });
        twenty_ms_deadline_undriven(&runtime)
    });
    assert_eq!(out, Ok(None));
}
