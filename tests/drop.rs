//! Drop is the hard cancel: dropping a nursery or scope future drops every
//! child synchronously; nothing keeps running.

use std::sync::{Arc, Mutex};
use std::task::Poll;

use hatchery::{
    CancelScope, Cancelled, Nursery, SpawnError, Started, checkpoint, sleep_forever, typed::nursery,
};

mod common;

common::matrix! {
/// Pushes its name into the log when dropped.
struct DropGuard(&'static str, Arc<Mutex<Vec<&'static str>>>);

impl Drop for DropGuard {
    fn drop(&mut self) {
        self.1.lock().unwrap().push(self.0);
    }
}

#[test]
fn dropping_a_nursery_mid_flight_drops_every_child() {
    let dropped = Arc::new(Mutex::new(Vec::new()));
    let ran_after = Arc::new(Mutex::new(false));
    let mut escaped = None;
    block_on(async {
        let log = dropped.clone();
        let ran = ran_after.clone();
        let fut = nursery(|n: Nursery<'_, Cancelled>| {
            escaped = Some(n.clone());
            async move {
                let guard = DropGuard("body", log.clone());
                for name in ["child 1", "child 2"] {
                    let guard = DropGuard(name, log.clone());
                    let ran = ran.clone();
                    n.spawn(async move {
                        let _guard = guard;
                        sleep_forever().await?;
                        *ran.lock().unwrap() = true;
                        Ok(())
                    });
                }
                let inner_log = log.clone();
                n.spawn(async move {
                    nursery(|inner: Nursery<'_, Cancelled>| async move {
                        let guard = DropGuard("grandchild", inner_log);
                        inner.spawn(async move {
                            let _guard = guard;
                            sleep_forever().await?;
                            Ok(())
                        });
                        Ok(())
                    })
                    .await?;
                    Ok(())
                });
                sleep_forever().await?;
                drop(guard);
                Ok(())
            }
        });
        let mut fut = Box::pin(fut);
        // Let everything start and park.
        for _ in 0..3 {
            assert!(matches!(futures::poll!(fut.as_mut()), Poll::Pending));
        }
        assert!(dropped.lock().unwrap().is_empty());
        drop(fut);
    });
    let mut dropped = dropped.lock().unwrap().clone();
    dropped.sort();
    assert_eq!(dropped, ["body", "child 1", "child 2", "grandchild"]);
    assert!(!*ran_after.lock().unwrap(), "no child ran past its await");
    let n = escaped.unwrap();
    assert_eq!(n.try_spawn(async { Ok(()) }), Err(SpawnError::Closed));
}

/// A blocking closure cannot be dropped; a hard cancel tells it through
/// its handle instead (with the reason), so that a closure that polls
/// `is_cancelled` ends on its own instead of running for the life of the
/// process.
#[test]
fn dropping_a_nursery_mid_flight_tells_its_blocking_closures() {
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let (ended_tx, ended_rx) = std::sync::mpsc::channel();
    block_on(async {
        let fut = nursery(|n: Nursery<'_, Cancelled>| async move {
            n.spawn_blocking(move |cancel| {
                started_tx.send(()).unwrap();
                while !cancel.is_cancelled() {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                ended_tx.send(cancel.reason()).unwrap();
                Err(Cancelled)
            });
            sleep_forever().await?;
            Ok(())
        });
        let mut fut = Box::pin(fut);
        assert!(matches!(futures::poll!(fut.as_mut()), Poll::Pending));
        started_rx.recv().unwrap();
        drop(fut);
    });
    let reason = ended_rx
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("the abandoned closure was never told");
    assert_eq!(
        reason.map(|reason| reason.to_string()),
        Some("its nursery was dropped before it finished".to_owned())
    );
}

#[test]
fn dropping_a_scope_future_drops_its_body() {
    let dropped = Arc::new(Mutex::new(Vec::new()));
    let guard = DropGuard("scope body", dropped.clone());
    let scope = CancelScope::new();
    let handle = scope.handle();
    let mut fut = Box::pin(scope.run_typed(async move {
        let _guard = guard;
        sleep_forever().await?;
        Ok::<_, Cancelled>(())
    }));
    block_on(async {
        assert!(matches!(futures::poll!(fut.as_mut()), Poll::Pending));
    });
    drop(fut);
    assert_eq!(*dropped.lock().unwrap(), ["scope body"]);
    // The handle outlives the scope and still works.
    handle.cancel();
    assert!(handle.cancel_called() && !handle.cancelled_caught());
}

#[test]
fn dropping_a_start_in_flight_drops_the_starting_child_and_frees_the_nursery() {
    let dropped = Arc::new(Mutex::new(Vec::new()));
    let log = dropped.clone();
    let out = block_on(nursery(|n: Nursery<'_, Cancelled>| async move {
        let guard = DropGuard("starting child", log);
        let mut start = Box::pin(n.start(|status: Started<()>| async move {
            let _guard = guard;
            sleep_forever().await?;
            status.started(());
            Ok(())
        }));
        assert!(matches!(futures::poll!(start.as_mut()), Poll::Pending));
        drop(start);
        checkpoint().await?;
        Ok("nursery still closes")
    }));
    assert_eq!(out.unwrap(), Some("nursery still closes"));
    assert_eq!(*dropped.lock().unwrap(), ["starting child"]);
}

#[test]
fn a_child_whose_drop_panics_still_leaves_the_scope_tree_clean() {
    struct Bomb;
    impl Drop for Bomb {
        fn drop(&mut self) {
            if !std::thread::panicking() {
                panic!("drop bomb");
            }
        }
    }
    let outer = CancelScope::new();
    let outer_handle = outer.handle();
    let mut nursery_scope = None;
    let fut = outer.run_typed(nursery(|n: Nursery<'_, Cancelled>| {
        nursery_scope = Some(n.cancel_scope());
        async move {
            n.spawn(async {
                let _bomb = Bomb;
                sleep_forever().await?;
                Ok(())
            });
            sleep_forever().await?;
            Ok(())
        }
    }));
    let mut fut = Box::pin(fut);
    block_on(async {
        for _ in 0..3 {
            assert!(matches!(futures::poll!(fut.as_mut()), Poll::Pending));
        }
    });
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(fut)));
    assert!(result.is_err(), "the bomb went off");
    // The nursery's scope was detached from the outer one despite the panic
    // (the outer scope has no child scope left), and was told the hard
    // cancel.
    assert_eq!(hatchery::Report::of(&outer_handle).scopes().len(), 1);
    let nursery_scope = nursery_scope.unwrap();
    assert_eq!(
        nursery_scope.reason().map(|reason| reason.to_string()),
        Some("its nursery was dropped before it finished".to_owned())
    );
}
}
