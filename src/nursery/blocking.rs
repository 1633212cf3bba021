//! Blocking work: [`run_blocking`], and the registry of the closures of
//! `spawn_blocking` and `run_blocking` that a thread is running right now,
//! process-wide, so that the report lists them (and says which were
//! abandoned by a forced shutdown).

use std::borrow::Cow;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use slab::Slab;

use crate::cancel::foreign::Parked;
use crate::cancel::{CancelHandle, CancelScope};
use crate::clock;
use crate::error::Cancelled;
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
struct BlockingEntry(usize);

impl BlockingEntry {
    /// Registers the closure; `abandoned` is set by its task if the task is
    /// dropped (the hard cancel) before the closure returns.
    fn new(info: TaskInfo, abandoned: Arc<AtomicBool>) -> Self {
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

/// Marks a blocking closure abandoned if the task waiting for it is dropped
/// before it returned (nobody waits for its thread any more: a thread
/// cannot be stopped).
struct AbandonOnDrop(Option<Arc<AtomicBool>>);

impl Drop for AbandonOnDrop {
    fn drop(&mut self) {
        if let Some(flag) = self.0.take() {
            flag.store(true, Ordering::Relaxed);
        }
    }
}

/// Runs `work` on the blocking pool, listed in every report as `info`
/// while its thread runs it, and waits for it: a hatchery await, never
/// dropped for a cancellation (the closure is told through its handle, as
/// trio's `to_thread` waits for its thread). `None` if its runtime dropped
/// it unrun (shutting down); dropped unfinished, it marks the closure
/// abandoned. What `spawn_blocking`'s child and `run_blocking` wait on.
pub(crate) async fn on_pool<T: Send + 'static>(
    info: TaskInfo,
    work: impl FnOnce() -> T + Send + 'static,
) -> Option<std::thread::Result<T>> {
    let abandoned = Arc::new(AtomicBool::new(false));
    let entry = (info, Arc::clone(&abandoned));
    let task = unblock(move || {
        let _entry = BlockingEntry::new(entry.0, entry.1);
        catch_unwind(AssertUnwindSafe(work))
    });
    let mut abandon = AbandonOnDrop(Some(abandoned));
    let outcome = Parked::new(task).await;
    abandon.0 = None; // finished: nothing was abandoned
    outcome
}

/// Runs `work` on a thread of the blocking pool and waits for the value it
/// returns: trio's `to_thread.run_sync`, tokio's `spawn_blocking(..).await`.
/// For blocking calls (file systems, compression, a C library) whose result
/// the task needs; [`Nursery::spawn_blocking`](crate::Nursery::spawn_blocking)
/// runs one as a child instead.
///
/// As trio's, the start is a checkpoint: in a cancelled scope the closure
/// never runs and this returns `Err(Cancelled)`. Once it runs, the task
/// waits for its thread even if its scope is cancelled meanwhile (a thread
/// cannot be stopped): the closure learns of the cancellation through the
/// [`CancelHandle`] it is given (of a scope of its own, under the one the
/// task awaits this in: cancelled with it, and also when this future is
/// dropped before the closure returned) and returns early if it likes; its
/// value is returned all the same, and the scope's next checkpoint returns
/// `Cancelled`. A panic in the closure is resumed in the task. If the task
/// is dropped instead (a forced shutdown), the closure is abandoned: it
/// runs to its end on its thread, which nobody joins. To stop waiting at
/// the cancellation (trio's `abandon_on_cancel=True`), make the wait a
/// checkpoint: `run_blocking(f).cancellable().await??` returns
/// `Err(Cancelled)` as soon as the scope is cancelled, and the closure runs
/// on abandoned. While it runs, the
/// report lists it among the blocking closures, named `run_blocking`, at
/// the line that called this.
///
/// Inside a tokio runtime (the `tokio` feature) the closure runs on tokio's
/// blocking pool, elsewhere on the `blocking` crate's (smol's).
///
/// ```
/// use std::time::Duration;
/// use hatchery::{move_on_after, run_blocking};
///
/// # futures::executor::block_on(async {
/// let sum = run_blocking(|_cancel| (1..=10u64).sum::<u64>()).await?;
/// assert_eq!(sum, 55);
///
/// // A long computation that checks its handle now and then.
/// let out = move_on_after(Duration::from_millis(20), async {
///     let rounds = run_blocking(|cancel| {
///         let mut rounds = 0;
///         while !cancel.is_cancelled() {
///             std::thread::sleep(Duration::from_millis(1)); // a slice of the work
///             rounds += 1;
///         }
///         rounds
///     })
///     .await?;
///     assert!(rounds > 0); // the value comes back after the cancel
///     hatchery::checkpoint().await?; // and the scope catches it here
///     Ok(())
/// })
/// .await?;
/// assert_eq!(out, None);
/// # Ok::<(), hatchery::Error>(())
/// # }).unwrap();
/// ```
#[track_caller]
pub fn run_blocking<T, F>(work: F) -> impl Future<Output = Result<T, Cancelled>> + Send + 'static
where
    F: FnOnce(CancelHandle) -> T + Send + 'static,
    T: Send + 'static,
{
    let info = TaskInfo::new(Some(Cow::Borrowed("run_blocking")));
    // The report names the caller's line for the closure's scope too.
    let location = std::panic::Location::caller();
    async move {
        // The scope of whoever awaits this, at its first poll.
        crate::check_cancelled()?;
        // The closure's own scope, under the caller's (cancelled with it),
        // and cancelled when this future is dropped unfinished (a
        // combinator dropped it, or its task): the closure is told either
        // way, and holds no handle to the caller's scope itself.
        let own = CancelScope::at(location);
        let cancel = own.handle();
        let told = cancel.clone();
        let outcome = own
            .run_typed(async move {
                let mut tell = TellOnDrop(Some(told));
                // A deadline over it is watched here: the closure compares
                // it with its own thread's clock, which is not this
                // thread's under virtual time; when it passes here, it is
                // recorded, and the closure's handle sees it.
                let mut wait = std::pin::pin!(on_pool(info, move || work(cancel)));
                let outcome = match crate::current_effective_deadline() {
                    None => wait.await,
                    Some(deadline) => {
                        let timer = clock::timer_at(deadline);
                        let first =
                            futures_lite::future::or(async { Some(wait.as_mut().await) }, async {
                                timer.await;
                                None
                            })
                            .await;
                        match first {
                            Some(outcome) => outcome,
                            None => {
                                let _ = crate::check_cancelled();
                                wait.await
                            }
                        }
                    }
                };
                tell.0 = None;
                Ok::<_, Cancelled>(outcome)
            })
            .await;
        match outcome {
            Ok(Some(Some(Ok(value)))) => Ok(value),
            Ok(Some(Some(Err(payload)))) => resume_unwind(payload),
            // Its runtime shut down before the closure ran.
            Ok(Some(None)) | Ok(None) | Err(_) => Err(Cancelled),
        }
    }
}

/// Cancels the closure's own scope if `run_blocking` is dropped before it
/// returned, so that a closure watching its handle stops.
struct TellOnDrop(Option<CancelHandle>);

impl Drop for TellOnDrop {
    fn drop(&mut self) {
        if let Some(handle) = self.0.take() {
            handle.cancel();
        }
    }
}
