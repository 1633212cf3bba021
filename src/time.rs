//! Time: sleeping, deadlines, and the `move_on_*` / `fail_*` scopes.
//!
//! All times are [`Instant`]s and [`Duration`]s read from one internal clock.
//! Timers come from async-io, or from tokio inside a tokio runtime (with the
//! `tokio` feature; there the clock is tokio's too, paused or not, and the
//! runtime needs its timer enabled, as for `tokio::time`); they are armed
//! only by tasks that actually wait,
//! never by a scope: entering and leaving a scope whose body does not wait
//! touches no timer.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::cancel::foreign::Parking;
use crate::cancel::scope_wait::{Wait, Woke};
use crate::cancel::{CancelScope, ScopeFuture};
use crate::checkpoint::{WaitCancelled, cancelled};
use crate::clock::{self, CANCELLED};
use crate::context;
use crate::error::{CancelError, Cancelled, Error, TimedOut};

/// Sleeps for `duration`; returns `Err(Cancelled)` early if the current scope
/// is cancelled. A zero duration still yields once, like [`checkpoint`](crate::checkpoint).
///
/// A duration too large for [`Instant`] to represent sleeps forever.
///
/// # Panics
///
/// With the `tokio` feature, when polled inside a tokio runtime built
/// without its timer (`enable_time`), with tokio's own message, as
/// `tokio::time::sleep` would; likewise every deadline of this module, and
/// a timer polled after its tokio runtime shut down.
///
/// # Examples
///
/// ```
/// use std::time::{Duration, Instant};
/// # futures::executor::block_on(async {
/// let start = Instant::now();
/// hatchery::sleep(Duration::from_millis(10)).await.unwrap();
/// assert!(start.elapsed() >= Duration::from_millis(10));
/// # });
/// ```
pub fn sleep(duration: Duration) -> Sleep {
    Sleep::new(clock::now().checked_add(duration))
}

/// Sleeps until `deadline`; returns `Err(Cancelled)` early if the current scope
/// is cancelled. A deadline in the past still yields once.
///
/// # Examples
///
/// ```
/// use std::time::{Duration, Instant};
/// # futures::executor::block_on(async {
/// let at = Instant::now() + Duration::from_millis(5);
/// hatchery::sleep_until(at).await.unwrap();
/// assert!(Instant::now() >= at);
/// # });
/// ```
pub fn sleep_until(deadline: Instant) -> Sleep {
    Sleep::new(Some(deadline))
}

/// Sleeps until the current scope is cancelled, then returns `Err(Cancelled)`.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use hatchery::{move_on_after, sleep_forever};
/// # futures::executor::block_on(async {
/// let out = move_on_after(Duration::from_millis(5), async {
///     sleep_forever().await?;
///     Ok(())
/// })
/// .await;
/// assert!(matches!(out, Ok(None)));
/// # });
/// ```
pub fn sleep_forever() -> WaitCancelled {
    cancelled()
}

/// The future of [`sleep`] and [`sleep_until`].
///
/// ```
/// let _: hatchery::Sleep = hatchery::sleep(std::time::Duration::ZERO);
/// ```
#[must_use = "futures do nothing unless awaited"]
pub struct Sleep {
    deadline: Option<Instant>,
    yielded: bool,
    wait: Wait,
    parking: Parking,
}

impl Sleep {
    fn new(deadline: Option<Instant>) -> Self {
        Sleep {
            deadline,
            yielded: false,
            wait: Wait::default(),
            parking: Parking::default(),
        }
    }
}

impl fmt::Debug for Sleep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sleep")
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl Future for Sleep {
    type Output = Result<(), Cancelled>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let woke = this
            .wait
            .poll(context::current().as_ref(), this.deadline, cx);
        this.parking.set(woke.is_pending());
        match woke {
            Poll::Ready(Woke::Cancelled) => Poll::Ready(Err(Cancelled)),
            // Even a sleep that is already over is a full checkpoint: it yields once.
            Poll::Ready(Woke::Elapsed) if !this.yielded => {
                this.yielded = true;
                cx.waker().wake_by_ref();
                context::park();
                Poll::Pending
            }
            Poll::Ready(Woke::Elapsed) => Poll::Ready(Ok(())),
            Poll::Pending => {
                this.yielded = true;
                context::park();
                Poll::Pending
            }
        }
    }
}

/// hatchery's current time: the instant its sleeps and deadlines are measured
/// against. It is [`Instant::now`], except on a thread that runs under a
/// virtual clock (`hatchery::testing::VirtualClock`, the `test-util` feature),
/// where it is the virtual time, and inside a tokio runtime (the `tokio`
/// feature), where it is tokio's clock (`tokio::time::Instant::now`, which
/// differs from the real time only while a test paused it). Compute
/// deadlines from it, not from `Instant::now`, in code that you want to
/// test under virtual or paused time. A deadline belongs to the clock it
/// was read from: checked on a thread with another clock (a plain thread
/// under a paused tokio clock), it passes at that clock's time.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use hatchery::{move_on_at, now, sleep};
///
/// # futures::executor::block_on(async {
/// let deadline = now() + Duration::from_millis(5);
/// let out = move_on_at(deadline, async {
///     sleep(Duration::from_secs(3600)).await?;
///     Ok(())
/// })
/// .await;
/// assert!(matches!(out, Ok(None)));
/// assert!(now() >= deadline);
/// # });
/// ```
pub fn now() -> Instant {
    clock::now()
}

/// The deadline that applies to the running task: the earliest deadline of the
/// current scope and its enclosing scopes up to the first shield. `None` when
/// no deadline applies; an instant in the past when the scope is already
/// cancelled.
///
/// # Examples
///
/// ```
/// use std::time::{Duration, Instant};
/// use hatchery::{current_effective_deadline, move_on_at, Cancelled};
///
/// # futures::executor::block_on(async {
/// assert_eq!(current_effective_deadline(), None);
/// let soon = Instant::now() + Duration::from_secs(10);
/// let later = soon + Duration::from_secs(10);
/// move_on_at(soon, move_on_at(later, async move {
///     assert_eq!(current_effective_deadline(), Some(soon)); // the minimum
///     Ok(())
/// }))
/// .await
/// .unwrap();
/// # });
/// ```
pub fn current_effective_deadline() -> Option<Instant> {
    let node = context::current()?;
    match node.state() {
        CANCELLED => Some(clock::from_nanos(0)),
        state => node.deadline_instant(state),
    }
}

/// [`move_on_after`] with an error type of your choosing (see
/// [`typed`](crate::typed)).
///
/// ```
/// use std::time::Duration;
/// use hatchery::{sleep, typed, Cancelled};
///
/// # futures::executor::block_on(async {
/// let out = typed::move_on_after(Duration::from_millis(5), async {
///     sleep(Duration::from_secs(3600)).await?;
///     Ok::<_, Cancelled>(())
/// })
/// .await;
/// assert!(matches!(out, Ok(None)));
/// # });
/// ```
#[track_caller]
pub fn typed_move_on_after<F, T, E>(timeout: Duration, body: F) -> ScopeFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: CancelError,
{
    CancelScope::new().timeout(timeout).run_typed(body)
}

/// [`move_on_at`] with an error type of your choosing.
///
/// ```
/// use std::time::Instant;
/// use hatchery::{checkpoint, typed, Cancelled};
///
/// # futures::executor::block_on(async {
/// let out = typed::move_on_at(Instant::now(), async {
///     checkpoint().await?;
///     Ok::<_, Cancelled>(())
/// })
/// .await;
/// assert!(matches!(out, Ok(None)));
/// # });
/// ```
#[track_caller]
pub fn typed_move_on_at<F, T, E>(deadline: Instant, body: F) -> ScopeFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: CancelError,
{
    CancelScope::new().deadline(deadline).run_typed(body)
}

/// [`fail_after`] with an error type of your choosing (it needs
/// `From<`[`TimedOut`]`>`; `std::io::Error` has it).
///
/// ```
/// use std::time::Duration;
/// use hatchery::{sleep, typed};
///
/// # futures::executor::block_on(async {
/// let out: Result<(), std::io::Error> = typed::fail_after(Duration::from_millis(5), async {
///     sleep(Duration::from_secs(3600)).await?;
///     Ok(())
/// })
/// .await;
/// assert_eq!(out.unwrap_err().kind(), std::io::ErrorKind::TimedOut);
/// # });
/// ```
#[track_caller]
pub fn typed_fail_after<F, T, E>(timeout: Duration, body: F) -> impl Future<Output = Result<T, E>>
where
    F: Future<Output = Result<T, E>>,
    E: CancelError + From<TimedOut>,
{
    fail_in(CancelScope::new().timeout(timeout), body)
}

/// [`fail_at`] with an error type of your choosing.
///
/// ```
/// use std::time::Instant;
/// use hatchery::{checkpoint, typed};
///
/// # futures::executor::block_on(async {
/// let out: Result<(), std::io::Error> = typed::fail_at(Instant::now(), async {
///     checkpoint().await?;
///     Ok(())
/// })
/// .await;
/// assert_eq!(out.unwrap_err().kind(), std::io::ErrorKind::TimedOut);
/// # });
/// ```
#[track_caller]
pub fn typed_fail_at<F, T, E>(deadline: Instant, body: F) -> impl Future<Output = Result<T, E>>
where
    F: Future<Output = Result<T, E>>,
    E: CancelError + From<TimedOut>,
{
    fail_in(CancelScope::new().deadline(deadline), body)
}

/// Runs `body` in a scope whose deadline is `timeout` after it is entered;
/// `Ok(None)` if that deadline cancelled it.
///
/// The body returns a `Result` (so that `?` unwinds a cancellation). To put
/// a deadline on a future from another crate, wrap it: `move_on_after(d,
/// async { Ok(future.await) })`; at the deadline it is dropped, as
/// `tokio::time::timeout` would.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use hatchery::{move_on_after, sleep};
///
/// # futures::executor::block_on(async {
/// let out = move_on_after(Duration::from_millis(5), async {
///     sleep(Duration::from_secs(3600)).await?;
///     Ok("woke up")
/// })
/// .await;
/// assert!(matches!(out, Ok(None)));
///
/// // Another crate's future: it cannot see the cancellation, so it is dropped.
/// let never = futures::future::pending::<u32>();
/// let out = move_on_after(Duration::from_millis(5), async { Ok(never.await) }).await;
/// assert!(matches!(out, Ok(None)));
/// # });
/// ```
#[track_caller]
pub fn move_on_after<F, T>(timeout: Duration, body: F) -> ScopeFuture<F>
where
    F: Future<Output = Result<T, Error>>,
{
    typed_move_on_after(timeout, body)
}

/// Runs `body` in a scope with an absolute deadline; `Ok(None)` if that
/// deadline cancelled it. A deadline in the past cancels at the first
/// checkpoint.
///
/// # Examples
///
/// ```
/// use std::time::Instant;
/// use hatchery::{checkpoint, move_on_at};
///
/// # futures::executor::block_on(async {
/// let out = move_on_at(Instant::now(), async {
///     checkpoint().await?;
///     Ok(())
/// })
/// .await;
/// assert!(matches!(out, Ok(None)));
/// # });
/// ```
#[track_caller]
pub fn move_on_at<F, T>(deadline: Instant, body: F) -> ScopeFuture<F>
where
    F: Future<Output = Result<T, Error>>,
{
    typed_move_on_at(deadline, body)
}

/// Runs `body` in a scope whose deadline is `timeout` after it is entered; if
/// that deadline cancels it, returns [`TimedOut`] converted into `E`.
///
/// "Cancels it" means the body ends with the `Cancelled` that the deadline
/// caused (at a checkpoint, or dropped at another crate's await): a body
/// that goes on past the deadline without a checkpoint and returns `Ok`
/// (a blocking loop, a closure that ignores its handle) returns that `Ok`,
/// as trio's `fail_after` does when its scope caught nothing.
///
/// A cancellation of an enclosing scope is not a timeout: it passes through as
/// `Cancelled`. The scope's own cancellation, by its deadline or by a
/// `cancel()` of [`current_scope`](crate::current_scope) inside the body,
/// is: whatever cancelled it, a scope that caught a cancellation ends in
/// `TimedOut` (as trio's `fail_after` raises `TooSlowError` whenever its
/// scope caught one).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use hatchery::{fail_after, sleep};
///
/// # futures::executor::block_on(async {
/// let out = fail_after(Duration::from_secs(60), async { Ok(7) }).await;
/// assert_eq!(out.unwrap(), 7);
///
/// let out = fail_after(Duration::from_millis(5), async {
///     sleep(Duration::from_secs(3600)).await?;
///     Ok(())
/// })
/// .await;
/// assert!(out.unwrap_err().downcast_ref::<hatchery::TimedOut>().is_some());
/// # });
/// ```
#[track_caller]
pub fn fail_after<F, T>(timeout: Duration, body: F) -> impl Future<Output = Result<T, Error>>
where
    F: Future<Output = Result<T, Error>>,
{
    typed_fail_after(timeout, body)
}

/// Like [`fail_after`], with an absolute deadline.
///
/// # Examples
///
/// ```
/// use std::time::Instant;
/// use hatchery::{checkpoint, fail_at};
///
/// # futures::executor::block_on(async {
/// let out = fail_at(Instant::now(), async {
///     checkpoint().await?;
///     Ok(())
/// })
/// .await;
/// assert!(out.unwrap_err().downcast_ref::<hatchery::TimedOut>().is_some());
/// # });
/// ```
#[track_caller]
pub fn fail_at<F, T>(deadline: Instant, body: F) -> impl Future<Output = Result<T, Error>>
where
    F: Future<Output = Result<T, Error>>,
{
    typed_fail_at(deadline, body)
}

/// Runs `body` in `scope`; the scope catching its own deadline is a timeout.
async fn fail_in<F, T, E>(scope: CancelScope, body: F) -> Result<T, E>
where
    F: Future<Output = Result<T, E>>,
    E: CancelError + From<TimedOut>,
{
    scope.run_typed(body).await?.ok_or_else(|| TimedOut.into())
}

/// Converts seconds given as a float (from a config file or a command line)
/// into a [`Duration`], rejecting what no timeout can mean: NaN, negative
/// values, and values too large for a `Duration` (including infinity).
///
/// For "no deadline", use a scope without one rather than an infinite timeout.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use hatchery::seconds;
///
/// assert_eq!(seconds(1.5), Ok(Duration::from_millis(1500)));
/// let err = seconds(f64::NAN).unwrap_err();
/// assert!(err.to_string().contains("NaN"));
/// assert!(seconds(-1.0).is_err());
/// assert!(seconds(f64::INFINITY).is_err());
/// ```
pub fn seconds(secs: f64) -> Result<Duration, DurationError> {
    if secs.is_nan() {
        return Err(DurationError { secs });
    }
    if secs < 0.0 {
        return Err(DurationError { secs });
    }
    Duration::try_from_secs_f64(secs).map_err(|_| DurationError { secs })
}

/// The error of [`seconds`]: a float that is not a usable duration.
///
/// ```
/// let err = hatchery::seconds(-2.0).unwrap_err();
/// assert_eq!(err.value(), -2.0);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DurationError {
    secs: f64,
}

impl DurationError {
    /// The rejected value.
    ///
    /// ```
    /// assert!(hatchery::seconds(f64::NAN).unwrap_err().value().is_nan());
    /// ```
    pub fn value(&self) -> f64 {
        self.secs
    }
}

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.secs;
        if secs.is_nan() {
            f.write_str("a duration of NaN seconds is not a duration; check the computation that produced it")
        } else if secs < 0.0 {
            write!(
                f,
                "a duration of {secs} seconds is negative; use 0 to time out at once"
            )
        } else {
            write!(
                f,
                "a duration of {secs} seconds is too large to represent; to wait without a \
                 deadline, use a scope without one (e.g. CancelScope::new())"
            )
        }
    }
}

impl StdError for DurationError {}
