//! Parallel children: the [`Spawn`] trait, its adapters, and the plumbing
//! that lets a child run on an executor while its nursery still owns it.
//!
//! A parallel child is split in two. The **remote** half runs on the
//! executor: it polls the child with the nursery's scope as the current
//! scope (so checkpoints see the nursery's cancellation on whatever thread
//! they run), catches a panic, and hands the outcome over. The **join** half
//! is an ordinary inline child of the nursery: it waits for that outcome and
//! reports it exactly as an inline child would (error, panic payload), so
//! failures are collected the same way and the nursery waits for it.
//!
//! # Invariants
//!
//! 1. Every remote half reports exactly one outcome: its output, its panic,
//!    or (when the executor drops it unfinished) that it was lost. A child is
//!    never lost silently.
//! 2. Dropping the join half drops the executor's task handle, which cancels
//!    the task without waiting for it: `Drop` never blocks.
//! 3. Cancellation is applied where the child runs: the remote half drops a
//!    child that waits in a foreign future in its cancelled scope, on its
//!    own thread (`cancel::foreign`), and reports it as `Cancelled`. The
//!    join half is a hatchery await (`context::park`): the nursery never
//!    drops it for that rule, only on a hard cancel.

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
    /// spawns a parallel child on it directly, unboxed, and joins it
    /// through the executor's own task handle. Not for implementors.
    #[doc(hidden)]
    fn __async_executor(&self) -> Option<&async_executor::Executor<'env>> {
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
}

impl<'env, S: Spawn<'env> + ?Sized> Spawn<'env> for Arc<S> {
    fn spawn_task(&self, task: BoxTask<'env>) -> TaskGuard<'env> {
        (**self).spawn_task(task)
    }

    fn __async_executor(&self) -> Option<&async_executor::Executor<'env>> {
        (**self).__async_executor()
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
            context::enter(scope, || context::track(cx.waker(), || future.poll(cx)))
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
            Err(payload) => Poll::Ready(RemoteOutcome::Panicked(payload)),
        }
    }
}

pin_project! {
    /// The half of a parallel child that an executor reached through
    /// [`Spawn::spawn_task`] polls: hands the outcome over when it ends.
    struct Remote<F: Future> {
        #[pin]
        inner: InScope<F>,
        handoff: Arc<Handoff<F::Output>>,
        done: bool,
    }

    impl<F: Future> PinnedDrop for Remote<F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if !*this.done {
                this.handoff.finish(RemoteOutcome::Lost);
            }
        }
    }
}

impl<F, E> Future for Remote<F>
where
    F: Future<Output = Result<(), E>>,
    E: CancelError,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        let outcome = std::task::ready!(this.inner.poll(cx));
        *this.done = true;
        this.handoff.finish(outcome);
        Poll::Ready(())
    }
}

/// The nursery's half of a parallel child: a child of the nursery that
/// finishes with the remote half's outcome.
pub(crate) struct Join<'env, O> {
    how: How<'env, O>,
    info: TaskInfo,
}

enum How<'env, O> {
    /// Spawned on an async-executor: its task handle brings the outcome
    /// (`None`: the executor dropped the task unfinished).
    Task(async_executor::FallibleTask<RemoteOutcome<O>>),
    /// Spawned through `Spawn::spawn_task`.
    Handoff {
        handoff: Arc<Handoff<O>>,
        _guard: TaskGuard<'env>,
    },
}

impl<O> Future for Join<'_, O> {
    type Output = O;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<O> {
        let this = self.get_mut();
        let outcome = match &mut this.how {
            How::Task(task) => match Pin::new(task).poll(cx) {
                Poll::Ready(outcome) => outcome.unwrap_or(RemoteOutcome::Lost),
                Poll::Pending => return pending(),
            },
            How::Handoff { handoff, .. } => {
                handoff.waker.register(cx.waker());
                let outcome = handoff.outcome.lock().recover().take();
                match outcome {
                    Some(outcome) => outcome,
                    None => return pending(),
                }
            }
        };
        match outcome {
            RemoteOutcome::Finished(output) => Poll::Ready(output),
            RemoteOutcome::Panicked(payload) => resume_unwind(payload),
            RemoteOutcome::Lost => panic!(
                "hatchery: the executor dropped the parallel child ({}) before it finished; \
                 was the executor shut down or dropped while the nursery was still running? \
                 Keep the executor alive (and running) until the nursery returns",
                this.info
            ),
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
    if let Some(executor) = spawner.__async_executor() {
        return Join {
            how: How::Task(executor.spawn(inner).fallible()),
            info,
        };
    }
    let handoff = Arc::new(Handoff {
        outcome: Mutex::new(None),
        waker: AtomicWaker::new(),
    });
    let remote = Remote {
        inner,
        handoff: Arc::clone(&handoff),
        done: false,
    };
    let guard = spawner.spawn_task(Box::pin(remote));
    Join {
        how: How::Handoff {
            handoff,
            _guard: guard,
        },
        info,
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
