//! Ports of trio's _core/_tests/test_run.py (cancel scopes, nurseries,
//! shielding, deadlines, start, error propagation).
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;
use std::time::Duration;

use hatchery::{
    CancelScope, Cancelled, Error, Nursery, SpawnError, Started, check_cancelled, checkpoint,
    current_effective_deadline, fail_after, now, nursery, sleep, sleep_forever,
    testing::VirtualClock,
};

#[path = "ports/mod.rs"]
mod ports;
use ports::*;

async fn cancel_shielded_checkpoint() {
    CancelScope::new()
        .shield(true)
        .run_typed(checkpoint())
        .await
        .unwrap();
}

#[test]
fn cancel_points() {
    vrun(async {
        // main1: checkpoint_if_cancelled
        let s = CancelScope::new();
        let h = s.handle();
        s.run(async {
            check_cancelled()?;
            h.cancel();
            assert_eq!(check_cancelled(), Err(Cancelled));
            Ok(())
        })
        .await
        .unwrap();
        // main2
        let s = CancelScope::new();
        let h = s.handle();
        s.run(async {
            checkpoint().await?;
            h.cancel();
            assert_eq!(checkpoint().await, Err(Cancelled));
            Ok(())
        })
        .await
        .unwrap();
        // main3
        let s = CancelScope::new();
        let h = s.handle();
        s.run(async {
            h.cancel();
            assert!(sleep_forever().await.is_err());
            Ok(())
        })
        .await
        .unwrap();
        // main4
        let s = CancelScope::new();
        let h = s.handle();
        s.run(async {
            h.cancel();
            cancel_shielded_checkpoint().await;
            cancel_shielded_checkpoint().await;
            assert_eq!(checkpoint().await, Err(Cancelled));
            Ok(())
        })
        .await
        .unwrap();
    });
}

#[test]
fn cancel_edge_cases() {
    vrun(async {
        let s = CancelScope::new();
        let h = s.handle();
        let h2 = h.clone();
        s.run(async move {
            h2.cancel();
            h2.cancel();
            checkpoint().await?;
            Ok(())
        })
        .await
        .unwrap();
        assert!(h.cancel_called());
        assert!(h.cancelled_caught());

        let s = CancelScope::new();
        let h = s.handle();
        s.run(async move {
            h.cancel();
            assert!(sleep_forever().await.is_err());
            assert!(sleep_forever().await.is_err());
            Ok(())
        })
        .await
        .unwrap();
    });
}

/// The nursery's Cancelled (from its own scope) and the outer scope's are
/// absorbed; only the KeyError comes out of the outer scope.
#[test]
fn cancel_scope_exceptiongroup_filtering() {
    vrun(async {
        let outer = CancelScope::new();
        let oh = outer.handle();
        let oh2 = oh.clone();
        let out = outer
            .run(async move {
                nursery(|n| async move {
                    n.spawn(async {
                        sleep_forever().await?;
                        Ok(())
                    }); // t1
                    n.spawn(async {
                        sleep_forever().await?;
                        Ok(())
                    }); // t2
                    n.cancel_scope().cancel();
                    wait_all_tasks_blocked().await; // shielded
                    n.spawn(async {
                        sleep_forever().await?;
                        Ok(())
                    }); // t3
                    oh2.cancel();
                    n.spawn(async { Err(Error::msg("KeyError")) }); // t4
                    Ok(())
                })
                .await?;
                Ok(())
            })
            .await;
        let e = out.unwrap_err();
        assert_eq!(failures(&e), ["KeyError"]);
        assert!(!e.is_cancelled());
        assert!(
            oh.cancelled_caught(),
            "the outer scope caught its cancellation"
        );
    });
}

#[test]
fn precancelled_task() {
    vrun(async {
        let log = Log::default();
        let log = &log;
        nursery(|n| async move {
            n.cancel_scope().cancel();
            n.spawn(async move {
                push(log, "started");
                sleep_forever().await?;
                Ok(())
            });
            Ok(())
        })
        .await
        .unwrap();
        assert_eq!(entries(log), ["started"]);
    });
}

#[test]
fn cancel_shielding() {
    vrun(async {
        let outer = CancelScope::new();
        let oh = outer.handle();
        let inner = CancelScope::new();
        let ih = inner.handle();
        let ih_out = ih.clone();
        outer
            .run(async move {
                inner
                    .run(async move {
                        checkpoint().await?;
                        oh.cancel();
                        assert_eq!(checkpoint().await, Err(Cancelled));
                        assert!(!ih.is_shielded());
                        ih.set_shield(true);
                        assert!(ih.is_shielded());
                        checkpoint().await?; // shield protects us from outer
                        let innerest = CancelScope::new();
                        let inh = innerest.handle();
                        innerest
                            .run(async move {
                                inh.cancel();
                                assert_eq!(checkpoint().await, Err(Cancelled));
                                Ok(())
                            })
                            .await?;
                        checkpoint().await?;
                        ih.set_shield(false);
                        assert_eq!(checkpoint().await, Err(Cancelled));
                        ih.set_shield(true);
                        checkpoint().await?;
                        ih.cancel();
                        checkpoint().await?; // absorbed by inner
                        unreachable!();
                        #[allow(unreachable_code)]
                        Ok(())
                    })
                    .await?;
                Ok(())
            })
            .await
            .unwrap();
        assert!(ih_out.cancelled_caught());
    });
}

#[test]
fn cancel_inheritance() {
    vrun(async {
        let record = Log::default();
        let record = &record;
        async fn leaf(ident: String, record: &Log) -> hatchery::Result<()> {
            if sleep_forever().await.is_err() {
                push(record, ident); // swallowed, as trio's `except Cancelled`
            }
            Ok(())
        }
        nursery(|n| async move {
            for w in ["w1", "w2"] {
                n.spawn(async move {
                    nursery(|n2| async move {
                        n2.spawn(leaf(format!("{w}-l1"), record));
                        n2.spawn(leaf(format!("{w}-l2"), record));
                        Ok(())
                    })
                    .await?;
                    Ok(())
                });
            }
            n.cancel_scope().cancel();
            Ok(())
        })
        .await
        .unwrap();
        assert_eq!(
            sorted(entries(record)),
            ["w1-l1", "w1-l2", "w2-l1", "w2-l2"]
        );
    });
}

#[test]
fn cancel_shield_abort() {
    vrun(async {
        let outer = CancelScope::new();
        let oh = outer.handle();
        let record = Log::default();
        let record = &record;
        let out = outer
            .run(async move {
                nursery(|n| async move {
                    oh.cancel();
                    n.cancel_scope().set_shield(true);
                    n.spawn(async move {
                        push(record, "sleeping");
                        if sleep_forever().await.is_err() {
                            push(record, "cancelled");
                        }
                        Ok(())
                    });
                    wait_all_tasks_blocked().await;
                    assert_eq!(entries(record), ["sleeping"]);
                    n.cancel_scope().set_shield(false);
                    wait_all_tasks_blocked().await;
                    assert_eq!(entries(record), ["sleeping", "cancelled"]);
                    Ok(())
                })
                .await?;
                Ok(())
            })
            .await;
        // trio: every task swallowed its Cancelled and leaving a nursery with
        // nothing to wait for is no cancellation point: nothing is raised.
        assert!(matches!(out, Ok(Some(()))), "{out:?}");
    });
}

#[test]
fn basic_timeout() {
    let clock = VirtualClock::new().autojump_threshold(Duration::MAX);
    let c = clock.clone();
    clock.run(async move {
        let start = now();
        let s = CancelScope::new();
        let h = s.handle();
        let h2 = h.clone();
        s.run(async move {
            assert_eq!(h2.deadline(), None);
            h2.set_deadline(start + secs(1.0));
            assert_eq!(h2.deadline(), Some(start + secs(1.0)));
            Ok(())
        })
        .await
        .unwrap();
        assert!(!h.cancel_called());
        c.advance(secs(2.0));
        checkpoint().await.unwrap();
        checkpoint().await.unwrap();
        checkpoint().await.unwrap();
        assert!(
            !h.cancel_called(),
            "an exited scope's deadline passing later is not a cancel"
        );

        let start = now();
        let s = CancelScope::new().deadline(start + secs(1.0));
        let h = s.handle();
        let c2 = c.clone();
        s.run(async move {
            c2.advance(secs(2.0));
            sleep_forever().await?;
            Ok(())
        })
        .await
        .unwrap();
        assert!(h.cancel_called());
        assert!(h.cancelled_caught());

        // changing deadline
        let start = now();
        let s = CancelScope::new();
        let h = s.handle();
        let c3 = c.clone();
        s.run(async move {
            checkpoint().await?;
            h.set_deadline(start + secs(10.0));
            checkpoint().await?;
            c3.advance(secs(5.0));
            checkpoint().await?;
            h.set_deadline(start + secs(1.0));
            assert_eq!(checkpoint().await, Err(Cancelled));
            assert_eq!(checkpoint().await, Err(Cancelled));
            Ok(())
        })
        .await
        .unwrap();
    });
}

#[test]
fn cancel_scope_nesting() {
    vrun(async {
        // two triggering at once: the outer one wins
        let (s1, s2, s3) = (CancelScope::new(), CancelScope::new(), CancelScope::new());
        let (h1, h2, h3) = (s1.handle(), s2.handle(), s3.handle());
        let (h2b, h3b) = (h2.clone(), h3.clone());
        s1.run(s2.run(s3.run(async move {
            h3b.cancel();
            h2b.cancel();
            sleep_forever().await?;
            Ok(())
        })))
        .await
        .unwrap();
        assert!(h3.cancel_called());
        assert!(!h3.cancelled_caught());
        assert!(h2.cancel_called());
        assert!(h2.cancelled_caught());
        assert!(!h1.cancel_called());
        assert!(!h1.cancelled_caught());

        // shielding
        let (s1, s2) = (CancelScope::new(), CancelScope::new());
        let (h1, h2) = (s1.handle(), s2.handle());
        let out = s1
            .run(s2.run(async move {
                h1.cancel();
                assert_eq!(checkpoint().await, Err(Cancelled));
                assert_eq!(checkpoint().await, Err(Cancelled));
                h2.set_shield(true);
                checkpoint().await?;
                h2.cancel();
                assert_eq!(checkpoint().await, Err(Cancelled));
                Ok(())
            }))
            .await;
        // The body returned Ok (after swallowing, as pytest.raises does).
        assert!(out.is_ok());

        // a pending cancel popped off the stack is not delivered
        let s = CancelScope::new();
        let h = s.handle();
        let h2 = h.clone();
        s.run(async move {
            h2.cancel();
            cancel_shielded_checkpoint().await;
            Ok(())
        })
        .await
        .unwrap();
        checkpoint().await.unwrap();
        assert!(!h.cancelled_caught());
    });
}

#[test]
fn unshield_while_cancel_propagating() {
    vrun(async {
        let (outer, inner) = (CancelScope::new(), CancelScope::new());
        let (oh, ih) = (outer.handle(), inner.handle());
        let (oh2, ih2) = (oh.clone(), ih.clone());
        let out = outer
            .run(inner.run(async move {
                oh2.cancel();
                let r = checkpoint().await;
                ih2.set_shield(true); // finally
                r?;
                Ok(())
            }))
            .await;
        assert!(matches!(out, Ok(None)), "{out:?}");
        assert!(oh.cancelled_caught());
        assert!(!ih.cancelled_caught());
    });
}

#[test]
fn cancel_unbound() {
    vrun(async {
        // Cancel before entry
        let scope = CancelScope::new();
        scope.handle().cancel();
        nursery(|n| async move {
            n.spawn(async move {
                scope
                    .run(fail_after(secs(1.0), async {
                        sleep_forever().await?;
                        Ok(())
                    }))
                    .await?;
                Ok(())
            });
            Ok(())
        })
        .await
        .unwrap();
        // Cancel after entry
        let scope = CancelScope::new();
        let h = scope.handle();
        nursery(|n| async move {
            n.spawn(async move {
                scope
                    .run(fail_after(secs(1.0), async {
                        sleep_forever().await?;
                        Ok(())
                    }))
                    .await?;
                Ok(())
            });
            wait_all_tasks_blocked().await;
            h.cancel();
            Ok(())
        })
        .await
        .unwrap();
        // Shield before entry
        let scope = CancelScope::new();
        let sh = scope.handle();
        sh.set_shield(true);
        let outer = CancelScope::new();
        let oh = outer.handle();
        let out = outer
            .run(scope.run(async move {
                oh.cancel();
                checkpoint().await?;
                sh.set_shield(false);
                assert_eq!(checkpoint().await, Err(Cancelled));
                Ok(())
            }))
            .await;
        assert!(out.is_ok());
        // Can't reuse / reenter: `run` consumes the scope (compile time).
        // A handle kept past the exit: cancel changes cancel_called only.
        let scope = CancelScope::new();
        let h = scope.handle();
        scope
            .run(async {
                checkpoint().await?;
                Ok(())
            })
            .await
            .unwrap();
        h.cancel();
        checkpoint().await.unwrap();
        assert!(h.cancel_called());
        assert!(!h.cancelled_caught());
        // Unentered: cancel_called true once the deadline passed, and stays.
        let scope = CancelScope::new().deadline(now() + secs(1.0));
        let h = scope.handle();
        assert!(!h.cancel_called());
        h.set_deadline(h.deadline().unwrap() - secs(1.0));
        assert!(h.cancel_called());
        h.set_deadline(h.deadline().unwrap() + secs(1.0));
        assert!(h.cancel_called(), "never becomes un-cancelled");
        drop(scope);
    });
}

#[test]
fn nursery_closure() {
    vrun(async {
        let kept: Mutex<Option<Nursery<'static>>> = Mutex::new(None);
        nursery(|n: Nursery<'static>| {
            *kept.lock().unwrap() = Some(n.clone());
            async move {
                let n2 = n.clone();
                n.spawn(async move {
                    n2.spawn(async { Ok(()) }); // allowed while children still run
                    Ok(())
                });
                Ok(())
            }
        })
        .await
        .unwrap();
        let n = kept.lock().unwrap().take().unwrap();
        assert_eq!(n.try_spawn(async { Ok(()) }), Err(SpawnError::Closed));
    });
}

#[test]
fn current_effective_deadline_sequence() {
    vrun(async {
        assert_eq!(current_effective_deadline(), None);
        let t0 = now();
        let (d5, d10, d3) = (t0 + secs(5.0), t0 + secs(10.0), t0 + secs(3.0));
        let s1 = CancelScope::new().deadline(d5);
        let h1 = s1.handle();
        let s2 = CancelScope::new().deadline(d10);
        let h2 = s2.handle();
        s1.run(async move {
            s2.run(async move {
                assert_eq!(current_effective_deadline(), Some(d5));
                h2.set_deadline(d3);
                assert_eq!(current_effective_deadline(), Some(d3));
                h2.set_deadline(d10);
                assert_eq!(current_effective_deadline(), Some(d5));
                h2.set_shield(true);
                assert_eq!(current_effective_deadline(), Some(d10));
                h2.set_shield(false);
                assert_eq!(current_effective_deadline(), Some(d5));
                h1.cancel();
                assert!(current_effective_deadline().unwrap() < t0); // -inf
                h2.set_shield(true);
                assert_eq!(current_effective_deadline(), Some(d10));
                Ok(())
            })
            .await?;
            assert!(current_effective_deadline().unwrap() < t0);
            Ok(())
        })
        .await
        .unwrap();
        assert_eq!(current_effective_deadline(), None);
    });
}

async fn sleep_then_start(seconds: u64, status: Started<u64>) -> hatchery::Result<()> {
    sleep(Duration::from_secs(seconds)).await?;
    status.started(seconds);
    sleep(Duration::from_secs(seconds)).await?;
    Ok(())
}

#[test]
fn nursery_start_happy_path_timing() {
    vrun(async {
        for seconds in [1u64, 2] {
            let t0 = now();
            nursery(|n| async move {
                let v = n.start(|s| sleep_then_start(seconds, s)).await?;
                assert_eq!(v, seconds);
                assert_eq!(now() - t0, Duration::from_secs(seconds));
                Ok(())
            })
            .await
            .unwrap();
            assert_eq!(now() - t0, Duration::from_secs(2 * seconds));
        }
    });
}

#[test]
fn nursery_start_error_paths() {
    vrun(async {
        // crash before started -> comes out of start()
        nursery(|n| async move {
            let r = n
                .start(|_s: Started<()>| async { Err(Error::msg("KeyError oops")) })
                .await;
            assert_eq!(r.unwrap_err().to_string(), "KeyError oops");
            Ok(())
        })
        .await
        .unwrap();

        // start() cancelled: started() is a no-op, start() raises Cancelled
        nursery(|n| async move {
            let cs = CancelScope::new();
            let ch = cs.handle();
            let ch2 = ch.clone();
            cs.run(async move {
                ch2.cancel();
                let r = n
                    .start(|s: Started<&str>| async move {
                        s.started("hi");
                        checkpoint().await?;
                        Ok(())
                    })
                    .await;
                assert!(r.as_ref().unwrap_err().is_cancelled(), "{r:?}");
                r?;
                Ok(())
            })
            .await?;
            assert!(ch.cancelled_caught());
            Ok(())
        })
        .await
        .unwrap();

        // no checkpoint after started: start() returns the value
        nursery(|n| async move {
            let cs = CancelScope::new();
            let ch = cs.handle();
            let ch2 = ch.clone();
            let v = cs
                .run(async move {
                    ch2.cancel();
                    let v = n
                        .start(|s: Started<u8>| async move {
                            s.started(7);
                            Ok(())
                        })
                        .await?;
                    Ok(v)
                })
                .await?;
            assert_eq!(v, Some(7));
            assert!(!ch.cancelled_caught());
            Ok(())
        })
        .await
        .unwrap();

        // crash after started in a cancelled context: the error comes out of start()
        nursery(|n| async move {
            let cs = CancelScope::new();
            let ch = cs.handle();
            let out = cs
                .run(async move {
                    ch.cancel();
                    let r = n
                        .start(|s: Started<()>| async move {
                            s.started(());
                            Err(Error::msg("whoopsiedaisy"))
                        })
                        .await;
                    assert_eq!(r.unwrap_err().to_string(), "whoopsiedaisy");
                    Ok(())
                })
                .await;
            assert!(out.is_ok(), "{out:?}");
            Ok(())
        })
        .await
        .unwrap();

        // start in a closed nursery: error at once, no time passes
        let kept: Mutex<Option<Nursery<'static>>> = Mutex::new(None);
        nursery(|n: Nursery<'static>| {
            *kept.lock().unwrap() = Some(n.clone());
            async { Ok(()) }
        })
        .await
        .unwrap();
        let closed = kept.lock().unwrap().take().unwrap();
        let t0 = now();
        let r = closed.try_start(|s| sleep_then_start(7, s));
        assert_eq!(r.err(), Some(SpawnError::Closed));
        let p = catch_unwind(AssertUnwindSafe(|| {
            drop(closed.start(|s| sleep_then_start(7, s)))
        }));
        // `start` panics on a closed nursery only when polled? record:
        eprintln!(
            "start() on closed nursery, not polled: panicked={}",
            p.is_err()
        );
        assert_eq!(now(), t0);
    });
}

#[test]
fn nursery_start_exiting_without_started_panics() {
    let p = catch_unwind(AssertUnwindSafe(|| {
        vrun(nursery(|n| async move {
            n.start(|status: Started<()>| async move {
                let _keep = status;
                Ok(())
            })
            .await?;
            Ok(())
        }))
    }));
    let payload = p.unwrap_err();
    let msg = payload
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(msg.contains("without calling"), "{msg}");
}

/// trio test_nursery_start_with_cancelled_nursery: start() hands back a
/// nursery handle; then a child started into it moves into a cancelled
/// nursery (cancelled just before / just after `started()`).
#[test]
fn nursery_start_with_cancelled_nursery() {
    for before in [true, false] {
        vrun(async move {
            let out = nursery(|n| async move {
                let target: Nursery<'_> = n
                    .start(|status: Started<Nursery<'_>>| async move {
                        nursery(|inner| async move {
                            status.started(inner.clone());
                            sleep_forever().await?;
                            Ok(())
                        })
                        .await?;
                        Ok(())
                    })
                    .await?;
                let t2 = target.clone();
                target
                    .start(|status: Started<()>| async move {
                        nursery(|kids| async move {
                            kids.spawn(async {
                                sleep_forever().await?;
                                Ok(())
                            });
                            kids.spawn(async {
                                sleep_forever().await?;
                                Ok(())
                            });
                            wait_all_tasks_blocked().await;
                            if before {
                                t2.cancel_scope().cancel();
                            }
                            status.started(());
                            Ok(())
                        })
                        .await?;
                        Ok(())
                    })
                    .await?;
                if !before {
                    target.cancel_scope().cancel();
                }
                Ok(())
            })
            .await;
            assert!(out.is_ok(), "before={before}: {out:?}");
        });
    }
}

#[test]
fn nursery_start_keeps_nursery_open() {
    vrun(async {
        async fn sleep_a_bit(status: Started<()>) -> hatchery::Result<()> {
            sleep(secs(2.0)).await?;
            status.started(());
            sleep(secs(3.0)).await?;
            Ok(())
        }
        let t0 = now();
        nursery(|n1| async move {
            nursery(|n2| async move {
                let n2b = n2.clone();
                n1.spawn(async move {
                    n2b.start(sleep_a_bit).await?;
                    Ok(())
                });
                sleep(secs(1.0)).await?;
                let n2c = n2.clone();
                n1.spawn(async move {
                    n2c.start(sleep_a_bit).await?;
                    Ok(())
                });
                Ok(())
            })
            .await?;
            assert_eq!(now() - t0, secs(6.0));
            Ok(())
        })
        .await
        .unwrap();

        let t0 = now();
        nursery(|n1| async move {
            nursery(|n2| async move {
                let n2b = n2.clone();
                n1.spawn(async move {
                    let r = n2b
                        .start(|status: Started<()>| async move {
                            let _keep = status;
                            sleep(secs(7.0)).await?;
                            Err(Error::msg("KeyError"))
                        })
                        .await;
                    assert_eq!(r.unwrap_err().to_string(), "KeyError");
                    Ok(())
                });
                wait_all_tasks_blocked().await;
                Ok(())
            })
            .await?;
            assert_eq!(now() - t0, secs(7.0));
            Ok(())
        })
        .await
        .unwrap();
    });
}

#[test]
fn nursery_collapse() {
    vrun(async {
        let out = nursery(|n| async move {
            n.spawn(async {
                sleep_forever().await?;
                Ok(())
            });
            n.spawn(async { Err(Error::msg("test error")) });
            nursery(|n2| async move {
                n2.spawn(async {
                    sleep_forever().await?;
                    Ok(())
                });
                n2.spawn(async { Err(Error::msg("test error")) });
                n.cancel_scope().cancel();
                Ok(())
            })
            .await?;
            Ok(())
        })
        .await;
        let e = out.unwrap_err();
        let ne = e.downcast_ref::<hatchery::NurseryError>().unwrap();
        assert_eq!(ne.failures().len(), 2);
        let strs: Vec<String> = ne.errors().map(|e| e.to_string()).collect();
        assert!(strs.iter().any(|s| s == "test error"), "{strs:?}");
        // the nested group: a NurseryError with one failure
        let nested = ne
            .errors()
            .find(|e| e.downcast_ref::<hatchery::NurseryError>().is_some())
            .expect("a nested nursery error");
        assert_eq!(failures(nested), ["test error"]);
    });
}

#[test]
fn cancel_scope_no_cancellederror() {
    vrun(async {
        let s = CancelScope::new();
        let h = s.handle();
        let h2 = h.clone();
        let out = s
            .run(async move {
                h2.cancel();
                nursery(|n| async move {
                    n.spawn(async { Err(Error::msg("test")) });
                    n.spawn(async { Err(Error::msg("test")) });
                    Ok(())
                })
                .await?;
                Ok(())
            })
            .await;
        let e = out.unwrap_err();
        assert_eq!(failures(&e), ["test", "test"]);
        assert!(!h.cancelled_caught());
    });
}

#[test]
fn basic_crashes() {
    vrun(async {
        // main block error
        let out = nursery(|_n| async { Err::<(), _>(Error::msg("whoops")) }).await;
        assert_eq!(failures(&out.unwrap_err()), ["whoops"]);
        // child crash
        let out = nursery(|n| async move {
            n.spawn(async { Err(Error::msg("uh oh")) });
            Ok(())
        })
        .await;
        assert_eq!(failures(&out.unwrap_err()), ["uh oh"]);
        // main and task both crash
        let out = nursery(|n| async move {
            n.spawn(async { Err(Error::msg("ValueError")) });
            Err::<(), _>(Error::msg("KeyError"))
        })
        .await;
        assert_eq!(
            sorted(failures(&out.unwrap_err())),
            ["KeyError", "ValueError"]
        );
        // two child crashes
        let out = nursery(|n| async move {
            n.spawn(async { Err(Error::msg("KeyError")) });
            n.spawn(async { Err(Error::msg("ValueError")) });
            Ok(())
        })
        .await;
        assert_eq!(
            sorted(failures(&out.unwrap_err())),
            ["KeyError", "ValueError"]
        );
        // child crash wakes parent
        let out = nursery(|n| async move {
            n.spawn(async { Err(Error::msg("this is a crash")) });
            sleep_forever().await?;
            Ok(())
        })
        .await;
        assert_eq!(failures(&out.unwrap_err()), ["this is a crash"]);
    });
}

#[test]
fn task_crash_propagation() {
    vrun(async {
        let record = Log::default();
        let record = &record;
        let out = nursery(|n| async move {
            n.spawn(async move {
                loop {
                    if checkpoint().await.is_err() {
                        push(record, "cancelled");
                        return Ok(());
                    }
                }
            });
            n.spawn(async { Err(Error::msg("argh")) });
            Ok(())
        })
        .await;
        assert_eq!(failures(&out.unwrap_err()), ["argh"]);
        assert_eq!(entries(record), ["cancelled"]);
    });
}

#[test]
fn basic_interleave() {
    vrun(async {
        let record = Log::default();
        let record = &record;
        nursery(|n| async move {
            for who in ["a", "b"] {
                n.spawn(async move {
                    for i in 0..3 {
                        push(record, format!("{who}{i}"));
                        checkpoint().await?;
                    }
                    Ok(())
                });
            }
            Ok(())
        })
        .await
        .unwrap();
        let r = entries(record);
        for k in 0..3 {
            let mut pair = vec![r[2 * k].clone(), r[2 * k + 1].clone()];
            pair.sort();
            assert_eq!(pair, [format!("a{k}"), format!("b{k}")], "{r:?}");
        }
    });
}
