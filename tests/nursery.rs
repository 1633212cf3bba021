//! Nurseries: children run concurrently, the nursery waits for all of them,
//! cancellation reaches every level.

use std::sync::Mutex;
use std::time::Duration;

use futures::channel::oneshot;
use hatchery::{
    CancelScope, Cancelled, LocalNursery, Nursery, SpawnError, checkpoint, sleep, sleep_forever,
    typed::local_nursery, typed::nursery,
};

mod common;

common::matrix! {
type Log = Mutex<Vec<&'static str>>;

fn entries(log: &Log) -> Vec<&'static str> {
    log.lock().unwrap().clone()
}

#[test]
fn two_children_interleave_and_the_nursery_returns_after_both() {
    let log = Log::default();
    let log = &log;
    block_on(async {
        nursery(|n: Nursery<'_, Cancelled>| async move {
            for (first, second) in [("a1", "a2"), ("b1", "b2")] {
                n.spawn(async move {
                    log.lock().unwrap().push(first);
                    checkpoint().await?;
                    log.lock().unwrap().push(second);
                    Ok(())
                });
            }
            log.lock().unwrap().push("body done");
            Ok(())
        })
        .await
        .unwrap();
        log.lock().unwrap().push("nursery returned");
    });
    assert_eq!(
        entries(log),
        ["body done", "a1", "b1", "a2", "b2", "nursery returned"]
    );
}

#[test]
fn a_child_spawns_a_sibling_while_the_body_waits() {
    let (tx, rx) = oneshot::channel::<&'static str>();
    let out = block_on(nursery(|n: Nursery<'_, Cancelled>| async move {
        let sibling_spawner = n.clone();
        n.spawn(async move {
            sibling_spawner.spawn(async move {
                tx.send("from the sibling").unwrap();
                Ok(())
            });
            Ok(())
        });
        Ok(rx.await.unwrap())
    }));
    assert_eq!(out.unwrap(), Some("from the sibling"));
}

#[test]
fn a_child_spawned_into_a_cancelled_nursery_runs_to_its_first_checkpoint() {
    let log = Log::default();
    let log = &log;
    let out = block_on(nursery(|n: Nursery<'_, Cancelled>| async move {
        n.cancel_scope().cancel();
        n.spawn(async move {
            log.lock().unwrap().push("child started");
            let result = checkpoint().await;
            assert_eq!(result, Err(Cancelled));
            log.lock().unwrap().push("child saw Cancelled");
            result
        });
        Ok(())
    }));
    assert_eq!(out.unwrap(), Some(()));
    assert_eq!(entries(log), ["child started", "child saw Cancelled"]);
}

#[test]
fn cancelling_a_nursery_reaches_grandchildren_in_nested_nurseries() {
    let log = Log::default();
    let log = &log;
    let out = block_on(nursery(|n: Nursery<'_, Cancelled>| async move {
        let (parked_tx, parked_rx) = oneshot::channel();
        n.spawn(async move {
            nursery(|inner: Nursery<'_, Cancelled>| async move {
                inner.spawn(async move {
                    parked_tx.send(()).unwrap();
                    let result = sleep_forever().await;
                    log.lock().unwrap().push("grandchild cancelled");
                    result?;
                    Ok(())
                });
                Ok(())
            })
            .await?;
            log.lock()
                .unwrap()
                .push("child continued after its nursery");
            Ok(())
        });
        parked_rx.await.unwrap();
        n.cancel_scope().cancel();
        sleep_forever().await?;
        Ok(())
    }));
    // The body unwound with the nursery's own cancellation: caught.
    assert_eq!(out.unwrap(), None);
    assert_eq!(entries(log), ["grandchild cancelled"]);
}

#[test]
fn a_parent_cancelled_while_waiting_keeps_waiting_until_its_children_exit() {
    let log = Log::default();
    let log = &log;
    let out = block_on(nursery(|n: Nursery<'_, Cancelled>| async move {
        n.spawn(async move {
            if sleep_forever().await.is_err() {
                // Cleanup that itself waits, behind a shield.
                CancelScope::new()
                    .shield(true)
                    .run_typed(async {
                        sleep(Duration::from_millis(20)).await?;
                        log.lock().unwrap().push("child cleaned up");
                        Ok::<_, Cancelled>(())
                    })
                    .await?;
            }
            Err(Cancelled)
        });
        checkpoint().await?;
        n.cancel_scope().cancel();
        let result = sleep_forever().await;
        log.lock().unwrap().push("body cancelled");
        result?;
        Ok(())
    }));
    log.lock().unwrap().push("nursery returned");
    assert_eq!(out.unwrap(), None);
    assert_eq!(
        entries(log),
        ["body cancelled", "child cleaned up", "nursery returned"]
    );
}

#[test]
fn spawning_into_a_closed_nursery_is_a_clear_error() {
    let mut escaped = None;
    block_on(nursery(|n: Nursery<'_, Cancelled>| {
        escaped = Some(n.clone());
        async { Ok(()) }
    }))
    .unwrap();
    let n = escaped.unwrap();
    assert_eq!(n.try_spawn(async { Ok(()) }), Err(SpawnError::Closed));
    let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        n.spawn(async { Ok(()) });
    }))
    .unwrap_err();
    let message = panic.downcast_ref::<String>().unwrap();
    assert!(
        message.contains("already closed") && message.contains("try_spawn"),
        "{message}"
    );
    // A supervised child too: its try_spawn says so, its spawn points there.
    let supervised = n.named("late").on_failure(|_failure| Ok(()));
    assert_eq!(
        supervised.try_spawn(async { Ok(()) }),
        Err(SpawnError::Closed)
    );
    let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        n.named("late")
            .on_failure(|_failure| Ok(()))
            .spawn(async { Ok(()) });
    }))
    .unwrap_err();
    let message = panic.downcast_ref::<String>().unwrap();
    assert!(message.contains("use try_spawn to handle this"), "{message}");
}

#[test]
fn children_may_spawn_after_the_body_returned() {
    let log = Log::default();
    let log = &log;
    block_on(nursery(|n: Nursery<'_, Cancelled>| async move {
        let n2 = n.clone();
        n.spawn(async move {
            checkpoint().await?;
            checkpoint().await?;
            n2.spawn(async move {
                log.lock().unwrap().push("late sibling ran");
                Ok(())
            });
            Ok(())
        });
        Ok(())
    }))
    .unwrap();
    assert_eq!(entries(log), ["late sibling ran"]);
}

#[test]
fn the_nursery_future_is_send_when_its_children_are() {
    fn assert_send<T: Send>(value: T) -> T {
        value
    }
    let data = vec![1, 2, 3];
    let data = &data;
    let total = Mutex::new(0);
    let total_ref = &total;
    let fut = assert_send(nursery(|n: Nursery<'_, Cancelled>| async move {
        for value in data {
            n.spawn(async move {
                *total_ref.lock().unwrap() += value;
                Ok(())
            });
        }
        Ok(())
    }));
    // Runs on another thread, borrowing from this frame.
    std::thread::scope(|s| {
        s.spawn(|| block_on(fut).unwrap());
    });
    assert_eq!(*total.lock().unwrap(), 6);
}

#[test]
fn a_local_nursery_accepts_non_send_children() {
    let shared = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    block_on(local_nursery(|n: LocalNursery<'_, Cancelled>| {
        let shared = shared.clone();
        async move {
            for i in 0..3 {
                let shared = shared.clone();
                n.spawn(async move {
                    checkpoint().await?;
                    shared.borrow_mut().push(i);
                    Ok(())
                });
            }
            Ok(())
        }
    }))
    .unwrap();
    assert_eq!(*shared.borrow(), [0, 1, 2]);
}

#[test]
fn many_children_all_finish() {
    let count = Mutex::new(0usize);
    let count = &count;
    block_on(nursery(|n: Nursery<'_, Cancelled>| async move {
        for _ in 0..10_000 {
            n.spawn(async move {
                checkpoint().await?;
                *count.lock().unwrap() += 1;
                Ok(())
            });
        }
        Ok(())
    }))
    .unwrap();
    assert_eq!(*count.lock().unwrap(), 10_000);
}

#[test]
fn a_body_closure_that_panics_after_spawning_leaks_nothing() {
    struct DropFlag(std::sync::Arc<std::sync::atomic::AtomicBool>);
    impl Drop for DropFlag {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
    let dropped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = DropFlag(dropped.clone());
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _never_polled = nursery(|n: Nursery<'static, Cancelled>| {
            let handle = n.clone(); // the child keeps the nursery's state alive
            n.spawn(async move {
                let _flag = flag;
                let _handle = handle;
                Ok(())
            });
            if true {
                panic!("setup failed");
            }
            async { Ok(()) }
        });
    }));
    assert!(result.is_err());
    assert!(
        dropped.load(std::sync::atomic::Ordering::SeqCst),
        "the spawned child was dropped, not leaked"
    );
}

// The nursery listens to its own scope for all its waiting tasks (one
// listener, not one per task) and polls them all again when the scope
// changes: a deadline moved, a shield toggled, a cancel from another thread.

#[test]
fn children_waiting_on_the_nursery_scope_wake_when_its_deadline_moves_earlier() {
    let woke = std::sync::atomic::AtomicUsize::new(0);
    let woke = &woke;
    let out = block_on(nursery(|n: Nursery<'_, Cancelled>| async move {
        for _ in 0..3 {
            n.spawn(async move {
                let cancelled = sleep_forever().await;
                woke.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                cancelled?;
                Ok(())
            });
        }
        // The body waits too, on the same scope, with an hour-long sleep.
        let body = async {
            checkpoint().await?;
            n.cancel_scope()
                .set_deadline(hatchery::now() + Duration::from_millis(30));
            sleep(Duration::from_secs(3600)).await
        };
        body.await?;
        Ok(())
    }));
    // The nursery's scope catches its own cancellation.
    assert!(matches!(out, Ok(None)), "{out:?}");
    assert_eq!(woke.load(std::sync::atomic::Ordering::Relaxed), 3);
}

#[test]
fn children_waiting_on_the_nursery_scope_wake_when_another_thread_cancels_it() {
    let out = block_on(nursery(|n: Nursery<'_, Cancelled>| async move {
        for _ in 0..100 {
            n.spawn(async {
                sleep_forever().await?;
                Ok(())
            });
        }
        let handle = n.cancel_scope();
        checkpoint().await?;
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            handle.cancel();
        });
        sleep_forever().await?;
        Ok(())
    }));
    assert!(matches!(out, Ok(None)), "{out:?}");
}

#[test]
fn a_sibling_cancelling_in_the_same_poll_wakes_a_child_that_just_started_waiting() {
    // The waiting child relies on the nursery, which starts listening only at
    // the end of the poll: the cancel comes before that, in the same poll.
    let out = block_on(nursery(|n: Nursery<'_, Cancelled>| async move {
        n.spawn(async {
            sleep_forever().await?;
            Ok(())
        });
        let handle = n.cancel_scope();
        n.spawn(async move {
            handle.cancel();
            Ok(())
        });
        Ok(())
    }));
    assert!(matches!(out, Ok(Some(()))), "{out:?}");
}

#[test]
fn a_child_waiting_in_a_scope_of_its_own_still_wakes_on_that_scope() {
    // Only waits on the nursery's own scope are left to the nursery: a child's
    // inner scope, cancelled through its handle, wakes the child by itself.
    let out = block_on(nursery(|n: Nursery<'_, Cancelled>| async move {
        let (tx, rx) = oneshot::channel();
        n.spawn(async move {
            let scope = CancelScope::new();
            tx.send(scope.handle()).unwrap();
            let caught = scope
                .run_typed(async {
                    sleep_forever().await?;
                    Ok::<(), Cancelled>(())
                })
                .await;
            assert_eq!(caught, Ok(None), "the inner scope caught its cancellation");
            Ok(())
        });
        let inner = rx.await.unwrap();
        checkpoint().await?;
        inner.cancel();
        Ok(())
    }));
    assert!(out.is_ok());
}

/// Issue 15, item 2 (anyio `test_empty_taskgroup_contains_yield_point`):
/// leaving a nursery is a schedule point, even an empty one.
#[test]
fn leaving_an_empty_nursery_lets_a_sibling_in_the_outer_nursery_run() {
    let ran = std::sync::atomic::AtomicBool::new(false);
    let ran = &ran;
    block_on(nursery(|outer: Nursery<'_, Cancelled>| async move {
        for _ in 0..2 {
            outer.spawn(async move {
                ran.store(true, std::sync::atomic::Ordering::SeqCst);
                Ok(())
            });
        }
        nursery(|_inner: Nursery<'_, Cancelled>| async { Ok(()) }).await?;
        assert!(ran.load(std::sync::atomic::Ordering::SeqCst));
        Ok(())
    }))
    .unwrap();
}

/// As in trio (`test_trivial_yields`: the exit is a
/// `cancel_shielded_checkpoint`) and anyio
/// (`test_cancel_before_entering_task_group`): leaving a nursery is a
/// schedule point, not a cancellation point. In a cancelled scope, an empty
/// nursery returns its value and the scope catches nothing; the next
/// checkpoint raises `Cancelled`.
#[test]
fn leaving_a_nursery_with_nothing_to_wait_for_is_not_a_cancellation_point() {
    let scope = CancelScope::new();
    let handle = scope.handle();
    handle.cancel();
    let after = std::sync::atomic::AtomicBool::new(false);
    let after = &after;
    let out = block_on(scope.run_typed(async move {
        let value = nursery(|_n: Nursery<'_, Cancelled>| async { Ok(5) }).await?;
        after.store(true, std::sync::atomic::Ordering::SeqCst);
        checkpoint().await?;
        Ok::<_, Cancelled>(value)
    }));
    assert!(matches!(out, Ok(None)), "the checkpoint met the cancel: {out:?}");
    assert!(after.load(std::sync::atomic::Ordering::SeqCst), "the nursery returned its value");
    assert!(handle.cancelled_caught(), "caught at the checkpoint after the nursery");
    // Not cancelled: the same nursery returns its value.
    let out = block_on(nursery(|_n: Nursery<'_, Cancelled>| async { Ok(5) }));
    assert_eq!(out.unwrap(), Some(5));
}
}

/// One level of nested nurseries: a nursery whose one child opens the next.
fn nested(depth: usize) -> std::pin::Pin<Box<dyn Future<Output = hatchery::Result<()>> + Send>> {
    Box::pin(async move {
        if depth == 0 {
            hatchery::sleep_forever().await?;
            return Ok(());
        }
        hatchery::nursery(move |n| async move {
            n.spawn(nested(depth - 1));
            Ok(())
        })
        .await?;
        Ok(())
    })
}

/// Nested nurseries take little stack per level: 250 of them, cancelled,
/// fit in 2 MiB (the stack of a tokio worker and of `run`'s workers), even
/// unoptimised. An adversarial round found 4.8 KiB per level (196 levels in
/// a debug build): `nursery` wrapped its typed future in an `async` block,
/// which held that 500-byte future twice.
#[test]
fn two_hundred_and_fifty_nested_nurseries_fit_in_a_two_mib_stack() {
    let out = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(|| {
            futures::executor::block_on(hatchery::move_on_after(
                Duration::from_millis(20),
                nested(250),
            ))
        })
        .unwrap()
        .join()
        .expect("the thread overflowed its stack");
    assert!(matches!(out, Ok(None)), "{out:?}");
}

/// `on_failure` straight on the handle supervises an unnamed child: its
/// failure goes to the handler, its sibling goes on, the nursery returns Ok.
#[test]
fn an_unnamed_supervised_child_s_failure_goes_to_its_handler() {
    let handled = std::sync::Mutex::new(Vec::new());
    let handled = &handled;
    let finished = std::sync::atomic::AtomicBool::new(false);
    let finished = &finished;
    let out = futures::executor::block_on(hatchery::nursery(|n| async move {
        n.on_failure(move |failure| {
            handled.lock().unwrap().push((
                failure.task.name().map(str::to_owned),
                failure.error.to_string(),
            ));
            Ok(())
        })
        .spawn(async { Err(hatchery::Error::msg("malformed request")) });
        n.spawn(async move {
            hatchery::sleep(std::time::Duration::from_millis(5)).await?;
            finished.store(true, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        });
        Ok("served")
    }));
    assert_eq!(out.unwrap(), Some("served"));
    assert!(finished.load(std::sync::atomic::Ordering::SeqCst));
    assert_eq!(
        *handled.lock().unwrap(),
        [(None, "malformed request".to_owned())]
    );
}
