//! Parallel children: the [`Spawn`] trait, its adapters, and the plumbing
//! that lets a child run on an executor while its nursery still owns it.
//!
//! A parallel child is split in two. The **remote** half runs on the
//! executor: it polls the child with the nursery's scope as the current
//! scope (so checkpoints see the nursery's cancellation on whatever thread
//! they run), catches a panic, drops the child, and hands the outcome over.
//! What the nursery keeps depends on the executor:
//!
//! * On an async-executor `Executor` (the default of [`run`](crate::run)),
//!   and on the tokio root of `run` (`spawn_parallel`), the nursery keeps
//!   only the task handle ([`RemoteHandle`]), in its table (for the hard cancel and the
//!   report), and a count of the children running ([`Parallel`]): a child
//!   that succeeds counts itself out, and only the last one wakes the
//!   nursery; any other outcome (error, `Cancelled`, panic, lost) is queued
//!   for the nursery to record as an inline child's. A supervised child
//!   takes its handlers along (`Supervise` inside the remote half).
//! * Through [`Spawn::spawn_task`] (another executor of the user's, or
//!   `spawn_on` a tokio `Handle`), the **join**
//!   half is an ordinary inline child of the nursery: it waits for the
//!   outcome and reports it exactly as an inline child would, so failures
//!   are collected the same way and the nursery waits for it.
//!
//! # Invariants
//!
//! 1. Every remote half reports exactly one outcome: its output, its panic,
//!    or (when the executor drops it unfinished) that it was lost. A child is
//!    never lost silently.
//! 2. Dropping the task handle (the join half's, or the one in the table)
//!    cancels the task without waiting for it: `Drop` never blocks.
//! 3. Cancellation is applied where the child runs: the remote half drops a
//!    child that waits in a foreign future in its cancelled scope, on its
//!    own thread (`cancel::foreign`), and reports it as `Cancelled`. The
//!    join half is a hatchery await (`context::park`): the nursery never
//!    drops it for that rule, only on a hard cancel.
//! 4. The remote half reports only once nothing of the child is left: the
//!    child's `Drop` has run (on its thread), and the half holds neither
//!    the scope nor a listener of it. So a nursery that heard from all its
//!    children returns with none of them still running code.

use std::any::Any;
use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

use crate::cancel::foreign::ForeignWait;
use crate::cancel::tree::Node;
use crate::context;
use crate::error::{CancelError, Cancelled};
use crate::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use crate::sync::{Arc, AtomicWaker, Mutex, Recover};
use crate::task::TaskInfo;

/// A boxed task for an executor.
pub type BoxTask<'env> = Pin<Box<dyn Future<Output = ()> + Send + 'env>>;

/// Something that can run tasks in parallel: an executor or a handle to one.
///
/// hatchery hands it a task and keeps the returned [`TaskGuard`]; dropping
/// the guard must cancel the task without blocking. Adapters are provided for
/// async-executor's [`Executor`](async_executor::Executor) and
/// [`LocalExecutor`](async_executor::LocalExecutor), and (with the `tokio`
/// feature) for tokio's runtime `Handle`.
///
/// # Examples
///
/// Implementing it for your own executor takes one method:
///
/// ```
/// use hatchery::{BoxTask, Spawn, TaskGuard};
///
/// struct MyExecutor(async_executor::Executor<'static>);
///
/// impl Spawn<'static> for MyExecutor {
///     fn spawn_task(&self, task: BoxTask<'static>) -> TaskGuard<'static> {
///         // async-executor's Task cancels the task when dropped.
///         TaskGuard::new(self.0.spawn(task))
///     }
/// }
/// ```
pub trait Spawn<'env> {
    /// Starts `task`; the guard cancels it when dropped.
    fn spawn_task(&self, task: BoxTask<'env>) -> TaskGuard<'env>;

    /// The async-executor behind this spawner, if it is one: hatchery then
    /// spawns a parallel child on it directly, unboxed, and keeps the
    /// executor's own task handle (module docs). Not for implementors.
    #[doc(hidden)]
    fn __async_executor(&self) -> Option<&async_executor::Executor<'env>> {
        None
    }

    /// The tokio root of `run` behind this spawner, if it is one: hatchery
    /// then spawns a `'static` parallel child on it directly (module docs).
    /// Not for implementors.
    #[cfg(feature = "tokio")]
    #[doc(hidden)]
    fn __tokio(&self) -> Option<Tokio<'_>> {
        None
    }
}

impl<'env, S: Spawn<'env> + ?Sized> Spawn<'env> for &S {
    fn spawn_task(&self, task: BoxTask<'env>) -> TaskGuard<'env> {
        (**self).spawn_task(task)
    }

    fn __async_executor(&self) -> Option<&async_executor::Executor<'env>> {
        (**self).__async_executor()
    }

    #[cfg(feature = "tokio")]
    fn __tokio(&self) -> Option<Tokio<'_>> {
        (**self).__tokio()
    }
}

impl<'env, S: Spawn<'env> + ?Sized> Spawn<'env> for Arc<S> {
    fn spawn_task(&self, task: BoxTask<'env>) -> TaskGuard<'env> {
        (**self).spawn_task(task)
    }

    fn __async_executor(&self) -> Option<&async_executor::Executor<'env>> {
        (**self).__async_executor()
    }

    #[cfg(feature = "tokio")]
    fn __tokio(&self) -> Option<Tokio<'_>> {
        (**self).__tokio()
    }
}

impl<'env> Spawn<'env> for async_executor::Executor<'env> {
    fn spawn_task(&self, task: BoxTask<'env>) -> TaskGuard<'env> {
        TaskGuard {
            _guard: Guard::Task(self.spawn(task)),
        }
    }

    fn __async_executor(&self) -> Option<&async_executor::Executor<'env>> {
        Some(self)
    }
}

impl<'env> Spawn<'env> for async_executor::LocalExecutor<'env> {
    fn spawn_task(&self, task: BoxTask<'env>) -> TaskGuard<'env> {
        TaskGuard {
            _guard: Guard::Task(self.spawn(task)),
        }
    }
}

#[cfg(feature = "tokio")]
impl Spawn<'static> for tokio::runtime::Handle {
    fn spawn_task(&self, task: BoxTask<'static>) -> TaskGuard<'static> {
        struct AbortOnDrop(tokio::task::JoinHandle<()>);
        impl Drop for AbortOnDrop {
            fn drop(&mut self) {
                self.0.abort();
            }
        }
        TaskGuard::new(AbortOnDrop(self.spawn(task)))
    }
}

/// Keeps a spawned task alive; dropping it cancels the task (without
/// blocking). Wraps whatever the executor returns: a task handle whose drop
/// cancels, or a small type whose `Drop` aborts.
///
/// ```
/// let executor = async_executor::Executor::new();
/// let guard = hatchery::TaskGuard::new(executor.spawn(async {}));
/// drop(guard); // cancels the task
/// ```
pub struct TaskGuard<'env> {
    _guard: Guard<'env>,
}

/// What a [`TaskGuard`] holds: async-executor's task handle as it is (no
/// allocation on the hot path of `spawn_on`), anything else boxed. Both are
/// only ever dropped.
#[allow(dead_code)]
enum Guard<'env> {
    Task(async_executor::Task<()>),
    Other(Box<dyn Send + 'env>),
}

impl<'env> TaskGuard<'env> {
    /// Wraps a handle whose `Drop` cancels its task.
    ///
    /// ```
    /// let executor = async_executor::Executor::new();
    /// let _guard = hatchery::TaskGuard::new(executor.spawn(async {}));
    /// ```
    pub fn new(handle: impl Send + 'env) -> Self {
        TaskGuard {
            _guard: Guard::Other(Box::new(handle)),
        }
    }
}

impl fmt::Debug for TaskGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskGuard").finish_non_exhaustive()
    }
}

enum RemoteOutcome<O> {
    Finished(O),
    Panicked(Box<dyn Any + Send>),
    /// The executor dropped the task before it finished.
    Lost,
}

struct Handoff<O> {
    outcome: Mutex<Option<RemoteOutcome<O>>>,
    waker: AtomicWaker,
}

impl<O> Handoff<O> {
    fn finish(&self, outcome: RemoteOutcome<O>) {
        let mut slot = self.outcome.lock().recover();
        // Invariant 1: the first outcome is the only one.
        if slot.is_none() {
            *slot = Some(outcome);
            drop(slot);
            self.waker.wake();
        }
    }
}

pin_project! {
    /// A parallel child as its executor polls it: in the nursery's scope,
    /// its panic caught, dropped when it waits in a foreign future in the
    /// cancelled scope (invariant 3).
    struct InScope<F> {
        scope: Option<Arc<Node>>,
        foreign: ForeignWait,
        #[pin]
        child: Option<F>,
    }
}

impl<F, E> Future for InScope<F>
where
    F: Future<Output = Result<(), E>>,
    E: CancelError,
{
    type Output = RemoteOutcome<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut child = this.child;
        let scope = this.scope;
        let polled = catch_unwind(AssertUnwindSafe(|| {
            let Some(future) = child.as_mut().as_pin_mut() else {
                unreachable!("a parallel child is present until it finishes");
            };
            context::enter_track(scope, cx.waker(), || future.poll(cx))
        }));
        match polled {
            Ok((Poll::Pending, flags)) if flags.parked() => {
                if let (true, Some(node)) = (flags.stale(), &scope) {
                    this.foreign.poll_stale(node, cx);
                }
                Poll::Pending
            }
            Ok((Poll::Pending, _)) => {
                let Some(node) = scope else {
                    unreachable!("the node is back in the slot after the poll");
                };
                std::task::ready!(this.foreign.poll_task(
                    node,
                    Some(cx.waker().data() as usize),
                    cx
                ));
                // Its `Drop` runs here, on the thread where it ran.
                match catch_unwind(AssertUnwindSafe(|| child.set(None))) {
                    Ok(()) => Poll::Ready(RemoteOutcome::Finished(Err(E::from(Cancelled)))),
                    Err(payload) => Poll::Ready(RemoteOutcome::Panicked(payload)),
                }
            }
            Ok((Poll::Ready(output), _)) => Poll::Ready(RemoteOutcome::Finished(output)),
            Err(payload) => {
                crate::panics::caught_panic(&*payload);
                Poll::Ready(RemoteOutcome::Panicked(payload))
            }
        }
    }
}

impl<F> InScope<F> {
    /// Drops the child (if it is still there), catching a panic of its
    /// `Drop`, then lets go of the scope and stops listening to it: nothing
    /// of the child is left once its nursery hears that it ended.
    fn release(self: Pin<&mut Self>) -> Result<(), Box<dyn Any + Send>> {
        let this = self.project();
        let mut child = this.child;
        let dropped = if child.is_none() {
            Ok(())
        } else {
            catch_unwind(AssertUnwindSafe(|| child.set(None)))
        };
        this.foreign.clear();
        *this.scope = None;
        dropped
    }
}

/// The outcome of a parallel child that just ended, once nothing of it is
/// left (`InScope::release`): a panic of its `Drop` replaces a success, and
/// an error, which is said on stderr (it would be lost); after a panic it
/// is only said (the first panic is the one resumed). Never panics itself.
fn released<F, E: CancelError>(
    inner: Pin<&mut InScope<F>>,
    outcome: RemoteOutcome<Result<(), E>>,
    info: &dyn fmt::Display,
) -> RemoteOutcome<Result<(), E>> {
    let dropped = match inner.release() {
        Ok(()) => return outcome,
        Err(dropped) => dropped,
    };
    match outcome {
        RemoteOutcome::Panicked(_) => {
            crate::panics::say_and_drop(
                format!("{info} panicked, then its `Drop` panicked too"),
                dropped,
            );
            outcome
        }
        RemoteOutcome::Finished(Err(error)) if !error.is_cancelled() => {
            let error = crate::panics::caught_text(|| format!("{error:?}"));
            crate::stderr::write(&format!(
                "hatchery: {info} failed, then its `Drop` panicked (that panic is resumed): \
                 {error}\n"
            ));
            RemoteOutcome::Panicked(dropped)
        }
        _ => RemoteOutcome::Panicked(dropped),
    }
}

/// Where the remote half of a parallel child hands its outcome over.
trait Report<O> {
    /// Names the child in a message.
    fn name(&self) -> &dyn fmt::Display;
    /// Hands the outcome over (once nothing of the child is left).
    fn report(self, outcome: RemoteOutcome<O>);
}

/// Through [`Spawn::spawn_task`]: to the join half.
impl<O> Report<O> for Arc<Handoff<O>> {
    fn name(&self) -> &dyn fmt::Display {
        &"a parallel child"
    }

    fn report(self, outcome: RemoteOutcome<O>) {
        self.finish(outcome);
    }
}

/// Counted (`counted`): to the nursery's count.
struct Counted<E> {
    parallel: Arc<Parallel<E>>,
    info: TaskInfo,
}

impl<E> Report<Result<(), E>> for Counted<E> {
    fn name(&self) -> &dyn fmt::Display {
        &self.info
    }

    fn report(self, outcome: RemoteOutcome<Result<(), E>>) {
        self.parallel.finish(self.info, outcome);
    }
}

pin_project! {
    /// The remote half of a parallel child, as its executor polls it: hands
    /// the outcome over when it ends, or that it was lost when the executor
    /// drops it unfinished (invariants 1 and 4).
    struct Remote<F: Future, R: Report<F::Output>> {
        #[pin]
        inner: InScope<F>,
        report: Option<R>,
    }

    impl<F: Future, R: Report<F::Output>> PinnedDrop for Remote<F, R> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(report) = this.report.take() {
                // Lost, unless its `Drop` panicked: then that panic.
                let outcome = match this.inner.release() {
                    Ok(()) => RemoteOutcome::Lost,
                    Err(dropped) => RemoteOutcome::Panicked(dropped),
                };
                report.report(outcome);
            }
        }
    }
}

impl<F, E, R> Future for Remote<F, R>
where
    F: Future<Output = Result<(), E>>,
    E: CancelError,
    R: Report<F::Output>,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        let outcome = std::task::ready!(this.inner.as_mut().poll(cx));
        if let Some(report) = this.report.take() {
            // The child is gone before it is heard of: its `Drop` runs
            // here, on the thread where it ran.
            let outcome = released(this.inner, outcome, report.name());
            report.report(outcome);
        }
        Poll::Ready(())
    }
}

/// The nursery's half of a parallel child: a child of the nursery that
/// finishes with the remote half's outcome.
pub(crate) struct Join<'env, O> {
    handoff: Arc<Handoff<O>>,
    _guard: TaskGuard<'env>,
    info: TaskInfo,
}

impl<O> Future for Join<'_, O> {
    type Output = O;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<O> {
        let this = self.get_mut();
        this.handoff.waker.register(cx.waker());
        let outcome = this.handoff.outcome.lock().recover().take();
        let Some(outcome) = outcome else {
            return pending();
        };
        match outcome {
            RemoteOutcome::Finished(output) => Poll::Ready(output),
            RemoteOutcome::Panicked(payload) => resume_unwind(payload),
            RemoteOutcome::Lost => lost(&this.info),
        }
    }
}

/// The join half waits for the remote half, which applies cancellation on
/// its own thread (invariant 3): a hatchery await, never dropped for it.
fn pending<O>() -> Poll<O> {
    context::park_remote();
    Poll::Pending
}

/// Starts `child` on `spawner` in `scope`; returns the join half.
pub(crate) fn spawn_parallel<'env, S, F, E>(
    spawner: &S,
    scope: Arc<Node>,
    child: F,
    info: TaskInfo,
) -> Join<'env, F::Output>
where
    S: Spawn<'env> + ?Sized,
    F: Future<Output = Result<(), E>> + Send + 'env,
    E: CancelError + Send + 'env,
{
    let inner = InScope {
        scope: Some(scope),
        foreign: ForeignWait::default(),
        child: Some(child),
    };
    // The remote half reports once the child's `Drop` ran (invariant 4).
    let handoff = Arc::new(Handoff {
        outcome: Mutex::new(None),
        waker: AtomicWaker::new(),
    });
    let remote = Remote {
        inner,
        report: Some(Arc::clone(&handoff)),
    };
    let guard = spawner.spawn_task(Box::pin(remote));
    Join {
        handoff,
        _guard: guard,
        info,
    }
}

/// What the counted parallel children of a nursery share
/// with it (`counted`): how many still run, and the outcomes other
/// than success, which the nursery records as an inline child's. A child
/// that succeeds only counts itself out: no wake of the nursery unless it
/// was the last one, no lock.
pub(crate) struct Parallel<E> {
    /// Children started: written only under the lock that closes the
    /// nursery (`started`), so a load and a store, not a read-modify-write.
    started: AtomicUsize,
    /// Children that ended (a read-modify-write each: they end on any
    /// thread).
    finished: AtomicUsize,
    outcomes: Mutex<Vec<Reported<E>>>,
    any_outcome: AtomicBool,
    /// The nursery future's waker.
    waker: AtomicWaker,
}

impl<E> Default for Parallel<E> {
    fn default() -> Self {
        Parallel {
            started: AtomicUsize::new(0),
            finished: AtomicUsize::new(0),
            outcomes: Mutex::new(Vec::new()),
            any_outcome: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        }
    }
}

/// A parallel child that did not succeed, and how it ended.
type Reported<E> = (TaskInfo, RemoteOutcome<Result<(), E>>);

/// How a parallel child ended, for the nursery to record.
pub(crate) enum Ended<E> {
    /// It returned this error (maybe `Cancelled`).
    Failed(E),
    /// It panicked with this payload.
    Panicked(Box<dyn Any + Send>),
}

impl<E> Parallel<E> {
    /// Counts in a child about to be started. Called only under the lock
    /// that closes the nursery (`TaskTable::start_remote`, or the loom
    /// models' single thread), so that the nursery never closes between
    /// this and the start: no other thread writes `started`, and a plain
    /// store does (one locked instruction less per child). The start that
    /// follows publishes it to the child's thread.
    pub(crate) fn started(&self) {
        let started = self.started.load(Ordering::Relaxed);
        self.started.store(started + 1, Ordering::Release);
    }

    /// Children started and not finished. Everything a child reported
    /// before it counted itself out is visible to the caller after this
    /// reads its increment (acquire). `finished` is read first: every child
    /// it counts was started before (its start happened before its end), so
    /// the later read of `started` counts it too, and the difference never
    /// underflows.
    pub(crate) fn running(&self) -> usize {
        let finished = self.finished.load(Ordering::Acquire);
        self.started.load(Ordering::Acquire) - finished
    }

    /// Registers the nursery future's waker: woken when the last child
    /// finishes and on every outcome to record.
    pub(crate) fn register(&self, waker: &std::task::Waker) {
        self.waker.register(waker);
    }

    /// Takes the registered waker out (the nursery closed or was dropped).
    pub(crate) fn take_waker(&self) -> Option<std::task::Waker> {
        self.waker.take()
    }

    /// Some outcome is left for `take_outcomes`. Read after `running`:
    /// everything a child reported before it counted itself out is seen.
    pub(crate) fn has_outcomes(&self) -> bool {
        self.any_outcome.load(Ordering::Acquire)
    }

    /// The outcomes to record since the last call, each with its child, in
    /// the order they came. A child that was lost (its executor dropped it
    /// unfinished) panics here, inside `catch_unwind`, so that the panic
    /// hook prints the message as for any panic.
    pub(crate) fn take_outcomes(&self) -> Vec<(TaskInfo, Ended<E>)> {
        if !self.any_outcome.swap(false, Ordering::Acquire) {
            return Vec::new();
        }
        let taken = std::mem::take(&mut *self.outcomes.lock().recover());
        taken
            .into_iter()
            .map(|(info, outcome)| {
                let ended = match outcome {
                    RemoteOutcome::Finished(Err(error)) => Ended::Failed(error),
                    RemoteOutcome::Finished(Ok(())) => {
                        unreachable!("successes are only counted out")
                    }
                    RemoteOutcome::Panicked(payload) => Ended::Panicked(payload),
                    RemoteOutcome::Lost => {
                        Ended::Panicked(catch_unwind(|| lost(&info)).expect_err("`lost` panics"))
                    }
                };
                (info, ended)
            })
            .collect()
    }

    /// A child ended with `output` (for the loom models).
    #[cfg(hatchery_loom)]
    pub(crate) fn finish_with(&self, info: TaskInfo, output: Result<(), E>) {
        self.finish(info, RemoteOutcome::Finished(output));
    }

    /// A child ended with `outcome`: counted out, its outcome kept unless
    /// it succeeded.
    fn finish(&self, info: TaskInfo, outcome: RemoteOutcome<Result<(), E>>) {
        let report = !matches!(outcome, RemoteOutcome::Finished(Ok(())));
        if report {
            self.outcomes.lock().recover().push((info, outcome));
            // A read-modify-write, not a store: loom (0.7, issue #254) lets a
            // store slip between the read and the write of the nursery's
            // `swap`; on the failure path only, so it costs nothing that
            // matters.
            self.any_outcome.swap(true, Ordering::Release);
        }
        // Release: the outcome is pushed before the count says it ended.
        // The last one to end reads every start: each happened before its
        // child ended, and this read-modify-write acquires every earlier
        // end. A child started meanwhile (not read here) wakes the nursery
        // when it ends.
        let finished = self.finished.fetch_add(1, Ordering::AcqRel) + 1;
        let last = finished == self.started.load(Ordering::Acquire);
        if report || last {
            self.waker.wake();
        }
    }
}

/// The message of a parallel child its executor dropped unfinished.
fn lost(info: &TaskInfo) -> ! {
    panic!(
        "hatchery: the executor dropped the parallel child ({info}) before it finished; \
         was the executor shut down or dropped while the nursery was still running? \
         Keep the executor alive (and running) until the nursery returns"
    )
}

/// The task handle of a counted parallel child, kept in its nursery's
/// table (`counted`): dropping it cancels the task if it has not
/// finished (invariant 2).
pub(crate) enum RemoteHandle {
    /// async-executor's task: dropping it cancels.
    Executor(async_executor::Task<()>),
    /// tokio's: aborted when dropped unfinished.
    #[cfg(feature = "tokio")]
    Tokio(tokio::task::JoinHandle<()>),
}

impl RemoteHandle {
    /// Whether the task has finished: its future is gone.
    pub(crate) fn is_finished(&self) -> bool {
        match self {
            RemoteHandle::Executor(task) => task.is_finished(),
            #[cfg(feature = "tokio")]
            RemoteHandle::Tokio(handle) => handle.is_finished(),
        }
    }
}

impl Drop for RemoteHandle {
    fn drop(&mut self) {
        #[cfg(feature = "tokio")]
        if let RemoteHandle::Tokio(handle) = self
            && !handle.is_finished()
        {
            // (Aborting a finished task costs a read-modify-write loop for
            // nothing.)
            handle.abort();
        }
    }
}

/// The remote half of `child`, counted in `parallel` (counted in now: start
/// it at once, on an async-executor or `Tokio::spawn`); the caller keeps
/// the task handle (dropping it cancels the task).
pub(crate) fn counted<F, E>(
    scope: Arc<Node>,
    child: F,
    info: TaskInfo,
    parallel: &Arc<Parallel<E>>,
) -> impl Future<Output = ()> + use<F, E>
where
    F: Future<Output = Result<(), E>>,
    E: CancelError,
{
    parallel.started();
    Remote {
        inner: InScope {
            scope: Some(scope),
            foreign: ForeignWait::default(),
            child: Some(child),
        },
        report: Some(Counted {
            parallel: Arc::clone(parallel),
            info,
        }),
    }
}

/// The tokio runtime of `run`'s tokio root, behind its [`Spawn`]
/// (`Spawn::__tokio`). Not for implementors.
#[cfg(feature = "tokio")]
#[doc(hidden)]
#[derive(Clone, Copy, Debug)]
pub struct Tokio<'a> {
    handle: &'a tokio::runtime::Handle,
    /// Marks the thread while it polls one of these tasks (`Marked`): as
    /// inside that `run`.
    mark: fn(bool) -> bool,
}

#[cfg(feature = "tokio")]
impl<'a> Tokio<'a> {
    pub(crate) fn new(handle: &'a tokio::runtime::Handle, mark: fn(bool) -> bool) -> Self {
        Tokio { handle, mark }
    }

    /// Starts a remote half (`counted`) on this runtime, marked.
    pub(crate) fn spawn(self, task: impl Future<Output = ()> + Send + 'static) -> RemoteHandle {
        RemoteHandle::Tokio(self.handle.spawn(Marked::new(task, self.mark)))
    }
}

#[cfg(feature = "tokio")]
pin_project! {
    /// A task polled with a mark on its thread: `mark(true)` before each
    /// poll, `mark` of what it returned after (also when the poll panics).
    pub(crate) struct Marked<F> {
        #[pin]
        task: F,
        mark: fn(bool) -> bool,
    }
}

#[cfg(feature = "tokio")]
impl<F> Marked<F> {
    pub(crate) fn new(task: F, mark: fn(bool) -> bool) -> Self {
        Marked { task, mark }
    }
}

#[cfg(feature = "tokio")]
impl<F: Future> Future for Marked<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        struct Restore(fn(bool) -> bool, bool);
        impl Drop for Restore {
            fn drop(&mut self) {
                (self.0)(self.1);
            }
        }
        let this = self.project();
        let _restore = Restore(*this.mark, (this.mark)(true));
        this.task.poll(cx)
    }
}
/// The spawner of the surrounding [`run`](crate::run), shared by its threads.
pub(crate) type SharedSpawner = Arc<dyn Spawn<'static> + Send + Sync>;

thread_local! {
    static DEFAULT: RefCell<Option<SharedSpawner>> = const { RefCell::new(None) };
}

/// Makes `spawner` this thread's default for the duration of `f`.
pub(crate) fn with_default<R>(spawner: SharedSpawner, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<SharedSpawner>);
    impl Drop for Restore {
        fn drop(&mut self) {
            DEFAULT.with(|default| *default.borrow_mut() = self.0.take());
        }
    }
    let previous = DEFAULT.with(|default| default.borrow_mut().replace(spawner));
    let _restore = Restore(previous);
    f()
}

/// Makes `spawner` this thread's default for good: for the threads of a
/// runtime `run` started (tokio's workers), which end with it.
#[cfg(feature = "tokio")]
pub(crate) fn set_default(spawner: SharedSpawner) {
    DEFAULT.with(|default| *default.borrow_mut() = Some(spawner));
}

/// The default spawner of this thread, if it runs inside [`run`](crate::run).
pub(crate) fn default_spawner() -> Option<SharedSpawner> {
    DEFAULT.with(|default| default.borrow().clone())
}
