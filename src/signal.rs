//! SIGINT and SIGTERM: a graceful shutdown that escalates.
//!
//! * The first signal cancels the watched scope (the root scope of
//!   [`run`](crate::run), or a scope of yours under a [`SignalGuard`]) with
//!   [`CancelReason::Signal`], and prints one line on stderr. Every task sees
//!   `Cancelled` at its next checkpoint and cleans up.
//! * The second signal, or the grace period running out, forces the
//!   shutdown: the report of what is still running is printed, and
//!   [`run`](crate::run) drops what is left (the hard cancel; shields do not
//!   hold against it).
//! * The third signal exits the process at once, from the signal handler.
//!   So does a forced shutdown that has not finished two seconds later
//!   (a wedged executor).
//!
//! The exit status is 130 after SIGINT and 143 after SIGTERM (128 + the
//! signal number), whichever path the shutdown took.
//!
//! # How, without `unsafe`
//!
//! The handlers come from `signal-hook`: in the handler itself only atomic
//! stores, a one-byte `write` to a socket, and `_exit` happen (no lock, no
//! allocation). A watcher thread reads that socket and does the rest (cancel,
//! print, time the grace period) as ordinary code, so it works even when
//! the executor is stuck.
//!
//! # Invariants
//!
//! 1. The handlers of a guard are registered before it watches and removed
//!    when it is dropped; bytes written before the removal are read before
//!    the stop byte, so a signal that arrives just as a `run` returns is
//!    still counted.
//! 2. While no guard is active the process behaves as it did before the
//!    first guard: a signal that was at its default action terminates the
//!    process (emulated, since the handler stays installed), an ignored one
//!    stays ignored (hatchery never installs a handler for it), and a
//!    handler installed before is called as before (signal-hook chains to it).
//! 3. The shutdown is forced at most once: the report prints once.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use event_listener::Event;

use crate::cancel::{CancelHandle, CancelReason};
use crate::report::Report;

/// The default grace period of a [`SignalGuard`] and of [`run`](crate::run).
pub(crate) const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(10);

/// How long a forced shutdown may take before the process exits anyway.
const WEDGED_AFTER: Duration = Duration::from_secs(2);

/// The conventional name of a signal number.
pub(crate) fn signal_name(signal: i32) -> &'static str {
    match signal {
        2 => "SIGINT",
        15 => "SIGTERM",
        _ => "signal",
    }
}

/// What a shutdown shares between the watcher thread, `run`, and the guard.
pub(crate) struct Shutdown {
    /// The scope a signal cancels; `None` until `run` has built its root
    /// (a signal before then is applied when the scope is set).
    scope: Mutex<Option<CancelHandle>>,
    /// The first signal received (0: none).
    signal: AtomicI32,
    forced: AtomicBool,
    event: Event,
    /// Set once forced: the next signal exits from the handler, with the
    /// status of the first signal (one flag per status: 130, 143).
    exit_armed: [Arc<AtomicBool>; 2],
    grace: Mutex<Duration>,
}

impl Shutdown {
    pub(crate) fn new(scope: Option<CancelHandle>, grace: Duration) -> Arc<Self> {
        Arc::new(Shutdown {
            scope: Mutex::new(scope),
            signal: AtomicI32::new(0),
            forced: AtomicBool::new(false),
            event: Event::new(),
            exit_armed: [
                Arc::new(AtomicBool::new(false)),
                Arc::new(AtomicBool::new(false)),
            ],
            grace: Mutex::new(grace),
        })
    }

    /// The first signal received, if any.
    pub(crate) fn signal(&self) -> Option<i32> {
        match self.signal.load(Ordering::Acquire) {
            0 => None,
            signal => Some(signal),
        }
    }

    /// Sets the scope to cancel; cancels it at once if a signal came first.
    pub(crate) fn set_scope(&self, scope: CancelHandle) {
        let mut slot = self.scope.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(signal) = self.signal() {
            scope.node.cancel(CancelReason::Signal(signal));
        }
        *slot = Some(scope);
    }

    fn scope(&self) -> Option<CancelHandle> {
        self.scope.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn grace(&self) -> Duration {
        *self.grace.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Arms the handlers' exit, with the status of the first signal.
    fn arm_exit(&self) {
        let index = usize::from(self.signal() == Some(15));
        self.exit_armed[index].store(true, Ordering::SeqCst);
    }

    /// The first signal: cancel the scope, then say so once. Returns false if
    /// a signal had already been recorded.
    fn interrupt(&self, signal: i32) -> bool {
        {
            // Under the scope lock, so that `set_scope` either sees the
            // signal or is seen here.
            let scope = self.scope.lock().unwrap_or_else(|p| p.into_inner());
            if self
                .signal
                .compare_exchange(0, signal, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                return false;
            }
            if let Some(scope) = &*scope {
                scope.node.cancel(CancelReason::Signal(signal));
            }
        }
        if self.is_forced() {
            // The shutdown was forced already (its grace period ran out
            // before any signal): this signal escalates, the next one exits.
            self.arm_exit();
            return true;
        }
        let _ = writeln!(
            io::stderr(),
            "hatchery: received {}, shutting down gracefully (up to {:?}); press Ctrl+C again to force",
            signal_name(signal),
            self.grace(),
        );
        true
    }

    /// Forces the shutdown (invariant 3): prints the report once and wakes
    /// whoever drops what is left.
    pub(crate) fn force(&self, why: &str) {
        if self.forced.swap(true, Ordering::AcqRel) {
            return;
        }
        if self.signal().is_some() {
            self.arm_exit();
        }
        if let Some(scope) = self.scope() {
            let report = Report::of(&scope);
            let _ = write!(
                io::stderr(),
                "hatchery: {why}; forcing the shutdown. {report}"
            );
        }
        self.event.notify(usize::MAX);
    }

    pub(crate) fn is_forced(&self) -> bool {
        self.forced.load(Ordering::Acquire)
    }

    /// Completes once the shutdown is forced.
    pub(crate) async fn forced(&self) {
        loop {
            if self.is_forced() {
                return;
            }
            let listener = self.event.listen();
            if self.is_forced() {
                return;
            }
            listener.await;
        }
    }
}

/// Maps SIGINT and SIGTERM onto a cancel scope of yours, with the same
/// escalation as [`run`](crate::run) (see the [module docs](self)): for
/// programs that keep their own runtime (a `#[tokio::main]`, say).
///
/// The first signal cancels the scope; the second, or the grace period
/// running out, prints the report and completes [`forced`](Self::forced) —
/// race your root future against it to drop what is left; the third exits
/// the process. Dropping the guard removes its handlers.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use futures_lite::FutureExt;
/// use hatchery::{nursery, sleep_forever, CancelScope, Cancelled, Nursery, SignalGuard};
///
/// # futures::executor::block_on(async {
/// let scope = CancelScope::new();
/// let guard = SignalGuard::install(&scope.handle())?.grace_period(Duration::from_secs(5));
/// let work = scope.run(nursery(|n: Nursery<'_, Cancelled>| async move {
///     n.spawn(async { sleep_forever().await?; Ok(()) });
///     # n.cancel_scope().cancel();
///     Ok(())
/// }));
/// // Ctrl+C cancels `scope`; a second Ctrl+C drops `work`.
/// let out = async { Some(work.await) }.or(async { guard.forced().await; None }).await;
/// if let Some(code) = guard.exit_code() {
///     std::process::exit(code); // 130 after SIGINT, 143 after SIGTERM
/// }
/// # assert!(out.is_some());
/// # Ok::<(), std::io::Error>(())
/// # }).unwrap();
/// ```
pub struct SignalGuard {
    shutdown: Arc<Shutdown>,
    #[cfg(unix)]
    watcher: Option<imp::Watcher>,
}

impl std::fmt::Debug for SignalGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignalGuard")
            .field("signal", &self.shutdown.signal())
            .field("forced", &self.shutdown.is_forced())
            .finish_non_exhaustive()
    }
}

impl SignalGuard {
    /// Installs the handlers; from now on SIGINT and SIGTERM cancel `scope`.
    /// The grace period is 10 s unless set with
    /// [`grace_period`](Self::grace_period).
    ///
    /// # Errors
    ///
    /// If the handlers cannot be installed (the OS refused, or the
    /// watcher thread could not start).
    ///
    /// ```
    /// let scope = hatchery::CancelScope::new();
    /// let guard = hatchery::SignalGuard::install(&scope.handle()).unwrap();
    /// assert_eq!(guard.interrupted(), None);
    /// ```
    pub fn install(scope: &CancelHandle) -> io::Result<SignalGuard> {
        let shutdown = Shutdown::new(Some(scope.clone()), DEFAULT_GRACE_PERIOD);
        SignalGuard::watch(shutdown)
    }

    pub(crate) fn watch(shutdown: Arc<Shutdown>) -> io::Result<SignalGuard> {
        #[cfg(unix)]
        {
            let watcher = imp::Watcher::start(Arc::clone(&shutdown))?;
            Ok(SignalGuard {
                shutdown,
                watcher: Some(watcher),
            })
        }
        #[cfg(not(unix))]
        {
            Ok(SignalGuard { shutdown })
        }
    }

    /// Sets how long the graceful shutdown may take before it is forced.
    ///
    /// ```
    /// use std::time::Duration;
    /// let scope = hatchery::CancelScope::new();
    /// let guard = hatchery::SignalGuard::install(&scope.handle())
    ///     .unwrap()
    ///     .grace_period(Duration::from_secs(2));
    /// # drop(guard);
    /// ```
    pub fn grace_period(self, grace: Duration) -> Self {
        *self
            .shutdown
            .grace
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = grace;
        self
    }

    /// The first signal received (2 for SIGINT, 15 for SIGTERM), if any.
    ///
    /// ```
    /// let scope = hatchery::CancelScope::new();
    /// let guard = hatchery::SignalGuard::install(&scope.handle()).unwrap();
    /// assert_eq!(guard.interrupted(), None);
    /// ```
    pub fn interrupted(&self) -> Option<i32> {
        self.shutdown.signal()
    }

    /// The conventional exit status after the signal received: 128 + its
    /// number (130 for SIGINT, 143 for SIGTERM); `None` if none arrived.
    ///
    /// ```
    /// let scope = hatchery::CancelScope::new();
    /// let guard = hatchery::SignalGuard::install(&scope.handle()).unwrap();
    /// assert_eq!(guard.exit_code(), None);
    /// ```
    pub fn exit_code(&self) -> Option<i32> {
        self.interrupted().map(|signal| 128 + signal)
    }

    /// Completes when the shutdown is forced (a second signal, or the grace
    /// period ran out after the first): drop what is still running.
    ///
    /// ```
    /// use futures_lite::FutureExt;
    /// let scope = hatchery::CancelScope::new();
    /// let guard = hatchery::SignalGuard::install(&scope.handle()).unwrap();
    /// # futures::executor::block_on(async {
    /// let out = async { "work finished" }.or(async { guard.forced().await; "forced" }).await;
    /// assert_eq!(out, "work finished");
    /// # });
    /// ```
    pub async fn forced(&self) {
        self.shutdown.forced().await;
    }
}

impl Drop for SignalGuard {
    fn drop(&mut self) {
        #[cfg(unix)]
        if let Some(watcher) = self.watcher.take() {
            watcher.stop();
        }
    }
}

#[cfg(unix)]
mod imp {
    use std::io::{self, Read, Write};
    use std::os::unix::net::UnixStream;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::thread::JoinHandle;
    use std::time::Instant;

    use signal_hook::SigId;
    use signal_hook::consts::{SIGINT, SIGTERM};
    use signal_hook::{flag, low_level};

    use super::{Shutdown, WEDGED_AFTER, signal_name};

    /// The byte the guard writes to stop its watcher (the handlers write `X`).
    const STOP: u8 = b'S';

    /// What the process-wide state remembers across guards (invariant 2).
    struct Global {
        /// Guards currently installed.
        active: usize,
        /// Per signal: `None` if it was ignored before the first guard (it is
        /// left alone), else the flag that makes the idle handler emulate the
        /// default action (`None` inside: a handler existed, it is chained).
        watched: Vec<(i32, Option<Option<Arc<AtomicBool>>>)>,
    }

    static GLOBAL: Mutex<Option<Global>> = Mutex::new(None);

    /// How a signal was disposed of before hatchery touched it, read from
    /// `/proc/self/status` (Linux); elsewhere it is assumed to be default.
    #[derive(PartialEq)]
    enum Before {
        Default,
        Ignored,
        Caught,
    }

    fn disposition(signal: i32) -> Before {
        let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
            return Before::Default;
        };
        let mask = |field: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(field))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
                .is_some_and(|mask| mask & (1 << (signal - 1)) != 0)
        };
        if mask("SigIgn:") {
            Before::Ignored
        } else if mask("SigCgt:") {
            Before::Caught
        } else {
            Before::Default
        }
    }

    /// Registers the process-wide idle behaviour once; returns the signals
    /// a guard watches (those not ignored before the first guard).
    fn watched() -> io::Result<Vec<i32>> {
        let mut global = GLOBAL.lock().unwrap_or_else(|p| p.into_inner());
        let global = match &mut *global {
            Some(global) => global,
            none => {
                let mut watched = Vec::new();
                for signal in [SIGINT, SIGTERM] {
                    let entry = match disposition(signal) {
                        Before::Ignored => None,
                        Before::Caught => Some(None),
                        Before::Default => {
                            let idle = Arc::new(AtomicBool::new(true));
                            flag::register_conditional_default(signal, Arc::clone(&idle))?;
                            Some(Some(idle))
                        }
                    };
                    watched.push((signal, entry));
                }
                none.insert(Global { active: 0, watched })
            }
        };
        Ok(global
            .watched
            .iter()
            .filter(|(_, entry)| entry.is_some())
            .map(|(signal, _)| *signal)
            .collect())
    }

    /// Counts a guard in: the idle behaviour is off while any is active.
    fn enter() {
        let mut global = GLOBAL.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(global) = &mut *global {
            global.active += 1;
            for (_, entry) in &global.watched {
                if let Some(Some(idle)) = entry {
                    idle.store(false, Ordering::SeqCst);
                }
            }
        }
    }

    /// Counts a guard out; the last one restores the idle behaviour.
    fn leave() {
        let mut global = GLOBAL.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(global) = &mut *global {
            global.active -= 1;
            if global.active == 0 {
                for (_, entry) in &global.watched {
                    if let Some(Some(idle)) = entry {
                        idle.store(true, Ordering::SeqCst);
                    }
                }
            }
        }
    }

    pub(super) struct Watcher {
        ids: Vec<SigId>,
        /// Counted in by `enter` (undone by `unregister`).
        entered: bool,
        stop: UnixStream,
        thread: Option<JoinHandle<()>>,
    }

    impl Watcher {
        pub(super) fn start(shutdown: Arc<Shutdown>) -> io::Result<Watcher> {
            let (mut reader, writer) = UnixStream::pair()?;
            let last = Arc::new(AtomicUsize::new(0));
            let mut watcher = Watcher {
                ids: Vec::new(),
                entered: false,
                stop: writer.try_clone()?,
                thread: None,
            };
            for signal in watched()? {
                // Order matters: the exit checks run before anything else.
                // Both statuses are registered; only the first signal's is
                // armed, so a third signal exits with the first one's status.
                for (code, armed) in [
                    (130, &shutdown.exit_armed[0]),
                    (143, &shutdown.exit_armed[1]),
                ] {
                    let armed = Arc::clone(armed);
                    watcher
                        .ids
                        .push(flag::register_conditional_shutdown(signal, code, armed)?);
                }
                let value = usize::try_from(signal).unwrap_or(0);
                watcher
                    .ids
                    .push(flag::register_usize(signal, Arc::clone(&last), value)?);
                watcher
                    .ids
                    .push(low_level::pipe::register(signal, writer.try_clone()?)?);
            }
            // Only now that the handlers exist is the idle behaviour turned
            // off: no gap in which a signal does nothing (invariant 2).
            enter();
            watcher.entered = true;
            let thread = std::thread::Builder::new()
                .name("hatchery-signals".into())
                .spawn(move || watch(&mut reader, &last, &shutdown))?;
            watcher.thread = Some(thread);
            Ok(watcher)
        }

        pub(super) fn stop(mut self) {
            self.unregister();
            // Invariant 1: every signal byte is ahead of this one.
            let _ = self.stop.write_all(&[STOP]);
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }

        fn unregister(&mut self) {
            // The idle behaviour first, then the handlers: no gap.
            if std::mem::take(&mut self.entered) {
                leave();
            }
            for id in self.ids.drain(..) {
                low_level::unregister(id);
            }
        }
    }

    impl Drop for Watcher {
        fn drop(&mut self) {
            // Start failed half-way, or `stop` was not called: still clean up.
            self.unregister();
            if self.thread.is_some() {
                let _ = self.stop.write_all(&[STOP]);
            }
        }
    }

    enum Phase {
        Waiting,
        Graceful(Instant),
        Forced(Instant),
    }

    fn watch(reader: &mut UnixStream, last: &AtomicUsize, shutdown: &Shutdown) {
        let mut phase = Phase::Waiting;
        let mut received = 0u32;
        let mut buffer = [0u8; 64];
        loop {
            let timeout = match phase {
                Phase::Waiting => None,
                Phase::Graceful(at) | Phase::Forced(at) => Some(
                    at.saturating_duration_since(Instant::now())
                        .max(std::time::Duration::from_millis(1)),
                ),
            };
            if reader.set_read_timeout(timeout).is_err() {
                return;
            }
            match reader.read(&mut buffer) {
                Ok(0) => return,
                Ok(n) => {
                    for &byte in &buffer[..n] {
                        if byte == STOP {
                            return;
                        }
                        received += 1;
                        let signal = i32::try_from(last.load(Ordering::SeqCst)).unwrap_or(2);
                        match received {
                            1 => {
                                if !shutdown.interrupt(signal) || shutdown.is_forced() {
                                    // Forced already: this was the second step.
                                    received = 2;
                                    phase = Phase::Forced(Instant::now() + WEDGED_AFTER);
                                    continue;
                                }
                                // An unbounded grace period never times out.
                                phase = match Instant::now().checked_add(shutdown.grace()) {
                                    Some(at) => Phase::Graceful(at),
                                    None => Phase::Waiting,
                                };
                            }
                            2 => {
                                let why = format!("received {} again", signal_name(signal));
                                shutdown.force(&why);
                                phase = Phase::Forced(Instant::now() + WEDGED_AFTER);
                            }
                            // The handler exits on the third; in case it
                            // raced with arming, exit here.
                            _ => exit(shutdown),
                        }
                    }
                }
                Err(error)
                    if matches!(
                        error.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    match phase {
                        Phase::Waiting => {}
                        Phase::Graceful(_) => {
                            shutdown.force("the grace period ran out");
                            phase = Phase::Forced(Instant::now() + WEDGED_AFTER);
                        }
                        Phase::Forced(_) => {
                            let _ = writeln!(
                                io::stderr(),
                                "hatchery: the forced shutdown did not finish within {WEDGED_AFTER:?}; exiting"
                            );
                            exit(shutdown);
                        }
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }

    fn exit(shutdown: &Shutdown) -> ! {
        // No flush: a wedged thread may hold the stdout lock.
        low_level::exit(128 + shutdown.signal().unwrap_or(2))
    }
}
