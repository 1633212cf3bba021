//! Second-pass ports of anyio's tests/test_taskgroups.py (anyio at
//! 660a06d): the cases the first pass (tests/port_anyio_taskgroups.rs) did
//! not port. anyio's no-spinning tests (#695) measure CPU time; here the
//! polls of the shielded task are counted instead (a loop that spins polls
//! it over and over), which needs no clock.
use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hatchery::{
    CancelReason, CancelScope, Cancelled, Error, NurseryError, TimedOut, check_cancelled,
    checkpoint, current_effective_deadline, current_scope, fail_after, fail_at, move_on_after,
    move_on_at, now, nursery, sleep, sleep_forever,
};

mod ports;
use ports::*;

#[derive(Debug)]
struct RuntimeError(u32);
impl fmt::Display for RuntimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RuntimeError#{}", self.0)
    }
}
impl StdError for RuntimeError {}

/// anyio test_success.
#[test]
fn success() {
    vrun(async {
        let results = Mutex::new(Vec::new());
        let r = &results;
        nursery(|n| async move {
            n.spawn(async move {
                r.lock().unwrap().push("a");
                Ok(())
            });
            n.spawn(async move {
                r.lock().unwrap().push("b");
                Ok(())
            });
            Ok(())
        })
        .await
        .unwrap();
        assert_eq!(
            sorted(
                results
                    .into_inner()
                    .unwrap()
                    .iter()
                    .map(|s| s.to_string())
                    .collect()
            ),
            ["a", "b"]
        );
    });
}

/// anyio test_cancel: a child spawned then cancelled before it ran still
/// starts (runs up to its first checkpoint) and gets no further.
#[test]
fn cancel() {
    vrun(async {
        let started = AtomicBool::new(false);
        let s = &started;
        let out = nursery(|n| async move {
            n.spawn(async move {
                s.store(true, SeqCst);
                checkpoint().await?;
                panic!("Execution should not reach this point");
            });
            assert!(!s.load(SeqCst));
            n.cancel_scope().cancel();
            Ok(())
        })
        .await;
        assert!(matches!(out, Ok(Some(()))), "{out:?}");
        assert!(started.load(SeqCst));
    });
}

/// anyio test_cancel_with_reason: the group's scope cancelled with a reason;
/// the next checkpoint raises. (anyio puts the reason in the exception's
/// message; hatchery's `Cancelled` carries nothing, the reason is on the
/// handle.)
#[test]
fn cancel_with_reason() {
    vrun(async {
        let mut h = None;
        let out = nursery(|n| {
            h = Some(n.cancel_scope());
            async move {
                n.cancel_scope().cancel_with_reason("test reason");
                let r = checkpoint().await;
                assert_eq!(r, Err(Cancelled));
                r?;
                Ok(())
            }
        })
        .await;
        assert!(matches!(out, Ok(None)), "{out:?}");
        let h = h.unwrap();
        assert_eq!(
            h.reason(),
            Some(CancelReason::Message("test reason".into()))
        );
        assert!(h.cancelled_caught());
    });
}

/// anyio test_cancel_reason: the same on a bare scope.
#[test]
fn cancel_reason() {
    vrun(async {
        let scope = CancelScope::new();
        let h = scope.handle();
        let h2 = h.clone();
        let out = scope
            .run(async move {
                h2.cancel_with_reason("test reason");
                assert_eq!(checkpoint().await, Err(Cancelled));
                Ok(())
            })
            .await;
        assert!(matches!(out, Ok(Some(()))), "{out:?}");
        assert_eq!(h.reason().unwrap().to_string(), "test reason");
    });
}

/// anyio test_fail_after / test_fail_at (instant and delayed), on the scope
/// fail_after itself opens: TimeoutError out, cancel_called and
/// cancelled_caught, and the cancellation says "deadline".
#[test]
fn fail_after_and_fail_at_scope_flags() {
    for delay in [0.0, 0.1] {
        for at in [false, true] {
            vrun(async move {
                let scope = Mutex::new(None);
                let s = &scope;
                let body = async move {
                    *s.lock().unwrap() = current_scope();
                    let r = sleep(secs(1.0)).await;
                    assert_eq!(r, Err(Cancelled));
                    r?;
                    panic!("sleep() should have raised a cancellation exception");
                    #[allow(unreachable_code)]
                    Ok::<(), Error>(())
                };
                let out = if at {
                    fail_at(now() + secs(delay), body).await
                } else {
                    fail_after(secs(delay), body).await
                };
                let ctx = format!("delay={delay} at={at}: {out:?}");
                let e: Error = out.expect_err(&ctx);
                assert!(e.downcast_ref::<TimedOut>().is_some(), "{ctx}");
                let h = scope
                    .lock()
                    .unwrap()
                    .take()
                    .expect("fail_after opens a scope");
                assert!(h.cancel_called(), "{ctx}");
                assert!(h.cancelled_caught(), "{ctx}");
                assert_eq!(h.reason(), Some(CancelReason::Deadline), "{ctx}");
                assert!(
                    h.reason().unwrap().to_string().contains("deadline"),
                    "{ctx}"
                );
            });
        }
    }
}

/// anyio test_move_on_after / test_move_on_at (instant and delayed), on the
/// scope move_on_* itself opens.
#[test]
fn move_on_after_and_move_on_at_scope_flags() {
    for delay in [0.0, 0.1] {
        for at in [false, true] {
            vrun(async move {
                let result = AtomicBool::new(false);
                let scope = Mutex::new(None);
                let (r, s) = (&result, &scope);
                let body = async move {
                    *s.lock().unwrap() = current_scope();
                    sleep(secs(1.0)).await?;
                    r.store(true, SeqCst);
                    Ok(())
                };
                let out = if at {
                    move_on_at(now() + secs(delay), body).await
                } else {
                    move_on_after(secs(delay), body).await
                };
                let ctx = format!("delay={delay} at={at}: {out:?}");
                assert!(matches!(out, Ok(None)), "{ctx}");
                assert!(!result.load(SeqCst), "{ctx}");
                let h = scope.lock().unwrap().take().unwrap();
                assert!(h.cancel_called(), "{ctx}");
                assert!(h.cancelled_caught(), "{ctx}");
            });
        }
    }
}

/// anyio test_fail_after_no_timeout / test_move_on_after_no_timeout:
/// `None` has no counterpart; a timeout too large for `Instant` means no
/// deadline (documented on `CancelScope::timeout`).
#[test]
fn fail_after_and_move_on_after_no_timeout() {
    vrun(async {
        let scope = Mutex::new(None);
        let s = &scope;
        let out = fail_after(Duration::MAX, async move {
            let h = current_scope().unwrap();
            assert_eq!(h.deadline(), None);
            assert_eq!(current_effective_deadline(), None);
            *s.lock().unwrap() = Some(h);
            sleep(secs(0.1)).await?;
            Ok(())
        })
        .await;
        out.unwrap();
        let h = scope.lock().unwrap().take().unwrap();
        assert!(!h.cancel_called());
        assert!(!h.cancelled_caught());

        let result = AtomicBool::new(false);
        let r = &result;
        let out = move_on_after(Duration::MAX, async move {
            let h = current_scope().unwrap();
            assert_eq!(h.deadline(), None);
            *s.lock().unwrap() = Some(h);
            sleep(secs(0.1)).await?;
            r.store(true, SeqCst);
            Ok(())
        })
        .await;
        assert!(matches!(out, Ok(Some(()))), "{out:?}");
        assert!(result.load(SeqCst));
        let h = scope.lock().unwrap().take().unwrap();
        assert!(!h.cancel_called());
    });
}

/// anyio test_cancel_cascade.
#[test]
fn cancel_cascade() {
    vrun(async {
        let reached = AtomicBool::new(false);
        let re = &reached;
        let out = nursery(|tg| async move {
            tg.named("do_something").spawn(async move {
                nursery(|tg2| async move {
                    tg2.named("sleep").spawn(async {
                        sleep(secs(1.0)).await?;
                        Ok(())
                    });
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
        .await;
        assert!(matches!(out, Ok(Some(()))), "{out:?}");
        assert!(
            !reached.load(SeqCst),
            "Execution should not reach this point"
        );
    });
}

/// anyio test_exception_group_filtering: in a cancelled scope, a group that
/// holds a real error and a cancellation comes out without the
/// cancellation, holding the very same error. In hatchery the group is a
/// nursery's: its body raises the error, a child meets the cancellation.
#[test]
fn exception_group_filtering() {
    vrun(async {
        let cs = CancelScope::new();
        let h = cs.handle();
        let h2 = h.clone();
        let out = cs
            .run(async move {
                h2.cancel();
                nursery(|n| async move {
                    n.spawn(async {
                        checkpoint().await?;
                        panic!("Did not raise a cancellation exception");
                    });
                    // the body: raise body_exc after the child's Cancelled
                    wait_all_tasks_blocked().await;
                    Err::<(), _>(Error::new(RuntimeError(1)))
                })
                .await?;
                Ok(())
            })
            .await;
        let e = out.unwrap_err();
        let ne = e.downcast_ref::<NurseryError>().expect("a group");
        assert_eq!(ne.failures().len(), 1, "{ne:?}");
        assert_eq!(
            ne.failures()[0]
                .error
                .downcast_ref::<RuntimeError>()
                .map(|r| r.0),
            Some(1)
        );
    });
}

/// anyio test_nested_exception_group_filtering: the same, one group deeper.
#[test]
fn nested_exception_group_filtering() {
    vrun(async {
        let cs = CancelScope::new();
        let h = cs.handle();
        let h2 = h.clone();
        let out = cs
            .run(async move {
                h2.cancel();
                nursery(|outer| async move {
                    outer.spawn(async {
                        nursery(|n| async move {
                            n.spawn(async {
                                checkpoint().await?;
                                panic!("Did not raise a cancellation exception");
                            });
                            wait_all_tasks_blocked().await;
                            Err::<(), _>(Error::new(RuntimeError(2)))
                        })
                        .await?;
                        Ok(())
                    });
                    Ok(())
                })
                .await?;
                Ok(())
            })
            .await;
        let e = out.unwrap_err();
        let ne = e.downcast_ref::<NurseryError>().expect("a group");
        assert_eq!(ne.failures().len(), 1, "{ne:?}");
        let inner = ne.failures()[0]
            .error
            .downcast_ref::<NurseryError>()
            .expect("a nested group");
        assert_eq!(inner.failures().len(), 1, "{inner:?}");
        assert_eq!(
            inner.failures()[0]
                .error
                .downcast_ref::<RuntimeError>()
                .map(|r| r.0),
            Some(2)
        );
    });
}

/// anyio test_reraise_cancelled_in_excgroup: a cancellation re-raised
/// wrapped in a group is still caught by the scope that was cancelled.
#[test]
fn reraise_cancelled_in_excgroup() {
    #[derive(Debug)]
    struct Group(Cancelled);
    impl fmt::Display for Group {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("group")
        }
    }
    impl StdError for Group {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&self.0)
        }
    }
    vrun(async {
        let scope = CancelScope::new();
        let h = scope.handle();
        let h2 = h.clone();
        let out = scope
            .run(async move {
                h2.cancel();
                match sleep_forever().await {
                    Err(exc) => Err::<(), _>(Error::new(Group(exc))),
                    Ok(never) => match never {},
                }
            })
            .await;
        assert!(matches!(out, Ok(None)), "{out:?}");
        assert!(h.cancelled_caught());
    });
}

/// anyio test_cancel_completed_task: a child that finished before the
/// cancel: nothing is reported.
#[test]
fn cancel_completed_task() {
    vrun(async {
        let out = nursery(|n| async move {
            n.spawn(async { Ok(()) });
            n.cancel_scope().cancel();
            Ok(())
        })
        .await;
        assert!(matches!(out, Ok(Some(()))), "{out:?}");
    });
}

/// anyio TestUncancel test_cancel_counter_nested_scopes /
/// test_uncancel_after_child_task_failed: nothing of a cancellation is left
/// over once the scope that caught it (or the group that failed) is gone.
#[test]
fn nothing_left_after_scope_or_failed_group() {
    vrun(async {
        let root = CancelScope::new();
        let rh = root.handle();
        let out = root
            .run(CancelScope::new().run(async move {
                rh.cancel();
                checkpoint().await?;
                Ok(())
            }))
            .await;
        assert!(matches!(out, Ok(None)), "{out:?}");
        assert_eq!(check_cancelled(), Ok(()));
        assert_eq!(checkpoint().await, Ok(()));

        let out = nursery(|n| async move {
            n.spawn(async { Err(Error::msg("dummy error")) });
            Ok(())
        })
        .await;
        assert_eq!(failures(&out.unwrap_err()), ["dummy error"]);
        assert_eq!(check_cancelled(), Ok(()));
        assert_eq!(checkpoint().await, Ok(()));
    });
}

// ---------------------------------------------------------- no spinning
// anyio test_shielded_cancel_sleep_time and test_cancel_with_nested_task_groups
// (#695): cancelling a group whose child sits behind a shield must not make
// the loop spin while the shielded child waits: counted by the number of
// polls the shielded wait gets.

/// Counts the polls of a future in `polls` (borrowed, or an `Arc` for a
/// `'static` child).
struct CountPolls<P, F> {
    polls: P,
    inner: Pin<Box<F>>,
}
// The counted future is boxed: nothing here is pinned.
impl<P, F> Unpin for CountPolls<P, F> {}
impl<P: std::ops::Deref<Target = AtomicUsize>, F: Future> Future for CountPolls<P, F> {
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.polls.fetch_add(1, SeqCst);
        self.inner.as_mut().poll(cx)
    }
}
fn count_polls<P: std::ops::Deref<Target = AtomicUsize>, F: Future>(
    polls: P,
    inner: F,
) -> CountPolls<P, F> {
    CountPolls {
        polls,
        inner: Box::pin(inner),
    }
}

/// anyio test_shielded_cancel_sleep_time, with the event as a hatchery
/// waiter (ports::Event) and as a foreign future (a tokio Notify).
#[test]
fn shielded_cancel_sleep_time() {
    for foreign in [false, true] {
        let hang_time = Duration::from_millis(200);
        futures::executor::block_on(async move {
            let event = Event::new();
            let notify = tokio::sync::Notify::new();
            let (event, notify) = (&event, &notify);
            let polls = AtomicUsize::new(0);
            let polls = &polls;
            nursery(|tg| async move {
                tg.spawn(async move {
                    sleep(hang_time).await?;
                    event.set();
                    notify.notify_one();
                    Ok(())
                });
                let wall0 = Instant::now();
                nursery(|tg| async move {
                    tg.spawn(async move {
                        CancelScope::new()
                            .shield(true)
                            .run(count_polls(polls, async move {
                                sleep(Duration::from_millis(200)).await?;
                                if foreign {
                                    notify.notified().await;
                                } else {
                                    event.wait().await?;
                                }
                                Ok(())
                            }))
                            .await?
                            .expect("the shield holds");
                        Ok(())
                    });
                    tg.cancel_scope().cancel();
                    Ok(())
                })
                .await?;
                let wall = wall0.elapsed();
                let n = polls.load(SeqCst);
                eprintln!("foreign={foreign}: wall {wall:?}, polls {n}");
                assert!(
                    wall >= Duration::from_millis(190),
                    "the shield held: {wall:?}"
                );
                assert!(
                    n < 10,
                    "foreign={foreign}: the shielded body was polled {n} times"
                );
                Ok(())
            })
            .await
            .unwrap();
        });
    }
}

/// anyio test_cancel_with_nested_task_groups (#695): outer group cancelled
/// while a middle group's child sleeps behind a shield for 0.5 s: the
/// cancellation is delivered a bounded number of times (the shielded task
/// is not woken over and over).
#[test]
fn cancel_with_nested_task_groups() {
    futures::executor::block_on(async {
        let shield_polls = AtomicUsize::new(0);
        let middle_polls = AtomicUsize::new(0);
        let (sp, mp) = (&shield_polls, &middle_polls);
        let out = nursery(|tg| async move {
            tg.named("middle task").spawn(count_polls(mp, async move {
                nursery(|tg2| async move {
                    tg2.named("shield task").spawn(async move {
                        CancelScope::new()
                            .shield(true)
                            .run(count_polls(sp, async {
                                sleep(Duration::from_millis(500)).await?;
                                Ok(())
                            }))
                            .await?
                            .expect("the shield holds");
                        Ok(())
                    });
                    Ok(())
                })
                .await?;
                Ok(())
            }));
            // wait_all_tasks_blocked, on the real clock
            for _ in 0..10 {
                checkpoint().await?;
            }
            tg.cancel_scope().cancel();
            Ok(())
        })
        .await;
        assert!(matches!(out, Ok(Some(()))), "{out:?}");
        let (s, m) = (shield_polls.load(SeqCst), middle_polls.load(SeqCst));
        eprintln!("shield polls {s}, middle polls {m}");
        assert!(s < 10, "shielded body polled {s} times");
        assert!(m < 10, "middle task polled {m} times");
    });
}

/// anyio test_shielded_cancel_sleep_time with the shielded child parallel,
/// under `hatchery::run` and on tokio's multi-thread runtime (anyio runs
/// its suite on every backend).
#[test]
fn shielded_cancel_sleep_time_parallel() {
    use std::sync::Arc;
    async fn scenario(polls: Arc<AtomicUsize>, tokio: bool) -> hatchery::Result<()> {
        let event = Arc::new(tokio::sync::Notify::new());
        let hang_time = Duration::from_millis(200);
        nursery(|tg| {
            let event = Arc::clone(&event);
            async move {
                let e2 = Arc::clone(&event);
                tg.spawn(async move {
                    sleep(hang_time).await?;
                    e2.notify_one();
                    Ok(())
                });
                nursery(|tg| async move {
                    let child = async move {
                        CancelScope::new()
                            .shield(true)
                            .run(count_polls(polls, async move {
                                sleep(Duration::from_millis(200)).await?;
                                event.notified().await;
                                Ok(())
                            }))
                            .await?
                            .expect("the shield holds");
                        Ok(())
                    };
                    if tokio {
                        tg.spawn_on(&tokio::runtime::Handle::current(), child);
                    } else {
                        tg.spawn_parallel(child);
                    }
                    tg.cancel_scope().cancel();
                    Ok(())
                })
                .await?;
                Ok(())
            }
        })
        .await?;
        Ok(())
    }

    let polls = Arc::new(AtomicUsize::new(0));
    let p = Arc::clone(&polls);
    let out = hatchery::Builder::new()
        .tokio()
        .run(move |_n| async move { scenario(p, false).await });
    assert!(matches!(out, Ok(Some(()))), "{out:?}");
    let n = polls.load(SeqCst);
    assert!(n < 10, "polled {n} times");

    let polls = Arc::new(AtomicUsize::new(0));
    let p = Arc::clone(&polls);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(scenario(p, true)).unwrap();
    let n = polls.load(SeqCst);
    assert!(n < 10, "polled {n} times");
}
