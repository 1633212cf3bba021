//! Blocking work's registry: the closures of `spawn_blocking` that a thread
//! is running right now, process-wide, so that the report lists them (and
//! says which were abandoned by a forced shutdown).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use slab::Slab;

use crate::clock;
use crate::sync::Recover;
use crate::task::TaskInfo;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().recover()
}

/// Blocking closures currently running on a thread (see `spawn_blocking`).
static BLOCKING: Mutex<Slab<BlockingRecord>> = Mutex::new(Slab::new());

struct BlockingRecord {
    info: TaskInfo,
    since: Instant,
    abandoned: Arc<AtomicBool>,
}

/// Lists a blocking closure in every report while its thread runs it.
pub(crate) struct BlockingEntry(usize);

impl BlockingEntry {
    /// Registers the closure; `abandoned` is set by its task if the task is
    /// dropped (the hard cancel) before the closure returns.
    pub(crate) fn new(info: TaskInfo, abandoned: Arc<AtomicBool>) -> Self {
        let record = BlockingRecord {
            info,
            since: clock::now(),
            abandoned,
        };
        BlockingEntry(lock(&BLOCKING).insert(record))
    }
}

impl Drop for BlockingEntry {
    fn drop(&mut self) {
        lock(&BLOCKING).try_remove(self.0);
    }
}

/// Calls `each` with the identity, start time and abandonment of every
/// blocking closure a thread runs now (one lock; no user code).
pub(crate) fn for_each(mut each: impl FnMut(&TaskInfo, Instant, bool)) {
    for (_, record) in lock(&BLOCKING).iter() {
        each(
            &record.info,
            record.since,
            record.abandoned.load(Ordering::Relaxed),
        );
    }
}

/// A closure of `spawn_blocking` on its thread: tokio's blocking pool inside
/// a tokio runtime (the `tokio` feature), else smol's `blocking` pool.
pub(crate) enum Unblocked<T> {
    Smol(blocking::Task<T>),
    #[cfg(feature = "tokio")]
    Tokio(tokio::task::JoinHandle<T>),
}

/// Runs `work` on a thread for blocking work. Inside a tokio runtime that
/// is tokio's blocking pool, as `tokio::task::spawn_blocking` would use:
/// tokio's types work in the closure (`Handle::current`, its timers), and a
/// paused tokio clock does not jump while it runs. Elsewhere, smol's pool.
pub(crate) fn unblock<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Unblocked<T> {
    #[cfg(feature = "tokio")]
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        return Unblocked::Tokio(handle.spawn_blocking(work));
    }
    Unblocked::Smol(blocking::unblock(work))
}

impl<T> std::future::Future for Unblocked<T> {
    /// `None` if the closure never ran: its runtime dropped it, shutting
    /// down.
    type Output = Option<T>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<T>> {
        match self.get_mut() {
            Unblocked::Smol(task) => std::pin::Pin::new(task).poll(cx).map(Some),
            #[cfg(feature = "tokio")]
            Unblocked::Tokio(task) => std::pin::Pin::new(task).poll(cx).map(|out| match out {
                Ok(value) => Some(value),
                Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
                Err(_) => None,
            }),
        }
    }
}
