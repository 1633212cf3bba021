//! The one clock all of hatchery's time goes through.
//!
//! Deadlines are stored in a cancel scope's atomic state as nanoseconds since a
//! process-wide epoch, so that a checkpoint can compare them with one load.
//! Encoding: `0` is reserved for "cancelled" and `u64::MAX` for "no deadline",
//! so every real instant maps into `1..u64::MAX`.
//!
//! With the `test-util` feature, a thread may run under a virtual clock
//! (`testing::VirtualClock`): `now` then reads the virtual time and `timer_at`
//! registers with that clock instead of async-io's reactor. Virtual instants
//! are ordinary [`Instant`]s (they start at the real time the clock was made
//! and only move forward), so the encoding above covers them too.
//!
//! With the `tokio` feature, time inside a tokio runtime is tokio's: `now`
//! reads tokio's clock (the real time, unless a test paused it: then what
//! tokio says, auto-advance included) and `timer_at` arms tokio's timer,
//! which the runtime drives anyway (async-io's would need a reactor thread
//! of its own, and tokio, not knowing of it, would jump its paused clock
//! past it). A thread is inside a runtime when tokio's context is there
//! (its workers and blocking threads, `block_on`, `Handle::enter`), or when
//! `run`'s tokio root marked it ([`use_tokio_timers`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::LazyLock;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// State value of a scope that is effectively cancelled.
pub(crate) const CANCELLED: u64 = 0;
/// State value of a scope with no effective deadline.
pub(crate) const NEVER: u64 = u64::MAX;
/// State value of a deadline too far away to encode (about 584 years after
/// the epoch): whoever meets it compares the instants themselves
/// (`Node::deadline_passed`). Nothing is clamped to a wrong instant.
pub(crate) const FAR: u64 = NEVER - 1;

/// Earlier than the first time hatchery reads (by up to about 12 days, less
/// on a machine that booted since): a clock that lags the real one, such as
/// tokio's when a test paused it as its runtime was built, gives instants
/// from before that first read, which must still encode as themselves.
static EPOCH: LazyLock<Instant> = LazyLock::new(|| {
    let now = Instant::now();
    let mut margin = Duration::from_secs(1 << 20);
    while !margin.is_zero() {
        if let Some(epoch) = now.checked_sub(margin) {
            return epoch;
        }
        margin /= 2;
    }
    now
});

/// The real time, with the epoch taken first, so that the instant returned
/// and every later one encode as themselves (`to_nanos` maps instants before
/// the epoch to "long past"). A virtual clock starts here: started earlier
/// than the epoch, its early deadlines would all read as passed.
pub(crate) fn real_now() -> Instant {
    let _ = *EPOCH;
    Instant::now()
}

/// The current time: the virtual time if this thread runs under a virtual
/// clock, else tokio's inside a tokio runtime (with the `tokio` feature),
/// else the real time.
pub(crate) fn now() -> Instant {
    #[cfg(feature = "test-util")]
    if let Some(now) = virtual_time::now() {
        return now;
    }
    #[cfg(feature = "tokio")]
    {
        let _ = *EPOCH;
        // The real time unless a tokio clock was paused in this process:
        // then the paused clock of the runtime this thread is in, if any.
        tokio::time::Instant::now().into_std()
    }
    #[cfg(not(feature = "tokio"))]
    real_now()
}

/// Encodes an instant; instants before the epoch all map to 1 (long past),
/// instants past the encodable range to `FAR`.
pub(crate) fn to_nanos(instant: Instant) -> u64 {
    match instant.checked_duration_since(*EPOCH) {
        Some(elapsed) => elapsed.as_nanos().clamp(1, u128::from(FAR)) as u64,
        None => 1,
    }
}

/// Decodes a finite state value back into an instant.
pub(crate) fn from_nanos(nanos: u64) -> Instant {
    *EPOCH + Duration::from_nanos(nanos)
}

/// The current time, encoded; never `FAR` (so that comparing it with an
/// encoded deadline never says a far deadline has passed: `FAR` is compared
/// as instants).
pub(crate) fn now_nanos() -> u64 {
    to_nanos(now()).min(FAR - 1)
}

#[cfg(feature = "tokio")]
thread_local! {
    static TOKIO_TIMERS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Makes this thread's real timers tokio's (or async-io's again, with
/// `false`); returns the previous choice. Only for threads inside a tokio
/// runtime whose timer is enabled: `run`'s tokio root sets it on each of
/// its threads.
#[cfg(feature = "tokio")]
pub(crate) fn use_tokio_timers(on: bool) -> bool {
    TOKIO_TIMERS.replace(on)
}

/// A timer that fires at `instant` of this thread's clock.
pub(crate) fn timer_at(instant: Instant) -> Timer {
    #[cfg(feature = "test-util")]
    if let Some(timer) = virtual_time::timer_at(instant) {
        return Timer::Virtual(timer);
    }
    #[cfg(feature = "tokio")]
    if TOKIO_TIMERS.get() {
        return Timer::Tokio(tokio_sleep(instant));
    }
    #[cfg(feature = "tokio")]
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread {
            return Timer::Both(
                tokio_sleep(instant),
                real_fallback(instant, Duration::ZERO),
                instant,
            );
        }
        return Timer::Tokio(tokio_sleep(instant));
    }
    Timer::Real(async_io::Timer::at(instant))
}

/// As [`timer_at`], but one that fires even when no thread drives tokio's
/// timer: every worker of a multi-thread runtime stuck in a task that never
/// awaits (tokio's workers drive it, the thread in `block_on` does not).
/// Inside a tokio runtime, async-io's timer backs tokio's (`Timer::Both`).
/// For the one timer that must fire then: `run`'s grace period.
pub(crate) fn timer_at_always(instant: Instant) -> Timer {
    #[cfg(feature = "tokio")]
    if virtual_time_off() && tokio::runtime::Handle::try_current().is_ok() {
        return Timer::Both(
            tokio_sleep(instant),
            real_fallback(instant, Duration::ZERO),
            instant,
        );
    }
    timer_at(instant)
}

/// No virtual clock runs on this thread.
#[cfg(feature = "tokio")]
fn virtual_time_off() -> bool {
    #[cfg(feature = "test-util")]
    return virtual_time::now().is_none();
    #[cfg(not(feature = "test-util"))]
    true
}

#[cfg(feature = "tokio")]
fn tokio_sleep(instant: Instant) -> Pin<Box<tokio::time::Sleep>> {
    Box::pin(tokio::time::sleep_until(tokio::time::Instant::from_std(
        instant,
    )))
}

/// How often `Timer::Both` looks at a tokio clock that was paused behind
/// the real one when its real-time fallback fired.
#[cfg(feature = "tokio")]
const RECHECK: Duration = Duration::from_millis(10);

/// async-io's timer for when `instant` of this thread's clock comes, if it
/// is still to come (`Timer::Both`): what is left of it on that clock,
/// counted on the real one (tokio's clock may run ahead of or behind the
/// real time after a pause), and not less than `at_least`.
#[cfg(feature = "tokio")]
fn real_fallback(instant: Instant, at_least: Duration) -> Option<async_io::Timer> {
    let left = instant.checked_duration_since(now())?;
    if left.is_zero() {
        return None;
    }
    Some(match real_now().checked_add(left.max(at_least)) {
        Some(at) => async_io::Timer::at(at),
        None => async_io::Timer::never(),
    })
}

/// A one-shot timer on the real or a virtual clock; completes once its
/// instant has passed.
pub(crate) enum Timer {
    Real(async_io::Timer),
    #[cfg(feature = "tokio")]
    Tokio(Pin<Box<tokio::time::Sleep>>),
    /// On a current-thread tokio runtime, whose timer fires only while its
    /// `block_on` runs, which need not be what polls this (a thread inside
    /// `Handle::enter`, driven by another executor): async-io's timer too,
    /// for the real instant (the third field). The timer completes when
    /// tokio's fires, or when tokio's clock reads the instant; async-io's
    /// only wakes it to read that clock (so a paused clock behind the real
    /// one is waited for), is dropped once it fired, and is not armed for an
    /// instant already past on the real clock.
    #[cfg(feature = "tokio")]
    Both(
        Pin<Box<tokio::time::Sleep>>,
        Option<async_io::Timer>,
        Instant,
    ),
    #[cfg(feature = "test-util")]
    Virtual(virtual_time::Timer),
}

impl Timer {
    /// Moves the timer to fire at `instant` instead.
    pub(crate) fn set_at(&mut self, instant: Instant) {
        match self {
            Timer::Real(timer) => timer.set_at(instant),
            #[cfg(feature = "tokio")]
            Timer::Tokio(sleep) => sleep
                .as_mut()
                .reset(tokio::time::Instant::from_std(instant)),
            #[cfg(feature = "tokio")]
            Timer::Both(sleep, real, at) => {
                *at = instant;
                sleep
                    .as_mut()
                    .reset(tokio::time::Instant::from_std(instant));
                *real = real_fallback(instant, Duration::ZERO);
            }
            #[cfg(feature = "test-util")]
            Timer::Virtual(timer) => timer.set_at(instant),
        }
    }
}

impl Future for Timer {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match self.get_mut() {
            Timer::Real(timer) => Pin::new(timer).poll(cx).map(drop),
            #[cfg(feature = "tokio")]
            Timer::Tokio(sleep) => sleep.as_mut().poll(cx),
            #[cfg(feature = "tokio")]
            Timer::Both(sleep, real, at) => {
                if sleep.as_mut().poll(cx).is_ready() || now() >= *at {
                    return Poll::Ready(());
                }
                if let Some(timer) = real
                    && Pin::new(timer).poll(cx).is_ready()
                {
                    // Fired on the real clock: tokio's may be paused behind
                    // it. Then tokio's timer, registered above, decides if
                    // the runtime is driven; if it is not, a clock resumed
                    // later must still be seen: look again, not sooner than
                    // `RECHECK` (never a spin).
                    if now() >= *at {
                        return Poll::Ready(());
                    }
                    *real = real_fallback(*at, RECHECK).map(|mut timer| {
                        let _ = Pin::new(&mut timer).poll(cx);
                        timer
                    });
                }
                Poll::Pending
            }
            #[cfg(feature = "test-util")]
            Timer::Virtual(timer) => timer.poll(cx),
        }
    }
}

/// Virtual time (the `test-util` feature).
///
/// # Invariants
///
/// 1. Virtual time never moves backwards; it moves only by `advance_to`.
/// 2. Every pending virtual timer has exactly one entry in `timers`, keyed by
///    its instant and a unique id, holding the waker of its last poll; the
///    entry goes when the timer fires, is moved, or is dropped. So the first
///    key is the next instant anything waits for.
/// 3. `advance_to` wakes every timer whose instant has come, after releasing
///    the lock (a waker may poll at once).
#[cfg(feature = "test-util")]
pub(crate) mod virtual_time {
    use crate::sync::Recover;
    use std::cell::RefCell;
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex, MutexGuard};
    use std::task::{Context, Poll, Waker};
    use std::time::Instant;

    thread_local! {
        static CURRENT: RefCell<Option<Arc<Clock>>> = const { RefCell::new(None) };
        /// This thread is inside `VirtualClock::run`, which holds it until
        /// its future is done.
        static RUNNING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    /// Runs `f` as `VirtualClock::run`'s loop (`in_run`).
    pub(crate) fn running<R>(f: impl FnOnce() -> R) -> R {
        struct Restore(bool);
        impl Drop for Restore {
            fn drop(&mut self) {
                RUNNING.with(|running| running.set(self.0));
            }
        }
        let _restore = Restore(RUNNING.with(|running| running.replace(true)));
        f()
    }

    /// Whether this thread is inside `VirtualClock::run` (`testing::run`):
    /// nothing else runs on it until that returns.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))] // asked on tokio only
    pub(crate) fn in_run() -> bool {
        RUNNING.with(std::cell::Cell::get)
    }

    pub(crate) struct Clock {
        state: Mutex<State>,
    }

    struct State {
        now: Instant,
        timers: BTreeMap<(Instant, u64), Waker>,
        next_id: u64,
    }

    impl Clock {
        pub(crate) fn new(start: Instant) -> Arc<Clock> {
            Arc::new(Clock {
                state: Mutex::new(State {
                    now: start,
                    timers: BTreeMap::new(),
                    next_id: 0,
                }),
            })
        }

        fn lock(&self) -> MutexGuard<'_, State> {
            self.state.lock().recover()
        }

        pub(crate) fn now(&self) -> Instant {
            self.lock().now
        }

        /// The earliest instant a pending timer waits for.
        pub(crate) fn next_timer(&self) -> Option<Instant> {
            self.lock().timers.keys().next().map(|&(at, _)| at)
        }

        /// Moves the time forward to `to` (never back) and wakes the timers
        /// that are due (invariants 1 and 3). Returns how many it woke.
        pub(crate) fn advance_to(&self, to: Instant) -> usize {
            let due = {
                let mut state = self.lock();
                let now = state.now.max(to);
                state.now = now;
                let later = state.timers.split_off(&(now, u64::MAX));
                std::mem::replace(&mut state.timers, later)
            };
            let woken = due.len();
            for waker in due.into_values() {
                waker.wake();
            }
            woken
        }

        /// Makes this clock the current thread's clock while `f` runs.
        pub(crate) fn enter<R>(self: &Arc<Self>, f: impl FnOnce() -> R) -> R {
            struct Restore(Option<Arc<Clock>>);
            impl Drop for Restore {
                fn drop(&mut self) {
                    let previous = self.0.take();
                    CURRENT.with(|current| *current.borrow_mut() = previous);
                }
            }
            let previous = CURRENT.with(|current| current.borrow_mut().replace(Arc::clone(self)));
            let _restore = Restore(previous);
            f()
        }
    }

    /// The current thread's clock, if it runs under one.
    pub(crate) fn current() -> Option<Arc<Clock>> {
        CURRENT.with(|current| current.borrow().clone())
    }

    pub(crate) fn now() -> Option<Instant> {
        CURRENT.with(|current| current.borrow().as_ref().map(|clock| clock.now()))
    }

    pub(crate) fn timer_at(at: Instant) -> Option<Timer> {
        current().map(|clock| Timer {
            clock,
            at,
            id: None,
        })
    }

    pub(crate) struct Timer {
        clock: Arc<Clock>,
        at: Instant,
        /// The key's id while registered (invariant 2).
        id: Option<u64>,
    }

    impl Timer {
        pub(crate) fn set_at(&mut self, at: Instant) {
            if let Some(id) = self.id.take() {
                self.clock.lock().timers.remove(&(self.at, id));
            }
            self.at = at;
        }

        pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
            let mut state = self.clock.lock();
            if state.now >= self.at {
                if let Some(id) = self.id.take() {
                    state.timers.remove(&(self.at, id));
                }
                return Poll::Ready(());
            }
            let id = *self.id.get_or_insert_with(|| {
                state.next_id += 1;
                state.next_id
            });
            match state.timers.get_mut(&(self.at, id)) {
                Some(waker) => waker.clone_from(cx.waker()),
                None => {
                    state.timers.insert((self.at, id), cx.waker().clone());
                }
            }
            Poll::Pending
        }
    }

    impl Drop for Timer {
        fn drop(&mut self) {
            if let Some(id) = self.id {
                self.clock.lock().timers.remove(&(self.at, id));
            }
        }
    }
}
