//! Every await is a cancellation point: a future from another crate, which
//! cannot see a cancel scope, is dropped by its owner once the scope is
//! cancelled (unless a shield protects it), while hatchery's own checkpoints
//! get `Cancelled` and unwind with their cleanup.

mod common;

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use hatchery::{
    CancelScope, CancellableExt, Cancelled, Nursery, TimedOut, current_scope, sleep, sleep_forever,
    testing, typed::fail_after, typed::move_on_after, typed::nursery,
};

/// Sets its flag when dropped: proof that a future was dropped.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A future that never consults hatchery: `inner`, with a drop flag.
fn foreign<F: Future>(inner: F, dropped: &Arc<AtomicBool>) -> impl Future<Output = F::Output> {
    let flag = DropFlag(Arc::clone(dropped));
    async move {
        let _flag = flag;
        inner.await
    }
}

fn flag() -> Arc<AtomicBool> {
    Arc::new(AtomicBool::new(false))
}

/// `fail_after(3 s)` around `inner`: the timeout, at 3 s of virtual time,
/// with the inner future dropped.
fn times_out_at_three_seconds<F: Future>(inner: impl FnOnce() -> F) {
    let dropped = flag();
    let future = foreign(inner(), &dropped);
    let (out, took) = testing::run(async {
        let start = hatchery::now();
        let out: Result<_, io::Error> = fail_after(Duration::from_secs(3), async {
            future.await;
            Ok("finished")
        })
        .await;
        (out, hatchery::now() - start)
    });
    let error = out.unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::TimedOut, "{error}");
    assert!(error.get_ref().unwrap().is::<TimedOut>());
    assert_eq!(took, Duration::from_secs(3));
    assert!(
        dropped.load(Ordering::SeqCst),
        "the inner future was dropped"
    );
}

#[test]
fn fail_after_drops_a_pending_future_at_its_deadline() {
    times_out_at_three_seconds(std::future::pending::<()>);
}

#[test]
fn fail_after_drops_a_timer_of_another_crate_at_its_deadline() {
    times_out_at_three_seconds(|| async {
        async_io::Timer::after(Duration::from_secs(3600)).await;
    });
}

#[test]
fn fail_after_drops_a_channel_receive_at_its_deadline() {
    let (sender, receiver) = async_channel::bounded::<u32>(1);
    times_out_at_three_seconds(move || async move {
        let _ = receiver.recv().await;
    });
    drop(sender);
}

#[test]
fn move_on_after_returns_none_and_drops_the_foreign_future() {
    let dropped = flag();
    let future = foreign(std::future::pending::<()>(), &dropped);
    let (out, took) = testing::run(async {
        let start = hatchery::now();
        let out = move_on_after(Duration::from_secs(3), async {
            future.await;
            Ok::<_, Cancelled>("finished")
        })
        .await;
        (out, hatchery::now() - start)
    });
    assert_eq!(out, Ok(None));
    assert_eq!(took, Duration::from_secs(3));
    assert!(dropped.load(Ordering::SeqCst));
}

#[test]
fn a_scope_parked_in_a_foreign_future_notices_a_cancel_from_another_thread() {
    let dropped = flag();
    let future = foreign(std::future::pending::<()>(), &dropped);
    let scope = CancelScope::new();
    let handle = scope.handle();
    let canceller = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        handle.cancel();
    });
    let out = futures::executor::block_on(scope.run_typed(async {
        future.await;
        Ok::<_, Cancelled>(())
    }));
    canceller.join().unwrap();
    assert_eq!(out, Ok(None));
    assert!(dropped.load(Ordering::SeqCst));
}

#[test]
fn a_body_that_finishes_at_once_arms_no_timer_and_listens_to_nothing() {
    testing::run(async {
        let out = move_on_after(Duration::from_secs(3), async {
            assert_eq!(testing::live().listeners, 0);
            Ok::<_, Cancelled>(7)
        })
        .await;
        assert_eq!(out, Ok(Some(7)));
    });
    let clock = testing::VirtualClock::new();
    let next = clock.enter(|| {
        let mut scope = Box::pin(move_on_after(Duration::from_secs(3), async {
            hatchery::checkpoint().await?;
            Ok::<_, Cancelled>(())
        }));
        let waker = futures::task::noop_waker();
        // Parked at a checkpoint, not in a foreign future: no timer.
        assert!(
            scope
                .as_mut()
                .poll(&mut Context::from_waker(&waker))
                .is_pending()
        );
        clock.next_deadline()
    });
    assert_eq!(next, None);
}

/// A tokio sleep of an hour and a tokio accept, each under a 30 ms
/// deadline on the given tokio runtime.
macro_rules! tokio_foreign_awaits {
    ($name:ident, $runtime:path) => {
        #[test]
        fn $name() {
            let dropped = flag();
            let out: Result<(), io::Error> = $runtime(async {
                fail_after(Duration::from_millis(30), async {
                    foreign(tokio::time::sleep(Duration::from_secs(3600)), &dropped).await;
                    Ok(())
                })
                .await
            });
            assert_eq!(out.unwrap_err().kind(), io::ErrorKind::TimedOut);
            assert!(dropped.load(Ordering::SeqCst));

            let dropped = flag();
            let out = $runtime(async {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                move_on_after(Duration::from_millis(30), async {
                    foreign(listener.accept(), &dropped).await?;
                    Ok::<_, io::Error>(())
                })
                .await
            });
            assert_eq!(out.unwrap(), None);
            assert!(dropped.load(Ordering::SeqCst));
        }
    };
}

tokio_foreign_awaits!(
    tokio_sleep_and_accept_are_dropped_at_the_deadline_on_current_thread,
    common::tokio_current_thread
);
tokio_foreign_awaits!(
    tokio_sleep_and_accept_are_dropped_at_the_deadline_on_multi_thread,
    common::tokio_multi_thread
);

#[test]
fn a_parallel_child_parked_in_a_tokio_sleep_is_dropped_by_a_cancel_from_another_thread() {
    let dropped = flag();
    let parked = Arc::new(AtomicBool::new(false));
    let (dropped2, parked2) = (Arc::clone(&dropped), Arc::clone(&parked));
    let out = common::tokio_multi_thread(async move {
        let handle = tokio::runtime::Handle::current();
        nursery(|n: Nursery<'_, Cancelled>| async move {
            let parked = Arc::clone(&parked2);
            n.spawn_on(&handle, async move {
                let sleep = tokio::time::sleep(Duration::from_secs(3600));
                let sleep = foreign(sleep, &dropped2);
                parked.store(true, Ordering::SeqCst);
                sleep.await;
                Ok(())
            });
            let scope = n.cancel_scope();
            let parked = Arc::clone(&parked2);
            // The cancel comes from a plain thread, not from a task.
            tokio::task::spawn_blocking(move || {
                while !parked.load(Ordering::SeqCst) {
                    std::thread::yield_now();
                }
                scope.cancel();
            })
            .await
            .unwrap();
            Ok(())
        })
        .await
    });
    // The body awaits the blocking task, a foreign future: dropped, and the
    // nursery's scope catches that (`None`), unless that task had already
    // finished when the cancel reached the body (`Some`).
    assert!(matches!(out, Ok(None) | Ok(Some(()))), "{out:?}");
    assert!(dropped.load(Ordering::SeqCst));
}

common::matrix! {
    #[test]
    fn a_cancel_drops_a_foreign_await_and_lets_a_sleeper_clean_up() {
        let dropped = flag();
        let log = Mutex::new(Vec::new());
        let (log_ref, dropped_ref) = (&log, &dropped);
        let out = block_on(nursery(|n: Nursery<'_, Cancelled>| async move {
            n.spawn(async move {
                foreign(std::future::pending::<()>(), dropped_ref).await;
                log_ref.lock().unwrap().push("foreign finished");
                Ok(())
            });
            n.spawn(async move {
                let slept = sleep(Duration::from_secs(3600)).await;
                log_ref.lock().unwrap().push("sleeper cleaned up");
                slept
            });
            sleep(Duration::from_millis(10)).await?;
            n.cancel_scope().cancel();
            Ok(())
        }));
        assert_eq!(out.unwrap(), Some(()));
        assert!(dropped.load(Ordering::SeqCst));
        assert_eq!(*log.lock().unwrap(), ["sleeper cleaned up"]);
    }

    #[test]
    fn the_nursery_body_parked_in_a_foreign_future_is_dropped_too() {
        let dropped = flag();
        let dropped_ref = &dropped;
        let out = block_on(nursery(|n: Nursery<'_, Cancelled>| async move {
            let scope = n.cancel_scope();
            n.spawn(async move {
                sleep(Duration::from_millis(10)).await?;
                scope.cancel();
                Ok(())
            });
            foreign(std::future::pending::<()>(), dropped_ref).await;
            Ok("unreachable")
        }));
        assert_eq!(out.unwrap(), None, "caught by the nursery's own scope");
        assert!(dropped.load(Ordering::SeqCst));
    }

    #[test]
    fn a_shield_protects_a_foreign_await_and_its_value_is_delivered() {
        let (sender, receiver) = async_channel::bounded::<u32>(1);
        let unshielded_dropped = flag();
        let got = Mutex::new(None);
        let (got_ref, dropped_ref) = (&got, &unshielded_dropped);
        let out = block_on(nursery(|n: Nursery<'_, Cancelled>| async move {
            n.spawn(async move {
                let value = CancelScope::new()
                    .shield(true)
                    .run_typed(async { Ok::<_, Cancelled>(receiver.recv().await.unwrap()) })
                    .await?;
                *got_ref.lock().unwrap() = value;
                Ok(())
            });
            n.spawn(async move {
                foreign(std::future::pending::<()>(), dropped_ref).await;
                Ok(())
            });
            n.spawn(async move {
                // Cancelled; its cleanup sends what the shielded one awaits.
                let slept = sleep(Duration::from_secs(3600)).await;
                sender.try_send(42).unwrap();
                slept
            });
            sleep(Duration::from_millis(10)).await?;
            n.cancel_scope().cancel();
            Ok(())
        }));
        assert_eq!(out.unwrap(), Some(()));
        assert_eq!(*got.lock().unwrap(), Some(42));
        assert!(unshielded_dropped.load(Ordering::SeqCst));
    }

    #[test]
    fn cleanup_that_awaits_a_foreign_future_is_dropped_unless_shielded() {
        let (sender, receiver) = async_channel::bounded::<&str>(2);
        let dropped = flag();
        let log = Mutex::new(Vec::new());
        let (log_ref, dropped_ref, receiver) = (&log, &dropped, &receiver);
        let out = block_on(nursery(|n: Nursery<'_, Cancelled>| async move {
            n.spawn(async move {
                let slept = sleep(Duration::from_secs(3600)).await;
                assert_eq!(slept, Err(Cancelled));
                // Unshielded cleanup: this await is a cancellation point.
                foreign(receiver.recv(), dropped_ref).await.unwrap();
                log_ref.lock().unwrap().push("unshielded cleanup finished");
                slept
            });
            n.spawn(async move {
                let slept = sleep(Duration::from_secs(3600)).await;
                let message = CancelScope::new()
                    .shield(true)
                    .run_typed(async { Ok::<_, Cancelled>(receiver.recv().await.unwrap()) })
                    .await?;
                log_ref.lock().unwrap().push(message.unwrap());
                slept
            });
            sleep(Duration::from_millis(10)).await?;
            n.cancel_scope().cancel();
            // Sent once both children are in their cleanup.
            CancelScope::new()
                .shield(true)
                .run_typed(sleep(Duration::from_millis(10)))
                .await?;
            sender.try_send("shielded cleanup finished").unwrap();
            Ok(())
        }));
        assert_eq!(out.unwrap(), Some(()));
        assert!(dropped.load(Ordering::SeqCst));
        assert_eq!(*log.lock().unwrap(), ["shielded cleanup finished"]);
    }

    #[test]
    fn start_drops_a_foreign_await_before_and_after_started() {
        let (before, after) = (flag(), flag());
        let (before_ref, after_ref) = (&before, &after);
        let out = block_on(nursery(|n: Nursery<'_, Cancelled>| async move {
            // Cancelled while starting: the child is dropped, start() is
            // cancelled, and the caller's scope catches it.
            let caller = move_on_after(Duration::from_millis(10), async {
                n.start(|status: hatchery::Started<()>| async move {
                    let _status = status; // kept, never called
                    foreign(std::future::pending::<()>(), before_ref).await;
                    Ok(())
                })
                .await
            })
            .await?;
            assert_eq!(caller, None);
            // Started, then parked in a foreign future: the nursery's cancel
            // drops it.
            n.start(|status: hatchery::Started<()>| async move {
                status.started(());
                foreign(std::future::pending::<()>(), after_ref).await;
                Ok(())
            })
            .await?;
            n.cancel_scope().cancel();
            Ok(())
        }));
        assert_eq!(out.unwrap(), Some(()));
        assert!(before.load(Ordering::SeqCst));
        assert!(after.load(Ordering::SeqCst));
    }

    #[test]
    fn join_all_of_31_sleeps_inside_one_child_sees_the_cancel() {
        let cleaned = AtomicBool::new(false);
        let cleaned_ref = &cleaned;
        let out = block_on(nursery(|n: Nursery<'_, Cancelled>| async move {
            n.spawn(async move {
                // More than 30: join_all switches to FuturesOrdered.
                let all = futures::future::join_all((0..31).map(|_| sleep_forever())).await;
                assert!(all.iter().all(|one| one.is_err()));
                cleaned_ref.store(true, Ordering::SeqCst);
                Err(Cancelled)
            });
            sleep(Duration::from_millis(20)).await?;
            n.cancel_scope().cancel();
            Ok(())
        }));
        assert_eq!(out.unwrap(), Some(()));
        assert!(cleaned.load(Ordering::SeqCst), "the child was told, not dropped");
    }

    /// A `join` whose checkpoint returned `Cancelled` but which keeps
    /// waiting on a foreign future is a foreign wait: its task is dropped
    /// there (no code after the join runs, its `Drop` does). `try_join`
    /// returns at the first `Err`, and the code after it runs.
    #[test]
    fn a_join_still_waiting_on_a_foreign_future_is_dropped_and_try_join_is_told() {
        let joined = AtomicBool::new(false);
        let try_joined = AtomicBool::new(false);
        let dropped = flag();
        let (joined_ref, try_joined_ref, dropped_ref) = (&joined, &try_joined, &dropped);
        let out = block_on(nursery(|n: Nursery<'_, Cancelled>| async move {
            n.spawn(async move {
                let (slept, ()) = futures::future::join(
                    sleep(Duration::from_secs(3600)),
                    foreign(std::future::pending::<()>(), dropped_ref),
                )
                .await;
                joined_ref.store(true, Ordering::SeqCst);
                slept
            });
            n.spawn(async move {
                let out = futures::future::try_join(sleep(Duration::from_secs(3600)), async {
                    std::future::pending::<()>().await;
                    Ok(())
                })
                .await;
                try_joined_ref.store(true, Ordering::SeqCst);
                out.map(|_| ())
            });
            sleep(Duration::from_millis(20)).await?;
            n.cancel_scope().cancel();
            Ok(())
        }));
        assert_eq!(out.unwrap(), Some(()));
        assert!(!joined.load(Ordering::SeqCst), "the join's task was dropped");
        assert!(dropped.load(Ordering::SeqCst), "with its foreign half");
        assert!(try_joined.load(Ordering::SeqCst), "try_join returned Cancelled");
    }

    #[test]
    fn futures_unordered_and_buffer_unordered_inside_one_child_see_the_cancel() {
        use futures::StreamExt;
        let cleaned = AtomicUsize::new(0);
        let cleaned_ref = &cleaned;
        let out = block_on(nursery(|n: Nursery<'_, Cancelled>| async move {
            n.spawn(async move {
                let mut sleeps: futures::stream::FuturesUnordered<_> =
                    (0..4).map(|_| sleep(Duration::from_secs(3600))).collect();
                let first = sleeps.next().await.unwrap();
                cleaned_ref.fetch_add(1, Ordering::SeqCst);
                first
            });
            n.spawn(async move {
                let results: Vec<_> = futures::stream::iter(0..8)
                    .map(|_| sleep(Duration::from_secs(3600)))
                    .buffer_unordered(4)
                    .collect()
                    .await;
                assert!(results.iter().all(|one| one.is_err()));
                cleaned_ref.fetch_add(1, Ordering::SeqCst);
                Err(Cancelled)
            });
            n.spawn(async move {
                use futures_concurrency::future::Join;
                let (a, b, c) = (sleep_forever(), sleep(Duration::from_secs(3600)), sleep_forever())
                    .join()
                    .await;
                assert!(a.is_err() && b.is_err() && c.is_err());
                cleaned_ref.fetch_add(1, Ordering::SeqCst);
                Err(Cancelled)
            });
            sleep(Duration::from_millis(20)).await?;
            n.cancel_scope().cancel();
            Ok(())
        }));
        assert_eq!(out.unwrap(), Some(()));
        assert_eq!(cleaned.load(Ordering::SeqCst), 3, "every child was told");
    }
}

/// A future with a graceful stop: asked to stop, it finishes what it was
/// doing (two more polls) and returns how it ended.
struct Connection {
    stopping: Option<u32>,
    log: Arc<Mutex<Vec<&'static str>>>,
}

impl Connection {
    fn graceful_shutdown(mut self: Pin<&mut Self>) {
        self.log.lock().unwrap().push("asked to stop");
        self.stopping = Some(2);
    }
}

impl Future for Connection {
    type Output = &'static str;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<&'static str> {
        match &mut self.stopping {
            None => Poll::Pending,
            Some(0) => Poll::Ready("finished the request in flight"),
            Some(left) => {
                *left -= 1;
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }
    }
}

#[test]
fn a_foreign_future_with_a_graceful_stop_is_asked_to_stop_and_driven_to_the_end() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let connection = Connection {
        stopping: None,
        log: Arc::clone(&log),
    };
    let out = testing::run(async {
        let start = hatchery::now();
        let out = move_on_after(Duration::from_secs(1), async {
            let how = connection
                .cancel_gracefully(Duration::from_secs(5), Connection::graceful_shutdown)
                .await?;
            Ok::<_, Cancelled>(how)
        })
        .await;
        (out, hatchery::now() - start)
    });
    assert_eq!(
        out,
        (
            Ok(Some("finished the request in flight")),
            Duration::from_secs(1)
        )
    );
    assert_eq!(*log.lock().unwrap(), ["asked to stop"]);
}

#[test]
fn a_graceful_stop_that_overruns_its_grace_is_dropped() {
    let dropped = flag();
    let stubborn = foreign(std::future::pending::<()>(), &dropped);
    let (out, took) = testing::run(async {
        let start = hatchery::now();
        let out = move_on_after(Duration::from_secs(1), async {
            stubborn
                .cancel_gracefully(Duration::from_secs(5), |_| {})
                .await?;
            Ok::<_, Cancelled>("unreachable")
        })
        .await;
        (out, hatchery::now() - start)
    });
    assert_eq!(out, Ok(None));
    assert_eq!(took, Duration::from_secs(6));
    assert!(dropped.load(Ordering::SeqCst));
}

/// Drains for 10 ms with hatchery's own sleep once asked to stop.
struct Drain {
    stopping: bool,
    work: Pin<Box<dyn Future<Output = Result<&'static str, Cancelled>>>>,
}

impl Drain {
    fn stop(mut self: Pin<&mut Self>) {
        self.stopping = true;
    }
}

impl Future for Drain {
    type Output = Result<&'static str, Cancelled>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if !self.stopping {
            return Poll::Pending;
        }
        self.work.as_mut().poll(cx)
    }
}

#[test]
fn a_graceful_stop_is_shielded_so_hatchery_awaits_inside_it_finish() {
    let drain = Drain {
        stopping: false,
        work: Box::pin(async {
            sleep(Duration::from_millis(10)).await?;
            Ok("drained")
        }),
    };
    let (out, took) = testing::run(async {
        let start = hatchery::now();
        let out = move_on_after(Duration::from_secs(1), async {
            let drained = drain
                .cancel_gracefully(Duration::from_secs(5), Drain::stop)
                .await?;
            Ok::<_, Cancelled>(drained)
        })
        .await;
        (out, hatchery::now() - start)
    });
    assert_eq!(out, Ok(Some(Ok("drained"))));
    assert_eq!(took, Duration::from_millis(1010));
}

/// A cancellation that arrives while the future is being polled, before its
/// stop (here from inside it; in a server, from another thread while a
/// connection reads its request), reaches it through the stop: the hatchery
/// sleep it awaits in that same poll finishes. It returned `Cancelled`
/// there, and a request in flight was cut short (CI's real-client test saw
/// it once).
#[test]
fn a_cancel_arriving_mid_poll_before_the_stop_is_not_seen_by_awaits_inside() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let stops = Arc::clone(&log);
    let (out, took) = testing::run(async {
        let start = hatchery::now();
        let out = CancelScope::new()
            .run_typed(async {
                let scope = current_scope().unwrap();
                let request = async move {
                    scope.cancel();
                    sleep(Duration::from_millis(10)).await?;
                    Ok::<_, Cancelled>("answered")
                };
                request
                    .cancel_gracefully(Duration::from_secs(5), |_| {
                        stops.lock().unwrap().push("asked to stop")
                    })
                    .await
            })
            .await;
        (out, hatchery::now() - start)
    });
    assert_eq!(out, Ok(Some(Ok("answered"))));
    assert_eq!(took, Duration::from_millis(10));
    assert_eq!(*log.lock().unwrap(), ["asked to stop"]);
}

// ---------------------------------------------------------------------------
// What could make "no hatchery await parked it" wrong (`cancel::foreign`).
// ---------------------------------------------------------------------------

/// `select` over a hatchery sleep and a future that is ready: the sleep parks
/// the task, then is dropped in the same poll. The foreign await after it is
/// still dropped at the scope's deadline: the dropped sleep does not pass for
/// a hatchery await the task waits at.
#[test]
fn a_sleep_dropped_by_select_in_its_poll_leaves_the_next_foreign_await_droppable() {
    let dropped = flag();
    let finished = Arc::new(AtomicBool::new(false));
    let future = foreign(async_io::Timer::after(Duration::from_millis(300)), &dropped);
    let (out, took) = testing::run(async {
        let start = hatchery::now();
        let out = move_on_after(Duration::from_millis(15), async {
            // The losing sleep is dropped with the select's output, at the end
            // of this statement, in the poll where it parked.
            let lost = Box::pin(sleep(Duration::from_millis(8)));
            futures::future::select(lost, std::future::ready(())).await;
            future.await;
            finished.store(true, Ordering::SeqCst);
            Ok::<_, Cancelled>("finished")
        })
        .await;
        (out, hatchery::now() - start)
    });
    assert_eq!(out, Ok(None));
    assert_eq!(took, Duration::from_millis(15));
    assert!(
        dropped.load(Ordering::SeqCst),
        "the foreign await was dropped"
    );
    assert!(!finished.load(Ordering::SeqCst));
}

/// The same in a nursery's child, whose nursery is the owner.
#[test]
fn a_child_whose_select_dropped_a_sleep_is_dropped_at_its_deadline() {
    let dropped = flag();
    let finished = Arc::new(AtomicBool::new(false));
    let future = foreign(async_io::Timer::after(Duration::from_millis(300)), &dropped);
    let finished2 = Arc::clone(&finished);
    let (out, took) = testing::run(async {
        let start = hatchery::now();
        let out = move_on_after(
            Duration::from_millis(15),
            nursery(|n: Nursery<'_, Cancelled>| async move {
                let finished = finished2;
                n.spawn(async move {
                    let lost = Box::pin(sleep(Duration::from_millis(8)));
                    futures::future::select(lost, std::future::ready(())).await;
                    future.await;
                    finished.store(true, Ordering::SeqCst);
                    Ok(())
                });
                Ok(())
            }),
        )
        .await;
        (out.map(|out| out.map(drop)), hatchery::now() - start)
    });
    assert!(matches!(out, Ok(None)), "{out:?}");
    assert_eq!(took, Duration::from_millis(15));
    assert!(
        dropped.load(Ordering::SeqCst),
        "the foreign await was dropped"
    );
    assert!(!finished.load(Ordering::SeqCst));
}

/// A nested nursery inside `FuturesUnordered`, whose children clean up
/// behind shields when the outer nursery is cancelled: `FuturesUnordered`
/// polls the nested nursery only when it woke, but the task holding it is
/// kept until the cleanup is done.
#[test]
fn a_nested_nursery_inside_futures_unordered_finishes_its_cleanup_on_cancel() {
    use futures::StreamExt;
    let log = Mutex::new(Vec::new());
    let log = &log;
    let out = testing::run(nursery(|n: Nursery<'_, Cancelled>| async move {
        let cancel = n.cancel_scope();
        let inner = nursery(|inner: Nursery<'_, Cancelled>| async move {
            for i in 0..3 {
                inner.spawn(async move {
                    let Err(cancelled) = sleep_forever().await;
                    CancelScope::new()
                        .shield(true)
                        .run_typed(async {
                            sleep(Duration::from_millis(10 * (i + 1))).await?;
                            log.lock().unwrap().push(format!("cleaned up {i}"));
                            Ok::<_, Cancelled>(())
                        })
                        .await?;
                    Err(cancelled)
                });
            }
            Ok(())
        });
        let mut arms = futures::stream::FuturesUnordered::new();
        arms.push(inner);
        n.spawn(async move {
            sleep(Duration::from_millis(1)).await?;
            cancel.cancel();
            Ok(())
        });
        while let Some(out) = arms.next().await {
            log.lock()
                .unwrap()
                .push(format!("inner nursery: {}", out.is_ok()));
        }
        Ok(())
    }));
    // The nursery's own scope catches its cancel, as trio's does.
    assert!(out.is_ok(), "{out:?}");
    assert_eq!(
        *log.lock().unwrap(),
        [
            "cleaned up 0",
            "cleaned up 1",
            "cleaned up 2",
            "inner nursery: false"
        ]
    );
}

type BoxedArm<'a> = Pin<Box<dyn Future<Output = Result<(), Cancelled>> + Send + 'a>>;

/// A task holding a shielded scope inside `FuturesUnordered` next to a
/// foreign await: once the shield's work is done, the hold ends, and the
/// foreign await is dropped as in any cancelled task.
#[test]
fn a_hold_ends_with_the_shield_and_the_foreign_await_is_then_dropped() {
    use futures::StreamExt;
    let dropped = flag();
    let finished = Arc::new(AtomicBool::new(false));
    let log = Mutex::new(Vec::new());
    let log = &log;
    let slow = foreign(async_io::Timer::after(Duration::from_millis(300)), &dropped);
    let finished2 = Arc::clone(&finished);
    let out = testing::run(nursery(|n: Nursery<'_, Cancelled>| async move {
        let cancel = n.cancel_scope();
        n.spawn(async move {
            let mut arms: futures::stream::FuturesUnordered<BoxedArm<'_>> =
                futures::stream::FuturesUnordered::new();
            arms.push(Box::pin(async {
                CancelScope::new()
                    .shield(true)
                    .run_typed(async {
                        sleep(Duration::from_millis(10)).await?;
                        log.lock().unwrap().push("flushed");
                        Ok::<_, Cancelled>(())
                    })
                    .await?;
                Ok(())
            }));
            arms.push(Box::pin(async move {
                slow.await;
                finished2.store(true, Ordering::SeqCst);
                Ok(())
            }));
            while let Some(out) = arms.next().await {
                out?;
            }
            Ok(())
        });
        sleep(Duration::from_millis(1)).await?;
        cancel.cancel();
        Ok(())
    }));
    assert!(out.is_ok(), "{out:?}");
    assert_eq!(*log.lock().unwrap(), ["flushed"]);
    assert!(
        dropped.load(Ordering::SeqCst),
        "the foreign await was dropped"
    );
    assert!(!finished.load(Ordering::SeqCst));
}

/// A parallel child holding a shielded scope inside `FuturesUnordered`: its
/// owner on the worker names it by the executor's waker, and keeps it.
#[test]
fn a_parallel_child_holding_a_shield_inside_futures_unordered_finishes_its_cleanup() {
    use futures::StreamExt;
    let log = Arc::new(Mutex::new(Vec::new()));
    let log2 = Arc::clone(&log);
    let out = common::tokio_multi_thread(async move {
        let handle = tokio::runtime::Handle::current();
        nursery(|n: Nursery<'_, Cancelled>| async move {
            let cancel = n.cancel_scope();
            let log = Arc::clone(&log2);
            n.spawn_on(&handle, async move {
                let mut arms = futures::stream::FuturesUnordered::new();
                arms.push(CancelScope::new().shield(true).run_typed(async move {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    sleep(Duration::from_millis(20)).await?;
                    log.lock().unwrap().push("flushed");
                    Ok::<_, Cancelled>(())
                }));
                while let Some(out) = arms.next().await {
                    out?;
                }
                Ok(())
            });
            sleep(Duration::from_millis(10)).await?;
            cancel.cancel();
            Ok(())
        })
        .await
    });
    assert!(out.is_ok(), "{out:?}");
    assert_eq!(*log.lock().unwrap(), ["flushed"]);
}

/// A thousand children, each holding shielded cleanups inside a
/// `FuturesUnordered`, in a nursery that is cancelled: every cleanup runs,
/// and the holds (one per pending scope) all end.
#[test]
fn a_thousand_children_holding_shields_inside_futures_unordered_all_clean_up() {
    use futures::StreamExt;
    let cleaned = AtomicUsize::new(0);
    let cleaned = &cleaned;
    let out = testing::run(nursery(|n: Nursery<'_, Cancelled>| async move {
        for child in 0..1_000u64 {
            n.spawn(async move {
                let mut arms = futures::stream::FuturesUnordered::new();
                for arm in 0..3u64 {
                    arms.push(async move {
                        let Err(cancelled) = sleep_forever().await;
                        CancelScope::new()
                            .shield(true)
                            .run_typed(async {
                                sleep(Duration::from_millis(1 + (child + arm) % 7)).await?;
                                cleaned.fetch_add(1, Ordering::SeqCst);
                                Ok::<_, Cancelled>(())
                            })
                            .await?;
                        Err::<(), _>(cancelled)
                    });
                }
                while let Some(out) = arms.next().await {
                    let _ = out;
                }
                Ok(())
            });
        }
        sleep(Duration::from_millis(1)).await?;
        n.cancel_scope().cancel();
        Ok(())
    }));
    assert!(out.is_ok(), "{out:?}");
    assert_eq!(cleaned.load(Ordering::SeqCst), 3_000);
}

/// A scope whose body waits in a foreign future listens for the scope's
/// next change only while it has no deadline; a deadline set later, from
/// another task, is then met with a timer: the foreign future is dropped
/// there.
#[test]
fn a_deadline_set_while_the_body_waits_in_a_foreign_future_drops_it_there() {
    let dropped = flag();
    let future = foreign(async_io::Timer::after(Duration::from_millis(300)), &dropped);
    let (out, took) = testing::run(async {
        let start = hatchery::now();
        let scope = CancelScope::new();
        let handle = scope.handle();
        let out = nursery(|n: Nursery<'_, Cancelled>| async move {
            n.spawn(async move {
                sleep(Duration::from_millis(5)).await?;
                handle.set_deadline(hatchery::now() + Duration::from_millis(10));
                Ok(())
            });
            let inner = scope
                .run_typed(async {
                    future.await;
                    Ok::<_, Cancelled>("finished")
                })
                .await?;
            assert_eq!(inner, None, "the deadline caught it");
            Ok(())
        })
        .await;
        (out.map(drop), hatchery::now() - start)
    });
    assert!(out.is_ok(), "{out:?}");
    assert_eq!(took, Duration::from_millis(15));
    assert!(
        dropped.load(Ordering::SeqCst),
        "the foreign await was dropped"
    );
}

/// A `start()` inside `FuturesUnordered` whose starting child cleans up
/// behind a shield when the nursery is cancelled: the start holds its task,
/// the cleanup runs, and `start()` then returns `Cancelled`.
#[test]
fn a_start_inside_futures_unordered_lets_its_child_clean_up_on_cancel() {
    use futures::StreamExt;
    let log = Mutex::new(Vec::new());
    let log = &log;
    let out = testing::run(nursery(|n: Nursery<'_, Cancelled>| async move {
        let cancel = n.cancel_scope();
        n.spawn(async move {
            sleep(Duration::from_millis(1)).await?;
            cancel.cancel();
            Ok(())
        });
        let mut arms = futures::stream::FuturesUnordered::new();
        arms.push(n.start(|status: hatchery::Started<()>| async move {
            // Held, never called: the child is still starting when cancelled.
            let _status = status;
            let Err(cancelled) = sleep_forever().await;
            CancelScope::new()
                .shield(true)
                .run_typed(async {
                    sleep(Duration::from_millis(10)).await?;
                    log.lock().unwrap().push("starting child cleaned up");
                    Ok::<_, Cancelled>(())
                })
                .await?;
            Err(cancelled)
        }));
        while let Some(out) = arms.next().await {
            log.lock().unwrap().push(if out.is_err() {
                "start() returned Cancelled"
            } else {
                "start() returned a value"
            });
        }
        Ok(())
    }));
    assert!(out.is_ok(), "{out:?}");
    assert_eq!(
        *log.lock().unwrap(),
        ["starting child cleaned up", "start() returned Cancelled"]
    );
}

/// `join_all` over more than 30 futures polls only what woke it (it runs a
/// `FuturesUnordered` inside): forty shielded cleanups in a cancelled
/// nursery all run.
#[test]
fn join_all_over_forty_shielded_cleanups_runs_each_on_cancel() {
    let cleaned = AtomicUsize::new(0);
    let cleaned = &cleaned;
    let out = testing::run(nursery(|n: Nursery<'_, Cancelled>| async move {
        let cancel = n.cancel_scope();
        n.spawn(async move {
            sleep(Duration::from_millis(1)).await?;
            cancel.cancel();
            Ok(())
        });
        let arms = (0..40u64).map(|i| async move {
            let Err(cancelled) = sleep_forever().await;
            CancelScope::new()
                .shield(true)
                .run_typed(async {
                    sleep(Duration::from_millis(1 + i % 5)).await?;
                    cleaned.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, Cancelled>(())
                })
                .await?;
            Err::<(), _>(cancelled)
        });
        let outs = futures::future::join_all(arms).await;
        assert!(outs.iter().all(Result::is_err));
        Ok(())
    }));
    assert!(out.is_ok(), "{out:?}");
    assert_eq!(cleaned.load(Ordering::SeqCst), 40);
}

/// A scope future polled inside a combinator (with a waker other than its
/// task's: it holds its task, `cancel::foreign::Hold`) and then moved away:
/// the hold moves with it. The task it left then waits in a foreign future,
/// which the nursery's cancel must drop; the stale hold kept it for ever
/// (review of the moved-scope fix).
fn moved_hold_case(to_a_sibling: bool) -> Option<Result<Option<()>, bool>> {
    use futures::FutureExt;
    type Moved = Pin<Box<dyn Future<Output = Result<Option<()>, Cancelled>> + Send>>;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let out = futures::executor::block_on(nursery(|n: Nursery<'_, Cancelled>| async move {
            let (send, receive) = futures::channel::oneshot::channel::<Moved>();
            n.spawn(async move {
                let mut scope: Moved = Box::pin(CancelScope::new().shield(true).run_typed(async {
                    sleep(Duration::from_millis(50)).await?;
                    Ok::<_, Cancelled>(())
                }));
                // A combinator's poll: a waker of its own.
                assert!((&mut scope).now_or_never().is_none());
                let _ = send.send(scope);
                std::future::pending::<()>().await; // foreign
                Ok(())
            });
            if to_a_sibling {
                n.spawn(async move {
                    receive.await.expect("sent").await?;
                    Ok(())
                });
            } else {
                let scope = receive.await.expect("sent");
                // A plain thread, outside any scope.
                std::thread::spawn(move || {
                    let _ = futures::executor::block_on(scope);
                });
            }
            sleep(Duration::from_millis(20)).await?;
            n.cancel_scope().cancel();
            Ok(())
        }))
        .map_err(|error| error.is_cancelled());
        let _ = tx.send(out);
    });
    rx.recv_timeout(Duration::from_secs(10)).ok()
}

#[test]
fn a_held_scope_future_moved_to_a_thread_lets_its_old_task_be_dropped() {
    assert_eq!(
        moved_hold_case(false),
        Some(Ok(Some(()))),
        "the nursery hung"
    );
}

#[test]
fn a_held_scope_future_moved_to_a_sibling_lets_its_old_task_be_dropped() {
    assert_eq!(
        moved_hold_case(true),
        Some(Ok(Some(()))),
        "the nursery hung"
    );
}

/// The old owner of a held task is a scope (not a nursery): it keeps the
/// task for the held await's wake, and must listen too, so that a hold that
/// moves away *after* its timeout is seen and the task dropped (review: the
/// scope's task waited in its foreign future for ever).
#[test]
fn a_hold_moved_away_after_its_scopes_timeout_lets_the_scope_drop_its_task() {
    use futures::FutureExt;
    type Moved = Pin<Box<dyn Future<Output = Result<Option<()>, Cancelled>> + Send>>;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let out = futures::executor::block_on(async {
            let (send, receive) = futures::channel::oneshot::channel::<Moved>();
            let (go, gone) = futures::channel::oneshot::channel::<()>();
            std::thread::spawn(move || {
                let scope = futures::executor::block_on(receive).expect("sent");
                let _ = futures::executor::block_on(scope);
            });
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(40));
                let _ = go.send(());
            });
            CancelScope::new()
                .timeout(Duration::from_millis(10))
                .run_typed(async move {
                    let mut held: Moved =
                        Box::pin(CancelScope::new().shield(true).run_typed(async {
                            sleep(Duration::from_millis(100)).await?;
                            Ok::<_, Cancelled>(())
                        }));
                    // A combinator's poll: the task holds the shielded scope.
                    assert!((&mut held).now_or_never().is_none());
                    let _ = gone.await; // foreign; woken after the timeout
                    let _ = send.send(held); // the hold moves away
                    std::future::pending::<()>().await; // foreign
                    Ok::<_, Cancelled>(())
                })
                .await
        });
        let _ = tx.send(out);
    });
    let out = rx.recv_timeout(Duration::from_secs(10));
    assert_eq!(out, Ok(Ok(None)), "the scope kept its task for ever");
}
