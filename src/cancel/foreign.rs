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
//!   timer only once their task parked in a foreign future, and for a
//!   parallel child only the second time: the first time it is polled once
//!   more instead, which sees a cancel that came meanwhile);
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
//!
//! Two things can make "no hatchery await parked it" wrong, and each has its
//! remedy:
//!
//! * A combinator that polls only what woke it (`FuturesUnordered`,
//!   `join_all` over more than 30 futures) may skip a pending hatchery await
//!   in a poll: a shielded scope, or a nested nursery whose children clean
//!   up. Such an await, polled with another waker than its task's, registers
//!   a [`Hold`] for the task on the current node (`context` invariant 4); the
//!   verdict for a task that holds one is **held**: it is kept without a
//!   listener, since the held await wakes it when it moves, and applies the
//!   rule to its own body itself.
//! * A hatchery await that parked the task and was dropped in the same poll
//!   (the losing arm of a `select`) leaves `PARKED` set although nothing of
//!   hatchery's waits any more ([`Parking`]; `context` invariant 3,
//!   `STALE`). The owner then keeps the task but listens as for a foreign
//!   await (or, in a cancelled scope, polls it again): the next cancel or
//!   deadline gives it a fresh look, and it is never dropped on a stale
//!   verdict.

use std::sync::Arc;
use std::task::{Context, Poll};

use super::scope_wait::Wait;
use super::tree::{Listener, Node};
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
    /// The scope is cancelled, but the task holds a pending hatchery await
    /// that a combinator did not poll this time ([`Hold`]): keep it; that
    /// await wakes it.
    Held,
}

/// The verdict for a task of `node` (see the module docs), the task named
/// as it holds ([`Hold`]; `None` if `node` is the task's own scope). An
/// expired deadline is recorded first, so that the expiry is announced like
/// any cancel.
#[inline]
pub(crate) fn verdict(node: &Node, task: Option<usize>) -> Verdict {
    if node.state() == NEVER {
        return Verdict::Keep;
    }
    verdict_slow(node, task)
}

#[cold]
fn verdict_slow(node: &Node, task: Option<usize>) -> Verdict {
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
    if !node.announced() {
        Verdict::Retry
    } else if node.holds(task) {
        Verdict::Held
    } else {
        Verdict::Drop
    }
}

/// How a single-task owner (scope future, parallel or starting child) waits
/// for its scope while its task is parked in a foreign future: allocated the
/// first time the task parks there (a body that finishes at once, or parks
/// at hatchery awaits, never pays for it). A scope with neither a deadline
/// nor a cancel needs only a listener to its next change (a parallel child
/// that waits in a foreign future, past the extra poll of `poll_task`);
/// one with a deadline
/// needs a timer too, in a boxed [`Wait`].
#[derive(Default)]
pub(crate) struct ForeignWait {
    waiting: Option<Waiting>,
}

enum Waiting {
    /// A parallel child kept for the first time, woken to be polled again
    /// rather than listening (`poll_task`).
    PolledAgain,
    Listener(Listener),
    Wait(Box<Wait>),
}

impl ForeignWait {
    /// Called after the task returned `Pending` without parking. `Ready`:
    /// drop the task now (it ends with `Cancelled`). `Pending`: keep it; the
    /// owner's waker is woken when `node` is cancelled or its deadline
    /// passes (or soon, to retry). Either way the owner's own poller sees a
    /// hatchery await (`context::park`).
    pub(crate) fn poll(&mut self, node: &Arc<Node>, cx: &mut Context<'_>) -> Poll<()> {
        self.verdict_loop(node, None, false, cx)
    }

    /// Stops waiting: drops the listener or timer, if there is one.
    #[inline]
    pub(crate) fn clear(&mut self) {
        if matches!(self.waiting, None | Some(Waiting::PolledAgain)) {
            // Nothing to drop (no drop glue called).
            std::mem::forget(self.waiting.take());
        } else {
            self.stop();
        }
    }

    #[cold]
    fn stop(&mut self) {
        self.waiting = None;
    }

    /// [`poll`](ForeignWait::poll) for a parallel child, which shares
    /// `node` with others: its holds are told apart by `task` (`context`
    /// invariant 4). The first time the child is kept, it is woken to be
    /// polled once more instead of listening: a child that yielded (woke
    /// itself) is polled again anyway, and one that finishes on that poll
    /// never takes the node's lock to listen and again to stop. The next
    /// poll sees a cancel that came meanwhile, as the listener would have
    /// made it.
    #[inline]
    pub(crate) fn poll_task(
        &mut self,
        node: &Arc<Node>,
        task: Option<usize>,
        cx: &mut Context<'_>,
    ) -> Poll<()> {
        // The common first time, inline: kept, polled once more.
        if self.waiting.is_none() && node.state() == NEVER {
            self.waiting = Some(Waiting::PolledAgain);
            cx.waker().wake_by_ref();
            context::park_in(node);
            return Poll::Pending;
        }
        self.verdict_loop(node, task, true, cx)
    }

    fn verdict_loop(
        &mut self,
        node: &Arc<Node>,
        task: Option<usize>,
        poll_again_first: bool,
        cx: &mut Context<'_>,
    ) -> Poll<()> {
        loop {
            match verdict(node, task) {
                Verdict::Drop => {
                    self.waiting = None;
                    return Poll::Ready(());
                }
                Verdict::Retry => {
                    cx.waker().wake_by_ref();
                    context::park_in(node);
                    return Poll::Pending;
                }
                Verdict::Held => {
                    // Kept for the held await's own wake; listening too, for
                    // a hold that moves away with its future
                    // (`Node::release_moved` tells the listeners): then the
                    // verdict is asked again.
                    if self.held(node, task, cx).is_pending() {
                        context::park_in(node);
                        return Poll::Pending;
                    }
                }
                Verdict::Keep if poll_again_first && self.waiting.is_none() => {
                    self.waiting = Some(Waiting::PolledAgain);
                    cx.waker().wake_by_ref();
                    context::park_in(node);
                    return Poll::Pending;
                }
                Verdict::Keep => {
                    if self.keep(node, cx).is_pending() {
                        context::park_in(node);
                        return Poll::Pending;
                    }
                    // Changed (cancelled, expired, a deadline set) meanwhile:
                    // ask again.
                }
            }
        }
    }

    /// Waits for the next change of `node` that matters (a cancel, or its
    /// deadline passing): `Ready` if it may have come.
    fn keep(&mut self, node: &Arc<Node>, cx: &mut Context<'_>) -> Poll<()> {
        if node.state() == NEVER && !matches!(self.waiting, Some(Waiting::Wait(_))) {
            let listener = match &mut self.waiting {
                Some(Waiting::Listener(listener)) if Arc::ptr_eq(listener.node(), node) => listener,
                waiting => {
                    // Listening with the waker registered already: no poll
                    // of the listener is needed before `Pending`.
                    *waiting = Some(Waiting::Listener(node.listen_with(cx.waker())));
                    // Re-checked now that no change can be missed (tree
                    // invariant 5).
                    if node.state() != NEVER {
                        *waiting = None;
                        return Poll::Ready(());
                    }
                    return Poll::Pending;
                }
            };
            if std::pin::Pin::new(listener).poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.waiting = None;
            return Poll::Ready(());
        }
        if !matches!(self.waiting, Some(Waiting::Wait(_))) {
            self.waiting = Some(Waiting::Wait(Box::default()));
        }
        let Some(Waiting::Wait(wait)) = &mut self.waiting else {
            unreachable!("just inserted");
        };
        wait.poll(Some(node), None, cx).map(drop)
    }

    /// Listens to `node` while a task is kept for a held await: `Ready`
    /// when the listener fired (a hold was released: ask again), `Pending`
    /// once a listener is registered. Listening first, then asking again,
    /// misses no release (`release_moved` releases, then tells).
    #[cold]
    fn held(&mut self, node: &Arc<Node>, task: Option<usize>, cx: &mut Context<'_>) -> Poll<()> {
        match &mut self.waiting {
            Some(Waiting::Listener(listener)) if Arc::ptr_eq(listener.node(), node) => {
                if std::pin::Pin::new(listener).poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.waiting = None;
                Poll::Ready(())
            }
            waiting => {
                *waiting = Some(Waiting::Listener(node.listen_with(cx.waker())));
                // Asked again by the caller's loop: a release before the
                // listener was registered is seen there.
                if verdict(node, task) == Verdict::Held {
                    return Poll::Pending;
                }
                Poll::Ready(())
            }
        }
    }

    /// Called after the task returned `Pending` with a stale `PARKED`
    /// (module docs): keeps it, listening as for a foreign await, or, once
    /// the scope is cancelled, polls it again for a fresh look. Never drops
    /// it.
    pub(crate) fn poll_stale(&mut self, node: &Arc<Node>, cx: &mut Context<'_>) {
        context::park_in(node);
        if verdict(node, None) == Verdict::Keep && self.keep(node, cx).is_pending() {
            return;
        }
        cx.waker().wake_by_ref();
    }
}

/// Part of each hatchery await that can return `Pending`: once it did,
/// dropping it before it finished records that the task's `PARKED` may be
/// stale (module docs; `context` invariant 3).
#[derive(Default)]
pub(crate) struct Parking {
    pending: bool,
}

impl Parking {
    /// Records whether the await is left pending by this poll.
    #[inline(always)]
    pub(crate) fn set(&mut self, pending: bool) {
        self.pending = pending;
    }
}

impl Drop for Parking {
    #[inline]
    fn drop(&mut self) {
        if self.pending {
            context::dropped_parked();
        }
    }
}

/// Part of each hatchery await that can stay pending across many polls of
/// its task (a nested scope, nursery or `start()`, a wait on blocking work):
/// a [`Parking`], and while it is polled with another waker than its
/// task's, a hold on the node it was polled in (module docs; `context`
/// invariant 4), released when it finishes or is dropped.
#[derive(Default)]
pub(crate) struct Hold {
    /// As [`Parking`]'s (one `Drop` for both: the scope future's hot path
    /// drops it).
    pending: bool,
    /// Boxed: held only inside combinators, and the awaits that carry a
    /// `Hold` (every scope future among them) stay one word larger, not
    /// three.
    held: Option<Box<(Arc<Node>, usize)>>,
}

impl Hold {
    /// The await returns `Pending` from this poll.
    #[inline]
    pub(crate) fn pending(&mut self, cx: &Context<'_>) {
        self.pending = true;
        if self.held.is_none() {
            self.hold(cx);
        } else {
            self.follow(cx);
        }
    }

    /// Held already: if the await is now polled by another task, or in
    /// another scope (its future moved), the hold moves with it, and the
    /// old one's owner is told to look at its task again.
    #[cold]
    fn follow(&mut self, cx: &Context<'_>) {
        let task = context::holder(cx.waker());
        let stays = self.held.as_ref().is_some_and(|held| {
            task == Some(held.1)
                && context::with_current(|current| current.is_some_and(|c| Arc::ptr_eq(c, &held.0)))
        });
        if !stays {
            if let Some(held) = self.held.take() {
                held.0.release_moved(held.1);
            }
            self.hold(cx);
        }
    }

    #[inline]
    fn hold(&mut self, cx: &Context<'_>) {
        let Some(task) = context::holder(cx.waker()) else {
            return;
        };
        self.hold_slow(task);
    }

    #[cold]
    fn hold_slow(&mut self, task: usize) {
        if let Some(node) = context::current() {
            node.hold(task);
            self.held = Some(Box::new((node, task)));
            context::held();
        }
    }

    /// The await finished (or will not return `Pending` again).
    #[inline]
    pub(crate) fn done(&mut self) {
        self.pending = false;
        if self.held.is_some() {
            self.release();
        }
    }

    #[cold]
    fn release(&mut self) {
        if let Some(held) = self.held.take() {
            held.0.release(held.1);
        }
    }
}

impl Drop for Hold {
    #[inline(always)]
    fn drop(&mut self) {
        if self.pending {
            context::dropped_parked();
        }
        if self.held.is_some() {
            self.release();
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
        hold: Hold,
    }
}

impl<F> Parked<F> {
    pub(crate) fn new(inner: F) -> Self {
        Parked {
            inner,
            hold: Hold::default(),
        }
    }
}

impl<F: std::future::Future> std::future::Future for Parked<F> {
    type Output = F::Output;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let polled = this.inner.poll(cx);
        if polled.is_pending() {
            // The closure runs on another thread, where its handle tells it
            // (what the report says of this task once its scope is
            // cancelled).
            context::park_remote();
            this.hold.pending(cx);
        } else {
            this.hold.done();
        }
        polled
    }
}
