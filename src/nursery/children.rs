//! The set of children a nursery polls itself: a chunked slab of boxed
//! futures, each with its waker, and a ready queue of woken keys.
//!
//! # Invariants
//!
//! 1. A child's key in the ready queue (or, for a new child, in the list of
//!    keys just admitted, which the nursery polls at once with
//!    `poll_admitted`, no bit needed) means "poll me"; its `QUEUED` bit is
//!    set by whoever enqueued it and cleared just before the child is
//!    polled. A wake while the bit is set pushes nothing, so each child is
//!    in the queue at most once per wake-up and a poll never misses a wake
//!    that happened during it.
//! 2. A key whose child is gone, or whose bit is clear (a stale wake from a
//!    previous child in the same slot), is skipped: a waker never polls the
//!    wrong child twice.
//! 3. The ready queue and the nursery's own waker live in `Wakeup`, which is
//!    `'static` and shared with the wakers; the child futures themselves live
//!    only in the slab, owned by the nursery future, so they may borrow from
//!    the enclosing frame.
//! 4. The push that makes the ready queue non-empty wakes the nursery's
//!    poller; later pushes need not, because the poller takes the whole queue
//!    at once (under the same lock) on the poll that wake causes.
//! 5. A child is polled with a waker borrowed from an `Arc<TaskWaker>`
//!    (`futures_task::waker_ref`): no reference count changes per poll. A
//!    finished child's waker is reused for a later child only when nobody
//!    else holds a clone of it (`Arc::strong_count == 1`), so a reused waker
//!    never carries a stale wake.
//! 6. Every child in the slab has an entry under the same key in the
//!    nursery's `TaskTable` (its name and spawn location, for errors and the
//!    shutdown report), removed when the child finishes or is dropped.
//! 7. A dropped nursery's spare wakers go to its thread's pool with their
//!    `Wakeup`; a new nursery takes them only if nothing else refers to that
//!    `Wakeup` any more (`strong_count == 1 + wakers`: no handle of the old
//!    nursery, no waker a task kept), and empties its ready queue first. So a
//!    recycled waker can only ever wake the nursery that took it.
//! 8. A child owns a waker only once it kept one. Until then it is polled
//!    with the shared `probe`, set to its key for that poll, and its
//!    `QUEUED` bit lives in `queued`. If the probe's strong count is 1 after
//!    the poll (then an acquire fence: ordered after the release of every
//!    clone), no clone can wake it later: a wake during the poll moves to
//!    the bit, and the probe serves the next child. Otherwise the probe
//!    becomes the child's own waker, with its key and bit, and a new probe
//!    is taken. A child that only waits on its nursery's scope (covered,
//!    nursery invariant 5) or only yields thus never costs a waker.
//! 9. While the probe polls a child its state is `RUNNING`: a wake then
//!    only sets `QUEUED` and pushes nothing (no lock, no queue growth). After
//!    the poll the nursery moves such a wake to the child's bit in `queued`
//!    and in `requeued`, whose keys it polls on its next poll (a child that
//!    yields is polled again after everything else that was due); if the
//!    probe was kept, `RUNNING` is cleared with one read-modify-write and a
//!    wake it absorbed is pushed to the ready queue as any later wake would
//!    be.
//! 10. A dropped nursery's buffers (slab chunks, table entries, bits, key
//!     lists, ready queue) go to its thread's pool, empty, up to
//!     `pool::MAX_BYTES` per thread; a new nursery fills them before it
//!     allocates. A program that opens nursery after nursery thus does not
//!     make the allocator give memory back to the system and take it again
//!     each time.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};

use atomic_waker::AtomicWaker;
use futures_task::{ArcWake, waker_ref};

use crate::chunked::ChunkSlab;
use crate::context::{Flags, Here};
use crate::nursery::table::{Site, TableBuffers, TaskTable};
use crate::sync::Recover;
use crate::sync::atomic::{AtomicUsize, Ordering};
use crate::sync::{Arc, Mutex};
use crate::task::TaskInfo;

/// At most this many wakers of finished children are kept for reuse.
#[cfg(not(hatchery_loom))]
const MAX_SPARE: usize = pool::MAX_WAKERS;
#[cfg(hatchery_loom)]
const MAX_SPARE: usize = 16;

/// The table entries of finished children are removed at the latest after
/// this many (one lock each time; no unbounded list of keys to remove).
const FINISHED_BATCH: usize = 1024;

/// The key the nursery body uses in the ready queue.
pub(crate) const BODY: usize = usize::MAX >> SHIFT;

/// The low bit of `TaskWaker::state`: the task is queued (invariant 1).
const QUEUED: usize = 1;
/// The probe is polling its task (invariant 9).
const RUNNING: usize = 2;
/// The key is in the bits above `QUEUED` and `RUNNING`.
const SHIFT: u32 = 2;

/// What the wakers of a nursery's tasks share with the nursery future.
#[derive(Default)]
pub(crate) struct Wakeup {
    ready: Mutex<Vec<usize>>,
    /// The waker of whoever polls the nursery future.
    pub(crate) waker: AtomicWaker,
}

impl Wakeup {
    /// Forgets the keys a finished nursery left queued.
    #[cfg(not(hatchery_loom))]
    fn reset(&self) {
        self.reset_queue();
        drop(self.waker.take());
    }

    #[cfg(not(hatchery_loom))]
    fn reset_queue(&self) {
        let mut ready = self.ready.lock().recover();
        ready.clear();
        ready.shrink_to(pool::MAX_READY);
    }

    /// Enqueues `key`; true if the queue was empty (invariant 4).
    fn push(&self, key: usize) -> bool {
        let mut ready = self.ready.lock().recover();
        ready.push(key);
        ready.len() == 1
    }
}

impl Wakeup {
    /// A wakeup for a new nursery, with the spare wakers of a finished one
    /// when this thread kept some (invariant 7).
    pub(crate) fn take() -> (Arc<Wakeup>, Vec<Arc<TaskWaker>>) {
        #[cfg(not(hatchery_loom))]
        if let Some(recycled) = pool::take() {
            return recycled;
        }
        (Arc::new(Wakeup::default()), Vec::new())
    }
}

/// Wakers of finished nurseries, kept by each thread for its next nurseries
/// (invariant 7): a program that opens nursery after nursery allocates its
/// wakers once, like an executor that reuses its task slots.
#[cfg(not(hatchery_loom))]
mod pool {
    use std::cell::RefCell;

    use super::{Arc, Buffers, TaskWaker, Wakeup};

    /// At most this many wakers are kept per thread (32 bytes each).
    pub(super) const MAX_WAKERS: usize = 16 * 1024;
    /// At most this many nurseries' wakeups are kept per thread.
    const MAX_UNITS: usize = 64;
    /// A pooled wakeup's ready queue keeps at most this many slots.
    pub(super) const MAX_READY: usize = 4096;
    /// At most this many bytes of buffers are kept per thread (invariant 10).
    pub(super) const MAX_BYTES: usize = 2 << 20;
    /// At most this many nurseries' buffers are kept per thread.
    const MAX_SETS: usize = 4;

    thread_local! {
        static BUFFERS: RefCell<(Vec<Buffers>, usize)> = const { RefCell::new((Vec::new(), 0)) };
    }

    pub(crate) fn take_buffers() -> Buffers {
        BUFFERS
            .try_with(|kept| {
                let mut kept = kept.try_borrow_mut().ok()?;
                let buffers = kept.0.pop()?;
                kept.1 -= buffers.bytes();
                Some(buffers)
            })
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    pub(crate) fn give_buffers(buffers: Buffers) {
        let bytes = buffers.bytes();
        let _ = BUFFERS.try_with(|kept| {
            let Ok(mut kept) = kept.try_borrow_mut() else {
                return;
            };
            if kept.0.len() < MAX_SETS && kept.1 + bytes <= MAX_BYTES {
                kept.1 += bytes;
                kept.0.push(buffers);
            }
        });
    }

    struct Unit {
        wakeup: Arc<Wakeup>,
        wakers: Vec<Arc<TaskWaker>>,
    }

    #[derive(Default)]
    struct Pool {
        units: Vec<Unit>,
        wakers: usize,
    }

    thread_local! {
        static POOL: RefCell<Pool> = RefCell::default();
    }

    pub(super) fn take() -> Option<(Arc<Wakeup>, Vec<Arc<TaskWaker>>)> {
        POOL.try_with(|pool| {
            let mut pool = pool.try_borrow_mut().ok()?;
            // Nobody but the unit may hold the wakeup: not the old
            // nursery's handles, not a waker some task kept. A unit that
            // is still referred to stays for a later nursery: the last
            // wakes of a nursery's parallel children may still be on their
            // way (another thread drops the waker just after the wake the
            // nursery saw), and its wakers are worth keeping.
            let index = pool
                .units
                .iter()
                .rposition(|unit| Arc::strong_count(&unit.wakeup) == 1 + unit.wakers.len())?;
            let unit = pool.units.remove(index);
            pool.wakers -= unit.wakers.len();
            unit.wakeup.reset();
            Some((unit.wakeup, unit.wakers))
        })
        .ok()
        .flatten()
    }

    pub(super) fn give_back(wakeup: Arc<Wakeup>, mut wakers: Vec<Arc<TaskWaker>>) {
        // Dropped outside the borrow: a registered waker's drop is user code.
        let _registered = wakeup.waker.take();
        // A pooled wakeup keeps no large buffer.
        wakeup.reset_queue();
        // The oldest units make room (dropped outside the borrow): one a
        // waker is kept from forever never blocks the pool.
        let mut evicted = Vec::new();
        let _ = POOL.try_with(|pool| {
            let Ok(mut pool) = pool.try_borrow_mut() else {
                return;
            };
            let wanted = wakers.len().min(MAX_WAKERS);
            while !pool.units.is_empty()
                && (pool.units.len() == MAX_UNITS || pool.wakers + wanted > MAX_WAKERS)
            {
                let unit = pool.units.remove(0);
                pool.wakers -= unit.wakers.len();
                evicted.push(unit);
            }
            wakers.truncate(MAX_WAKERS - pool.wakers);
            pool.wakers += wakers.len();
            pool.units.push(Unit {
                wakeup,
                wakers: std::mem::take(&mut wakers),
            });
        });
        drop(evicted);
    }
}

/// The buffers of a dropped nursery, empty, for its thread's next nursery
/// (invariant 10). Chunks that held futures are `chunked::convert`ed to a
/// `'static` element type of the same layout.
#[derive(Default)]
pub(crate) struct Buffers {
    /// The slab's chunks.
    pub(crate) slab: Vec<Vec<[usize; 3]>>,
    /// The task table's entries and cohorts.
    pub(crate) table: TableBuffers,
    /// `queued`, `requeued`, `requeued_now`.
    pub(crate) bits: [Vec<u64>; 3],
    /// `batch`, `finished`.
    pub(crate) keys: [Vec<usize>; 2],
    /// The admission queue's spare chunks (`Shared`'s `Incoming`).
    pub(crate) incoming: Vec<Vec<[usize; 6]>>,
    /// The admission queue's list of chunks.
    pub(crate) queue: Vec<Vec<[usize; 6]>>,
}

impl Buffers {
    /// What a dropped nursery left on this thread, if anything.
    pub(crate) fn take() -> Buffers {
        #[cfg(not(hatchery_loom))]
        return pool::take_buffers();
        #[cfg(hatchery_loom)]
        Buffers::default()
    }

    #[cfg(not(hatchery_loom))]
    fn bytes(&self) -> usize {
        fn of<T>(chunks: &[Vec<T>]) -> usize {
            chunks.iter().map(|c| c.capacity() * size_of::<T>()).sum()
        }
        of(&self.slab)
            + of(&self.table.0)
            + self.table.1.capacity() * 16
            + self.table.2.capacity() * size_of::<crate::nursery::table::RemoteTask>()
            + of(&self.bits)
            + of(&self.keys)
            + of(&self.incoming)
            + self.queue.capacity() * size_of::<Vec<[usize; 6]>>()
    }
}

/// A child's waker: its key and `QUEUED` bit in one word, and the way to
/// the ready queue.
pub(crate) struct TaskWaker {
    state: AtomicUsize,
    wakeup: Arc<Wakeup>,
}

impl TaskWaker {
    /// A waker for `key`, already queued for its first poll.
    pub(crate) fn new(key: usize, wakeup: &Arc<Wakeup>) -> Arc<TaskWaker> {
        Arc::new(TaskWaker {
            state: AtomicUsize::new(key << SHIFT | QUEUED),
            wakeup: Arc::clone(wakeup),
        })
    }

    /// Gives a spare waker (nobody else holds it: invariant 5) to `key`,
    /// queued for its first poll.
    fn reassign(&self, key: usize) {
        self.state.store(key << SHIFT | QUEUED, Ordering::Relaxed);
    }

    /// Sets the queued bit and enqueues the task unless it already was, or
    /// the probe is polling it (invariant 9). Returns true if the poller
    /// must be woken (invariant 4); does not wake it.
    pub(crate) fn queue(&self) -> bool {
        let before = self.state.fetch_or(QUEUED, Ordering::AcqRel);
        before & (QUEUED | RUNNING) == 0 && self.wakeup.push(before >> SHIFT)
    }

    /// Ends the poll of a probe that was kept (invariant 9): clears
    /// `RUNNING` and enqueues the task if it was woken meanwhile.
    fn stop_running(&self) {
        let before = self.state.fetch_and(!RUNNING, Ordering::AcqRel);
        if before & QUEUED != 0 && self.wakeup.push(before >> SHIFT) {
            self.wakeup.waker.wake();
        }
    }

    /// Sets the queued bit without enqueueing (the caller polls the task);
    /// false if it was set already (the task is queued).
    pub(crate) fn mark_queued(&self) -> bool {
        self.state.fetch_or(QUEUED, Ordering::AcqRel) & QUEUED == 0
    }

    /// After a poll with the probe (invariant 8): `None` if a clone of it
    /// is still held, else whether it was woken.
    #[inline(always)]
    fn woken_if_unique(self: &Arc<Self>) -> Option<bool> {
        // A loom operation, so that the models' threads may drop a clone
        // right here, between the poll and the check (std's `Arc` is none).
        #[cfg(hatchery_loom)]
        let _ = self.state.load(Ordering::Relaxed);
        // No `Weak` of a waker is ever made: the strong count says it all.
        if Arc::strong_count(self) != 1 {
            return None;
        }
        // Pairs with the release of the last clone's drop: every wake made
        // through a clone is seen below.
        #[cfg(not(hatchery_loom))]
        {
            crate::sync::atomic::fence(Ordering::Acquire);
            Some(self.state.load(Ordering::Relaxed) & QUEUED != 0)
        }
        // Loom cannot see that pairing (std's `Arc` is no loom type): it
        // would let the load above read a word older than the last wake,
        // which the real program cannot. A read-modify-write reads the last
        // word in its modification order, and that is what the fence makes
        // the real load read: every wake through a clone is ordered before
        // that clone's drop, and with the count at 1 no clone is left to
        // write (the `RUNNING` store before the poll is this thread's). The
        // 0 it leaves is never read: the probe's next poll, or the child it
        // is reassigned to, stores the word first. The real path has its
        // own model (`tests/loom.rs`: the probe's fence).
        #[cfg(hatchery_loom)]
        Some(self.state.swap(0, Ordering::Relaxed) & QUEUED != 0)
    }

    /// Clears the queued bit; false means this queue entry was stale.
    pub(crate) fn take_queued(&self) -> bool {
        self.state.fetch_and(!QUEUED, Ordering::AcqRel) & QUEUED != 0
    }
}

impl ArcWake for TaskWaker {
    fn wake_by_ref(this: &Arc<Self>) {
        if this.queue() {
            this.wakeup.waker.wake();
        }
    }
}

/// Polls `future` with the waker of `flag` (borrowed: invariant 5), as a
/// task its nursery covers (`context` invariant 2), catching a panic;
/// returns what the task did (`context` invariant 3).
#[inline]
pub(crate) fn poll_with<F: std::future::Future + ?Sized>(
    future: Pin<&mut F>,
    flag: &Arc<TaskWaker>,
    here: Here<'_>,
) -> (CaughtPoll<Poll<F::Output>>, Flags) {
    let waker = waker_ref(flag);
    let saved = here.begin(&waker);
    let polled = catch_unwind(AssertUnwindSafe(|| {
        future.poll(&mut Context::from_waker(&waker))
    }));
    if let Err(payload) = &polled {
        crate::panics::caught_panic(&**payload);
    }
    (polled, here.end(saved))
}

/// Drops `value` (user code: a child), catching a panic of its `Drop`:
/// the first is kept in `panicked`, any later one is said.
pub(crate) fn drop_caught<T>(value: T, panicked: &mut Option<Box<dyn Any + Send>>) {
    if let Err(payload) = catch_unwind(AssertUnwindSafe(move || drop(value))) {
        keep_first(payload, panicked);
    }
}

/// Keeps `payload` in `panicked` if it holds none yet; says it otherwise.
pub(crate) fn keep_first(payload: Box<dyn Any + Send>, panicked: &mut Option<Box<dyn Any + Send>>) {
    match panicked {
        None => *panicked = Some(payload),
        Some(_) => crate::panics::say_and_drop(
            "a task's `Drop` panicked too, while its nursery was being dropped".into(),
            payload,
        ),
    }
}

/// A waker for `key`, queued for its first poll: a spare one if there is
/// one (invariant 5), else a new one.
fn waker_for(spare: &mut Vec<Arc<TaskWaker>>, wakeup: &Arc<Wakeup>, key: usize) -> Arc<TaskWaker> {
    match spare.pop() {
        Some(waker) => {
            waker.reassign(key);
            waker
        }
        None => TaskWaker::new(key, wakeup),
    }
}

struct Child<C> {
    future: C,
    /// The waker the child kept, if it kept one (invariant 8).
    waker: Option<Arc<TaskWaker>>,
}

/// The `QUEUED` bits of the children polled with the probe (invariant 8),
/// one bit per key.
#[derive(Default)]
struct Bits {
    words: Vec<u64>,
}

impl Bits {
    #[inline(always)]
    fn set(&mut self, key: usize) -> bool {
        let (word, bit) = (key / 64, 1 << (key % 64));
        if word >= self.words.len() {
            self.grow(word);
        }
        let before = self.words[word];
        self.words[word] = before | bit;
        before & bit == 0
    }

    #[cold]
    #[inline(never)]
    fn grow(&mut self, word: usize) {
        self.words.resize(word + 1, 0);
    }

    /// Clears the bit; true if it was set.
    #[inline(always)]
    fn take(&mut self, key: usize) -> bool {
        let (word, bit) = (key / 64, 1 << (key % 64));
        self.words.get_mut(word).is_some_and(|w| {
            let before = *w;
            *w = before & !bit;
            before & bit != 0
        })
    }

    fn clear(&mut self) {
        self.words.clear();
    }
}

/// How a polled child ended.
pub(crate) type CaughtPoll<O> = Result<O, Box<dyn Any + Send>>;

/// What a poll of a child found.
pub(crate) enum Polled<O> {
    /// The child was not queued (a stale wake): it was not polled.
    Idle,
    /// It waits at a hatchery await; what it did in this poll.
    Parked(Flags),
    /// It waits in a future that cannot see cancellation (`cancel::foreign`);
    /// the data address of the waker it was polled with names it for the
    /// holds (`context` invariant 4).
    Unparked(usize),
    /// It finished (it has left the set).
    Done(CaughtPoll<O>),
    /// It finished, then its `Drop` panicked with this payload: both count.
    DropPanicked(CaughtPoll<O>, Box<dyn Any + Send>),
}

pub(crate) struct Children<C> {
    slab: ChunkSlab<Child<C>>,
    wakeup: Arc<Wakeup>,
    /// Reused buffer for the keys being polled.
    batch: Vec<usize>,
    /// Wakers of finished children, ready for reuse (invariant 5).
    spare: Vec<Arc<TaskWaker>>,
    /// The waker children that own none are polled with (invariant 8).
    probe: Option<Arc<TaskWaker>>,
    /// Their `QUEUED` bits (invariant 8).
    queued: Bits,
    /// Those of them woken while the probe polled them, for the next poll
    /// (invariant 9), and whether there is any.
    requeued: Bits,
    any_requeued: bool,
    /// `requeued` being polled (kept for its buffer).
    requeued_now: Bits,
    /// Who the children are, readable by the report (invariant 6).
    table: Arc<TaskTable>,
    /// Children that finished without a failure since the last `recycle`;
    /// their table entries are removed in one go.
    finished: Vec<usize>,
    /// What the report should know of children polled since the last
    /// `recycle` in the cancelled scope (`context::Flags` bits), written to
    /// the table in one go.
    notes: Vec<(usize, u8)>,
    /// The spawn site of the child admitted last in this poll, and its
    /// cohort in the table.
    last_site: Option<Site>,
}

impl<C> Children<C> {
    pub(crate) fn new(
        wakeup: Arc<Wakeup>,
        spare: Vec<Arc<TaskWaker>>,
        table: Arc<TaskTable>,
        buffers: Buffers,
    ) -> Self {
        let mut children = Children {
            slab: ChunkSlab::default(),
            wakeup,
            batch: Vec::new(),
            spare,
            probe: None,
            queued: Bits::default(),
            requeued: Bits::default(),
            any_requeued: false,
            requeued_now: Bits::default(),
            table,
            finished: Vec::new(),
            notes: Vec::new(),
            last_site: None,
        };
        children.reuse(buffers);
        children
    }

    /// Takes the buffers a dropped nursery left (invariant 10).
    fn reuse(&mut self, buffers: Buffers) {
        self.slab.reuse(buffers.slab);
        self.table.reuse(buffers.table);
        let [queued, requeued, requeued_now] = buffers.bits;
        (
            self.queued.words,
            self.requeued.words,
            self.requeued_now.words,
        ) = (queued, requeued, requeued_now);
        [self.batch, self.finished] = buffers.keys;
    }

    /// Notes what a child polled in the cancelled scope did, for the report.
    pub(crate) fn note(&mut self, key: usize, flags: Flags) {
        self.notes.push((key, flags.bits()));
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }

    /// Takes the keys woken so far (wakes after this go to the next batch).
    /// Called first in each poll of the nursery.
    pub(crate) fn take_woken(&mut self) -> Vec<usize> {
        // A new poll: its children join new cohorts.
        self.last_site = None;
        let mut batch = std::mem::take(&mut self.batch);
        batch.clear();
        std::mem::swap(&mut *self.wakeup.ready.lock().recover(), &mut batch);
        batch
    }

    /// Whether some children were woken during their poll with the probe
    /// (invariant 9): the nursery must be polled again.
    pub(crate) fn any_requeued(&self) -> bool {
        self.any_requeued
    }

    /// Queues the child at `key` for another poll, as if it woke itself:
    /// its last poll may have left a stale `PARKED` (`cancel::foreign`).
    pub(crate) fn requeue(&mut self, key: usize) {
        let Some(child) = self.slab.get_mut(key) else {
            return;
        };
        match &child.waker {
            Some(waker) => ArcWake::wake_by_ref(waker),
            None => {
                self.queued.set(key);
                self.requeued.set(key);
                self.any_requeued = true;
            }
        }
    }

    /// The data address of the waker the child at `key` is polled with
    /// (`context` invariant 4): its own, or the probe's.
    pub(crate) fn task(&mut self, key: usize) -> usize {
        match self
            .slab
            .get_mut(key)
            .and_then(|child| child.waker.as_ref())
        {
            Some(waker) => Arc::as_ptr(waker) as usize,
            None => self
                .probe
                .as_ref()
                .map_or(0, |probe| Arc::as_ptr(probe) as usize),
        }
    }

    /// Polls the children woken during their poll with the probe before this
    /// call (invariant 9), in key order, with `poll`.
    pub(crate) fn poll_requeued(&mut self, mut poll: impl FnMut(&mut Self, usize)) {
        if !std::mem::take(&mut self.any_requeued) {
            return;
        }
        let mut now = std::mem::take(&mut self.requeued_now);
        std::mem::swap(&mut now, &mut self.requeued);
        for (index, word) in now.words.iter_mut().enumerate() {
            let mut bits = std::mem::take(word);
            while bits != 0 {
                let key = index * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                poll(self, key);
            }
        }
        self.requeued_now = now;
    }

    /// One more than the highest key a child may have.
    pub(crate) fn key_end(&self) -> usize {
        self.slab.key_end()
    }

    /// Marks the child at `key` queued, for a poll right away (the nursery's
    /// scope changed: nursery invariant 5); false if there is no child there
    /// or it is queued already.
    pub(crate) fn mark_queued(&mut self, key: usize) -> bool {
        match self.slab.get_mut(key) {
            None => false,
            Some(Child {
                waker: Some(waker), ..
            }) => waker.mark_queued(),
            Some(Child { waker: None, .. }) => self.queued.set(key),
        }
    }

    /// Admits new children (one table lock for all of them) and appends
    /// their keys to `keys`, each to be polled once at once with
    /// `poll_admitted` (invariant 1).
    pub(crate) fn admit(
        &mut self,
        new: impl IntoIterator<Item = (C, TaskInfo)>,
        keys: &mut Vec<usize>,
    ) {
        // Keys freed since the last recycle may be reused below: their old
        // entries go first.
        self.table.note(&self.notes);
        self.notes.clear();
        self.table.remove_all(&self.finished);
        self.finished.clear();
        let mut admit = self.table.admit(self.last_site);
        for (future, info) in new {
            let key = self.slab.insert(Child {
                future,
                waker: None,
            });
            admit.insert(key, info);
            // Queued for its first poll by being in `keys` (invariant 1):
            // `poll_admitted` needs no bit.
            keys.push(key);
        }
        self.last_site = admit.last();
    }

    /// Returns a drained batch buffer for reuse, and removes the table
    /// entries of the children that finished.
    pub(crate) fn recycle(&mut self, mut batch: Vec<usize>) {
        batch.clear();
        self.batch = batch;
        // Notes first: a noted child may have finished since.
        self.table.note(&self.notes);
        self.notes.clear();
        self.table.remove_all(&self.finished);
        self.finished.clear();
    }

    /// Polls the child at `key` if it is really queued (invariant 2).
    /// Returns its outcome once it finished (it is then removed). A failed
    /// child's identity comes from `failed`; a successful one's table entry
    /// goes at the next `recycle`.
    #[inline]
    pub(crate) fn poll<O>(&mut self, key: usize, here: Here<'_>) -> Polled<O>
    where
        C: std::future::Future<Output = O> + Unpin,
    {
        self.poll_child(key, false, here)
    }

    /// Polls a child `admit` just put in `keys`, for its first poll.
    #[inline]
    pub(crate) fn poll_admitted<O>(&mut self, key: usize, here: Here<'_>) -> Polled<O>
    where
        C: std::future::Future<Output = O> + Unpin,
    {
        self.poll_child(key, true, here)
    }

    #[inline(always)]
    fn poll_child<O>(&mut self, key: usize, admitted: bool, here: Here<'_>) -> Polled<O>
    where
        C: std::future::Future<Output = O> + Unpin,
    {
        let Some(mut slot) = self.slab.occupied(key) else {
            return Polled::Idle;
        };
        let child = slot.get_mut();
        let future = Pin::new(&mut child.future);
        // Woken during its poll with the probe, which nobody kept.
        let mut woken = false;
        let task;
        let polled = match &child.waker {
            Some(waker) => {
                if !waker.take_queued() {
                    return Polled::Idle;
                }
                task = Arc::as_ptr(waker) as usize;
                poll_with(future, waker, here)
            }
            None => {
                if !admitted && !self.queued.take(key) {
                    return Polled::Idle;
                }
                // Invariant 1: a child leaves no bit to its slot's next one.
                debug_assert!(!admitted || !self.queued.take(key));
                let probe = self
                    .probe
                    .get_or_insert_with(|| waker_for(&mut self.spare, &self.wakeup, key));
                probe.state.store(key << SHIFT | RUNNING, Ordering::Relaxed);
                task = Arc::as_ptr(probe) as usize;
                let polled = poll_with(future, probe, here);
                // A child that holds something (`context` invariant 4) is
                // named by its waker's address from now on: it keeps it.
                let held = polled.1.held();
                match if held { None } else { probe.woken_if_unique() } {
                    // Nobody kept it: a wake during the poll is the child's
                    // bit (below, if it is still there to be polled).
                    Some(woke) => woken = woke,
                    // Kept: it is the child's own waker from now on.
                    None => {
                        probe.stop_running();
                        child.waker = self.probe.take();
                    }
                }
                polled
            }
        };
        let outcome = match polled {
            (Ok(Poll::Pending), flags) => {
                if woken {
                    // Polled again on the nursery's next poll (invariant 9).
                    self.queued.set(key);
                    self.requeued.set(key);
                    self.any_requeued = true;
                }
                return if flags.parked() {
                    Polled::Parked(flags)
                } else {
                    Polled::Unparked(task)
                };
            }
            (Ok(Poll::Ready(output)), _) => Ok(output),
            (Err(payload), _) => Err(payload),
        };
        let child = slot.remove();
        self.retire(key, child.waker);
        // The child's `Drop` runs here; a panic in it is the child's too.
        match catch_unwind(AssertUnwindSafe(move || drop(child.future))) {
            Ok(()) => Polled::Done(outcome),
            Err(payload) => Polled::DropPanicked(outcome, payload),
        }
    }

    /// Drops the child at `key` unfinished: it waits in a future that cannot
    /// see its scope's cancellation (`cancel::foreign`). `Err` holds the
    /// panic of its `Drop`.
    pub(crate) fn drop_child(&mut self, key: usize) -> Result<(), Box<dyn Any + Send>> {
        if self.slab.get_mut(key).is_none() {
            return Ok(());
        }
        let child = self.slab.remove(key);
        // Invariant 1: no bit is left to the slot's next child.
        self.queued.take(key);
        self.requeued.take(key);
        self.retire(key, child.waker);
        catch_unwind(AssertUnwindSafe(move || drop(child.future)))
    }

    /// Keeps a gone child's waker for reuse and queues its table entry for
    /// removal (invariant 6).
    #[inline(always)]
    fn retire(&mut self, key: usize, waker: Option<Arc<TaskWaker>>) {
        if let Some(waker) = waker {
            self.keep_spare(waker);
        }
        // Flushed before this key joins the list, not after: the caller
        // may still need this child's entry (`failed`).
        if self.finished.len() >= FINISHED_BATCH {
            self.flush_finished();
        }
        self.finished.push(key);
    }

    /// Keeps a gone child's waker for reuse, up to what the thread's pool
    /// would keep: a million finished children need no list of a million
    /// wakers.
    fn keep_spare(&mut self, waker: Arc<TaskWaker>) {
        if Arc::strong_count(&waker) == 1 && self.spare.len() < MAX_SPARE {
            self.spare.push(waker);
        }
    }

    #[cold]
    fn flush_finished(&mut self) {
        self.table.remove_all(&self.finished);
        self.finished.clear();
    }

    /// The identity of a child that just finished with a failure.
    pub(crate) fn failed(&mut self, key: usize) -> TaskInfo {
        if let Some(at) = self.finished.iter().rposition(|&k| k == key) {
            self.finished.swap_remove(at);
        }
        self.table
            .remove(key)
            .expect("a finished child has a table entry (invariant 6)")
    }

    /// A waker for the nursery body, queued for its first poll.
    pub(crate) fn body_waker(&mut self) -> Arc<TaskWaker> {
        let waker = waker_for(&mut self.spare, &self.wakeup, BODY);
        self.wakeup.push(BODY);
        waker
    }

    /// Keeps the spare wakers and the buffers (with the admission queue's,
    /// `incoming`) for this thread's next nurseries (the nursery is being
    /// dropped).
    #[cfg_attr(hatchery_loom, allow(unused_variables))]
    pub(crate) fn give_back(&mut self, incoming: Buffers) {
        if let Some(probe) = self.probe.take()
            && Arc::strong_count(&probe) == 1
        {
            self.spare.push(probe);
        }
        #[cfg(not(hatchery_loom))]
        if !self.spare.is_empty() {
            pool::give_back(Arc::clone(&self.wakeup), std::mem::take(&mut self.spare));
        }
        // Invariant 10: every child is gone by now (`clear`).
        #[cfg(not(hatchery_loom))]
        if self.slab.is_empty() {
            let mut bits = [&mut self.queued, &mut self.requeued, &mut self.requeued_now]
                .map(|bits| std::mem::take(&mut bits.words));
            bits.iter_mut().for_each(Vec::clear);
            let mut keys = [&mut self.batch, &mut self.finished].map(std::mem::take);
            keys.iter_mut().for_each(Vec::clear);
            pool::give_buffers(Buffers {
                slab: self.slab.take_chunks(),
                table: self.table.take_chunks(),
                bits,
                keys,
                ..incoming
            });
        }
    }

    /// Drops every child at once (the hard cancel), each on its own: a
    /// panic in one child's `Drop` neither skips the others nor aborts the
    /// process (a second panic while unwinding would). The first such
    /// panic is kept in `panicked` (if it holds none yet), the others said.
    pub(crate) fn clear(&mut self, panicked: &mut Option<Box<dyn Any + Send>>) {
        self.table.clear();
        for key in 0..self.slab.key_end() {
            if self.slab.get_mut(key).is_some() {
                let child = self.slab.remove(key);
                drop_caught(child, panicked);
            }
        }
        self.slab.clear();
        self.queued.clear();
        self.requeued.clear();
        self.any_requeued = false;
        self.finished.clear();
    }
}

#[cfg(all(test, not(hatchery_loom)))]
mod tests {
    use std::future::Future;
    use std::panic::Location;
    use std::sync::Mutex;
    use std::sync::atomic::Ordering;
    use std::task::{Context, Poll};

    use super::*;
    use crate::Nursery;
    use crate::nursery::table::TaskTable;
    use crate::typed::nursery;

    #[test]
    fn a_finished_child_leaves_the_set() {
        let mut children: Children<std::future::Ready<Result<(), crate::Cancelled>>> =
            Children::new(
                Arc::new(Wakeup::default()),
                Vec::new(),
                TaskTable::new(Location::caller()),
                Buffers::default(),
            );
        let mut keys = Vec::new();
        children.admit(
            [(std::future::ready(Ok(())), TaskInfo::new(None))],
            &mut keys,
        );
        assert!(!children.is_empty());
        assert_eq!(keys, [0]);
        assert!(matches!(
            crate::context::here(|here| children.poll_admitted(0, here)),
            Polled::Done(Ok(Ok(())))
        ));
        assert!(children.is_empty());
    }

    /// Counts its wakes.
    #[derive(Default)]
    struct CountingWaker(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Runs a nursery whose first child keeps a clone of its waker after
    /// finishing, next to three children that yield once; returns the kept
    /// waker.
    fn finish_a_nursery_keeping_a_waker() -> std::task::Waker {
        use crate::{Cancelled, typed::nursery};
        let kept = Mutex::new(None);
        let kept_ref = &kept;
        futures_lite::future::block_on(nursery(|n: Nursery<'_, Cancelled>| async move {
            n.spawn(async move {
                let mut first = true;
                std::future::poll_fn(|cx| {
                    if std::mem::take(&mut first) {
                        *kept_ref.lock().unwrap() = Some(cx.waker().clone());
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                    Poll::Ready(())
                })
                .await;
                Ok(())
            });
            for _ in 0..3 {
                n.spawn(async {
                    futures_lite::future::yield_now().await;
                    Ok(())
                });
            }
            Ok(())
        }))
        .unwrap();
        kept.into_inner().unwrap().unwrap()
    }

    #[test]
    fn invariant_5_a_waker_a_finished_task_kept_never_wakes_a_later_nursery() {
        use crate::{Cancelled, sleep_forever, typed::nursery};
        let kept = finish_a_nursery_keeping_a_waker();
        // Same thread: this nursery may reuse the first one's spare wakers,
        // but not its wakeup, which the kept waker still holds.
        let outer = Arc::new(CountingWaker::default());
        let waker = std::task::Waker::from(Arc::clone(&outer));
        let mut second = Box::pin(nursery(|n: Nursery<'_, Cancelled>| async move {
            n.spawn(async {
                sleep_forever().await?;
                Ok(())
            });
            sleep_forever().await?;
            Ok(())
        }));
        let mut cx = Context::from_waker(&waker);
        // Polled until it waits with the waker registered. The body's spawn
        // woke nobody: the poll it happened in admitted the child.
        assert!(second.as_mut().poll(&mut cx).is_pending());
        assert!(second.as_mut().poll(&mut cx).is_pending());
        let woken = outer.0.load(Ordering::Relaxed);
        assert_eq!(woken, 0);
        kept.wake();
        assert_eq!(
            outer.0.load(Ordering::Relaxed),
            woken,
            "a stale waker woke another nursery"
        );
    }

    #[test]
    fn invariant_7_a_later_nursery_on_the_thread_reuses_the_spare_wakers() {
        // Once the kept waker is gone, the next nursery on this thread gets
        // the first one's spare wakers: the probe the three children that
        // only yielded were polled with (they kept no waker of their own);
        // the first child's was dropped, a clone of it being kept.
        drop(finish_a_nursery_keeping_a_waker());
        let (_wakeup, spare) = Wakeup::take();
        assert_eq!(spare.len(), 1, "the probe");
    }

    #[test]
    fn invariant_10_a_later_nursery_on_the_thread_reuses_the_buffers() {
        let run = || {
            futures_lite::future::block_on(nursery(
                |n: Nursery<'_, crate::Cancelled>| async move {
                    for _ in 0..3000 {
                        n.spawn(async {
                            futures_lite::future::yield_now().await;
                            Ok(())
                        });
                    }
                    Ok(())
                },
            ))
            .unwrap();
        };
        run();
        let kept = Buffers::take();
        // 3,000 children: slab chunks of 16, 16, 32, …, 1024, 1024.
        let slots: usize = kept.slab.iter().map(Vec::capacity).sum();
        assert!(slots >= 3000, "the slab's chunks were kept: {slots} slots");
        assert!(kept.slab.iter().all(Vec::is_empty));
        assert!(!kept.table.0.is_empty(), "the table's entries were kept");
        assert!(
            !kept.incoming.is_empty(),
            "some of the spawn burst's chunks were kept"
        );
        // Given back, a nursery takes them (and gives them back again).
        pool::give_buffers(kept);
        run();
        let again = Buffers::take();
        assert_eq!(again.slab.iter().map(Vec::capacity).sum::<usize>(), slots);
        // A thread keeps a bounded amount.
        assert!(again.bytes() <= pool::MAX_BYTES);
    }

    /// A child that counts its polls and, if `keep`, stores its waker on
    /// the first one; it finishes once `done` is set.
    fn counted(
        polls: &std::sync::atomic::AtomicUsize,
        kept: Option<&Mutex<Option<std::task::Waker>>>,
        done: &std::sync::atomic::AtomicBool,
    ) -> impl Future<Output = Result<(), crate::Cancelled>> {
        std::future::poll_fn(move |cx| {
            if polls.fetch_add(1, Ordering::Relaxed) == 0
                && let Some(kept) = kept
            {
                *kept.lock().unwrap() = Some(cx.waker().clone());
            }
            if done.load(Ordering::Relaxed) {
                Poll::Ready(Ok(()))
            } else {
                Poll::Pending
            }
        })
    }

    #[test]
    fn invariant_2_and_8_a_kept_waker_wakes_its_own_child_and_no_other() {
        use std::sync::atomic::{AtomicBool, AtomicUsize};

        use crate::{CancelHandle, Cancelled, typed::nursery};
        // A keeps its waker; B and C never do (they are polled with the
        // shared probe). C is spawned after A finished, into A's slot.
        let [a, b, c] = [(); 3].map(|()| AtomicUsize::new(0));
        let [a_done, b_done, c_done] = [(); 3].map(|()| AtomicBool::new(false));
        let kept = Mutex::new(None);
        let body_waker = Mutex::new(None::<std::task::Waker>);
        let scope = Mutex::new(None::<CancelHandle>);
        let spawn_c = AtomicBool::new(false);
        let (a, b, c, kept, spawn_c) = (&a, &b, &c, &kept, &spawn_c);
        let (a_done, b_done, c_done) = (&a_done, &b_done, &c_done);
        let (body_waker, scope) = (&body_waker, &scope);
        let outer = Arc::new(CountingWaker::default());
        let waker = std::task::Waker::from(Arc::clone(&outer));
        let mut cx = Context::from_waker(&waker);
        let mut run = Box::pin(nursery(|n: Nursery<'_, Cancelled>| async move {
            *scope.lock().unwrap() = Some(n.cancel_scope());
            n.spawn(counted(a, Some(kept), a_done));
            n.spawn(counted(b, None, b_done));
            std::future::poll_fn(|cx| {
                *body_waker.lock().unwrap() = Some(cx.waker().clone());
                if spawn_c.swap(false, Ordering::Relaxed) {
                    n.spawn(counted(c, None, c_done));
                }
                if b_done.load(Ordering::Relaxed) {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            })
            .await;
            Ok(())
        }));
        assert!(run.as_mut().poll(&mut cx).is_pending());
        let polls = || [a, b, c].map(|n| n.load(Ordering::Relaxed));
        assert_eq!(polls(), [1, 1, 0]);

        // A's waker reaches A, and only A.
        kept.lock().unwrap().as_ref().unwrap().wake_by_ref();
        assert_eq!(outer.0.load(Ordering::Relaxed), 1);
        assert!(run.as_mut().poll(&mut cx).is_pending());
        assert_eq!(polls(), [2, 1, 0]);

        // A finishes; C takes its slot. A's old waker then polls nobody.
        a_done.store(true, Ordering::Relaxed);
        kept.lock().unwrap().as_ref().unwrap().wake_by_ref();
        assert!(run.as_mut().poll(&mut cx).is_pending());
        assert_eq!(polls(), [3, 1, 0]);
        spawn_c.store(true, Ordering::Relaxed);
        body_waker.lock().unwrap().as_ref().unwrap().wake_by_ref();
        assert!(run.as_mut().poll(&mut cx).is_pending());
        assert_eq!(polls(), [3, 1, 1], "C admitted and polled once");
        kept.lock().unwrap().take().unwrap().wake();
        assert!(run.as_mut().poll(&mut cx).is_pending());
        assert_eq!(polls(), [3, 1, 1], "a stale waker polled a child");

        // B and C have no waker of their own; the scope's cancel reaches
        // them, and the body.
        b_done.store(true, Ordering::Relaxed);
        c_done.store(true, Ordering::Relaxed);
        scope.lock().unwrap().take().unwrap().cancel();
        // Everything finished in that poll: leaving is a schedule point (it
        // yields once), then the nursery returns.
        assert!(run.as_mut().poll(&mut cx).is_pending());
        assert!(matches!(run.as_mut().poll(&mut cx), Poll::Ready(Ok(_))));
        assert_eq!(polls(), [3, 2, 2]);
    }

    /// Runs `future` to completion on this thread, polling it with
    /// `waker`; returns how many polls it took.
    fn drive<F: Future>(future: F, waker: &std::task::Waker) -> (F::Output, usize) {
        let mut future = Box::pin(future);
        let mut cx = Context::from_waker(waker);
        for polls in 1..=100 {
            if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
                return (out, polls);
            }
        }
        panic!("stalled: 100 polls and not done (a lost wake)")
    }

    #[test]
    fn invariant_1_a_wake_during_the_poll_is_never_missed_and_never_doubled() {
        use std::sync::atomic::AtomicUsize;
        let polls = AtomicUsize::new(0);
        let polls = &polls;
        let waker = std::task::Waker::from(Arc::new(CountingWaker::default()));
        let (out, _) = drive(
            nursery(|n: Nursery<'_, crate::Cancelled>| async move {
                n.spawn(std::future::poll_fn(move |cx| {
                    // Woken twice during its first poll: polled once more.
                    if polls.fetch_add(1, Ordering::Relaxed) == 0 {
                        cx.waker().wake_by_ref();
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                    Poll::Ready(Ok(()))
                }));
                Ok(())
            }),
            &waker,
        );
        out.unwrap();
        assert_eq!(polls.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn invariant_9_a_wake_during_the_poll_reaches_the_child_whether_it_kept_the_waker_or_not() {
        use std::sync::atomic::AtomicUsize;
        // One child wakes the waker it was polled with (the probe, never
        // kept); the other clones it, wakes the clone during the same poll,
        // and keeps it. Both must be polled again: the wakes were absorbed
        // while the probe was running.
        let (yielder, keeper) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let (yielder, keeper) = (&yielder, &keeper);
        let kept = Mutex::new(None::<std::task::Waker>);
        let kept = &kept;
        let waker = std::task::Waker::from(Arc::new(CountingWaker::default()));
        let (out, _) = drive(
            nursery(|n: Nursery<'_, crate::Cancelled>| async move {
                n.spawn(std::future::poll_fn(move |cx| {
                    if yielder.fetch_add(1, Ordering::Relaxed) < 3 {
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                    Poll::Ready(Ok(()))
                }));
                n.spawn(std::future::poll_fn(move |cx| {
                    if keeper.fetch_add(1, Ordering::Relaxed) == 0 {
                        let clone = cx.waker().clone();
                        clone.wake_by_ref();
                        *kept.lock().unwrap() = Some(clone);
                        return Poll::Pending;
                    }
                    Poll::Ready(Ok(()))
                }));
                Ok(())
            }),
            &waker,
        );
        out.unwrap();
        assert_eq!(yielder.load(Ordering::Relaxed), 4);
        assert_eq!(keeper.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn invariant_1_a_child_that_wakes_itself_and_finishes_leaves_no_bit_to_its_slot() {
        use crate::{Cancelled, sleep_forever};
        // The first child wakes itself and finishes in the same poll; the
        // second takes its slot and waits on the nursery's scope (covered:
        // only the nursery's pass over its children on a change reaches it).
        // The cancel must reach it: a bit left set by the first would make
        // the pass skip it, and the nursery would never end.
        let waker = std::task::Waker::from(Arc::new(CountingWaker::default()));
        let (out, _) = drive(
            nursery(|n: Nursery<'_, Cancelled>| async move {
                n.spawn(std::future::poll_fn(|cx| {
                    cx.waker().wake_by_ref();
                    Poll::Ready(Ok(()))
                }));
                crate::checkpoint().await?;
                n.spawn(async {
                    sleep_forever().await?;
                    Ok(())
                });
                crate::checkpoint().await?;
                n.cancel_scope().cancel();
                Ok(())
            }),
            &waker,
        );
        assert!(
            matches!(out, Ok(Some(()))),
            "the cancel reached the second child"
        );
    }

    #[test]
    fn invariant_3_children_borrow_the_frame_while_a_kept_waker_outlives_it() {
        let kept = Mutex::new(None::<std::task::Waker>);
        {
            let local = String::from("on this frame");
            let (local, kept) = (&local, &kept);
            futures_lite::future::block_on(nursery(
                |n: Nursery<'_, crate::Cancelled>| async move {
                    n.spawn(std::future::poll_fn(move |cx| {
                        assert_eq!(local, "on this frame"); // a borrow, not 'static
                        *kept.lock().unwrap() = Some(cx.waker().clone());
                        Poll::Ready(Ok(()))
                    }));
                    Ok(())
                },
            ))
            .unwrap();
        }
        // The frame and the nursery are gone; the waker reaches only the
        // 'static wakeup, so waking it is harmless.
        kept.into_inner().unwrap().unwrap().wake();
    }

    #[test]
    fn invariant_4_only_the_push_that_fills_the_empty_queue_wakes_the_poller() {
        let kept = Mutex::new(Vec::<std::task::Waker>::new());
        let go = std::sync::atomic::AtomicBool::new(false);
        let (kept, go) = (&kept, &go);
        let outer = Arc::new(CountingWaker::default());
        let waker = std::task::Waker::from(Arc::clone(&outer));
        let mut run = Box::pin(nursery(|n: Nursery<'_, crate::Cancelled>| async move {
            for _ in 0..3 {
                n.spawn(std::future::poll_fn(move |cx| {
                    if go.load(Ordering::Relaxed) {
                        return Poll::Ready(Ok(()));
                    }
                    kept.lock().unwrap().push(cx.waker().clone());
                    Poll::Pending
                }));
            }
            Ok(())
        }));
        let mut cx = Context::from_waker(&waker);
        assert!(run.as_mut().poll(&mut cx).is_pending());
        let before = outer.0.load(Ordering::Relaxed);
        go.store(true, Ordering::Relaxed);
        for waker in kept.lock().unwrap().drain(..) {
            waker.wake();
        }
        assert_eq!(
            outer.0.load(Ordering::Relaxed),
            before + 1,
            "three wakes, one wake of the poller"
        );
        while run.as_mut().poll(&mut cx).is_pending() {}
    }

    #[test]
    fn invariant_6_every_live_child_has_a_table_entry() {
        use crate::{Report, sleep};
        use std::time::Duration;
        futures_lite::future::block_on(nursery(|n: Nursery<'_, crate::Cancelled>| async move {
            for millis in [1, 1, 50, 50, 50] {
                n.spawn(async move {
                    sleep(Duration::from_millis(millis)).await?;
                    Ok(())
                });
            }
            crate::checkpoint().await?;
            assert_eq!(Report::capture().tasks().len(), 5);
            sleep(Duration::from_millis(20)).await?;
            assert_eq!(
                Report::capture().tasks().len(),
                3,
                "the two that finished left"
            );
            Ok(())
        }))
        .unwrap();
    }
}
