//! The current cancel scope of the running task.
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
//! 2. `covered` is true only while a nursery polls its body and inline
//!    children, with its own node current (`enter_covered`); every other
//!    `enter` clears it for its duration. While it is true, whoever polls the
//!    running task re-polls it after every change of the current node's state,
//!    so a wait on that node need not listen for changes itself (see
//!    `cancel::wait`).

use std::cell::{Cell, RefCell};
use std::sync::Arc;

use crate::cancel::tree::Node;
use crate::clock::{CANCELLED, NEVER};
use crate::error::Cancelled;

struct Current {
    node: RefCell<Option<Arc<Node>>>,
    /// Invariant 2.
    covered: Cell<bool>,
}

thread_local! {
    static CURRENT: Current = const {
        Current {
            node: RefCell::new(None),
            covered: Cell::new(false),
        }
    };
}

/// Runs `f` with the node in `slot` as the current scope. `slot` must hold
/// `Some` node; it is moved into the thread-local and moved back afterwards.
pub(crate) fn enter<R>(slot: &mut Option<Arc<Node>>, f: impl FnOnce() -> R) -> R {
    enter_as(slot, false, f)
}

/// Like [`enter`], for a nursery polling its own tasks: it re-polls them
/// after every change of the node's state (invariant 2).
pub(crate) fn enter_covered<R>(slot: &mut Option<Arc<Node>>, f: impl FnOnce() -> R) -> R {
    enter_as(slot, true, f)
}

fn enter_as<R>(slot: &mut Option<Arc<Node>>, covered: bool, f: impl FnOnce() -> R) -> R {
    struct Restore<'s>(&'s mut Option<Arc<Node>>, bool);
    impl Drop for Restore<'_> {
        fn drop(&mut self) {
            CURRENT.with(|current| {
                std::mem::swap(&mut *current.node.borrow_mut(), self.0);
                current.covered.set(self.1);
            });
        }
    }
    let was = CURRENT.with(|current| {
        std::mem::swap(&mut *current.node.borrow_mut(), slot);
        current.covered.replace(covered)
    });
    let _restore = Restore(slot, was);
    f()
}

/// A reference to the current scope's node, if any.
pub(crate) fn current() -> Option<Arc<Node>> {
    CURRENT.with(|current| current.node.borrow().clone())
}

/// Runs `f` on the current node (without cloning it) and whether the running
/// task is re-polled after every change of its state (invariant 2). Like
/// [`with_current`], `f` must not wake anything.
pub(crate) fn peek<R>(f: impl FnOnce(Option<&Arc<Node>>, bool) -> R) -> R {
    CURRENT.with(|current| f(current.node.borrow().as_ref(), current.covered.get()))
}

/// Whether the running task is re-polled after every change of `node`'s
/// state by whoever polls it (invariant 2).
pub(crate) fn covers(node: &Arc<Node>) -> bool {
    CURRENT.with(|current| {
        current.covered.get()
            && current
                .node
                .borrow()
                .as_ref()
                .is_some_and(|current| Arc::ptr_eq(current, node))
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
    peek(|node, _| f(node))
}
