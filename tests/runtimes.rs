//! Runtimes: `hatchery::run`, parallel children on executors, blocking work,
//! and misuse of each.

use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use futures::executor::block_on;
use hatchery::{
    Builder, CancelScope, Cancelled, Nursery, SpawnError, checkpoint, sleep, sleep_forever,
    typed::nursery, typed::run,
};

fn thread_name() -> String {
    thread::current().name().unwrap_or("unnamed").to_string()
}

#[test]
fn run_returns_the_body_value_and_waits_for_parallel_children() {
    let finished = Arc::new(AtomicUsize::new(0));
    let counter = finished.clone();
    let out = run(|n: Nursery<'_, Cancelled>| async move {
        for _ in 0..8 {
            let counter = counter.clone();
            n.spawn_parallel(async move {
                sleep(Duration::from_millis(5)).await?;
                assert!(thread_name().starts_with("hatchery-worker-"));
                counter.fetch_add(1, Ordering::SeqCst);
                Ok(())
            });
        }
        Ok("body value")
    });
    assert_eq!(out.unwrap(), Some("body value"));
    assert_eq!(finished.load(Ordering::SeqCst), 8);
}

#[test]
fn a_child_on_another_thread_observes_a_cancel_issued_on_this_one() {
    let main_thread = thread::current().id();
    let out =
        Builder::new()
            .error_type()
            .worker_threads(2)
            .run(|n: Nursery<'_, Cancelled>| async move {
                let (parked_tx, parked_rx) = futures::channel::oneshot::channel();
                n.spawn_parallel(async move {
                    assert_ne!(thread::current().id(), main_thread);
                    parked_tx.send(()).unwrap();
                    let result = sleep_forever().await;
                    assert_eq!(result.map(|never| match never {}), Err(Cancelled));
                    Err(Cancelled)
                });
                parked_rx.await.unwrap();
                assert_eq!(thread::current().id(), main_thread);
                n.cancel_scope().cancel();
                Ok(())
            });
    assert_eq!(out.unwrap(), Some(()));
}

#[test]
fn ten_thousand_parallel_children_are_cancelled_and_all_joined() {
    let cleaned = Arc::new(AtomicUsize::new(0));
    let counter = cleaned.clone();
    let out = run(|n: Nursery<'_, Cancelled>| async move {
        for _ in 0..10_000 {
            let counter = counter.clone();
            n.spawn_parallel(async move {
                let result = sleep_forever().await;
                counter.fetch_add(1, Ordering::SeqCst);
                result?;
                Ok(())
            });
        }
        sleep(Duration::from_millis(20)).await?;
        n.cancel_scope().cancel();
        Ok(())
    });
    assert_eq!(out.unwrap(), Some(()));
    assert_eq!(cleaned.load(Ordering::SeqCst), 10_000);
}

#[test]
fn a_parallel_childs_error_and_panic_are_collected_like_inline_ones() {
    let out = run(|n: Nursery<'_, io::Error>| async move {
        n.spawn_parallel(async { Err(io::Error::other("remote failure")) });
        sleep_forever().await?;
        Ok(())
    });
    let error = out.unwrap_err();
    assert_eq!(error.failures().len(), 1);
    assert_eq!(error.failures()[0].error.to_string(), "remote failure");

    let caught = catch_unwind(|| {
        run(|n: Nursery<'_, Cancelled>| async move {
            n.spawn_parallel(async {
                checkpoint().await?;
                std::panic::panic_any("remote panic");
            });
            Ok(())
        })
    });
    assert_eq!(
        caught.unwrap_err().downcast_ref::<&str>(),
        Some(&"remote panic")
    );
}

#[test]
fn spawn_on_an_async_executor_outside_run() {
    let executor = async_executor::Executor::new();
    let ran_on = Arc::new(std::sync::Mutex::new(Vec::new()));
    let ran = ran_on.clone();
    thread::scope(|s| {
        let (stop_tx, stop_rx) = async_channel::bounded::<()>(1);
        let executor = &executor;
        s.spawn(move || block_on(executor.run(async { stop_rx.recv().await.ok() })));
        block_on(nursery(|n: Nursery<'_, Cancelled>| async move {
            for _ in 0..3 {
                let ran = ran.clone();
                n.spawn_on(executor, async move {
                    ran.lock().unwrap().push(thread::current().id());
                    Ok(())
                });
            }
            Ok(())
        }))
        .unwrap();
        stop_tx.try_send(()).unwrap();
    });
    let ran_on = ran_on.lock().unwrap();
    assert_eq!(ran_on.len(), 3);
    assert!(ran_on.iter().all(|id| *id != thread::current().id()));
}

#[test]
fn a_parallel_child_polled_during_the_nursery_poll_still_listens_for_the_cancel() {
    // The nursery re-polls its inline tasks when its scope changes, so they
    // need no listener of their own; a parallel child is not one of them even
    // when its executor happens to run it inside the nursery's poll (here:
    // ticked from the body). It must listen, or the cancel never reaches it.
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let executor = async_executor::LocalExecutor::new();
        let out = block_on(executor.run(nursery(|n: Nursery<'_, Cancelled>| {
            let executor = &executor;
            async move {
                n.spawn_on(executor, async {
                    hatchery::sleep_forever().await?;
                    Ok(())
                });
                // The child's first poll, inside the body's poll.
                assert!(executor.try_tick());
                n.cancel_scope().cancel();
                Ok(())
            }
        })));
        done_tx.send(format!("{out:?}")).unwrap();
    });
    let out = done_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the parallel child was never woken by the cancel");
    // The body's value; the child's `Cancelled` is caught by the nursery's scope.
    assert_eq!(out, "Ok(Some(()))");
}

#[test]
fn a_spawn_from_another_task_wakes_a_nursery_that_is_waiting() {
    // The nursery's task is polled only when woken (a LocalExecutor task):
    // a spawn made while the nursery waits, from another task, must wake it.
    let executor = async_executor::LocalExecutor::new();
    let (handle_tx, handle_rx) = futures::channel::oneshot::channel();
    let (value_tx, value_rx) = futures::channel::oneshot::channel::<u32>();
    let outside = executor.spawn(async move {
        let n: Nursery<'_, Cancelled> = handle_rx.await.unwrap();
        futures_lite::future::yield_now().await; // the nursery is waiting now
        n.spawn(async move {
            value_tx.send(7).unwrap();
            Ok(())
        });
    });
    let inside = executor.spawn(nursery(|n: Nursery<'_, Cancelled>| {
        handle_tx.send(n.clone()).ok().unwrap();
        async move { Ok(value_rx.await.unwrap()) }
    }));
    let out = block_on(executor.run(async move {
        outside.await;
        inside.await
    }));
    assert_eq!(out.unwrap(), Some(7));
}

#[test]
fn dropping_a_nursery_cancels_its_parallel_children_without_blocking() {
    struct CountDrop(Arc<AtomicUsize>);
    impl Drop for CountDrop {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let executor = async_executor::Executor::new();
    let dropped = Arc::new(AtomicUsize::new(0));
    {
        let dropped = dropped.clone();
        let executor = &executor;
        let mut fut = Box::pin(nursery(|n: Nursery<'_, Cancelled>| async move {
            for _ in 0..5 {
                let guard = CountDrop(dropped.clone());
                n.spawn_on(executor, async move {
                    let _guard = guard;
                    sleep_forever().await?;
                    Ok(())
                });
            }
            sleep_forever().await?;
            Ok(())
        }));
        block_on(async {
            assert!(futures::poll!(fut.as_mut()).is_pending());
            assert!(futures::poll!(fut.as_mut()).is_pending());
        });
        // Some children ran on the executor, some never did: dropping the
        // nursery cancels all of them, and returns at once.
        while executor.try_tick() {}
        drop(fut);
    }
    while executor.try_tick() {}
    assert_eq!(dropped.load(Ordering::SeqCst), 5);
}

#[test]
fn a_child_lost_by_its_executor_is_a_clear_panic_not_a_silent_loss() {
    let executor = async_executor::Executor::new();
    let caught = catch_unwind(AssertUnwindSafe(|| {
        block_on(nursery(|n: Nursery<'_, Cancelled>| async move {
            n.spawn_on(&executor, async { Ok(()) });
            checkpoint().await?;
            drop(executor); // shut down before the child ever ran
            Ok(())
        }))
    }));
    let payload = caught.unwrap_err();
    let message = payload.downcast_ref::<String>().unwrap();
    assert!(
        message.contains("executor dropped the parallel child"),
        "{message}"
    );
}

/// The text of a panic payload (`&str` or `String`).
fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .copied()
        .map(str::to_string)
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

#[test]
fn run_inside_run_is_a_clear_error() {
    let caught = catch_unwind(|| {
        run(|_n: Nursery<'_, Cancelled>| async {
            let _ = run(|_inner: Nursery<'_, Cancelled>| async { Ok(()) });
            Ok(())
        })
    });
    let message = panic_text(&*caught.unwrap_err());
    assert!(
        message.contains("inside another hatchery::run"),
        "{message}"
    );
}

/// On the tokio root, a parallel child runs on one of tokio's workers,
/// which are inside that `run` as much as `run`'s own workers are: a `run`
/// there is refused with the same clear error.
#[cfg(feature = "tokio")]
#[test]
fn run_inside_a_parallel_child_of_the_tokio_root_is_a_clear_error() {
    let caught = catch_unwind(|| {
        Builder::new()
            .tokio()
            .worker_threads(2)
            .handle_signals(false)
            .run(|n| async move {
                n.spawn_parallel(async {
                    let _ = run(|_inner: Nursery<'_, Cancelled>| async { Ok(()) });
                    Ok(())
                });
                Ok(())
            })
    });
    let message = panic_text(&*caught.unwrap_err());
    assert!(
        message.contains("inside another hatchery::run"),
        "{message}"
    );
}

#[test]
fn zero_worker_threads_is_a_clear_error() {
    let caught = catch_unwind(|| Builder::new().worker_threads(0));
    let payload = caught.unwrap_err();
    let message = payload.downcast_ref::<&str>().copied().unwrap_or_default();
    assert!(message.contains("worker_threads(1)"), "{message}");
}

#[test]
fn spawn_parallel_outside_run_is_a_clear_error() {
    block_on(nursery(|n: Nursery<'_, Cancelled>| async move {
        assert_eq!(
            n.try_spawn_parallel(async { Ok(()) }),
            Err(SpawnError::NoExecutor)
        );
        Ok(())
    }))
    .unwrap();
}

/// The handle of a nursery that has closed, kept past its end.
fn closed_nursery() -> Nursery<'static, Cancelled> {
    let mut kept = None;
    block_on(nursery(|n: Nursery<'static, Cancelled>| {
        kept = Some(n.clone());
        async move { Ok(()) }
    }))
    .unwrap();
    kept.unwrap()
}

/// A closed nursery says `Closed` before anything else, also without an
/// executor (it said `NoExecutor`: an adversarial round).
#[test]
fn spawn_parallel_into_a_closed_nursery_outside_run_says_closed() {
    let n = closed_nursery();
    assert_eq!(
        n.try_spawn_parallel(async { Ok(()) }),
        Err(SpawnError::Closed)
    );
}

/// The panic of a spawn names the `try_` method that returns the error
/// instead (it named `try_spawn` for every kind of spawn: a new user).
#[test]
fn a_spawn_panic_names_its_own_try_method() {
    let n = closed_nursery();
    let message = |caught: std::thread::Result<()>| {
        let payload = caught.unwrap_err();
        payload
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_default()
    };
    let parallel = message(catch_unwind(AssertUnwindSafe(|| {
        n.spawn_parallel(async { Ok(()) })
    })));
    assert!(parallel.contains("use try_spawn_parallel"), "{parallel}");
    let blocking = message(catch_unwind(AssertUnwindSafe(|| {
        n.spawn_blocking(|_cancel| Ok(()))
    })));
    assert!(blocking.contains("use try_spawn_blocking"), "{blocking}");
    assert_eq!(
        n.try_spawn_blocking(|_cancel| Ok(())),
        Err(SpawnError::Closed)
    );
}

/// A panic that cancels the root, then a sibling stuck behind a shield: the
/// grace period runs out and the forced shutdown drops the root nursery,
/// which held the panic. `run` still resumes it (a review found it
/// returning a plain cancellation: the panic was lost).
#[test]
fn a_panic_before_a_forced_shutdown_is_still_resumed() {
    let caught = catch_unwind(|| {
        Builder::new()
            .grace_period(Duration::from_millis(50))
            .handle_signals(false)
            .run(|n| async move {
                n.spawn(async { panic!("the first failure") });
                n.spawn(async {
                    let _ = hatchery::sleep(Duration::from_secs(3600)).await;
                    hatchery::CancelScope::new()
                        .shield(true)
                        .run(async {
                            async_io::Timer::after(Duration::from_secs(3600)).await;
                            Ok(())
                        })
                        .await?;
                    Ok(())
                });
                Ok(())
            })
    });
    let payload = caught.expect_err("the panic is resumed");
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"the first failure"));
}

#[test]
fn cancellation_reaches_a_blocking_loop() {
    let rounds = Arc::new(AtomicUsize::new(0));
    let counter = rounds.clone();
    let out = block_on(hatchery::typed::move_on_after(
        Duration::from_millis(30),
        nursery(|n: Nursery<'_, Cancelled>| async move {
            n.spawn_blocking(move |cancel| {
                while !cancel.is_cancelled() {
                    counter.fetch_add(1, Ordering::SeqCst);
                    thread::sleep(Duration::from_millis(1));
                }
                Err(Cancelled)
            });
            Ok(())
        }),
    ));
    // The deadline cancelled the blocking loop, the nursery propagated the
    // cancellation, and the deadline's scope caught it.
    assert!(matches!(out, Ok(None)), "{out:?}");
    assert!(rounds.load(Ordering::SeqCst) > 0);
}

/// As trio's `to_thread.run_sync` (anyio's `test_run_in_thread_cancelled`):
/// in a scope cancelled already, a blocking closure never runs; its child
/// ends with `Cancelled`, which the scope catches. One spawned before the
/// cancel runs, and sees it through its handle.
#[test]
fn a_blocking_closure_spawned_into_a_cancelled_scope_never_runs() {
    let late = Arc::new(AtomicUsize::new(0));
    let early = Arc::new(AtomicUsize::new(0));
    let (late_ran, early_ran) = (Arc::clone(&late), Arc::clone(&early));
    let scope = CancelScope::new();
    let handle = scope.handle();
    let outer = handle.clone();
    let out = block_on(
        scope.run_typed(nursery(|n: Nursery<'_, Cancelled>| async move {
            n.spawn_blocking(move |cancel| {
                // The thread may start before or after the cancel below.
                while !cancel.is_cancelled() {
                    thread::sleep(Duration::from_millis(1));
                }
                early_ran.fetch_add(1, Ordering::SeqCst);
                Err(Cancelled)
            });
            outer.cancel();
            n.spawn_blocking(move |_cancel| {
                late_ran.fetch_add(1, Ordering::SeqCst);
                Ok(())
            });
            Ok(())
        })),
    );
    assert!(matches!(out, Ok(None)), "{out:?}");
    assert!(handle.cancelled_caught());
    assert_eq!(
        early.load(Ordering::SeqCst),
        1,
        "spawned before the cancel: it ran"
    );
    assert_eq!(
        late.load(Ordering::SeqCst),
        0,
        "spawned after the cancel: it never ran"
    );
}

#[test]
fn a_blocking_closures_panic_resumes_in_the_parent() {
    let caught = catch_unwind(|| {
        block_on(nursery(|n: Nursery<'_, Cancelled>| async move {
            n.spawn_blocking(|_cancel| panic!("blocking panic"));
            Ok(())
        }))
    });
    assert_eq!(
        caught.unwrap_err().downcast_ref::<&str>(),
        Some(&"blocking panic")
    );
}

#[test]
fn scopes_work_under_run() {
    let out = run(|_n: Nursery<'_, Cancelled>| async {
        let caught = CancelScope::new()
            .timeout(Duration::from_millis(5))
            .run_typed(sleep_forever())
            .await?;
        assert!(caught.is_none());
        Ok(())
    });
    assert_eq!(out.unwrap(), Some(()));
}

#[cfg(feature = "tokio")]
mod tokio_adapter {
    use super::*;

    #[test]
    fn parallel_children_on_a_tokio_multi_thread_runtime() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_time()
            .build()
            .unwrap();
        let handle = runtime.handle().clone();
        let count = Arc::new(AtomicUsize::new(0));
        let counter = count.clone();
        let out = runtime.block_on(nursery(|n: Nursery<'_, Cancelled>| async move {
            for _ in 0..100 {
                let counter = counter.clone();
                n.spawn_on(&handle, async move {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    checkpoint().await?;
                    counter.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                });
            }
            Ok(())
        }));
        assert_eq!(out.unwrap(), Some(()));
        assert_eq!(count.load(Ordering::SeqCst), 100);
    }

    /// Inside a tokio runtime of the user's (`#[tokio::main]`), with no
    /// `run` around, `spawn_parallel` spawns on that runtime, as
    /// `tokio::spawn` would (a tokio user's expectation: a migration round
    /// found it refused with `NoExecutor`).
    #[test]
    fn spawn_parallel_inside_a_tokio_runtime_uses_that_runtime() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("user-tokio-worker")
            .enable_time()
            .build()
            .unwrap();
        let count = Arc::new(AtomicUsize::new(0));
        let counter = count.clone();
        let out = runtime.block_on(nursery(|n: Nursery<'_, Cancelled>| async move {
            for _ in 0..20 {
                let counter = counter.clone();
                n.spawn_parallel(async move {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    assert_eq!(thread_name(), "user-tokio-worker");
                    counter.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                });
            }
            // Cancelled like any parallel child.
            n.spawn_parallel(async {
                sleep_forever().await?;
                Ok(())
            });
            sleep(Duration::from_millis(20)).await?;
            n.cancel_scope().cancel();
            Ok(())
        }));
        assert_eq!(out.unwrap(), Some(()));
        assert_eq!(count.load(Ordering::SeqCst), 20);
    }

    #[test]
    fn a_shut_down_tokio_runtime_loses_no_child_silently() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let handle = runtime.handle().clone();
        drop(runtime);
        let caught = catch_unwind(AssertUnwindSafe(|| {
            block_on(nursery(|n: Nursery<'_, Cancelled>| async move {
                n.spawn_on(&handle, async { Ok(()) });
                Ok(())
            }))
        }));
        let payload = caught.unwrap_err();
        let message = payload.downcast_ref::<String>().unwrap();
        assert!(
            message.contains("executor dropped the parallel child"),
            "{message}"
        );
    }
}

#[test]
fn the_grace_period_hard_cancels_a_task_that_ignores_cancellation() {
    struct SetOnDrop(Arc<AtomicUsize>);
    impl Drop for SetOnDrop {
        fn drop(&mut self) {
            self.0.store(1, Ordering::SeqCst);
        }
    }
    let dropped = Arc::new(AtomicUsize::new(0));
    let guard = SetOnDrop(dropped.clone());
    let started = std::time::Instant::now();
    let out = Builder::new()
        .error_type()
        .grace_period(Duration::from_millis(50))
        .run(|n: Nursery<'_, Cancelled>| async move {
            n.spawn(async move {
                let _guard = guard;
                CancelScope::new()
                    .shield(true)
                    .run_typed(sleep(Duration::from_secs(3600)))
                    .await?;
                Ok(())
            });
            checkpoint().await?;
            n.cancel_scope().cancel();
            Ok(())
        });
    assert!(out.unwrap_err().is_cancelled());
    assert_eq!(
        dropped.load(Ordering::SeqCst),
        1,
        "the stuck task was dropped"
    );
    assert!(started.elapsed() >= Duration::from_millis(50));
}

#[test]
fn tasks_that_clean_up_within_the_grace_period_finish_normally() {
    let out = Builder::new()
        .error_type()
        .grace_period(Duration::from_secs(60))
        .run(|n: Nursery<'_, Cancelled>| async move {
            n.spawn(async {
                let result = sleep_forever().await;
                CancelScope::new()
                    .shield(true)
                    .run_typed(sleep(Duration::from_millis(10)))
                    .await?;
                result?;
                Ok(())
            });
            checkpoint().await?;
            n.cancel_scope().cancel();
            Ok("cleaned up in time")
        });
    assert_eq!(out.unwrap(), Some("cleaned up in time"));
}

#[test]
fn scoped_run_lets_parallel_children_borrow_from_outside_the_run() {
    let words = vec!["alpha", "beta", "gamma", "delta"];
    let lengths = std::sync::Mutex::new(Vec::new());
    let (words_ref, lengths_ref) = (&words, &lengths);
    let out = Builder::new().error_type().worker_threads(2).run_scoped(
        |n: Nursery<'_, Cancelled>, executor: hatchery::ScopedExecutor<'_>| async move {
            for word in words_ref {
                n.spawn_on(&executor, async move {
                    assert!(thread_name().starts_with("hatchery-worker-"));
                    lengths_ref.lock().unwrap().push(word.len());
                    Ok(())
                });
            }
            // No 'static default executor in a scoped run.
            assert_eq!(
                n.try_spawn_parallel(async { Ok(()) }),
                Err(SpawnError::NoExecutor)
            );
            Ok(())
        },
    );
    assert_eq!(out.unwrap(), Some(()));
    let mut lengths = lengths.into_inner().unwrap();
    lengths.sort();
    assert_eq!(lengths, [4, 5, 5, 5]);
}

/// The tokio root (`Builder::tokio`): tokio's timers and sockets work in the
/// body, in inline children and in parallel children, which run on tokio's
/// workers.
#[cfg(feature = "tokio")]
#[test]
fn run_on_tokio_gives_tokio_types_to_every_kind_of_child() {
    for workers in [1, 3] {
        let out = Builder::new()
            .tokio()
            .worker_threads(workers)
            .run(|n| async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                let addr = listener.local_addr()?;
                n.named("acceptor").spawn(async move {
                    let (mut stream, _) = listener.accept().await?;
                    use tokio::io::AsyncWriteExt;
                    stream.write_all(b"hello").await?;
                    Ok(())
                });
                n.named("client").spawn_parallel(async move {
                    use tokio::io::AsyncReadExt;
                    let mut stream = tokio::net::TcpStream::connect(addr).await?;
                    let mut greeting = String::new();
                    stream.read_to_string(&mut greeting).await?;
                    assert_eq!(greeting, "hello");
                    if workers > 1 {
                        assert_eq!(thread_name(), "hatchery-worker-tokio");
                    }
                    Ok(())
                });
                tokio::time::sleep(Duration::from_millis(5)).await;
                Ok(workers)
            });
        assert_eq!(out.unwrap(), Some(workers));
    }
}

/// Cancelling the tokio root drops a parallel child parked in a tokio timer
/// (a foreign await) on its worker, and the run returns at once.
#[cfg(feature = "tokio")]
#[test]
fn a_cancelled_tokio_root_drops_children_parked_in_tokio_timers() {
    let dropped = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&dropped);
    let out = Builder::new()
        .tokio()
        .worker_threads(2)
        .handle_signals(false)
        .run(|n| async move {
            for _ in 0..4 {
                let counter = Arc::clone(&counter);
                n.spawn_parallel(async move {
                    struct Count(Arc<AtomicUsize>);
                    impl Drop for Count {
                        fn drop(&mut self) {
                            self.0.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    let _count = Count(counter);
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    Ok(())
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            n.cancel_scope().cancel();
            Ok(())
        });
    assert_eq!(out.unwrap(), Some(()));
    assert_eq!(dropped.load(Ordering::SeqCst), 4);
}

/// An executor seen only through `Spawn::spawn_task` (as a user's own
/// executor would be): hatchery hands it boxed tasks.
struct Opaque(async_executor::Executor<'static>);

impl hatchery::Spawn<'static> for Opaque {
    fn spawn_task(&self, task: hatchery::BoxTask<'static>) -> hatchery::TaskGuard<'static> {
        hatchery::TaskGuard::new(self.0.spawn(task))
    }
}

/// A 2-thread executor for the rest of the test binary.
fn two_threads() -> &'static Opaque {
    static EXECUTOR: std::sync::OnceLock<&'static Opaque> = std::sync::OnceLock::new();
    EXECUTOR.get_or_init(|| {
        let executor: &'static Opaque =
            Box::leak(Box::new(Opaque(async_executor::Executor::new())));
        for _ in 0..2 {
            thread::spawn(move || block_on(executor.0.run(std::future::pending::<()>())));
        }
        executor
    })
}

/// Sets its flag when dropped, after a while: a `Drop` still running on
/// the child's thread when the nursery returns leaves the flag unset.
struct SlowDrop(Arc<AtomicUsize>);

impl Drop for SlowDrop {
    fn drop(&mut self) {
        thread::sleep(Duration::from_millis(30));
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A child that ends with `outcome` (or waits forever in a future of
/// another crate, if `None`) and keeps its guard until it is dropped: unlike
/// an async block, which drops its locals when it returns.
struct Ends {
    _guard: SlowDrop,
    outcome: Option<io::Result<()>>,
}

impl std::future::Future for Ends {
    type Output = io::Result<()>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        match self.outcome.take() {
            Some(outcome) => std::task::Poll::Ready(outcome),
            None => std::task::Poll::Pending,
        }
    }
}

#[test]
fn a_parallel_childs_drop_has_run_when_its_nursery_returns() {
    let executor = &two_threads().0;
    for ends in ["succeeds", "fails", "is cancelled"] {
        for through_spawn_task in [false, true] {
            let dropped = Arc::new(AtomicUsize::new(0));
            let out = block_on(nursery(|n: Nursery<'_, io::Error>| {
                let dropped = Arc::clone(&dropped);
                async move {
                    let child = Ends {
                        _guard: SlowDrop(dropped),
                        outcome: match ends {
                            "succeeds" => Some(Ok(())),
                            "fails" => Some(Err(io::Error::other("boom"))),
                            _ => None,
                        },
                    };
                    if through_spawn_task {
                        n.spawn_on(two_threads(), child);
                    } else {
                        n.spawn_on(executor, child);
                    }
                    if ends == "is cancelled" {
                        sleep(Duration::from_millis(5)).await?;
                        n.cancel_scope().cancel();
                    }
                    Ok(())
                }
            }));
            assert_eq!(
                dropped.load(Ordering::SeqCst),
                1,
                "the child that {ends} (spawn_task: {through_spawn_task}) was still being dropped"
            );
            assert_eq!(out.is_err(), ends == "fails", "{ends}: {out:?}");
        }
    }
}

#[test]
fn a_closed_nursery_refuses_a_parallel_child_without_starting_it() {
    let ran = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&ran);
    let out = run(|outer: Nursery<'_, Cancelled>| async move {
        let mut kept = None;
        hatchery::typed::nursery(|n: Nursery<'_, Cancelled>| {
            kept = Some(n.clone());
            async move { Ok(()) }
        })
        .await
        .unwrap();
        let closed = kept.unwrap();
        let refused = closed.try_spawn_parallel(async move {
            counter.fetch_add(1, Ordering::SeqCst);
            Ok(())
        });
        assert_eq!(refused, Err(SpawnError::Closed));
        // Given time to run on the workers, had it been started.
        sleep(Duration::from_millis(50)).await?;
        drop(outer);
        Ok(())
    });
    assert_eq!(out.unwrap(), Some(()));
    assert_eq!(ran.load(Ordering::SeqCst), 0, "a refused child ran");
}

#[test]
fn a_parallel_child_started_while_its_nursery_closes_is_waited_for_or_refused() {
    // A handle kept outside the nursery starts failing children on another
    // thread, as fast as it can, while the nursery closes: each start
    // either is refused (`Closed`) or its failure is in the nursery's error.
    let executor: &'static async_executor::Executor<'static> =
        Box::leak(Box::new(async_executor::Executor::new()));
    for _ in 0..2_000 {
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        let starter = thread::spawn(move || {
            let n: Nursery<'static, io::Error> = handle_rx.recv().unwrap();
            let mut started = 0;
            loop {
                let start = n.try_spawn_on(executor, async { Err(io::Error::other("boom")) });
                if start == Err(SpawnError::Closed) {
                    return started;
                }
                start.unwrap();
                started += 1;
                // The child runs here, on this thread, at once.
                while executor.try_tick() {}
            }
        });
        let out = block_on(nursery(|n: Nursery<'static, io::Error>| {
            handle_tx.send(n).unwrap();
            async { Ok(()) }
        }));
        let started = starter.join().unwrap();
        let recorded = out.map_or_else(|error| error.failures().len(), |_| 0);
        assert_eq!(recorded, started, "a started child's failure was lost");
    }
}

#[test]
fn a_parallel_child_started_before_the_nursery_future_exists_is_waited_for() {
    let executor = &two_threads().0;
    // A nursery with many parallel children at once leaves a long list to
    // this thread's pool; the next one takes it after its body closure
    // (which runs before the nursery future exists) started a child.
    block_on(nursery(|n: Nursery<'_, Cancelled>| {
        for _ in 0..1_000 {
            n.spawn_on(executor, async {
                sleep(Duration::from_millis(5)).await?;
                Ok(())
            });
        }
        async { Ok(()) }
    }))
    .unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    let out = block_on(nursery(|n: Nursery<'_, Cancelled>| {
        let ran = Arc::clone(&ran);
        n.spawn_on(executor, async move {
            sleep(Duration::from_millis(5)).await?;
            ran.fetch_add(1, Ordering::SeqCst);
            Ok(())
        });
        async { Ok(()) }
    }));
    assert_eq!(out.unwrap(), Some(()));
    assert_eq!(ran.load(Ordering::SeqCst), 1, "the child ran to its end");
}

#[test]
fn a_supervised_parallel_childs_drop_that_panics_is_its_panic_not_a_hang() {
    struct PanicsOnDrop;
    impl Drop for PanicsOnDrop {
        fn drop(&mut self) {
            panic!("dropped badly");
        }
    }
    /// Ends at once, keeping its guard until it is dropped.
    struct Ends(#[allow(dead_code)] PanicsOnDrop);
    impl std::future::Future for Ends {
        type Output = hatchery::Result<()>;
        fn poll(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<hatchery::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let out = catch_unwind(AssertUnwindSafe(|| {
            hatchery::run(|n| async move {
                n.named("careless")
                    .on_failure(|_failure| Ok(()))
                    .spawn_parallel(Ends(PanicsOnDrop));
                Ok(())
            })
        }));
        let _ = done_tx.send(out.map(drop).map_err(|payload| panic_text(&*payload)));
    });
    let out = done_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the nursery returned (it hung, waiting for a child whose Drop panicked)");
    assert_eq!(
        out,
        Err("dropped badly".to_owned()),
        "the Drop's panic is the child's panic"
    );
}

/// The roots a parallel child can run on: the default, and tokio's.
fn parallel_roots() -> Vec<fn() -> Builder> {
    vec![
        Builder::new,
        #[cfg(feature = "tokio")]
        || Builder::new().tokio(),
    ]
}

/// What a supervised child's handler saw: the task's name, the failure's
/// text, and whether the nursery's scope was current (its deadline is
/// `marker`, which nobody else has).
type Handled = Arc<std::sync::Mutex<Seen>>;

/// Each failure a handler saw: the task's name, the failure's text, and
/// whether the nursery's scope was current.
type Seen = Vec<(Option<String>, String, bool)>;

/// What `serve_supervised` returns: `run`'s result, the children that
/// finished, what the handlers saw.
type Served = (
    Result<Option<&'static str>, hatchery::NurseryError>,
    usize,
    Seen,
);

/// Records one failure in `handled`, as a handler running with `marker`'s
/// scope current would see it.
fn record(handled: &Handled, marker: std::time::Instant, task: &hatchery::TaskInfo, text: String) {
    let current = hatchery::current_scope().and_then(|s| s.deadline());
    handled
        .lock()
        .unwrap()
        .push((task.name().map(String::from), text, current == Some(marker)));
}

/// A server nursery on `root`: `children` supervised parallel children,
/// started by `spawn(n, id, finished, handled, marker)` under the
/// nursery's deadline `marker`. Returns what `run` returned, how many
/// children counted themselves as finished, and what the handlers saw.
fn serve_supervised(
    root: fn() -> Builder,
    children: usize,
    spawn: fn(&hatchery::Nursery<'_>, usize, Arc<AtomicUsize>, Handled, std::time::Instant),
) -> Served {
    let finished = Arc::new(AtomicUsize::new(0));
    let handled: Handled = Arc::default();
    let marker = std::time::Instant::now() + Duration::from_secs(3_600);
    let out = root().worker_threads(2).run(|n| {
        let (finished, handled) = (Arc::clone(&finished), Arc::clone(&handled));
        async move {
            n.cancel_scope().set_deadline(marker);
            for id in 0..children {
                spawn(&n, id, Arc::clone(&finished), Arc::clone(&handled), marker);
            }
            Ok("served")
        }
    });
    let handled = handled.lock().unwrap().clone();
    (out, finished.load(Ordering::SeqCst), handled)
}

/// A supervised child: 5 ms of work, then `fail` if it is the bad one, 5 ms
/// more, then it counts itself in `finished`.
async fn served(
    bad: bool,
    finished: Arc<AtomicUsize>,
    fail: fn() -> hatchery::Result<()>,
) -> hatchery::Result<()> {
    sleep(Duration::from_millis(5)).await?;
    if bad {
        fail()?;
    }
    sleep(Duration::from_millis(5)).await?;
    finished.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

/// `serve_supervised` returned `Ok`, all but one child finished, and the
/// handlers saw exactly that one child's failure, with the nursery's scope
/// current: `expected` is (finished, its name, the failure's text).
fn assert_one_handled(
    out: Result<Option<&'static str>, hatchery::NurseryError>,
    finished: usize,
    handled: Seen,
    expected: (usize, &str, &str),
) {
    assert_eq!(out.unwrap(), Some("served"));
    assert_eq!(finished, expected.0);
    assert_eq!(
        handled,
        [(Some(expected.1.to_owned()), expected.2.to_owned(), true)]
    );
}

/// A parallel sibling that waits until the nursery is cancelled.
fn spawn_idle_sibling(n: &hatchery::Nursery<'_>) {
    n.spawn_parallel(async {
        sleep_forever().await?;
        Ok(())
    });
}

/// `run` failed with one failure, the task `escalates`'s, whose error the
/// handler made `text`.
fn assert_escalated(out: Result<Option<()>, hatchery::NurseryError>, text: &str) {
    let error = out.unwrap_err();
    let failures = error.failures();
    assert_eq!(failures.len(), 1, "{error}");
    assert_eq!(failures[0].task.name(), Some("escalates"));
    assert_eq!(failures[0].error.to_string(), text);
}

/// The server: 100 connection children, one of which fails; its
/// handler sees exactly that failure, once, with the nursery's scope
/// current; the other 99 finish and the nursery returns `Ok`. A failure a
/// handler returns still fails the nursery.
#[test]
fn supervised_parallel_children_fail_into_their_handler_on_each_root() {
    for root in parallel_roots() {
        let (out, finished, handled) =
            serve_supervised(root, 100, |n, id, finished, handled, marker| {
                n.named(format!("connection {id}"))
                    .on_failure(move |failure| {
                        record(&handled, marker, &failure.task, failure.error.to_string());
                        Ok(())
                    })
                    .spawn_parallel(served(id == 42, finished, || {
                        Err(hatchery::Error::msg("malformed request"))
                    }));
            });
        assert_one_handled(
            out,
            finished,
            handled,
            (99, "connection 42", "malformed request"),
        );

        let out = root().worker_threads(2).run(|n| async move {
            n.named("escalates")
                .on_failure(|failure| {
                    Err(hatchery::Error::msg(format!(
                        "escalated: {}",
                        failure.error
                    )))
                })
                .spawn_parallel(async { Err(hatchery::Error::msg("disk full")) });
            spawn_idle_sibling(&n);
            Ok(())
        });
        assert_escalated(out, "escalated: disk full");
    }
}

/// A supervised parallel child's panic goes to its panic handler (on the
/// worker, with the nursery's scope current) instead of cancelling its
/// siblings; a panic handler's own error is the nursery's failure.
#[test]
fn supervised_parallel_children_panic_into_their_handler_on_each_root() {
    for root in parallel_roots() {
        let (out, finished, handled) =
            serve_supervised(root, 20, |n, id, finished, handled, marker| {
                n.named(format!("parser {id}"))
                    .on_failure(|_failure| Ok(()))
                    .on_panic(move |task, payload| {
                        record(&handled, marker, &task, panic_text(&*payload));
                        Ok(())
                    })
                    .spawn_parallel(served(id == 7, finished, || panic!("a bug in the parser")));
            });
        assert_one_handled(
            out,
            finished,
            handled,
            (19, "parser 7", "a bug in the parser"),
        );

        let out = root().worker_threads(2).run(|n| async move {
            n.named("escalates")
                .on_failure(|_failure| Ok(()))
                .on_panic(|task, payload| {
                    Err(hatchery::Error::msg(format!(
                        "{} panicked: {}",
                        task.name().unwrap_or("?"),
                        panic_text(&*payload)
                    )))
                })
                .spawn_parallel(async { panic!("boom") });
            spawn_idle_sibling(&n);
            Ok(())
        });
        assert_escalated(out, "escalates panicked: boom");
    }
}

/// The body closure runs inside the root: a parallel child spawned in its
/// synchronous part runs (it panicked: no executor on this thread).
#[test]
fn the_body_closure_may_spawn_parallel_children_before_its_future() {
    let ran = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&ran);
    let out = run(move |n: Nursery<'_, Cancelled>| {
        n.spawn_parallel(async move {
            counter.fetch_add(1, Ordering::SeqCst);
            Ok(())
        });
        async { Ok(1) }
    });
    assert_eq!(out.unwrap(), Some(1));
    assert_eq!(ran.load(Ordering::SeqCst), 1);
}

/// On the tokio root too, and tokio's types work there (they panicked:
/// "there is no reactor running").
#[cfg(feature = "tokio")]
#[test]
fn the_body_closure_runs_inside_the_tokio_root() {
    let ran = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&ran);
    let out =
        Builder::new()
            .error_type::<Cancelled>()
            .tokio()
            .run(move |n: Nursery<'_, Cancelled>| {
                let mut tick = tokio::time::interval(Duration::from_millis(1));
                n.spawn_parallel(async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                });
                async move {
                    tick.tick().await;
                    Ok(2)
                }
            });
    assert_eq!(out.unwrap(), Some(2));
    assert_eq!(ran.load(Ordering::SeqCst), 1);
}

/// `run_scoped` has no tokio root: asking for one is refused with a message
/// (it ran on async-executor, and tokio's types panicked in the body).
#[cfg(feature = "tokio")]
#[test]
#[should_panic(expected = "Builder::tokio() does not apply to run_scoped")]
fn run_scoped_refuses_the_tokio_root() {
    let _ = Builder::new()
        .error_type::<Cancelled>()
        .tokio()
        .run_scoped(|_n: Nursery<'_, Cancelled>, _executor| async { Ok(()) });
}

/// A panic resumed out of the tokio root does not wait for tokio's blocking
/// pool (a blocking task reading stdin held it until a line came).
#[cfg(feature = "tokio")]
#[test]
fn a_panic_leaves_the_tokio_root_without_waiting_for_its_blocking_tasks() {
    let (done, finished) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let out = catch_unwind(AssertUnwindSafe(|| {
            Builder::new().error_type::<Cancelled>().tokio().run(
                |n: Nursery<'_, Cancelled>| async move {
                    n.spawn(async {
                        let _ =
                            tokio::task::spawn_blocking(|| thread::sleep(Duration::from_secs(60)))
                                .await;
                        Ok(())
                    });
                    n.spawn(async {
                        sleep(Duration::from_millis(20)).await?;
                        panic!("the panic");
                    });
                    Ok(())
                },
            )
        }));
        let _ = done.send(out.is_err());
    });
    // A liveness bound, far above the 20 ms the panic takes.
    let panicked = finished
        .recv_timeout(Duration::from_secs(30))
        .expect("run did not return: it waited for the blocking task");
    assert!(panicked);
}
