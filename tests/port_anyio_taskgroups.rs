//! Ports of anyio's tests/test_taskgroups.py.
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::SeqCst};

use hatchery::{
    CancelScope, Cancelled, Error, Nursery, SpawnError, Started, TimedOut, checkpoint,
    current_effective_deadline, fail_after, move_on_after, now, nursery, sleep, sleep_forever,
};

#[path = "ports/mod.rs"]
mod ports;
use ports::*;

#[test]
fn already_closed_spawn_panics_and_try_spawn_errors() {
    vrun(async {
        let kept: Mutex<Option<Nursery<'static>>> = Mutex::new(None);
        nursery(|n: Nursery<'static>| {
            *kept.lock().unwrap() = Some(n.clone());
            async { Ok(()) }
        })
        .await
        .unwrap();
        let n = kept.lock().unwrap().take().unwrap();
        assert_eq!(n.try_spawn(async { Ok(()) }), Err(SpawnError::Closed));
        let p = catch_unwind(AssertUnwindSafe(|| n.spawn(async { Ok(()) }))).unwrap_err();
        let msg = p.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(msg.contains("try_spawn"), "clear message: {msg}");
    });
}

#[test]
fn start_soon_after_error_is_closed() {
    vrun(async {
        let kept: Mutex<Option<Nursery<'static>>> = Mutex::new(None);
        let out = nursery(|n: Nursery<'static>| {
            *kept.lock().unwrap() = Some(n.clone());
            async { Err::<(), _>(Error::msg("division by zero")) }
        })
        .await;
        assert_eq!(failures(&out.unwrap_err()), ["division by zero"]);
        let n = kept.lock().unwrap().take().unwrap();
        assert_eq!(n.try_spawn(async { Ok(()) }), Err(SpawnError::Closed));
    });
}

#[test]
fn start_already_closed() {
    vrun(async {
        let kept: Mutex<Option<Nursery<'static>>> = Mutex::new(None);
        nursery(|n: Nursery<'static>| {
            *kept.lock().unwrap() = Some(n.clone());
            async { Ok(()) }
        })
        .await
        .unwrap();
        let n = kept.lock().unwrap().take().unwrap();
        let r = n.try_start(|s: Started<()>| async move {
            s.started(());
            Ok(())
        });
        assert_eq!(r.err(), Some(SpawnError::Closed));
    });
}

#[test]
fn start_no_value_and_with_value() {
    vrun(async {
        nursery(|n| async move {
            let v: () = n
                .start(|s: Started<()>| async move {
                    s.started(());
                    Ok(())
                })
                .await?;
            assert_eq!(v, ());
            let v = n
                .start(|s: Started<&str>| async move {
                    s.started("foo");
                    Ok(())
                })
                .await?;
            assert_eq!(v, "foo");
            Ok(())
        })
        .await
        .unwrap();
    });
}

/// anyio test_no_called_started_twice: the start() future is made, the
/// group's scope is cancelled, then it is awaited: no error.
#[test]
fn no_called_started_twice() {
    vrun(async {
        let out = nursery(|n| async move {
            let fut = n.start(|s: Started<()>| async move {
                s.started(());
                Ok(())
            });
            n.cancel_scope().cancel();
            fut.await?;
            Ok(())
        })
        .await;
        assert!(out.is_ok(), "{out:?}");
    });
}

#[test]
fn start_crash_before_started_call() {
    vrun(async {
        nursery(|n| async move {
            let r = n
                .start(|_s: Started<()>| async move { Err(Error::msg("foo")) })
                .await;
            assert_eq!(r.unwrap_err().to_string(), "foo");
            Ok(())
        })
        .await
        .unwrap();
    });
}

#[test]
fn start_crash_after_started_call() {
    vrun(async {
        let value = AtomicU32::new(0);
        let value = &value;
        let out = nursery(|n| async move {
            let v = n
                .start(|s: Started<u32>| async move {
                    s.started(2);
                    Err(Error::msg("foo"))
                })
                .await?;
            value.store(v, SeqCst);
            Ok(())
        })
        .await;
        assert_eq!(failures(&out.unwrap_err()), ["foo"]);
        assert_eq!(value.load(SeqCst), 2);
    });
}

#[test]
fn start_cancelled() {
    vrun(async {
        let started = AtomicBool::new(false);
        let finished = AtomicBool::new(false);
        let (s_, f_) = (&started, &finished);
        let out = nursery(|n| async move {
            n.cancel_scope().cancel();
            n.start(|_st: Started<()>| async move {
                s_.store(true, SeqCst);
                sleep(secs(2.0)).await?;
                f_.store(true, SeqCst);
                Ok(())
            })
            .await?;
            Ok(())
        })
        .await;
        assert!(matches!(out, Ok(None)), "{out:?}");
        assert!(started.load(SeqCst));
        assert!(!finished.load(SeqCst));
    });
}

/// anyio #517: an error in an inner group cancels a start() into the outer group.
#[test]
fn start_cancel_after_error() {
    vrun(async {
        let sleep_completed = AtomicBool::new(false);
        let sc = &sleep_completed;
        let out = nursery(|outer| async move {
            nursery(|inner| async move {
                inner.spawn(async {
                    wait_all_tasks_blocked().await;
                    Err(Error::msg("This should cancel the second start() call"))
                });
                outer
                    .start(|s: Started<()>| async move {
                        sleep(secs(1.0)).await?;
                        sc.store(true, SeqCst);
                        s.started(());
                        Ok(())
                    })
                    .await?;
                Ok(())
            })
            .await?;
            Ok(())
        })
        .await;
        let err = out.unwrap_err();
        let outer_failures = err.downcast_ref::<hatchery::NurseryError>().unwrap();
        assert_eq!(outer_failures.failures().len(), 1);
        // The single failure is the inner nursery's error (a nested group).
        let nested = &outer_failures.failures()[0].error;
        assert_eq!(
            failures(nested),
            ["This should cancel the second start() call"]
        );
        assert!(!sleep_completed.load(SeqCst));
    });
}

#[test]
fn host_exception() {
    vrun(async {
        let result = Mutex::new(None::<&str>);
        let r = &result;
        let out = nursery(|n| async move {
            n.spawn(async move {
                sleep(secs(3.0)).await?;
                *r.lock().unwrap() = Some("a");
                Ok(())
            });
            Err::<(), _>(Error::msg("dummy error"))
        })
        .await;
        assert_eq!(failures(&out.unwrap_err()), ["dummy error"]);
        assert_eq!(*result.lock().unwrap(), None);
    });
}

#[test]
fn level_cancellation() {
    vrun(async {
        let marker = AtomicU32::new(0);
        let m = &marker;
        let out = nursery(|n| async move {
            n.spawn(async move {
                m.store(1, SeqCst);
                checkpoint().await?;
                m.store(2, SeqCst);
                Ok(())
            });
            assert_eq!(m.load(SeqCst), 0);
            n.cancel_scope().cancel();
            Ok(())
        })
        .await;
        assert!(out.is_ok());
        assert_eq!(marker.load(SeqCst), 1);
    });
}

#[test]
fn failing_child_task_cancels_host() {
    vrun(async {
        let sleep_completed = AtomicBool::new(false);
        let sc = &sleep_completed;
        let out = nursery(|n| async move {
            n.spawn(async {
                wait_all_tasks_blocked().await;
                Err(Error::msg("foo"))
            });
            sleep(secs(0.5)).await?;
            sc.store(true, SeqCst);
            Ok(())
        })
        .await;
        assert_eq!(failures(&out.unwrap_err()), ["foo"]);
        assert!(!sleep_completed.load(SeqCst));
    });
}

#[test]
fn failing_host_task_cancels_children() {
    vrun(async {
        let sleep_completed = AtomicBool::new(false);
        let sc = &sleep_completed;
        let out = nursery(|n| async move {
            n.spawn(async move {
                sleep(secs(1.0)).await?;
                sc.store(true, SeqCst);
                Ok(())
            });
            wait_all_tasks_blocked().await;
            Err::<(), _>(Error::msg("foo"))
        })
        .await;
        assert_eq!(failures(&out.unwrap_err()), ["foo"]);
        assert!(!sleep_completed.load(SeqCst));
    });
}

#[test]
fn cancel_scope_in_another_task() {
    vrun(async {
        let result = AtomicBool::new(false);
        let r = &result;
        let local_scope = CancelScope::new();
        let h = local_scope.handle();
        let entered = Event::new();
        let entered2 = entered.clone();
        nursery(|n| async move {
            n.spawn(async move {
                local_scope
                    .run(async move {
                        entered2.set();
                        sleep(secs(2.0)).await?;
                        r.store(true, SeqCst);
                        Ok(())
                    })
                    .await?;
                Ok(())
            });
            while !entered.is_set() {
                checkpoint().await?;
            }
            h.cancel();
            Ok(())
        })
        .await
        .unwrap();
        assert!(!result.load(SeqCst));
    });
}

#[test]
fn cancel_propagation() {
    vrun(async {
        let reached = AtomicBool::new(false);
        let re = &reached;
        nursery(|n| async move {
            n.spawn(async move {
                nursery(|_n2| async move {
                    sleep(secs(1.0)).await?;
                    Ok(())
                })
                .await?;
                re.store(true, SeqCst);
                Ok(())
            });
            checkpoint().await?;
            n.cancel_scope().cancel();
            Ok(())
        })
        .await
        .unwrap();
        assert!(!reached.load(SeqCst));
    });
}

#[test]
fn cancel_twice() {
    vrun(async {
        for _ in 0..2 {
            let reached = AtomicBool::new(false);
            let re = &reached;
            let out = nursery(|n| async move {
                let n2 = n.clone();
                n.spawn(async move {
                    wait_all_tasks_blocked().await;
                    n2.cancel_scope().cancel();
                    Ok(())
                });
                sleep(secs(1.0)).await?;
                re.store(true, SeqCst);
                Ok(())
            })
            .await;
            assert!(matches!(out, Ok(None)), "{out:?}");
            assert!(!reached.load(SeqCst));
        }
    });
}

#[test]
fn cancel_exiting_task_group() {
    vrun(async {
        let cancel_received = AtomicBool::new(false);
        let cr = &cancel_received;
        nursery(|n| async move {
            n.spawn(async move {
                nursery(|tg2| async move {
                    tg2.spawn(async move {
                        let r = sleep(secs(5.0)).await;
                        cr.store(true, SeqCst); // finally
                        r?;
                        Ok(())
                    });
                    Ok(())
                })
                .await?;
                Ok(())
            });
            wait_all_tasks_blocked().await;
            n.cancel_scope().cancel();
            Ok(())
        })
        .await
        .unwrap();
        assert!(cancel_received.load(SeqCst));
    });
}

#[test]
fn cancel_before_entering_scope() {
    vrun(async {
        let scope = CancelScope::new();
        scope.handle().cancel();
        let out = scope
            .run(async {
                sleep(secs(1.0)).await?;
                panic!("execution should not reach this point");
                #[allow(unreachable_code)]
                Ok(())
            })
            .await;
        assert!(matches!(out, Ok(None)));
    });
}

#[test]
fn exception_group_children() {
    vrun(async {
        let out = nursery(|n| async move {
            // async_error: sleep(delay), then raise in `finally`
            n.spawn(async {
                let _ = sleep(secs(0.1)).await;
                Err(Error::msg("task1"))
            });
            n.spawn(async {
                let _ = sleep(secs(0.15)).await;
                Err(Error::msg("task2"))
            });
            Ok(())
        })
        .await;
        let errs = sorted(failures(&out.unwrap_err()));
        assert_eq!(errs, ["task1", "task2"]);
    });
}

#[test]
fn exception_group_host() {
    vrun(async {
        let out = nursery(|n| async move {
            n.spawn(async {
                let _ = sleep(secs(2.0)).await; // raise in `finally`
                Err(Error::msg("child"))
            });
            wait_all_tasks_blocked().await;
            Err::<(), _>(Error::msg("host"))
        })
        .await;
        let errs = sorted(failures(&out.unwrap_err()));
        assert_eq!(errs, ["child", "host"]);
    });
}

#[test]
fn escaping_cancelled_exception() {
    vrun(async {
        let out = nursery(|n| async move {
            n.cancel_scope().cancel();
            checkpoint().await?;
            Ok(())
        })
        .await;
        assert!(matches!(out, Ok(None)), "{out:?}");
    });
}

#[test]
fn cancel_scope_cleared() {
    vrun(async {
        let out = move_on_after(secs(0.1), async {
            sleep(secs(1.0)).await?;
            Ok(())
        })
        .await;
        assert!(matches!(out, Ok(None)), "{out:?}");
        // The exited scope's cancellation is gone.
        assert_eq!(checkpoint().await, Ok(()));
    });
}

#[test]
fn fail_after_instant_and_delayed() {
    for delay in [0.0, 0.1] {
        vrun(async {
            // fail_after exposes no handle: build it from a scope to read the flags.
            let scope = CancelScope::new().timeout(secs(delay));
            let h = scope.handle();
            let out = scope
                .run(async {
                    let r = sleep(secs(1.0)).await;
                    assert_eq!(r, Err(Cancelled));
                    r?;
                    Ok(())
                })
                .await;
            assert!(matches!(out, Ok(None)));
            assert!(h.cancel_called());
            assert!(h.cancelled_caught());
            // and fail_after itself
            let out = fail_after(secs(delay), async {
                sleep(secs(1.0)).await?;
                Ok(())
            })
            .await;
            assert!(out.unwrap_err().downcast_ref::<TimedOut>().is_some());
        });
    }
}

#[test]
fn fail_after_after_cancellation() {
    vrun(async {
        let out = nursery(|n| async move {
            n.cancel_scope().cancel();
            Event::new().wait().await?;
            Ok(())
        })
        .await;
        assert!(matches!(out, Ok(None)));
        let block_complete = AtomicBool::new(false);
        let out = fail_after(secs(0.1), async {
            sleep(secs(0.5)).await?;
            block_complete.store(true, SeqCst);
            Ok(())
        })
        .await;
        assert!(out.unwrap_err().downcast_ref::<TimedOut>().is_some());
        assert!(!block_complete.load(SeqCst));
    });
}

/// anyio: fail_after() won't raise TimeoutError if its scope is cancelled
/// (explicitly) before the deadline. trio's fail_after raises TooSlowError
/// whenever its scope caught a cancellation.
#[test]
fn fail_after_cancelled_before_deadline() {
    vrun(async {
        let out = fail_after(secs(1.0), async {
            hatchery::current_scope().unwrap().cancel();
            checkpoint().await?;
            Ok(())
        })
        .await;
        // anyio: Ok(()); trio: TooSlowError (fail_at raises whenever
        // cancelled_caught). hatchery follows trio.
        assert!(out.unwrap_err().downcast_ref::<TimedOut>().is_some());
    });
}

#[test]
fn move_on_after_instant_and_delayed() {
    for delay in [0.0, 0.1] {
        vrun(async {
            let result = AtomicBool::new(false);
            let scope = CancelScope::new().timeout(secs(delay));
            let h = scope.handle();
            scope
                .run(async {
                    sleep(secs(1.0)).await?;
                    result.store(true, SeqCst);
                    Ok(())
                })
                .await
                .unwrap();
            assert!(!result.load(SeqCst));
            assert!(h.cancel_called());
            assert!(h.cancelled_caught());
        });
    }
}

#[test]
fn nested_move_on_after() {
    vrun(async {
        let sleep_completed = AtomicBool::new(false);
        let inner_completed = AtomicBool::new(false);
        let outer = CancelScope::new().timeout(secs(0.1));
        let oh = outer.handle();
        let inner = CancelScope::new().timeout(secs(1.0));
        let ih = inner.handle();
        let oh2 = oh.clone();
        outer
            .run(async {
                assert_eq!(current_effective_deadline(), oh2.deadline());
                inner
                    .run(async {
                        assert_eq!(current_effective_deadline(), oh2.deadline());
                        sleep(secs(2.0)).await?;
                        sleep_completed.store(true, SeqCst);
                        Ok(())
                    })
                    .await?;
                inner_completed.store(true, SeqCst);
                Ok(())
            })
            .await
            .unwrap();
        assert!(!sleep_completed.load(SeqCst));
        assert!(!inner_completed.load(SeqCst));
        assert!(oh.cancel_called());
        assert!(oh.cancelled_caught());
        assert!(!ih.cancel_called());
        assert!(!ih.cancelled_caught());
    });
}

#[test]
fn shielding() {
    vrun(async {
        let inner_done = AtomicBool::new(false);
        let outer_done = AtomicBool::new(false);
        let (i_, o_) = (&inner_done, &outer_done);
        let inner = CancelScope::new().timeout(secs(10.0)).shield(true);
        let ih = inner.handle();
        let mut tgh = None;
        let out = nursery(|n| {
            tgh = Some(n.cancel_scope());
            async move {
                let n2 = n.clone();
                n.spawn(async move {
                    wait_all_tasks_blocked().await;
                    n2.cancel_scope().cancel();
                    Ok(())
                });
                inner
                    .run(async move {
                        sleep(secs(0.1)).await?;
                        i_.store(true, SeqCst);
                        Ok(())
                    })
                    .await?;
                sleep(secs(1.0)).await?;
                o_.store(true, SeqCst);
                Ok(())
            }
        })
        .await;
        assert!(matches!(out, Ok(None)));
        assert!(inner_done.load(SeqCst));
        assert!(!outer_done.load(SeqCst));
        assert!(tgh.unwrap().cancel_called());
        assert!(!ih.cancel_called());
    });
}

#[test]
fn cancel_from_shielded_scope() {
    vrun(async {
        let out = nursery(|n| async move {
            CancelScope::new()
                .shield(true)
                .run(async {
                    n.cancel_scope().cancel();
                    assert_eq!(current_effective_deadline(), None);
                    assert_eq!(hatchery::check_cancelled(), Ok(()));
                    checkpoint().await?;
                    Ok(())
                })
                .await?
                .unwrap();
            let d = current_effective_deadline().expect("-inf");
            assert!(d <= now());
            assert_eq!(hatchery::check_cancelled(), Err(Cancelled));
            assert_eq!(sleep(secs(0.01)).await, Err(Cancelled));
            assert_eq!(sleep(secs(0.01)).await, Err(Cancelled));
            Ok(())
        })
        .await;
        // The body returned Ok after swallowing the Cancelled (like pytest.raises).
        eprintln!("cancel_from_shielded_scope: {out:?}");
        assert!(out.is_ok());
    });
}

#[test]
fn cancel_shielded_scope() {
    vrun(async {
        let scope = CancelScope::new().shield(true);
        let h = scope.handle();
        scope
            .run(async {
                h.cancel();
                assert!(current_effective_deadline().unwrap() <= now());
                assert_eq!(checkpoint().await, Err(Cancelled));
                Ok(())
            })
            .await
            .unwrap();
    });
}

#[test]
fn shielded_cleanup_after_cancel() {
    vrun(async {
        let outer = CancelScope::new();
        let oh = outer.handle();
        let out = outer
            .run(async {
                oh.cancel();
                let r = checkpoint().await;
                // finally:
                assert!(current_effective_deadline().unwrap() <= now());
                assert_eq!(hatchery::check_cancelled(), Err(Cancelled));
                CancelScope::new()
                    .shield(true)
                    .run(async {
                        assert_eq!(current_effective_deadline(), None);
                        assert_eq!(hatchery::check_cancelled(), Ok(()));
                        Ok(())
                    })
                    .await?;
                assert!(current_effective_deadline().unwrap() <= now());
                assert_eq!(hatchery::check_cancelled(), Err(Cancelled));
                r?;
                Ok(())
            })
            .await;
        assert!(matches!(out, Ok(None)));
    });
}

#[test]
fn cancelled_not_caught() {
    vrun(async {
        let scope = CancelScope::new();
        let h = scope.handle();
        scope
            .run(async {
                h.cancel();
                Ok(())
            })
            .await
            .unwrap();
        let h = scope_handle_after(h);
        assert!(h.cancel_called());
        assert!(!h.cancelled_caught());
    });
}
fn scope_handle_after(h: hatchery::CancelHandle) -> hatchery::CancelHandle {
    h
}

#[test]
fn cancelled_scope_based_checkpoint() {
    vrun(async {
        let outer = CancelScope::new();
        let oh = outer.handle();
        let inner = CancelScope::new();
        let ih = inner.handle();
        let ih2 = ih.clone();
        let out = outer
            .run(async {
                oh.cancel();
                inner
                    .run(async {
                        ih2.cancel();
                        sleep_forever().await?;
                        Ok(())
                    })
                    .await?;
                panic!("checkpoint should have raised");
                #[allow(unreachable_code)]
                Ok(())
            })
            .await;
        assert!(matches!(out, Ok(None)));
        assert!(!ih.cancelled_caught());
        assert!(oh.cancelled_caught());
    });
}

#[test]
fn cancelled_raises_beyond_origin_unshielded() {
    vrun(async {
        let outer = CancelScope::new();
        let oh = outer.handle();
        let inner = CancelScope::new();
        let ih = inner.handle();
        let (oh2, ih2) = (oh.clone(), ih.clone());
        let out = outer
            .run(async move {
                inner
                    .run(async move {
                        ih2.cancel();
                        let r = checkpoint().await;
                        oh2.cancel(); // finally
                        r?;
                        panic!("checkpoint should have raised");
                        #[allow(unreachable_code)]
                        Ok(())
                    })
                    .await?;
                panic!("exiting the inner scope should've raised a cancellation error");
                #[allow(unreachable_code)]
                Ok(())
            })
            .await;
        assert!(matches!(out, Ok(None)));
        assert!(!ih.cancelled_caught());
        assert!(oh.cancelled_caught());
    });
}

#[test]
fn cancelled_raises_beyond_origin_shielded() {
    vrun(async {
        let between = AtomicBool::new(false);
        let outer = CancelScope::new();
        let oh = outer.handle();
        let inner = CancelScope::new().shield(true);
        let ih = inner.handle();
        let (oh2, ih2) = (oh.clone(), ih.clone());
        let b = &between;
        let out = outer
            .run(async move {
                inner
                    .run(async move {
                        ih2.cancel();
                        let r = checkpoint().await;
                        oh2.cancel();
                        r?;
                        panic!("checkpoint should have raised");
                        #[allow(unreachable_code)]
                        Ok(())
                    })
                    .await?;
                b.store(true, SeqCst);
                Ok(())
            })
            .await;
        assert!(matches!(out, Ok(Some(()))), "{out:?}");
        assert!(between.load(SeqCst));
        assert!(ih.cancelled_caught());
        assert!(!oh.cancelled_caught());
    });
}

#[test]
fn empty_taskgroup_contains_yield_point() {
    vrun(async {
        let ran = AtomicBool::new(false);
        let ran = &ran;
        nursery(|outer| async move {
            for _ in 0..2 {
                let outer = outer.clone();
                nursery(|_inner| async move {
                    outer.spawn(async move {
                        ran.store(true, SeqCst);
                        Ok(())
                    });
                    Ok(())
                })
                .await?;
            }
            assert!(ran.load(SeqCst));
            Ok(())
        })
        .await
        .unwrap();
    });
}

#[test]
fn shielding_immediate_scope_cancelled() {
    vrun(async {
        let sleep_completed = AtomicBool::new(false);
        let sc = &sleep_completed;
        nursery(|n| async move {
            let scope = CancelScope::new().shield(true);
            let h = scope.handle();
            scope
                .run(async move {
                    n.spawn(async move {
                        wait_all_tasks_blocked().await;
                        h.cancel();
                        Ok(())
                    });
                    sleep(secs(0.5)).await?;
                    sc.store(true, SeqCst);
                    Ok(())
                })
                .await?;
            Ok(())
        })
        .await
        .unwrap();
        assert!(!sleep_completed.load(SeqCst));
    });
}

#[test]
fn shielding_mutate() {
    vrun(async {
        let completed = AtomicBool::new(false);
        let reached = AtomicBool::new(false);
        let (c, re) = (&completed, &reached);
        let out = nursery(|n| async move {
            n.start(|status: Started<()>| async move {
                let scope = CancelScope::new();
                let h = scope.handle();
                scope
                    .run(async move {
                        sleep(secs(0.1)).await?;
                        h.set_shield(true);
                        status.started(());
                        sleep(secs(0.1)).await?;
                        c.store(true, SeqCst);
                        h.set_shield(false);
                        sleep(secs(1.0)).await?;
                        re.store(true, SeqCst);
                        Ok(())
                    })
                    .await?;
                re.store(true, SeqCst);
                Ok(())
            })
            .await?;
            n.cancel_scope().cancel();
            Ok(())
        })
        .await;
        assert!(out.is_ok(), "{out:?}");
        assert!(completed.load(SeqCst));
        assert!(!reached.load(SeqCst));
    });
}

#[test]
fn cancel_scope_in_child_task() {
    vrun(async {
        let host_done = AtomicBool::new(false);
        let hd = &host_done;
        let child_scope = CancelScope::new();
        let ch = child_scope.handle();
        let mut tgh = None;
        nursery(|n| {
            tgh = Some(n.cancel_scope());
            async move {
                n.spawn(async move {
                    child_scope
                        .run(async {
                            sleep(secs(2.0)).await?;
                            Ok(())
                        })
                        .await?;
                    Ok(())
                });
                wait_all_tasks_blocked().await;
                ch.cancel();
                sleep(secs(0.1)).await?;
                hd.store(true, SeqCst);
                Ok(())
            }
        })
        .await
        .unwrap();
        assert!(host_done.load(SeqCst));
        assert!(!tgh.unwrap().cancel_called());
    });
}

#[test]
fn exception_cancels_siblings() {
    vrun(async {
        let sleep_completed = AtomicBool::new(false);
        let sc = &sleep_completed;
        let out = nursery(|n| async move {
            n.spawn(async move {
                sleep(secs(1.0)).await?;
                sc.store(true, SeqCst);
                Ok(())
            });
            wait_all_tasks_blocked().await;
            n.spawn(async { Err(Error::msg("foo")) });
            Ok(())
        })
        .await;
        assert_eq!(failures(&out.unwrap_err()), ["foo"]);
        assert!(!sleep_completed.load(SeqCst));
    });
}

#[test]
fn cancelled_parent() {
    vrun(async {
        let out = nursery(|n| async move {
            let n2 = n.clone();
            n.spawn(async move {
                wait_all_tasks_blocked().await;
                n2.spawn(async {
                    CancelScope::new()
                        .run(async {
                            sleep(secs(1.0)).await?;
                            Ok(())
                        })
                        .await?;
                    Err(Error::msg("foo"))
                });
                Ok(())
            });
            n.cancel_scope().cancel();
            Ok(())
        })
        .await;
        assert!(out.is_ok(), "{out:?}");
    });
}

#[test]
fn shielded_deadline() {
    vrun(async {
        move_on_after(secs(10.0), async {
            CancelScope::new()
                .shield(true)
                .run(async {
                    move_on_after(secs(1000.0), async {
                        let d = current_effective_deadline().unwrap();
                        assert!(d - now() > secs(900.0));
                        checkpoint().await?;
                        Ok(())
                    })
                    .await?;
                    Ok(())
                })
                .await?;
            Ok(())
        })
        .await
        .unwrap();
    });
}

#[test]
fn deadline_reached_on_start() {
    vrun(async {
        let out = move_on_after(secs(0.0), async {
            checkpoint().await?;
            panic!("Execution should not reach this point");
            #[allow(unreachable_code)]
            Ok(())
        })
        .await;
        assert!(matches!(out, Ok(None)));
    });
}

#[test]
fn deadline_moved() {
    vrun(async {
        let out = fail_after(secs(0.1), async {
            let h = hatchery::current_scope().unwrap();
            h.set_deadline(h.deadline().unwrap() + secs(0.3));
            sleep(secs(0.2)).await?;
            Ok("slept past the first deadline")
        })
        .await;
        assert_eq!(out.unwrap(), "slept past the first deadline");
    });
}

#[test]
fn timeout_error_with_multiple_cancellations() {
    vrun(async {
        let out = fail_after(secs(0.1), async {
            nursery(|n| async move {
                n.spawn(async {
                    sleep(secs(2.0)).await?;
                    Ok(())
                });
                sleep(secs(2.0)).await?;
                Ok(())
            })
            .await?;
            Ok(())
        })
        .await;
        let e = out.unwrap_err();
        assert!(e.downcast_ref::<TimedOut>().is_some(), "{e:?}");
    });
}

#[test]
fn nested_fail_after() {
    vrun(async {
        let scope = CancelScope::new();
        let sh = scope.handle();
        let sh2 = sh.clone();
        let out = nursery(|n| async move {
            scope
                .run(async move {
                    CancelScope::new()
                        .run(async move {
                            n.spawn(async move {
                                wait_all_tasks_blocked().await;
                                sh2.cancel();
                                Ok(())
                            });
                            fail_after(secs(1.0), async {
                                sleep(secs(2.0)).await?;
                                panic!("not reached");
                                #[allow(unreachable_code)]
                                Ok(())
                            })
                            .await?;
                            panic!("not reached either");
                            #[allow(unreachable_code)]
                            Ok(())
                        })
                        .await?;
                    panic!("should also not reach");
                    #[allow(unreachable_code)]
                    Ok(())
                })
                .await?;
            Ok(())
        })
        .await;
        assert!(out.is_ok(), "{out:?}");
        assert!(sh.cancel_called());
    });
}

#[test]
fn nested_shield() {
    vrun(async {
        let out = nursery(|n| async move {
            let scope = CancelScope::new();
            let sh = scope.handle();
            scope
                .run(async move {
                    CancelScope::new()
                        .shield(true)
                        .run(async move {
                            n.spawn(async move {
                                wait_all_tasks_blocked().await;
                                sh.cancel();
                                Ok(())
                            });
                            fail_after(secs(0.2), async {
                                sleep(secs(2.0)).await?;
                                Ok(())
                            })
                            .await?;
                            Ok(())
                        })
                        .await?;
                    Ok(())
                })
                .await?;
            Ok(())
        })
        .await;
        let e = out.unwrap_err();
        let ne = e.downcast_ref::<hatchery::NurseryError>().unwrap();
        assert_eq!(ne.failures().len(), 1);
        assert!(ne.failures()[0].error.downcast_ref::<TimedOut>().is_some());
    });
}

#[test]
fn triple_nested_shield_checkpoint_in_outer() {
    vrun(async {
        let got_past = AtomicBool::new(false);
        let gp = &got_past;
        nursery(|n| async move {
            n.spawn(async move {
                let s1 = CancelScope::new();
                let h1 = s1.handle();
                s1.run(async move {
                    let s2 = CancelScope::new();
                    let h2 = s2.handle();
                    s2.run(async move {
                        CancelScope::new()
                            .shield(true)
                            .run(async move {
                                h1.cancel();
                                h2.cancel();
                                checkpoint().await?;
                                Ok(())
                            })
                            .await?;
                        Ok(())
                    })
                    .await?;
                    checkpoint().await?;
                    gp.store(true, SeqCst);
                    Ok(())
                })
                .await?;
                Ok(())
            });
            Ok(())
        })
        .await
        .unwrap();
        assert!(!got_past.load(SeqCst));
    });
}

#[test]
fn triple_nested_shield_checkpoint_in_middle() {
    vrun(async {
        let got_past = AtomicBool::new(false);
        let gp = &got_past;
        nursery(|n| async move {
            n.spawn(async move {
                let s1 = CancelScope::new();
                let h1 = s1.handle();
                s1.run(async move {
                    CancelScope::new()
                        .run(async move {
                            CancelScope::new()
                                .shield(true)
                                .run(async move {
                                    h1.cancel();
                                    checkpoint().await?;
                                    Ok(())
                                })
                                .await?;
                            checkpoint().await?;
                            gp.store(true, SeqCst);
                            Ok(())
                        })
                        .await?;
                    Ok(())
                })
                .await?;
                Ok(())
            });
            Ok(())
        })
        .await
        .unwrap();
        assert!(!got_past.load(SeqCst));
    });
}

/// Errors raised in cleanup ("finally") of cancelled children, in nested
/// groups: both come out, the inner one as a nested group.
#[test]
fn nested_task_group_filtering() {
    vrun(async {
        async fn fail(name: &'static str) -> hatchery::Result<()> {
            let _ = sleep(secs(0.1)).await; // finally: raise regardless
            Err(Error::msg(format!("{name} task failed")))
        }
        let out = nursery(|tg| async move {
            tg.spawn(fail("parent"));
            nursery(|tg2| async move {
                tg2.spawn(fail("child"));
                sleep(secs(1.0)).await?;
                Ok(())
            })
            .await?;
            Ok(())
        })
        .await;
        let e = out.unwrap_err();
        let ne = e.downcast_ref::<hatchery::NurseryError>().unwrap();
        let msgs: Vec<String> = ne.errors().map(|e| e.to_string()).collect();
        assert_eq!(ne.failures().len(), 2, "{msgs:?}");
        // anyio: [parent, group[child]] in that order
        assert_eq!(msgs[0], "parent task failed", "{msgs:?}");
        assert_eq!(failures(&ne.failures()[1].error), ["child task failed"]);
    });
}

#[test]
fn cancel_propagation_with_inner_spawn() {
    vrun(async {
        let reached = AtomicBool::new(false);
        let re = &reached;
        nursery(|tg| async move {
            tg.spawn(async move {
                nursery(|tg2| async move {
                    tg2.spawn(async {
                        sleep(secs(10.0)).await?;
                        Ok(())
                    });
                    sleep(secs(1.0)).await?;
                    Ok(())
                })
                .await?;
                re.store(true, SeqCst);
                Ok(())
            });
            wait_all_tasks_blocked().await;
            tg.cancel_scope().cancel();
            Ok(())
        })
        .await
        .unwrap();
        assert!(!reached.load(SeqCst));
    });
}

#[test]
fn escaping_cancelled_error_from_cancelled_task() {
    vrun(async {
        let scope = CancelScope::new();
        let h = scope.handle();
        let out = scope
            .run(async move {
                move_on_after(secs(0.1), async {
                    sleep(secs(1.0)).await?;
                    Ok(())
                })
                .await?;
                h.cancel();
                Ok(())
            })
            .await;
        assert!(matches!(out, Ok(Some(()))), "{out:?}");
    });
}

/// The only error out of the group is a single cancellation, caught by the
/// outer scope.
#[test]
fn single_cancellation_exc() {
    vrun(async {
        let outer = CancelScope::new();
        let oh = outer.handle();
        let oh2 = oh.clone();
        let out = outer
            .run(async move {
                let r = nursery(|tg| async move {
                    tg.spawn(async {
                        sleep(secs(5.0)).await?;
                        Ok(())
                    });
                    wait_all_tasks_blocked().await;
                    oh2.cancel();
                    sleep(secs(5.0)).await?;
                    Ok(())
                })
                .await;
                let e = r.unwrap_err();
                assert!(e.is_cancelled(), "should be a cancellation: {e:?}");
                assert!(
                    e.downcast_ref::<hatchery::NurseryError>()
                        .unwrap()
                        .is_cancelled()
                );
                Err::<(), _>(e)
            })
            .await;
        assert!(matches!(out, Ok(None)), "{out:?}");
        assert!(oh.cancelled_caught());
    });
}

#[test]
fn cancel_before_entering_task_group() {
    vrun(async {
        let scope = CancelScope::new();
        let h = scope.handle();
        let out = scope
            .run(async move {
                h.cancel();
                let r = nursery(|_| async { Ok(()) }).await;
                assert!(r.is_ok(), "This should not raise a cancellation: {r:?}");
                Ok(())
            })
            .await;
        assert!(matches!(out, Ok(Some(()))), "{out:?}");
    });
}

#[test]
fn cancel_child_task_when_host_is_shielded() {
    vrun(async {
        let parent = CancelScope::new();
        let ph = parent.handle();
        let cancelled = Event::new();
        let c2 = cancelled.clone();
        let out = parent
            .run(async move {
                nursery(|tg| async move {
                    tg.spawn(async move {
                        let r = sleep_forever().await;
                        if r.is_err() {
                            c2.set();
                        }
                        r?;
                        Ok(())
                    });
                    wait_all_tasks_blocked().await;
                    CancelScope::new()
                        .shield(true)
                        .run(fail_after(secs(1.0), async {
                            ph.cancel();
                            cancelled.wait().await?;
                            Ok(())
                        }))
                        .await?;
                    Ok(())
                })
                .await?;
                Ok(())
            })
            .await;
        assert!(matches!(out, Ok(None)), "{out:?}");
    });
}

#[test]
fn start_cancels_parent_scope() {
    vrun(async {
        let started = AtomicBool::new(false);
        let st = &started;
        let mut tgh = None;
        nursery(|tg| {
            tgh = Some(tg.cancel_scope());
            async move {
                let inner = CancelScope::new();
                let ih = inner.handle();
                inner
                    .run(async move {
                        ih.cancel();
                        tg.start(|_s: Started<()>| async move {
                            st.store(true, SeqCst);
                            sleep_forever().await?;
                            Ok(())
                        })
                        .await?;
                        Ok(())
                    })
                    .await?;
                Ok(())
            }
        })
        .await
        .unwrap();
        assert!(started.load(SeqCst));
        assert!(!tgh.unwrap().cancel_called());
    });
}

/// anyio #837: the host of a start() is cancelled; a shield in the starting
/// child protects it; the cancellation lands after the shield.
#[test]
fn cancel_shielding_start() {
    vrun(async {
        let resume = Event::new();
        let log = Log::default();
        let (log, r2) = (&log, resume.clone());
        let outer = CancelScope::new();
        let oh = outer.handle();
        let out = outer
            .run(async move {
                nursery(|tg| async move {
                    let tg2 = tg.clone();
                    tg.spawn(async move {
                        tg2.start(|status: Started<()>| async move {
                            let _keep = status; // never started, as in anyio
                            let r = CancelScope::new()
                                .shield(true)
                                .run(async {
                                    let w = r2.wait().await;
                                    if w.is_err() {
                                        push(log, "cancelled inside the shield");
                                    }
                                    w?;
                                    Ok(())
                                })
                                .await;
                            push(log, "shield left");
                            r?;
                            let c = checkpoint().await;
                            push(log, format!("after-shield checkpoint: {c:?}"));
                            c?;
                            Ok(())
                        })
                        .await?;
                        Ok(())
                    });
                    wait_all_tasks_blocked().await;
                    oh.cancel();
                    resume.set();
                    Ok(())
                })
                .await?;
                Ok(())
            })
            .await;
        assert!(matches!(out, Ok(None)), "{out:?}");
        assert_eq!(
            entries(log),
            ["shield left", "after-shield checkpoint: Err(Cancelled)"]
        );
    });
}
