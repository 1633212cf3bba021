//! `run_blocking`: a blocking closure whose value the task awaits, on every
//! runtime of the matrix.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hatchery::{
    CancelScope, CancellableExt, Cancelled, Nursery, Report, checkpoint, run_blocking,
    typed::move_on_after, typed::nursery,
};

mod common;

common::matrix! {
#[test]
fn the_closure_runs_on_another_thread_and_its_value_comes_back() {
    let here = std::thread::current().id();
    let (value, thread) = block_on(run_blocking(|_cancel| (6 * 7, std::thread::current().id()))).unwrap();
    assert_eq!(value, 42);
    assert_ne!(thread, here);
}

#[test]
fn in_a_cancelled_scope_the_closure_never_runs() {
    static RAN: AtomicBool = AtomicBool::new(false);
    let scope = CancelScope::new();
    scope.handle().cancel();
    let out = block_on(scope.run_typed(async {
        let value = run_blocking(|_cancel| RAN.store(true, Ordering::SeqCst)).await;
        assert_eq!(value, Err(Cancelled));
        value
    }));
    assert!(matches!(out, Ok(None)), "{out:?}");
    assert!(!RAN.load(Ordering::SeqCst));
}

#[test]
fn a_cancel_while_it_runs_reaches_the_closure_which_is_waited_for() {
    let log = Mutex::new(Vec::new());
    let log = &log;
    let out = block_on(move_on_after(Duration::from_millis(20), async move {
        let rounds = run_blocking(|cancel| {
            let mut rounds = 0u32;
            while !cancel.is_cancelled() {
                std::thread::sleep(Duration::from_millis(1));
                rounds += 1;
            }
            rounds
        })
        .await?;
        log.lock().unwrap().push(format!("closure returned after {} rounds", rounds.min(1)));
        let next = checkpoint().await;
        log.lock().unwrap().push(format!("then the checkpoint: {next:?}"));
        next?;
        Ok::<_, Cancelled>(())
    }));
    assert_eq!(out, Ok(None));
    assert_eq!(
        *log.lock().unwrap(),
        ["closure returned after 1 rounds", "then the checkpoint: Err(Cancelled)"]
    );
}

#[test]
fn made_cancellable_it_is_abandoned_at_the_cancel() {
    // trio's `abandon_on_cancel=True`: the task stops waiting; the closure,
    // which ignores its handle, runs on unjoined and is listed abandoned.
    let (release, released) = async_channel::bounded::<()>(1);
    let line = line!() + 3;
    let (out, report) = block_on(async move {
        let out = move_on_after(Duration::from_millis(10), async move {
            run_blocking(move |_cancel| released.recv_blocking().ok())
                .cancellable()
                .await??;
            Ok::<_, Cancelled>("never reached")
        })
        .await;
        let report = Report::capture();
        // Inside the runtime: dropping tokio's waits for its blocking pool.
        release.close();
        (out, report)
    });
    assert_eq!(out, Ok(None));
    let entry = report.blocking().iter().find(|task| {
        let location = task.info().location();
        location.file().ends_with("run_blocking.rs") && location.line() == line
    });
    assert!(entry.is_some_and(|task| task.is_abandoned()), "{report}");
}

#[test]
fn dropped_unfinished_its_closure_is_told() {
    // It lost a race in a combinator: nobody waits for it any more, and the
    // closure's handle says so.
    let (told_tx, told_rx) = async_channel::bounded::<bool>(1);
    block_on(async {
        let lost = futures_lite::future::or(
            async {
                run_blocking(move |cancel| {
                    let start = std::time::Instant::now();
                    while !cancel.is_cancelled() && start.elapsed() < Duration::from_secs(10) {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    told_tx.send_blocking(cancel.is_cancelled()).ok();
                })
                .await
                .ok();
                "the closure"
            },
            async {
                hatchery::sleep(Duration::from_millis(5)).await.ok();
                "the timer"
            },
        )
        .await;
        assert_eq!(lost, "the timer");
    });
    assert_eq!(told_rx.recv_blocking(), Ok(true));
}

#[test]
fn a_panic_in_the_closure_is_resumed_in_the_task() {
    let out = catch_unwind(AssertUnwindSafe(|| {
        block_on(run_blocking(|_cancel| -> u32 { panic!("boom in the pool") }))
    }));
    let payload = out.unwrap_err();
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"boom in the pool"));
}

#[test]
fn while_it_runs_the_report_lists_it_at_the_line_that_called_it() {
    let (release, released) = async_channel::bounded::<()>(1);
    let out = block_on(nursery(|n: Nursery<'_, Cancelled>| async move {
        let line = line!() + 1;
        n.spawn(async move {
            run_blocking(move |_cancel| released.recv_blocking().ok()).await?;
            Ok(())
        });
        // Until it is listed (the pool's thread may take a moment to start).
        let mut tries = 0;
        let listed = loop {
            tries += 1;
            assert!(tries < 10_000, "never listed: {}", Report::capture());
            let report = Report::capture();
            if let Some(entry) = report
                .blocking()
                .iter()
                .find(|task| task.info().location().line() == line + 1)
            {
                break entry.info().clone();
            }
            hatchery::sleep(Duration::from_millis(1)).await?;
        };
        release.close();
        Ok(listed)
    }));
    let info = out.unwrap().unwrap();
    assert_eq!(info.name(), Some("run_blocking"));
    assert!(info.location().file().ends_with("run_blocking.rs"));
}
}
