//! The synchronization primitives of the concurrent core (`cancel::tree`,
//! `cancel::listeners` and `nursery::children`): std's, or, when the crate is
//! built with `RUSTFLAGS="--cfg hatchery_loom"` for the models in
//! `tests/loom.rs`, loom's.
//!
//! The cfg is hatchery's own rather than the customary `loom`: `--cfg loom`
//! reaches every crate of the build, and two dependencies do not build under
//! it (async-io needs `Parker::park_timeout`, which parking's loom build lacks;
//! async-executor has a `const fn` calling concurrent-queue's constructor,
//! which is not `const` under loom). Nothing else reads `hatchery_loom`; the
//! core's waiter lists (`cancel::listeners`) are built from these primitives, so
//! the models explore their real locking.
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
