//! Supervised children: a child whose failure goes to a handler of the
//! user's instead of cancelling its siblings (tokio-graceful-shutdown's
//! `CatchAndLocalShutdown`, Kotlin's `supervisorScope`).
//!
//! # Invariants
//!
//! 1. The handler runs inside the child's poll, so in the nursery's context
//!    (its scope is current), exactly once, and only for a real failure: a
//!    child that ends with `Cancelled` is not a failure and reaches no
//!    handler. For a parallel child that poll is the remote half's, on the
//!    thread where the child ran (its handlers are `Send + 'static`).
//!    What happens after the handler does not reach it: a panic of the
//!    child's `Drop` (which runs once the child ended, inline or on its
//!    worker), or a parallel child its executor dropped unfinished, is the
//!    child's panic, recorded by the nursery.
//! 2. Nothing is lost: a failure the handler returns is the child's
//!    failure, recorded by the nursery like any other (and cancels the
//!    siblings); a panic with no panic handler is resumed as the child's
//!    panic. Every handled failure is counted in the nursery's task table,
//!    where the report reads it.

use std::any::Any;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

use crate::error::{CancelError, TaskFailure};
use crate::nursery::table::TaskTable;
use crate::task::TaskInfo;

/// What a supervised child does with a panic: nothing (it is the child's
/// panic), or hand it to a handler.
pub trait PanicPolicy<E> {
    /// Handles `payload`, or resumes it.
    #[doc(hidden)]
    fn handle(self, task: TaskInfo, payload: Box<dyn Any + Send>) -> Result<(), E>;

    /// Whether panics are caught at all.
    #[doc(hidden)]
    fn catches(&self) -> bool;
}

/// The default [`PanicPolicy`]: a panic stays the child's panic.
///
/// ```
/// let _ = hatchery::ResumePanics;
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct ResumePanics;

impl<E> PanicPolicy<E> for ResumePanics {
    fn handle(self, _task: TaskInfo, payload: Box<dyn Any + Send>) -> Result<(), E> {
        resume_unwind(payload)
    }

    fn catches(&self) -> bool {
        false
    }
}

/// A [`PanicPolicy`] that hands the panic to a handler (see
/// [`Supervised::on_panic`](crate::Supervised::on_panic)).
///
/// ```
/// let policy = hatchery::HandlePanics(|_task: hatchery::TaskInfo, _payload: Box<dyn std::any::Any + Send>| {
///     Ok::<(), hatchery::Error>(())
/// });
/// let _ = policy;
/// ```
#[derive(Debug, Clone, Copy)]
pub struct HandlePanics<P>(pub P);

impl<E, P> PanicPolicy<E> for HandlePanics<P>
where
    P: FnOnce(TaskInfo, Box<dyn Any + Send>) -> Result<(), E>,
{
    fn handle(self, task: TaskInfo, payload: Box<dyn Any + Send>) -> Result<(), E> {
        (self.0)(task, payload)
    }

    fn catches(&self) -> bool {
        true
    }
}

pin_project! {
    /// A child with its failure handlers (invariants 1 and 2).
    pub(crate) struct Supervise<F, H, P> {
        #[pin]
        inner: F,
        task: TaskInfo,
        table: Arc<TaskTable>,
        on_error: Option<H>,
        on_panic: Option<P>,
    }
}

impl<F, H, P> Supervise<F, H, P> {
    pub(crate) fn new(
        inner: F,
        task: TaskInfo,
        table: Arc<TaskTable>,
        on_error: H,
        on_panic: P,
    ) -> Self {
        Supervise {
            inner,
            task,
            table,
            on_error: Some(on_error),
            on_panic: Some(on_panic),
        }
    }
}

impl<F, H, P, E> Future for Supervise<F, H, P>
where
    F: Future<Output = Result<(), E>>,
    H: FnOnce(TaskFailure<E>) -> Result<(), E>,
    P: PanicPolicy<E>,
    E: CancelError,
{
    type Output = Result<(), E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), E>> {
        let this = self.project();
        let inner = this.inner;
        let catches = this.on_panic.as_ref().is_some_and(PanicPolicy::catches);
        let polled = if catches {
            catch_unwind(AssertUnwindSafe(|| inner.poll(cx)))
        } else {
            Ok(inner.poll(cx))
        };
        match polled {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(Err(error))) if !error.is_cancelled() => {
                let Some(handler) = this.on_error.take() else {
                    return Poll::Ready(Err(error));
                };
                let handled = handler(TaskFailure {
                    task: this.task.clone(),
                    error,
                });
                Poll::Ready(tally(this.table, handled))
            }
            Ok(Poll::Ready(output)) => Poll::Ready(output),
            Err(payload) => match this.on_panic.take() {
                Some(policy) => {
                    // A panic that a nursery inside resumed said so: say
                    // where it stops, or that line reads as if it went on.
                    if crate::panics::take_resumed(&*payload) {
                        crate::stderr::write(&format!(
                            "hatchery: {} panicked (in a nursery it opened); its on_panic \
                             handler takes the panic\n",
                            this.task
                        ));
                    }
                    let handled = policy.handle(this.task.clone(), payload);
                    Poll::Ready(tally(this.table, handled))
                }
                None => resume_unwind(payload),
            },
        }
    }
}

/// What a handler returned, counted as handled in the report only if it
/// took the failure (`Ok`): one it passes back is the nursery's failure.
fn tally<E>(table: &TaskTable, handled: Result<(), E>) -> Result<(), E> {
    if handled.is_ok() {
        table.count_handled();
    }
    handled
}
