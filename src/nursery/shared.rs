//! What the handles of a nursery share with the nursery future: its scope's
//! node, its child table, the wakeup its children's wakers reach, and the
//! admission queue of children spawned but not admitted yet (`incoming`).
//! Nursery invariant 1 (nothing spawned is ever lost) is kept here.

use std::collections::VecDeque;
use std::panic::Location;
use std::sync::OnceLock;
use std::task::Waker;

use super::children::{Buffers, TaskWaker, Wakeup};
use super::table::TaskTable;
use crate::cancel::tree::Kind;
use crate::cancel::tree::Node;
use crate::chunked::{convert, recast};
use crate::error::SpawnError;
use crate::spawn::{Parallel, RemoteHandle};
use crate::sync::atomic::{AtomicBool, Ordering};
use crate::sync::{Arc, Mutex, MutexGuard, Recover};
use crate::task::TaskInfo;

/// What the handles of a nursery share with the nursery future.
pub(crate) struct Shared<C, E> {
    pub(super) node: Arc<Node>,
    /// What its counted parallel children share with it, made
    /// when the first one starts.
    pub(super) parallel: OnceLock<Arc<Parallel<E>>>,
    pub(super) table: Arc<TaskTable>,
    pub(super) wakeup: Arc<Wakeup>,
    pub(super) incoming: Mutex<Incoming<C>>,
    /// The nursery future is in a poll that will still drain `incoming`: a
    /// spawn then need not wake it. Set at the start of each poll, cleared
    /// under the `incoming` lock by the call that finds nothing more to admit
    /// (so a spawn after that point wakes the nursery). A parallel child's
    /// start reads it outside that lock, only to save a wake for its
    /// admission time (the report's age): its completion never depends on
    /// it (`try_close` registers the nursery's waker under the lock the
    /// start takes).
    pub(super) draining: AtomicBool,
    /// Some child was started off the nursery's thread (a parallel child, a
    /// blocking closure). The nursery then keeps a timer at its scope's
    /// effective deadline, as for a task parked in a foreign future: under
    /// `testing::run` only the nursery's thread runs on the virtual clock,
    /// and a deadline that nothing on it waits for would never come.
    pub(super) off_thread: AtomicBool,
}

/// New children per chunk of the incoming queue: a chunk (48 bytes each)
/// stays under 1 KiB, the size from which glibc's `malloc` first merges every
/// small block freed since (`malloc_consolidate`), which would make the next
/// few thousand small allocations (child futures) slow.
const INCOMING_CHUNK: usize = 20;
/// The list of chunks keeps room for this many after a burst (24 KiB; a
/// burst of 20,480 spawns).
const MAX_QUEUED_CHUNKS: usize = 1024;
/// At most this many drained chunks are kept for reuse (a burst of 16,384
/// spawns; past it, the memory of a burst is given back once admitted).
const MAX_SPARE_CHUNKS: usize = 32;

/// Children spawned but not yet admitted by the nursery future, in chunks:
/// a burst of spawns never reallocates and copies the queue, and the memory
/// of a burst is given back once it has been admitted.
pub(super) struct Incoming<C> {
    chunks: VecDeque<Vec<(C, TaskInfo)>>,
    /// Children in `chunks`.
    len: usize,
    /// Drained chunks kept for reuse (at most `MAX_SPARE_CHUNKS`).
    spare: Vec<Vec<(C, TaskInfo)>>,
    pub(super) closed: bool,
    /// `start()` calls whose child has not been handed over yet.
    pending_starts: usize,
}

impl<C, E> Shared<C, E> {
    /// A nursery's shared state, and spare wakers and buffers for its
    /// children (children invariants 7 and 10).
    pub(super) fn new(
        location: &'static Location<'static>,
    ) -> (Self, Vec<Arc<TaskWaker>>, Buffers) {
        let table = TaskTable::new(location);
        let (wakeup, spare) = Wakeup::take();
        let mut buffers = Buffers::take();
        let shared = Shared {
            node: Node::new(None, false, Kind::Nursery(Arc::clone(&table) as _)),
            parallel: OnceLock::new(),
            table,
            wakeup,
            draining: AtomicBool::new(false),
            off_thread: AtomicBool::new(false),
            incoming: Mutex::new(Incoming {
                chunks: VecDeque::from(recast(std::mem::take(&mut buffers.queue))),
                len: 0,
                spare: convert(std::mem::take(&mut buffers.incoming)),
                closed: false,
                pending_starts: 0,
            }),
        };
        (shared, spare, buffers)
    }

    /// The admission queue's buffers, empty, for the thread's next nursery
    /// (once closed: nothing is admitted any more).
    pub(super) fn take_buffers(&self) -> Buffers {
        let mut incoming = self.lock();
        debug_assert!(incoming.closed && incoming.chunks.is_empty());
        Buffers {
            incoming: convert(std::mem::take(&mut incoming.spare)),
            queue: recast(Vec::from(std::mem::take(&mut incoming.chunks))),
            ..Buffers::default()
        }
    }

    /// Notes that a child was started off the nursery's thread
    /// (`off_thread`); once, so that later starts do not write the line.
    pub(super) fn note_off_thread(&self) {
        if !self.off_thread.load(Ordering::Relaxed) {
            self.off_thread.store(true, Ordering::Relaxed);
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Incoming<C>> {
        self.incoming.lock().recover()
    }

    pub(super) fn push(&self, child: C, info: TaskInfo) -> Result<(), SpawnError> {
        let first = {
            let mut incoming = self.lock();
            if incoming.closed {
                return Err(SpawnError::Closed);
            }
            incoming.push((child, info));
            incoming.len == 1 && !self.draining.load(Ordering::Relaxed)
        };
        // Only the spawn that makes `incoming` non-empty wakes the poller: it
        // drains the whole queue at once on the poll that wake causes. A spawn
        // during a poll that is still to drain it (the body's, most often)
        // wakes nobody.
        if first {
            self.wakeup.waker.wake();
        }
        Ok(())
    }

    /// Registers a `start()` in flight, which keeps the nursery open.
    pub(super) fn begin_start(&self) -> Result<(), SpawnError> {
        let mut incoming = self.lock();
        if incoming.closed {
            return Err(SpawnError::Closed);
        }
        incoming.pending_starts += 1;
        Ok(())
    }

    /// Ends a `start()`, handing its child over if it called `started`.
    pub(super) fn finish_start(&self, child: Option<(C, TaskInfo)>) -> Result<(), SpawnError> {
        let result = {
            let mut incoming = self.lock();
            incoming.pending_starts -= 1;
            match child {
                Some(_) if incoming.closed => Err(SpawnError::Closed),
                Some(child) => {
                    incoming.push(child);
                    Ok(())
                }
                None => Ok(()),
            }
        };
        self.wakeup.waker.wake();
        result
    }

    /// Closes the nursery if nothing can still arrive (invariant 1): no
    /// child waits to be admitted, no `start()` is in flight, no parallel
    /// child runs or left an outcome to record. `waker` is the nursery
    /// future's: when a parallel child keeps it open, the nursery is woken
    /// when that child ends (or at once, if it ended already and left an
    /// outcome since the nursery looked).
    pub(super) fn try_close(&self, waker: &Waker) -> bool {
        let mut incoming = self.lock();
        if incoming.closed || incoming.len != 0 || incoming.pending_starts != 0 {
            return incoming.closed;
        }
        let mut ended_since = false;
        let (closed, finished) = self.table.close_remote(|| {
            let Some(parallel) = self.parallel.get() else {
                return true;
            };
            // Registered before the count is read, under the lock every
            // start takes: a child started meanwhile wakes the nursery.
            parallel.register(waker);
            let running = parallel.running();
            ended_since = running == 0 && parallel.has_outcomes();
            running == 0 && !ended_since
        });
        incoming.closed = closed;
        drop(incoming);
        if closed {
            if let Some(parallel) = self.parallel.get() {
                // Nothing will wake the nursery through it any more.
                drop(parallel.take_waker());
            }
            self.table.give_back_remote(finished);
        } else if ended_since {
            waker.wake_by_ref();
        }
        closed
    }

    /// The state the nursery's counted parallel children
    /// share with it, and whether this call made it: the nursery has never
    /// registered its waker there then, and must be polled to do so.
    pub(super) fn parallel(&self) -> (&Arc<Parallel<E>>, bool) {
        if let Some(parallel) = self.parallel.get() {
            return (parallel, false);
        }
        let mut made = false;
        let parallel = self.parallel.get_or_init(|| {
            made = true;
            Arc::default()
        });
        (parallel, made)
    }

    /// Starts a parallel child counted in `parallel` rather than admitted
    /// to the slab (`spawn::Parallel`): `start` spawns it, under the lock
    /// that closes the nursery; the table keeps its task handle.
    pub(super) fn start_counted(
        &self,
        info: TaskInfo,
        start: impl FnOnce(Arc<Node>, TaskInfo, &Arc<Parallel<E>>) -> RemoteHandle,
    ) -> Result<(), SpawnError> {
        let (parallel, made) = self.parallel();
        let node = Arc::clone(&self.node);
        let unstamped = self
            .table
            .start_remote(info, |info| start(node, info, parallel))?;
        // The nursery gives the child its admission time in its next poll (a
        // poll that is still to come needs no wake), and registers its waker
        // with `parallel` if it never did (then it is woken in any case).
        if made || (unstamped && !self.draining.load(Ordering::Relaxed)) {
            self.wakeup.waker.wake();
        }
        Ok(())
    }

    /// Closes for good (on drop) and returns what was still waiting, to be
    /// dropped without the lock held (their `Drop` is user code). The list's
    /// buffer stays, for `take_buffers`. The parallel children still
    /// running are cancelled (their task handles dropped; their executor
    /// drops them).
    pub(super) fn close(&self) -> Vec<Vec<(C, TaskInfo)>> {
        let waiting = {
            let mut incoming = self.lock();
            incoming.closed = true;
            incoming.len = 0;
            incoming.chunks.drain(..).collect()
        };
        let handles = self.table.abandon_remote();
        if let Some(parallel) = self.parallel.get() {
            // Children still ending report to a nursery that is gone.
            drop(parallel.take_waker());
        }
        self.table.give_back_remote(handles);
        waiting
    }

    /// Hands back a drained chunk (if any) and takes the next one to admit,
    /// unless `budget` children have been taken already in this poll (it is
    /// set, on the first call, to the number waiting then). `Err(true)`:
    /// children are left waiting, and the nursery must poll again. Either
    /// `Err` ends the draining (spawns wake the nursery again).
    pub(super) fn next_chunk(
        &self,
        drained: Option<Vec<(C, TaskInfo)>>,
        budget: &mut Option<usize>,
    ) -> Result<Vec<(C, TaskInfo)>, bool> {
        let mut incoming = self.lock();
        if let Some(chunk) = drained
            && incoming.spare.len() < MAX_SPARE_CHUNKS
        {
            debug_assert!(chunk.is_empty());
            incoming.spare.push(chunk);
        }
        let left = budget.get_or_insert(incoming.len);
        if *left == 0 || incoming.len == 0 {
            // Nothing more this poll: later spawns must wake the nursery.
            self.draining.store(false, Ordering::Relaxed);
            return Err(incoming.len > 0);
        }
        let chunk = incoming
            .chunks
            .pop_front()
            .expect("`len` counts the children in `chunks`");
        if incoming.chunks.is_empty() && incoming.chunks.capacity() > MAX_QUEUED_CHUNKS {
            // A burst of spawns is over: keep no list of its size.
            incoming.chunks.shrink_to(8);
        }
        incoming.len -= chunk.len();
        *left = left.saturating_sub(chunk.len());
        Ok(chunk)
    }
}

impl<C> Incoming<C> {
    pub(super) fn push(&mut self, child: (C, TaskInfo)) {
        match self.chunks.back_mut() {
            Some(chunk) if chunk.len() < INCOMING_CHUNK => chunk.push(child),
            _ => {
                let mut chunk = self.spare.pop().unwrap_or_else(|| {
                    Vec::with_capacity(if self.chunks.is_empty() {
                        4
                    } else {
                        INCOMING_CHUNK
                    })
                });
                chunk.push(child);
                self.chunks.push_back(chunk);
            }
        }
        self.len += 1;
    }
}
