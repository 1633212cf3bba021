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
//! The exit status is 128 + the number of the *first* signal: 130 after
//! SIGINT, 143 after SIGTERM, whichever path the shutdown took and whatever
//! signals followed.
//!
//! # One owner per process
//!
//! The signals have one owner at a time: the first `run` (or `SignalGuard`)
//! that asks for them while nobody holds them. It installs hatchery's
//! handler and starts a watcher thread. A `run` or guard that starts while
//! another one owns the signals (a `run` inside `spawn_blocking`, say)
//! *defers* to it: it installs nothing, its scope is cancelled (with the
//! signal as the reason) when the owner's is, and it never escalates or
//! exits the process on its own: the owner's shutdown applies. When the
//! owner finishes, the signals go back to what they were before it, even
//! if runs that deferred to it are still going (they do not take over).
//!
//! # How
//!
//! The handler (`src/sigaction.rs`, the crate's only `unsafe` code) does
//! only what is safe in a signal handler: it sends the owner's watcher a
//! datagram naming the signal, and exits at once when an exit is armed. The
//! watcher does the rest (cancel, print, time the grace period) as ordinary
//! code, so it works even when the executor is stuck. What it prints goes
//! to a writer thread of its own: a stderr nobody reads (a full pipe)
//! blocks that thread, never the escalation, the exit or `run`'s return.
//!
//! # Invariants
//!
//! 1. The owner's handler is installed before its watcher listens and
//!    removed before it stops; a signal delivered before the removal is
//!    read before the stop message (they travel through one socket, in
//!    order), so a signal that arrives just as a `run` returns is still
//!    counted. A `run` that is about to exit after a signal stops its
//!    watcher the same way but leaves the handler installed, with the exit
//!    armed: a signal in its last moments exits with the same status.
//! 2. While no owner is active, each signal has the disposition it had
//!    before: its default action, ignored (hatchery never installs a handler
//!    for an ignored signal), or the program's handler; unless the program
//!    installed a handler of its own meanwhile, which then stays in charge.
//! 3. Each signal is credited to itself: the first one received decides the
//!    reason and the exit status; the next ones escalate.
//! 4. The shutdown is forced at most once: the report prints once.
//! 5. Nothing on the escalation path waits long for stderr: lines are
//!    queued for the writer thread (from the force on, every line hatchery
//!    writes: `stderr::write`), and whoever waits for that thread waits a
//!    bounded time: the watcher 20 ms for the first signal's line before
//!    it cancels (`LINE_PATIENCE`), and a second for the forced report
//!    before `forced()` completes (the wedge timer counts from the force);
//!    an exit, or `run` returning, a second (`STDERR_PATIENCE`).

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use event_listener::Event;
use slab::Slab;

use crate::cancel::{CancelHandle, CancelReason, Signal};
use crate::report::Report;
pub(crate) use crate::stderr::{STDERR_PATIENCE, flush_stderr, say};
use crate::sync::Recover;

/// The default grace period of a [`SignalGuard`] and of [`run`](crate::run).
pub(crate) const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(10);

/// How long a forced shutdown may take before the process exits anyway.
const WEDGED_AFTER: Duration = Duration::from_secs(2);

/// A grace period this long (a century) or longer is announced as having no
/// time limit (`Duration::MAX` read "up to 18446744073709551615.999999999s").
const UNBOUNDED: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// How long the first signal's line may take to reach stderr before the
/// cancel goes ahead without waiting for it.
const LINE_PATIENCE: Duration = Duration::from_millis(20);

const SIGINT: i32 = Signal::INT.number();
const SIGTERM: i32 = Signal::TERM.number();

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().recover()
}

/// `lock` for the locks of the hand-off between the watcher and `run`
/// (loom's under the models: `tests/loom.rs`).
fn hand_off<T>(mutex: &crate::sync::Mutex<T>) -> crate::sync::MutexGuard<'_, T> {
    mutex.lock().recover()
}

/// The conventional name of a signal number.
fn signal_name(signal: i32) -> &'static str {
    Signal::from_number(signal).name()
}

/// What a shutdown shares between the watcher thread, `run`, and the guard.
pub(crate) struct Shutdown {
    /// The scope a signal cancels; `None` until `run` has built its root
    /// (a signal before then is applied when the scope is set).
    scope: crate::sync::Mutex<Option<CancelHandle>>,
    /// The scopes of the runs and guards that deferred to this owner.
    deferred: crate::sync::Mutex<Slab<CancelHandle>>,
    /// The first signal received (0: none).
    signal: crate::sync::atomic::AtomicI32,
    forced: AtomicBool,
    /// The forced shutdown's report is out (`forced()` completes).
    reported: AtomicBool,
    event: Event,
    grace: Mutex<Duration>,
    /// When the grace period started, if before any signal (`run`'s root
    /// cancelled by a task's failure): a signal then gets what is left.
    grace_from: Mutex<Option<std::time::Instant>>,
}

impl Shutdown {
    pub(crate) fn new(grace: Duration) -> Arc<Self> {
        Arc::new(Shutdown {
            scope: crate::sync::Mutex::new(None),
            deferred: crate::sync::Mutex::new(Slab::new()),
            signal: crate::sync::atomic::AtomicI32::new(0),
            forced: AtomicBool::new(false),
            reported: AtomicBool::new(false),
            event: Event::new(),
            grace: Mutex::new(grace),
            grace_from: Mutex::new(None),
        })
    }

    /// The first signal received, if any.
    pub(crate) fn signal(&self) -> Option<Signal> {
        match self.signal.load(Ordering::Acquire) {
            0 => None,
            signal => Some(Signal::from_number(signal)),
        }
    }

    /// Sets the scope to cancel; cancels it at once if a signal came first.
    pub(crate) fn set_scope(&self, scope: CancelHandle) {
        let mut slot = hand_off(&self.scope);
        if let Some(signal) = self.signal() {
            scope.node.cancel(CancelReason::Signal(signal));
        }
        *slot = Some(scope);
    }

    /// Adds the scope of a run or guard that defers to this owner; cancels
    /// it at once if a signal came first. Returns its key for `undefer`.
    pub(crate) fn defer(&self, scope: CancelHandle) -> usize {
        let mut deferred = hand_off(&self.deferred);
        // Checked under the lock that `interrupt` takes after recording the
        // signal: either the signal is seen here, or the scope is seen there.
        if let Some(signal) = self.signal() {
            scope.node.cancel(CancelReason::Signal(signal));
        }
        deferred.insert(scope)
    }

    fn undefer(&self, key: usize) {
        hand_off(&self.deferred).try_remove(key);
    }

    fn scope(&self) -> Option<CancelHandle> {
        hand_off(&self.scope).clone()
    }

    fn grace(&self) -> Duration {
        *lock(&self.grace)
    }

    /// The grace period started at `at` (the first call counts): `run`'s
    /// root scope was cancelled, by a signal or not.
    pub(crate) fn grace_started(&self, at: std::time::Instant) {
        // A grace period that a signal started counts from that signal,
        // in its line and in the watcher (this call comes just after).
        if self.signal().is_none() {
            lock(&self.grace_from).get_or_insert(at);
        }
    }

    /// When the grace period ends, counted from when it started (or from
    /// now, for a signal that starts it); `None`: it never does.
    fn grace_end(&self) -> Option<std::time::Instant> {
        let from = (*lock(&self.grace_from)).unwrap_or_else(std::time::Instant::now);
        from.checked_add(self.grace())
    }

    /// The grace period a signal's line announces: what is left of it, to
    /// the millisecond, if it started before.
    fn grace_left(&self) -> Duration {
        let started = *lock(&self.grace_from);
        match (started, self.grace_end()) {
            (Some(_), Some(end)) => {
                let left = end.saturating_duration_since(std::time::Instant::now());
                Duration::from_millis(u64::try_from(left.as_millis()).unwrap_or(u64::MAX))
            }
            _ => self.grace(),
        }
    }

    /// Arms the handler's exit, with the status of the first signal: the
    /// next signal exits the process at once.
    pub(crate) fn arm_exit(&self) {
        #[cfg(unix)]
        if let Some(signal) = self.signal() {
            crate::sigaction::arm_exit(signal.exit_code());
        }
    }

    /// The first signal: say so once, then cancel the scopes. Returns false
    /// if a signal had already been recorded.
    fn interrupt(&self, signal: i32) -> bool {
        // Only the watcher records signals: one recorded stays.
        if self.signal().is_some() {
            return false;
        }
        if !self.is_forced() {
            let again = match signal {
                SIGINT => "press Ctrl+C again to force".to_owned(),
                other => format!("send {} again to force", signal_name(other)),
            };
            let grace = self.grace_left();
            let line = if grace.is_zero() {
                // Nothing graceful about it: the watcher forces it at once.
                format!(
                    "hatchery: received {}, shutting down (no grace period left: forcing it now)\n",
                    signal_name(signal),
                )
            } else if grace >= UNBOUNDED {
                format!(
                    "hatchery: received {}, shutting down gracefully (no time limit); {again}\n",
                    signal_name(signal),
                )
            } else {
                format!(
                    "hatchery: received {}, shutting down gracefully (up to {grace:?}); {again}\n",
                    signal_name(signal),
                )
            };
            // Out before the cancel: what the program writes as it shuts
            // down comes after this line, not before it. At once where stderr
            // cannot block (a terminal, a file); else queued, and given a
            // moment to get there.
            if !crate::stderr::write_now_if_safe(&line) {
                say(line);
                let _ = flush_stderr(LINE_PATIENCE);
            }
        }
        if !self.record(signal) {
            return false;
        }
        if self.is_forced() {
            // The shutdown was forced already (its grace period ran out
            // before any signal): this signal escalates, the next one exits.
            self.arm_exit();
        }
        true
    }

    /// The hand-off of the first signal (`interrupt`'s first half): records
    /// it and cancels the scopes set so far. Returns false if a signal had
    /// already been recorded.
    pub(crate) fn record(&self, signal: i32) -> bool {
        {
            // Under the scope lock, so that `set_scope` either sees the
            // signal or is seen here.
            let scope = hand_off(&self.scope);
            if self
                .signal
                .compare_exchange(0, signal, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                return false;
            }
            if let Some(scope) = &*scope {
                scope
                    .node
                    .cancel(CancelReason::Signal(Signal::from_number(signal)));
            }
        }
        for (_, scope) in hand_off(&self.deferred).iter() {
            scope
                .node
                .cancel(CancelReason::Signal(Signal::from_number(signal)));
        }
        true
    }

    /// Forces the shutdown (invariant 4): prints the report once and wakes
    /// whoever drops what is left.
    pub(crate) fn force(&self, why: &str) {
        if self.forced.swap(true, Ordering::AcqRel) {
            return;
        }
        // From here on nothing hatchery writes may wait on stderr.
        crate::stderr::queue_from_now_on();
        self.arm_exit();
        if let Some(scope) = self.scope() {
            let report = Report::of(&scope);
            say(format!("hatchery: {why}; forcing the shutdown. {report}"));
        }
    }

    /// The forced shutdown's report is out (or stderr did not take it in
    /// time): `forced()` completes. The watcher calls this once it waited
    /// for the report, so that a program that exits as `forced()` completes,
    /// its guard still alive, does not lose the report with the writer's
    /// thread; `run`'s own grace timer at once (`run` waits for stderr
    /// before it exits).
    pub(crate) fn forced_reported(&self) {
        self.reported.store(true, Ordering::Release);
        self.event.notify(usize::MAX);
    }

    pub(crate) fn is_forced(&self) -> bool {
        self.forced.load(Ordering::Acquire)
    }

    /// Completes once the shutdown is forced and its report is out.
    pub(crate) async fn forced(&self) {
        loop {
            if self.reported.load(Ordering::Acquire) {
                return;
            }
            let listener = self.event.listen();
            if self.reported.load(Ordering::Acquire) {
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
/// the process. Dropping the guard puts back the dispositions the signals
/// had before it, and waits (a second at most) for stderr to take the
/// lines hatchery printed: drop it before you exit.
///
/// A guard installed while a [`run`](crate::run) or another guard owns the
/// signals defers to it (see the [module docs](self#one-owner-per-process)):
/// its scope is cancelled when the owner's is, while
/// [`interrupted`](Self::interrupted) stays `None` and
/// [`forced`](Self::forced) never completes: the owner escalates, and
/// decides how the process exits.
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
/// let work = scope.run(nursery(|n| async move {
///     n.spawn(async { sleep_forever().await?; Ok(()) });
///     # n.cancel_scope().cancel();
///     Ok(())
/// }));
/// // Ctrl+C cancels `scope`; a second Ctrl+C drops `work`.
/// let out = async { Some(work.await) }.or(async { guard.forced().await; None }).await;
/// let code = guard.exit_code();
/// drop(guard);
/// if let Some(code) = code {
///     std::process::exit(code); // 130 after SIGINT, 143 after SIGTERM
/// }
/// # assert!(out.is_some());
/// # Ok::<(), std::io::Error>(())
/// # }).unwrap();
/// ```
pub struct SignalGuard {
    shutdown: Arc<Shutdown>,
    #[cfg(unix)]
    role: imp::Role,
}

impl std::fmt::Debug for SignalGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut f = f.debug_struct("SignalGuard");
        #[cfg(unix)]
        f.field("owns_signals", &matches!(self.role, imp::Role::Owner(_)));
        f.field("signal", &self.shutdown.signal())
            .field("forced", &self.shutdown.is_forced())
            .finish_non_exhaustive()
    }
}

impl SignalGuard {
    /// Installs the handlers; from now on SIGINT and SIGTERM cancel `scope`.
    /// The grace period is 10 s unless set with
    /// [`grace_period`](Self::grace_period). If a `run` or another guard
    /// owns the signals already, the guard defers to it instead (see the
    /// type's docs).
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
        let mut guard = SignalGuard::watch(Shutdown::new(DEFAULT_GRACE_PERIOD))?;
        guard.attach(scope);
        Ok(guard)
    }

    /// Takes the signals for `shutdown`, or defers to their owner. The
    /// scope comes later, with [`attach`](Self::attach).
    pub(crate) fn watch(shutdown: Arc<Shutdown>) -> io::Result<SignalGuard> {
        Ok(SignalGuard {
            #[cfg(unix)]
            role: imp::Role::start(Arc::clone(&shutdown))?,
            shutdown,
        })
    }

    /// Stops watching once every signal received so far is handled (its
    /// lines queued), but leaves the handlers installed, and the exit
    /// armed: for a process about to exit, which must not fall back to the
    /// default action in its last moments.
    pub(crate) fn stop_for_exit(self) {
        #[cfg(unix)]
        self.role.stop_for_exit();
    }

    /// Sets the scope the signals cancel.
    pub(crate) fn attach(&mut self, scope: &CancelHandle) {
        self.shutdown.set_scope(scope.clone());
        #[cfg(unix)]
        if let imp::Role::Deferred(deferral) = &mut self.role {
            deferral.attach(scope);
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
        *lock(&self.shutdown.grace) = grace;
        self
    }

    /// The first signal received, if any. Always `None` for a guard that
    /// deferred to another owner.
    ///
    /// ```
    /// let scope = hatchery::CancelScope::new();
    /// let guard = hatchery::SignalGuard::install(&scope.handle()).unwrap();
    /// assert_eq!(guard.interrupted(), None);
    /// ```
    pub fn interrupted(&self) -> Option<Signal> {
        self.shutdown.signal()
    }

    /// The conventional exit status after the first signal received: 128 +
    /// its number (130 for SIGINT, 143 for SIGTERM); `None` if none arrived.
    ///
    /// ```
    /// let scope = hatchery::CancelScope::new();
    /// let guard = hatchery::SignalGuard::install(&scope.handle()).unwrap();
    /// assert_eq!(guard.exit_code(), None);
    /// ```
    pub fn exit_code(&self) -> Option<i32> {
        self.interrupted().map(Signal::exit_code)
    }

    /// Completes when the shutdown is forced (a second signal, or the grace
    /// period ran out after the first) and its report is out on stderr
    /// (or stderr did not take it within a second): drop what is still
    /// running.
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

#[cfg(unix)]
mod imp {
    use std::io;
    use std::os::unix::net::UnixDatagram;
    use std::sync::{Arc, Mutex};
    use std::thread::JoinHandle;
    use std::time::{Duration, Instant};

    use super::{
        SIGINT, SIGTERM, STDERR_PATIENCE, Shutdown, WEDGED_AFTER, flush_stderr, lock, say,
        signal_name,
    };
    use crate::cancel::CancelHandle;
    use crate::sigaction::{self, Installed, STOP};

    /// Who owns the signals now (the module's "one owner per process").
    struct Owner {
        shutdown: Option<Arc<Shutdown>>,
        /// Tags the owner's datagrams: a late one of an earlier owner is
        /// not counted by the next (never 0: the handler's "nobody").
        generation: u8,
    }

    static OWNER: Mutex<Owner> = Mutex::new(Owner {
        shutdown: None,
        generation: 0,
    });

    pub(super) enum Role {
        /// Dropping it gives the signals back.
        Owner(Owned),
        Deferred(Deferral),
    }

    impl Role {
        pub(super) fn start(shutdown: Arc<Shutdown>) -> io::Result<Role> {
            let mut owner = lock(&OWNER);
            if let Some(active) = &owner.shutdown {
                return Ok(Role::Deferred(Deferral {
                    owner: Arc::clone(active),
                    key: None,
                }));
            }
            owner.generation = owner.generation.checked_add(1).unwrap_or(1);
            let watcher = Watcher::start(Arc::clone(&shutdown), owner.generation)?;
            owner.shutdown = Some(shutdown);
            Ok(Role::Owner(Owned(Some(watcher))))
        }

        pub(super) fn stop_for_exit(self) {
            if let Role::Owner(mut owned) = self
                && let Some(watcher) = &mut owned.0
            {
                watcher.keep_handlers = true;
            }
        }
    }

    /// The owner's watcher; dropping it gives the signals back.
    pub(super) struct Owned(Option<Watcher>);

    impl Drop for Owned {
        fn drop(&mut self) {
            // Held while the watcher stops: a run starting meanwhile waits,
            // then owns the signals, rather than deferring to one that is
            // leaving.
            let exiting = {
                let mut owner = lock(&OWNER);
                let watcher = self.0.take();
                let exiting = watcher.as_ref().is_some_and(|w| w.keep_handlers);
                drop(watcher);
                owner.shutdown = None;
                exiting
            };
            // The watcher's last lines are out before the program goes on,
            // unless nobody reads stderr. (An exit waits for them itself.)
            if !exiting && flush_stderr(STDERR_PATIENCE) {
                crate::stderr::write_at_once_again();
            }
        }
    }

    /// A run or guard that defers to the owner: its scope is cancelled with
    /// the owner's.
    pub(super) struct Deferral {
        owner: Arc<Shutdown>,
        key: Option<usize>,
    }

    impl Deferral {
        pub(super) fn attach(&mut self, scope: &CancelHandle) {
            if let Some(key) = self.key.replace(self.owner.defer(scope.clone())) {
                self.owner.undefer(key);
            }
        }
    }

    impl Drop for Deferral {
        fn drop(&mut self) {
            if let Some(key) = self.key.take() {
                self.owner.undefer(key);
            }
        }
    }

    struct Watcher {
        generation: u8,
        installed: Vec<Installed>,
        /// Leave the handlers (and the armed exit) when stopping.
        keep_handlers: bool,
        thread: Option<JoinHandle<()>>,
    }

    impl Watcher {
        fn start(shutdown: Arc<Shutdown>, generation: u8) -> io::Result<Watcher> {
            let channel = sigaction::channel()?;
            // Listening before the handlers exist: no signal falls in a gap.
            sigaction::listen(generation);
            // From here on, an early return drops the watcher, which undoes
            // what was done so far.
            let mut watcher = Watcher {
                generation,
                installed: Vec::new(),
                keep_handlers: false,
                thread: None,
            };
            for signal in [SIGINT, SIGTERM] {
                watcher.installed.extend(sigaction::install(signal)?);
            }
            let thread = std::thread::Builder::new()
                .name("hatchery-signals".into())
                .spawn(move || watch(channel, generation, &shutdown))?;
            watcher.thread = Some(thread);
            Ok(watcher)
        }
    }

    impl Drop for Watcher {
        fn drop(&mut self) {
            if self.keep_handlers {
                self.installed.drain(..).for_each(Installed::keep);
            } else {
                // Invariant 1: the handlers go first, so every datagram they
                // sent is ahead of the stop message.
                self.installed.clear();
                sigaction::stop_listening();
                sigaction::disarm_exit();
            }
            let Some(thread) = self.thread.take() else {
                return;
            };
            loop {
                match sigaction::send([STOP, self.generation]) {
                    Ok(()) => {
                        let _ = thread.join();
                        return;
                    }
                    // The watcher drains the socket: room comes.
                    Err(error)
                        if error.kind() == io::ErrorKind::WouldBlock && !thread.is_finished() =>
                    {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    // It ended, or cannot be told to: it is not waited for.
                    Err(_) => return,
                }
            }
        }
    }

    enum WatcherPhase {
        Waiting,
        Graceful(Instant),
        Forced(Instant),
    }

    fn watch(channel: &UnixDatagram, generation: u8, shutdown: &Shutdown) {
        let mut phase = WatcherPhase::Waiting;
        let mut first = None;
        loop {
            let timeout = match phase {
                WatcherPhase::Waiting => None,
                WatcherPhase::Graceful(at) | WatcherPhase::Forced(at) => Some(
                    at.saturating_duration_since(Instant::now())
                        .max(Duration::from_millis(1)),
                ),
            };
            if channel.set_read_timeout(timeout).is_err() {
                return;
            }
            let mut message = [0u8; 2];
            match channel.recv(&mut message) {
                Ok(2) if message[1] == generation => {
                    let signal = i32::from(message[0]);
                    if message[0] == STOP {
                        return;
                    }
                    if signal != SIGINT && signal != SIGTERM {
                        continue;
                    }
                    // Invariant 3: the datagram names its own signal.
                    let Some(first) = first else {
                        first = Some(signal);
                        if !shutdown.interrupt(signal) || shutdown.is_forced() {
                            // Forced already: this was the second step.
                            phase = WatcherPhase::Forced(Instant::now() + WEDGED_AFTER);
                            continue;
                        }
                        // An unbounded grace period never times out.
                        phase = match shutdown.grace_end() {
                            Some(at) => WatcherPhase::Graceful(at),
                            None => WatcherPhase::Waiting,
                        };
                        continue;
                    };
                    match phase {
                        WatcherPhase::Waiting | WatcherPhase::Graceful(_) => {
                            let why = if signal == first {
                                format!("received {} again", signal_name(signal))
                            } else {
                                format!(
                                    "received {} after {}",
                                    signal_name(signal),
                                    signal_name(first)
                                )
                            };
                            phase = WatcherPhase::Forced(force(shutdown, &why));
                        }
                        // The handler exits on the next one once the exit is
                        // armed; in case it raced with arming, exit here.
                        WatcherPhase::Forced(_) => exit(shutdown),
                    }
                }
                // An earlier owner's, or not a message of the handler's.
                Ok(_) => {}
                Err(error)
                    if matches!(
                        error.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    match phase {
                        WatcherPhase::Waiting => {}
                        WatcherPhase::Graceful(_) => {
                            phase =
                                WatcherPhase::Forced(force(shutdown, "the grace period ran out"));
                        }
                        WatcherPhase::Forced(_) => {
                            say(format!(
                                "hatchery: the forced shutdown did not finish within \
                                 {WEDGED_AFTER:?}; exiting\n"
                            ));
                            let _ = flush_stderr(STDERR_PATIENCE);
                            exit(shutdown);
                        }
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }

    /// Forces the shutdown, then waits (a second at most) for the report
    /// to be out before `forced()` completes; returns when the process
    /// exits if the forced shutdown is still not done, counted from the
    /// force, not from the wait.
    fn force(shutdown: &Shutdown, why: &str) -> Instant {
        let wedged = Instant::now() + WEDGED_AFTER;
        shutdown.force(why);
        let _ = flush_stderr(STDERR_PATIENCE);
        shutdown.forced_reported();
        wedged
    }

    fn exit(shutdown: &Shutdown) -> ! {
        // No flush of stdout: a wedged thread may hold its lock.
        sigaction::exit_now(shutdown.signal().unwrap_or(super::Signal::INT).exit_code())
    }
}
