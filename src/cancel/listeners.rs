//! The tasks waiting for a node's state to change: a list of wakers that
//! lives inside the node, so that listening allocates nothing.
//!
//! It replaces an `event_listener::Event` (one boxed listener per waiting
//! task, in a linked list): a nursery of a million sleeping children held a
//! million scattered allocations, each freed again on the way out. Here a
//! waiter is an entry in a chunked slab (`ChunkSlab`: 24 bytes, never
//! moved), found again by its key. It is built from `crate::sync`, so the
//! loom models explore the real thing.
//!
//! # Invariants
//!
//! 1. `listen` inserts the entry under the list lock; `notify` takes the same
//!    lock (after a `SeqCst` fence) before marking entries. So an entry inserted
//!    before `notify` took the lock is notified; one inserted after was
//!    inserted after the state change that `notify` reports, and its owner's
//!    re-check (listen, re-check, then sleep: `tree` invariant 5) sees that
//!    change.
//! 2. A notified entry stays notified until its listener is dropped: a poll
//!    after `notify` is ready however late it comes.
//! 3. No waker is woken or dropped under the lock: `notify` takes the wakers
//!    out in small batches and wakes them after unlocking, so a waker that
//!    runs code reaching this list cannot deadlock, and other threads can
//!    listen and leave between batches.

use std::task::{Context, Poll, Waker};

use crate::chunked::ChunkSlab;
use crate::sync::Recover;
use crate::sync::atomic::{Ordering, fence};
use crate::sync::{Mutex, MutexGuard};

/// How many wakers `notify` takes out per lock.
const BATCH: usize = 32;

/// Past this many keys, a list that empties gives its memory back.
const KEEP: usize = 1024;

struct Entry {
    notified: bool,
    waker: Option<Waker>,
}

#[derive(Default)]
pub(crate) struct Waiters {
    list: Mutex<List>,
}

#[derive(Default)]
struct List {
    entries: ChunkSlab<Entry>,
    /// One more than the highest key ever handed out (bounds `notify`'s walk).
    end: usize,
}

impl Waiters {
    fn lock(&self) -> MutexGuard<'_, List> {
        self.list.lock().recover()
    }

    /// Empties a list that nobody can reach any more (its node is about to
    /// be a thread's spare, `tree::Node::scope`), keeping its memory if it
    /// is small: `false` if it held more than its first chunk's keys (then
    /// the node is not kept).
    #[cfg_attr(hatchery_loom, allow(dead_code))] // no spare nodes there
    pub(crate) fn reset_if_small(&mut self) -> bool {
        let list = self.list.get_mut().recover();
        if list.end > 16 || !list.entries.is_empty() {
            return false;
        }
        if list.end > 0 {
            // Its free list starts over from key 0.
            list.entries.clear();
            list.end = 0;
        }
        true
    }

    /// Adds a waiter, not yet notified; returns its key.
    pub(crate) fn listen(&self) -> usize {
        let mut list = self.lock();
        let key = list.entries.insert(Entry {
            notified: false,
            waker: None,
        });
        list.end = list.end.max(key + 1);
        key
    }

    /// Ready once `key` has been notified (invariant 2); else remembers the
    /// task's waker.
    /// `listen`, with the task's waker registered at once, as a first
    /// `poll` returning `Pending` would: one lock instead of two.
    pub(crate) fn listen_with(&self, waker: &Waker) -> usize {
        let waker = waker.clone();
        let mut list = self.lock();
        let key = list.entries.insert(Entry {
            notified: false,
            waker: Some(waker),
        });
        list.end = list.end.max(key + 1);
        key
    }

    pub(crate) fn poll(&self, key: usize, cx: &mut Context<'_>) -> Poll<()> {
        let mut list = self.lock();
        let entry = list
            .entries
            .get_mut(key)
            .expect("a listener's entry lives as long as the listener");
        if entry.notified {
            return Poll::Ready(());
        }
        let old = match &entry.waker {
            Some(waker) if waker.will_wake(cx.waker()) => None,
            _ => entry.waker.replace(cx.waker().clone()),
        };
        drop(list);
        drop(old); // outside the lock (invariant 3)
        Poll::Pending
    }

    /// Removes the waiter at `key`.
    pub(crate) fn remove(&self, key: usize) {
        let mut list = self.lock();
        let entry = list.entries.remove(key);
        if list.entries.is_empty() && list.end > KEEP {
            list.entries.clear();
            list.end = 0;
        }
        drop(list);
        drop(entry); // its waker, outside the lock (invariant 3)
    }

    /// Notifies every waiter in the list and wakes those that wait.
    pub(crate) fn notify(&self) {
        fence(Ordering::SeqCst);
        let mut from = 0;
        loop {
            let mut wakers: [Option<Waker>; BATCH] = Default::default();
            let mut taken = 0;
            let mut list = self.lock();
            let end = list.end;
            while from < end && taken < BATCH {
                if let Some(entry) = list.entries.get_mut(from)
                    && !entry.notified
                {
                    entry.notified = true;
                    if let Some(waker) = entry.waker.take() {
                        wakers[taken] = Some(waker);
                        taken += 1;
                    }
                }
                from += 1;
            }
            drop(list);
            for waker in wakers.iter_mut().take(taken) {
                if let Some(waker) = waker.take() {
                    waker.wake();
                }
            }
            if from >= end {
                return;
            }
        }
    }
}

#[cfg(all(test, not(hatchery_loom)))]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    use super::*;

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn notify_wakes_every_waiting_task_across_batches_and_each_stays_ready() {
        let waiters = Waiters::default();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&count));
        let mut cx = Context::from_waker(&waker);
        let keys: Vec<usize> = (0..BATCH * 3 + 5).map(|_| waiters.listen()).collect();
        // One waiter leaves before the notification, one never polled.
        waiters.remove(keys[10]);
        for &key in &keys[11..] {
            assert!(waiters.poll(key, &mut cx).is_pending());
        }
        waiters.notify();
        assert_eq!(count.0.load(Ordering::Relaxed), keys.len() - 11);
        for &key in keys.iter().filter(|&&key| key != keys[10]) {
            assert!(waiters.poll(key, &mut cx).is_ready(), "key {key}");
            assert!(waiters.poll(key, &mut cx).is_ready(), "key {key} again");
        }
        // A waiter that comes after the notification waits for the next one.
        let late = waiters.listen();
        assert!(waiters.poll(late, &mut cx).is_pending());
        waiters.notify();
        assert!(waiters.poll(late, &mut cx).is_ready());
    }

    #[test]
    fn a_large_list_that_empties_gives_its_memory_back() {
        let waiters = Waiters::default();
        let keys: Vec<usize> = (0..KEEP * 2).map(|_| waiters.listen()).collect();
        assert_eq!(waiters.lock().end, KEEP * 2);
        for key in keys {
            waiters.remove(key);
        }
        assert_eq!(waiters.lock().end, 0);
        // A small one keeps its chunks: listening again reuses key 0.
        let key = waiters.listen();
        waiters.remove(key);
        assert_eq!(waiters.listen(), 0);
        assert_eq!(waiters.lock().end, 1);
    }
}
