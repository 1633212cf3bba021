//! Checkpoints: the places where a task lets the executor run others and
//! notices cancellation.
//!
//! [`checkpoint`] yields once then checks; [`cancelled`] waits until the
//! current scope is cancelled; [`CancellableExt::cancellable`] turns any future
//! into a checkpoint. Sleeping lives in `time.rs`.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::panic::Location;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;

use crate::cancel::foreign::{Hold, Parking};
use crate::cancel::scope_wait::Wait;
use crate::cancel::tree::{Link, Node};
use crate::clock;
use crate::context;
use crate::error::Cancelled;

/// Yields to the executor once, then returns `Err(Cancelled)` if the current
/// scope is effectively cancelled.
///
/// Put one in loops that otherwise never wait, so that they share the thread
/// and can be cancelled.
///
/// # Examples
///
/// ```
/// use hatchery::{checkpoint, CancelScope, Cancelled};
///
/// # futures::executor::block_on(async {
/// let scope = CancelScope::new();
/// let handle = scope.handle();
/// let mut turns = 0;
/// scope
///     .run(async {
///         loop {
///             turns += 1;
///             if turns == 3 {
///                 handle.cancel();
///             }
///             checkpoint().await?;
///         }
///         #[allow(unreachable_code)]
///         Ok(())
///     })
///     .await
///     .unwrap();
/// assert_eq!(turns, 3);
/// # });
/// ```
pub fn checkpoint() -> Checkpoint {
    Checkpoint { yielded: false }
}

/// The future of [`checkpoint`].
///
/// ```
/// let _: hatchery::Checkpoint = hatchery::checkpoint();
/// ```
#[derive(Debug)]
#[must_use = "a checkpoint does nothing unless awaited"]
pub struct Checkpoint {
    yielded: bool,
}

impl Future for Checkpoint {
    type Output = Result<(), Cancelled>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.yielded {
            Poll::Ready(context::check())
        } else {
            self.yielded = true;
            cx.waker().wake_by_ref();
            context::park();
            Poll::Pending
        }
    }
}

/// Waits until the current scope is cancelled, then returns `Err(Cancelled)`.
///
/// The same wait as [`sleep_forever`](crate::sleep_forever), named for what it
/// waits for: handy as one branch of a `select`. Outside any scope it never
/// resolves.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use hatchery::{cancelled, move_on_after, Cancelled};
///
/// # futures::executor::block_on(async {
/// let out = move_on_after(Duration::from_millis(5), async {
///     let Err(c) = cancelled().await;
///     Err::<(), _>(c.into())
/// })
/// .await;
/// assert!(matches!(out, Ok(None)));
/// # });
/// ```
pub fn cancelled() -> WaitCancelled {
    WaitCancelled {
        wait: Wait::default(),
        parking: Parking::default(),
    }
}

/// The future of [`cancelled`] and [`sleep_forever`](crate::sleep_forever).
///
/// ```
/// let _: hatchery::WaitCancelled = hatchery::cancelled();
/// ```
#[must_use = "futures do nothing unless awaited"]
pub struct WaitCancelled {
    wait: Wait,
    parking: Parking,
}

impl fmt::Debug for WaitCancelled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WaitCancelled").finish_non_exhaustive()
    }
}

impl Future for WaitCancelled {
    type Output = Result<Infallible, Cancelled>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let woke = this.wait.poll_current(cx);
        if woke.is_pending() {
            context::park();
        }
        this.parking.set(woke.is_pending());
        woke.map(|_| Err(Cancelled))
    }
}

/// Turns any future into a checkpoint. See [`CancellableExt::cancellable`].
///
/// ```
/// use hatchery::CancellableExt;
/// # futures::executor::block_on(async {
/// assert_eq!(async { 5 }.cancellable().await, Ok(5));
/// # });
/// ```
pub trait CancellableExt: Future + Sized {
    /// Races the future against the current scope's cancellation: resolves to
    /// `Ok(output)`, or to `Err(Cancelled)` as soon as the scope is cancelled,
    /// in which case the inner future is dropped at once.
    ///
    /// Like every checkpoint it checks first: in an already-cancelled scope the
    /// inner future is never polled. Use it to wrap futures from other crates
    /// (I/O, channels, locks) that know nothing about cancel scopes.
    ///
    /// ```
    /// use std::time::Duration;
    /// use hatchery::{move_on_after, CancellableExt, Cancelled};
    ///
    /// # futures::executor::block_on(async {
    /// let out = move_on_after(Duration::from_millis(5), async {
    ///     std::future::pending::<()>().cancellable().await?;
    ///     Ok(())
    /// })
    /// .await;
    /// assert!(matches!(out, Ok(None)));
    /// # });
    /// ```
    fn cancellable(self) -> Cancellable<Self> {
        Cancellable {
            inner: Some(self),
            wait: Wait::default(),
            parking: Parking::default(),
        }
    }

    /// Stops the future gracefully when the current scope is cancelled,
    /// instead of dropping it: `stop` is called once on the pinned future
    /// (hyper's `Connection::graceful_shutdown` is the model), and the
    /// future is then driven to its end inside a shield, for at most `grace`:
    /// hatchery's awaits inside it (a handler's `sleep`, `fail_after`) do not
    /// see the cancellation, so work in flight finishes.
    ///
    /// Resolves to `Ok(output)` when the future finished (also after it was
    /// asked to stop), or to `Err(Cancelled)` when it overran its grace
    /// period and was dropped. The future is polled once more before `stop`,
    /// so that what arrived with the cancellation (a request) is taken in.
    /// A grace too large for [`Instant`](std::time::Instant) means no limit.
    ///
    /// The future runs inside that shield from its first poll, so the
    /// cancellation reaches it only through `stop`, even one that arrives
    /// (from another thread) while it is being polled: a hatchery await in
    /// that poll does not return `Cancelled` before the stop comes. Scopes
    /// of its own inside it (a handler's `fail_after`) still cancel. Inside
    /// it, [`current_scope`](crate::current_scope) is that shield (no
    /// deadline, shielded): cancelling it cancels only what runs inside.
    /// To cancel the task's own scope from inside, take its handle before
    /// (`let scope = current_scope();` outside the future).
    ///
    /// ```
    /// use std::pin::Pin;
    /// use std::task::{Context, Poll};
    /// use std::time::Duration;
    /// use hatchery::{move_on_after, CancellableExt, Cancelled};
    ///
    /// /// Serves until asked to stop, then finishes what it was doing.
    /// struct Server { stopping: bool }
    ///
    /// impl Server {
    ///     fn graceful_shutdown(mut self: Pin<&mut Self>) {
    ///         self.stopping = true;
    ///     }
    /// }
    ///
    /// impl std::future::Future for Server {
    ///     type Output = &'static str;
    ///     fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<&'static str> {
    ///         if self.stopping { Poll::Ready("drained") } else { Poll::Pending }
    ///     }
    /// }
    ///
    /// # futures::executor::block_on(async {
    /// let out = move_on_after(Duration::from_millis(5), async {
    ///     let server = Server { stopping: false };
    ///     let how = server
    ///         .cancel_gracefully(Duration::from_secs(10), Server::graceful_shutdown)
    ///         .await?;
    ///     assert_eq!(how, "drained");
    ///     hatchery::checkpoint().await?; // the scope is still cancelled
    ///     Ok(())
    /// })
    /// .await;
    /// assert!(matches!(out, Ok(None)));
    /// # });
    /// ```
    #[track_caller]
    fn cancel_gracefully<S>(self, grace: Duration, stop: S) -> CancelGracefully<Self, S>
    where
        S: FnOnce(Pin<&mut Self>),
    {
        CancelGracefully {
            inner: Some(self),
            stop: Some(stop),
            grace,
            wait: Wait::default(),
            shield: None,
            link: None,
            deadline: None,
            location: Location::caller(),
            hold: Hold::default(),
        }
    }
}

impl<F: Future> CancellableExt for F {}

pin_project! {
    /// The future of [`CancellableExt::cancellable`].
    ///
    /// ```
    /// use hatchery::{Cancellable, CancellableExt};
    /// let _: Cancellable<_> = async {}.cancellable();
    /// ```
    #[must_use = "futures do nothing unless awaited"]
    pub struct Cancellable<F> {
        #[pin]
        inner: Option<F>,
        wait: Wait,
        parking: Parking,
    }
}

impl<F> fmt::Debug for Cancellable<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cancellable")
            .field("done", &self.inner.is_none())
            .finish_non_exhaustive()
    }
}

impl<F: Future> Future for Cancellable<F> {
    type Output = Result<F::Output, Cancelled>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if context::check().is_err() {
            this.inner.set(None);
            this.parking.set(false);
            return Poll::Ready(Err(Cancelled));
        }
        let Some(inner) = this.inner.as_mut().as_pin_mut() else {
            panic!("hatchery: a Cancellable future was polled after it completed");
        };
        if let Poll::Ready(output) = inner.poll(cx) {
            this.inner.set(None);
            this.parking.set(false);
            return Poll::Ready(Ok(output));
        }
        match this.wait.poll_current(cx) {
            Poll::Ready(_) => {
                this.inner.set(None);
                this.parking.set(false);
                Poll::Ready(Err(Cancelled))
            }
            Poll::Pending => {
                context::park();
                this.parking.set(true);
                Poll::Pending
            }
        }
    }
}

pin_project! {
    /// The future of [`CancellableExt::cancel_gracefully`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use hatchery::{CancelGracefully, CancellableExt};
    /// let _: CancelGracefully<_, _> = async {}.cancel_gracefully(Duration::from_secs(1), |_| {});
    /// ```
    #[must_use = "futures do nothing unless awaited"]
    #[project = CancelGracefullyProj]
    pub struct CancelGracefully<F, S> {
        #[pin]
        inner: Option<F>,
        // `None` once the future was asked to stop.
        stop: Option<S>,
        grace: Duration,
        wait: Wait,
        // The shield the future runs in from its first poll (moved into the
        // current-scope slot while it is polled), and, once it was asked to
        // stop, the end of the grace period (`None`: no limit).
        shield: Option<Arc<Node>>,
        // Where the shield was linked when it was entered.
        link: Option<Link>,
        deadline: Option<Deadline>,
        location: &'static Location<'static>,
        hold: Hold,
    }

    impl<F, S> PinnedDrop for CancelGracefully<F, S> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            Node::exit_owned(this.shield, this.link.take());
        }
    }
}

impl<F, S> fmt::Debug for CancelGracefully<F, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CancelGracefully")
            .field("done", &self.inner.is_none())
            .field("stopping", &self.stop.is_none())
            .field("grace", &self.grace)
            .finish_non_exhaustive()
    }
}

impl<F, S> Future for CancelGracefully<F, S>
where
    F: Future,
    S: FnOnce(Pin<&mut F>),
{
    type Output = Result<F::Output, Cancelled>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let polled = poll_gracefully(&mut this, cx);
        if polled.is_pending() {
            this.hold.pending(cx);
        } else {
            this.hold.done();
        }
        polled
    }
}

/// The end of a grace period: its instant, and a timer only once the
/// future is still pending after the stop (most stop at once: a timer made
/// and dropped for nothing is what an idle connection would cost).
enum Deadline {
    At(std::time::Instant),
    Timer(clock::Timer),
}

impl Deadline {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if let Deadline::At(at) = *self {
            *self = Deadline::Timer(clock::timer_at(at));
        }
        match self {
            Deadline::Timer(timer) => Pin::new(timer).poll(cx),
            Deadline::At(_) => unreachable!("made a timer above"),
        }
    }
}

fn poll_gracefully<F, S>(
    this: &mut CancelGracefullyProj<'_, F, S>,
    cx: &mut Context<'_>,
) -> Poll<Result<F::Output, Cancelled>>
where
    F: Future,
    S: FnOnce(Pin<&mut F>),
{
    if this.inner.is_none() {
        panic!("hatchery: a CancelGracefully future was polled after it completed");
    }
    match this.shield.as_ref() {
        // The future runs in its shield from its first poll: a
        // cancellation that arrives while it is being polled (from another
        // thread) must reach it through the stop, not as `Cancelled` from a
        // hatchery await inside it. Linked under the task's scope, so that
        // the report finds what runs inside.
        None => {
            let mut shield = Node::scope(this.location, true);
            *this.link = Node::enter_owned(&mut shield, context::current(), None);
            *this.shield = Some(shield);
        }
        // Moved to another task (or scope) since the last poll: the shield
        // follows whoever polls it, as a scope future does.
        Some(shield) => {
            if context::with_current(|current| Node::moved(this.link.as_ref(), current)) {
                Node::relink_owned(shield, this.link, context::current());
            }
        }
    }
    loop {
        let Some(mut inner) = this.inner.as_mut().as_pin_mut() else {
            unreachable!("checked above; it completes only by returning");
        };
        if this.stop.is_none() {
            // Asked to stop: driven inside its shield until it ends or
            // the grace period is over.
            let polled = context::enter(this.shield, || inner.poll(cx));
            if let Poll::Ready(output) = polled {
                this.inner.set(None);
                Node::exit_owned(this.shield, this.link.take());
                return Poll::Ready(Ok(output));
            }
            if let Some(deadline) = this.deadline
                && deadline.poll(cx).is_ready()
            {
                this.inner.set(None);
                Node::exit_owned(this.shield, this.link.take());
                return Poll::Ready(Err(Cancelled));
            }
            context::park();
            return Poll::Pending;
        }
        if context::check().is_err() {
            *this.deadline = clock::now().checked_add(*this.grace).map(Deadline::At);
            // Polled once more, shielded, before the stop, so that what
            // arrived with the cancellation (a request on a connection)
            // is taken in.
            let polled = context::enter(this.shield, || inner.as_mut().poll(cx));
            if let Poll::Ready(output) = polled {
                this.inner.set(None);
                Node::exit_owned(this.shield, this.link.take());
                return Poll::Ready(Ok(output));
            }
            if let Some(stop) = this.stop.take() {
                stop(inner.as_mut());
            }
            continue;
        }
        if let Poll::Ready(output) = context::enter(this.shield, || inner.as_mut().poll(cx)) {
            this.inner.set(None);
            Node::exit_owned(this.shield, this.link.take());
            return Poll::Ready(Ok(output));
        }
        match this.wait.poll_current(cx) {
            // Cancelled meanwhile: ask it to stop now.
            Poll::Ready(_) => continue,
            Poll::Pending => {
                context::park();
                return Poll::Pending;
            }
        }
    }
}
