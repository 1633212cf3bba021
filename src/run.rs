//! `run()`: the blocking root for programs that have no runtime of their own.
//!
//! It starts an async-executor `Executor` on worker threads (for parallel
//! children), polls the root nursery on the calling thread while driving
//! async-io's reactor (timers, I/O), and returns the nursery's result once
//! every task has finished.
//!
//! # Invariants
//!
//! 1. The worker threads are scoped: `run` never returns (or unwinds) before
//!    they have stopped, and they stop on every exit path, including a panic
//!    resumed out of the root nursery.
//! 2. `run` does not nest on one thread: an inner `run` would block a thread
//!    the outer one needs.
//! 3. One `run` owns the signals in a process; a `run` started while
//!    another one is active (on another thread: inside `spawn_blocking`,
//!    say) defers to it (see `signal`).

use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use event_listener::Event;
use futures_lite::FutureExt;

use crate::clock;
use crate::error::{CancelError, Cancelled, NurseryError};
use crate::nursery::{Nursery, nursery};
use crate::signal::{DEFAULT_GRACE_PERIOD, STDERR_PATIENCE, Shutdown, SignalGuard, flush_stderr};
use crate::spawn::{BoxTask, SharedSpawner, Spawn, TaskGuard, with_default};

thread_local! {
    static IN_RUN: Cell<bool> = const { Cell::new(false) };
}

/// Runs `body` as the root nursery of a program, on a fresh executor with one
/// worker thread per core. Returns the root nursery's result: `Ok(Some(v))`
/// when the body returned `v`, `Ok(None)` when the root scope was cancelled
/// and caught it, `Err` with every failure otherwise.
///
/// Inside, [`Nursery::spawn_parallel`] runs children on the worker threads;
/// [`sleep`](crate::sleep), deadlines and async-io's I/O work everywhere.
///
/// SIGINT and SIGTERM shut the run down (see [`Builder::handle_signals`]).
/// A `run` started while another one is active in the process (inside
/// [`Nursery::spawn_blocking`], say) leaves the signals to that one: it is
/// cancelled when the outer run is interrupted, and returns as a run
/// without signal handling would, leaving the exit to the outer run.
///
/// # Panics
///
/// If called from inside another `run` (on the same thread): open a
/// [`nursery`] instead. A panic of a task is resumed here, after every other
/// task finished and the worker threads stopped.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use hatchery::{run, sleep, Cancelled, Nursery};
///
/// let out = run(|n: Nursery<'_, Cancelled>| async move {
///     for i in 0..4u64 {
///         n.spawn_parallel(async move {
///             sleep(Duration::from_millis(10 * i)).await?;
///             Ok(())
///         });
///     }
///     Ok(42)
/// });
/// assert_eq!(out.unwrap(), Some(42));
/// ```
#[track_caller]
pub fn run<'a, E, T, F, Fut>(body: F) -> Result<Option<T>, NurseryError<E>>
where
    F: FnOnce(Nursery<'a, E>) -> Fut,
    Fut: Future<Output = Result<T, E>> + 'a,
    E: CancelError + Send + 'a,
    T: 'a,
{
    Builder::new().run(body)
}

/// Configures [`run`].
///
/// ```
/// use hatchery::{Builder, Cancelled, Nursery};
///
/// let out = Builder::new()
///     .worker_threads(1)
///     .run(|_n: Nursery<'_, Cancelled>| async { Ok(7) });
/// assert_eq!(out.unwrap(), Some(7));
/// ```
#[derive(Debug, Clone)]
pub struct Builder {
    worker_threads: Option<NonZeroUsize>,
    grace_period: Duration,
    handle_signals: bool,
    exit_on_signal: bool,
}

impl Default for Builder {
    fn default() -> Self {
        Self::new()
    }
}

impl Builder {
    /// The defaults: one worker thread per core
    /// (`std::thread::available_parallelism`).
    ///
    /// ```
    /// let _ = hatchery::Builder::new();
    /// ```
    pub fn new() -> Self {
        Builder {
            worker_threads: None,
            grace_period: DEFAULT_GRACE_PERIOD,
            handle_signals: true,
            exit_on_signal: true,
        }
    }

    /// Whether SIGINT and SIGTERM shut the run down (default: yes). The first
    /// signal cancels the root scope; the second, or the grace period running
    /// out, forces the shutdown and prints the report of what was still
    /// running; the third exits at once (see [`signal`](crate::signal)). The
    /// handlers are installed for the duration of the run only; when it
    /// returns, each signal has the disposition it had before (or the one
    /// the program installed meanwhile).
    ///
    /// One run owns the signals per process. A run started while another
    /// one (or a [`SignalGuard`]) owns them — a `run` inside
    /// [`Nursery::spawn_blocking`], or on a thread of its own — defers to
    /// it: it installs nothing, its root scope is cancelled when the owner
    /// receives its first signal, and it neither escalates nor exits the
    /// process; it returns as with `handle_signals(false)`, and the owner's
    /// shutdown decides how the process ends. If the owner returns first,
    /// the signals go back to their previous disposition: the deferred run
    /// does not take them over.
    ///
    /// ```
    /// use hatchery::{Builder, Cancelled, Nursery};
    /// let out = Builder::new()
    ///     .handle_signals(false) // e.g. a library's helper run, not a program's root
    ///     .run(|_n: Nursery<'_, Cancelled>| async { Ok(1) });
    /// assert_eq!(out.unwrap(), Some(1));
    /// ```
    pub fn handle_signals(mut self, handle: bool) -> Self {
        self.handle_signals = handle;
        self
    }

    /// What the run does once a signal shut it down (default: exit). With
    /// `true`, once every task has finished (or the shutdown was forced),
    /// the process exits with status 130 after SIGINT or 143 after SIGTERM,
    /// as shells expect of an interrupted program. With `false`, the run
    /// returns an error whose [`interrupted`](NurseryError::interrupted)
    /// names the signal, so that the program can choose its own exit.
    ///
    /// ```
    /// use hatchery::{Builder, Cancelled, Nursery};
    /// let out = Builder::new()
    ///     .exit_on_signal(false)
    ///     .run(|_n: Nursery<'_, Cancelled>| async { Ok(()) });
    /// match out {
    ///     Err(error) if error.interrupted().is_some() => std::process::exit(3),
    ///     other => assert!(other.is_ok()),
    /// }
    /// ```
    pub fn exit_on_signal(mut self, exit: bool) -> Self {
        self.exit_on_signal = exit;
        self
    }

    /// How long the root nursery may take to finish once its scope is
    /// cancelled (default 10 s). When the budget runs out, the run hard-cancels:
    /// whatever is still running is dropped, and `run` returns a cancellation
    /// error.
    ///
    /// ```
    /// use std::time::Duration;
    /// use hatchery::{Builder, CancelScope, Cancelled, Nursery, sleep};
    ///
    /// let out = Builder::new()
    ///     .grace_period(Duration::from_millis(20))
    ///     .run(|n: Nursery<'_, Cancelled>| async move {
    ///         n.spawn(async {
    ///             // Ignores cancellation for an hour, behind a shield.
    ///             CancelScope::new().shield(true).run(sleep(Duration::from_secs(3600))).await?;
    ///             Ok(())
    ///         });
    ///         n.cancel_scope().cancel();
    ///         Ok(())
    ///     });
    /// assert!(out.unwrap_err().is_cancelled()); // dropped after 20 ms, not an hour
    /// ```
    pub fn grace_period(mut self, grace_period: Duration) -> Self {
        self.grace_period = grace_period;
        self
    }

    /// Sets the number of worker threads that run parallel children. The
    /// root nursery's body and its inline children run on the thread that
    /// calls `run`.
    ///
    /// # Panics
    ///
    /// If `threads` is 0: a runtime needs at least one worker thread (use 1
    /// for a single-threaded one).
    ///
    /// ```
    /// let builder = hatchery::Builder::new().worker_threads(4);
    /// ```
    #[track_caller]
    pub fn worker_threads(mut self, threads: usize) -> Self {
        match NonZeroUsize::new(threads) {
            Some(threads) => self.worker_threads = Some(threads),
            None => panic!(
                "hatchery::Builder::worker_threads(0): a runtime needs at least one worker \
                 thread; use worker_threads(1) for a single-threaded runtime"
            ),
        }
        self
    }

    /// Runs `body` as the root nursery; see [`run`].
    ///
    /// ```
    /// use hatchery::{Builder, Cancelled, Nursery};
    /// let out = Builder::new()
    ///     .worker_threads(2)
    ///     .run(|n: Nursery<'_, Cancelled>| async move {
    ///         n.spawn_parallel(async { Ok(()) });
    ///         Ok(())
    ///     });
    /// assert!(out.is_ok());
    /// ```
    #[track_caller]
    pub fn run<'a, E, T, F, Fut>(self, body: F) -> Result<Option<T>, NurseryError<E>>
    where
        F: FnOnce(Nursery<'a, E>) -> Fut,
        Fut: Future<Output = Result<T, E>> + 'a,
        E: CancelError + Send + 'a,
        T: 'a,
    {
        let executor = Arc::new(async_executor::Executor::new());
        let spawner: SharedSpawner = executor.clone();
        self.run_on(executor, Some(spawner), body)
    }

    /// Like [`run`](Self::run), and the body also gets the run's executor as
    /// a [`ScopedExecutor`]: parallel children spawned on it with
    /// [`Nursery::spawn_on`] may borrow from outside the `run` call, since
    /// `run` returns only after they all finished (the executor's worker
    /// threads are scoped threads).
    ///
    /// Inside a scoped run, [`Nursery::spawn_parallel`] has no default
    /// executor (it needs `'static` children); use `spawn_on(&executor, …)`.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use hatchery::{Builder, Cancelled, Nursery, ScopedExecutor};
    ///
    /// let numbers: Vec<u64> = (1..=1000).collect();
    /// let total = AtomicU64::new(0);
    /// let (numbers, total_ref) = (&numbers, &total); // borrowed, not 'static
    /// Builder::new()
    ///     .run_scoped(|n: Nursery<'_, Cancelled>, executor: ScopedExecutor<'_>| async move {
    ///         for chunk in numbers.chunks(100) {
    ///             n.spawn_on(&executor, async move {
    ///                 total_ref.fetch_add(chunk.iter().sum(), Ordering::Relaxed);
    ///                 Ok(())
    ///             });
    ///         }
    ///         Ok(())
    ///     })
    ///     .unwrap();
    /// assert_eq!(total.load(Ordering::Relaxed), 500_500);
    /// ```
    #[track_caller]
    pub fn run_scoped<'env, E, T, F, Fut>(self, body: F) -> Result<Option<T>, NurseryError<E>>
    where
        F: FnOnce(Nursery<'env, E>, ScopedExecutor<'env>) -> Fut,
        Fut: Future<Output = Result<T, E>> + 'env,
        E: CancelError + Send + 'env,
        T: 'env,
    {
        let executor = Arc::new(async_executor::Executor::new());
        let scoped = ScopedExecutor {
            executor: Arc::clone(&executor),
        };
        self.run_on(executor, None, |n| body(n, scoped))
    }

    #[track_caller]
    fn run_on<'a, 'env, E, T, F, Fut>(
        self,
        executor: Arc<async_executor::Executor<'env>>,
        default_spawner: Option<SharedSpawner>,
        body: F,
    ) -> Result<Option<T>, NurseryError<E>>
    where
        F: FnOnce(Nursery<'a, E>) -> Fut,
        Fut: Future<Output = Result<T, E>> + 'a,
        E: CancelError + Send + 'a,
        T: 'a,
    {
        if IN_RUN.get() {
            panic!(
                "hatchery::run() was called inside another hatchery::run() on the same thread; \
                 open a nursery() instead (the outer run already provides the executor)"
            );
        }
        let threads = self
            .worker_threads
            .or_else(|| std::thread::available_parallelism().ok())
            .map_or(1, NonZeroUsize::get);
        let stop = Stop::default();
        let shutdown = Shutdown::new(self.grace_period);
        // Installed before the body closure is called: a signal from now on
        // cancels the root scope, even before the body starts.
        let mut guard = if self.handle_signals {
            match SignalGuard::watch(Arc::clone(&shutdown)) {
                Ok(guard) => Some(guard),
                Err(error) => panic!(
                    "hatchery::run(): could not install the SIGINT/SIGTERM handlers: {error} \
                     (use Builder::handle_signals(false) to run without them)"
                ),
            }
        } else {
            None
        };
        let mut root_scope = None;
        let root = nursery(|n: Nursery<'a, E>| {
            root_scope = Some(n.cancel_scope());
            body(n)
        });
        let root_scope = root_scope.expect("nursery() calls its body closure at once");
        match &mut guard {
            Some(guard) => guard.attach(&root_scope),
            None => shutdown.set_scope(root_scope.clone()),
        }
        // Once the root scope is cancelled, the grace period starts; when it
        // runs out (or a second signal arrives), the shutdown is forced: the
        // report is printed and the root nursery is dropped (the hard cancel).
        let grace_period = self.grace_period;
        let forced = {
            let shutdown = Arc::clone(&shutdown);
            async move {
                let out_of_grace = async {
                    root_scope.cancelled().await;
                    match clock::now().checked_add(grace_period) {
                        Some(at) => clock::timer_at(at).await,
                        None => std::future::pending().await,
                    }
                    shutdown.force("the grace period ran out");
                };
                out_of_grace.or(shutdown.forced()).await;
                Err(NurseryError::from(Cancelled))
            }
        };
        let with_spawner = |f: &mut dyn FnMut()| match &default_spawner {
            Some(spawner) => with_default(spawner.clone(), f),
            None => f(),
        };

        let result = std::thread::scope(|scope| {
            for index in 0..threads {
                let (executor, stop, with_spawner) = (&executor, &stop, &with_spawner);
                let worker = std::thread::Builder::new()
                    .name(format!("hatchery-worker-{index}"))
                    .spawn_scoped(scope, move || {
                        let _in_run = InRun::enter();
                        with_spawner(&mut || async_io::block_on(executor.run(stop.wait())));
                    });
                if let Err(error) = worker {
                    stop.set();
                    panic!("hatchery::run(): could not start worker thread {index}: {error}");
                }
            }
            // Invariant 1: stop the workers however the root nursery ends.
            let _stop_workers = StopOnDrop(&stop);
            let _in_run = InRun::enter();
            let mut root = Some(root.or(forced));
            let mut out = None;
            with_spawner(&mut || {
                if let Some(root) = root.take() {
                    out = Some(async_io::block_on(root));
                }
            });
            out.unwrap_or_else(|| Err(NurseryError::from(Cancelled)))
        });
        if let (true, Some(signal)) = (self.exit_on_signal, shutdown.signal()) {
            // Exiting: the handlers stay until the process is gone, so that
            // another signal meanwhile exits at once with the same status,
            // rather than finding the default action back.
            shutdown.arm_exit();
            if let Some(guard) = guard {
                guard.stop_for_exit();
            }
            exit_after(signal);
        }
        // Invariant 1 of `signal`: a signal that arrived until now counts.
        drop(guard);
        // The report and the shutdown line are out before the program goes
        // on, unless nobody reads stderr (then they wait no longer).
        let _ = flush_stderr(STDERR_PATIENCE);
        match shutdown.signal() {
            None => result,
            Some(signal) if self.exit_on_signal => exit_after(signal),
            Some(signal) => Err(match result {
                Err(error) => error.with_signal(signal),
                Ok(_) => NurseryError::from(Cancelled).with_signal(signal),
            }),
        }
    }
}

/// Exits with 128 + the first signal's number, once stdout and (for a
/// bounded time) stderr have taken what was written to them.
fn exit_after(signal: i32) -> ! {
    use std::io::Write;
    let _ = flush_stderr(STDERR_PATIENCE);
    // stderr is unbuffered (and its lock may be held by hatchery's writer,
    // stuck on a full pipe): only stdout is flushed.
    let _ = std::io::stdout().flush();
    std::process::exit(128 + signal)
}

/// The executor of a [`Builder::run_scoped`] call: a [`Spawn`] whose tasks may
/// borrow anything that outlives the `run_scoped` call.
///
/// ```
/// use hatchery::{Builder, Cancelled, Nursery, ScopedExecutor};
/// let greeting = String::from("hello");
/// let greeting = &greeting;
/// Builder::new()
///     .run_scoped(|n: Nursery<'_, Cancelled>, executor: ScopedExecutor<'_>| async move {
///         n.spawn_on(&executor, async move {
///             assert_eq!(greeting, "hello");
///             Ok(())
///         });
///         Ok(())
///     })
///     .unwrap();
/// ```
#[derive(Clone)]
pub struct ScopedExecutor<'env> {
    executor: Arc<async_executor::Executor<'env>>,
}

impl fmt::Debug for ScopedExecutor<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScopedExecutor").finish_non_exhaustive()
    }
}

impl<'env> Spawn<'env> for ScopedExecutor<'env> {
    fn spawn_task(&self, task: BoxTask<'env>) -> TaskGuard<'env> {
        self.executor.spawn_task(task)
    }
}

/// Marks the current thread as running inside `run` (invariant 2).
struct InRun(bool);

impl InRun {
    fn enter() -> Self {
        InRun(IN_RUN.replace(true))
    }
}

impl Drop for InRun {
    fn drop(&mut self) {
        IN_RUN.set(self.0);
    }
}

/// Tells the worker threads to leave `Executor::run`.
#[derive(Default)]
struct Stop {
    stopped: AtomicBool,
    event: Event,
}

impl Stop {
    fn set(&self) {
        self.stopped.store(true, Ordering::Release);
        self.event.notify(usize::MAX);
    }

    async fn wait(&self) {
        loop {
            if self.stopped.load(Ordering::Acquire) {
                return;
            }
            let listener = self.event.listen();
            if self.stopped.load(Ordering::Acquire) {
                return;
            }
            listener.await;
        }
    }
}

struct StopOnDrop<'s>(&'s Stop);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.set();
    }
}
