//! start(): the caller gets the value passed to `started`, then the child
//! belongs to the nursery.
//!
//! Calling `started` twice is a compile error (`started` consumes the handle);
//! the compile_fail doc test on `hatchery::Started` proves it.

use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;
use std::time::Duration;

use hatchery::{
    CancelError, CancelScope, Cancelled, Nursery, Started, checkpoint, sleep, sleep_forever,
    typed::nursery,
};

mod common;

common::matrix! {
type Log = Mutex<Vec<&'static str>>;

#[test]
fn start_returns_the_started_value_and_the_nursery_then_waits_for_the_child() {
    let log = Log::default();
    let log = &log;
    block_on(async {
        nursery(|n: Nursery<'_, Cancelled>| async move {
            let port = n
                .start(|status: Started<u16>| async move {
                    log.lock().unwrap().push("child starting");
                    checkpoint().await?;
                    status.started(8080);
                    sleep(Duration::from_millis(20)).await?;
                    log.lock().unwrap().push("child done");
                    Ok(())
                })
                .await?;
            assert_eq!(port, 8080);
            log.lock().unwrap().push("start returned");
            Ok(())
        })
        .await
        .unwrap();
        log.lock().unwrap().push("nursery returned");
    });
    assert_eq!(
        *log.lock().unwrap(),
        [
            "child starting",
            "start returned",
            "child done",
            "nursery returned"
        ]
    );
}

#[test]
fn an_error_before_started_comes_out_of_start_unwrapped() {
    let out = block_on(nursery(|n: Nursery<'_, io::Error>| async move {
        let result = n
            .start(|status: Started<()>| async move {
                let _status = status; // never called: the child fails first
                checkpoint().await?;
                Err(io::Error::new(io::ErrorKind::AddrInUse, "port taken"))
            })
            .await;
        let error = result.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::AddrInUse);
        Ok("the body handled it")
    }));
    // Not a failure of the nursery: the caller got it.
    assert_eq!(out.unwrap(), Some("the body handled it"));
}

#[test]
fn finishing_without_started_is_a_clear_error() {
    let caught = catch_unwind(AssertUnwindSafe(|| {
        block_on(nursery(|n: Nursery<'_, Cancelled>| async move {
            n.start(|_status: Started<()>| async { Ok(()) }).await?;
            Ok(())
        }))
    }));
    let payload = caught.unwrap_err();
    let message = payload.downcast_ref::<String>().unwrap();
    assert!(message.contains("without calling `started()`"), "{message}");
    assert!(
        message.contains("tests/start.rs"),
        "names the start() call: {message}"
    );
}

#[test]
fn cancelling_the_caller_cancels_the_child_while_it_starts() {
    let log = Log::default();
    let log = &log;
    let out = block_on(nursery(|n: Nursery<'_, Cancelled>| async move {
        let caller = CancelScope::new();
        let caller_handle = caller.handle();
        n.spawn(async move {
            checkpoint().await?;
            caller_handle.cancel();
            Ok(())
        });
        let started = caller
            .run_typed(n.start(|status: Started<()>| async move {
                let result = sleep_forever().await;
                log.lock().unwrap().push("starting child cancelled");
                result?;
                status.started(());
                Ok(())
            }))
            .await?;
        assert_eq!(started, None, "the caller's scope caught the cancellation");
        checkpoint().await?; // the nursery itself is not cancelled
        log.lock().unwrap().push("body continues");
        Ok(())
    }));
    assert_eq!(out.unwrap(), Some(()));
    assert_eq!(
        *log.lock().unwrap(),
        ["starting child cancelled", "body continues"]
    );
}

#[test]
fn after_started_the_child_belongs_to_the_nursery_scope() {
    let log = Log::default();
    let log = &log;
    let out = block_on(nursery(|n: Nursery<'_, Cancelled>| async move {
        let caller = CancelScope::new();
        let caller_handle = caller.handle();
        caller
            .run_typed(async {
                n.start(|status: Started<()>| async move {
                    status.started(());
                    // The caller's scope is cancelled below; this child is no
                    // longer in it.
                    checkpoint().await?;
                    checkpoint().await?;
                    log.lock()
                        .unwrap()
                        .push("started child unaffected by the caller");
                    let result = sleep_forever().await;
                    log.lock()
                        .unwrap()
                        .push("started child cancelled with the nursery");
                    result?;
                    Ok(())
                })
                .await?;
                caller_handle.cancel();
                checkpoint().await
            })
            .await?;
        sleep(Duration::from_millis(10)).await?;
        n.cancel_scope().cancel();
        Ok(())
    }));
    assert_eq!(out.unwrap(), Some(()));
    assert_eq!(
        *log.lock().unwrap(),
        [
            "started child unaffected by the caller",
            "started child cancelled with the nursery"
        ]
    );
}

#[test]
fn an_error_after_started_is_a_failure_of_the_nursery() {
    let out = block_on(nursery(|n: Nursery<'_, io::Error>| async move {
        n.start(|status: Started<()>| async move {
            status.started(());
            Err(io::Error::other("failed after starting"))
        })
        .await?;
        sleep_forever().await?;
        Ok(())
    }));
    let error = out.unwrap_err();
    assert_eq!(error.failures().len(), 1);
    assert_eq!(
        error.failures()[0].error.to_string(),
        "failed after starting"
    );
}

#[test]
fn a_child_failing_as_it_is_handed_over_has_cancelled_the_nursery_when_start_returns() {
    // `started`, then an error (or a panic) in the same poll: as in trio,
    // where the child's failure cancels the nursery in the step that
    // resumes the caller, the caller goes on in a nursery already told.
    let log = Log::default();
    let log = &log;
    let ran = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ran = &ran;
    let out = block_on(nursery(|n: Nursery<'_, io::Error>| async move {
        n.start(|status: Started<()>| async move {
            status.started(());
            Err(io::Error::other("failed as it started"))
        })
        .await?;
        log.lock().unwrap().push(if n.cancel_scope().is_cancelled() {
            "start returned into a cancelled nursery"
        } else {
            "start returned into a nursery not told yet"
        });
        // A blocking closure spawned now never runs.
        let ran = std::sync::Arc::clone(ran);
        n.spawn_blocking(move |_| {
            ran.store(true, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        });
        Ok(())
    }));
    let error = out.unwrap_err();
    assert_eq!(error.failures().len(), 1, "{error:?}");
    assert_eq!(*log.lock().unwrap(), ["start returned into a cancelled nursery"]);
    assert!(!ran.load(std::sync::atomic::Ordering::SeqCst));

    let panicked = catch_unwind(AssertUnwindSafe(|| {
        block_on(nursery(|n: Nursery<'_, io::Error>| async move {
            n.start(|status: Started<()>| async move {
                status.started(());
                panic!("panicked as it started")
            })
            .await?;
            log.lock().unwrap().push(if n.cancel_scope().is_cancelled() {
                "after the panic: cancelled"
            } else {
                "after the panic: not told yet"
            });
            Ok(())
        }))
    }));
    assert!(panicked.is_err());
    assert_eq!(log.lock().unwrap()[1..], ["after the panic: cancelled"]);
}

#[test]
fn a_started_child_that_cancels_its_own_scope_ends_quietly() {
    // After `started`, the child runs in a task scope of its own under the
    // nursery's: cancelling it (`current_scope()`) cancels that child only,
    // and that scope catches the `Cancelled` it unwinds with, as any
    // cancelled scope does: nothing escapes the nursery.
    let log = Log::default();
    let log = &log;
    let out = block_on(nursery(|n: Nursery<'_, io::Error>| async move {
        n.named("sibling").spawn(async move {
            let slept = sleep(Duration::from_millis(30)).await;
            log.lock().unwrap().push(if slept.is_ok() {
                "sibling finished"
            } else {
                "sibling cancelled"
            });
            slept?;
            Ok(())
        });
        n.start(|status: Started<()>| async move {
            status.started(());
            checkpoint().await?;
            hatchery::current_scope().unwrap().cancel();
            checkpoint().await?;
            log.lock().unwrap().push("past a checkpoint in a cancelled scope");
            Ok(())
        })
        .await?;
        Ok(1)
    }));
    assert_eq!(out.unwrap(), Some(1));
    assert_eq!(*log.lock().unwrap(), ["sibling finished"]);
}

#[test]
fn a_child_that_cancels_its_own_scope_before_started_still_gives_its_value() {
    // Cancelled, `started` leaves the child under `start()`; it unwinds
    // with the `Cancelled` of its own scope, which catches it: the value is
    // the caller's, and nothing escapes into the nursery.
    let out = block_on(nursery(|n: Nursery<'_, io::Error>| async move {
        let value = n
            .start(|status: Started<u32>| async move {
                hatchery::current_scope().unwrap().cancel();
                status.started(7);
                checkpoint().await?;
                Ok(())
            })
            .await?;
        assert!(!n.cancel_scope().is_cancelled());
        Ok(value)
    }));
    assert_eq!(out.unwrap(), Some(7));

    // Without `started`, it is the same mistake as returning without it.
    let panicked = catch_unwind(AssertUnwindSafe(|| {
        block_on(nursery(|n: Nursery<'_, io::Error>| async move {
            n.start(|_status: Started<u32>| async move {
                hatchery::current_scope().unwrap().cancel();
                checkpoint().await?;
                Ok(())
            })
            .await?;
            Ok(())
        }))
    }));
    let payload = panicked.unwrap_err();
    let message = payload.downcast_ref::<String>().map(String::as_str).unwrap_or("");
    assert!(message.contains("returned without calling `started()`"), "{message}");
}

#[test]
fn a_started_child_that_returns_cancelled_early_is_not_a_failure() {
    let out = block_on(nursery(|n: Nursery<'_, io::Error>| async move {
        n.cancel_scope().cancel();
        let result = n
            .start(|status: Started<()>| async move {
                checkpoint().await?;
                status.started(());
                Ok(())
            })
            .await;
        assert!(result.unwrap_err().is_cancelled());
        Ok(())
    }));
    assert_eq!(out.unwrap(), Some(()));
}

#[test]
fn starting_into_a_closed_nursery_panics_clearly() {
    let mut escaped = None;
    block_on(nursery(|n: Nursery<'_, Cancelled>| {
        escaped = Some(n.clone());
        async { Ok(()) }
    }))
    .unwrap();
    let n = escaped.unwrap();
    let caught = catch_unwind(AssertUnwindSafe(|| {
        block_on(n.start(|status: Started<()>| async move {
            status.started(());
            Ok(())
        }))
    }));
    let payload = caught.unwrap_err();
    let message = payload.downcast_ref::<String>().unwrap();
    assert!(message.contains("already closed"), "{message}");
}

#[test]
fn started_from_another_thread_wakes_start() {
    let out = block_on(hatchery::typed::move_on_after(Duration::from_secs(10), async {
        nursery(|n: Nursery<'_, Cancelled>| async move {
            let value = n
                .start(|status: Started<u32>| async move {
                    std::thread::spawn(move || {
                        std::thread::sleep(Duration::from_millis(10));
                        status.started(7);
                    });
                    sleep_forever().await?; // never wakes by itself
                    Ok(())
                })
                .await?;
            assert_eq!(value, 7);
            n.cancel_scope().cancel();
            Ok(())
        })
        .await?;
        Ok::<_, hatchery::NurseryError<Cancelled>>(())
    }));
    // Ok(None) would mean start() slept until the 10 s guard.
    assert!(matches!(out, Ok(Some(()))), "{out:?}");
}

#[test]
fn started_from_a_sibling_wakes_start() {
    let out = block_on(hatchery::typed::move_on_after(Duration::from_secs(10), async {
        nursery(|n: Nursery<'_, Cancelled>| async move {
            let sibling = n.clone();
            let value = n
                .start(|status: Started<u32>| async move {
                    sibling.spawn(async move {
                        status.started(7);
                        Ok(())
                    });
                    sleep_forever().await?;
                    Ok(())
                })
                .await?;
            assert_eq!(value, 7);
            n.cancel_scope().cancel();
            Ok(())
        })
        .await?;
        Ok::<_, hatchery::NurseryError<Cancelled>>(())
    }));
    assert!(matches!(out, Ok(Some(()))), "{out:?}");
}

#[test]
fn from_the_started_call_on_the_callers_cancellation_no_longer_applies() {
    let out = block_on(nursery(|n: Nursery<'_, Cancelled>| async move {
        let caller = CancelScope::new();
        let caller_handle = caller.handle();
        let started = caller
            .run_typed(n.start(|status: Started<()>| async move {
                status.started(());
                // Same poll: already in the (uncancelled) nursery's scope.
                caller_handle.cancel();
                sleep(Duration::from_millis(5)).await?;
                Ok(())
            }))
            .await;
        assert_eq!(started, Ok(Some(())));
        Ok(())
    }));
    assert!(
        matches!(out, Ok(Some(()))),
        "no cancellation may escape: {out:?}"
    );
}

/// Issue 15, item 1 (trio `test_nursery_start`): `started` in a caller that
/// is already cancelled moves nothing; the child stays under `start()`.
#[test]
fn started_in_a_cancelled_caller_leaves_the_child_under_start() {
    let log = Log::default();
    let log = &log;
    let out = block_on(nursery(|n: Nursery<'_, io::Error>| async move {
        // It finishes without a checkpoint: start() returns the value.
        let caller = CancelScope::new();
        caller.handle().cancel();
        let value = caller
            .run_typed(async {
                n.start(|status: Started<&str>| async move {
                    status.started("value");
                    log.lock().unwrap().push("stayed and finished");
                    Ok(())
                })
                .await
            })
            .await?;
        assert_eq!(value, Some("value"));
        // It meets a checkpoint after started(): Cancelled, caught by the
        // caller's scope, never by the nursery.
        let caller = CancelScope::new();
        caller.handle().cancel();
        let value = caller
            .run_typed(async {
                n.start(|status: Started<&str>| async move {
                    status.started("value");
                    let slept = sleep_forever().await;
                    log.lock().unwrap().push("stayed and was cancelled");
                    slept?;
                    Ok(())
                })
                .await
            })
            .await?;
        assert_eq!(value, None, "the caller's scope caught it");
        // An error after started() comes out of start(), not the nursery.
        let caller = CancelScope::new();
        caller.handle().cancel();
        let error = caller
            .run_typed(async {
                n.start(|status: Started<()>| async move {
                    status.started(());
                    Err(io::Error::other("after started"))
                })
                .await
            })
            .await
            .unwrap_err();
        assert_eq!(error.to_string(), "after started");
        // Cancelling the caller after the move leaves the child alone.
        let caller = CancelScope::new();
        let handle = caller.handle();
        caller
            .run_typed(async {
                n.start(|status: Started<()>| async move {
                    status.started(());
                    sleep(Duration::from_millis(10)).await?;
                    log.lock().unwrap().push("moved and finished");
                    Ok(())
                })
                .await?;
                handle.cancel();
                Ok::<_, io::Error>(())
            })
            .await?;
        Ok(())
    }));
    assert!(matches!(out, Ok(Some(()))), "{out:?}");
    assert_eq!(
        *log.lock().unwrap(),
        ["stayed and finished", "stayed and was cancelled", "moved and finished"]
    );
}

/// Issue 15, item 11: a `Started` dropped without `started` ends `start()`
/// at once, with a panic that says so, instead of waiting forever.
#[test]
fn dropping_started_without_calling_it_fails_start_at_once() {
    let out = catch_unwind(AssertUnwindSafe(|| {
        block_on(nursery(|n: Nursery<'_, Cancelled>| async move {
            n.start(|status: Started<()>| async move {
                drop(status);
                sleep_forever().await?;
                Ok(())
            })
            .await?;
            Ok(())
        }))
    }));
    let payload = out.unwrap_err();
    let message = payload
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(
        message.contains("dropped its Started handle without calling started()"),
        "{message}"
    );
}

/// A child whose handle is dropped while it unwinds from a timeout of its
/// own (the `move_on_after` around the wait for readiness ran out) and then
/// fails: `start()` returns that error, as trio's does, instead of ending
/// at the drop with a panic that would lose it.
#[test]
fn a_handle_dropped_by_a_timeout_inside_the_child_lets_start_return_its_error() {
    let out = block_on(nursery(|n: Nursery<'_, io::Error>| async move {
        let got = n
            .start(|status: Started<u16>| async move {
                let ready = hatchery::typed::move_on_after(Duration::from_millis(20), async move {
                    sleep(Duration::from_secs(3600)).await?;
                    status.started(8080);
                    Ok::<_, io::Error>(())
                })
                .await?;
                if ready.is_none() {
                    // Cleanup after the handle is gone: still awaited.
                    sleep(Duration::from_millis(5)).await?;
                    return Err(io::Error::other("not ready in time"));
                }
                Ok(())
            })
            .await;
        assert_eq!(got.unwrap_err().to_string(), "not ready in time");
        Ok(())
    }));
    assert!(out.is_ok(), "{out:?}");
}

/// The same when the handle sits in a grandchild whose nested nursery is
/// cancelled by a failing sibling: the nested nursery's error comes out of
/// `start()` once the shielded cleanup is over.
#[test]
fn a_handle_dropped_by_a_failing_nested_nursery_lets_start_return_its_error() {
    let out = block_on(nursery(|n: Nursery<'_, io::Error>| async move {
        let got = n
            .start(|status: Started<()>| async move {
                nursery(|inner: Nursery<'_, io::Error>| async move {
                    inner.spawn(async move {
                        sleep_forever().await?;
                        status.started(());
                        Ok(())
                    });
                    inner.spawn(async {
                        sleep(Duration::from_millis(5)).await?;
                        Err(io::Error::other("sibling failed"))
                    });
                    inner.spawn(async {
                        let _ = sleep_forever().await;
                        CancelScope::new()
                            .shield(true)
                            .run_typed(sleep(Duration::from_millis(20)))
                            .await?;
                        Ok(())
                    });
                    Ok(())
                })
                .await
                .map(|_| ())
                .map_err(|error| io::Error::other(error.to_string()))
            })
            .await;
        let error = got.unwrap_err().to_string();
        assert!(error.contains("sibling failed"), "{error}");
        Ok(())
    }));
    assert!(out.is_ok(), "{out:?}");
}

/// Issue 15, item 15: `try_start` on a closed nursery returns an error and
/// never calls the child.
#[test]
fn try_start_on_a_closed_nursery_is_an_error_not_a_panic() {
    let kept = std::sync::Arc::new(Mutex::new(None));
    let keeper = std::sync::Arc::clone(&kept);
    block_on(nursery(move |n: Nursery<'static, Cancelled>| {
        *keeper.lock().unwrap() = Some(n.clone());
        async { Ok(()) }
    }))
    .unwrap();
    let n = kept.lock().unwrap().take().unwrap();
    let called = std::cell::Cell::new(false);
    let out = n.try_start(|status: Started<()>| {
        called.set(true);
        async move {
            status.started(());
            Ok(())
        }
    });
    assert_eq!(out.err(), Some(hatchery::SpawnError::Closed));
    assert!(!called.get());
}

/// A starting child that is cancelled may drop its `Started` on the way out
/// (here, with the `.cancellable()` block that held it) and still clean up:
/// that is no misuse, and `start()` waits for it.
#[test]
fn a_cancelled_starting_child_may_drop_started_while_it_cleans_up() {
    use hatchery::CancellableExt;
    let cleaned = std::sync::atomic::AtomicBool::new(false);
    let cleaned = &cleaned;
    let out = block_on(nursery(|n: Nursery<'_, Cancelled>| async move {
        let caller = CancelScope::new();
        let handle = caller.handle();
        let canceller = handle.clone();
        // Cancels the caller once the child waits.
        n.spawn(async move {
            sleep(Duration::from_millis(10)).await?;
            canceller.cancel();
            Ok(())
        });
        let out = caller
            .run_typed(async {
                n.start(|status: Started<()>| async move {
                    let waited = async move {
                        let _status = status;
                        std::future::pending::<()>().await
                    }
                    .cancellable()
                    .await;
                    CancelScope::new()
                        .shield(true)
                        .run_typed(sleep(Duration::from_millis(5)))
                        .await?;
                    cleaned.store(true, std::sync::atomic::Ordering::SeqCst);
                    waited
                })
                .await
            })
            .await;
        assert_eq!(out, Ok(None), "the caller's scope caught the cancellation");
        assert!(handle.cancel_called());
        Ok(())
    }));
    assert!(matches!(out, Ok(Some(()))), "{out:?}");
    assert!(cleaned.load(std::sync::atomic::Ordering::SeqCst));
}
}

// Found by the fuzz program (issue 16): a starting child parked in a
// foreign future is dropped when its caller is cancelled; if its `Drop`
// panicked, start() unwound before it told the nursery the start was over,
// so the nursery waited for that start() forever (and its task scope was
// never unlinked).
#[test]
fn a_starting_child_whose_drop_panics_does_not_keep_the_nursery_open() {
    struct Bomb;
    impl Drop for Bomb {
        fn drop(&mut self) {
            if !std::thread::panicking() {
                std::panic::panic_any("the child's drop");
            }
        }
    }
    let mut future = Box::pin(nursery(|n: Nursery<'_, Cancelled>| async move {
        let cancel = n.cancel_scope();
        n.spawn(async move {
            checkpoint().await?;
            cancel.cancel();
            Ok(())
        });
        n.start(|_status: Started<()>| async move {
            let _bomb = Bomb;
            std::future::pending::<()>().await; // a foreign wait
            Ok(())
        })
        .await?;
        Ok(())
    }));
    let waker = futures_task::noop_waker();
    let mut cx = std::task::Context::from_waker(&waker);
    let out = catch_unwind(AssertUnwindSafe(|| {
        for _ in 0..100 {
            if let std::task::Poll::Ready(out) = future.as_mut().poll(&mut cx) {
                return Some(out);
            }
        }
        None
    }));
    let payload = match out {
        Err(payload) => payload,
        Ok(out) => panic!("the nursery did not resume the child's panic: {out:?}"),
    };
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"the child's drop"));
}

/// A child that calls `started` from another thread belongs to the nursery
/// from that moment, also when the `start()` future is dropped before it is
/// polled again (a `select!` or timeout that lost the race): the nursery
/// gets the child, which runs to its end. An adversarial round found it
/// dropped with the future, and the nursery returning `Ok` without it.
#[test]
fn a_child_started_from_another_thread_survives_its_start_future_being_dropped() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let finished = AtomicBool::new(false);
    let finished = &finished;
    let called = std::sync::Arc::new(AtomicBool::new(false));
    let out = futures::executor::block_on(hatchery::nursery(|n| {
        let called = std::sync::Arc::clone(&called);
        async move {
            let signal = std::sync::Arc::clone(&called);
            let (polled, after_poll) = std::sync::mpsc::channel::<()>();
            let mut start = Box::pin(n.start(move |status: hatchery::Started<u8>| async move {
                std::thread::spawn(move || {
                    // Once the first poll of `start()` has returned.
                    after_poll.recv().unwrap();
                    status.started(1);
                    signal.store(true, Ordering::SeqCst);
                });
                hatchery::sleep(std::time::Duration::from_millis(20)).await?;
                finished.store(true, Ordering::SeqCst);
                Ok(())
            }));
            assert!(futures::poll!(start.as_mut()).is_pending());
            polled.send(()).unwrap();
            while !called.load(Ordering::SeqCst) {
                hatchery::sleep(std::time::Duration::from_millis(1)).await?;
            }
            drop(start);
            Ok(())
        }
    }));
    assert!(out.is_ok(), "{out:?}");
    assert!(
        finished.load(Ordering::SeqCst),
        "the started child was dropped"
    );
}

/// A child that calls `started` in its closure, before its future is ever
/// polled, inside a scope of the caller's: its task scope is under the
/// nursery's, and the nursery's cancellation reaches it (a review found it
/// linked under the caller's exited scope, and the nursery hanging).
#[test]
fn a_child_started_in_its_closure_is_reached_by_the_nurserys_cancellation() {
    let (send, receive) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let out = futures::executor::block_on(hatchery::nursery(|n| async move {
            hatchery::CancelScope::new()
                .run(async {
                    let value = n
                        .start(|status: hatchery::Started<u8>| {
                            status.started(5);
                            async {
                                hatchery::sleep_forever().await?;
                                Ok(())
                            }
                        })
                        .await?;
                    assert_eq!(value, 5);
                    Ok(())
                })
                .await?;
            hatchery::checkpoint().await?;
            n.cancel_scope().cancel();
            Ok(())
        }));
        let _ = send.send(out.is_ok());
    });
    let out = receive.recv_timeout(Duration::from_secs(10));
    assert_eq!(
        out,
        Ok(true),
        "hung: the nursery's cancellation did not reach the child"
    );
}

/// A `start()` future polled first in one task and awaited in another,
/// before its child called `started`: the starting child is in the scope of
/// whoever awaits `start()` now, so that one's cancellation reaches it (as a
/// moved scope or nursery future follows its poller).
#[test]
fn a_start_future_moved_to_another_task_follows_its_new_owner() {
    use std::future::Future;
    use std::pin::Pin;
    type Moved<'a> = Pin<Box<dyn Future<Output = Result<(), Cancelled>> + Send + 'a>>;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let out = futures::executor::block_on(nursery(|n: Nursery<'_, Cancelled>| async move {
            let starting: Moved<'_> = CancelScope::new()
                .run_typed(async {
                    let mut starting: Moved<'_> =
                        Box::pin(n.start(|status: Started<()>| async move {
                            sleep_forever().await?;
                            status.started(());
                            Ok(())
                        }));
                    // Its first poll, under this scope, which then exits.
                    assert!(futures::poll!(starting.as_mut()).is_pending());
                    Ok::<_, Cancelled>(starting)
                })
                .await
                .expect("the first scope's body returned Ok")
                .expect("the first scope was not cancelled");
            nursery(|other: Nursery<'_, Cancelled>| async move {
                other.spawn(async move {
                    starting.await?;
                    Ok(())
                });
                sleep(Duration::from_millis(5)).await?;
                other.cancel_scope().cancel();
                Ok(())
            })
            .await
            .map_err(|_| Cancelled)?;
            Ok(())
        }))
        .map_err(|error| error.is_cancelled());
        let _ = tx.send(out);
    });
    let out = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the new owner's cancellation never reached the starting child");
    assert_eq!(out, Ok(Some(())));
}
