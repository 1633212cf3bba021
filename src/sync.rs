//! The synchronization primitives of the concurrent core (`cancel::tree`,
//! `cancel::listeners`, `nursery::children`, `nursery::shared`,
//! `nursery::start`, `spawn`'s hand-off and `signal`'s `Shutdown`): std's
//! (and atomic-waker's), or, when the crate is built with
//! `RUSTFLAGS="--cfg hatchery_loom"` for the models in `tests/loom.rs`,
//! loom's.
//!
//! The cfg is hatchery's own rather than the customary `loom`: `--cfg loom`
//! reaches every crate of the build, and two dependencies do not build under
//! it (async-io needs `Parker::park_timeout`, which parking's loom build lacks;
//! async-executor has a `const fn` calling concurrent-queue's constructor,
//! which is not `const` under loom). Besides this file, `hatchery_loom` is read
//! by `nursery::children` (no per-thread pools under the models), `context`
//! (its thread-local slot is loom's there: loom runs every model thread on
//! one OS thread) and the models' hooks (`lib.rs`, `loom.rs`); the core's
//! waiter lists (`cancel::listeners`) are built from these primitives, so the
//! models explore their real locking.
//!
//! `Arc` is std's in both builds: nodes and wakers are shared as
//! `std::sync::Arc` across the whole crate (and `Waker::from` requires it).
//! Loom runs a model's threads on one OS thread, so std's reference counts are
//! exact there, and a model can assert them.

pub(crate) use std::sync::Arc;

#[cfg(not(hatchery_loom))]
pub(crate) use std::sync::{Mutex, MutexGuard, atomic};

#[cfg(hatchery_loom)]
pub(crate) use loom::sync::{Mutex, MutexGuard, atomic};

#[cfg(not(hatchery_loom))]
pub(crate) use atomic_waker::AtomicWaker;

/// `atomic_waker::AtomicWaker` under the models, by its contract: `wake`
/// takes the waker the last `register` stored and wakes it, and that
/// `register` happens before the `wake` (atomic-waker's own protocol is
/// that crate's to check). Its atomics are std's, which loom cannot see: a
/// waker handed to another model thread through it would look to loom as
/// if it had never been made (a false "causality violation").
#[cfg(hatchery_loom)]
pub(crate) struct AtomicWaker(Mutex<Option<std::task::Waker>>);

#[cfg(hatchery_loom)]
impl Default for AtomicWaker {
    fn default() -> Self {
        AtomicWaker::new()
    }
}

#[cfg(hatchery_loom)]
impl AtomicWaker {
    pub(crate) fn new() -> Self {
        AtomicWaker(Mutex::new(None))
    }

    pub(crate) fn register(&self, waker: &std::task::Waker) {
        let mut slot = self.0.lock().recover();
        if !slot.as_ref().is_some_and(|kept| kept.will_wake(waker)) {
            *slot = Some(waker.clone());
        }
    }

    pub(crate) fn wake(&self) {
        if let Some(waker) = self.take() {
            waker.wake();
        }
    }

    pub(crate) fn take(&self) -> Option<std::task::Waker> {
        self.0.lock().recover().take()
    }
}

/// Takes the guard out of a lock result, poisoned or not: no lock of the
/// crate guards an invariant that a panic while holding it could break
/// halfway (each writes whole values), and a cancel or a report must never
/// become a second panic. The one way the crate locks.
pub(crate) trait Recover<G> {
    /// The guard, also from a poisoned lock.
    fn recover(self) -> G;
}

impl<G> Recover<G> for std::sync::LockResult<G> {
    #[inline]
    fn recover(self) -> G {
        self.unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
