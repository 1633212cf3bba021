//! Every await is a cancellation point: what an owner does with a task that
//! is parked where the cancellation cannot reach it.
//!
//! At a hatchery await (a checkpoint, a sleep, a nested scope or nursery)
//! a task sees `Cancelled` and unwinds, running its cleanup. A future from
//! another crate (a socket read, a channel, a timer of another runtime)
//! cannot see the cancellation, so its owner drops it, as
//! `tokio::time::timeout` or `select!` would, and the task ends as if it had
//! returned `Cancelled`. The owners are the nursery (for its body and each
//! inline child), the scope future (for its body), the remote half of a
//! parallel child, and `start()` (for the starting child).
//!
//! "Cannot see" is decided per poll (`context` invariant 3): the task
//! returned `Pending` and no hatchery await parked it. Its owner then asks
//! [`verdict`]:
//!
//! * the scope is not cancelled: **keep** it, and make sure the owner is
//!   polled again when the scope is cancelled or its deadline passes (the
//!   nursery listens to its node anyway and arms one timer for all its
//!   tasks; the other owners use a [`ForeignWait`], which listens and arms a
//!   timer only once their task parked in a foreign future);
//! * the scope is cancelled and every waiter has been told (tree invariant
//!   6): **drop** the task;
//! * the scope is cancelled but waiters are still being woken (another
//!   thread cancels right now): **retry** after the announcement, because a
//!   task whose hatchery waits sit inside a combinator (`FuturesUnordered`)
//!   is about to be woken with `Cancelled`, and must not be mistaken for one
//!   parked in a foreign future.
//!
//! A shield protects foreign awaits too: inside a shielded scope that is not
//! itself cancelled the verdict is always "keep".

use std::sync::Arc;
use std::task::{Context, Poll};

use super::scope_wait::Wait;
use super::tree::Node;
use crate::clock::{self, CANCELLED, NEVER};
use crate::context;

/// What to do with a task that returned `Pending` without parking at a
/// hatchery await.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The scope is not cancelled: keep polling the task.
    Keep,
    /// The scope is cancelled: drop the task, which ends with `Cancelled`.
    Drop,
    /// The cancellation is still being announced: poll the task again soon.
    Retry,
}

/// The verdict for a task of `node` (see the module docs). An expired
/// deadline is recorded first, so that the expiry is announced like any
/// cancel.
#[inline]
pub(crate) fn verdict(node: &Node) -> Verdict {
    if node.state() == NEVER {
        return Verdict::Keep;
    }
    verdict_slow(node)
}

#[cold]
fn verdict_slow(node: &Node) -> Verdict {
    match node.state() {
        NEVER => return Verdict::Keep,
        CANCELLED => {}
        deadline => {
            let now = clock::now_nanos();
            if !node.deadline_passed(deadline, now) {
                return Verdict::Keep;
            }
            node.record_expired(now);
            if node.state() != CANCELLED {
                // The deadline moved later meanwhile.
                return Verdict::Keep;
            }
        }
    }
    if node.announced() {
        Verdict::Drop
    } else {
        Verdict::Retry
    }
}

/// How a single-task owner (scope future, parallel or starting child) waits
/// for its scope while its task is parked in a foreign future: one listener
/// and one timer, allocated the first time the task parks there (a body that
/// finishes at once, or parks at hatchery awaits, never pays for it).
#[derive(Default)]
pub(crate) struct ForeignWait {
    wait: Option<Box<Wait>>,
}

impl ForeignWait {
    /// Called after the task returned `Pending` without parking. `Ready`:
    /// drop the task now (it ends with `Cancelled`). `Pending`: keep it; the
    /// owner's waker is woken when `node` is cancelled or its deadline
    /// passes (or soon, to retry). Either way the owner's own poller sees a
    /// hatchery await (`context::park`).
    pub(crate) fn poll(&mut self, node: &Arc<Node>, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            match verdict(node) {
                Verdict::Drop => {
                    self.wait = None;
                    return Poll::Ready(());
                }
                Verdict::Retry => {
                    cx.waker().wake_by_ref();
                    context::park_in(node);
                    return Poll::Pending;
                }
                Verdict::Keep => {
                    let wait = self.wait.get_or_insert_with(Box::default);
                    if wait.poll(Some(node), None, cx).is_pending() {
                        context::park_in(node);
                        return Poll::Pending;
                    }
                    // Cancelled (or expired) meanwhile: ask again.
                }
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// A wait of hatchery's own on something the cancellation reaches
    /// another way (a blocking closure, which polls its `CancelHandle`): a
    /// hatchery await, so the rule never drops it.
    pub(crate) struct Parked<F> {
        #[pin]
        inner: F,
    }
}

impl<F> Parked<F> {
    pub(crate) fn new(inner: F) -> Self {
        Parked { inner }
    }
}

impl<F: std::future::Future> std::future::Future for Parked<F> {
    type Output = F::Output;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let polled = self.project().inner.poll(cx);
        if polled.is_pending() {
            context::park();
        }
        polled
    }
}
