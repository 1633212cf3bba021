//! Edge cases from the brief, written in trio's terms.
use std::sync::Mutex;
use std::time::Duration;

use hatchery::{
    CancelScope, Cancelled, Error, Nursery, Started, checkpoint, move_on_after, now, nursery,
    sleep, sleep_forever,
};

#[path = "ports/mod.rs"]
mod ports;
use ports::*;

/// A child waits in the nursery's scope; a sibling moves the deadline earlier
/// while it waits: it wakes at the new deadline.
#[test]
fn deadline_moved_earlier_while_waiting() {
    vrun(async {
        let t0 = now();
        let scope = CancelScope::new().deadline(t0 + secs(100.0));
        let h = scope.handle();
        let out = nursery(|n| async move {
            n.spawn(async move {
                sleep(secs(1.0)).await?;
                h.set_deadline(t0 + secs(3.0));
                Ok(())
            });
            scope
                .run(async {
                    sleep_forever().await?;
                    Ok(())
                })
                .await?;
            Ok(now() - t0)
        })
        .await;
        assert_eq!(out.unwrap(), Some(secs(3.0)));
    });
}

#[test]
fn deadline_moved_later_while_waiting() {
    vrun(async {
        let t0 = now();
        let scope = CancelScope::new().deadline(t0 + secs(2.0));
        let h = scope.handle();
        let out = nursery(|n| async move {
            n.spawn(async move {
                sleep(secs(1.0)).await?;
                h.set_deadline(t0 + secs(5.0));
                Ok(())
            });
            scope
                .run(async {
                    sleep_forever().await?;
                    Ok(())
                })
                .await?;
            Ok(now() - t0)
        })
        .await;
        assert_eq!(out.unwrap(), Some(secs(5.0)));
    });
}

#[test]
fn deadline_removed_while_waiting_then_cancelled() {
    vrun(async {
        let t0 = now();
        let scope = CancelScope::new().deadline(t0 + secs(2.0));
        let h = scope.handle();
        let out = nursery(|n| async move {
            n.spawn(async move {
                sleep(secs(1.0)).await?;
                h.set_deadline(None);
                sleep(secs(9.0)).await?;
                h.cancel();
                Ok(())
            });
            scope
                .run(async {
                    sleep_forever().await?;
                    Ok(())
                })
                .await?;
            Ok(now() - t0)
        })
        .await;
        assert_eq!(out.unwrap(), Some(secs(10.0)));
    });
}

/// Shield switched on while waiting; then the enclosing scope is cancelled:
/// the waiter keeps waiting; switched off: it is cancelled at once.
#[test]
fn shield_toggled_while_waiting() {
    vrun(async {
        let t0 = now();
        let log = Log::default();
        let log = &log;
        let out = nursery(|n| async move {
            let inner = CancelScope::new();
            let ih = inner.handle();
            let nh = n.cancel_scope();
            n.spawn(async move {
                sleep(secs(1.0)).await?;
                ih.set_shield(true);
                sleep(secs(1.0)).await?;
                nh.cancel(); // t=2: the nursery is cancelled, including this task
                // this child is itself cancelled now: continue in a shield
                CancelScope::new()
                    .shield(true)
                    .run(async {
                        sleep(secs(3.0)).await?;
                        push(log, format!("unshield at {:?}", now() - t0));
                        ih.set_shield(false);
                        Ok(())
                    })
                    .await?;
                Ok(())
            });
            let r = inner
                .run(async {
                    sleep_forever().await?;
                    Ok(())
                })
                .await;
            push(log, format!("waiter woke at {:?}: {r:?}", now() - t0));
            r?;
            Ok(())
        })
        .await;
        assert!(matches!(out, Ok(None)), "{out:?}");
        assert_eq!(
            entries(log),
            ["unshield at 5s", "waiter woke at 5s: Err(Cancelled)"]
        );
    });
}

/// move_on_after(0) around a body without checkpoints: the body finishes;
/// cancel_called is true, cancelled_caught false (trio).
#[test]
fn move_on_after_zero_without_checkpoint() {
    vrun(async {
        let s = CancelScope::new().timeout(Duration::ZERO);
        let h = s.handle();
        let out = s.run(async { Ok(42) }).await;
        assert_eq!(out.unwrap(), Some(42));
        assert!(h.cancel_called());
        assert!(!h.cancelled_caught());
        // with a checkpoint
        let out = move_on_after(Duration::ZERO, async {
            checkpoint().await?;
            Ok(42)
        })
        .await;
        assert!(matches!(out, Ok(None)));
    });
}

/// Nested scopes cancelled in various orders.
#[test]
fn nested_cancel_orders() {
    vrun(async {
        // outer then inner, then checkpoint: the outer catches.
        let (o, i) = (CancelScope::new(), CancelScope::new());
        let (oh, ih) = (o.handle(), i.handle());
        let (oh2, ih2) = (oh.clone(), ih.clone());
        let out = o
            .run(async move {
                i.run(async move {
                    oh2.cancel();
                    ih2.cancel();
                    checkpoint().await?;
                    Ok(())
                })
                .await?;
                unreachable!();
                #[allow(unreachable_code)]
                Ok(())
            })
            .await;
        assert!(matches!(out, Ok(None)));
        assert!(oh.cancelled_caught() && !ih.cancelled_caught());
        assert!(oh.cancel_called() && ih.cancel_called());

        // inner cancelled and caught; then outer cancelled with no checkpoint
        // before it exits: outer catches nothing.
        let (o, i) = (CancelScope::new(), CancelScope::new());
        let (oh, ih) = (o.handle(), i.handle());
        let (oh2, ih2) = (oh.clone(), ih.clone());
        let out = o
            .run(async move {
                i.run(async move {
                    ih2.cancel();
                    checkpoint().await?;
                    Ok(())
                })
                .await?;
                oh2.cancel();
                Ok(1)
            })
            .await;
        assert_eq!(out.unwrap(), Some(1));
        assert!(ih.cancelled_caught() && !oh.cancelled_caught());

        // inner cancelled, its Cancelled in flight when outer is cancelled
        // (in a checkpoint of a shield in the inner body's cleanup): outer catches.
        let (o, i) = (CancelScope::new(), CancelScope::new());
        let (oh, ih) = (o.handle(), i.handle());
        let (oh2, ih2) = (oh.clone(), ih.clone());
        let out = o
            .run(async move {
                i.run(async move {
                    ih2.cancel();
                    let r = checkpoint().await;
                    CancelScope::new()
                        .shield(true)
                        .run(async {
                            oh2.cancel();
                            checkpoint().await?;
                            Ok(())
                        })
                        .await?;
                    r?;
                    Ok(())
                })
                .await?;
                unreachable!();
                #[allow(unreachable_code)]
                Ok(())
            })
            .await;
        assert!(matches!(out, Ok(None)), "{out:?}");
        assert!(oh.cancelled_caught() && !ih.cancelled_caught());

        // three scopes, middle cancelled first then innermost: middle catches.
        let (a, b, c) = (CancelScope::new(), CancelScope::new(), CancelScope::new());
        let (ah, bh, ch) = (a.handle(), b.handle(), c.handle());
        let (bh2, ch2) = (bh.clone(), ch.clone());
        let out = a
            .run(async move {
                let r = b
                    .run(async move {
                        c.run(async move {
                            bh2.cancel();
                            ch2.cancel();
                            sleep_forever().await?;
                            Ok(())
                        })
                        .await?;
                        unreachable!();
                        #[allow(unreachable_code)]
                        Ok(())
                    })
                    .await?;
                assert_eq!(r, None);
                checkpoint().await?;
                Ok("after b")
            })
            .await;
        assert_eq!(out.unwrap(), Some("after b"));
        assert!(bh.cancelled_caught() && !ch.cancelled_caught() && !ah.cancel_called());
    });
}

/// A child of a nested nursery cancels a scope that encloses the outer
/// nursery: everything unwinds, and that scope catches.
#[test]
fn cancel_scope_from_child_of_nested_nursery() {
    vrun(async {
        let s = CancelScope::new();
        let sh = s.handle();
        let log = Log::default();
        let log = &log;
        let out = s
            .run(async move {
                nursery(|outer| async move {
                    outer.spawn(async move {
                        let r = sleep_forever().await;
                        push(log, "outer sibling cancelled");
                        r?;
                        Ok(())
                    });
                    nursery(|inner| async move {
                        inner.spawn(async move {
                            sleep(secs(1.0)).await?;
                            sh.cancel();
                            let r = checkpoint().await;
                            push(log, format!("canceller's checkpoint: {r:?}"));
                            r?;
                            Ok(())
                        });
                        let r = sleep_forever().await;
                        push(log, "inner body cancelled");
                        r?;
                        Ok(())
                    })
                    .await?;
                    push(log, "after inner nursery (should not happen)");
                    Ok(())
                })
                .await?;
                push(log, "after outer nursery (should not happen)");
                Ok(())
            })
            .await;
        assert!(matches!(out, Ok(None)), "{out:?}");
        let mut e = entries(log);
        e.sort();
        assert_eq!(
            e,
            [
                "canceller's checkpoint: Err(Cancelled)",
                "inner body cancelled",
                "outer sibling cancelled"
            ]
        );
    });
}

/// A cancelled child raises a different error during its cleanup: that
/// error is reported, along with the failure that caused the cancel.
#[test]
fn error_raised_during_cleanup_of_cancelled_child() {
    vrun(async {
        let out = nursery(|n| async move {
            n.named("cleaner").spawn(async {
                if sleep_forever().await.is_err() {
                    return Err(Error::msg("cleanup failed"));
                }
                Ok(())
            });
            n.named("crasher").spawn(async {
                sleep(secs(1.0)).await?;
                Err(Error::msg("first"))
            });
            Ok(())
        })
        .await;
        let e = out.unwrap_err();
        let ne = e.downcast_ref::<hatchery::NurseryError>().unwrap();
        let got: Vec<(Option<&str>, String)> = ne
            .failures()
            .iter()
            .map(|f| (f.task.name(), f.error.to_string()))
            .collect();
        assert_eq!(
            got,
            [
                (Some("crasher"), "first".to_string()),
                (Some("cleaner"), "cleanup failed".to_string())
            ]
        );
    });
}

/// A cancellation from an outer scope; a child raises in cleanup: the
/// error passes through the outer scope (not swallowed), and the scope still
/// records that it caught the cancellation.
#[test]
fn error_during_cleanup_under_outer_cancel() {
    vrun(async {
        let s = CancelScope::new();
        let sh = s.handle();
        let sh2 = sh.clone();
        let out = s
            .run(async move {
                nursery(|n| async move {
                    n.spawn(async {
                        let _ = sleep_forever().await;
                        Err(Error::msg("cleanup failed"))
                    });
                    sleep(secs(1.0)).await?;
                    sh2.cancel();
                    sleep_forever().await?;
                    Ok(())
                })
                .await?;
                Ok(())
            })
            .await;
        let e = out.unwrap_err();
        assert_eq!(failures(&e), ["cleanup failed"]);
        assert!(!e.is_cancelled());
        assert!(
            sh.cancelled_caught(),
            "trio: the scope catches the Cancelled split off the group"
        );
    });
}

/// Several children fail in the same scheduling round: every error is delivered.
#[test]
fn several_children_fail_simultaneously() {
    vrun(async {
        let out = nursery(|n| async move {
            for i in 0..5 {
                n.spawn(async move {
                    sleep(secs(1.0)).await?;
                    Err(Error::msg(format!("e{i}")))
                });
            }
            sleep_forever().await?;
            Ok(())
        })
        .await;
        // trio: all five sleeps end in the same tick, but the first child to
        // raise cancels the nursery before the others run; their sleep's own
        // scope no longer catches (the parent's cancel is visible), so they
        // unwind with Cancelled: exactly one error. hatchery: the same.
        let e = out.unwrap_err();
        assert_eq!(failures(&e).len(), 1, "{:?}", failures(&e));
    });
}

#[test]
fn several_children_fail_immediately_with_body_error() {
    vrun(async {
        let out = nursery(|n| async move {
            for i in 0..5 {
                n.spawn(async move { Err(Error::msg(format!("e{i}"))) });
            }
            Err::<(), _>(Error::msg("body"))
        })
        .await;
        let e = out.unwrap_err();
        assert_eq!(sorted(failures(&e)), ["body", "e0", "e1", "e2", "e3", "e4"]);
    });
}

/// A child fails while the body waits in a shielded scope: the shield holds
/// (the body's wait completes), then the body is cancelled at its next
/// checkpoint and the error comes out.
#[test]
fn child_fails_while_body_in_shielded_wait() {
    vrun(async {
        let t0 = now();
        let log = Log::default();
        let log = &log;
        let out = nursery(|n| async move {
            n.spawn(async {
                sleep(secs(1.0)).await?;
                Err(Error::msg("child failed"))
            });
            CancelScope::new()
                .shield(true)
                .run(async {
                    sleep(secs(10.0)).await?;
                    push(log, format!("shielded wait done at {:?}", now() - t0));
                    Ok(())
                })
                .await?;
            let r = checkpoint().await;
            push(log, format!("after shield: {r:?}"));
            r?;
            Ok(())
        })
        .await;
        assert_eq!(failures(&out.unwrap_err()), ["child failed"]);
        assert_eq!(now() - t0, secs(10.0));
        assert_eq!(
            entries(log),
            ["shielded wait done at 10s", "after shield: Err(Cancelled)"]
        );
    });
}

/// Cancellation of a start() in flight: the *target* nursery is cancelled
/// while the child is still starting (it runs in the caller's scope, trio):
/// the starting child is not cancelled; after started() it lands in the
/// cancelled nursery and is cancelled at its next checkpoint.
#[test]
fn target_nursery_cancelled_while_start_in_flight() {
    vrun(async {
        let t0 = now();
        let log = Log::default();
        let log = &log;
        let out = nursery(|caller| async move {
            let out = nursery(|target| async move {
                let t2 = target.clone();
                caller.spawn(async move {
                    let v = t2
                        .start(|status: Started<u32>| async move {
                            let r = sleep(secs(2.0)).await;
                            push(log, format!("starting sleep: {r:?} at {:?}", now() - t0));
                            r?;
                            status.started(7);
                            let r = checkpoint().await;
                            push(log, format!("after started: {r:?}"));
                            r?;
                            Ok(())
                        })
                        .await;
                    push(log, format!("start returned {v:?}"));
                    v?;
                    Ok(())
                });
                sleep(secs(1.0)).await?;
                target.cancel_scope().cancel();
                Ok(())
            })
            .await;
            push(log, format!("target nursery: {out:?}"));
            Ok(())
        })
        .await;
        assert!(out.is_ok(), "{out:?}");
        let e = entries(log);
        assert_eq!(
            e,
            [
                "starting sleep: Ok(()) at 2s",
                "start returned Ok(7)",
                "after started: Err(Cancelled)",
                "target nursery: Ok(Some(()))"
            ],
        );
    });
}

/// The caller of start() is cancelled while the child starts: start()
/// returns Cancelled (caught by the caller's scope), the child was cancelled,
/// and the target nursery is unaffected.
#[test]
fn caller_cancelled_while_start_in_flight() {
    vrun(async {
        let log = Log::default();
        let log = &log;
        let out = nursery(|n| async move {
            let scope = CancelScope::new().timeout(secs(1.0));
            let sh = scope.handle();
            let r = scope
                .run(async {
                    n.start(|status: Started<()>| async move {
                        let r = sleep(secs(5.0)).await;
                        push(log, format!("child: {r:?}"));
                        r?;
                        status.started(());
                        Ok(())
                    })
                    .await?;
                    Ok(())
                })
                .await?;
            assert_eq!(r, None);
            assert!(sh.cancelled_caught());
            assert!(!n.cancel_scope().cancel_called());
            Ok(())
        })
        .await;
        assert!(out.is_ok(), "{out:?}");
        assert_eq!(entries(log), ["child: Err(Cancelled)"]);
    });
}

/// The start() future is dropped while the child starts (hard cancel of the
/// caller): the child is dropped with it, and the nursery does not wait.
#[test]
fn start_future_dropped_while_in_flight() {
    vrun(async {
        let t0 = now();
        struct Guard<'a>(&'a Log);
        impl Drop for Guard<'_> {
            fn drop(&mut self) {
                push(self.0, "child dropped");
            }
        }
        let log = Log::default();
        let log = &log;
        let out = nursery(|n| async move {
            let fut = n.start(|status: Started<()>| async move {
                let _g = Guard(log);
                sleep(secs(5.0)).await?;
                status.started(());
                Ok(())
            });
            let r = futures_lite::future::or(async { Some(fut.await) }, async {
                sleep(secs(1.0)).await.ok();
                None
            })
            .await;
            assert!(r.is_none());
            Ok(())
        })
        .await;
        assert!(out.is_ok(), "{out:?}");
        assert_eq!(entries(log), ["child dropped"]);
        assert_eq!(now() - t0, secs(1.0));
    });
}

/// A scope future entered in one task (first polled there) and finished in
/// another. trio/anyio: RuntimeError ("exit cancel scope in a different
/// task"). hatchery: the scope follows whoever polls it.
#[test]
fn scope_entered_in_one_task_finished_in_another() {
    vrun(async {
        let log = Log::default();
        let log = &log;
        type Moved<'a> = std::pin::Pin<
            Box<dyn std::future::Future<Output = hatchery::Result<Option<()>>> + Send + 'a>,
        >;
        let slot: Mutex<Option<Moved<'_>>> = Mutex::new(None);
        let slot = &slot;
        let out = nursery(|n| async move {
            // Task A: first poll of the scope future, then hand it over.
            let a = CancelScope::new();
            let ah = a.handle();
            n.spawn(async move {
                a.run(async move {
                    let mut fut: std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>> =
                        Box::pin(CancelScope::new().run(async move {
                            let r = sleep(secs(10.0)).await;
                            push(log, format!("moved scope's sleep: {r:?}"));
                            r?;
                            Ok(())
                        }));
                    assert!(
                        futures_lite::future::poll_once(fut.as_mut())
                            .await
                            .is_none()
                    );
                    *slot.lock().unwrap() = Some(fut);
                    Ok(())
                })
                .await?;
                Ok(())
            });
            wait_all_tasks_blocked().await;
            // Task B: finishes it. Cancelling B's scope:
            let b = CancelScope::new();
            let bh = b.handle();
            let fut = slot.lock().unwrap().take().unwrap();
            n.spawn(async move {
                let r = b.run(fut).await;
                push(log, format!("B's scope: {r:?}"));
                Ok(())
            });
            sleep(secs(1.0)).await?;
            bh.cancel();
            sleep(secs(1.0)).await?;
            push(log, format!("A cancel_called={}", ah.cancel_called()));
            Ok(())
        })
        .await;
        assert!(out.is_ok(), "{out:?}");
        // The scope follows whoever polls it: B's cancel at t=1 reaches the
        // moved scope's sleep, and B's scope catches it (trio/anyio refuse
        // the move with a RuntimeError instead).
        assert_eq!(
            entries(log),
            [
                "moved scope's sleep: Err(Cancelled)",
                "B's scope: Ok(None)",
                "A cancel_called=false"
            ]
        );
    });
}

/// A nursery handle kept after the nursery closed: spawning is a clear error;
/// cancel_scope() on it still works and reports the nursery's flags.
#[test]
fn nursery_used_after_close() {
    vrun(async {
        let kept: Mutex<Option<Nursery<'static>>> = Mutex::new(None);
        let out = nursery(|n: Nursery<'static>| {
            *kept.lock().unwrap() = Some(n.clone());
            async move {
                n.cancel_scope().cancel();
                checkpoint().await?;
                Ok(())
            }
        })
        .await;
        assert!(matches!(out, Ok(None)));
        let n = kept.lock().unwrap().take().unwrap();
        assert!(n.cancel_scope().cancelled_caught());
        assert_eq!(
            n.try_spawn(async { Ok(()) }),
            Err(hatchery::SpawnError::Closed)
        );
        let err = n.try_spawn(async { Ok(()) }).unwrap_err();
        eprintln!("closed error message: {err}");
        assert!(!err.to_string().is_empty());
        let r = n.try_start(|s: Started<()>| async move {
            s.started(());
            Ok(())
        });
        assert!(r.is_err());
    });
}

/// cancel_called vs cancelled_caught vs is_cancelled on an inherited cancel.
#[test]
fn cancel_called_vs_cancelled_caught_inherited() {
    vrun(async {
        let (o, i) = (CancelScope::new(), CancelScope::new());
        let (oh, ih) = (o.handle(), i.handle());
        let (oh2, ih2) = (oh.clone(), ih.clone());
        let _ = o
            .run(async move {
                i.run(async move {
                    oh2.cancel();
                    assert!(ih2.is_cancelled());
                    assert!(!ih2.cancel_called());
                    sleep_forever().await?;
                    Ok(())
                })
                .await?;
                Ok(())
            })
            .await
            .unwrap();
        assert!(!ih.cancel_called() && !ih.cancelled_caught());
        assert!(oh.cancel_called() && oh.cancelled_caught());
        // After exit, a cancel via a kept handle: cancel_called true, caught false.
        ih.cancel();
        assert!(ih.cancel_called() && !ih.cancelled_caught());
    });
}

/// A body that swallows Cancelled and returns a real error in a cancelled
/// scope: the error passes through, cancelled_caught stays false (trio:
/// cancelled_caught is set only if a Cancelled reaches __exit__).
#[test]
fn cancelled_scope_with_real_error_is_not_caught() {
    vrun(async {
        let s = CancelScope::new();
        let h = s.handle();
        let h2 = h.clone();
        let out = s
            .run(async move {
                h2.cancel();
                let _ = checkpoint().await;
                Err::<(), _>(Error::msg("real"))
            })
            .await;
        assert_eq!(out.unwrap_err().to_string(), "real");
        assert!(h.cancel_called() && !h.cancelled_caught());
    });
}

#[test]
fn checkpoint_is_level_triggered_in_child_after_swallow() {
    vrun(async {
        let out = nursery(|n| async move {
            n.spawn(async {
                for _ in 0..3 {
                    assert_eq!(checkpoint().await, Err(Cancelled));
                }
                Ok(())
            });
            n.cancel_scope().cancel();
            Ok(())
        })
        .await;
        assert!(out.is_ok());
    });
}

/// trio: a deadline that expires while the scope is active sets
/// cancel_called (the run loop cancels the scope), even if the body only
/// waited behind a shield and no Cancelled was delivered.
#[test]
fn deadline_expired_during_shielded_wait_sets_cancel_called() {
    vrun(async {
        let s = CancelScope::new().timeout(secs(1.0));
        let h = s.handle();
        let out = s
            .run(async {
                CancelScope::new()
                    .shield(true)
                    .run(async {
                        sleep(secs(5.0)).await?;
                        Ok(())
                    })
                    .await?;
                Ok(())
            })
            .await;
        assert!(out.is_ok());
        assert!(!h.cancelled_caught());
        assert!(
            h.cancel_called(),
            "the deadline passed while the scope was active"
        );
    });
}
