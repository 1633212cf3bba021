//! Nurseries: a body and the children it spawns, polled together by one
//! future, inside one cancel scope.
//!
//! # Invariants
//!
//! 1. The nursery future completes only when its body has completed, its
//!    child set is empty, no child is waiting in `incoming`, no `start()`
//!    is in flight, and no parallel child it started on an async-executor
//!    still runs (`spawn::Parallel`). That check and setting `closed` happen
//!    under the `incoming` lock (and, for the parallel children, the table's
//!    `remote` lock, which their start takes), so a spawn either lands
//!    before the nursery closes (and is waited for) or fails with
//!    [`SpawnError::Closed`]: never lost.
//! 2. The body and every child are polled with the nursery's scope as the
//!    current scope (children handed over by `start()` carry their own task
//!    scope, a child of the nursery's).
//! 3. The first failure (error or panic) cancels the nursery's scope; every
//!    failure is recorded; `Cancelled` is never recorded as a failure.
//! 4. Dropping the nursery future closes it and drops every child and the body
//!    synchronously (a parallel child: its task handle, which cancels it on
//!    its executor without waiting, `spawn` invariant 2).
//! 5. The nursery listens to its own node from its first poll on, before it
//!    polls any task, and when that listener fires (any change of the node's
//!    state) it polls the body and every child again. So its tasks, polled
//!    with their own waker as the covering one (`context` invariant 2), wait
//!    on the nursery's scope without listening themselves: a million
//!    sleeping children cost one listener, and a cancel wakes them with one
//!    pass over the child set.
//! 6. Every await is a cancellation point (`cancel::foreign`): a task (body
//!    or inline child) that returns `Pending` without parking at a hatchery
//!    await, in the nursery's cancelled scope, is dropped right there and
//!    counts as having returned `Cancelled`. Once any task parked in such a
//!    future, the nursery keeps a timer at its scope's effective deadline,
//!    so that the expiry reaches it too.
//! 7. Leaving a nursery is a schedule point but not a cancellation point, as
//!    in trio (a `cancel_shielded_checkpoint` at the exit) and anyio: a
//!    nursery that never returned `Pending` yields once before it closes, so
//!    that a sibling spawned just before into an outer nursery gets to run,
//!    and so does one whose body finished with no child left to wait for.
//!    In a cancelled scope the nursery raises `Cancelled` only if one of its
//!    tasks unwound with it: an empty nursery there returns its value.

pub(crate) mod blocking;
mod children;
mod future;
mod handle;
mod shared;
mod start;
mod supervise;
pub(crate) mod table;

use std::future::Future;
use std::panic::Location;
use std::pin::Pin;
use std::sync::Arc;

use crate::error::{CancelError, Error, NurseryError};
pub use blocking::run_blocking;
use future::NurseryFuture;
pub(crate) use future::{Dropped, FailureSink};
pub use handle::{LocalNursery, Nursery, Supervised, TaskBuilder};
use shared::Shared;
pub use start::Started;
pub use supervise::{HandlePanics, PanicPolicy, ResumePanics};

/// A child polled by a nursery that may move between threads.
type SendChild<'a, E> = Pin<Box<dyn Future<Output = Result<(), E>> + Send + 'a>>;
/// A child polled by a local nursery.
type LocalChild<'a, E> = Pin<Box<dyn Future<Output = Result<(), E>> + 'a>>;

/// Opens a nursery: runs `body` with a handle that spawns children, and
/// completes only when the body and every child have finished.
///
/// * `Ok(Some(value))`: the body returned `Ok(value)` and no task failed.
/// * `Ok(None)`: the nursery's own scope ([`Nursery::cancel_scope`]) was
///   cancelled and caught the body's `Cancelled`.
/// * `Err(error)`: some task failed — `error` holds every failure with the
///   task that raised it — or a cancellation from an enclosing scope is
///   unwinding through the nursery ([`NurseryError::is_cancelled`]): as in
///   trio, if any task unwound with a `Cancelled` that the nursery's own scope
///   does not catch, the nursery passes it on even when the body returned a
///   value.
///
/// The first child (or body) to fail cancels the nursery's scope: the others
/// see `Cancelled` at their next checkpoint, clean up, and return; then the
/// nursery returns. A panic is resumed, with its original payload, once every
/// child has finished; the nursery first writes to stderr which task panicked
/// (the panic hook's message names the thread, and a child's thread is its
/// nursery's or an executor's).
///
/// Children are polled by the nursery future itself, so they may borrow from
/// the enclosing function and need not be `'static`. The nursery future is
/// `Send` when the body and its children are; see [`local_nursery`] for `!Send`
/// children. `body` takes the handle by value (it is cheap to clone) rather
/// than being an async closure, so that the future stays provably `Send`.
///
/// Tasks return `Result<(), `[`Error`]`>`: `?` converts any error, so no type
/// needs naming. The nursery's own error is an [`Error`] too (so that a
/// nursery is a body like any other: `move_on_after(d, nursery(…))`); the
/// [`NurseryError`] with every failure is inside
/// (`error.downcast_ref::<NurseryError>()`). A library with its own error type
/// uses [`typed::nursery`](crate::typed::nursery) instead.
///
/// # Examples
///
/// ```
/// use std::sync::Mutex;
/// use std::time::Duration;
/// use hatchery::{nursery, sleep};
///
/// # futures::executor::block_on(async {
/// let log = Mutex::new(Vec::new()); // borrowed by the children, not 'static
/// let log = &log;
/// nursery(|n| async move {
///     n.spawn(async move {
///         sleep(Duration::from_millis(20)).await?;
///         log.lock().unwrap().push("slow");
///         Ok(())
///     });
///     n.spawn(async move {
///         log.lock().unwrap().push("fast");
///         Ok(())
///     });
///     Ok(())
/// })
/// .await
/// .unwrap();
/// assert_eq!(*log.lock().unwrap(), ["fast", "slow"]);
/// # });
/// ```
///
/// A task that loops until it is cancelled needs nothing more: its `?`
/// leaves the loop. A *body* that loops never reaches its `Ok`, whose type
/// is the nursery's value: write the `Ok` after the loop all the same.
///
/// ```
/// use std::time::Duration;
/// use hatchery::{move_on_after, nursery, sleep};
///
/// # futures::executor::block_on(async {
/// let out = move_on_after(Duration::from_millis(30), async {
///     nursery(|n| async move {
///         n.spawn(async {
///             loop {
///                 sleep(Duration::from_millis(5)).await?; // a child's loop
///             }
///         });
///         loop {
///             n.spawn(async { Ok(()) });
///             sleep(Duration::from_millis(10)).await?;
///         }
///         #[allow(unreachable_code)]
///         Ok(())
///     })
///     .await
/// })
/// .await;
/// assert!(matches!(out, Ok(None))); // the deadline ended both loops
/// # });
/// ```
#[track_caller]
pub fn nursery<'a, T, F, Fut>(body: F) -> impl Future<Output = Result<Option<T>, Error>> + 'a
where
    F: FnOnce(Nursery<'a, Error>) -> Fut,
    Fut: Future<Output = Result<T, Error>> + 'a,
    T: 'a,
{
    Untyped {
        nursery: typed_nursery(body),
    }
}

/// Opens a nursery whose children need not be `Send` (they may hold `Rc`,
/// `RefCell` borrows, …). Otherwise the same as [`nursery`].
///
/// # Examples
///
/// ```
/// use std::cell::RefCell;
/// use std::rc::Rc;
/// use hatchery::local_nursery;
///
/// # futures::executor::block_on(async {
/// let count = Rc::new(RefCell::new(0));
/// local_nursery(|n| {
///     let count = Rc::clone(&count);
///     async move {
///         for _ in 0..3 {
///             let count = Rc::clone(&count);
///             n.spawn(async move {
///                 *count.borrow_mut() += 1;
///                 Ok(())
///             });
///         }
///         Ok(())
///     }
/// })
/// .await
/// .unwrap();
/// assert_eq!(*count.borrow(), 3);
/// # });
/// ```
#[track_caller]
pub fn local_nursery<'a, T, F, Fut>(body: F) -> impl Future<Output = Result<Option<T>, Error>> + 'a
where
    F: FnOnce(LocalNursery<'a, Error>) -> Fut,
    Fut: Future<Output = Result<T, Error>> + 'a,
    T: 'a,
{
    Untyped {
        nursery: typed_local_nursery(body),
    }
}

/// [`nursery`](crate::nursery) with an error type of your choosing: every
/// task returns `Result<(), E>`. Name `E` once, on the handle
/// (`|n: Nursery<'_, E>|`). `E` carries cancellation through
/// [`CancelError`].
///
/// # Examples
///
/// ```
/// use hatchery::{typed, Nursery};
///
/// # futures::executor::block_on(async {
/// let error = typed::nursery(|n: Nursery<'_, std::io::Error>| async move {
///     n.spawn(async { Err(std::io::Error::other("disk full")) });
///     Ok(())
/// })
/// .await
/// .unwrap_err();
/// assert_eq!(error.failures()[0].error.kind(), std::io::ErrorKind::Other);
/// # });
/// ```
#[track_caller]
pub fn typed_nursery<'a, E, T, F, Fut>(
    body: F,
) -> impl Future<Output = Result<Option<T>, NurseryError<E>>> + 'a
where
    F: FnOnce(Nursery<'a, E>) -> Fut,
    Fut: Future<Output = Result<T, E>> + 'a,
    E: CancelError + 'a,
    T: 'a,
{
    open(|shared| Nursery { shared }, body)
}

/// `run`'s root nursery: a typed nursery that, dropped before it finished
/// (the forced shutdown), leaves its failures in `sink`.
#[track_caller]
pub(crate) fn typed_root_nursery<'a, E, T, F, Fut>(
    body: F,
    sink: FailureSink<E>,
) -> impl Future<Output = Result<Option<T>, NurseryError<E>>> + 'a
where
    F: FnOnce(Nursery<'a, E>) -> Fut,
    Fut: Future<Output = Result<T, E>> + 'a,
    E: CancelError + 'a,
    T: 'a,
{
    let mut nursery = open(|shared| Nursery { shared }, body);
    nursery.keep_failures_in(sink);
    nursery
}

/// [`local_nursery`](crate::local_nursery) with an error type of your
/// choosing; see [`typed::nursery`](crate::typed::nursery).
///
/// # Examples
///
/// ```
/// use hatchery::{typed, Cancelled, LocalNursery};
///
/// # futures::executor::block_on(async {
/// let out = typed::local_nursery(|n: LocalNursery<'_, Cancelled>| async move {
///     let shared = std::rc::Rc::new(3);
///     n.spawn(async move {
///         assert_eq!(*shared, 3);
///         Ok(())
///     });
///     Ok("done")
/// })
/// .await;
/// assert_eq!(out.unwrap(), Some("done"));
/// # });
/// ```
#[track_caller]
pub fn typed_local_nursery<'a, E, T, F, Fut>(
    body: F,
) -> impl Future<Output = Result<Option<T>, NurseryError<E>>> + 'a
where
    F: FnOnce(LocalNursery<'a, E>) -> Fut,
    Fut: Future<Output = Result<T, E>> + 'a,
    E: CancelError + 'a,
    T: 'a,
{
    open(|shared| LocalNursery { shared }, body)
}

pin_project_lite::pin_project! {
    /// A nursery future of the untyped API, its error made an [`Error`]. Not
    /// an `async` block: that would hold the nursery future twice (as the
    /// block's capture and as the future it awaits), doubling its size and
    /// the stack each level of nested nurseries takes.
    struct Untyped<N> {
        #[pin]
        nursery: N,
    }
}

impl<N, T> Future for Untyped<N>
where
    N: Future<Output = Result<Option<T>, NurseryError<Error>>>,
{
    type Output = Result<Option<T>, Error>;

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        self.project()
            .nursery
            .poll(cx)
            .map(|out| out.map_err(Error::from))
    }
}

/// Builds a nursery future around `body`, given how to make its handle.
#[track_caller]
fn open<H, E: CancelError, T, Fut, C>(
    handle: impl FnOnce(Arc<Shared<C, E>>) -> H,
    body: impl FnOnce(H) -> Fut,
) -> NurseryFuture<E, T, Fut, C> {
    let (shared, spare, buffers) = Shared::new(Location::caller());
    let shared = Arc::new(shared);
    let body = {
        let _close = CloseIfUnwinding(&shared);
        body(handle(Arc::clone(&shared)))
    };
    NurseryFuture::new(shared, spare, buffers, body)
}

/// Closes a nursery whose body closure panicked before the nursery future
/// existed: children it spawned may hold handles, and would otherwise keep
/// the shared state (and themselves) alive forever.
struct CloseIfUnwinding<'s, C, E>(&'s Shared<C, E>);

impl<C, E> Drop for CloseIfUnwinding<'_, C, E> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            drop(self.0.close());
        }
    }
}
