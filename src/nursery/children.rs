//! The set of children a nursery polls itself: a slab of boxed futures, a
//! ready queue, and one waker per child.
//!
//! # Invariants
//!
//! 1. A child's index in the ready queue (or, for a new child, in the batch
//!    that admits it) means "poll me"; its `queued` flag is set by whoever
//!    enqueued it and cleared just before the child is polled. A wake while the flag is set pushes nothing, so each child is in
//!    the queue at most once per wake-up and a poll never misses a wake that
//!    happened during it.
//! 2. An index whose child is gone, or whose flag is clear (a stale wake from a
//!    previous child in the same slot), is skipped: a waker never polls the
//!    wrong child twice.
//! 3. The ready queue and the nursery's own waker live in `Wakeup`, which is
//!    `'static` and shared with the wakers; the child futures themselves live
//!    only in the slab, owned by the nursery future, so they may borrow from
//!    the enclosing frame.
//! 4. The push that makes the ready queue non-empty wakes the nursery's
//!    poller; later pushes need not, because the poller takes the whole queue
//!    at once (under the same lock) on the poll that wake causes.
//! 6. Every child in the slab has an entry under the same key in the
//!    nursery's `TaskTable` (its name and spawn location, for errors and the
//!    shutdown report), removed when the child finishes or is dropped.
//! 5. A finished child's waker is reused for a later child only when nobody
//!    else holds a clone of it (`Arc::strong_count == 2`: the child's flag and
//!    waker), so a reused waker never carries a stale wake.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll, Wake, Waker};

use atomic_waker::AtomicWaker;
use slab::Slab;

use crate::report::TaskTable;
use crate::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use crate::sync::{Arc, Mutex};
use crate::task::TaskInfo;

/// The index the nursery body uses in the ready queue.
pub(crate) const BODY: usize = usize::MAX;

/// What the wakers of a nursery's tasks share with the nursery future.
#[derive(Default)]
pub(crate) struct Wakeup {
    ready: Mutex<Vec<usize>>,
    /// The waker of whoever polls the nursery future.
    pub(crate) waker: AtomicWaker,
}

impl Wakeup {
    /// Enqueues `index`; true if the queue was empty (invariant 4).
    fn push(&self, index: usize) -> bool {
        let mut ready = self
            .ready
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        ready.push(index);
        ready.len() == 1
    }
}

pub(crate) struct TaskWaker {
    /// The child's slot; changes only when the waker is reused (invariant 5).
    index: AtomicUsize,
    queued: AtomicBool,
    wakeup: Arc<Wakeup>,
}

impl TaskWaker {
    pub(crate) fn new(index: usize, wakeup: &Arc<Wakeup>) -> (Arc<TaskWaker>, Waker) {
        let flag = Arc::new(TaskWaker {
            index: AtomicUsize::new(index),
            queued: AtomicBool::new(false),
            wakeup: Arc::clone(wakeup),
        });
        let waker = Waker::from(Arc::clone(&flag));
        (flag, waker)
    }

    /// Sets the queued flag and enqueues the task unless it already was.
    /// Returns true if the poller must be woken (invariant 4); does not wake it.
    pub(crate) fn queue(&self) -> bool {
        !self.queued.swap(true, Ordering::AcqRel)
            && self.wakeup.push(self.index.load(Ordering::Relaxed))
    }

    /// Clears the queued flag; false means this queue entry was stale.
    pub(crate) fn take_queued(&self) -> bool {
        self.queued.swap(false, Ordering::AcqRel)
    }
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.queue() {
            self.wakeup.waker.wake();
        }
    }
}

struct Child<C> {
    future: C,
    flag: Arc<TaskWaker>,
    waker: Waker,
}

/// How a polled child ended.
pub(crate) type Outcome<O> = Result<O, Box<dyn Any + Send>>;

pub(crate) struct Children<C> {
    slab: Slab<Child<C>>,
    wakeup: Arc<Wakeup>,
    /// Reused buffer for the batch being polled.
    batch: Vec<usize>,
    /// Wakers of finished children, ready for reuse (invariant 5).
    spare: Vec<(Arc<TaskWaker>, Waker)>,
    /// New children waiting for `take_batch`; its capacity is reused.
    incoming: Vec<(C, TaskInfo)>,
    /// Who the children are, readable by the report (invariant 6).
    table: Arc<TaskTable>,
    /// Children that finished in this batch without a failure; their table
    /// entries are removed in one go by `recycle`.
    finished: Vec<usize>,
}

impl<C> Children<C> {
    pub(crate) fn new(wakeup: Arc<Wakeup>, table: Arc<TaskTable>) -> Self {
        Children {
            slab: Slab::new(),
            wakeup,
            batch: Vec::new(),
            spare: Vec::new(),
            incoming: Vec::new(),
            table,
            finished: Vec::new(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }

    /// The buffer new children are moved into (swapped with the nursery's
    /// `incoming` queue under its lock); `take_batch` admits them.
    pub(crate) fn incoming(&mut self) -> &mut Vec<(C, TaskInfo)> {
        &mut self.incoming
    }

    /// Takes the indices woken so far, then admits the new children from
    /// `incoming` straight into the same batch for their first poll (their
    /// flags are set without touching the shared ready queue). Wakes after
    /// this go to the next batch.
    pub(crate) fn take_batch(&mut self) -> Vec<usize> {
        let mut batch = std::mem::take(&mut self.batch);
        std::mem::swap(
            &mut *self
                .wakeup
                .ready
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
            &mut batch,
        );
        if self.incoming.is_empty() {
            return batch;
        }
        let mut admit = self.table.admit();
        for (future, info) in self.incoming.drain(..) {
            let entry = self.slab.vacant_entry();
            let (flag, waker) = match self.spare.pop() {
                Some((flag, waker)) => {
                    flag.index.store(entry.key(), Ordering::Relaxed);
                    (flag, waker)
                }
                None => TaskWaker::new(entry.key(), &self.wakeup),
            };
            flag.queued.store(true, Ordering::Relaxed);
            batch.push(entry.key());
            admit.insert(entry.key(), info);
            entry.insert(Child {
                future,
                flag,
                waker,
            });
        }
        batch
    }

    /// Returns a drained batch buffer for reuse.
    pub(crate) fn recycle(&mut self, mut batch: Vec<usize>) {
        batch.clear();
        self.batch = batch;
        self.table.remove_all(&self.finished);
        self.finished.clear();
    }

    /// Polls the child at `index` if it is really queued (invariant 2).
    /// Returns its outcome once it finished (it is then removed). A failed
    /// child's identity comes from `failed`; a successful one's table entry
    /// goes at the end of the batch.
    pub(crate) fn poll<O>(&mut self, index: usize) -> Option<Outcome<O>>
    where
        C: std::future::Future<Output = O> + Unpin,
    {
        let child = self.slab.get_mut(index)?;
        if !child.flag.take_queued() {
            return None;
        }
        let mut cx = Context::from_waker(&child.waker);
        let future = &mut child.future;
        let outcome = match catch_unwind(AssertUnwindSafe(|| Pin::new(future).poll(&mut cx))) {
            Ok(Poll::Pending) => return None,
            Ok(Poll::Ready(output)) => Ok(output),
            Err(payload) => Err(payload),
        };
        let child = self.slab.remove(index);
        if Arc::strong_count(&child.flag) == 2 {
            child.flag.queued.store(false, Ordering::Relaxed);
            self.spare.push((child.flag, child.waker));
        }
        self.finished.push(index);
        Some(outcome)
    }

    /// The identity of a child that just finished with a failure.
    pub(crate) fn failed(&mut self, index: usize) -> TaskInfo {
        if let Some(at) = self.finished.iter().rposition(|&key| key == index) {
            self.finished.swap_remove(at);
        }
        self.table
            .remove(index)
            .expect("a finished child has a table entry (invariant 6)")
    }

    /// Drops every child at once (the hard cancel).
    pub(crate) fn clear(&mut self) {
        // The table first: a child's `Drop` may panic.
        self.table.clear();
        self.slab.clear();
        self.finished.clear();
    }
}
