//! The [`CancelScope`] builder and the [`ScopeFuture`] that runs a body
//! inside a scope: entering links the scope's node under the current one,
//! each poll makes it current, and leaving applies the catching rule.

use std::fmt;
use std::future::Future;
use std::panic::Location;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use pin_project_lite::pin_project;

use super::CancelHandle;
use super::foreign::{ForeignWait, Hold};
use super::tree::{Link, Node};
use crate::clock;
use crate::context;
use crate::error::{CancelError, Cancelled, Error};

/// A cancel scope, configured before it is entered with [`CancelScope::run`].
///
/// Scopes nest: a scope entered while another is current becomes its child, and
/// cancelling (or the deadline of) an outer scope cancels everything inside it,
/// except behind a [shield](CancelScope::shield). Inside a cancelled scope every
/// checkpoint returns [`Cancelled`]; the scope that was cancelled catches the
/// `Cancelled` when it comes out of its body, and `run` returns `Ok(None)`.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use hatchery::{CancelScope, sleep};
///
/// # futures::executor::block_on(async {
/// let scope = CancelScope::new().timeout(Duration::from_millis(10));
/// let handle = scope.handle();
/// let out = scope
///     .run(async {
///         sleep(Duration::from_secs(3600)).await?;
///         Ok("slept an hour")
///     })
///     .await;
/// assert!(matches!(out, Ok(None))); // the deadline cancelled the sleep; the scope caught it
/// assert!(handle.cancelled_caught());
/// # });
/// ```
pub struct CancelScope {
    node: Arc<Node>,
    timeout: Option<Duration>,
}

impl fmt::Debug for CancelScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CancelScope")
            .field("handle", &self.handle())
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Default for CancelScope {
    #[track_caller]
    fn default() -> Self {
        Self::new()
    }
}

impl CancelScope {
    /// A scope with no deadline and no shield.
    ///
    /// ```
    /// let scope = hatchery::CancelScope::new();
    /// assert_eq!(scope.handle().deadline(), None);
    /// ```
    #[track_caller]
    pub fn new() -> Self {
        Self::at(Location::caller())
    }

    /// `new`, reported as made at `location` (hatchery's own scopes made on
    /// behalf of a caller: the report names the caller's line).
    pub(crate) fn at(location: &'static Location<'static>) -> Self {
        CancelScope {
            node: Node::scope(location, false),
            timeout: None,
        }
    }

    /// Sets an absolute deadline. A deadline in the past is allowed: the scope
    /// is cancelled at its first checkpoint.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// let at = Instant::now() + Duration::from_secs(5);
    /// let scope = hatchery::CancelScope::new().deadline(at);
    /// assert_eq!(scope.handle().deadline(), Some(at));
    /// ```
    pub fn deadline(self, deadline: Instant) -> Self {
        self.node.set_deadline(Some(deadline));
        self
    }

    /// Sets a deadline relative to the moment the scope is **entered** (its
    /// first poll), not the moment it is built. If both a deadline and a
    /// timeout are given, the earlier of the two applies. A timeout too large
    /// for [`Instant`] to represent means no deadline.
    ///
    /// ```
    /// use std::time::Duration;
    /// use hatchery::CancelScope;
    ///
    /// # futures::executor::block_on(async {
    /// let scope = CancelScope::new().timeout(Duration::from_secs(60));
    /// let handle = scope.handle();
    /// assert_eq!(handle.deadline(), None); // not entered yet
    /// scope
    ///     .run(async move {
    ///         assert!(handle.deadline().is_some()); // fixed at entry
    ///         Ok(())
    ///     })
    ///     .await
    ///     .unwrap();
    /// # });
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Shields the scope: cancellation of enclosing scopes does not reach
    /// inside it (its own `cancel()` and deadline still do).
    ///
    /// ```
    /// let scope = hatchery::CancelScope::new().shield(true);
    /// assert!(scope.handle().is_shielded());
    /// ```
    pub fn shield(self, shield: bool) -> Self {
        self.node.set_shield(shield);
        self
    }

    /// A handle to cancel or reconfigure the scope from anywhere, before,
    /// while and after it runs.
    ///
    /// ```
    /// let scope = hatchery::CancelScope::new();
    /// let handle = scope.handle();
    /// std::thread::spawn(move || handle.cancel()).join().unwrap();
    /// assert!(scope.handle().cancel_called());
    /// ```
    pub fn handle(&self) -> CancelHandle {
        CancelHandle {
            node: Arc::clone(&self.node),
        }
    }

    /// Runs `body` inside the scope.
    ///
    /// Resolves to `Ok(Some(value))` when the body finished, `Ok(None)` when the
    /// body unwound with a cancellation that this scope caught, and `Err(e)` for
    /// any other error, including a cancellation that belongs to an enclosing
    /// scope (it passes through untouched).
    ///
    /// The body returns `Result<T, `[`Error`]`>`: `?` converts any error,
    /// nothing needs naming. For an error type of your own, see
    /// [`run_typed`](Self::run_typed).
    ///
    /// ```
    /// use std::time::Duration;
    /// use hatchery::{CancelScope, checkpoint};
    ///
    /// # futures::executor::block_on(async {
    /// let out = CancelScope::new()
    ///     .shield(true)
    ///     .timeout(Duration::from_secs(1))
    ///     .run(async {
    ///         checkpoint().await?;
    ///         let n: u32 = "42".parse()?;
    ///         Ok(n)
    ///     })
    ///     .await;
    /// assert_eq!(out.unwrap(), Some(42));
    /// # });
    /// ```
    pub fn run<F, T>(self, body: F) -> ScopeFuture<F>
    where
        F: Future<Output = Result<T, Error>>,
    {
        self.run_typed(body)
    }

    /// [`run`](Self::run) with an error type of your choosing; it carries
    /// cancellation through [`CancelError`].
    ///
    /// ```
    /// use hatchery::{CancelScope, Cancelled, checkpoint};
    ///
    /// # futures::executor::block_on(async {
    /// let out = CancelScope::new()
    ///     .run_typed(async {
    ///         checkpoint().await?;
    ///         Ok::<_, Cancelled>(42)
    ///     })
    ///     .await;
    /// assert_eq!(out.unwrap(), Some(42));
    /// # });
    /// ```
    pub fn run_typed<F, T, E>(self, body: F) -> ScopeFuture<F>
    where
        F: Future<Output = Result<T, E>>,
        E: CancelError,
    {
        ScopeFuture {
            slot: Some(self.node),
            timeout: self.timeout,
            phase: ScopePhase::Idle,
            link: None,
            foreign: ForeignWait::default(),
            hold: Hold::default(),
            body: Some(body),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ScopePhase {
    Idle,
    Entered,
    Exited,
}

pin_project! {
    /// A body running inside a [`CancelScope`]; see [`CancelScope::run`].
    ///
    /// When the scope is cancelled while the body waits in a future that is
    /// not a hatchery checkpoint (a socket read, a channel, another crate's
    /// timer), that future cannot see the cancellation: the scope drops the
    /// body at once and treats it as having returned `Cancelled`. Inside a
    /// shield that is not itself cancelled nothing is dropped.
    ///
    /// Dropping the scope future before it completes drops the body at once
    /// (the hard cancel); nothing keeps running.
    ///
    /// ```
    /// use hatchery::{CancelScope, Cancelled};
    /// let fut = CancelScope::new().run(async { Ok(1) });
    /// assert_eq!(futures::executor::block_on(fut).unwrap(), Some(1));
    /// ```
    pub struct ScopeFuture<F> {
        // `Some` except while the body is polled: the node is moved into the
        // thread-local current-scope slot for the duration of the poll.
        slot: Option<Arc<Node>>,
        timeout: Option<Duration>,
        phase: ScopePhase,
        // Where the node was linked when the scope was entered.
        link: Option<Link>,
        // How the scope waits while its body is parked in a foreign future.
        foreign: ForeignWait,
        // What the scope tells its own task's owner (`foreign::Hold`).
        hold: Hold,
        // `None` once the body was dropped for waiting in a foreign future
        // in the cancelled scope.
        #[pin]
        body: Option<F>,
    }

    impl<F> PinnedDrop for ScopeFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if *this.phase == ScopePhase::Entered {
                Node::exit_owned(this.slot, this.link.take());
            }
        }
    }
}

impl<F> fmt::Debug for ScopeFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScopeFuture")
            .field("phase", &self.phase)
            .finish_non_exhaustive()
    }
}

/// Enters `node` under the current scope, fixing a relative timeout now.
pub(crate) fn enter_node(node: &Arc<Node>, timeout: Option<Duration>) {
    let deadline = timeout.and_then(|timeout| clock::now().checked_add(timeout));
    // Clone the parent out of the thread-local first: linking wakes waiters,
    // and no waker should run while the slot is borrowed.
    node.enter(context::current().as_ref(), deadline);
}

impl<F, T, E> Future for ScopeFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: CancelError,
{
    type Output = Result<Option<T>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.phase {
            ScopePhase::Idle => {
                if let Some(node) = this.slot {
                    let deadline = this
                        .timeout
                        .and_then(|timeout| clock::now().checked_add(timeout));
                    *this.link = Node::enter_owned(node, context::current(), deadline);
                }
                *this.phase = ScopePhase::Entered;
            }
            ScopePhase::Entered => {
                // Moved to another task (or scope) since the last poll: the
                // scope follows whoever polls it.
                if let Some(node) = this.slot
                    && context::with_current(|current| Node::moved(this.link.as_ref(), current))
                {
                    Node::relink_owned(node, this.link, context::current());
                }
            }
            ScopePhase::Exited => panic!("hatchery: a ScopeFuture was polled after it completed"),
        }
        let mut body = this.body;
        let Some(future) = body.as_mut().as_pin_mut() else {
            unreachable!("the body is present until the scope exits");
        };
        let (polled, flags) = context::enter_track(this.slot, cx.waker(), || future.poll(cx));
        let Some(node) = this.slot else {
            unreachable!("the node is back in the slot after the poll");
        };
        let out = match polled {
            Poll::Ready(out) => out,
            Poll::Pending if flags.parked() => {
                if flags.stale() {
                    this.foreign.poll_stale(node, cx);
                } else {
                    context::park_in(node);
                }
                this.hold.pending(cx);
                return Poll::Pending;
            }
            // Every await is a cancellation point (`foreign`).
            Poll::Pending => {
                if this.foreign.poll(node, cx).is_pending() {
                    this.hold.pending(cx);
                    return Poll::Pending;
                }
                body.set(None);
                Err(E::from(Cancelled))
            }
        };
        this.hold.done();
        // Still `Entered` while user code (`CancelError`'s methods) runs:
        // if it panics, the drop exits the scope.
        let out = match out {
            Ok(value) => Ok(Some(value)),
            Err(error) if error.is_cancelled() && node.exit_catches() => Ok(None),
            // Failures with a cancellation among them: this scope catches
            // the cancellation, the failures go on (trio splits the group).
            Err(mut error) => {
                if error.holds_cancelled() && node.exit_catches() {
                    error.drop_cancelled();
                }
                Err(error)
            }
        };
        Node::exit_owned(this.slot, this.link.take());
        *this.phase = ScopePhase::Exited;
        Poll::Ready(out)
    }
}
