//! Cancel scopes: level-triggered cancellation, the catching rule, handles,
//! and deep nesting.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use hatchery::{
    CancelReason, CancelScope, CancellableExt, Cancelled, Nursery, check_cancelled, checkpoint,
    current_scope, sleep, sleep_forever, typed::nursery,
};

mod common;

common::matrix! {
#[test]
fn every_checkpoint_after_cancel_fails_every_time() {
    let scope = CancelScope::new();
    let handle = scope.handle();
    let out = block_on(scope.run_typed(async {
        checkpoint().await?; // fine before the cancel
        handle.cancel();
        let results = [
            checkpoint().await,
            checkpoint().await,
            sleep(Duration::ZERO).await,
            check_cancelled(),
            std::future::ready(()).cancellable().await,
            sleep_forever().await.map(|never| match never {}),
        ];
        assert_eq!(results, [Err(Cancelled); 6]);
        Ok::<_, Cancelled>("body returned anyway")
    }));
    // The body returned Ok: nothing to catch, the value comes out.
    assert_eq!(out, Ok(Some("body returned anyway")));
    assert!(handle.cancel_called());
    assert!(!handle.cancelled_caught());
}

/// `effective_reason`: the reason of the nearest cancelled scope from here
/// up to a shield; a scope's own deadline counts; a shield stops the walk.
#[test]
fn the_effective_reason_is_the_nearest_cancelled_scope_s_up_to_a_shield() {
    let outer = CancelScope::new();
    let outer_handle = outer.handle();
    let out = block_on(outer.run_typed(async {
        let here = current_scope().expect("inside a scope");
        assert_eq!(here.effective_reason(), None);
        CancelScope::new()
            .run_typed(async {
                let inner = current_scope().expect("inside a scope");
                outer_handle.cancel_with_reason("shutting down");
                assert_eq!(inner.reason(), None);
                assert_eq!(
                    inner.effective_reason(),
                    Some(CancelReason::Message("shutting down".into()))
                );
                // A shield stops the walk: nothing cancelled this side of it.
                CancelScope::new()
                    .shield(true)
                    .run_typed(async {
                        let shielded = current_scope().expect("inside a scope");
                        assert_eq!(shielded.effective_reason(), None);
                        // Its own deadline, passed, is its reason.
                        CancelScope::new()
                            .deadline(Instant::now())
                            .run_typed(async {
                                let timed = current_scope().expect("inside a scope");
                                assert_eq!(timed.effective_reason(), Some(CancelReason::Deadline));
                                checkpoint().await
                            })
                            .await?;
                        Ok::<_, Cancelled>(())
                    })
                    .await?;
                checkpoint().await
            })
            .await?;
        Ok::<_, Cancelled>(())
    }));
    assert_eq!(out, Ok(None));
}

#[test]
fn inner_cancellations_unwind_to_the_outermost_cancelled_scope() {
    let (s1, s2, s3) = (CancelScope::new(), CancelScope::new(), CancelScope::new());
    let (h1, h2, h3) = (s1.handle(), s2.handle(), s3.handle());
    let reached = Mutex::new(Vec::new());
    let out = block_on(s1.run_typed(async {
        let caught = s2
            .run_typed(async {
                let r = s3
                    .run_typed(async {
                        h3.cancel();
                        h2.cancel();
                        checkpoint().await?;
                        Ok::<_, Cancelled>(())
                    })
                    .await;
                reached.lock().unwrap().push("after s3");
                assert_eq!(r, Err(Cancelled), "s3 must not catch: s2 is cancelled too");
                r
            })
            .await;
        reached.lock().unwrap().push("after s2");
        assert_eq!(caught, Ok(None), "s2 catches its own cancellation");
        checkpoint().await?; // s1 is untouched
        Ok::<_, Cancelled>("s1 finished")
    }));
    assert_eq!(out, Ok(Some("s1 finished")));
    assert_eq!(*reached.lock().unwrap(), ["after s3", "after s2"]);
    assert!(h3.cancel_called() && !h3.cancelled_caught());
    assert!(h2.cancel_called() && h2.cancelled_caught());
    assert!(!h1.cancel_called() && !h1.cancelled_caught());
}

#[test]
fn a_cancelled_scope_exited_through_shielded_checkpoints_only_catches_nothing() {
    let scope = CancelScope::new();
    let handle = scope.handle();
    handle.cancel();
    let out = block_on(scope.run_typed(async {
        CancelScope::new()
            .shield(true)
            .run_typed(async {
                checkpoint().await?;
                checkpoint().await?;
                Ok::<_, Cancelled>(5)
            })
            .await
    }));
    assert_eq!(out, Ok(Some(Some(5))));
    assert!(handle.cancel_called());
    assert!(!handle.cancelled_caught());
}

#[test]
fn a_real_error_through_a_cancelled_scope_is_not_caught() {
    let scope = CancelScope::new();
    let handle = scope.handle();
    handle.cancel();
    let out = block_on(scope.run_typed(async {
        let _ = checkpoint().await; // sees Cancelled, ignores it
        Err::<(), _>(std::io::Error::other("disk full"))
    }));
    assert_eq!(out.unwrap_err().to_string(), "disk full");
    assert!(!handle.cancelled_caught());
}

#[test]
fn cancelling_from_another_task_wakes_a_sleeper() {
    let scope = CancelScope::new();
    let handle = scope.handle();
    let started = Instant::now();
    let out = block_on(nursery(|n: Nursery<'_, Cancelled>| async move {
        n.spawn(async move {
            let caught = scope.run_typed(sleep(Duration::from_secs(3600))).await?;
            assert_eq!(caught, None);
            Ok(())
        });
        n.spawn(async move {
            checkpoint().await?;
            handle.cancel();
            Ok(())
        });
        Ok(())
    }));
    assert_eq!(out.unwrap(), Some(()));
    assert!(started.elapsed() < Duration::from_secs(3600));
}

#[test]
fn cancelling_from_another_thread_wakes_a_sleeper() {
    let scope = CancelScope::new();
    let handle = scope.handle();
    let canceller = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(10));
        handle.cancel();
    });
    let out = block_on(scope.run_typed(sleep_forever()));
    canceller.join().unwrap();
    assert!(matches!(out, Ok(None)));
}

#[test]
fn cancel_is_idempotent_and_the_first_reason_wins() {
    let handle = CancelScope::new().deadline(Instant::now()).handle();
    assert!(handle.cancel_called()); // records the expired deadline
    handle.cancel();
    handle.cancel();
    assert_eq!(handle.reason(), Some(CancelReason::Deadline));

    let handle = CancelScope::new().handle();
    handle.cancel();
    handle.set_deadline(Instant::now());
    assert_eq!(handle.reason(), Some(CancelReason::Explicit));
}

#[test]
fn is_cancelled_counts_enclosing_scopes_but_cancel_called_does_not() {
    let outer = CancelScope::new();
    let outer_handle = outer.handle();
    block_on(outer.run_typed(async {
        let inner = CancelScope::new();
        let inner_handle = inner.handle();
        inner
            .run_typed(async {
                assert!(!inner_handle.is_cancelled());
                outer_handle.cancel();
                assert!(inner_handle.is_cancelled());
                assert!(!inner_handle.cancel_called());
                checkpoint().await
            })
            .await
    }))
    .unwrap();
    assert!(outer_handle.cancelled_caught());
}

#[test]
fn outside_any_scope_nothing_is_cancelled() {
    assert!(current_scope().is_none());
    assert_eq!(check_cancelled(), Ok(()));
    assert_eq!(block_on(checkpoint()), Ok(()));
}

#[test]
fn the_current_scope_is_the_innermost_one() {
    let scope = CancelScope::new();
    let handle = scope.handle();
    block_on(scope.run_typed(async {
        current_scope().unwrap().cancel();
        Ok::<_, Cancelled>(())
    }))
    .unwrap();
    assert!(handle.cancel_called());
    assert!(
        current_scope().is_none(),
        "the scope is restored after the poll"
    );
}

#[test]
fn a_panicking_body_restores_the_current_scope() {
    let scope = CancelScope::new();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        block_on(scope.run_typed(async {
            panic!("boom");
            #[allow(unreachable_code)]
            Ok::<(), Cancelled>(())
        }))
    }));
    assert!(result.is_err());
    assert!(current_scope().is_none());
}

/// Builds `depth` nested scopes, boxed so each level is its own allocation.
fn nest(
    depth: usize,
    innermost: &(dyn Fn() -> Result<(), Cancelled> + Sync),
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), Cancelled>> + Send + '_>> {
    Box::pin(async move {
        if depth == 0 {
            return innermost();
        }
        CancelScope::new().run_typed(nest(depth - 1, innermost)).await?;
        Ok(())
    })
}

#[test]
fn a_ten_thousand_deep_chain_cancels_without_recursion() {
    const DEPTH: usize = 10_000;
    // Polling 10,000 nested futures needs a deep stack; cancelling must not.
    std::thread::Builder::new()
        .stack_size(512 << 20)
        .spawn(|| {
            let outer = CancelScope::new();
            let outer_handle = outer.handle();
            let innermost = || {
                assert_eq!(check_cancelled(), Ok(()));
                let handle = outer_handle.clone();
                // Cancel from a thread with a tiny stack: the push-down to all
                // 10,000 descendants must be iterative.
                std::thread::Builder::new()
                    .stack_size(64 << 10)
                    .spawn(move || handle.cancel())
                    .unwrap()
                    .join()
                    .unwrap();
                check_cancelled()
            };
            let out = block_on(outer.run_typed(nest(DEPTH, &innermost)));
            assert_eq!(out, Ok(None));
            assert!(outer_handle.cancelled_caught());
        })
        .unwrap()
        .join()
        .unwrap();
}

#[test]
fn a_wait_polled_in_one_scope_then_another_is_woken_by_the_second() {
    block_on(async {
        let mut sleeper = std::pin::pin!(sleep(Duration::from_secs(3600)));
        CancelScope::new()
            .run_typed(async {
                // Poll once inside scope A, which then exits.
                let _ = futures::poll!(sleeper.as_mut());
                Ok::<_, Cancelled>(())
            })
            .await
            .unwrap();
        let b = CancelScope::new();
        let b_handle = b.handle();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(10));
            b_handle.cancel();
        });
        let guard = hatchery::typed::move_on_after(Duration::from_secs(10), b.run_typed(sleeper.as_mut()));
        // Some(None): B caught its own cancel; None would be the 10 s guard.
        assert_eq!(guard.await, Ok(Some(None)));
    });
}
}

/// Issue 15, item 4: a cancel reason carries the user's text, shown by
/// `reason()` and in the report; the first reason recorded still wins.
#[test]
fn a_cancel_reason_carries_text_into_the_report() {
    use hatchery::{CancelReason, Report};
    let scope = CancelScope::new();
    let handle = scope.handle();
    let text = futures::executor::block_on(scope.run_typed(async {
        handle.cancel_with_reason("the configuration was reloaded");
        handle.cancel(); // too late: the first reason wins
        let report = Report::of(&handle).to_string();
        hatchery::checkpoint().await?;
        Ok::<_, Cancelled>(report)
    }));
    assert_eq!(text, Ok(None));
    assert_eq!(
        handle.reason(),
        Some(CancelReason::Message(
            "the configuration was reloaded".into()
        ))
    );
    let report = Report::of(&handle).to_string();
    assert!(
        report.contains("[cancelled: the configuration was reloaded]"),
        "{report}"
    );
}

/// Issue 15, item 6 (trio splits the group): a scope that catches the
/// cancellation part of failures records `cancelled_caught`, and the real
/// failure goes on.
#[test]
fn a_scope_catches_the_cancellation_among_failures_and_lets_the_failure_go_on() {
    let scope = CancelScope::new();
    let handle = scope.handle();
    let canceller = handle.clone();
    let out = futures::executor::block_on(scope.run_typed(async {
        hatchery::typed::nursery(|n: hatchery::Nursery<'_, std::io::Error>| async move {
            n.spawn(async {
                let _ = hatchery::sleep_forever().await;
                Err(std::io::Error::other("the cleanup failed"))
            });
            hatchery::checkpoint().await?;
            canceller.cancel();
            hatchery::sleep_forever().await?;
            Ok(())
        })
        .await?;
        Ok::<_, hatchery::NurseryError<std::io::Error>>(())
    }));
    let error = out.unwrap_err();
    assert_eq!(error.failures().len(), 1);
    assert_eq!(error.failures()[0].error.to_string(), "the cleanup failed");
    assert!(!error.is_cancelled());
    assert!(handle.cancelled_caught());
}

/// What a scope entered in a state that no other scope set reports from
/// inside: nothing cancelled, no deadline, no shield, no reason.
fn assert_fresh_inside(outer_cancelled: bool) {
    let scope = CancelScope::new();
    // Seen from a handle before it is entered (its state not yet computed).
    let handle = scope.handle();
    assert!(!handle.is_cancelled());
    assert!(!handle.cancel_called());
    drop(handle);
    let out = futures_lite::future::block_on(scope.run_typed(async {
        let me = current_scope().expect("inside a scope");
        assert!(!me.cancel_called());
        assert_eq!(me.reason(), None);
        assert_eq!(me.deadline(), None);
        assert!(!me.is_shielded());
        assert!(!me.cancelled_caught());
        drop(me);
        assert_eq!(check_cancelled().is_err(), outer_cancelled);
        Ok::<_, Cancelled>("fresh")
    }));
    assert_eq!(out, Ok(Some("fresh")));
}

/// Polls `future` once (it must stay pending), then drops it: a scope left
/// in the middle of its body.
fn poll_once_then_drop(future: impl std::future::Future) {
    let mut future = Box::pin(future);
    let waker = futures::task::noop_waker();
    let polled = future
        .as_mut()
        .poll(&mut std::task::Context::from_waker(&waker));
    assert!(polled.is_pending());
}

/// A scope whose body sleeps until another thread cancels it is woken
/// (its waiter list and `listened` flag start fresh too).
fn assert_a_cancel_from_another_thread_wakes_it() {
    let scope = CancelScope::new();
    let handle = scope.handle();
    let canceller = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(2));
        handle.cancel();
    });
    let out = futures_lite::future::block_on(scope.run_typed(async {
        sleep_forever().await?;
        Ok::<_, Cancelled>(())
    }));
    canceller.join().unwrap();
    assert_eq!(out, Ok(None));
}

/// A thread keeps the state of the last scope that exited on it (with no
/// handle, listener or child left) for its next `CancelScope::new`: whatever
/// a scope ended as (cancelled, caught, expired, shielded, with a reason,
/// with waiters or children it had), the next one on the thread starts
/// fresh, a cancel from another thread wakes it, and inside a cancelled
/// scope it inherits that cancellation (a leftover shield would hide it).
#[test]
fn a_scope_made_after_others_exited_on_the_same_thread_starts_fresh() {
    type Ended = fn() -> Result<Option<()>, Cancelled>;
    // How each scope ends, and what it returns (checked each time: a scope
    // made from a spare must behave as a new one, deadline included).
    let endings: [(&str, Ended, Option<()>); 9] = [
        (
            "that slept until its deadline (a waiter in its list)",
            || {
                futures_lite::future::block_on(hatchery::typed::move_on_after(
                    Duration::from_millis(1),
                    async {
                        sleep_forever().await?;
                        Ok(())
                    },
                ))
            },
            None,
        ),
        (
            "with a scope nested in it (a child in its list)",
            || {
                futures_lite::future::block_on(CancelScope::new().run_typed(async {
                    let nested = CancelScope::new().run_typed(async { Ok::<_, Cancelled>(()) });
                    assert_eq!(nested.await, Ok(Some(())));
                    Ok(())
                }))
            },
            Some(()),
        ),
        (
            "dropped while its body was pending at a checkpoint",
            || {
                poll_once_then_drop(CancelScope::new().run_typed(async {
                    checkpoint().await?;
                    Ok::<_, Cancelled>(())
                }));
                Ok(None)
            },
            None,
        ),
        (
            "cancelled and caught",
            || {
                futures_lite::future::block_on(CancelScope::new().run_typed(async {
                    current_scope().unwrap().cancel_with_reason("done here");
                    checkpoint().await?;
                    Ok(())
                }))
            },
            None,
        ),
        (
            "deadline expired",
            || {
                futures_lite::future::block_on(hatchery::typed::move_on_after(
                    Duration::ZERO,
                    async {
                        checkpoint().await?;
                        Ok(())
                    },
                ))
            },
            None,
        ),
        (
            "deadline not reached",
            || {
                futures_lite::future::block_on(hatchery::typed::move_on_after(
                    Duration::from_secs(60),
                    async { Ok(()) },
                ))
            },
            Some(()),
        ),
        (
            "cancelled around a cancel_gracefully (a shield of its own)",
            || {
                futures_lite::future::block_on(CancelScope::new().run_typed(async {
                    current_scope().unwrap().cancel();
                    // A scope that ends here leaves the thread a spare
                    // for the shield below.
                    let inner = CancelScope::new().run_typed(async { Ok::<_, Cancelled>(()) });
                    assert_eq!(inner.await, Ok(Some(())));
                    // Its shield hides the cancellation from what it stops.
                    let stopped = async { check_cancelled() }
                        .cancel_gracefully(Duration::from_secs(60), |_| {})
                        .await;
                    assert_eq!(stopped, Ok(Ok(())));
                    checkpoint().await?;
                    Ok(())
                }))
            },
            None,
        ),
        (
            "shielded",
            || {
                futures_lite::future::block_on(
                    CancelScope::new().shield(true).run_typed(async { Ok(()) }),
                )
            },
            Some(()),
        ),
        (
            "absolute deadline, then dropped before it ended",
            || {
                let at = Instant::now() + Duration::from_secs(60);
                poll_once_then_drop(CancelScope::new().deadline(at).run_typed(async {
                    sleep_forever().await?;
                    Ok::<_, Cancelled>(())
                }));
                Ok(None)
            },
            None,
        ),
    ];
    for (what, end, returns) in endings {
        assert_eq!(end(), Ok(returns), "a scope {what}");
        assert_fresh_inside(false);
        assert_eq!(end(), Ok(returns), "a scope {what}, again");
        assert_a_cancel_from_another_thread_wakes_it();
        // Made before the ending below, so that the scope entered inside it
        // is the one made from that ending's spare.
        let outer = CancelScope::new();
        assert_eq!(end(), Ok(returns), "a scope {what}, a third time");
        let out = futures_lite::future::block_on(outer.run_typed(async {
            current_scope().unwrap().cancel();
            assert_fresh_inside(true);
            checkpoint().await?;
            Ok::<_, Cancelled>(())
        }));
        assert_eq!(out, Ok(None), "after a scope {what}");
    }
}

/// A handle kept past its scope goes on reporting that scope, not the scopes
/// made after it on the thread.
#[test]
fn a_handle_kept_past_its_scope_reports_that_scope_only() {
    let scope = CancelScope::new().timeout(Duration::from_secs(60));
    let kept = scope.handle();
    let out = futures_lite::future::block_on(scope.run_typed(async {
        current_scope().unwrap().cancel_with_reason("first");
        checkpoint().await?;
        Ok::<_, Cancelled>(())
    }));
    assert_eq!(out, Ok(None));
    for _ in 0..3 {
        let out = futures_lite::future::block_on(CancelScope::new().run_typed(async {
            check_cancelled()?;
            Ok::<_, Cancelled>(1)
        }));
        assert_eq!(out, Ok(Some(1)));
    }
    assert!(kept.cancel_called());
    assert!(kept.cancelled_caught());
    assert_eq!(kept.reason().map(|r| r.to_string()), Some("first".into()));
    // An exited scope's deadline no longer counts; a cancel still records.
    assert!(kept.is_cancelled());
}

/// Inside `cancel_gracefully`'s shield, a future that lifts that shield
/// (through `current_scope()`) and waits is cancelled like any task in the
/// cancelled scope around it.
#[test]
fn lifting_cancel_gracefullys_shield_from_inside_lets_the_cancel_in() {
    use hatchery::CancellableExt;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let out = futures_lite::future::block_on(CancelScope::new().run_typed(async {
            current_scope().unwrap().cancel();
            let drained = async {
                hatchery::current_scope().unwrap().set_shield(false);
                sleep_forever().await?;
                Ok::<_, Cancelled>(())
            }
            .cancel_gracefully(Duration::from_secs(3600), |_| {})
            .await;
            Ok::<_, Cancelled>(drained)
        }));
        let _ = tx.send(out);
    });
    let out = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the unshielded wait was never cancelled");
    assert_eq!(out, Ok(Some(Ok(Err(Cancelled)))));
}

/// A scope future polled first in one task and finished in another belongs
/// to whoever polls it now: the new owner's cancellation reaches it, the old
/// one's no longer does (trio refuses to exit a scope in another task; in
/// Rust a future moves freely). An anyio/trio port found the nursery waiting
/// for ever: the scope stayed linked under the scope it was first polled
/// in, which had exited.
#[test]
fn a_scope_future_moved_to_another_task_follows_its_new_owner() {
    moved_future_follows_its_new_owner(|| {
        let scope = CancelScope::new().run_typed(async {
            sleep_forever().await?;
            Ok::<_, Cancelled>(())
        });
        Box::pin(async { scope.await.map(drop) })
    });
}

/// A future that waits in its scope for ever, as `moved_future_follows_its_new_owner` moves it.
type Moved = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), Cancelled>> + Send>>;

/// Polls the future `make` builds once inside a scope that then exits, hands
/// it to a child of a nursery, and cancels that nursery: the cancel must
/// reach the moved future (the nursery returns, its scope catching it).
fn moved_future_follows_its_new_owner(make: impl FnOnce() -> Moved + Send + 'static) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let out = futures::executor::block_on(async {
            let moved: Moved = CancelScope::new()
                .run_typed(async {
                    let mut moved = make();
                    // Its first poll, under this scope.
                    assert!(futures::poll!(moved.as_mut()).is_pending());
                    Ok::<_, Cancelled>(moved)
                })
                .await
                .expect("the first scope's body returned Ok")
                .expect("the first scope was not cancelled");
            nursery(|n: Nursery<'_, Cancelled>| async move {
                n.spawn(async move {
                    moved.await?;
                    Ok(())
                });
                sleep(Duration::from_millis(5)).await?;
                n.cancel_scope().cancel();
                Ok(())
            })
            .await
            .map_err(|error| error.is_cancelled())
        });
        let _ = tx.send(out);
    });
    let out = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the nursery's cancel never reached the moved future");
    // The nursery's own scope caught the cancellation of its child.
    assert_eq!(out, Ok(Some(())));
}

/// Polls `moved` once inside a scope, leaves that scope, cancels it, then
/// drives `moved` to its end outside any scope (on a thread of its own,
/// within 10 s).
fn first_polled_in_a_scope_cancelled_after<F>(moved: F) -> F::Output
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let out = futures::executor::block_on(async {
            let old = CancelScope::new();
            let old_handle = old.handle();
            let mut moved = Box::pin(moved);
            let _ = old
                .run_typed(async {
                    assert!(futures::poll!(moved.as_mut()).is_pending());
                    Ok::<_, Cancelled>(())
                })
                .await;
            // Now polled outside `old`, which is cancelled meanwhile.
            old_handle.cancel();
            moved.await
        });
        let _ = tx.send(out);
    });
    rx.recv_timeout(Duration::from_secs(10)).expect("hung")
}

/// `cancel_gracefully`'s shield follows whoever polls the future too: moved
/// away from a scope that is then cancelled, it is not stopped, and a
/// future that lifts its shield after the move inherits its new owner's
/// state (not cancelled), not the old one's.
#[test]
fn a_cancel_gracefully_future_moved_away_follows_its_new_owner() {
    use hatchery::CancellableExt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let stops = std::sync::Arc::new(AtomicUsize::new(0));
    let counted = std::sync::Arc::clone(&stops);
    let out = first_polled_in_a_scope_cancelled_after(
        async {
            sleep(Duration::from_millis(5)).await?;
            current_scope().unwrap().set_shield(false);
            sleep(Duration::from_millis(20)).await?;
            Ok::<_, Cancelled>("finished")
        }
        .cancel_gracefully(Duration::from_secs(3600), move |_| {
            counted.fetch_add(1, Ordering::SeqCst);
        }),
    );
    assert_eq!(out, Ok(Ok("finished")));
    assert_eq!(stops.load(Ordering::SeqCst), 0, "stopped by its old owner");
}

/// The old owner, still running, no longer cancels a scope future that
/// moved away from it.
#[test]
fn a_scope_future_moved_away_is_not_cancelled_by_its_old_owner() {
    let out = first_polled_in_a_scope_cancelled_after(CancelScope::new().run_typed(async {
        sleep(Duration::from_millis(20)).await?;
        Ok::<_, Cancelled>("finished")
    }));
    assert_eq!(out, Ok(Some("finished")));
}

/// The same for a nursery future: its scope follows whoever polls it (review
/// of the scope fix: a moved nursery stayed under its first poller).
#[test]
fn a_nursery_future_moved_to_another_task_follows_its_new_owner() {
    moved_future_follows_its_new_owner(|| {
        Box::pin(async {
            nursery(|_n: Nursery<'_, Cancelled>| async move {
                sleep_forever().await?;
                Ok(())
            })
            .await
            .map(drop)
            .map_err(|_| Cancelled)
        })
    });
}

/// A task inside a scope that awaits that scope's own future can never
/// finish; it is told so, rather than the scope tree becoming a cycle (a
/// worker then spun for ever on the scope's deadline).
#[test]
fn a_task_awaiting_the_scope_it_runs_in_panics_with_a_clear_message() {
    use futures::FutureExt;
    use std::future::Future;
    use std::pin::Pin;
    type Moved = Pin<Box<dyn Future<Output = Result<Option<()>, Cancelled>> + Send>>;
    let (said_tx, said_rx) = std::sync::mpsc::channel::<String>();
    let out = hatchery::Builder::new()
        .error_type::<Cancelled>()
        .handle_signals(false)
        .worker_threads(1)
        .run(|_root: Nursery<'_, Cancelled>| async move {
            let (tx, rx) = futures::channel::oneshot::channel::<Moved>();
            let mut scope: Moved =
                Box::pin(
                    CancelScope::new()
                        .timeout(Duration::from_millis(100))
                        .run_typed(async move {
                            nursery(|n: Nursery<'_, Cancelled>| async move {
                                n.spawn_parallel(async move {
                                    let scope = rx.await.expect("sent");
                                    let caught =
                                        std::panic::AssertUnwindSafe(scope).catch_unwind().await;
                                    let message =
                                        caught.err().map_or_else(String::new, |payload| {
                                            match payload.downcast::<String>() {
                                                Ok(message) => *message,
                                                Err(payload) => payload
                                                    .downcast_ref::<&str>()
                                                    .map_or_else(String::new, |message| {
                                                        (*message).to_owned()
                                                    }),
                                            }
                                        });
                                    let _ = said_tx.send(message);
                                    Ok(())
                                });
                                sleep_forever().await?;
                                Ok(())
                            })
                            .await
                            .map_err(|_| Cancelled)?;
                            Ok(())
                        }),
                );
            assert!(futures::poll!(scope.as_mut()).is_pending());
            let _ = tx.send(scope);
            sleep(Duration::from_millis(300)).await?;
            Ok(())
        });
    let said = said_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the task never returned");
    assert!(said.contains("awaits that scope's own future"), "{said:?}");
    assert!(out.is_ok(), "{out:?}");
}
