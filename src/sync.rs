//! The synchronization primitives of the concurrent core (`cancel::tree` and
//! `nursery::children`): std's and event-listener's, or, when the crate is
//! built with `RUSTFLAGS="--cfg hatchery_loom"` for the models in
//! `tests/loom.rs`, loom's (and an event made of them).
//!
//! The cfg is hatchery's own rather than the customary `loom`: `--cfg loom`
//! reaches every crate of the build, and two dependencies do not build under
//! it (async-io needs `Parker::park_timeout`, which parking's loom build lacks;
//! async-executor has a `const fn` calling concurrent-queue's constructor,
//! which is not `const` under loom). Nothing else reads `hatchery_loom`, so
//! event-listener stays std's there: hence the stand-in `Event` below.
//!
//! `Arc` is std's in both builds: nodes and wakers are shared as
//! `std::sync::Arc` across the whole crate (and `Waker::from` requires it).
//! Loom runs a model's threads on one OS thread, so std's reference counts are
//! exact there, and a model can assert them.

pub(crate) use std::sync::Arc;

#[cfg(not(hatchery_loom))]
pub(crate) use event_listener::{Event, EventListener};
#[cfg(not(hatchery_loom))]
pub(crate) use std::sync::{Mutex, MutexGuard, atomic};

#[cfg(hatchery_loom)]
pub(crate) use loom::sync::{Mutex, MutexGuard, atomic};
#[cfg(hatchery_loom)]
pub(crate) use loom_event::{Event, EventListener};

/// A stand-in for `event_listener::Event` made of loom's primitives, so that
/// a model explores the synchronization the real event provides instead of
/// taking it for granted. It gives no more than event-listener 5.4 does:
/// `notify` issues a `SeqCst` fence, then takes the list lock and marks (and
/// wakes) every listener in the list; `listen` inserts a listener under the
/// same lock and nothing more (no fence). A listener inserted after a
/// `notify` took the lock is not notified by it.
///
/// With event-listener's own event, loom would see neither its lock nor its
/// fence, and since loom switches threads only at its own operations, a
/// registration and a notification would always run glued to the loom
/// operation before them: a `notify` racing a listener's registration would
/// never be explored.
#[cfg(hatchery_loom)]
mod loom_event {
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::PoisonError;
    use std::task::{Context, Poll, Waker};

    use loom::sync::atomic::{Ordering, fence};
    use loom::sync::{Arc, Mutex, MutexGuard};
    use slab::Slab;

    struct Entry {
        notified: bool,
        waker: Option<Waker>,
    }

    type List = Arc<Mutex<Slab<Entry>>>;

    fn lock(list: &List) -> MutexGuard<'_, Slab<Entry>> {
        list.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) struct Event {
        list: List,
    }

    impl Event {
        pub(crate) fn new() -> Self {
            Event {
                list: Arc::new(Mutex::new(Slab::new())),
            }
        }

        pub(crate) fn listen(&self) -> EventListener {
            let key = lock(&self.list).insert(Entry {
                notified: false,
                waker: None,
            });
            EventListener {
                list: Arc::clone(&self.list),
                key,
            }
        }

        /// Notifies every listener not yet notified (hatchery always asks for
        /// `usize::MAX`); returns how many.
        pub(crate) fn notify(&self, count: usize) -> usize {
            fence(Ordering::SeqCst);
            let mut list = lock(&self.list);
            let mut notified = 0;
            for (_, entry) in list.iter_mut() {
                if notified == count {
                    break;
                }
                if !entry.notified {
                    entry.notified = true;
                    notified += 1;
                    if let Some(waker) = entry.waker.take() {
                        waker.wake();
                    }
                }
            }
            notified
        }
    }

    pub(crate) struct EventListener {
        list: List,
        key: usize,
    }

    impl Future for EventListener {
        type Output = ();

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            let mut list = lock(&self.list);
            let entry = &mut list[self.key];
            if entry.notified {
                return Poll::Ready(());
            }
            entry.waker = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    impl Drop for EventListener {
        fn drop(&mut self) {
            lock(&self.list).remove(self.key);
        }
    }
}
