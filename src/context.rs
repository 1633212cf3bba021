//! The current cancel scope of the running task, and what the running task
//! did in its current poll.
//!
//! A thread-local slot holds the innermost scope of whatever future is being
//! polled on this thread. Scope and nursery futures swap their node into the
//! slot for the duration of each poll and swap it back afterwards (also when
//! the poll panics), so the current scope travels with the future onto any
//! thread and any runtime. Swapping moves the `Arc` rather than cloning it:
//! entering a scope costs no reference-count traffic.
//!
//! Invariants:
//!
//! 1. The slot holds `None` whenever no hatchery scope is being polled on this
//!    thread; code polled outside any scope sees a scope that is never
//!    cancelled.
//! 2. `covering` is nonzero only while a nursery polls one of its own tasks
//!    (body or inline child) with its own node current (`track`); it is the
//!    address of the waker that task is polled with. Every `enter` clears it
//!    for its duration. A wait polled with *that* waker is re-polled by the
//!    nursery after every change of the node's state, so it need not listen
//!    for changes itself (see `cancel::wait`). A wait polled with another
//!    waker sits inside a combinator (`FuturesUnordered`, `join_all`, …)
//!    that re-polls only what woke it: it listens.
//! 3. `parked` is cleared when an owner (nursery, scope future, parallel or
//!    starting child) starts polling a task (`track`) and set by every
//!    hatchery await that returns `Pending`: a checkpoint, sleep or
//!    `cancelled()` wait, `.cancellable()`, and a nested scope, nursery or
//!    `start()` future. A task that returns `Pending` with it clear is parked
//!    in a future that cannot see cancellation (the "every await is a
//!    cancellation point" rule, `cancel::foreign`). The outer task's flag is
//!    restored when `track` returns, so nested owners do not disturb it.

use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::task::Waker;

use crate::cancel::tree::Node;
use crate::clock::{CANCELLED, NEVER};
use crate::error::Cancelled;

struct Current {
    node: RefCell<Option<Arc<Node>>>,
    /// Invariant 2.
    covering: Cell<usize>,
    /// Invariant 3.
    parked: Cell<bool>,
}

thread_local! {
    static CURRENT: Current = const {
        Current {
            node: RefCell::new(None),
            covering: Cell::new(0),
            parked: Cell::new(false),
        }
    };
}

/// Runs `f` with the node in `slot` as the current scope. `slot` must hold
/// `Some` node; it is moved into the thread-local and moved back afterwards.
pub(crate) fn enter<R>(slot: &mut Option<Arc<Node>>, f: impl FnOnce() -> R) -> R {
    struct Restore<'s>(&'s mut Option<Arc<Node>>, usize);
    impl Drop for Restore<'_> {
        fn drop(&mut self) {
            CURRENT.with(|current| {
                std::mem::swap(&mut *current.node.borrow_mut(), self.0);
                current.covering.set(self.1);
            });
        }
    }
    let was = CURRENT.with(|current| {
        std::mem::swap(&mut *current.node.borrow_mut(), slot);
        current.covering.replace(0)
    });
    let _restore = Restore(slot, was);
    f()
}

/// Runs `f`, one poll of a task, and returns whether a hatchery await parked
/// it (invariant 3). `waker` is the waker the task is polled with if its
/// nursery covers its waits on the current node (invariant 2), else `None`.
#[inline]
pub(crate) fn track<R>(waker: Option<&Waker>, f: impl FnOnce() -> R) -> (R, bool) {
    struct Restore(usize, bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            CURRENT.with(|current| {
                current.covering.set(self.0);
                current.parked.set(self.1);
            });
        }
    }
    let covering = waker.map_or(0, |waker| waker.data() as usize);
    let restore = CURRENT.with(|current| {
        Restore(
            current.covering.replace(covering),
            current.parked.replace(false),
        )
    });
    let out = f();
    let parked = CURRENT.with(|current| current.parked.get());
    drop(restore);
    (out, parked)
}

/// Records that a hatchery await returned `Pending` in the running task
/// (invariant 3).
#[inline]
pub(crate) fn park() {
    CURRENT.with(|current| current.parked.set(true));
}

/// A reference to the current scope's node, if any.
pub(crate) fn current() -> Option<Arc<Node>> {
    CURRENT.with(|current| current.node.borrow().clone())
}

/// Runs `f` on the current node (without cloning it) and whether a wait
/// polled with `waker` is re-polled after every change of its state
/// (invariant 2). Like [`with_current`], `f` must not wake anything.
pub(crate) fn peek<R>(waker: &Waker, f: impl FnOnce(Option<&Arc<Node>>, bool) -> R) -> R {
    CURRENT.with(|current| {
        let covering = current.covering.get();
        f(
            current.node.borrow().as_ref(),
            covering != 0 && covering == waker.data() as usize,
        )
    })
}

/// Whether a wait on `node` polled with `waker` is re-polled after every
/// change of `node`'s state by whoever polls the running task (invariant 2).
pub(crate) fn covers(node: &Arc<Node>, waker: &Waker) -> bool {
    peek(waker, |current, covered| {
        covered && current.is_some_and(|current| Arc::ptr_eq(current, node))
    })
}

/// The checkpoint test against the current scope (never cancelled outside one).
#[inline]
pub(crate) fn check() -> Result<(), Cancelled> {
    let state = CURRENT.with(|current| {
        current
            .node
            .borrow()
            .as_ref()
            .map_or(NEVER, |node| node.state())
    });
    match state {
        NEVER => Ok(()),
        CANCELLED => Err(Cancelled),
        // A deadline applies: the full check may record an expiry and wake
        // waiters, so run it without the slot borrowed.
        _ => current().map_or(Ok(()), |node| node.check()),
    }
}

/// Runs `f` on the current node (without cloning it). `f` must not wake
/// anything (waiting futures only register here).
pub(crate) fn with_current<R>(f: impl FnOnce(Option<&Arc<Node>>) -> R) -> R {
    CURRENT.with(|current| f(current.node.borrow().as_ref()))
}
