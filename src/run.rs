//! `run()`: the blocking root for programs that have no runtime of their own.
//!
//! It starts an async-executor `Executor` on worker threads (for parallel
//! children), polls the root nursery on the calling thread while driving
//! async-io's reactor (timers, I/O), and returns the nursery's result once
//! every task has finished.
//!
//! # Invariants
//!
//! 1. The worker threads are told to stop on every exit path, including a
//!    panic resumed out of the root nursery, and `run` waits for them
//!    before it returns or unwinds, with one exception: once the root
//!    scope was cancelled, a worker still inside a poll when the grace
//!    period is over (a parallel child that never awaits) is *abandoned*.
//!    `run`'s workers are plain threads; that one ends with the process,
//!    and stderr names it. `run_scoped`'s workers are scoped threads whose
//!    tasks may borrow from the caller: it cannot abandon them, and says on
//!    stderr that it is waiting for them.
//! 2. `run` does not nest on one thread: an inner `run` would block a thread
//!    the outer one needs.
//! 3. One `run` owns the signals in a process; a `run` started while
//!    another one is active (on another thread: inside `spawn_blocking`,
//!    say) defers to it (see `signal`).

use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use event_listener::Event;
use futures_lite::FutureExt;

use crate::cancel::{CancelHandle, Signal};
use crate::clock;
use crate::error::{CancelError, Cancelled, Error, NurseryError};
use crate::nursery::{Dropped, FailureSink, Nursery, typed_root_nursery};
use crate::signal::{
    DEFAULT_GRACE_PERIOD, STDERR_PATIENCE, Shutdown, SignalGuard, flush_stderr, say,
};
use crate::spawn::{BoxTask, SharedSpawner, Spawn, TaskGuard, with_default};
use crate::sync::Recover;

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
/// SIGINT and SIGTERM shut the run down (see [`Builder::handle_signals`]),
/// and then **`run` exits the process** with status 130 (SIGINT) or 143
/// (SIGTERM) once every task has finished: code after `run` does not run
/// after a signal. The errors it would have returned (a task that failed
/// before the signal, or in its cleanup after it) are written to stderr
/// before that exit (their `Debug` form: `Error: ...` of a `main` that
/// returned them); a panic is resumed instead (see Panics), and Rust then
/// exits with 101, unless the shutdown was forced (then the exit is the
/// signal's, and the panic's message is what the panic hook printed). The
/// root nursery's failures and panic survive a forced shutdown (written,
/// returned or resumed); those recorded inside nested nurseries that are
/// still running then are dropped with them (the report printed at the
/// forced shutdown lists what is still running, not what failed). To decide the exit yourself, use
/// [`Builder::exit_on_signal(false)`](Builder::exit_on_signal): `run` then
/// returns an error whose [`interrupted`](NurseryError::interrupted) names
/// the signal. A `run` started while another one is active in the process (inside
/// [`Nursery::spawn_blocking`], say) leaves the signals to that one: it is
/// cancelled when the outer run is interrupted, and returns as a run
/// without signal handling would, leaving the exit to the outer run.
///
/// Once the root scope is cancelled, `run` returns within its grace period
/// (plus the time a forced shutdown takes), even if a parallel child never
/// awaits and so never gives its worker thread back: that worker is
/// abandoned and ends with the process: the report of the forced shutdown
/// names its task, and the default root also names the thread on stderr
/// (the tokio root lets its runtime go in the background, quietly).
///
/// # Panics
///
/// If called from inside another `run` on the same thread (its body, or a
/// parallel child): open a [`nursery`](crate::nursery) instead. A panic of a task is
/// resumed here, after every other task finished and the worker threads
/// stopped.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use hatchery::{run, sleep, Cancelled, Nursery};
///
/// let out = run(|n| async move {
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
pub fn run<'a, T, F, Fut>(body: F) -> Result<Option<T>, NurseryError<Error>>
where
    F: FnOnce(Nursery<'a, Error>) -> Fut,
    Fut: Future<Output = Result<T, Error>> + 'a,
    T: 'a,
{
    Builder::new().run(body)
}

/// [`run`](crate::run) with an error type of your choosing; see
/// [`typed`](crate::typed) and [`Builder::error_type`].
///
/// ```
/// use hatchery::{typed, Cancelled, Nursery};
///
/// let out = typed::run(|n: Nursery<'_, Cancelled>| async move {
///     n.spawn_parallel(async { Ok(()) });
///     Ok("done")
/// });
/// assert_eq!(out.unwrap(), Some("done"));
/// ```
#[track_caller]
pub fn typed_run<'a, E, T, F, Fut>(body: F) -> Result<Option<T>, NurseryError<E>>
where
    F: FnOnce(Nursery<'a, E>) -> Fut,
    Fut: Future<Output = Result<T, E>> + 'a,
    E: CancelError + Send + 'a,
    T: 'a,
{
    Builder::new().error_type::<E>().run(body)
}

/// Configures [`run`].
///
/// ```
/// use hatchery::{Builder, Cancelled, Nursery};
///
/// let out = Builder::new()
///     .worker_threads(1)
///     .run(|_n| async { Ok(7) });
/// assert_eq!(out.unwrap(), Some(7));
/// ```
pub struct Builder<E = Error> {
    worker_threads: Option<NonZeroUsize>,
    /// Run on a tokio runtime instead of async-executor (`tokio` feature).
    tokio: bool,
    grace_period: Duration,
    handle_signals: bool,
    exit_on_signal: bool,
    /// The error type of the root's tasks ([`Error`] unless
    /// [`error_type`](Builder::error_type) chose another).
    error: PhantomData<fn() -> E>,
}

impl<E> fmt::Debug for Builder<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("worker_threads", &self.worker_threads)
            .field("tokio", &self.tokio)
            .field("grace_period", &self.grace_period)
            .field("handle_signals", &self.handle_signals)
            .field("exit_on_signal", &self.exit_on_signal)
            .field("error", &std::any::type_name::<E>())
            .finish()
    }
}

impl<E> Clone for Builder<E> {
    fn clone(&self) -> Self {
        Builder {
            worker_threads: self.worker_threads,
            tokio: self.tokio,
            grace_period: self.grace_period,
            handle_signals: self.handle_signals,
            exit_on_signal: self.exit_on_signal,
            error: PhantomData,
        }
    }
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
            tokio: false,
            grace_period: DEFAULT_GRACE_PERIOD,
            handle_signals: true,
            exit_on_signal: true,
            error: PhantomData,
        }
    }
}

impl<E> Builder<E> {
    /// Makes the root's tasks return `E`, an error type of your choosing,
    /// instead of [`Error`] (see [`typed`](crate::typed)). Name `E` here or on
    /// the handle (`|n: Nursery<'_, E>|`).
    ///
    /// ```
    /// use hatchery::{Builder, Nursery};
    ///
    /// let out = Builder::new()
    ///     .error_type::<std::io::Error>()
    ///     .worker_threads(1)
    ///     .run(|n| async move {
    ///         n.spawn(async { Err(std::io::Error::other("no such file")) });
    ///         Ok(())
    ///     });
    /// assert_eq!(out.unwrap_err().failures()[0].error.to_string(), "no such file");
    /// ```
    pub fn error_type<E2>(self) -> Builder<E2> {
        Builder {
            worker_threads: self.worker_threads,
            tokio: self.tokio,
            grace_period: self.grace_period,
            handle_signals: self.handle_signals,
            exit_on_signal: self.exit_on_signal,
            error: PhantomData,
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
    ///     .run(|_n| async { Ok(1) });
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
    /// names the signal, so that the program can choose its own exit, and
    /// the code after `run` (and the destructors of `main`'s locals: a
    /// `BufWriter` to flush) still runs, as after trio's `KeyboardInterrupt`.
    /// It is an error even if the body returned a value after the signal
    /// (as trio's run raises once the root scope was cancelled by it); the
    /// failures of tasks are kept in it.
    ///
    /// ```
    /// use hatchery::{Builder, Cancelled, Nursery};
    /// let out = Builder::new()
    ///     .exit_on_signal(false)
    ///     .run(|_n| async { Ok(()) });
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
    /// error (with the failures the root nursery had recorded, or resumes
    /// the panic of a task it had caught). A worker thread still busy with a parallel child that never
    /// awaits is abandoned then (see [`run`]); under
    /// [`run_scoped`](Self::run_scoped), whose children may borrow, the run
    /// waits for it instead.
    ///
    /// ```
    /// use std::time::Duration;
    /// use hatchery::{Builder, CancelScope, Cancelled, Nursery, sleep};
    ///
    /// let out = Builder::new()
    ///     .grace_period(Duration::from_millis(20))
    ///     .run(|n| async move {
    ///         n.spawn(async {
    ///             // Ignores cancellation for an hour, behind a shield.
    ///             CancelScope::new().shield(true).run_typed(sleep(Duration::from_secs(3600))).await?;
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
    ///     .run(|n| async move {
    ///         n.spawn_parallel(async { Ok(()) });
    ///         Ok(())
    ///     });
    /// assert!(out.is_ok());
    /// ```
    #[track_caller]
    pub fn run<'a, T, F, Fut>(self, body: F) -> Result<Option<T>, NurseryError<E>>
    where
        F: FnOnce(Nursery<'a, E>) -> Fut,
        Fut: Future<Output = Result<T, E>> + 'a,
        E: CancelError + Send + 'a,
        T: 'a,
    {
        refuse_nesting();
        #[cfg(feature = "tokio")]
        if self.tokio {
            return self.run_on_tokio(body);
        }
        let executor: Arc<async_executor::Executor<'static>> =
            Arc::new(async_executor::Executor::new());
        let spawner: SharedSpawner = executor.clone();
        // The body closure runs inside the root too: `spawn_parallel` works
        // in its synchronous part (its children wait for the workers).
        let root = with_default(Arc::clone(&spawner), || {
            start_root(self.handle_signals, self.grace_period, body)
        });
        let crew = Arc::new(Crew::default());
        for index in 0..self.threads() {
            let (executor, crew_ref, spawner) = (
                Arc::clone(&executor),
                Arc::clone(&crew),
                Arc::clone(&spawner),
            );
            crew.hire(index);
            // Not scoped: a worker stuck in a child that never awaits must
            // not keep `run` from returning (invariant 1). Its tasks are
            // 'static: abandoned, it still borrows nothing from the caller.
            let worker = std::thread::Builder::new()
                .name(worker_name(index))
                .spawn(move || work(&executor, &crew_ref, index, Some(spawner)));
            if let Err(error) = worker {
                crew.leave(index);
                crew.stop();
                panic!("hatchery::run(): could not start worker thread {index}: {error}");
            }
        }
        self.drive(root, &crew, true, Some(spawner))
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
    /// Because children may borrow, a scoped run always waits for its worker
    /// threads, even past the grace period: one busy with a child that never
    /// awaits holds `run_scoped` until that child returns (stderr says the
    /// run is waiting for it). Only a signal can end that wait, by exiting
    /// the process.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use hatchery::{Builder, Cancelled, Nursery, ScopedExecutor};
    ///
    /// let numbers: Vec<u64> = (1..=1000).collect();
    /// let total = AtomicU64::new(0);
    /// let (numbers, total_ref) = (&numbers, &total); // borrowed, not 'static
    /// Builder::new()
    ///     .run_scoped(|n, executor: ScopedExecutor<'_>| async move {
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
    pub fn run_scoped<'env, T, F, Fut>(self, body: F) -> Result<Option<T>, NurseryError<E>>
    where
        F: FnOnce(Nursery<'env, E>, ScopedExecutor<'env>) -> Fut,
        Fut: Future<Output = Result<T, E>> + 'env,
        E: CancelError + Send + 'env,
        T: 'env,
    {
        refuse_nesting();
        #[cfg(feature = "tokio")]
        assert!(
            !self.tokio,
            "hatchery: Builder::tokio() does not apply to run_scoped, whose workers are \
             hatchery's own scoped threads (so that children may borrow from the caller); use \
             run for a tokio root, or run_scoped without tokio()"
        );
        let executor = Arc::new(async_executor::Executor::new());
        let scoped = ScopedExecutor {
            executor: Arc::clone(&executor),
        };
        let root = start_root(self.handle_signals, self.grace_period, |n| body(n, scoped));
        let crew = Crew::default();
        std::thread::scope(|scope| {
            for index in 0..self.threads() {
                let (executor, crew) = (&executor, &crew);
                crew.hire(index);
                let worker = std::thread::Builder::new()
                    .name(worker_name(index))
                    .spawn_scoped(scope, move || work(executor, crew, index, None));
                if let Err(error) = worker {
                    crew.leave(index);
                    crew.stop();
                    panic!("hatchery::run(): could not start worker thread {index}: {error}");
                }
            }
            self.drive(root, &crew, false, None)
        })
    }

    /// Makes the root a tokio runtime (the `tokio` feature): a multi-thread
    /// runtime with [`worker_threads`](Self::worker_threads) workers (one per
    /// core by default; also for one, so that parallel children never run
    /// on the thread that runs the root). tokio's
    /// net, time, fs, process and the crates built on them (hyper, reqwest,
    /// tonic…) then work anywhere inside `run`: the body and inline children
    /// run on the calling thread inside the runtime's context, and
    /// [`spawn_parallel`](Nursery::spawn_parallel) children go to tokio's
    /// workers. Signals, the grace period, the report and the exit status are
    /// those of every `run`.
    ///
    /// As in any tokio program, a parallel child that never awaits holds
    /// its worker; when every worker is held, tokio's timers and I/O stop
    /// for everyone, the body's hatchery sleeps on this root included (they
    /// are tokio's). The grace period still ends the run: its timer does
    /// not need tokio's workers. (tokio pauses the clock of a current-thread
    /// runtime only: to test with a paused clock, use
    /// `#[tokio::test(start_paused = true)]` and [`nursery`](crate::nursery).)
    ///
    /// The default root is the smol-rs stack (async-executor and async-io):
    /// choose tokio when the program uses tokio's types.
    ///
    /// [`run`](Builder::run) on such a builder panics where every `run`
    /// does (inside another `run`), and also, from tokio, on a thread that
    /// already runs a tokio runtime (inside its `block_on` or a task on one
    /// of its workers): tokio cannot start a runtime there ("Cannot start a
    /// runtime from within a runtime"). Call it from `main` instead of
    /// `#[tokio::main]`, or, inside a runtime you keep, use
    /// [`nursery`](crate::nursery) and a [`SignalGuard`](crate::SignalGuard)
    /// directly.
    ///
    /// ```
    /// # #[cfg(feature = "tokio")] {
    /// use std::time::Duration;
    /// use hatchery::Builder;
    ///
    /// let out = Builder::new().tokio().run(|n| async move {
    ///     n.spawn(async {
    ///         tokio::time::sleep(Duration::from_millis(5)).await; // tokio's timer
    ///         Ok(())
    ///     });
    ///     n.spawn_parallel(async {
    ///         let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    ///         assert!(listener.local_addr()?.port() > 0);
    ///         Ok(())
    ///     });
    ///     Ok("done")
    /// });
    /// assert_eq!(out.unwrap(), Some("done"));
    /// # }
    /// ```
    #[cfg(feature = "tokio")]
    pub fn tokio(mut self) -> Self {
        self.tokio = true;
        self
    }

    /// `run` with a tokio runtime as the root (see [`tokio`](Self::tokio)).
    #[cfg(feature = "tokio")]
    #[track_caller]
    fn run_on_tokio<'a, T, F, Fut>(self, body: F) -> Result<Option<T>, NurseryError<E>>
    where
        F: FnOnce(Nursery<'a, E>) -> Fut,
        Fut: Future<Output = Result<T, E>> + 'a,
        E: CancelError + Send + 'a,
        T: 'a,
    {
        let threads = self.threads();
        // Multi-thread also for one worker (the default on a one-core
        // machine): parallel children run on a worker thread, never on the
        // thread that runs the root, as on the default root. On a
        // current-thread runtime one that never awaits held the root, its
        // grace period and its signals for ever.
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(threads);
        // hatchery's timers (sleeps, deadlines) are tokio's on every thread
        // of this root: async-io's would each go through async-io's reactor
        // thread, at the worst moment (the shutdown, when every connection
        // arms its grace timer). The one exception is the root's grace
        // period after a cancel that no signal made (`clock::timer_at_always`),
        // which must fire with every tokio worker held: it starts that thread
        // once, at the cancel. (After a signal, the signal watcher's thread
        // times the grace period.)
        let runtime = match builder
            .enable_all()
            .thread_name_fn(|| "hatchery-worker-tokio".to_owned())
            .on_thread_start(|| {
                clock::use_tokio_timers(true);
                // A parallel child spawns its own parallel children on this
                // runtime, as on `run`'s own workers. (tokio starts its
                // threads inside the runtime's context.)
                if let Ok(handle) = tokio::runtime::Handle::try_current() {
                    crate::spawn::set_default(Arc::new(TokioRoot(handle)));
                }
            })
            .build()
        {
            Ok(runtime) => runtime,
            Err(error) => panic!("hatchery::run(): could not start the tokio runtime: {error}"),
        };
        // A worker stuck in a child that never awaits must not hold `run`:
        // the runtime is left to finish on its own (the root nursery
        // aborted its tasks when it dropped their handles), however `run`
        // ends, also by unwinding (a task's panic resumed: a blocking task
        // reading stdin held the unwinding until a line came). When the
        // process is about to exit on a signal, it is not even told: its
        // threads would spend the last moments of the program handing their
        // stacks and heaps back, which the exit does anyway.
        struct InBackground(Option<tokio::runtime::Runtime>);
        impl Drop for InBackground {
            fn drop(&mut self) {
                if let Some(runtime) = self.0.take() {
                    runtime.shutdown_background();
                }
            }
        }
        let mut runtime = InBackground(Some(runtime));
        let handle = match &runtime.0 {
            Some(runtime) => runtime.handle().clone(),
            None => unreachable!("the runtime was just built"),
        };
        let spawner: SharedSpawner = Arc::new(TokioRoot(handle.clone()));
        let in_run = InRun::enter();
        let context = handle.enter();
        let timers = TokioTimers(clock::use_tokio_timers(true));
        // The body closure runs inside the root too: tokio's types and
        // `spawn_parallel` work in its synchronous part.
        let root = with_default(Arc::clone(&spawner), || {
            start_root(self.handle_signals, self.grace_period, body)
        });
        let Root {
            future,
            shutdown,
            guard,
            scope: _,
            cancelled_at: _,
            dropped,
        } = root;
        let result = with_default(spawner, || handle.block_on(future));
        drop(timers);
        drop(context);
        drop(in_run);
        if !(self.exit_on_signal && shutdown.signal().is_some()) {
            drop(InBackground(runtime.0.take()));
        }
        {
            let (result, panic) = with_dropped(result, &dropped);
            self.finish(result, panic, shutdown, guard)
        }
    }

    fn threads(&self) -> usize {
        self.worker_threads
            .or_else(|| std::thread::available_parallelism().ok())
            .map_or(1, NonZeroUsize::get)
    }

    /// Runs the root nursery on this thread while `crew` runs parallel
    /// children; stops the crew (invariant 1), then returns or exits.
    fn drive<R, T>(
        self,
        root: Root<R, E>,
        crew: &Crew,
        can_abandon: bool,
        default_spawner: Option<SharedSpawner>,
    ) -> Result<Option<T>, NurseryError<E>>
    where
        R: Future<Output = Result<Option<T>, NurseryError<E>>>,
        E: CancelError,
    {
        let Root {
            future: root,
            shutdown,
            guard,
            scope: root_scope,
            cancelled_at,
            dropped,
        } = root;
        let with_spawner = |f: &mut dyn FnMut()| match &default_spawner {
            Some(spawner) => with_default(spawner.clone(), f),
            None => f(),
        };

        let result = {
            // Invariant 1: stop the workers however the root nursery ends.
            let _stop_workers = StopWorkers {
                crew,
                can_abandon,
                shutdown: &shutdown,
                root_scope: &root_scope,
                cancelled_at: &cancelled_at,
                grace_period: self.grace_period,
            };
            let _in_run = InRun::enter();
            let mut root = Some(root);
            let mut out = None;
            with_spawner(&mut || {
                if let Some(root) = root.take() {
                    out = Some(async_io::block_on(root));
                }
            });
            out.unwrap_or_else(|| Err(NurseryError::from(Cancelled)))
        };
        {
            let (result, panic) = with_dropped(result, &dropped);
            self.finish(result, panic, shutdown, guard)
        }
    }

    /// After the root nursery: exits after a signal, or returns what it
    /// returned (with the signal, when the run returns after one).
    fn finish<T>(
        self,
        result: Result<Option<T>, NurseryError<E>>,
        panic: Option<Payload>,
        shutdown: Arc<Shutdown>,
        guard: Option<SignalGuard>,
    ) -> Result<Option<T>, NurseryError<E>>
    where
        E: fmt::Debug,
    {
        if let (true, Some(signal)) = (self.exit_on_signal, shutdown.signal()) {
            say_failures(signal, &result);
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
        if flush_stderr(STDERR_PATIENCE) {
            crate::stderr::write_at_once_again();
        }
        // A task's panic that the forced shutdown dropped with the root is
        // resumed, as every other task panic is (but after an exit on a
        // signal, above: its message is what the panic hook printed).
        if let Some(payload) = panic
            && !(self.exit_on_signal && shutdown.signal().is_some())
        {
            // The failures would be lost with the unwinding, as a nursery
            // resuming a panic says them.
            if let Err(error) = &result {
                for failure in error.failures() {
                    say(format!(
                        "hatchery: {} failed while the run resumes a panic: {:?}\n",
                        failure.task, failure.error
                    ));
                }
                let _ = flush_stderr(STDERR_PATIENCE);
            }
            std::panic::resume_unwind(payload);
        }
        match shutdown.signal() {
            None => result,
            Some(signal) if self.exit_on_signal => {
                say_failures(signal, &result);
                exit_after(signal)
            }
            Some(signal) => Err(match result {
                Err(error) => error.with_signal(signal),
                Ok(_) => NurseryError::from(Cancelled).with_signal(signal),
            }),
        }
    }
}

/// A panic's payload.
type Payload = Box<dyn std::any::Any + Send>;

/// `result`, with the failures the root nursery left when the forced
/// shutdown dropped it (that shutdown's result carries none of its own),
/// and the panic it was still to resume.
fn with_dropped<T, E: CancelError>(
    result: Result<Option<T>, NurseryError<E>>,
    dropped: &FailureSink<E>,
) -> (Result<Option<T>, NurseryError<E>>, Option<Payload>) {
    let Dropped { failures, panic } = std::mem::take(&mut *dropped.lock().recover());
    let failures: Vec<_> = failures
        .into_iter()
        .filter(|failure| !failure.error.is_cancelled())
        .collect();
    let result = match result {
        Err(error) if !failures.is_empty() && error.failures().is_empty() => {
            Err(NurseryError::new(failures, error.is_cancelled()))
        }
        result => result,
    };
    (result, panic)
}

/// At most this many failures are written out at an exit on a signal.
const FAILURES_SAID: usize = 20;

/// Writes to stderr the failures of a run about to exit on `signal`: the
/// process exits with the signal's status, and without this the errors that
/// `run` would have returned (a task that failed before Ctrl+C, a cleanup
/// that failed after it) would go nowhere.
fn say_failures<T, E: fmt::Debug>(signal: Signal, result: &Result<T, NurseryError<E>>) {
    let Err(error) = result else {
        return;
    };
    let failures = error.failures();
    if failures.is_empty() {
        return;
    }
    let mut text = match failures.len() {
        1 => format!("hatchery: exiting on {signal}; a task had failed:"),
        n => format!("hatchery: exiting on {signal}; {n} tasks had failed:"),
    };
    for failure in failures.iter().take(FAILURES_SAID) {
        text.push_str(&format!("\n  {}: {:?}", failure.task, failure.error));
    }
    if let Some(more) = failures.len().checked_sub(FAILURES_SAID).filter(|&n| n > 0) {
        text.push_str(&format!("\n  ... and {more} more"));
    }
    text.push('\n');
    say(text);
}

/// Exits with 128 + the first signal's number, once stdout and (for a
/// bounded time) stderr have taken what was written to them.
fn exit_after(signal: Signal) -> ! {
    let _ = flush_stderr(STDERR_PATIENCE);
    // `process::exit` flushes stdout if its lock is free; a flush here would
    // wait for it, for ever if a thread holds it blocked on a pipe nobody
    // reads (one SIGTERM then never ended the process: the watcher, and its
    // wedge timer, are stopped by now).
    std::process::exit(signal.exit_code())
}

/// The executor of a [`Builder::run_scoped`] call: a [`Spawn`] whose tasks may
/// borrow anything that outlives the `run_scoped` call.
///
/// ```
/// use hatchery::{Builder, Cancelled, Nursery, ScopedExecutor};
/// let greeting = String::from("hello");
/// let greeting = &greeting;
/// Builder::new()
///     .run_scoped(|n, executor: ScopedExecutor<'_>| async move {
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

/// A root nursery, built and watched, before it is driven.
struct Root<R, E> {
    /// The root nursery, raced against the forced shutdown.
    future: R,
    shutdown: Arc<Shutdown>,
    guard: Option<SignalGuard>,
    scope: CancelHandle,
    /// When the root scope was seen cancelled: the grace period started.
    cancelled_at: Arc<Mutex<Option<Instant>>>,
    /// The failures of the root nursery if the forced shutdown dropped it.
    dropped: FailureSink<E>,
}

/// Builds the root nursery (its location is the caller's, through
/// `#[track_caller]`), with the signals and the grace period around it.
#[track_caller]
fn start_root<'a, E, T, F, Fut>(
    handle_signals: bool,
    grace_period: Duration,
    body: F,
) -> Root<impl Future<Output = Result<Option<T>, NurseryError<E>>> + 'a, E>
where
    F: FnOnce(Nursery<'a, E>) -> Fut,
    Fut: Future<Output = Result<T, E>> + 'a,
    E: CancelError + Send + 'a,
    T: 'a,
{
    let shutdown = Shutdown::new(grace_period);
    // Installed before the body closure is called: a signal from now on
    // cancels the root scope, even before the body starts.
    let mut guard = if handle_signals {
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
    let slot = std::rc::Rc::new(Cell::new(None));
    let dropped = FailureSink::default();
    let root = typed_root_nursery(
        {
            let slot = std::rc::Rc::clone(&slot);
            move |n: Nursery<'a, E>| {
                slot.set(Some(n.cancel_scope()));
                body(n)
            }
        },
        Arc::clone(&dropped),
    );
    let root_scope = slot
        .take()
        .expect("nursery() calls its body closure at once");
    match &mut guard {
        Some(guard) => guard.attach(&root_scope),
        None => shutdown.set_scope(root_scope.clone()),
    }
    // Once the root scope is cancelled, the grace period starts; when it
    // runs out (or a second signal arrives), the shutdown is forced: the
    // report is printed and the root nursery is dropped (the hard cancel).
    let cancelled_at = Arc::new(Mutex::new(None));
    let forced = {
        let (shutdown, root_scope, cancelled_at) = (
            Arc::clone(&shutdown),
            root_scope.clone(),
            Arc::clone(&cancelled_at),
        );
        async move {
            let out_of_grace = async {
                root_scope.cancelled().await;
                let now = Instant::now();
                *cancelled_at.lock().recover() = Some(now);
                shutdown.grace_started(now);
                match clock::now().checked_add(grace_period) {
                    // After a signal, the watcher's thread forces the
                    // shutdown at the same instant whatever the workers do:
                    // the runtime's own timer is enough. (On the tokio root,
                    // async-io's would start its reactor's thread in the
                    // middle of the shutdown.)
                    Some(at) if shutdown.signal().is_some() => clock::timer_at(at).await,
                    // A timer that fires even when every worker of a tokio
                    // root is stuck in a child that never awaits (nothing
                    // drives tokio's timer then).
                    Some(at) => clock::timer_at_always(at).await,
                    None => std::future::pending().await,
                }
                shutdown.force("the grace period ran out");
                // `run` waits for stderr itself before it exits.
                shutdown.forced_reported();
            };
            out_of_grace.or(shutdown.forced()).await;
            Err(NurseryError::from(Cancelled))
        }
    };
    Root {
        future: root.or(forced),
        shutdown,
        guard,
        scope: root_scope,
        cancelled_at,
        dropped,
    }
}

#[track_caller]
fn refuse_nesting() {
    if IN_RUN.get() {
        panic!(
            "hatchery::run() was called inside another hatchery::run() on the same thread; \
             open a nursery() instead (the outer run already provides the executor)"
        );
    }
}

fn worker_name(index: usize) -> String {
    format!("hatchery-worker-{index}")
}

/// A worker thread: runs the executor until the crew is told to stop.
fn work<'env>(
    executor: &async_executor::Executor<'env>,
    crew: &Crew,
    index: usize,
    spawner: Option<SharedSpawner>,
) {
    let _leave = Leave(crew, index);
    let _in_run = InRun::enter();
    let run = || async_io::block_on(executor.run(crew.stopped()));
    match spawner {
        Some(spawner) => with_default(spawner, run),
        None => run(),
    }
}

/// The spawner of the tokio root: tokio's, with every parallel child polled
/// as inside this `run` (a `run` there is refused, as on `run`'s own
/// workers). tokio's worker threads are not marked as a whole: its blocking
/// threads are started the same way, and a `run` inside a blocking closure
/// is allowed.
#[cfg(feature = "tokio")]
struct TokioRoot(tokio::runtime::Handle);

#[cfg(feature = "tokio")]
impl Spawn<'static> for TokioRoot {
    fn spawn_task(&self, task: BoxTask<'static>) -> TaskGuard<'static> {
        self.0
            .spawn_task(Box::pin(crate::spawn::Marked::new(task, mark_in_run)))
    }

    fn __tokio(&self) -> Option<crate::spawn::Tokio<'_>> {
        Some(crate::spawn::Tokio::new(&self.0, mark_in_run))
    }
}

/// Marks this thread as inside a `run` (`IN_RUN`), or not; returns what it
/// was: for the tasks of the tokio root, polled as inside this `run`.
#[cfg(feature = "tokio")]
fn mark_in_run(inside: bool) -> bool {
    IN_RUN.replace(inside)
}

/// Gives this thread back the timers it used before `run` on tokio.
#[cfg(feature = "tokio")]
struct TokioTimers(bool);

#[cfg(feature = "tokio")]
impl Drop for TokioTimers {
    fn drop(&mut self) {
        clock::use_tokio_timers(self.0);
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

/// The worker threads of a run: tells them to leave `Executor::run`, and
/// knows which ones have not left yet.
#[derive(Default)]
struct Crew {
    stopped: AtomicBool,
    event: Event,
    /// The indices of the workers still running.
    working: Mutex<Vec<usize>>,
    left: Condvar,
}

impl Crew {
    /// Counts a worker in, before its thread starts.
    fn hire(&self, index: usize) {
        self.working.lock().recover().push(index);
    }

    fn leave(&self, index: usize) {
        self.working
            .lock()
            .recover()
            .retain(|&worker| worker != index);
        self.left.notify_all();
    }

    fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        self.event.notify(usize::MAX);
    }

    async fn stopped(&self) {
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

    /// Waits until every worker has left, or until `until`; returns those
    /// still working.
    fn wait(&self, until: Option<Instant>) -> Vec<usize> {
        let mut working = self.working.lock().recover();
        while !working.is_empty() {
            working = match until {
                None => self.left.wait(working).recover(),
                Some(until) => {
                    let Some(left) = until.checked_duration_since(Instant::now()) else {
                        break;
                    };
                    match self.left.wait_timeout(working, left) {
                        Ok((guard, _)) => guard,
                        Err(poisoned) => poisoned.into_inner().0,
                    }
                }
            };
        }
        working.clone()
    }
}

/// Counts a worker out when its thread ends, however it ends.
struct Leave<'c>(&'c Crew, usize);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.leave(self.1);
    }
}

/// How long a worker has, after a forced shutdown, to come back from the
/// poll it is in. One that is between two polls stops in microseconds; one
/// still busy this long after the hard cancel is inside a child that does
/// not await.
const WORKERS_STOP_WITHIN: Duration = Duration::from_millis(100);

/// Stops the crew when the root nursery ends, and waits for it (invariant 1).
struct StopWorkers<'r> {
    crew: &'r Crew,
    can_abandon: bool,
    shutdown: &'r Shutdown,
    root_scope: &'r CancelHandle,
    cancelled_at: &'r Mutex<Option<Instant>>,
    grace_period: Duration,
}

impl StopWorkers<'_> {
    /// Until when the workers are waited for before they are abandoned.
    fn patience(&self) -> Option<Instant> {
        let now = Instant::now();
        if self.shutdown.is_forced() {
            return Some(now + WORKERS_STOP_WITHIN);
        }
        if !self.root_scope.is_cancelled() {
            // Every child ran to its end: the workers are idle.
            return None;
        }
        // What is left of the grace period (an unbounded one waits).
        self.cancelled_at
            .lock()
            .recover()
            .unwrap_or(now)
            .checked_add(self.grace_period)
            .map(|until| until.max(now + WORKERS_STOP_WITHIN))
    }
}

impl Drop for StopWorkers<'_> {
    fn drop(&mut self) {
        self.crew.stop();
        let stuck = self.crew.wait(self.patience());
        if stuck.is_empty() {
            return;
        }
        let names = stuck
            .iter()
            .map(|&index| worker_name(index))
            .collect::<Vec<_>>()
            .join(", ");
        let count = match stuck.len() {
            1 => "1 worker thread".to_owned(),
            n => format!("{n} worker threads"),
        };
        if self.can_abandon {
            // After the forced shutdown, whatever forced it (a second signal,
            // or the grace period running out).
            say(format!(
                "hatchery: {count} abandoned ({names}): still inside a parallel child that \
                 does not await, after the forced shutdown; it ends with the process\n"
            ));
        } else {
            say(format!(
                "hatchery: waiting for {count} ({names}) still inside a parallel child that \
                 does not await: run_scoped must join it, since its children may borrow from \
                 the caller\n"
            ));
            let _ = self.crew.wait(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;
    use std::sync::mpsc;

    use super::*;
    use crate::time::sleep;

    /// Spawns a parallel child that spins until `spinning` is cleared,
    /// never yielding, and returns once it is spinning.
    async fn spin_until_cleared<E: CancelError + Send + 'static>(
        n: &Nursery<'_, E>,
        spinning: Arc<AtomicBool>,
    ) -> Result<(), Cancelled> {
        let started = Arc::new(AtomicBool::new(false));
        let started_in_child = Arc::clone(&started);
        n.spawn_parallel(async move {
            started_in_child.store(true, Ordering::SeqCst);
            while spinning.load(Ordering::SeqCst) {
                std::hint::spin_loop();
            }
            Ok(())
        });
        while !started.load(Ordering::SeqCst) {
            sleep(Duration::from_millis(1)).await?;
        }
        Ok(())
    }

    /// A parallel child runs on a tokio worker: it can open a nursery and
    /// spawn parallel children there too, as it can on `run`'s own workers.
    #[cfg(feature = "tokio")]
    #[test]
    fn on_tokio_a_parallel_child_spawns_parallel_children() {
        let out = Builder::new()
            .tokio()
            .worker_threads(2)
            .handle_signals(false)
            .run(|n| async move {
                n.spawn_parallel(async {
                    crate::nursery(|inner| async move {
                        let (send, receive) = mpsc::channel();
                        inner.spawn_parallel(async move {
                            sleep(Duration::from_millis(1)).await?;
                            let _ = send.send(std::thread::current().name().map(str::to_owned));
                            Ok(())
                        });
                        Ok(receive)
                    })
                    .await?
                    .and_then(|receive| receive.recv().ok())
                    .flatten()
                    .filter(|name| name == "hatchery-worker-tokio")
                    .map(drop)
                    .ok_or_else(|| crate::Error::msg("the child did not run on a worker"))
                });
                Ok(7)
            });
        assert_eq!(out.unwrap(), Some(7));
    }

    #[test]
    fn a_worker_that_never_yields_does_not_hold_run_past_its_grace_period() {
        let spinning = Arc::new(AtomicBool::new(true));
        let (send, returned) = mpsc::channel();
        let flag = Arc::clone(&spinning);
        std::thread::spawn(move || {
            let out = Builder::new()
                .error_type::<Cancelled>()
                .handle_signals(false)
                .worker_threads(1)
                .grace_period(Duration::from_millis(100))
                .run(|n: Nursery<'_, Cancelled>| async move {
                    spin_until_cleared(&n, flag).await?;
                    n.cancel_scope().cancel();
                    Ok(())
                });
            let _ = send.send(out.map_or_else(|error| error.is_cancelled(), |out| out.is_none()));
        });
        // Far longer than the 100 ms grace period; the worker spins forever.
        let out = returned.recv_timeout(Duration::from_secs(10));
        spinning.store(false, Ordering::SeqCst);
        // Returned, and says the root was cancelled (caught, or forced).
        assert_eq!(
            out,
            Ok(true),
            "run should return once its grace period is over, abandoning the spinning worker"
        );
    }

    /// The tokio root: every worker stuck in a parallel child that never
    /// awaits (one worker, the default on a one-core machine, or all of
    /// several). Nothing of tokio can then run its timers: the run must
    /// still return once its grace period is over.
    #[cfg(feature = "tokio")]
    #[test]
    fn on_tokio_workers_that_never_yield_do_not_hold_run_past_its_grace_period() {
        use std::sync::atomic::AtomicUsize;

        for workers in [1, 2] {
            let spinning = Arc::new(AtomicBool::new(true));
            let (send, returned) = mpsc::channel();
            let flag = Arc::clone(&spinning);
            std::thread::spawn(move || {
                let out = Builder::new()
                    .error_type::<Cancelled>()
                    .tokio()
                    .handle_signals(false)
                    .worker_threads(workers)
                    .grace_period(Duration::from_millis(100))
                    .run(|n: Nursery<'_, Cancelled>| async move {
                        let started = Arc::new(AtomicUsize::new(0));
                        for _ in 0..workers {
                            let (started, flag) = (Arc::clone(&started), Arc::clone(&flag));
                            n.spawn_parallel(async move {
                                started.fetch_add(1, Ordering::SeqCst);
                                while flag.load(Ordering::SeqCst) {
                                    std::hint::spin_loop();
                                }
                                Ok(())
                            });
                        }
                        // Not a hatchery sleep: with every worker stuck,
                        // tokio's timers do not fire (nor does its I/O).
                        while started.load(Ordering::SeqCst) < workers {
                            std::thread::yield_now();
                        }
                        n.cancel_scope().cancel();
                        Ok(())
                    });
                let _ =
                    send.send(out.map_or_else(|error| error.is_cancelled(), |out| out.is_none()));
            });
            let out = returned.recv_timeout(Duration::from_secs(10));
            spinning.store(false, Ordering::SeqCst);
            assert_eq!(
                out,
                Ok(true),
                "with {workers} worker(s), all stuck: run should return once its grace period \
                 is over"
            );
        }
    }

    #[test]
    fn run_scoped_waits_for_a_worker_whose_child_borrows() {
        let spinning = AtomicBool::new(true);
        let finished = AtomicBool::new(false);
        let (spinning_ref, finished_ref) = (&spinning, &finished);
        std::thread::scope(|threads| {
            let out = Builder::new()
                .error_type::<Cancelled>()
                .handle_signals(false)
                .worker_threads(1)
                .grace_period(Duration::from_millis(50))
                .run_scoped(
                    |n: Nursery<'_, Cancelled>, executor: ScopedExecutor<'_>| async move {
                        let started = Arc::new(AtomicBool::new(false));
                        let started_in_child = Arc::clone(&started);
                        n.spawn_on(&executor, async move {
                            started_in_child.store(true, Ordering::SeqCst);
                            while spinning_ref.load(Ordering::SeqCst) {
                                std::hint::spin_loop();
                            }
                            finished_ref.store(true, Ordering::SeqCst);
                            Ok(())
                        });
                        while !started.load(Ordering::SeqCst) {
                            sleep(Duration::from_millis(1)).await?;
                        }
                        n.cancel_scope().cancel();
                        // The child borrows `spinning` and `finished`: the
                        // run must wait for it, however long it takes.
                        threads.spawn(|| {
                            std::thread::sleep(Duration::from_millis(300));
                            spinning_ref.store(false, Ordering::SeqCst);
                        });
                        Ok(())
                    },
                );
            assert!(
                out.as_ref()
                    .map_or_else(|e| e.is_cancelled(), Option::is_none),
                "{out:?}"
            );
            assert!(
                finished.load(Ordering::SeqCst),
                "run_scoped returned while a worker still ran a child that borrows"
            );
        });
    }
}
