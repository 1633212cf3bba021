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
//!    (body or inline child) with its own node current (`Here::begin`); it is the
//!    address of the waker that task is polled with. Every `enter` clears it
//!    for its duration. A wait polled with *that* waker is re-polled by the
//!    nursery after every change of the node's state, so it need not listen
//!    for changes itself (see `cancel::scope_wait`). A wait polled with another
//!    waker sits inside a combinator (`FuturesUnordered`, `join_all`, …)
//!    that re-polls only what woke it: it listens.
//! 3. `flags` are cleared when an owner (nursery, scope future, parallel or
//!    starting child) starts polling a task (`enter_track`). `PARKED` is set by
//!    every hatchery await that returns `Pending`: a checkpoint, sleep or
//!    `cancelled()` wait, `.cancellable()`, and a nested scope, nursery or
//!    `start()` future. A task that returns `Pending` without it is parked
//!    in a future that cannot see cancellation (the "every await is a
//!    cancellation point" rule, `cancel::foreign`). `TOLD`, `SHIELDED` and
//!    `REMOTE` say, for the report, that the task met `Cancelled`, waits
//!    behind a shield, or runs on another thread. The outer task's flags are
//!    restored when `enter_track` returns, so nested owners do not disturb them.
//!    `STALE` is set when a hatchery await that returned `Pending` is
//!    dropped while `PARKED` is set (`Parking`): most likely in the poll it
//!    parked in (the losing arm of a `select`), so `PARKED` may no longer
//!    stand for a live hatchery await; the owner takes a fresh look instead
//!    of trusting it (`cancel::foreign`).
//! 4. `task` is the data address of the waker the innermost tracking owner
//!    (scope future, parallel or starting child: `enter_track`) polls its task
//!    with; a nursery polling its own task sets `covering` instead, which
//!    takes precedence while nonzero. A hatchery await that stays pending
//!    across polls (a nested scope, nursery, `start()`) and is polled with
//!    another waker sits inside a combinator that may skip it in a poll: it
//!    registers a hold for that task on the current node (`Hold`), so that
//!    the owner never takes such a poll for one parked in a foreign future.
//!    It sets `HELD` in the task's flags: a nursery child polled with the
//!    shared probe waker keeps that waker from then on, so the address it
//!    is held by stays its own.

use std::cell::Cell;
use std::mem::ManuallyDrop;
use std::sync::Arc;
use std::task::Waker;

use crate::cancel::tree::Node;
use crate::clock::{CANCELLED, NEVER};
use crate::error::Cancelled;
pub(crate) use crate::task::Flags;
// The loom models' threads share one OS thread: under them the slot is
// loom's, one per model thread (only the `const` form used below).
#[cfg(hatchery_loom)]
macro_rules! thread_local {
    (static $name:ident: $t:ty = const $init:block;) => {
        loom::thread_local!(
            static $name: $t = $init;
        );
    };
}

/// The slot's content. `ManuallyDrop` gives the thread-local no destructor,
/// so reading it needs no "is it initialized, is it destroyed" check: the
/// checkpoint is a load of the slot and a load of the node's state. Nothing
/// is leaked: by invariant 1 the slot is empty whenever no scope is polled,
/// so also when the thread exits.
type Slot = ManuallyDrop<Option<Arc<Node>>>;

struct Current {
    /// Read by taking the node out and putting it back (`Lent`), without
    /// reference-count or borrow-flag traffic.
    node: Cell<Slot>,
    /// Invariant 2.
    covering: Cell<usize>,
    /// Invariant 3.
    flags: Cell<u8>,
    /// Invariant 4.
    task: Cell<usize>,
}

thread_local! {
    static CURRENT: Current = const {
        Current {
            node: Cell::new(ManuallyDrop::new(None)),
            covering: Cell::new(0),
            flags: Cell::new(0),
            task: Cell::new(0),
        }
    };
}

/// The current node, taken out of the slot for a moment: put back when
/// dropped, also if what runs meanwhile panics. While it is out, the slot
/// reads as "no scope", so what runs meanwhile must not look at the current
/// scope (nothing does: only loads, comparisons and clones run there).
struct Lent<'c> {
    cell: &'c Cell<Slot>,
    node: Slot,
}

impl<'c> Lent<'c> {
    #[inline(always)]
    fn take(cell: &'c Cell<Slot>) -> Self {
        Lent {
            cell,
            node: cell.replace(ManuallyDrop::new(None)),
        }
    }
}

impl Drop for Lent<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        // The slot holds `None` (taken above): nothing to drop.
        self.cell.set(ManuallyDrop::new(self.node.take()));
    }
}

/// Runs `f` with the node in `slot` as the current scope. `slot` must hold
/// `Some` node; it is moved into the thread-local and moved back afterwards.
pub(crate) fn enter<R>(slot: &mut Option<Arc<Node>>, f: impl FnOnce() -> R) -> R {
    struct Restore<'s>(&'s mut Option<Arc<Node>>, usize);
    impl Drop for Restore<'_> {
        fn drop(&mut self) {
            CURRENT.with(|current| {
                let inner = current.node.replace(ManuallyDrop::new(self.0.take()));
                *self.0 = ManuallyDrop::into_inner(inner);
                current.covering.set(self.1);
            });
        }
    }
    let was = CURRENT.with(|current| {
        let outer = current.node.replace(ManuallyDrop::new(slot.take()));
        *slot = ManuallyDrop::into_inner(outer);
        current.covering.replace(0)
    });
    let _restore = Restore(slot, was);
    f()
}

/// `enter`, with this thread's slot handed to `f` for the polls it makes
/// (`Here`): one thread-local lookup for all of them.
pub(crate) fn enter_here<R>(slot: &mut Option<Arc<Node>>, f: impl FnOnce(Here<'_>) -> R) -> R {
    struct Restore<'s, 'c>(&'s mut Option<Arc<Node>>, usize, &'c Current);
    impl Drop for Restore<'_, '_> {
        fn drop(&mut self) {
            let inner = self.2.node.replace(ManuallyDrop::new(self.0.take()));
            *self.0 = ManuallyDrop::into_inner(inner);
            self.2.covering.set(self.1);
        }
    }
    CURRENT.with(|current| {
        let outer = current.node.replace(ManuallyDrop::new(slot.take()));
        *slot = ManuallyDrop::into_inner(outer);
        let was = current.covering.replace(0);
        let _restore = Restore(slot, was, current);
        f(Here(current))
    })
}

/// Runs `f` with this thread's slot, outside any `enter`.
#[cfg(any(test, hatchery_loom))]
pub(crate) fn here<R>(f: impl FnOnce(Here<'_>) -> R) -> R {
    CURRENT.with(|current| f(Here(current)))
}

/// This thread's slot, reached once for the many polls an owner makes in
/// one of its own polls (`enter_here`).
#[derive(Clone, Copy)]
pub(crate) struct Here<'c>(&'c Current);

impl Here<'_> {
    /// `enter_track`'s tracking in two halves, for an owner that catches the task's panics
    /// itself (the nursery): call `end` after the poll, also when it
    /// panicked, with what `begin` returned. No drop guard on the hot path.
    #[inline(always)]
    pub(crate) fn begin(self, waker: &Waker) -> Saved {
        Saved {
            covering: self.0.covering.replace(waker.data() as usize),
            flags: self.0.flags.replace(0),
        }
    }

    /// Ends what `begin` began; returns what the task did.
    #[inline(always)]
    pub(crate) fn end(self, saved: Saved) -> Flags {
        self.0.covering.set(saved.covering);
        Flags::from_bits(self.0.flags.replace(saved.flags))
    }
}

/// For an owner that polls one task in its scope (a scope future, a
/// parallel or starting child): runs `f`, one poll of the task polled with
/// `waker`, with the node in `slot` as the current scope (as `enter`), and
/// returns what the task did (invariant 3). `covering` is cleared: the
/// task's waits are not covered (invariant 2), they listen themselves.
#[inline(always)]
pub(crate) fn enter_track<R>(
    slot: &mut Option<Arc<Node>>,
    waker: &Waker,
    f: impl FnOnce() -> R,
) -> (R, Flags) {
    /// What the poll replaced, put back by `restore` (by `Drop` if the
    /// poll panics).
    struct Restore<'s> {
        slot: &'s mut Option<Arc<Node>>,
        covering: usize,
        task: usize,
        flags: u8,
    }
    impl Restore<'_> {
        /// Puts the outer node and tracking back; returns the task's flags.
        #[inline(always)]
        fn restore(&mut self) -> u8 {
            CURRENT.with(|current| {
                let inner = current.node.replace(ManuallyDrop::new(self.slot.take()));
                *self.slot = ManuallyDrop::into_inner(inner);
                current.covering.set(self.covering);
                current.task.set(self.task);
                current.flags.replace(self.flags)
            })
        }
    }
    impl Drop for Restore<'_> {
        fn drop(&mut self) {
            self.restore();
        }
    }
    // Two small thread-local accesses around `f`, not one around it: a
    // closure that polls the task would keep `with` from being inlined.
    let (covering, task, flags) = CURRENT.with(|current| {
        let outer = current.node.replace(ManuallyDrop::new(slot.take()));
        *slot = ManuallyDrop::into_inner(outer);
        (
            current.covering.replace(0),
            current.task.replace(waker.data() as usize),
            current.flags.replace(0),
        )
    });
    let mut restore = Restore {
        slot,
        covering,
        task,
        flags,
    };
    let out = f();
    let flags = restore.restore();
    std::mem::forget(restore);
    (out, Flags::from_bits(flags))
}

/// The task a hatchery await polled with `waker` must hold (invariant 4):
/// `None` if it is polled with its task's own waker (the task's owner polls
/// it in every poll of the task) or outside any task.
#[inline]
pub(crate) fn holder(waker: &Waker) -> Option<usize> {
    CURRENT.with(|current| {
        let covering = current.covering.get();
        let task = if covering != 0 {
            covering
        } else {
            current.task.get()
        };
        (task != 0 && task != waker.data() as usize).then_some(task)
    })
}

/// Records that the running task registered a hold (invariant 4): a
/// nursery then names it by the waker it was polled with from now on.
#[cold]
pub(crate) fn held() {
    set(Flags::HELD);
}

/// Records that a hatchery await that parked the task was dropped while
/// still pending (invariant 3).
#[cold]
pub(crate) fn dropped_parked() {
    CURRENT.with(|current| {
        let flags = current.flags.get();
        if flags & Flags::PARKED != 0 {
            current.flags.set(flags | Flags::STALE);
        }
    });
}

/// What `begin` replaced, for `end` to put back.
pub(crate) struct Saved {
    covering: usize,
    flags: u8,
}

#[inline(always)]
fn set(flag: u8) {
    CURRENT.with(|current| current.flags.set(current.flags.get() | flag));
}

/// Records that a hatchery await returned `Pending` in the running task
/// (invariant 3).
#[inline]
pub(crate) fn park() {
    set(Flags::PARKED);
}

/// Records that the running task met `Cancelled` (invariant 3).
#[cold]
pub(crate) fn tell() {
    set(Flags::TOLD);
}

/// `park` for a hatchery await that waits on a child on another thread
/// (noted for the report only once the running task's scope is cancelled).
pub(crate) fn park_remote() {
    let cancelled = with_current(|scope| scope.is_some_and(|scope| scope.state() == CANCELLED));
    set(Flags::PARKED | if cancelled { Flags::REMOTE } else { 0 });
}

/// `park` for a nested scope or nursery future of `node`, waiting: when the
/// running task's own scope is cancelled, also whether `node` shields the
/// task from that, or passes it on (the task is told through it).
#[inline]
pub(crate) fn park_in(node: &Node) {
    CURRENT.with(|current| {
        let outer_cancelled = {
            let lent = Lent::take(&current.node);
            lent.node
                .as_ref()
                .is_some_and(|outer| outer.state() == CANCELLED)
        };
        let flag = if outer_cancelled {
            told_or_shielded(node)
        } else {
            Flags::PARKED
        };
        current.flags.set(current.flags.get() | flag);
    });
}

/// `park_in`'s flags once the running task's scope is cancelled.
#[cold]
fn told_or_shielded(node: &Node) -> u8 {
    Flags::PARKED
        | if node.is_shielded() {
            Flags::SHIELDED
        } else {
            Flags::TOLD
        }
}

/// The address of a scope's node, 0 for none: names it while something
/// keeps it alive (for an owner that looks whether it moved: the node it is
/// linked under is kept alive by that link).
pub(crate) fn address(node: Option<&Arc<Node>>) -> usize {
    node.map_or(0, |node| Arc::as_ptr(node) as usize)
}

/// A reference to the current scope's node, if any.
pub(crate) fn current() -> Option<Arc<Node>> {
    with_current(|node| node.cloned())
}

/// Runs `f` on the current node (without cloning it) and whether a wait
/// polled with `waker` is re-polled after every change of its state
/// (invariant 2). Like [`with_current`], `f` must not wake anything.
pub(crate) fn peek<R>(waker: &Waker, f: impl FnOnce(Option<&Arc<Node>>, bool) -> R) -> R {
    CURRENT.with(|current| {
        let covering = current.covering.get();
        let lent = Lent::take(&current.node);
        f(
            lent.node.as_ref(),
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
    let state = with_current(|node| node.map_or(NEVER, |node| node.state()));
    if state == NEVER {
        return Ok(());
    }
    check_slow(state)
}

/// `check` when a deadline applies or the scope is cancelled: out of line,
/// so that the common path stays a load and a compare.
#[cold]
#[inline(never)]
fn check_slow(state: u64) -> Result<(), Cancelled> {
    let checked = match state {
        CANCELLED => Err(Cancelled),
        // The full check may record an expiry and wake waiters, so run it
        // without the slot borrowed.
        _ => current().map_or(Ok(()), |node| node.check()),
    };
    if checked.is_err() {
        tell();
    }
    checked
}

/// Runs `f` on the current node (without cloning it). `f` must not wake
/// anything (waiting futures only register here), nor look at the current
/// scope again (it would see none: `Lent`).
#[inline(always)]
pub(crate) fn with_current<R>(f: impl FnOnce(Option<&Arc<Node>>) -> R) -> R {
    CURRENT.with(|current| {
        let lent = Lent::take(&current.node);
        f(lent.node.as_ref())
    })
}
