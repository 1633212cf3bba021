//! The handles of a nursery ([`Nursery`], [`LocalNursery`]): every way to
//! spawn, start or send a child somewhere, written once for both by a macro;
//! the [`TaskBuilder`] that names a child; the [`Supervised`] child whose
//! failure goes to a handler.

use std::any::Any;
use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::panic::resume_unwind;
use std::sync::Arc;

use super::shared::Shared;
use super::start::{Scoped, StartFuture, Started};
use super::supervise::{HandlePanics, PanicPolicy, ResumePanics, Supervise};
use super::{LocalChild, SendChild};
use crate::cancel::CancelHandle;
use crate::error::{CancelError, Error, SpawnError, TaskFailure};
use crate::spawn::{RemoteHandle, Spawn, counted, default_spawner, spawn_parallel};
use crate::task::TaskInfo;

#[track_caller]
fn closed_panic(error: SpawnError, instead: &str) -> ! {
    panic!("hatchery: {error} (use {instead} to handle this without panicking)")
}

/// The handle of a nursery: spawn children into it, start them, or cancel it.
///
/// Cheap to clone and `Send + Sync` (when the error type is `Send`, as
/// [`Error`] is: the failures of parallel children cross threads through
/// it); children may hold clones to spawn siblings. Once the nursery has
/// closed (its body and every child finished), spawning fails with
/// [`SpawnError::Closed`].
///
/// # Examples
///
/// ```
/// use hatchery::{nursery, Cancelled, Nursery};
///
/// # futures::executor::block_on(async {
/// nursery(|n| async move {
///     let n2 = n.clone();
///     n.spawn(async move {
///         n2.spawn(async { Ok(()) }); // a child spawns a sibling
///         Ok(())
///     });
///     Ok(())
/// })
/// .await
/// .unwrap();
/// # });
/// ```
pub struct Nursery<'a, E = Error> {
    pub(super) shared: Arc<Shared<SendChild<'a, E>, E>>,
}

/// The handle of a [`local_nursery`](crate::local_nursery): like [`Nursery`], for `!Send` children.
///
/// # Examples
///
/// ```
/// use std::rc::Rc;
/// use hatchery::{local_nursery, Cancelled, LocalNursery};
///
/// # futures::executor::block_on(async {
/// local_nursery(|n| async move {
///     let shared = Rc::new(5);
///     n.spawn(async move {
///         assert_eq!(*shared, 5);
///         Ok(())
///     });
///     Ok(())
/// })
/// .await
/// .unwrap();
/// # });
/// ```
pub struct LocalNursery<'a, E = Error> {
    pub(super) shared: Arc<Shared<LocalChild<'a, E>, E>>,
}

/// The methods both kinds of handle share, written once.
macro_rules! handle_methods {
    ($handle:ident, $child:ident, [$($bound:tt)*], $example_handle:literal, $example_nursery:literal) => {
        impl<E> Clone for $handle<'_, E> {
            fn clone(&self) -> Self {
                $handle {
                    shared: Arc::clone(&self.shared),
                }
            }
        }

        impl<E> fmt::Debug for $handle<'_, E> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                // Copy out first: never hold a lock while user code formats.
                let closed = self.shared.lock().closed;
                f.debug_struct(stringify!($handle))
                    .field("closed", &closed)
                    .field("cancel_scope", &CancelHandle::from_node(Arc::clone(&self.shared.node)))
                    .finish_non_exhaustive()
            }
        }

        impl<'a, E: CancelError + $($bound)* 'a> $handle<'a, E> {
            /// Spawns a child into the nursery. The child runs inside the
            /// nursery's cancel scope, concurrently with the body and its
            /// siblings; the nursery waits for it.
            ///
            /// # Panics
            ///
            /// If the nursery has already closed; see [`try_spawn`](Self::try_spawn).
            ///
            /// # Examples
            ///
            /// ```
            #[doc = concat!("use hatchery::{", $example_nursery, ", Cancelled, ", stringify!($handle), "};")]
            /// # futures::executor::block_on(async {
            /// let mut total = 0;
            /// let total_ref = &mut total;
            #[doc = concat!($example_nursery, "(|n| async move {")]
            ///     n.spawn(async move {
            ///         *total_ref += 1;
            ///         Ok(())
            ///     });
            ///     Ok(())
            /// })
            /// .await
            /// .unwrap();
            /// assert_eq!(total, 1);
            /// # });
            /// ```
            #[track_caller]
            pub fn spawn<F>(&self, future: F)
            where
                F: Future<Output = Result<(), E>> + $($bound)* 'a,
            {
                if let Err(error) = self.spawn_as(TaskInfo::new(None), future) {
                    closed_panic(error, "try_spawn")
                }
            }

            /// Names the next child: its name (and the location of the call
            /// that spawns it) identifies it in errors, the shutdown report and
            /// `tracing` spans. Every way of spawning a child has its named
            /// form on the returned [`TaskBuilder`].
            ///
            /// # Examples
            ///
            /// ```
            #[doc = concat!("use hatchery::{typed, ", stringify!($handle), "};")]
            /// # futures::executor::block_on(async {
            #[doc = concat!("let err = typed::", $example_nursery, "(|n: ", stringify!($handle), "<'_, std::io::Error>| async move {")]
            ///     n.named("uploader").spawn(async { Err(std::io::Error::other("quota")) });
            ///     Ok(())
            /// })
            /// .await
            /// .unwrap_err();
            /// assert_eq!(err.failures()[0].task.name(), Some("uploader"));
            /// # });
            /// ```
            pub fn named(&self, name: impl Into<Cow<'static, str>>) -> TaskBuilder<'_, Self> {
                TaskBuilder {
                    handle: self,
                    name: Some(name.into()),
                }
            }

            /// Supervises an unnamed child: `n.on_failure(handler).spawn(…)`
            /// is [`named`](Self::named)`(…).on_failure(handler)` without
            /// the name (failures and reports call it "unnamed task spawned
            /// at …"). See [`TaskBuilder::on_failure`].
            ///
            /// ```
            #[doc = concat!("use hatchery::", $example_nursery, ";")]
            /// # futures::executor::block_on(async {
            #[doc = concat!($example_nursery, "(|n| async move {")]
            ///     n.on_failure(|failure| {
            ///         assert_eq!(failure.task.name(), None);
            ///         Ok(()) // logged; the nursery goes on
            ///     })
            ///     .spawn(async { Err(hatchery::Error::msg("malformed request")) });
            ///     Ok(())
            /// })
            /// .await
            /// .unwrap();
            /// # });
            /// ```
            pub fn on_failure<H>(&self, handler: H) -> Supervised<'_, Self, H, ResumePanics>
            where
                H: FnOnce(TaskFailure<E>) -> Result<(), E>,
            {
                TaskBuilder {
                    handle: self,
                    name: None,
                }
                .on_failure(handler)
            }

            fn spawn_as<F>(&self, info: TaskInfo, future: F) -> Result<(), SpawnError>
            where
                F: Future<Output = Result<(), E>> + $($bound)* 'a,
            {
                let future = crate::task::instrument(future, &info);
                self.shared.push(Box::pin(future), info)
            }

            fn start_as<V, F, Fut>(
                &self,
                info: TaskInfo,
                child: F,
            ) -> StartFuture<$child<'a, E>, V, E>
            where
                F: FnOnce(Started<V>) -> Fut,
                Fut: Future<Output = Result<(), E>> + $($bound)* 'a,
                V: 'a,
            {
                let (status, state) = Started::new(Arc::clone(&self.shared.node));
                let boxed: $child<'a, E> = Box::pin(crate::task::instrument(child(status), &info));
                StartFuture::new(
                    Arc::clone(&self.shared),
                    boxed,
                    state,
                    |scoped: Scoped<$child<'a, E>, E>| -> $child<'a, E> { Box::pin(scoped) },
                    info,
                )
            }

            fn try_start_as<V, F, Fut>(
                &self,
                info: TaskInfo,
                child: F,
            ) -> Result<StartFuture<$child<'a, E>, V, E>, SpawnError>
            where
                F: FnOnce(Started<V>) -> Fut,
                Fut: Future<Output = Result<(), E>> + $($bound)* 'a,
                V: 'a,
            {
                self.shared.begin_start()?;
                Ok(self.start_as(info, child).registered())
            }

            fn spawn_on_as<'env, S, F>(&self, info: TaskInfo, spawner: &S, future: F) -> Result<(), SpawnError>
            where
                'env: 'a,
                S: Spawn<'env> + ?Sized,
                F: Future<Output = Result<(), E>> + Send + 'env,
                E: Send + 'env,
            {
                let future = crate::task::instrument(future, &info);
                let shared = &*self.shared;
                shared.note_off_thread();
                if let Some(executor) = spawner.__async_executor() {
                    // Started and counted in the nursery's table, not its
                    // slab: the outcome comes back only if it is not a
                    // success (`spawn::Parallel`).
                    return shared.start_counted(info, |node, info, parallel| {
                        RemoteHandle::Executor(executor.spawn(counted(node, future, info, parallel)))
                    });
                }
                let join = spawn_parallel(spawner, Arc::clone(&shared.node), future, info.clone());
                shared.push(Box::pin(join), info)
            }

            fn spawn_parallel_as<F>(&self, info: TaskInfo, future: F) -> Result<(), SpawnError>
            where
                F: Future<Output = Result<(), E>> + Send + 'static,
                E: Send + 'static,
            {
                let Some(spawner) = default_spawner() else {
                    // Inside a tokio runtime of the user's (no `run`
                    // around): on that runtime, as `tokio::spawn` would.
                    #[cfg(feature = "tokio")]
                    if let Ok(handle) = tokio::runtime::Handle::try_current() {
                        #[cfg(feature = "test-util")]
                        assert!(
                            handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::CurrentThread
                                || !crate::clock::virtual_time::in_run(),
                            "hatchery: spawn_parallel inside testing::run (or VirtualClock::run) on \
                             a current-thread tokio runtime (#[tokio::test]): that runtime's only \
                             thread is busy running testing::run, so the child could never run \
                             and its nursery would wait for ever. Use \
                             #[tokio::test(flavor = \"multi_thread\")], n.spawn, or call \
                             testing::run outside the runtime"
                        );
                        return self.spawn_on_as(info, &handle, future);
                    }
                    // A closed nursery says so first, as every spawn does.
                    return Err(if self.shared.lock().closed {
                        SpawnError::Closed
                    } else {
                        SpawnError::NoExecutor
                    });
                };
                #[cfg(feature = "tokio")]
                if let Some(tokio) = spawner.__tokio() {
                    // Counted, as on an async-executor (`spawn_on_as`).
                    let future = crate::task::instrument(future, &info);
                    self.shared.note_off_thread();
                    return self.shared.start_counted(info, |node, info, parallel| {
                        tokio.spawn(counted(node, future, info, parallel))
                    });
                }
                self.spawn_on_as(info, &*spawner, future)
            }

            fn spawn_blocking_as<F>(&self, info: TaskInfo, work: F) -> Result<(), SpawnError>
            where
                F: FnOnce(CancelHandle) -> Result<(), E> + Send + 'static,
                E: Send + 'static,
            {
                if self.shared.node.is_cancelled() {
                    // As trio's `to_thread.run_sync`, whose start is a
                    // checkpoint: in a scope cancelled already, the closure
                    // never runs (its captures are dropped here), and the
                    // child ends with `Cancelled`, which the scope catches.
                    drop(work);
                    let cancelled = async { Err::<(), E>(crate::Cancelled.into()) };
                    let child = crate::task::instrument(cancelled, &info);
                    return self.shared.push(Box::pin(child), info);
                }
                let cancel = CancelHandle::from_node(Arc::clone(&self.shared.node));
                self.shared.note_off_thread();
                let work = super::blocking::on_pool(info.clone(), move || work(cancel));
                let child = async move {
                    match work.await {
                        Some(outcome) => outcome.unwrap_or_else(|payload| resume_unwind(payload)),
                        // Its runtime shut down before the closure ran.
                        None => Err(crate::Cancelled.into()),
                    }
                };
                // Counted live and given its `tracing` span like any child.
                let child = crate::task::instrument(child, &info);
                self.shared.push(Box::pin(child), info)
            }

            /// Spawns a child, or returns [`SpawnError::Closed`] (dropping the
            /// child unpolled) if the nursery has already closed.
            ///
            /// # Examples
            ///
            /// ```
            #[doc = concat!("use hatchery::{", $example_nursery, ", Cancelled, ", stringify!($handle), "};")]
            /// # futures::executor::block_on(async {
            #[doc = concat!($example_nursery, "(|n| async move {")]
            ///     assert_eq!(n.try_spawn(async { Ok(()) }), Ok(()));
            ///     Ok(())
            /// })
            /// .await
            /// .unwrap();
            /// # });
            /// ```
            #[track_caller]
            pub fn try_spawn<F>(&self, future: F) -> Result<(), SpawnError>
            where
                F: Future<Output = Result<(), E>> + $($bound)* 'a,
            {
                self.spawn_as(TaskInfo::new(None), future)
            }

            /// Spawns a child and waits until it reports that it is ready by
            /// calling [`Started::started`]; returns the value it passed.
            ///
            /// While starting, the child runs in the caller's cancel scope:
            /// cancelling the caller cancels it, and an error it returns comes
            /// out of `start` as it is. Once `started` is called the child
            /// belongs to the nursery, which waits for it and collects its
            /// errors. From its first poll (`try_start`: from the call)
            /// until it finishes or is dropped, the `start` future keeps the
            /// nursery open for the child it may still hand over: one leaked
            /// with `mem::forget` keeps its nursery waiting for good,
            /// deadlines included.
            ///
            /// The child runs in a task scope of its own (under the caller's
            /// scope, then under the nursery's): its
            /// [`current_scope`](crate::current_scope) is that scope, not the
            /// nursery's as in a spawned child, so cancelling it stops that
            /// child alone, which ends quietly after `started` (the scope
            /// catches it). To cancel the whole nursery from inside, take
            /// [`cancel_scope`](Self::cancel_scope) into the child.
            ///
            /// # Panics
            ///
            /// If the nursery has already closed, if the child returns
            /// `Ok(())` without calling `started` (while not cancelled), or
            /// as soon as it drops its [`Started`] handle without calling
            /// it while it keeps running (the caller would wait forever).
            /// A handle dropped while the child unwinds (in a cancelled
            /// scope, or in a panic) does not count: `start()` then waits
            /// for the child to end, however long it runs on, and returns
            /// how it ended (as trio does).
            ///
            /// # Examples
            ///
            /// ```
            #[doc = concat!("use hatchery::{", $example_nursery, ", Cancelled, Started, ", stringify!($handle), "};")]
            /// # futures::executor::block_on(async {
            #[doc = concat!($example_nursery, "(|n| async move {")]
            ///     let ready = n
            ///         .start(|status: Started<&str>| async move {
            ///             status.started("ready");
            ///             hatchery::checkpoint().await?; // keeps running in the nursery
            ///             Ok(())
            ///         })
            ///         .await?;
            ///     assert_eq!(ready, "ready");
            ///     Ok(())
            /// })
            /// .await
            /// .unwrap();
            /// # });
            /// ```
            #[track_caller]
            pub fn start<V, F, Fut>(
                &self,
                child: F,
            ) -> impl Future<Output = Result<V, E>> + use<'a, E, V, F, Fut>
            where
                F: FnOnce(Started<V>) -> Fut,
                Fut: Future<Output = Result<(), E>> + $($bound)* 'a,
                V: 'a,
            {
                self.start_as(TaskInfo::new(None), child)
            }

            /// Like [`start`](Self::start), but returns
            /// [`SpawnError::Closed`] instead of panicking if the nursery has
            /// already closed (`child` is then not called). The nursery stays
            /// open for the returned future until it completes or is dropped.
            ///
            /// # Examples
            ///
            /// ```
            #[doc = concat!("use hatchery::{", $example_nursery, ", Cancelled, SpawnError, Started, ", stringify!($handle), "};")]
            /// # futures::executor::block_on(async {
            #[doc = concat!($example_nursery, "(|n| async move {")]
            ///     let port = n
            ///         .try_start(|status: Started<u16>| async move {
            ///             status.started(8080);
            ///             Ok(())
            ///         })
            ///         .expect("the nursery is open")
            ///         .await?;
            ///     assert_eq!(port, 8080);
            ///     Ok(())
            /// })
            /// .await
            /// .unwrap();
            ///
            /// // A handle kept past the nursery's end:
            /// let kept = std::rc::Rc::new(std::cell::RefCell::new(None));
            /// let keeper = kept.clone();
            #[doc = concat!($example_nursery, "(move |n: ", stringify!($handle), "<'static>| {")]
            ///     *keeper.borrow_mut() = Some(n.clone());
            ///     async { Ok(()) }
            /// })
            /// .await
            /// .unwrap();
            /// // The nursery has closed: no child is started, nothing panics.
            /// let n = kept.borrow_mut().take().unwrap();
            /// let out = n.try_start(|status: Started<()>| async move {
            ///     status.started(());
            ///     Ok(())
            /// });
            /// assert_eq!(out.err(), Some(SpawnError::Closed));
            /// # });
            /// ```
            #[track_caller]
            pub fn try_start<V, F, Fut>(
                &self,
                child: F,
            ) -> Result<impl Future<Output = Result<V, E>> + use<'a, E, V, F, Fut>, SpawnError>
            where
                F: FnOnce(Started<V>) -> Fut,
                Fut: Future<Output = Result<(), E>> + $($bound)* 'a,
                V: 'a,
            {
                self.try_start_as(TaskInfo::new(None), child)
            }

            /// Spawns a child on `spawner` (an executor) instead of polling it
            /// inline, so that it runs in parallel with its siblings. It
            /// obeys the same rules as an inline child: it sees the
            /// nursery's cancellation at its checkpoints (on whatever thread
            /// it runs), its error or panic is collected the same way, and
            /// the nursery waits for it. Dropping the nursery cancels it on
            /// the executor, without waiting.
            ///
            /// The child cannot borrow from the nursery's frame: it must live
            /// as long as the executor accepts (`'env`, usually `'static`).
            ///
            /// ```compile_fail
            #[doc = concat!("use hatchery::{", $example_nursery, ", Cancelled, ", stringify!($handle), "};")]
            /// let executor = async_executor::Executor::new();
            /// # futures::executor::block_on(async {
            /// let local = vec![1, 2, 3];
            #[doc = concat!($example_nursery, "(|n| async move {")]
            ///     let borrowed = &local; // error: `local` does not live long enough
            ///     n.spawn_on(&executor, async move { assert_eq!(borrowed.len(), 3); Ok(()) });
            ///     Ok(())
            /// }).await.unwrap();
            /// # });
            /// ```
            ///
            /// # Examples
            ///
            /// ```
            /// use std::sync::atomic::{AtomicUsize, Ordering};
            /// use std::sync::Arc;
            #[doc = concat!("use hatchery::{", $example_nursery, ", Cancelled, ", stringify!($handle), "};")]
            ///
            /// let executor = async_executor::Executor::new();
            /// let count = Arc::new(AtomicUsize::new(0));
            /// let (ex, total) = (&executor, &count);
            /// futures_lite::future::block_on(ex.run(async move {
            #[doc = concat!("    ", $example_nursery, "(|n| async move {")]
            ///         for _ in 0..4 {
            ///             let count = total.clone();
            ///             n.spawn_on(ex, async move {
            ///                 count.fetch_add(1, Ordering::SeqCst);
            ///                 Ok(())
            ///             });
            ///         }
            ///         Ok(())
            ///     })
            ///     .await
            ///     .unwrap();
            /// }));
            /// assert_eq!(count.load(Ordering::SeqCst), 4);
            /// ```
            #[track_caller]
            pub fn spawn_on<'env, S, F>(&self, spawner: &S, future: F)
            where
                'env: 'a,
                S: Spawn<'env> + ?Sized,
                F: Future<Output = Result<(), E>> + Send + 'env,
                E: Send + 'env,
            {
                if let Err(error) = self.spawn_on_as(TaskInfo::new(None), spawner, future) {
                    closed_panic(error, "try_spawn_on")
                }
            }

            /// Like [`spawn_on`](Self::spawn_on), but returns an error
            /// instead of panicking when the nursery has closed (the child
            /// is then not started).
            ///
            /// ```
            #[doc = concat!("use hatchery::{", $example_nursery, ", SpawnError};")]
            ///
            /// let executor = async_executor::Executor::new();
            /// let ex = &executor;
            /// let mut kept = None;
            /// futures_lite::future::block_on(ex.run(async {
            #[doc = concat!("    ", $example_nursery, "(|n| {")]
            ///         kept = Some(n.clone());
            ///         async move {
            ///             assert_eq!(n.try_spawn_on(ex, async { Ok(()) }), Ok(()));
            ///             Ok(())
            ///         }
            ///     })
            ///     .await
            ///     .unwrap();
            /// }));
            /// // The nursery has returned: too late to start a child in it.
            /// let late = kept.unwrap().try_spawn_on(ex, async { Ok(()) });
            /// assert_eq!(late, Err(SpawnError::Closed));
            /// ```
            #[track_caller]
            pub fn try_spawn_on<'env, S, F>(&self, spawner: &S, future: F) -> Result<(), SpawnError>
            where
                'env: 'a,
                S: Spawn<'env> + ?Sized,
                F: Future<Output = Result<(), E>> + Send + 'env,
                E: Send + 'env,
            {
                self.spawn_on_as(TaskInfo::new(None), spawner, future)
            }

            /// Spawns a parallel child on the executor of the surrounding
            /// [`run`](crate::run); see [`spawn_on`](Self::spawn_on). With
            /// the `tokio` feature, outside `run` but inside a tokio
            /// runtime (`#[tokio::main]`), on that runtime, as
            /// `tokio::spawn` would: on a current-thread runtime
            /// (`#[tokio::test]`'s) they run on that thread, and only while
            /// the runtime is driven (inside its `block_on`; a thread that
            /// merely entered it and waits in another executor runs them
            /// never).
            ///
            /// # Panics
            ///
            /// Outside `run` and any tokio runtime (there is no default
            /// executor), or if the nursery has closed; see
            /// [`try_spawn_parallel`](Self::try_spawn_parallel).
            ///
            /// # Examples
            ///
            /// ```
            /// use hatchery::{run, Cancelled, Nursery};
            ///
            /// let out = run(|n| async move {
            ///     n.spawn_parallel(async {
            ///         let sum: u64 = (0..1_000_000u64).sum(); // CPU-bound, off the main thread
            ///         assert_eq!(sum, 499_999_500_000);
            ///         Ok(())
            ///     });
            ///     Ok("done")
            /// });
            /// assert_eq!(out.unwrap(), Some("done"));
            /// ```
            #[track_caller]
            pub fn spawn_parallel<F>(&self, future: F)
            where
                F: Future<Output = Result<(), E>> + Send + 'static,
                E: Send + 'static,
            {
                if let Err(error) = self.try_spawn_parallel(future) {
                    closed_panic(error, "try_spawn_parallel")
                }
            }

            /// Like [`spawn_parallel`](Self::spawn_parallel), but returns an
            /// error instead of panicking.
            ///
            /// ```
            #[doc = concat!("use hatchery::{", $example_nursery, ", Cancelled, SpawnError, ", stringify!($handle), "};")]
            /// # futures::executor::block_on(async {
            #[doc = concat!($example_nursery, "(|n| async move {")]
            ///     // Not inside hatchery::run: there is no default executor.
            ///     assert_eq!(n.try_spawn_parallel(async { Ok(()) }), Err(SpawnError::NoExecutor));
            ///     Ok(())
            /// })
            /// .await
            /// .unwrap();
            /// # });
            /// ```
            #[track_caller]
            pub fn try_spawn_parallel<F>(&self, future: F) -> Result<(), SpawnError>
            where
                F: Future<Output = Result<(), E>> + Send + 'static,
                E: Send + 'static,
            {
                self.spawn_parallel_as(TaskInfo::new(None), future)
            }

            /// Runs a blocking closure on a thread pool (smol's `blocking`;
            /// inside a tokio runtime, with the `tokio` feature, tokio's
            /// blocking pool, so that tokio's types work in the closure),
            /// as a child of the nursery. The closure gets the nursery's
            /// [`CancelHandle`] and should poll
            /// [`is_cancelled`](CancelHandle::is_cancelled) so that
            /// cancellation reaches blocking loops. A panic in it is resumed
            /// in the parent like any child's.
            ///
            /// Spawned while the nursery's scope is already cancelled, the
            /// closure never runs (its captures are dropped), as trio's
            /// `to_thread.run_sync` starts no thread in a cancelled scope:
            /// the child ends with `Cancelled`. Once started, it runs to
            /// its end, and the nursery waits for it.
            ///
            /// On tokio's pool, tokio's rules apply: dropping the runtime
            /// waits for a closure still running (`shutdown_timeout` and
            /// `shutdown_background` do not), and a paused clock does not
            /// auto-advance while one runs, so a closure that only a
            /// deadline would stop keeps a paused-clock test waiting.
            ///
            /// If the nursery future is dropped, the closure's result is
            /// discarded; the thread finishes the closure on its own (a
            /// thread cannot be stopped from outside; its handle reports
            /// the cancellation), and never holds the nursery open.
            ///
            /// There is no limiter (trio's default one allows 40 threads):
            /// the pools grow to 500 threads (smol's `blocking`) or 512
            /// (tokio's), and closures beyond that wait for a thread. To
            /// bound them, hold a permit of a semaphore of yours (taken in
            /// the async code, moved into the closure). Inside the closure,
            /// the cancellation is only in its handle: hatchery's free
            /// functions (`check_cancelled`, `current_scope`) see no scope
            /// on the pool's thread.
            ///
            /// To wait for a closure's value in the task itself, await
            /// [`run_blocking`](crate::run_blocking) instead.
            ///
            /// # Examples
            ///
            /// ```
            /// use std::time::Duration;
            #[doc = concat!("use hatchery::{", $example_nursery, ", sleep, Cancelled, ", stringify!($handle), "};")]
            ///
            /// # futures::executor::block_on(async {
            #[doc = concat!($example_nursery, "(|n| async move {")]
            ///     n.spawn_blocking(|cancel| {
            ///         // On a busy machine the thread may start only after the
            ///         // cancel: the loop then runs no round at all.
            ///         while !cancel.is_cancelled() {
            ///             std::thread::sleep(Duration::from_millis(1)); // blocking work
            ///         }
            ///         Err(Cancelled.into()) // unwind like any cancelled task
            ///     });
            ///     sleep(Duration::from_millis(20)).await?;
            ///     n.cancel_scope().cancel();
            ///     Ok(())
            /// })
            /// .await
            /// .unwrap();
            /// # });
            /// ```
            #[track_caller]
            pub fn spawn_blocking<F>(&self, work: F)
            where
                F: FnOnce(CancelHandle) -> Result<(), E> + Send + 'static,
                E: Send + 'static,
            {
                if let Err(error) = self.spawn_blocking_as(TaskInfo::new(None), work) {
                    closed_panic(error, "try_spawn_blocking")
                }
            }

            /// Like [`spawn_blocking`](Self::spawn_blocking), but returns
            /// [`SpawnError::Closed`] instead of panicking once the nursery
            /// has closed (the closure is dropped, never run).
            ///
            /// ```
            #[doc = concat!("use hatchery::{", $example_nursery, ", SpawnError};")]
            /// # futures::executor::block_on(async {
            /// let mut kept = None;
            #[doc = concat!($example_nursery, "(|n| {")]
            ///     kept = Some(n.clone());
            ///     async move { Ok(()) }
            /// })
            /// .await
            /// .unwrap();
            /// let closed = kept.unwrap().try_spawn_blocking(|_cancel| Ok(()));
            /// assert_eq!(closed, Err(SpawnError::Closed));
            /// # });
            /// ```
            #[track_caller]
            pub fn try_spawn_blocking<F>(&self, work: F) -> Result<(), SpawnError>
            where
                F: FnOnce(CancelHandle) -> Result<(), E> + Send + 'static,
                E: Send + 'static,
            {
                self.spawn_blocking_as(TaskInfo::new(None), work)
            }

            /// A handle to the nursery's cancel scope. Cancelling it cancels the
            /// body and every child; the nursery then returns `Ok(None)`.
            ///
            /// # Examples
            ///
            /// ```
            #[doc = concat!("use hatchery::{", $example_nursery, ", sleep_forever, Cancelled, ", stringify!($handle), "};")]
            /// # futures::executor::block_on(async {
            #[doc = concat!("let out = ", $example_nursery, "(|n| async move {")]
            ///     n.spawn(async { sleep_forever().await?; Ok(()) });
            ///     n.cancel_scope().cancel();
            ///     Ok(())
            /// })
            /// .await;
            /// assert_eq!(out.unwrap(), Some(())); // the body had already returned
            /// # });
            /// ```
            pub fn cancel_scope(&self) -> CancelHandle {
                CancelHandle::from_node(Arc::clone(&self.shared.node))
            }
        }

        impl<'h, 'a, E: CancelError + $($bound)* 'a> TaskBuilder<'h, $handle<'a, E>> {
            /// [`spawn`]($handle::spawn), named.
            ///
            /// ```
            #[doc = concat!("use hatchery::", $example_nursery, ";")]
            /// # futures::executor::block_on(async {
            #[doc = concat!($example_nursery, "(|n| async move {")]
            ///     n.named("worker").spawn(async { Ok(()) });
            ///     Ok(())
            /// })
            /// .await
            /// .unwrap();
            /// # });
            /// ```
            #[track_caller]
            pub fn spawn<F>(self, future: F)
            where
                F: Future<Output = Result<(), E>> + $($bound)* 'a,
            {
                if let Err(error) = self.handle.spawn_as(TaskInfo::new(self.name), future) {
                    closed_panic(error, "try_spawn")
                }
            }

            /// [`try_spawn`]($handle::try_spawn), named.
            ///
            /// ```
            #[doc = concat!("use hatchery::", $example_nursery, ";")]
            /// # futures::executor::block_on(async {
            #[doc = concat!($example_nursery, "(|n| async move {")]
            ///     assert!(n.named("worker").try_spawn(async { Ok(()) }).is_ok());
            ///     Ok(())
            /// })
            /// .await
            /// .unwrap();
            /// # });
            /// ```
            #[track_caller]
            pub fn try_spawn<F>(self, future: F) -> Result<(), SpawnError>
            where
                F: Future<Output = Result<(), E>> + $($bound)* 'a,
            {
                self.handle.spawn_as(TaskInfo::new(self.name), future)
            }

            /// [`start`]($handle::start), named.
            ///
            /// ```
            #[doc = concat!("use hatchery::{", $example_nursery, ", Started};")]
            /// # futures::executor::block_on(async {
            #[doc = concat!($example_nursery, "(|n| async move {")]
            ///     let port = n
            ///         .named("listener")
            ///         .start(|status: Started<u16>| async move {
            ///             status.started(8080);
            ///             Ok(())
            ///         })
            ///         .await?;
            ///     assert_eq!(port, 8080);
            ///     Ok(())
            /// })
            /// .await
            /// .unwrap();
            /// # });
            /// ```
            #[track_caller]
            pub fn start<V, F, Fut>(
                self,
                child: F,
            ) -> impl Future<Output = Result<V, E>> + use<'a, E, V, F, Fut>
            where
                F: FnOnce(Started<V>) -> Fut,
                Fut: Future<Output = Result<(), E>> + $($bound)* 'a,
                V: 'a,
            {
                self.handle.start_as(TaskInfo::new(self.name), child)
            }

            /// [`try_start`]($handle::try_start), named.
            ///
            /// ```
            #[doc = concat!("use hatchery::{", $example_nursery, ", Started};")]
            /// # futures::executor::block_on(async {
            #[doc = concat!($example_nursery, "(|n| async move {")]
            ///     let start = n.named("listener").try_start(|status: Started<()>| async move {
            ///         status.started(());
            ///         Ok(())
            ///     });
            ///     start.expect("the nursery is open").await?;
            ///     Ok(())
            /// })
            /// .await
            /// .unwrap();
            /// # });
            /// ```
            #[track_caller]
            pub fn try_start<V, F, Fut>(
                self,
                child: F,
            ) -> Result<impl Future<Output = Result<V, E>> + use<'a, E, V, F, Fut>, SpawnError>
            where
                F: FnOnce(Started<V>) -> Fut,
                Fut: Future<Output = Result<(), E>> + $($bound)* 'a,
                V: 'a,
            {
                self.handle.try_start_as(TaskInfo::new(self.name), child)
            }

            /// [`spawn_on`]($handle::spawn_on), named.
            ///
            /// ```
            #[doc = concat!("use hatchery::", $example_nursery, ";")]
            /// let executor = async_executor::Executor::new();
            /// let ex = &executor;
            /// futures_lite::future::block_on(ex.run(async move {
            #[doc = concat!("    ", $example_nursery, "(|n| async move {")]
            ///         n.named("cruncher").spawn_on(ex, async { Ok(()) });
            ///         Ok(())
            ///     })
            ///     .await
            ///     .unwrap();
            /// }));
            /// ```
            #[track_caller]
            pub fn spawn_on<'env, S, F>(self, spawner: &S, future: F)
            where
                'env: 'a,
                S: Spawn<'env> + ?Sized,
                F: Future<Output = Result<(), E>> + Send + 'env,
                E: Send + 'env,
            {
                let info = TaskInfo::new(self.name);
                if let Err(error) = self.handle.spawn_on_as(info, spawner, future) {
                    closed_panic(error, "try_spawn_on")
                }
            }

            /// [`try_spawn_on`]($handle::try_spawn_on), named.
            ///
            /// ```
            #[doc = concat!("use hatchery::", $example_nursery, ";")]
            ///
            /// let executor = async_executor::Executor::new();
            /// let ex = &executor;
            /// futures_lite::future::block_on(ex.run(async {
            #[doc = concat!("    ", $example_nursery, "(|n| async move {")]
            ///         n.named("cruncher").try_spawn_on(ex, async { Ok(()) })?;
            ///         Ok(())
            ///     })
            ///     .await
            ///     .unwrap();
            /// }));
            /// ```
            #[track_caller]
            pub fn try_spawn_on<'env, S, F>(self, spawner: &S, future: F) -> Result<(), SpawnError>
            where
                'env: 'a,
                S: Spawn<'env> + ?Sized,
                F: Future<Output = Result<(), E>> + Send + 'env,
                E: Send + 'env,
            {
                self.handle.spawn_on_as(TaskInfo::new(self.name), spawner, future)
            }

            /// [`spawn_parallel`]($handle::spawn_parallel), named.
            ///
            /// ```
            /// hatchery::run(|n| async move {
            ///     n.named("cruncher").spawn_parallel(async { Ok(()) });
            ///     Ok(())
            /// })
            /// .unwrap();
            /// ```
            #[track_caller]
            pub fn spawn_parallel<F>(self, future: F)
            where
                F: Future<Output = Result<(), E>> + Send + 'static,
                E: Send + 'static,
            {
                if let Err(error) = self.try_spawn_parallel(future) {
                    closed_panic(error, "try_spawn_parallel")
                }
            }

            /// [`try_spawn_parallel`]($handle::try_spawn_parallel), named.
            ///
            /// ```
            #[doc = concat!("use hatchery::{", $example_nursery, ", SpawnError};")]
            /// # futures::executor::block_on(async {
            #[doc = concat!($example_nursery, "(|n| async move {")]
            ///     let out = n.named("cruncher").try_spawn_parallel(async { Ok(()) });
            ///     assert_eq!(out, Err(SpawnError::NoExecutor)); // not inside run
            ///     Ok(())
            /// })
            /// .await
            /// .unwrap();
            /// # });
            /// ```
            #[track_caller]
            pub fn try_spawn_parallel<F>(self, future: F) -> Result<(), SpawnError>
            where
                F: Future<Output = Result<(), E>> + Send + 'static,
                E: Send + 'static,
            {
                self.handle.spawn_parallel_as(TaskInfo::new(self.name), future)
            }

            /// Supervises the child: a failure (an error other than a
            /// cancellation) goes to `handler`, with the task's name and
            /// spawn location, instead of cancelling its siblings; what the
            /// handler returns is the child's result. So a failure the
            /// handler returns still fails the nursery: nothing is lost.
            /// The handler runs in the nursery's context, once. Panics stay
            /// panics unless [`on_panic`](Supervised::on_panic) says otherwise.
            /// The report counts handled failures per nursery.
            ///
            /// ```
            #[doc = concat!("use hatchery::", $example_nursery, ";")]
            /// # futures::executor::block_on(async {
            /// let handled = std::sync::Mutex::new(Vec::new());
            /// let handled = &handled;
            #[doc = concat!($example_nursery, "(|n| async move {")]
            ///     for id in 0..3 {
            ///         n.named(format!("connection {id}"))
            ///             .on_failure(move |failure| {
            ///                 handled.lock().unwrap().push(failure.task.name().unwrap().to_owned());
            ///                 Ok(()) // logged; the other connections go on
            ///             })
            ///             .spawn(async move {
            ///                 if id == 1 {
            ///                     return Err(hatchery::Error::msg("malformed request"));
            ///                 }
            ///                 hatchery::sleep(std::time::Duration::from_millis(5)).await?;
            ///                 Ok(())
            ///             });
            ///     }
            ///     Ok(())
            /// })
            /// .await
            /// .unwrap();
            /// assert_eq!(*handled.lock().unwrap(), ["connection 1"]);
            /// # });
            /// ```
            pub fn on_failure<H>(self, handler: H) -> Supervised<'h, $handle<'a, E>, H, ResumePanics>
            where
                H: FnOnce(TaskFailure<E>) -> Result<(), E>,
            {
                Supervised {
                    builder: self,
                    on_error: handler,
                    on_panic: ResumePanics,
                }
            }

            /// [`spawn_blocking`]($handle::spawn_blocking), named.
            ///
            /// ```
            #[doc = concat!("use hatchery::", $example_nursery, ";")]
            /// # futures::executor::block_on(async {
            #[doc = concat!($example_nursery, "(|n| async move {")]
            ///     n.named("checksum").spawn_blocking(|_cancel| Ok(()));
            ///     Ok(())
            /// })
            /// .await
            /// .unwrap();
            /// # });
            /// ```
            #[track_caller]
            pub fn spawn_blocking<F>(self, work: F)
            where
                F: FnOnce(CancelHandle) -> Result<(), E> + Send + 'static,
                E: Send + 'static,
            {
                let info = TaskInfo::new(self.name);
                if let Err(error) = self.handle.spawn_blocking_as(info, work) {
                    closed_panic(error, "try_spawn_blocking")
                }
            }

            /// Like [`spawn_blocking`](Self::spawn_blocking), but returns
            /// [`SpawnError::Closed`] instead of panicking once the nursery
            /// has closed (the closure is dropped, never run).
            ///
            /// ```
            #[doc = concat!("use hatchery::{", $example_nursery, ", SpawnError};")]
            /// # futures::executor::block_on(async {
            #[doc = concat!($example_nursery, "(|n| async move {")]
            ///     n.named("checksum").try_spawn_blocking(|_cancel| Ok(()))?;
            ///     Ok(())
            /// })
            /// .await
            /// .unwrap();
            /// # });
            /// ```
            #[track_caller]
            pub fn try_spawn_blocking<F>(self, work: F) -> Result<(), SpawnError>
            where
                F: FnOnce(CancelHandle) -> Result<(), E> + Send + 'static,
                E: Send + 'static,
            {
                let info = TaskInfo::new(self.name);
                self.handle.spawn_blocking_as(info, work)
            }
        }

        impl<'h, 'a, E, H, P> Supervised<'h, $handle<'a, E>, H, P>
        where
            E: CancelError + $($bound)* 'a,
            H: FnOnce(TaskFailure<E>) -> Result<(), E> + $($bound)* 'a,
            P: PanicPolicy<E> + $($bound)* 'a,
        {
            /// Hands a panic of the child to `handler` too (with the task and
            /// the payload), instead of resuming it in the nursery; what the
            /// handler returns is the child's result.
            ///
            /// ```
            #[doc = concat!("use hatchery::", $example_nursery, ";")]
            /// # futures::executor::block_on(async {
            #[doc = concat!($example_nursery, "(|n| async move {")]
            ///     n.named("parser")
            ///         .on_failure(|_failure| Ok(()))
            ///         .on_panic(|task, _payload| {
            ///             eprintln!("{task} panicked; the server goes on");
            ///             Ok(())
            ///         })
            ///         .spawn(async { panic!("a bug in the parser") });
            ///     Ok(())
            /// })
            /// .await
            /// .unwrap();
            /// # });
            /// ```
            pub fn on_panic<Q>(self, handler: Q) -> Supervised<'h, $handle<'a, E>, H, HandlePanics<Q>>
            where
                Q: FnOnce(TaskInfo, Box<dyn Any + Send>) -> Result<(), E>,
            {
                Supervised {
                    builder: self.builder,
                    on_error: self.on_error,
                    on_panic: HandlePanics(handler),
                }
            }

            /// The child with its handlers around it, its name, and the
            /// handle to spawn it with: what every spawn of a supervised
            /// child starts from (at the caller's spawn site).
            #[track_caller]
            fn wrap<F>(self, future: F) -> (&'h $handle<'a, E>, TaskInfo, Supervise<F, H, P>) {
                let info = TaskInfo::new(self.builder.name);
                let handle = self.builder.handle;
                let table = Arc::clone(&handle.shared.table);
                let supervised = Supervise::new(future, info.clone(), table, self.on_error, self.on_panic);
                (handle, info, supervised)
            }

            /// Spawns the supervised child inline; see
            /// [`TaskBuilder::on_failure`].
            ///
            /// ```
            #[doc = concat!("use hatchery::", $example_nursery, ";")]
            /// # futures::executor::block_on(async {
            #[doc = concat!($example_nursery, "(|n| async move {")]
            ///     n.named("worker").on_failure(|_failure| Ok(())).spawn(async { Ok(()) });
            ///     Ok(())
            /// })
            /// .await
            /// .unwrap();
            /// # });
            /// ```
            #[track_caller]
            pub fn spawn<F>(self, future: F)
            where
                F: Future<Output = Result<(), E>> + $($bound)* 'a,
            {
                if let Err(error) = self.try_spawn(future) {
                    closed_panic(error, "try_spawn")
                }
            }

            /// [`spawn`](Self::spawn), returning an error instead of
            /// panicking if the nursery has closed.
            ///
            /// ```
            #[doc = concat!("use hatchery::", $example_nursery, ";")]
            /// # futures::executor::block_on(async {
            #[doc = concat!($example_nursery, "(|n| async move {")]
            ///     let spawned = n.named("worker").on_failure(|_failure| Ok(())).try_spawn(async { Ok(()) });
            ///     assert!(spawned.is_ok());
            ///     Ok(())
            /// })
            /// .await
            /// .unwrap();
            /// # });
            /// ```
            #[track_caller]
            pub fn try_spawn<F>(self, future: F) -> Result<(), SpawnError>
            where
                F: Future<Output = Result<(), E>> + $($bound)* 'a,
            {
                let (handle, info, future) = self.wrap(future);
                handle.spawn_as(info, future)
            }

            /// Spawns the supervised child on the executor of the surrounding
            /// [`run`](crate::run); see [`TaskBuilder::on_failure`]. Its
            /// handlers travel with it: they run where the child ran, right
            /// after it ended, with the nursery's scope current (so they are
            /// `Send + 'static`, like the child).
            ///
            /// ```
            /// hatchery::run(|n| async move {
            ///     n.named("request").on_failure(|_failure| Ok(())).spawn_parallel(async {
            ///         Err(hatchery::Error::msg("handled"))
            ///     });
            ///     Ok(())
            /// })
            /// .unwrap();
            /// ```
            #[track_caller]
            pub fn spawn_parallel<F>(self, future: F)
            where
                F: Future<Output = Result<(), E>> + Send + 'static,
                E: Send + 'static,
                H: Send + 'static,
                P: Send + 'static,
            {
                if let Err(error) = self.try_spawn_parallel(future) {
                    closed_panic(error, "try_spawn_parallel")
                }
            }

            /// [`spawn_parallel`](Self::spawn_parallel), returning an error
            /// instead of panicking if the nursery has closed or there is no
            /// executor to run it on.
            ///
            /// ```
            /// hatchery::run(|n| async move {
            ///     let spawned = n
            ///         .named("request")
            ///         .on_failure(|_failure| Ok(()))
            ///         .try_spawn_parallel(async { Err(hatchery::Error::msg("handled")) });
            ///     assert!(spawned.is_ok());
            ///     Ok(())
            /// })
            /// .unwrap();
            /// ```
            #[track_caller]
            pub fn try_spawn_parallel<F>(self, future: F) -> Result<(), SpawnError>
            where
                F: Future<Output = Result<(), E>> + Send + 'static,
                E: Send + 'static,
                H: Send + 'static,
                P: Send + 'static,
            {
                let (handle, info, supervised) = self.wrap(future);
                handle.spawn_parallel_as(info, supervised)
            }

            /// Spawns the supervised child on `spawner` (see
            #[doc = concat!("[`spawn_on`](", stringify!($handle), "::spawn_on)),")]
            /// your own executor or a tokio `Handle`; its handlers travel
            /// with it, as with [`spawn_parallel`](Self::spawn_parallel).
            ///
            /// ```
            #[doc = concat!("use hatchery::", $example_nursery, ";")]
            /// let executor = async_executor::Executor::new();
            /// let ex = &executor;
            /// futures_lite::future::block_on(ex.run(async move {
            #[doc = concat!("    ", $example_nursery, "(|n| async move {")]
            ///         n.named("request")
            ///             .on_failure(|_failure| Ok(())) // logged elsewhere; the others go on
            ///             .spawn_on(ex, async { Err(hatchery::Error::msg("handled")) });
            ///         Ok(())
            ///     })
            ///     .await
            ///     .unwrap();
            /// }));
            /// ```
            #[track_caller]
            pub fn spawn_on<'env, S, F>(self, spawner: &S, future: F)
            where
                'env: 'a,
                S: Spawn<'env> + ?Sized,
                F: Future<Output = Result<(), E>> + Send + 'env,
                E: Send + 'env,
                H: Send + 'env,
                P: Send + 'env,
            {
                if let Err(error) = self.try_spawn_on(spawner, future) {
                    closed_panic(error, "try_spawn_on")
                }
            }

            /// [`spawn_on`](Self::spawn_on), returning an error instead of
            /// panicking if the nursery has closed.
            ///
            /// ```
            #[doc = concat!("use hatchery::", $example_nursery, ";")]
            /// let executor = async_executor::Executor::new();
            /// let ex = &executor;
            /// futures_lite::future::block_on(ex.run(async move {
            #[doc = concat!("    ", $example_nursery, "(|n| async move {")]
            ///         let spawned = n
            ///             .named("request")
            ///             .on_failure(|_failure| Ok(()))
            ///             .try_spawn_on(ex, async { Err(hatchery::Error::msg("handled")) });
            ///         assert!(spawned.is_ok());
            ///         Ok(())
            ///     })
            ///     .await
            ///     .unwrap();
            /// }));
            /// ```
            #[track_caller]
            pub fn try_spawn_on<'env, S, F>(self, spawner: &S, future: F) -> Result<(), SpawnError>
            where
                'env: 'a,
                S: Spawn<'env> + ?Sized,
                F: Future<Output = Result<(), E>> + Send + 'env,
                E: Send + 'env,
                H: Send + 'env,
                P: Send + 'env,
            {
                let (handle, info, supervised) = self.wrap(future);
                handle.spawn_on_as(info, spawner, supervised)
            }
        }
    };
}

/// A named child with failure handlers, about to be spawned: made by
/// [`TaskBuilder::on_failure`].
///
/// ```
/// hatchery::run(|n| async move {
///     n.named("connection")
///         .on_failure(|failure| {
///             eprintln!("{}: {}", failure.task, failure.error);
///             Ok(())
///         })
///         .spawn(async { Err(hatchery::Error::msg("connection reset")) });
///     Ok(())
/// })
/// .unwrap();
/// ```
#[must_use = "a supervised child is spawned only by spawn, spawn_parallel or spawn_on"]
pub struct Supervised<'h, H, OnError, OnPanic> {
    builder: TaskBuilder<'h, H>,
    on_error: OnError,
    on_panic: OnPanic,
}

impl<H, OnError, OnPanic> fmt::Debug for Supervised<'_, H, OnError, OnPanic> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Supervised")
            .field("name", &self.builder.name)
            .finish_non_exhaustive()
    }
}

/// A child about to be spawned with a name: every way to spawn, start or
/// send a child somewhere, named. Made by [`Nursery::named`] (and
/// [`LocalNursery::named`]).
///
/// # Examples
///
/// ```
/// use hatchery::nursery;
///
/// # futures::executor::block_on(async {
/// let error = nursery(|n| async move {
///     n.named("config-loader").spawn(async { Err(hatchery::Error::msg("no config.toml")) });
///     Ok(())
/// })
/// .await
/// .unwrap_err();
/// let failures = error.downcast_ref::<hatchery::NurseryError>().unwrap().failures();
/// assert_eq!(failures[0].task.name(), Some("config-loader"));
/// # });
/// ```
#[must_use = "a task builder spawns nothing until one of its methods is called"]
pub struct TaskBuilder<'h, H> {
    handle: &'h H,
    /// `None`: an unnamed child (`on_failure` on the handle itself).
    name: Option<Cow<'static, str>>,
}

impl<H> fmt::Debug for TaskBuilder<'_, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskBuilder")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

handle_methods!(
    Nursery,
    SendChild,
    [Send+],
    "Nursery<'_, Cancelled>",
    "nursery"
);
handle_methods!(
    LocalNursery,
    LocalChild,
    [],
    "LocalNursery<'_, Cancelled>",
    "local_nursery"
);
