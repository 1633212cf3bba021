//! The [`CancelHandle`]: a cloneable, `Send + Sync` handle to a scope, to
//! cancel it, move its deadline, toggle its shield or ask what happened to
//! it from any task or thread; and the free functions that look at the
//! current scope.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::reason::CancelReason;
use super::scope_wait::Wait;
use super::tree::Node;
use crate::clock;
use crate::context;
use crate::error::Cancelled;

/// A cloneable, `Send + Sync` handle to a cancel scope: cancel it, move its
/// deadline, toggle its shield, or ask what happened to it, from any task or
/// thread.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use hatchery::{nursery, sleep, CancelScope, Cancelled, Nursery};
///
/// # futures::executor::block_on(async {
/// let scope = CancelScope::new();
/// let handle = scope.handle();
/// nursery(|n| async move {
///     n.spawn(async move {
///         scope.run_typed(sleep(Duration::from_secs(3600))).await?;
///         Ok(())
///     });
///     n.spawn(async move {
///         sleep(Duration::from_millis(5)).await?;
///         handle.cancel(); // wakes the hour-long sleep
///         Ok(())
///     });
///     Ok(())
/// })
/// .await
/// .unwrap();
/// # });
/// ```
#[derive(Clone)]
pub struct CancelHandle {
    pub(crate) node: Arc<Node>,
}

/// Two handles are equal when they are handles to the same scope (a
/// registry of handles can find and remove one).
///
/// ```
/// use hatchery::CancelScope;
/// let (a, b) = (CancelScope::new(), CancelScope::new());
/// assert_eq!(a.handle(), a.handle());
/// assert_ne!(a.handle(), b.handle());
/// let set: std::collections::HashSet<_> = [a.handle(), a.handle(), b.handle()].into();
/// assert_eq!(set.len(), 2);
/// ```
impl PartialEq for CancelHandle {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.node, &other.node)
    }
}

impl Eq for CancelHandle {}

impl std::hash::Hash for CancelHandle {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        std::ptr::hash(Arc::as_ptr(&self.node), state);
    }
}

impl fmt::Debug for CancelHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Copy out first: never hold the node lock while user code formats.
        let (cancel_called, reason, deadline, shield, cancelled_caught) = {
            let inner = self.node.lock();
            let reason = inner.reason.clone();
            (
                inner.cancel_called,
                reason,
                inner.deadline,
                inner.shield,
                inner.cancelled_caught,
            )
        };
        f.debug_struct("CancelHandle")
            .field("cancel_called", &cancel_called)
            .field("reason", &reason)
            .field("deadline", &deadline)
            .field("shield", &shield)
            .field("cancelled_caught", &cancelled_caught)
            .finish()
    }
}

impl CancelHandle {
    pub(crate) fn from_node(node: Arc<Node>) -> Self {
        CancelHandle { node }
    }

    /// Cancels the scope. Idempotent; the first [`CancelReason`] recorded wins.
    /// Every task inside the scope gets [`Cancelled`] at its next checkpoint,
    /// and tasks sleeping inside it wake up.
    ///
    /// ```
    /// let handle = hatchery::CancelScope::new().handle();
    /// handle.cancel();
    /// handle.cancel();
    /// assert!(handle.cancel_called());
    /// ```
    pub fn cancel(&self) {
        self.node.cancel(CancelReason::Explicit);
    }

    /// Cancels the scope, recording why (trio's `cancel(reason=…)`): the
    /// text is what [`reason`](Self::reason) and the shutdown report show.
    /// Like [`cancel`](Self::cancel), the first reason recorded wins.
    ///
    /// ```
    /// use hatchery::{CancelReason, CancelScope};
    ///
    /// let handle = CancelScope::new().handle();
    /// handle.cancel_with_reason("the configuration was reloaded");
    /// handle.cancel_with_reason("too late: the first reason wins");
    /// assert_eq!(
    ///     handle.reason(),
    ///     Some(CancelReason::Message("the configuration was reloaded".into()))
    /// );
    /// assert_eq!(handle.reason().unwrap().to_string(), "the configuration was reloaded");
    /// ```
    pub fn cancel_with_reason(&self, reason: impl Into<Cow<'static, str>>) {
        self.node.cancel(CancelReason::Message(reason.into()));
    }

    /// Whether this scope was cancelled: `cancel()` was called, or its own
    /// deadline passed. Cancellation inherited from an outer scope does not
    /// count (see [`is_cancelled`](Self::is_cancelled)).
    ///
    /// ```
    /// use std::time::Instant;
    /// let handle = hatchery::CancelScope::new().deadline(Instant::now()).handle();
    /// assert!(handle.cancel_called()); // the deadline has passed
    /// ```
    pub fn cancel_called(&self) -> bool {
        self.node.cancel_called()
    }

    /// Whether the scope caught a cancellation when its body exited (the body
    /// unwound with `Cancelled` that belonged to this scope).
    ///
    /// ```
    /// use hatchery::{CancelScope, checkpoint};
    /// # futures::executor::block_on(async {
    /// let scope = CancelScope::new();
    /// let handle = scope.handle();
    /// handle.cancel();
    /// scope.run_typed(checkpoint()).await.unwrap();
    /// assert!(handle.cancelled_caught());
    /// # });
    /// ```
    pub fn cancelled_caught(&self) -> bool {
        self.node.lock().cancelled_caught
    }

    /// Whether checkpoints inside the scope fail right now: it was cancelled,
    /// an effective deadline passed, or an unshielded enclosing scope was
    /// cancelled.
    ///
    /// Cheap enough to poll from a synchronous loop.
    ///
    /// ```
    /// use hatchery::CancelScope;
    /// # futures::executor::block_on(async {
    /// let outer = CancelScope::new();
    /// let outer_handle = outer.handle();
    /// outer
    ///     .run(async move {
    ///         let inner = CancelScope::new();
    ///         let inner_handle = inner.handle();
    ///         inner
    ///             .run(async move {
    ///                 outer_handle.cancel();
    ///                 assert!(inner_handle.is_cancelled());
    ///                 assert!(!inner_handle.cancel_called());
    ///                 Ok(())
    ///             })
    ///             .await
    ///     })
    ///     .await
    ///     .unwrap();
    /// # });
    /// ```
    pub fn is_cancelled(&self) -> bool {
        self.node.is_cancelled()
    }

    /// The reason the scope was cancelled, if it was.
    ///
    /// ```
    /// use hatchery::{CancelReason, CancelScope};
    /// let handle = CancelScope::new().handle();
    /// assert_eq!(handle.reason(), None);
    /// handle.cancel();
    /// assert_eq!(handle.reason(), Some(CancelReason::Explicit));
    /// ```
    pub fn reason(&self) -> Option<CancelReason> {
        self.node.cancel_called();
        self.node.lock().reason.clone()
    }

    /// Why the scope is effectively cancelled, wherever that happened: its
    /// own [`reason`](Self::reason) if it was cancelled, else that of the
    /// nearest enclosing scope (up to a shield) that was; `None` while it is
    /// not cancelled. For cleanup that acts on why it runs: a task told by
    /// its nursery's failure, its own deadline, or Ctrl+C
    /// ([`CancelReason::Signal`]) sees it in
    /// `current_scope().and_then(|s| s.effective_reason())`. Read it before
    /// the cleanup enters a shield: inside one, nothing outside reaches the
    /// scope, and this is `None`. It is the nearest cancelled scope's reason,
    /// not the first cancellation in time (a deadline of an inner scope that
    /// passes during a Ctrl+C shutdown reads `Deadline`); once the scope has
    /// exited, only its own reason counts.
    ///
    /// ```
    /// use hatchery::{current_scope, nursery, sleep_forever, CancelReason, CancelScope};
    ///
    /// # futures::executor::block_on(async {
    /// let out = nursery(|n| async move {
    ///     n.spawn(async {
    ///         CancelScope::new()
    ///             .run(async {
    ///                 let slept = sleep_forever().await;
    ///                 // This scope was not cancelled itself: the nursery's was.
    ///                 let here = current_scope().unwrap();
    ///                 assert_eq!(here.reason(), None);
    ///                 assert_eq!(here.effective_reason(), Some(CancelReason::Explicit));
    ///                 slept?;
    ///                 Ok(())
    ///             })
    ///             .await?;
    ///         Ok(())
    ///     });
    ///     hatchery::checkpoint().await?;
    ///     n.cancel_scope().cancel();
    ///     Ok(())
    /// })
    /// .await;
    /// assert!(out.is_ok());
    /// # });
    /// ```
    pub fn effective_reason(&self) -> Option<CancelReason> {
        self.node.effective_reason()
    }

    /// The scope's own deadline (not counting enclosing scopes).
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// let at = Instant::now() + Duration::from_secs(1);
    /// let handle = hatchery::CancelScope::new().deadline(at).handle();
    /// assert_eq!(handle.deadline(), Some(at));
    /// ```
    pub fn deadline(&self) -> Option<Instant> {
        self.node.lock().deadline
    }

    /// Moves the deadline, earlier or later, or removes it with `None`. Tasks
    /// inside notice at their next checkpoint; sleepers re-arm their timers.
    /// A deadline that a checkpoint already saw expire has cancelled the scope
    /// for good; moving it later then changes nothing.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// let handle = hatchery::CancelScope::new().handle();
    /// handle.set_deadline(Instant::now() + Duration::from_secs(10));
    /// handle.set_deadline(None);
    /// assert_eq!(handle.deadline(), None);
    /// ```
    pub fn set_deadline(&self, deadline: impl Into<Option<Instant>>) {
        self.node.set_deadline(deadline.into());
    }

    /// Sets the deadline to `timeout` from now. A timeout too large for
    /// [`Instant`] removes the deadline.
    ///
    /// ```
    /// use std::time::Duration;
    /// let handle = hatchery::CancelScope::new().handle();
    /// handle.set_timeout(Duration::from_secs(1));
    /// assert!(handle.deadline().is_some());
    /// ```
    pub fn set_timeout(&self, timeout: Duration) {
        self.node.set_deadline(clock::now().checked_add(timeout));
    }

    /// Turns the shield on or off. Turning it off inside a cancelled enclosing
    /// scope cancels this one at once (and wakes its sleepers).
    ///
    /// ```
    /// let handle = hatchery::CancelScope::new().handle();
    /// handle.set_shield(true);
    /// assert!(handle.is_shielded());
    /// ```
    pub fn set_shield(&self, shield: bool) {
        self.node.set_shield(shield);
    }

    /// Whether the scope is shielded.
    ///
    /// ```
    /// assert!(!hatchery::CancelScope::new().handle().is_shielded());
    /// ```
    pub fn is_shielded(&self) -> bool {
        self.node.lock().shield
    }

    /// A future that resolves once the scope is effectively cancelled (by any
    /// cause, including its deadline or an enclosing scope). Unlike a
    /// checkpoint it watches *this* scope, wherever it is polled.
    ///
    /// ```
    /// let handle = hatchery::CancelScope::new().handle();
    /// let watcher = handle.clone();
    /// std::thread::spawn(move || handle.cancel());
    /// futures::executor::block_on(watcher.cancelled());
    /// ```
    pub fn cancelled(&self) -> HandleCancelled {
        HandleCancelled {
            node: Arc::clone(&self.node),
            wait: Wait::default(),
        }
    }
}

/// The future of [`CancelHandle::cancelled`].
///
/// ```
/// let handle = hatchery::CancelScope::new().handle();
/// handle.cancel();
/// futures::executor::block_on(handle.cancelled());
/// ```
pub struct HandleCancelled {
    node: Arc<Node>,
    wait: Wait,
}

impl fmt::Debug for HandleCancelled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandleCancelled").finish_non_exhaustive()
    }
}

impl Future for HandleCancelled {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        this.wait.poll(Some(&this.node), None, cx).map(|_| ())
    }
}

/// Checks the current scope without yielding: `Err(Cancelled)` if it is
/// effectively cancelled (one atomic load when no deadline applies).
///
/// Use it in hot loops between real checkpoints, or in synchronous code that a
/// scope's task calls.
///
/// ```
/// use hatchery::{check_cancelled, CancelScope, Cancelled};
/// assert_eq!(check_cancelled(), Ok(())); // outside any scope: never cancelled
/// # futures::executor::block_on(async {
/// let scope = CancelScope::new();
/// scope.handle().cancel();
/// scope
///     .run(async {
///         assert_eq!(check_cancelled(), Err(Cancelled));
///         Ok(())
///     })
///     .await
///     .unwrap();
/// # });
/// ```
#[inline]
pub fn check_cancelled() -> Result<(), Cancelled> {
    context::check()
}

/// A handle to the innermost cancel scope of the running task, if it runs
/// inside one.
///
/// ```
/// use hatchery::{current_scope, CancelScope, Cancelled};
/// assert!(current_scope().is_none());
/// # futures::executor::block_on(async {
/// let scope = CancelScope::new();
/// scope
///     .run(async {
///         current_scope().unwrap().cancel(); // cancel the scope we are in
///         Ok(hatchery::checkpoint().await?)
///     })
///     .await
///     .unwrap();
/// # });
/// ```
pub fn current_scope() -> Option<CancelHandle> {
    context::current().map(CancelHandle::from_node)
}
