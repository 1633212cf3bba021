//! Test utilities: virtual time and leak counters (the `test-util` feature).
//!
//! Enable the feature for your tests only:
//!
//! ```toml
//! [dev-dependencies]
//! hatchery = { version = "0.1", features = ["test-util"] }
//! ```
//!
//! [`run`] runs a future under a [`VirtualClock`] whose time stands still
//! while any task can make progress, and jumps straight to the next deadline
//! or sleep as soon as every task is waiting (trio's *autojump* clock). A test
//! of a one-hour deadline takes microseconds and gives the same result every
//! time:
//!
//! ```
//! use std::time::Duration;
//! use hatchery::{move_on_after, now, sleep, testing, Cancelled};
//!
//! let (out, took) = testing::run(async {
//!     let begin = now();
//!     let out = move_on_after(Duration::from_secs(3600), async {
//!         sleep(Duration::from_secs(86_400)).await?; // a day: cut short
//!         Ok("slept a whole day")
//!     })
//!     .await;
//!     (out, now() - begin)
//! });
//! assert!(matches!(out, Ok(None))); // the deadline cancelled it...
//! assert_eq!(took, Duration::from_secs(3600)); // ...after exactly one virtual hour
//! ```
//!
//! On the thread that runs the test, all of hatchery's time goes through
//! one clock: [`sleep`](crate::sleep), deadlines and timeouts of cancel
//! scopes, [`now`](crate::now), the report's ages. Code under test should
//! read the time with [`now`](crate::now), not [`Instant::now`], which keeps
//! reporting the real time. Parallel children and blocking closures run on
//! other threads, with the real time: a virtual deadline over them still
//! reaches them (the test's thread records it when it passes), but their
//! own sleeps are real ones, so keep the timing a test checks on the test's
//! thread.
//!
//! [`live`] counts the tasks, cancel scopes and cancellation listeners alive
//! in the process, for tests that check nothing leaked.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use crate::clock::virtual_time::Clock;
use crate::live;

/// Runs `future` to completion on the current thread under a new
/// [`VirtualClock`] that jumps ahead whenever every task is idle.
///
/// Shorthand for `VirtualClock::new().run(future)`.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use hatchery::{nursery, now, sleep, testing, Cancelled, Nursery};
///
/// let order = testing::run(async {
///     let start = now();
///     let order = std::sync::Mutex::new(Vec::new());
///     let log = &order;
///     nursery(|n| async move {
///         for secs in [30, 10, 20] {
///             n.spawn(async move {
///                 sleep(Duration::from_secs(secs)).await?;
///                 log.lock().unwrap().push((secs, now() - start));
///                 Ok(())
///             });
///         }
///         Ok(())
///     })
///     .await
///     .unwrap();
///     order.into_inner().unwrap()
/// });
/// let secs = Duration::from_secs;
/// assert_eq!(order, [(10, secs(10)), (20, secs(20)), (30, secs(30))]);
/// ```
pub fn run<F: Future>(future: F) -> F::Output {
    VirtualClock::new().run(future)
}

/// A clock whose time moves only when told to, or when every task is idle.
///
/// A virtual clock starts at the real time it was made. While
/// [`run`](VirtualClock::run) polls a future on it, hatchery's time on that
/// thread is the clock's time: sleeps and deadlines wait for it, and
/// [`now`](crate::now) reads it. Time moves forward when
/// [`advance`](VirtualClock::advance) is called, or (autojump) when the future
/// is waiting and nothing woke it within the
/// [autojump threshold](VirtualClock::autojump_threshold) of real time: the
/// clock then jumps to the earliest instant a sleep or deadline waits for.
///
/// The clock applies to the thread that runs it. Tasks handed to other
/// threads (parallel children, `spawn_blocking`) see the real time; with the
/// default threshold of zero the clock may jump while such work is still
/// running, as trio's autojump clock does: raise the threshold if a test
/// waits for real work on other threads.
///
/// A clone is a handle to the same clock.
///
/// # Examples
///
/// Moving time by hand:
///
/// ```
/// use std::time::Duration;
/// use hatchery::{sleep, testing::VirtualClock};
///
/// let clock = VirtualClock::new().autojump_threshold(Duration::MAX); // no autojump
/// let start = clock.now();
/// let ticker = clock.clone();
/// let out = clock.run(async move {
///     futures_lite::future::or(
///         async {
///             sleep(Duration::from_secs(5)).await.unwrap();
///             "the sleeper woke"
///         },
///         async {
///             for _ in 0..10 {
///                 ticker.advance(Duration::from_secs(1));
///                 hatchery::checkpoint().await.unwrap();
///             }
///             "time stood still"
///         },
///     )
///     .await
/// });
/// assert_eq!(out, "the sleeper woke");
/// assert_eq!(clock.now() - start, Duration::from_secs(5));
/// ```
#[derive(Clone)]
pub struct VirtualClock {
    clock: Arc<Clock>,
    threshold: Duration,
}

impl std::fmt::Debug for VirtualClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtualClock")
            .field("now", &self.now())
            .field("autojump_threshold", &self.threshold)
            .finish()
    }
}

impl Default for VirtualClock {
    fn default() -> Self {
        VirtualClock::new()
    }
}

impl VirtualClock {
    /// A clock starting at the current real time, jumping ahead as soon as
    /// every task is idle (a threshold of zero).
    ///
    /// ```
    /// let clock = hatchery::testing::VirtualClock::new();
    /// assert!(clock.now() <= std::time::Instant::now());
    /// ```
    pub fn new() -> Self {
        VirtualClock {
            clock: Clock::new(crate::clock::real_now()),
            threshold: Duration::ZERO,
        }
    }

    /// How long (in real time) the future must stay idle before the clock
    /// jumps to the next deadline. `Duration::MAX` turns autojump off: time
    /// then moves only through [`advance`](VirtualClock::advance).
    ///
    /// ```
    /// use std::time::Duration;
    /// use hatchery::{sleep, testing::VirtualClock};
    ///
    /// // Gives work on other threads 10 ms of real time before jumping.
    /// let clock = VirtualClock::new().autojump_threshold(Duration::from_millis(10));
    /// clock.run(async {
    ///     let from_thread = blocking::unblock(|| 42).await;
    ///     sleep(Duration::from_secs(60)).await.unwrap();
    ///     assert_eq!(from_thread, 42);
    /// });
    /// ```
    pub fn autojump_threshold(mut self, threshold: Duration) -> Self {
        self.threshold = threshold;
        self
    }

    /// The clock's current time.
    ///
    /// ```
    /// use std::time::Duration;
    /// let clock = hatchery::testing::VirtualClock::new();
    /// let start = clock.now();
    /// clock.advance(Duration::from_secs(90));
    /// assert_eq!(clock.now() - start, Duration::from_secs(90));
    /// ```
    pub fn now(&self) -> Instant {
        self.clock.now()
    }

    /// Moves the time forward by `duration` and wakes every sleep and
    /// deadline that is now due.
    ///
    /// ```
    /// use std::time::Duration;
    /// let clock = hatchery::testing::VirtualClock::new();
    /// let start = clock.now();
    /// clock.advance(Duration::from_millis(1500));
    /// assert_eq!(clock.now(), start + Duration::from_millis(1500));
    /// ```
    pub fn advance(&self, duration: Duration) {
        let now = self.clock.now();
        // Past the last instant there is: as far as it goes (every sleep
        // and deadline is due then), as trio's `jump(inf)` would.
        let mut step = duration;
        let target = loop {
            match now.checked_add(step) {
                Some(target) => break target,
                None => step /= 2,
            }
        };
        self.clock.advance_to(target);
    }

    /// Moves the time forward to `instant` (never back) and wakes every
    /// sleep and deadline that is now due.
    ///
    /// ```
    /// use std::time::Duration;
    /// let clock = hatchery::testing::VirtualClock::new();
    /// let later = clock.now() + Duration::from_secs(5);
    /// clock.advance_to(later);
    /// clock.advance_to(later - Duration::from_secs(1)); // no effect
    /// assert_eq!(clock.now(), later);
    /// ```
    pub fn advance_to(&self, instant: Instant) {
        self.clock.advance_to(instant);
    }

    /// The earliest instant a sleep or deadline on this clock waits for, if
    /// any: where an autojump would go. For driving the clock from an
    /// executor of your own (see [`enter`](VirtualClock::enter)).
    ///
    /// ```
    /// use std::time::Duration;
    /// use futures_lite::future::{self, FutureExt};
    /// use hatchery::{sleep, testing::VirtualClock};
    ///
    /// let clock = VirtualClock::new();
    /// // The sleep's deadline is read from the clock current where it is made.
    /// let mut nap = clock.enter(|| Box::pin(sleep(Duration::from_secs(30))));
    /// clock.enter(|| assert!(future::block_on(future::poll_once(&mut nap)).is_none()));
    /// assert_eq!(clock.next_deadline(), Some(clock.now() + Duration::from_secs(30)));
    /// drop(nap);
    /// assert_eq!(clock.next_deadline(), None);
    /// ```
    pub fn next_deadline(&self) -> Option<Instant> {
        self.clock.next_timer()
    }

    /// Makes this clock the current thread's clock while `f` runs, for
    /// executors of your own: futures polled inside `f` sleep and time out on
    /// this clock. [`run`](VirtualClock::run) does this for you.
    ///
    /// ```
    /// use std::time::Duration;
    /// let clock = hatchery::testing::VirtualClock::new();
    /// clock.advance(Duration::from_secs(60));
    /// assert_eq!(clock.enter(hatchery::now), clock.now());
    /// assert_ne!(hatchery::now(), clock.now()); // outside: the real time
    /// ```
    pub fn enter<R>(&self, f: impl FnOnce() -> R) -> R {
        self.clock.enter(f)
    }

    /// Runs `future` to completion on the current thread under this clock.
    ///
    /// The future is polled whenever it was woken; when it is idle, the clock
    /// jumps to the earliest pending sleep or deadline (after the autojump
    /// threshold). With nothing to jump to, the thread sleeps until something
    /// (another thread, an I/O reactor) wakes the future: a future that waits
    /// for nothing ever waits forever, as it would under any executor.
    ///
    /// ```
    /// use std::time::Duration;
    /// use hatchery::{sleep, testing::VirtualClock, typed::fail_after};
    ///
    /// let clock = VirtualClock::new();
    /// let start = clock.now();
    /// let out = clock.run(fail_after(Duration::from_secs(10), async {
    ///     sleep(Duration::from_secs(60)).await?;
    ///     Ok::<_, std::io::Error>(())
    /// }));
    /// assert_eq!(out.unwrap_err().kind(), std::io::ErrorKind::TimedOut);
    /// assert_eq!(clock.now() - start, Duration::from_secs(10));
    /// ```
    pub fn run<F: Future>(&self, future: F) -> F::Output {
        let signal = Arc::new(Woken {
            woken: AtomicBool::new(true),
            thread: thread::current(),
        });
        let waker = Waker::from(Arc::clone(&signal));
        let mut cx = Context::from_waker(&waker);
        let mut future = pin!(future);
        self.clock.enter(|| {
            crate::clock::virtual_time::running(|| {
                loop {
                    if signal.woken.swap(false, Ordering::AcqRel) {
                        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
                            return output;
                        }
                        continue;
                    }
                    // Every task is idle.
                    if self.idle_for_threshold(&signal) {
                        continue;
                    }
                    match self.clock.next_timer() {
                        Some(at) => {
                            self.clock.advance_to(at);
                        }
                        None => thread::park(),
                    }
                }
            })
        })
    }

    /// Waits up to the threshold of real time for a wake; true if one came.
    fn idle_for_threshold(&self, signal: &Woken) -> bool {
        if self.threshold.is_zero() {
            return false;
        }
        let Some(until) = Instant::now().checked_add(self.threshold) else {
            // No autojump: wait for a wake, however long.
            while !signal.woken.load(Ordering::Acquire) {
                thread::park();
            }
            return true;
        };
        loop {
            if signal.woken.load(Ordering::Acquire) {
                return true;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            thread::park_timeout(left);
        }
    }
}

/// The waker of the future `run` polls.
struct Woken {
    woken: AtomicBool,
    thread: Thread,
}

impl Wake for Woken {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.woken.swap(true, Ordering::AcqRel) {
            self.thread.unpark();
        }
    }
}

/// How many of hatchery's objects are alive in the process: see [`live`].
///
/// ```
/// let counts = hatchery::testing::live();
/// println!("{} tasks, {} scopes, {} listeners", counts.tasks, counts.scopes, counts.listeners);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Live {
    /// Child tasks (of every nursery, parallel ones included) whose future
    /// has not been dropped yet.
    pub tasks: usize,
    /// Cancel scopes and nurseries whose state has not been freed yet
    /// (a [`CancelHandle`](crate::CancelHandle) keeps its scope's alive).
    pub scopes: usize,
    /// Waiters registered for a scope's cancellation: each nursery holds one
    /// for its own scope (its body and children waiting on that scope rely on
    /// it), and so does each other task waiting (sleeps, `cancelled()`) in a
    /// scope of its own or on another executor.
    pub listeners: usize,
}

/// Counts the tasks, cancel scopes and listeners alive in the whole process.
///
/// The counts are process-wide: compare them when nothing else runs (for
/// instance at the end of a test that has its test binary to itself, or
/// under a lock shared by the tests that count).
///
/// # Examples
///
/// ```
/// use hatchery::{nursery, sleep_forever, testing, Cancelled, Nursery};
///
/// let before = testing::live();
/// testing::run(async {
///     nursery(|n| async move {
///         n.spawn(async {
///             sleep_forever().await?;
///             Ok(())
///         });
///         n.cancel_scope().cancel();
///         Ok(())
///     })
///     .await
///     .unwrap();
/// });
/// assert_eq!(testing::live(), before); // nothing leaked
/// ```
pub fn live() -> Live {
    Live {
        tasks: live::count(live::TASKS),
        scopes: live::count(live::SCOPES),
        listeners: live::count(live::LISTENERS),
    }
}
