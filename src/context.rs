//! The current cancel scope of the running task.
//!
//! A thread-local slot holds the innermost scope of whatever future is being
//! polled on this thread. Scope and nursery futures swap their node into the
//! slot for the duration of each poll and swap it back afterwards (also when
//! the poll panics), so the current scope travels with the future onto any
//! thread and any runtime. Swapping moves the `Arc` rather than cloning it:
//! entering a scope costs no reference-count traffic.
//!
//! Invariant: the slot holds `None` whenever no hatchery scope is being polled
//! on this thread; code polled outside any scope sees a scope that is never
//! cancelled.

use std::cell::RefCell;
use std::sync::Arc;

use crate::cancel::tree::Node;
use crate::clock::{CANCELLED, NEVER};
use crate::error::Cancelled;

thread_local! {
    static CURRENT: RefCell<Option<Arc<Node>>> = const { RefCell::new(None) };
}

/// Runs `f` with the node in `slot` as the current scope. `slot` must hold
/// `Some` node; it is moved into the thread-local and moved back afterwards.
pub(crate) fn enter<R>(slot: &mut Option<Arc<Node>>, f: impl FnOnce() -> R) -> R {
    struct Restore<'s>(&'s mut Option<Arc<Node>>);
    impl Drop for Restore<'_> {
        fn drop(&mut self) {
            CURRENT.with(|current| std::mem::swap(&mut *current.borrow_mut(), self.0));
        }
    }
    CURRENT.with(|current| std::mem::swap(&mut *current.borrow_mut(), slot));
    let _restore = Restore(slot);
    f()
}

/// A reference to the current scope's node, if any.
pub(crate) fn current() -> Option<Arc<Node>> {
    CURRENT.with(|current| current.borrow().clone())
}

/// The checkpoint test against the current scope (never cancelled outside one).
#[inline]
pub(crate) fn check() -> Result<(), Cancelled> {
    let state =
        CURRENT.with(|current| current.borrow().as_ref().map_or(NEVER, |node| node.state()));
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
    CURRENT.with(|current| f(current.borrow().as_ref()))
}
