//! Nurseries: a body and the children it spawns, polled together by one
//! future, inside one cancel scope.
//!
//! # Invariants
//!
//! 1. The nursery future completes only when its body has completed, its
//!    child set is empty, no child is waiting in `incoming`, and no `start()`
//!    is in flight. That check and setting `closed` happen under the
//!    `incoming` lock, so a spawn either lands before the nursery closes (and
//!    is waited for) or fails with [`SpawnError::Closed`]: never lost.
//! 2. The body and every child are polled with the nursery's scope as the
//!    current scope (children handed over by `start()` carry their own task
//!    scope, a child of the nursery's).
//! 3. The first failure (error or panic) cancels the nursery's scope; every
//!    failure is recorded; `Cancelled` is never recorded as a failure.
//! 4. Dropping the nursery future closes it and drops every child and the body
//!    synchronously.
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
//! 7. Leaving a nursery is a schedule point, as in trio and anyio: a nursery
//!    that never returned `Pending` yields once before it closes, so that a
//!    sibling spawned just before into an outer nursery gets to run. When
//!    the body finished with no child left to wait for, that exit is a full
//!    checkpoint, as trio's: in a cancelled scope it counts as `Cancelled`
//!    (caught by the nursery's own scope, or passed on).

pub(crate) mod blocking;
mod children;

mod start;
mod supervise;
pub(crate) mod table;

use std::any::Any;
use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::panic::Location;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Instant;

use pin_project_lite::pin_project;

use crate::cancel::foreign::{Parked, Verdict, verdict};
use crate::cancel::tree::Kind;
use crate::cancel::tree::{Listener, Node};
use crate::cancel::{CancelHandle, CancelReason, enter_node};
use crate::clock::{self, CANCELLED, NEVER};
use crate::context;
use crate::error::{CancelError, Error, NurseryError, SpawnError, TaskFailure};
use crate::spawn::{Spawn, default_spawner, spawn_parallel};
use crate::sync::Recover;
use crate::task::TaskInfo;
use blocking::BlockingEntry;
use children::{BODY, Children, Polled, TaskWaker, Wakeup, poll_with};
pub use start::Started;
use start::{Scoped, StartFuture};
use supervise::Supervise;
pub use supervise::{HandlePanics, PanicPolicy, ResumePanics};
use table::TaskTable;

/// A child polled by a nursery that may move between threads.
type SendChild<'a, E> = Pin<Box<dyn Future<Output = Result<(), E>> + Send + 'a>>;
/// A child polled by a local nursery.
type LocalChild<'a, E> = Pin<Box<dyn Future<Output = Result<(), E>> + 'a>>;

/// What the handles of a nursery share with the nursery future.
pub(crate) struct Shared<C> {
    node: Arc<Node>,
    table: Arc<TaskTable>,
    wakeup: Arc<Wakeup>,
    incoming: Mutex<Incoming<C>>,
    /// The nursery future is in a poll that will still drain `incoming`: a
    /// spawn then need not wake it. Set at the start of each poll, cleared
    /// under the `incoming` lock by the call that finds nothing more to admit
    /// (so a spawn after that point wakes the nursery).
    draining: AtomicBool,
}

/// New children per chunk of the incoming queue.
const INCOMING_CHUNK: usize = 64;

/// Children spawned but not yet admitted by the nursery future, in chunks:
/// a burst of spawns never reallocates and copies the queue, and the memory
/// of a burst is given back once it has been admitted.
struct Incoming<C> {
    chunks: VecDeque<Vec<(C, TaskInfo)>>,
    /// Children in `chunks`.
    len: usize,
    /// Drained chunks kept for reuse (at most two).
    spare: Vec<Vec<(C, TaskInfo)>>,
    closed: bool,
    /// `start()` calls whose child has not been handed over yet.
    pending_starts: usize,
}

impl<C> Shared<C> {
    /// A nursery's shared state, and spare wakers for its children.
    fn new(location: &'static Location<'static>) -> (Self, Vec<Arc<TaskWaker>>) {
        let table = TaskTable::new(location);
        let (wakeup, spare) = Wakeup::take();
        let shared = Shared {
            node: Node::new(None, false, Kind::Nursery(Arc::clone(&table) as _)),
            table,
            wakeup,
            draining: AtomicBool::new(false),
            incoming: Mutex::new(Incoming {
                chunks: VecDeque::new(),
                len: 0,
                spare: Vec::new(),
                closed: false,
                pending_starts: 0,
            }),
        };
        (shared, spare)
    }

    fn lock(&self) -> MutexGuard<'_, Incoming<C>> {
        self.incoming.lock().recover()
    }

    fn push(&self, child: C, info: TaskInfo) -> Result<(), SpawnError> {
        let first = {
            let mut incoming = self.lock();
            if incoming.closed {
                return Err(SpawnError::Closed);
            }
            incoming.push((child, info));
            incoming.len == 1 && !self.draining.load(Ordering::Relaxed)
        };
        // Only the spawn that makes `incoming` non-empty wakes the poller: it
        // drains the whole queue at once on the poll that wake causes. A spawn
        // during a poll that is still to drain it (the body's, most often)
        // wakes nobody.
        if first {
            self.wakeup.waker.wake();
        }
        Ok(())
    }

    /// Registers a `start()` in flight, which keeps the nursery open.
    fn begin_start(&self) -> Result<(), SpawnError> {
        let mut incoming = self.lock();
        if incoming.closed {
            return Err(SpawnError::Closed);
        }
        incoming.pending_starts += 1;
        Ok(())
    }

    /// Ends a `start()`, handing its child over if it called `started`.
    fn finish_start(&self, child: Option<(C, TaskInfo)>) -> Result<(), SpawnError> {
        let result = {
            let mut incoming = self.lock();
            incoming.pending_starts -= 1;
            match child {
                Some(_) if incoming.closed => Err(SpawnError::Closed),
                Some(child) => {
                    incoming.push(child);
                    Ok(())
                }
                None => Ok(()),
            }
        };
        self.wakeup.waker.wake();
        result
    }

    /// Closes the nursery if nothing can still arrive (invariant 1).
    fn try_close(&self) -> bool {
        let mut incoming = self.lock();
        if incoming.len == 0 && incoming.pending_starts == 0 {
            incoming.closed = true;
        }
        incoming.closed
    }

    /// Closes for good (on drop) and returns what was still waiting.
    fn close(&self) -> VecDeque<Vec<(C, TaskInfo)>> {
        let mut incoming = self.lock();
        incoming.closed = true;
        incoming.len = 0;
        std::mem::take(&mut incoming.chunks)
    }

    /// Hands back a drained chunk (if any) and takes the next one to admit,
    /// unless `budget` children have been taken already in this poll (it is
    /// set, on the first call, to the number waiting then). `Err(true)`:
    /// children are left waiting, and the nursery must poll again. Either
    /// `Err` ends the draining (spawns wake the nursery again).
    fn next_chunk(
        &self,
        drained: Option<Vec<(C, TaskInfo)>>,
        budget: &mut Option<usize>,
    ) -> Result<Vec<(C, TaskInfo)>, bool> {
        let mut incoming = self.lock();
        if let Some(chunk) = drained
            && incoming.spare.len() < 2
        {
            debug_assert!(chunk.is_empty());
            incoming.spare.push(chunk);
        }
        let left = budget.get_or_insert(incoming.len);
        if *left == 0 || incoming.len == 0 {
            // Nothing more this poll: later spawns must wake the nursery.
            self.draining.store(false, Ordering::Relaxed);
            return Err(incoming.len > 0);
        }
        let chunk = incoming
            .chunks
            .pop_front()
            .expect("`len` counts the children in `chunks`");
        if incoming.chunks.is_empty() && incoming.chunks.capacity() > 64 {
            // A burst of spawns is over: keep no list of 64 × its size.
            incoming.chunks.shrink_to(8);
        }
        incoming.len -= chunk.len();
        *left = left.saturating_sub(chunk.len());
        Ok(chunk)
    }
}

impl<C> Incoming<C> {
    fn push(&mut self, child: (C, TaskInfo)) {
        match self.chunks.back_mut() {
            Some(chunk) if chunk.len() < INCOMING_CHUNK => chunk.push(child),
            _ => {
                let mut chunk = self.spare.pop().unwrap_or_else(|| {
                    Vec::with_capacity(if self.chunks.is_empty() {
                        4
                    } else {
                        INCOMING_CHUNK
                    })
                });
                chunk.push(child);
                self.chunks.push_back(chunk);
            }
        }
        self.len += 1;
    }
}

/// Closes a nursery whose body closure panicked before the nursery future
/// existed: children it spawned may hold handles, and would otherwise keep
/// the shared state (and themselves) alive forever.
struct CloseIfUnwinding<'s, C>(&'s Shared<C>);

impl<C> Drop for CloseIfUnwinding<'_, C> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            drop(self.0.close());
        }
    }
}

/// Marks a blocking closure abandoned if its task is dropped first.
struct AbandonOnDrop(Option<Arc<AtomicBool>>);

impl Drop for AbandonOnDrop {
    fn drop(&mut self) {
        if let Some(flag) = self.0.take() {
            flag.store(true, Ordering::Relaxed);
        }
    }
}

#[track_caller]
fn closed_panic(error: SpawnError) -> ! {
    panic!("hatchery: {error} (use try_spawn to handle this without panicking)")
}

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
/// child has finished.
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
    let nursery = typed_nursery(body);
    async move { nursery.await.map_err(Error::from) }
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
    let nursery = typed_local_nursery(body);
    async move { nursery.await.map_err(Error::from) }
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

/// Builds a nursery future around `body`, given how to make its handle.
#[track_caller]
fn open<H, E, T, Fut, C>(
    handle: impl FnOnce(Arc<Shared<C>>) -> H,
    body: impl FnOnce(H) -> Fut,
) -> NurseryFuture<E, T, Fut, C> {
    let (shared, spare) = Shared::new(Location::caller());
    let shared = Arc::new(shared);
    let body = {
        let _close = CloseIfUnwinding(&shared);
        body(handle(Arc::clone(&shared)))
    };
    NurseryFuture::new(shared, spare, body)
}

/// The handle of a nursery: spawn children into it, start them, or cancel it.
///
/// Cheap to clone and `Send + Sync`; children may hold clones to spawn
/// siblings. Once the nursery has closed (its body and every child finished),
/// spawning fails with [`SpawnError::Closed`].
///
/// # Examples
///
/// ```
/// use hatchery::{nursery, Cancelled, Nursery};
///
/// # futures::executor::block_on(async {
/// nursery(|n| async move {
///     let n2 = n.clone();
///     n.spawn(async move {
///         n2.spawn(async { Ok(()) }); // a child spawns a sibling
///         Ok(())
///     });
///     Ok(())
/// })
/// .await
/// .unwrap();
/// # });
/// ```
pub struct Nursery<'a, E = Error> {
    shared: Arc<Shared<SendChild<'a, E>>>,
}

/// The handle of a [`local_nursery`]: like [`Nursery`], for `!Send` children.
///
/// # Examples
///
/// ```
/// use std::rc::Rc;
/// use hatchery::{local_nursery, Cancelled, LocalNursery};
///
/// # futures::executor::block_on(async {
/// local_nursery(|n| async move {
///     let shared = Rc::new(5);
///     n.spawn(async move {
///         assert_eq!(*shared, 5);
///         Ok(())
///     });
///     Ok(())
/// })
/// .await
/// .unwrap();
/// # });
/// ```
pub struct LocalNursery<'a, E = Error> {
    shared: Arc<Shared<LocalChild<'a, E>>>,
}

/// The methods both kinds of handle share, written once.
macro_rules! handle_methods {
    ($handle:ident, $child:ident, [$($bound:tt)*], $example_handle:literal, $example_nursery:literal) => {
        impl<E> Clone for $handle<'_, E> {
            fn clone(&self) -> Self {
                $handle {
                    shared: Arc::clone(&self.shared),
                }
            }
        }

        impl<E> fmt::Debug for $handle<'_, E> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                // Copy out first: never hold a lock while user code formats.
                let closed = self.shared.lock().closed;
                f.debug_struct(stringify!($handle))
                    .field("closed", &closed)
                    .field("cancel_scope", &CancelHandle::from_node(Arc::clone(&self.shared.node)))
                    .finish_non_exhaustive()
            }
        }

        impl<'a, E: CancelError + $($bound)* 'a> $handle<'a, E> {
            /// Spawns a child into the nursery. The child runs inside the
            /// nursery's cancel scope, concurrently with the body and its
            /// siblings; the nursery waits for it.
            ///
            /// # Panics
            ///
            /// If the nursery has already closed; see [`try_spawn`](Self::try_spawn).
            ///
            /// # Examples
            ///
            /// ```
            #[doc = concat!("use hatchery::{", $example_nursery, ", Cancelled, ", stringify!($handle), "};")]
            /// # futures::executor::block_on(async {
            /// let mut total = 0;
            /// let total_ref = &mut total;
            #[doc = concat!($example_nursery, "(|n| async move {")]
            ///     n.spawn(async move {
            ///         *total_ref += 1;
            ///         Ok(())
            ///     });
            ///     Ok(())
            /// })
            /// .await
            /// .unwrap();
            /// assert_eq!(total, 1);
            /// # });
            /// ```
            #[track_caller]
            pub fn spawn<F>(&self, future: F)
            where
                F: Future<Output = Result<(), E>> + $($bound)* 'a,
            {
                if let Err(error) = self.spawn_as(TaskInfo::new(None), future) {
                    closed_panic(error)
                }
            }

            /// Names the next child: its name (and the location of the call
            /// that spawns it) identifies it in errors, the shutdown report and
            /// `tracing` spans. Every way of spawning a child has its named
            /// form on the returned [`TaskBuilder`].
            ///
            /// # Examples
            ///
            /// ```
            #[doc = concat!("use hatchery::{typed, ", stringify!($handle), "};")]
            /// # futures::executor::block_on(async {
            #[doc = concat!("let err = typed::", $example_nursery, "(|n: ", stringify!($handle), "<'_, std::io::Error>| async move {")]
            ///     n.named("uploader").spawn(async { Err(std::io::Error::other("quota")) });
            ///     Ok(())
            /// })
            /// .await
            /// .unwrap_err();
            /// assert_eq!(err.failures()[0].task.name(), Some("uploader"));
            /// # });
            /// ```
            pub fn named(&self, name: impl Into<Cow<'static, str>>) -> TaskBuilder<'_, Self> {
                TaskBuilder {
                    handle: self,
                    name: name.into(),
                }
            }

            fn spawn_as<F>(&self, info: TaskInfo, future: F) -> Result<(), SpawnError>
            where
                F: Future<Output = Result<(), E>> + $($bound)* 'a,
            {
                let future = crate::task::instrument(future, &info);
                self.shared.push(Box::pin(future), info)
            }

            fn start_as<V, F, Fut>(
                &self,
                info: TaskInfo,
                child: F,
            ) -> StartFuture<$child<'a, E>, V, E>
            where
                F: FnOnce(Started<V>) -> Fut,
                Fut: Future<Output = Result<(), E>> + $($bound)* 'a,
                V: 'a,
            {
                let (status, state) = Started::new(Arc::clone(&self.shared.node));
                let boxed: $child<'a, E> = Box::pin(crate::task::instrument(child(status), &info));
                StartFuture::new(
                    Arc::clone(&self.shared),
                    boxed,
                    state,
                    |scoped: Scoped<$child<'a, E>, E>| -> $child<'a, E> { Box::pin(scoped) },
                    info,
                )
            }

            fn try_start_as<V, F, Fut>(
                &self,
                info: TaskInfo,
                child: F,
            ) -> Result<StartFuture<$child<'a, E>, V, E>, SpawnError>
            where
                F: FnOnce(Started<V>) -> Fut,
                Fut: Future<Output = Result<(), E>> + $($bound)* 'a,
                V: 'a,
            {
                self.shared.begin_start()?;
                Ok(self.start_as(info, child).registered())
            }

            fn spawn_on_as<'env, S, F>(&self, info: TaskInfo, spawner: &S, future: F) -> Result<(), SpawnError>
            where
                'env: 'a,
                S: Spawn<'env> + ?Sized,
                F: Future<Output = Result<(), E>> + Send + 'env,
                E: Send + 'env,
            {
                let future = crate::task::instrument(future, &info);
                let join = spawn_parallel(spawner, Arc::clone(&self.shared.node), future, info.clone());
                self.shared.push(Box::pin(join), info)
            }

            fn spawn_parallel_as<F>(&self, info: TaskInfo, future: F) -> Result<(), SpawnError>
            where
                F: Future<Output = Result<(), E>> + Send + 'static,
                E: Send + 'static,
            {
                let spawner = default_spawner().ok_or(SpawnError::NoExecutor)?;
                self.spawn_on_as(info, &*spawner, future)
            }

            fn spawn_blocking_as<F>(&self, info: TaskInfo, work: F) -> Result<(), SpawnError>
            where
                F: FnOnce(CancelHandle) -> Result<(), E> + Send + 'static,
                E: Send + 'static,
            {
                let cancel = CancelHandle::from_node(Arc::clone(&self.shared.node));
                let abandoned = Arc::new(AtomicBool::new(false));
                let entry = (info.clone(), Arc::clone(&abandoned));
                let child = async move {
                    let task = ::blocking::unblock(move || {
                        // Listed in the report while this thread runs it.
                        let _entry = BlockingEntry::new(entry.0, entry.1);
                        catch_unwind(AssertUnwindSafe(move || work(cancel)))
                    });
                    // Dropped before the closure returned: nobody waits for
                    // the thread any more (a thread cannot be stopped).
                    let mut abandon = AbandonOnDrop(Some(abandoned));
                    // Waited for, not dropped, on cancellation: the
                    // closure is told through its handle (as trio's
                    // `to_thread` waits for its thread).
                    let outcome = Parked::new(task).await;
                    abandon.0 = None; // finished: nothing was abandoned
                    outcome.unwrap_or_else(|payload| resume_unwind(payload))
                };
                self.shared.push(Box::pin(child), info)
            }

            /// Spawns a child, or returns [`SpawnError::Closed`] (dropping the
            /// child unpolled) if the nursery has already closed.
            ///
            /// # Examples
            ///
            /// ```
            #[doc = concat!("use hatchery::{", $example_nursery, ", Cancelled, ", stringify!($handle), "};")]
            /// # futures::executor::block_on(async {
            #[doc = concat!($example_nursery, "(|n| async move {")]
            ///     assert_eq!(n.try_spawn(async { Ok(()) }), Ok(()));
            ///     Ok(())
            /// })
            /// .await
            /// .unwrap();
            /// # });
            /// ```
            #[track_caller]
            pub fn try_spawn<F>(&self, future: F) -> Result<(), SpawnError>
            where
                F: Future<Output = Result<(), E>> + $($bound)* 'a,
            {
                self.spawn_as(TaskInfo::new(None), future)
            }

            /// Spawns a child and waits until it reports that it is ready by
            /// calling [`Started::started`]; returns the value it passed.
            ///
            /// While starting, the child runs in the caller's cancel scope:
            /// cancelling the caller cancels it, and an error it returns comes
            /// out of `start` as it is. Once `started` is called the child
            /// belongs to the nursery, which waits for it and collects its
            /// errors.
            ///
            /// # Panics
            ///
            /// If the nursery has already closed, or if the child returns
            /// `Ok(())` without calling `started` (while not cancelled).
            ///
            /// # Examples
            ///
            /// ```
            #[doc = concat!("use hatchery::{", $example_nursery, ", Cancelled, Started, ", stringify!($handle), "};")]
            /// # futures::executor::block_on(async {
            #[doc = concat!($example_nursery, "(|n| async move {")]
            ///     let ready = n
            ///         .start(|status: Started<&str>| async move {
            ///             status.started("ready");
            ///             hatchery::checkpoint().await?; // keeps running in the nursery
            ///             Ok(())
            ///         })
            ///         .await?;
            ///     assert_eq!(ready, "ready");
            ///     Ok(())
            /// })
            /// .await
            /// .unwrap();
            /// # });
            /// ```
            #[track_caller]
            pub fn start<V, F, Fut>(
                &self,
                child: F,
            ) -> impl Future<Output = Result<V, E>> + use<'a, E, V, F, Fut>
            where
                F: FnOnce(Started<V>) -> Fut,
                Fut: Future<Output = Result<(), E>> + $($bound)* 'a,
                V: 'a,
            {
                self.start_as(TaskInfo::new(None), child)
            }

            /// Like [`start`](Self::start), but returns
            /// [`SpawnError::Closed`] instead of panicking if the nursery has
            /// already closed (`child` is then not called). The nursery stays
            /// open for the returned future until it completes or is dropped.
            ///
            /// # Examples
            ///
            /// ```
            #[doc = concat!("use hatchery::{", $example_nursery, ", Cancelled, SpawnError, Started, ", stringify!($handle), "};")]
            /// # futures::executor::block_on(async {
            #[doc = concat!($example_nursery, "(|n| async move {")]
            ///     let port = n
            ///         .try_start(|status: Started<u16>| async move {
            ///             status.started(8080);
            ///             Ok(())
            ///         })
            ///         .expect("the nursery is open")
            ///         .await?;
            ///     assert_eq!(port, 8080);
            ///     Ok(())
            /// })
            /// .await
            /// .unwrap();
            ///
            /// // A handle kept past the nursery's end:
            /// let kept = std::rc::Rc::new(std::cell::RefCell::new(None));
            /// let keeper = kept.clone();
            #[doc = concat!($example_nursery, "(move |n: ", stringify!($handle), "<'static>| {")]
            ///     *keeper.borrow_mut() = Some(n.clone());
            ///     async { Ok(()) }
            /// })
            /// .await
            /// .unwrap();
            /// // The nursery has closed: no child is started, nothing panics.
            /// let n = kept.borrow_mut().take().unwrap();
            /// let out = n.try_start(|status: Started<()>| async move {
            ///     status.started(());
            ///     Ok(())
            /// });
            /// assert_eq!(out.err(), Some(SpawnError::Closed));
            /// # });
            /// ```
            #[track_caller]
            pub fn try_start<V, F, Fut>(
                &self,
                child: F,
            ) -> Result<impl Future<Output = Result<V, E>> + use<'a, E, V, F, Fut>, SpawnError>
            where
                F: FnOnce(Started<V>) -> Fut,
                Fut: Future<Output = Result<(), E>> + $($bound)* 'a,
                V: 'a,
            {
                self.try_start_as(TaskInfo::new(None), child)
            }

            /// Spawns a child on `spawner` (an executor) instead of polling it
            /// inline, so that it runs in parallel with its siblings. It
            /// obeys the same rules as an inline child: it sees the
            /// nursery's cancellation at its checkpoints (on whatever thread
            /// it runs), its error or panic is collected the same way, and
            /// the nursery waits for it. Dropping the nursery cancels it on
            /// the executor, without waiting.
            ///
            /// The child cannot borrow from the nursery's frame: it must live
            /// as long as the executor accepts (`'env`, usually `'static`).
            ///
            /// ```compile_fail
            #[doc = concat!("use hatchery::{", $example_nursery, ", Cancelled, ", stringify!($handle), "};")]
            /// let executor = async_executor::Executor::new();
            /// # futures::executor::block_on(async {
            /// let local = vec![1, 2, 3];
            #[doc = concat!($example_nursery, "(|n| async move {")]
            ///     let borrowed = &local; // error: `local` does not live long enough
            ///     n.spawn_on(&executor, async move { assert_eq!(borrowed.len(), 3); Ok(()) });
            ///     Ok(())
            /// }).await.unwrap();
            /// # });
            /// ```
            ///
            /// # Examples
            ///
            /// ```
            /// use std::sync::atomic::{AtomicUsize, Ordering};
            /// use std::sync::Arc;
            #[doc = concat!("use hatchery::{", $example_nursery, ", Cancelled, ", stringify!($handle), "};")]
            ///
            /// let executor = async_executor::Executor::new();
            /// let count = Arc::new(AtomicUsize::new(0));
            /// let (ex, total) = (&executor, &count);
            /// futures_lite::future::block_on(ex.run(async move {
            #[doc = concat!("    ", $example_nursery, "(|n| async move {")]
            ///         for _ in 0..4 {
            ///             let count = total.clone();
            ///             n.spawn_on(ex, async move {
            ///                 count.fetch_add(1, Ordering::SeqCst);
            ///                 Ok(())
            ///             });
            ///         }
            ///         Ok(())
            ///     })
            ///     .await
            ///     .unwrap();
            /// }));
            /// assert_eq!(count.load(Ordering::SeqCst), 4);
            /// ```
            #[track_caller]
            pub fn spawn_on<'env, S, F>(&self, spawner: &S, future: F)
            where
                'env: 'a,
                S: Spawn<'env> + ?Sized,
                F: Future<Output = Result<(), E>> + Send + 'env,
                E: Send + 'env,
            {
                if let Err(error) = self.spawn_on_as(TaskInfo::new(None), spawner, future) {
                    closed_panic(error)
                }
            }

            /// Spawns a parallel child on the executor of the surrounding
            /// [`run`](crate::run); see [`spawn_on`](Self::spawn_on).
            ///
            /// # Panics
            ///
            /// Outside `run` (there is no default executor), or if the
            /// nursery has closed; see [`try_spawn_parallel`](Self::try_spawn_parallel).
            ///
            /// # Examples
            ///
            /// ```
            /// use hatchery::{run, Cancelled, Nursery};
            ///
            /// let out = run(|n| async move {
            ///     n.spawn_parallel(async {
            ///         let sum: u64 = (0..1_000_000u64).sum(); // CPU-bound, off the main thread
            ///         assert_eq!(sum, 499_999_500_000);
            ///         Ok(())
            ///     });
            ///     Ok("done")
            /// });
            /// assert_eq!(out.unwrap(), Some("done"));
            /// ```
            #[track_caller]
            pub fn spawn_parallel<F>(&self, future: F)
            where
                F: Future<Output = Result<(), E>> + Send + 'static,
                E: Send + 'static,
            {
                if let Err(error) = self.try_spawn_parallel(future) {
                    closed_panic(error)
                }
            }

            /// Like [`spawn_parallel`](Self::spawn_parallel), but returns an
            /// error instead of panicking.
            ///
            /// ```
            #[doc = concat!("use hatchery::{", $example_nursery, ", Cancelled, SpawnError, ", stringify!($handle), "};")]
            /// # futures::executor::block_on(async {
            #[doc = concat!($example_nursery, "(|n| async move {")]
            ///     // Not inside hatchery::run: there is no default executor.
            ///     assert_eq!(n.try_spawn_parallel(async { Ok(()) }), Err(SpawnError::NoExecutor));
            ///     Ok(())
            /// })
            /// .await
            /// .unwrap();
            /// # });
            /// ```
            #[track_caller]
            pub fn try_spawn_parallel<F>(&self, future: F) -> Result<(), SpawnError>
            where
                F: Future<Output = Result<(), E>> + Send + 'static,
                E: Send + 'static,
            {
                self.spawn_parallel_as(TaskInfo::new(None), future)
            }

            /// Runs a blocking closure on a thread pool (smol's `blocking`),
            /// as a child of the nursery. The closure gets the nursery's
            /// [`CancelHandle`] and should poll
            /// [`is_cancelled`](CancelHandle::is_cancelled) so that
            /// cancellation reaches blocking loops. A panic in it is resumed
            /// in the parent like any child's.
            ///
            /// If the nursery future is dropped, the closure's result is
            /// discarded; the thread finishes the closure on its own (a
            /// thread cannot be stopped from outside), and never holds the
            /// nursery open.
            ///
            /// # Examples
            ///
            /// ```
            /// use std::time::Duration;
            #[doc = concat!("use hatchery::{", $example_nursery, ", sleep, Cancelled, ", stringify!($handle), "};")]
            ///
            /// # futures::executor::block_on(async {
            #[doc = concat!($example_nursery, "(|n| async move {")]
            ///     n.spawn_blocking(|cancel| {
            ///         let mut rounds = 0u64;
            ///         while !cancel.is_cancelled() {
            ///             std::thread::sleep(Duration::from_millis(1)); // blocking work
            ///             rounds += 1;
            ///         }
            ///         assert!(rounds > 0);
            ///         Err(Cancelled.into()) // unwind like any cancelled task
            ///     });
            ///     sleep(Duration::from_millis(20)).await?;
            ///     n.cancel_scope().cancel();
            ///     Ok(())
            /// })
            /// .await
            /// .unwrap();
            /// # });
            /// ```
            #[track_caller]
            pub fn spawn_blocking<F>(&self, work: F)
            where
                F: FnOnce(CancelHandle) -> Result<(), E> + Send + 'static,
                E: Send + 'static,
            {
                if let Err(error) = self.spawn_blocking_as(TaskInfo::new(None), work) {
                    closed_panic(error)
                }
            }

            /// A handle to the nursery's cancel scope. Cancelling it cancels the
            /// body and every child; the nursery then returns `Ok(None)`.
            ///
            /// # Examples
            ///
            /// ```
            #[doc = concat!("use hatchery::{", $example_nursery, ", sleep_forever, Cancelled, ", stringify!($handle), "};")]
            /// # futures::executor::block_on(async {
            #[doc = concat!("let out = ", $example_nursery, "(|n| async move {")]
            ///     n.spawn(async { sleep_forever().await?; Ok(()) });
            ///     n.cancel_scope().cancel();
            ///     Ok(())
            /// })
            /// .await;
            /// assert_eq!(out.unwrap(), Some(())); // the body had already returned
            /// # });
            /// ```
            pub fn cancel_scope(&self) -> CancelHandle {
                CancelHandle::from_node(Arc::clone(&self.shared.node))
            }
        }

        impl<'h, 'a, E: CancelError + $($bound)* 'a> TaskBuilder<'h, $handle<'a, E>> {
            /// [`spawn`]($handle::spawn), named.
            ///
            /// ```
            #[doc = concat!("use hatchery::", $example_nursery, ";")]
            /// # futures::executor::block_on(async {
            #[doc = concat!($example_nursery, "(|n| async move {")]
            ///     n.named("worker").spawn(async { Ok(()) });
            ///     Ok(())
            /// })
            /// .await
            /// .unwrap();
            /// # });
            /// ```
            #[track_caller]
            pub fn spawn<F>(self, future: F)
            where
                F: Future<Output = Result<(), E>> + $($bound)* 'a,
            {
                if let Err(error) = self.handle.spawn_as(TaskInfo::new(Some(self.name)), future) {
                    closed_panic(error)
                }
            }

            /// [`try_spawn`]($handle::try_spawn), named.
            ///
            /// ```
            #[doc = concat!("use hatchery::", $example_nursery, ";")]
            /// # futures::executor::block_on(async {
            #[doc = concat!($example_nursery, "(|n| async move {")]
            ///     assert!(n.named("worker").try_spawn(async { Ok(()) }).is_ok());
            ///     Ok(())
            /// })
            /// .await
            /// .unwrap();
            /// # });
            /// ```
            #[track_caller]
            pub fn try_spawn<F>(self, future: F) -> Result<(), SpawnError>
            where
                F: Future<Output = Result<(), E>> + $($bound)* 'a,
            {
                self.handle.spawn_as(TaskInfo::new(Some(self.name)), future)
            }

            /// [`start`]($handle::start), named.
            ///
            /// ```
            #[doc = concat!("use hatchery::{", $example_nursery, ", Started};")]
            /// # futures::executor::block_on(async {
            #[doc = concat!($example_nursery, "(|n| async move {")]
            ///     let port = n
            ///         .named("listener")
            ///         .start(|status: Started<u16>| async move {
            ///             status.started(8080);
            ///             Ok(())
            ///         })
            ///         .await?;
            ///     assert_eq!(port, 8080);
            ///     Ok(())
            /// })
            /// .await
            /// .unwrap();
            /// # });
            /// ```
            #[track_caller]
            pub fn start<V, F, Fut>(
                self,
                child: F,
            ) -> impl Future<Output = Result<V, E>> + use<'a, E, V, F, Fut>
            where
                F: FnOnce(Started<V>) -> Fut,
                Fut: Future<Output = Result<(), E>> + $($bound)* 'a,
                V: 'a,
            {
                self.handle.start_as(TaskInfo::new(Some(self.name)), child)
            }

            /// [`try_start`]($handle::try_start), named.
            ///
            /// ```
            #[doc = concat!("use hatchery::{", $example_nursery, ", Started};")]
            /// # futures::executor::block_on(async {
            #[doc = concat!($example_nursery, "(|n| async move {")]
            ///     let start = n.named("listener").try_start(|status: Started<()>| async move {
            ///         status.started(());
            ///         Ok(())
            ///     });
            ///     start.expect("the nursery is open").await?;
            ///     Ok(())
            /// })
            /// .await
            /// .unwrap();
            /// # });
            /// ```
            #[track_caller]
            pub fn try_start<V, F, Fut>(
                self,
                child: F,
            ) -> Result<impl Future<Output = Result<V, E>> + use<'a, E, V, F, Fut>, SpawnError>
            where
                F: FnOnce(Started<V>) -> Fut,
                Fut: Future<Output = Result<(), E>> + $($bound)* 'a,
                V: 'a,
            {
                self.handle.try_start_as(TaskInfo::new(Some(self.name)), child)
            }

            /// [`spawn_on`]($handle::spawn_on), named.
            ///
            /// ```
            #[doc = concat!("use hatchery::", $example_nursery, ";")]
            /// let executor = async_executor::Executor::new();
            /// let ex = &executor;
            /// futures_lite::future::block_on(ex.run(async move {
            #[doc = concat!("    ", $example_nursery, "(|n| async move {")]
            ///         n.named("cruncher").spawn_on(ex, async { Ok(()) });
            ///         Ok(())
            ///     })
            ///     .await
            ///     .unwrap();
            /// }));
            /// ```
            #[track_caller]
            pub fn spawn_on<'env, S, F>(self, spawner: &S, future: F)
            where
                'env: 'a,
                S: Spawn<'env> + ?Sized,
                F: Future<Output = Result<(), E>> + Send + 'env,
                E: Send + 'env,
            {
                let info = TaskInfo::new(Some(self.name));
                if let Err(error) = self.handle.spawn_on_as(info, spawner, future) {
                    closed_panic(error)
                }
            }

            /// [`spawn_parallel`]($handle::spawn_parallel), named.
            ///
            /// ```
            /// hatchery::run(|n| async move {
            ///     n.named("cruncher").spawn_parallel(async { Ok(()) });
            ///     Ok(())
            /// })
            /// .unwrap();
            /// ```
            #[track_caller]
            pub fn spawn_parallel<F>(self, future: F)
            where
                F: Future<Output = Result<(), E>> + Send + 'static,
                E: Send + 'static,
            {
                if let Err(error) = self.try_spawn_parallel(future) {
                    closed_panic(error)
                }
            }

            /// [`try_spawn_parallel`]($handle::try_spawn_parallel), named.
            ///
            /// ```
            #[doc = concat!("use hatchery::{", $example_nursery, ", SpawnError};")]
            /// # futures::executor::block_on(async {
            #[doc = concat!($example_nursery, "(|n| async move {")]
            ///     let out = n.named("cruncher").try_spawn_parallel(async { Ok(()) });
            ///     assert_eq!(out, Err(SpawnError::NoExecutor)); // not inside run
            ///     Ok(())
            /// })
            /// .await
            /// .unwrap();
            /// # });
            /// ```
            #[track_caller]
            pub fn try_spawn_parallel<F>(self, future: F) -> Result<(), SpawnError>
            where
                F: Future<Output = Result<(), E>> + Send + 'static,
                E: Send + 'static,
            {
                self.handle.spawn_parallel_as(TaskInfo::new(Some(self.name)), future)
            }

            /// Supervises the child: a failure (an error other than a
            /// cancellation) goes to `handler`, with the task's name and
            /// spawn location, instead of cancelling its siblings; what the
            /// handler returns is the child's result. So a failure the
            /// handler returns still fails the nursery: nothing is lost.
            /// The handler runs in the nursery's context, once. Panics stay
            /// panics unless [`on_panic`](Supervised::on_panic) says otherwise.
            /// The report counts handled failures per nursery.
            ///
            /// ```
            #[doc = concat!("use hatchery::", $example_nursery, ";")]
            /// # futures::executor::block_on(async {
            /// let handled = std::sync::Mutex::new(Vec::new());
            /// let handled = &handled;
            #[doc = concat!($example_nursery, "(|n| async move {")]
            ///     for id in 0..3 {
            ///         n.named(format!("connection {id}"))
            ///             .on_failure(move |failure| {
            ///                 handled.lock().unwrap().push(failure.task.name().unwrap().to_owned());
            ///                 Ok(()) // logged; the other connections go on
            ///             })
            ///             .spawn(async move {
            ///                 if id == 1 {
            ///                     return Err(hatchery::Error::msg("malformed request"));
            ///                 }
            ///                 hatchery::sleep(std::time::Duration::from_millis(5)).await?;
            ///                 Ok(())
            ///             });
            ///     }
            ///     Ok(())
            /// })
            /// .await
            /// .unwrap();
            /// assert_eq!(*handled.lock().unwrap(), ["connection 1"]);
            /// # });
            /// ```
            pub fn on_failure<H>(self, handler: H) -> Supervised<'h, $handle<'a, E>, H, ResumePanics>
            where
                H: FnOnce(TaskFailure<E>) -> Result<(), E>,
            {
                Supervised {
                    builder: self,
                    on_error: handler,
                    on_panic: ResumePanics,
                }
            }

            /// [`spawn_blocking`]($handle::spawn_blocking), named.
            ///
            /// ```
            #[doc = concat!("use hatchery::", $example_nursery, ";")]
            /// # futures::executor::block_on(async {
            #[doc = concat!($example_nursery, "(|n| async move {")]
            ///     n.named("checksum").spawn_blocking(|_cancel| Ok(()));
            ///     Ok(())
            /// })
            /// .await
            /// .unwrap();
            /// # });
            /// ```
            #[track_caller]
            pub fn spawn_blocking<F>(self, work: F)
            where
                F: FnOnce(CancelHandle) -> Result<(), E> + Send + 'static,
                E: Send + 'static,
            {
                let info = TaskInfo::new(Some(self.name));
                if let Err(error) = self.handle.spawn_blocking_as(info, work) {
                    closed_panic(error)
                }
            }
        }

        impl<'h, 'a, E, H, P> Supervised<'h, $handle<'a, E>, H, P>
        where
            E: CancelError + $($bound)* 'a,
            H: FnOnce(TaskFailure<E>) -> Result<(), E> + $($bound)* 'a,
            P: PanicPolicy<E> + $($bound)* 'a,
        {
            /// Hands a panic of the child to `handler` too (with the task and
            /// the payload), instead of resuming it in the nursery; what the
            /// handler returns is the child's result.
            ///
            /// ```
            #[doc = concat!("use hatchery::", $example_nursery, ";")]
            /// # futures::executor::block_on(async {
            #[doc = concat!($example_nursery, "(|n| async move {")]
            ///     n.named("parser")
            ///         .on_failure(|_failure| Ok(()))
            ///         .on_panic(|task, _payload| {
            ///             eprintln!("{task} panicked; the server goes on");
            ///             Ok(())
            ///         })
            ///         .spawn(async { panic!("a bug in the parser") });
            ///     Ok(())
            /// })
            /// .await
            /// .unwrap();
            /// # });
            /// ```
            pub fn on_panic<Q>(self, handler: Q) -> Supervised<'h, $handle<'a, E>, H, HandlePanics<Q>>
            where
                Q: FnOnce(TaskInfo, Box<dyn Any + Send>) -> Result<(), E>,
            {
                Supervised {
                    builder: self.builder,
                    on_error: self.on_error,
                    on_panic: HandlePanics(handler),
                }
            }

            /// Spawns the supervised child inline; see
            /// [`TaskBuilder::on_failure`].
            ///
            /// ```
            #[doc = concat!("use hatchery::", $example_nursery, ";")]
            /// # futures::executor::block_on(async {
            #[doc = concat!($example_nursery, "(|n| async move {")]
            ///     n.named("worker").on_failure(|_failure| Ok(())).spawn(async { Ok(()) });
            ///     Ok(())
            /// })
            /// .await
            /// .unwrap();
            /// # });
            /// ```
            #[track_caller]
            pub fn spawn<F>(self, future: F)
            where
                F: Future<Output = Result<(), E>> + $($bound)* 'a,
            {
                let info = TaskInfo::new(Some(self.builder.name));
                let handle = self.builder.handle;
                let table = Arc::clone(&handle.shared.table);
                let future = Supervise::new(future, info.clone(), table, self.on_error, self.on_panic);
                if let Err(error) = handle.spawn_as(info, future) {
                    closed_panic(error)
                }
            }

            /// Spawns the supervised child on the executor of the surrounding
            /// [`run`](crate::run); see [`TaskBuilder::on_failure`]. Its
            /// handler runs in the nursery, not on the worker.
            ///
            /// ```
            /// hatchery::run(|n| async move {
            ///     n.named("request").on_failure(|_failure| Ok(())).spawn_parallel(async {
            ///         Err(hatchery::Error::msg("handled"))
            ///     });
            ///     Ok(())
            /// })
            /// .unwrap();
            /// ```
            #[track_caller]
            pub fn spawn_parallel<F>(self, future: F)
            where
                F: Future<Output = Result<(), E>> + Send + 'static,
                E: Send + 'static,
            {
                let info = TaskInfo::new(Some(self.builder.name));
                let handle = self.builder.handle;
                let spawner = match default_spawner() {
                    Some(spawner) => spawner,
                    None => closed_panic(SpawnError::NoExecutor),
                };
                let future = crate::task::instrument(future, &info);
                let join = spawn_parallel(&*spawner, Arc::clone(&handle.shared.node), future, info.clone());
                let table = Arc::clone(&handle.shared.table);
                let supervised = Supervise::new(join, info.clone(), table, self.on_error, self.on_panic);
                if let Err(error) = handle.shared.push(Box::pin(supervised), info) {
                    closed_panic(error)
                }
            }
        }
    };
}

/// A named child with failure handlers, about to be spawned: made by
/// [`TaskBuilder::on_failure`].
///
/// ```
/// hatchery::run(|n| async move {
///     n.named("connection")
///         .on_failure(|failure| {
///             eprintln!("{}: {}", failure.task, failure.error);
///             Ok(())
///         })
///         .spawn(async { Err(hatchery::Error::msg("connection reset")) });
///     Ok(())
/// })
/// .unwrap();
/// ```
#[must_use = "a supervised child is spawned only by spawn or spawn_parallel"]
pub struct Supervised<'h, H, OnError, OnPanic> {
    builder: TaskBuilder<'h, H>,
    on_error: OnError,
    on_panic: OnPanic,
}

impl<H, OnError, OnPanic> fmt::Debug for Supervised<'_, H, OnError, OnPanic> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Supervised")
            .field("name", &self.builder.name)
            .finish_non_exhaustive()
    }
}

/// A child about to be spawned with a name: every way to spawn, start or
/// send a child somewhere, named. Made by [`Nursery::named`] (and
/// [`LocalNursery::named`]).
///
/// # Examples
///
/// ```
/// use hatchery::nursery;
///
/// # futures::executor::block_on(async {
/// let error = nursery(|n| async move {
///     n.named("config-loader").spawn(async { Err(hatchery::Error::msg("no config.toml")) });
///     Ok(())
/// })
/// .await
/// .unwrap_err();
/// let failures = error.downcast_ref::<hatchery::NurseryError>().unwrap().failures();
/// assert_eq!(failures[0].task.name(), Some("config-loader"));
/// # });
/// ```
#[must_use = "a task builder spawns nothing until one of its methods is called"]
pub struct TaskBuilder<'h, H> {
    handle: &'h H,
    name: Cow<'static, str>,
}

impl<H> fmt::Debug for TaskBuilder<'_, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskBuilder")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

handle_methods!(
    Nursery,
    SendChild,
    [Send+],
    "Nursery<'_, Cancelled>",
    "nursery"
);
handle_methods!(
    LocalNursery,
    LocalChild,
    [],
    "LocalNursery<'_, Cancelled>",
    "local_nursery"
);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NurseryPhase {
    Idle,
    Running,
    Exited,
}

pin_project! {
    /// The future returned by [`nursery`] and [`local_nursery`].
    struct NurseryFuture<E, T, Fut, C> {
        #[pin]
        body: Option<Fut>,
        body_output: Option<T>,
        // Some task (body or child) unwound with a cancellation.
        saw_cancelled: bool,
        body_info: TaskInfo,
        body_flag: Arc<TaskWaker>,
        // The nursery's node, moved into the current-scope slot while polling.
        slot: Option<Arc<Node>>,
        // The nursery's own listener to its node (invariant 5).
        watch: Option<Listener>,
        // Invariant 6.
        foreign: Foreign,
        shared: Arc<Shared<C>>,
        children: Children<C>,
        failures: Vec<TaskFailure<E>>,
        panic: Option<Box<dyn Any + Send>>,
        // The nursery returned `Pending` at least once (invariant 7).
        yielded: bool,
        // Invariant 7's exit checkpoint: 0 none (children were left to wait
        // for), 1 due, 2 yielded (the cancellation is checked at the close).
        exit_checkpoint: u8,
        phase: NurseryPhase,
    }

    impl<E, T, Fut, C> PinnedDrop for NurseryFuture<E, T, Fut, C> {
        fn drop(this: Pin<&mut Self>) {
            let mut this = this.project();
            // Unlink first: a child's `Drop` may panic below.
            this.shared.node.exit();
            // The hard cancel (invariant 4): nothing can be spawned any more,
            // and every child and the body are dropped right here.
            drop(this.shared.close());
            this.children.clear();
            this.body.set(None);
            this.children.give_back();
        }
    }
}

impl<E, T, Fut, C> NurseryFuture<E, T, Fut, C> {
    #[track_caller]
    fn new(shared: Arc<Shared<C>>, spare: Vec<Arc<TaskWaker>>, body: Fut) -> Self {
        let mut children =
            Children::new(Arc::clone(&shared.wakeup), spare, Arc::clone(&shared.table));
        let body_flag = children.body_waker();
        NurseryFuture {
            body: Some(body),
            body_output: None,
            saw_cancelled: false,
            body_info: TaskInfo::new(Some(Cow::Borrowed("nursery body"))),
            body_flag,
            slot: Some(Arc::clone(&shared.node)),
            watch: None,
            foreign: Foreign::default(),
            children,
            shared,
            failures: Vec::new(),
            panic: None,
            yielded: false,
            exit_checkpoint: 0,
            phase: NurseryPhase::Idle,
        }
    }
}

/// What the nursery keeps for its tasks that wait in futures that cannot see
/// cancellation (invariant 6, `cancel::foreign`).
#[derive(Default)]
struct Foreign {
    /// Some task was parked in such a future: the nursery keeps a timer at
    /// its scope's effective deadline from then on.
    seen: bool,
    /// A verdict said "retry": poll every task again on the next poll.
    retry: bool,
    timer: Option<(Instant, clock::Timer)>,
}

impl Foreign {
    /// Keeps the timer at `node`'s effective deadline while some task was
    /// parked in a foreign future; when it fires, the expiry is recorded
    /// (which wakes the nursery through its listener).
    fn arm(&mut self, node: &Node, cx: &mut Context<'_>) {
        if !self.seen {
            return;
        }
        let at = match node.state() {
            CANCELLED | NEVER => {
                self.timer = None;
                return;
            }
            deadline => clock::from_nanos(deadline),
        };
        let timer = match &mut self.timer {
            Some((armed, timer)) => {
                if *armed != at {
                    timer.set_at(at);
                    *armed = at;
                }
                timer
            }
            slot @ None => &mut slot.insert((at, clock::timer_at(at))).1,
        };
        if Pin::new(timer).poll(cx).is_ready() {
            self.timer = None;
            // Records the expiry: the listener fires, the nursery is polled
            // again and every task with it.
            let _ = node.check();
            cx.waker().wake_by_ref();
        }
    }
}

/// Where the failures of a nursery's tasks are recorded (invariant 3), and
/// what is done with tasks parked in foreign futures (invariant 6).
struct Outcomes<'r, E> {
    node: &'r Node,
    failures: &'r mut Vec<TaskFailure<E>>,
    panic: &'r mut Option<Box<dyn Any + Send>>,
    /// Some task (body or child) unwound with a cancellation.
    saw_cancelled: &'r mut bool,
    foreign: &'r mut Foreign,
}

impl<E: CancelError> Outcomes<'_, E> {
    fn error(&mut self, task: TaskInfo, error: E) {
        if error.is_cancelled() {
            *self.saw_cancelled = true;
        } else {
            self.node.cancel(CancelReason::TaskFailed(task.clone()));
            self.failures.push(TaskFailure { task, error });
        }
    }

    fn panic(&mut self, task: TaskInfo, payload: Box<dyn Any + Send>) {
        if self.panic.is_some() {
            // Only the first payload is resumed; this one is not lost.
            eprintln!(
                "hatchery: {task} panicked too, while its nursery was failing: {}",
                panic_message(&*payload)
            );
            return;
        }
        self.node.cancel(CancelReason::TaskFailed(task));
        *self.panic = Some(payload);
    }

    /// A task returned `Pending` without parking at a hatchery await: true
    /// if it must be dropped now, ending as if it returned `Cancelled`.
    fn unparked(&mut self) -> bool {
        match verdict(self.node) {
            Verdict::Keep => {
                self.foreign.seen = true;
                false
            }
            Verdict::Retry => {
                self.foreign.retry = true;
                false
            }
            Verdict::Drop => {
                *self.saw_cancelled = true;
                true
            }
        }
    }

    /// Polls the child at `key` (if it is queued) and records how it ended.
    fn poll_child<C>(&mut self, children: &mut Children<C>, key: usize)
    where
        C: Future<Output = Result<(), E>> + Unpin,
    {
        match children.poll(key) {
            // A cancelled child is not a failure: no need for its identity
            // (its table entry goes with the batch, like a success's).
            Polled::Done(Ok(Err(error))) if error.is_cancelled() => *self.saw_cancelled = true,
            Polled::Done(Ok(Err(error))) => self.error(children.failed(key), error),
            Polled::Done(Err(payload)) => self.panic(children.failed(key), payload),
            Polled::Unparked if self.unparked() => {
                if let Err(payload) = children.drop_child(key) {
                    self.panic(children.failed(key), payload);
                }
            }
            Polled::Parked(flags) if flags.noteworthy() && self.node.state() == CANCELLED => {
                children.note(key, flags);
            }
            Polled::Done(Ok(Ok(()))) | Polled::Unparked | Polled::Parked(_) | Polled::Idle => {}
        }
    }
}

/// The text of a panic payload, when it has one.
fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(text) = payload.downcast_ref::<&str>() {
        text
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text
    } else {
        "(a payload that is not text)"
    }
}

/// Keeps the nursery listening to its node (invariant 5); true if the
/// node's state changed since the last call.
fn node_changed(watch: &mut Option<Listener>, node: &Arc<Node>, cx: &mut Context<'_>) -> bool {
    let mut changed = false;
    loop {
        let listener = watch.get_or_insert_with(|| node.listen());
        if Pin::new(listener).poll(cx).is_pending() {
            return changed;
        }
        // Listen again before the tasks are polled: a change after this
        // point fires the new listener.
        *watch = None;
        changed = true;
    }
}

impl<E, T, Fut, C> Future for NurseryFuture<E, T, Fut, C>
where
    E: CancelError,
    Fut: Future<Output = Result<T, E>>,
    C: Future<Output = Result<(), E>> + Unpin,
{
    type Output = Result<Option<T>, NurseryError<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.phase {
            NurseryPhase::Idle => {
                enter_node(&this.shared.node, None);
                *this.phase = NurseryPhase::Running;
            }
            NurseryPhase::Running => {}
            NurseryPhase::Exited => {
                panic!("hatchery: a nursery future was polled after it completed")
            }
        }
        let shared = &**this.shared;
        let node = &*shared.node;
        shared.wakeup.waker.register(cx.waker());
        let changed =
            node_changed(this.watch, &shared.node, cx) | std::mem::take(&mut this.foreign.retry);
        shared.draining.store(true, Ordering::Relaxed);

        let mut body = this.body;
        let children = this.children;
        let mut outcomes = Outcomes {
            node,
            failures: this.failures,
            panic: this.panic,
            saw_cancelled: this.saw_cancelled,
            foreign: this.foreign,
        };
        let body_flag = &*this.body_flag;
        let body_info = &*this.body_info;
        let body_output = &mut *this.body_output;
        let yielded = *this.yielded;
        let exit_checkpoint = &mut *this.exit_checkpoint;
        let (done, more) = context::enter(this.slot, || {
            let body_was_running = body.is_some();
            // The tasks woken since the last poll, the body among them; all of
            // them if the scope changed (invariant 5).
            let mut batch = children.take_woken();
            if changed {
                if body.is_some() && body_flag.mark_queued() {
                    batch.push(BODY);
                }
                // Every child in key order (a woken one is polled once: its
                // entry in `batch` is stale by then, invariant 2 of children).
                for key in 0..children.key_end() {
                    if children.mark_queued(key) {
                        outcomes.poll_child(children, key);
                    }
                }
            }
            for &key in &batch {
                if key != BODY {
                    outcomes.poll_child(children, key);
                    continue;
                }
                let Some(future) = body.as_mut().as_pin_mut() else {
                    continue;
                };
                if !body_flag.take_queued() {
                    continue;
                }
                match poll_with(future, body_flag) {
                    (Ok(Poll::Pending), flags) if flags.parked() => continue,
                    (Ok(Poll::Pending), _) if !outcomes.unparked() => continue,
                    // Dropped below, as if it returned `Cancelled`.
                    (Ok(Poll::Pending), _) => {}
                    (Ok(Poll::Ready(Ok(value))), _) => *body_output = Some(value),
                    (Ok(Poll::Ready(Err(error))), _) => outcomes.error(body_info.clone(), error),
                    (Err(payload), _) => outcomes.panic(body_info.clone(), payload),
                }
                // The body's `Drop` runs here; a panic in it is the body's.
                if let Err(payload) = catch_unwind(AssertUnwindSafe(|| body.set(None))) {
                    outcomes.panic(body_info.clone(), payload);
                }
            }
            // Then the children spawned since (by the body just now, most
            // often), each polled once as it is admitted. Those spawned
            // during this loop wait for the next poll.
            let mut budget = None;
            let mut drained = None;
            let more = loop {
                let mut chunk = match shared.next_chunk(drained.take(), &mut budget) {
                    Ok(chunk) => chunk,
                    Err(more) => break more,
                };
                batch.clear();
                children.admit(chunk.drain(..), &mut batch);
                drained = Some(chunk);
                for &key in &batch {
                    outcomes.poll_child(children, key);
                }
            };
            children.recycle(batch);
            let finished = body.is_none() && children.is_empty();
            if body_was_running && body.is_none() {
                // The body is done: with nothing left to wait for, leaving is
                // a checkpoint (invariant 7).
                *exit_checkpoint = u8::from(children.is_empty());
            }
            // Invariant 7: the nursery closes only once it has yielded.
            let must_yield = finished && (!yielded || *exit_checkpoint == 1);
            let done = finished && !must_yield && shared.try_close();
            if must_yield && *exit_checkpoint == 1 {
                *exit_checkpoint = 2;
            }
            (done, more || must_yield)
        });
        if more || this.foreign.retry {
            cx.waker().wake_by_ref();
        }
        if !done {
            *this.yielded = true;
            this.foreign.arm(node, cx);
            context::park_in(node);
            return Poll::Pending;
        }

        *this.phase = NurseryPhase::Exited;
        *this.watch = None;
        this.foreign.timer = None;
        if *this.exit_checkpoint == 2 && node.check().is_err() {
            // The exit checkpoint met a cancellation, as trio's does.
            *this.saw_cancelled = true;
        }
        // Like trio: a cancellation that some task unwound with, and that this
        // nursery's scope does not catch, propagates out of the nursery even
        // if the body itself returned a value.
        let uncaught = *this.saw_cancelled && !node.exit_catches();
        node.exit();
        if let Some(payload) = this.panic.take() {
            // The panic is resumed with its own payload (callers downcast
            // it); the other failures would be lost with the unwinding.
            for failure in this.failures.iter() {
                eprintln!(
                    "hatchery: {} failed while its nursery resumes a panic: {:?}",
                    failure.task, failure.error
                );
            }
            resume_unwind(payload);
        }
        let failures = std::mem::take(this.failures);
        Poll::Ready(match this.body_output.take() {
            _ if uncaught || !failures.is_empty() => Err(NurseryError::new(failures, uncaught)),
            Some(value) => Ok(Some(value)),
            // The body unwound with a cancellation this nursery caught.
            None => Ok(None),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finished_child_leaves_the_set() {
        let mut children: Children<std::future::Ready<Result<(), crate::Cancelled>>> =
            Children::new(
                Arc::new(Wakeup::default()),
                Vec::new(),
                TaskTable::new(Location::caller()),
            );
        let mut keys = Vec::new();
        children.admit(
            [(std::future::ready(Ok(())), TaskInfo::new(None))],
            &mut keys,
        );
        assert!(!children.is_empty());
        assert_eq!(keys, [0]);
        assert!(matches!(
            children.poll(0),
            children::Polled::Done(Ok(Ok(())))
        ));
        assert!(children.is_empty());
    }

    /// Counts its wakes.
    #[derive(Default)]
    struct CountingWaker(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Runs a nursery whose first child keeps a clone of its waker after
    /// finishing, next to three children that yield once; returns the kept
    /// waker.
    fn finish_a_nursery_keeping_a_waker() -> std::task::Waker {
        use crate::{Cancelled, typed::nursery};
        let kept = Mutex::new(None);
        let kept_ref = &kept;
        futures_lite::future::block_on(nursery(|n: Nursery<'_, Cancelled>| async move {
            n.spawn(async move {
                let mut first = true;
                std::future::poll_fn(|cx| {
                    if std::mem::take(&mut first) {
                        *kept_ref.lock().unwrap() = Some(cx.waker().clone());
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                    Poll::Ready(())
                })
                .await;
                Ok(())
            });
            for _ in 0..3 {
                n.spawn(async {
                    futures_lite::future::yield_now().await;
                    Ok(())
                });
            }
            Ok(())
        }))
        .unwrap();
        kept.into_inner().unwrap().unwrap()
    }

    #[test]
    fn a_waker_a_finished_task_kept_never_wakes_a_later_nursery() {
        use crate::{Cancelled, sleep_forever, typed::nursery};
        let kept = finish_a_nursery_keeping_a_waker();
        // Same thread: this nursery may reuse the first one's spare wakers,
        // but not its wakeup, which the kept waker still holds.
        let outer = Arc::new(CountingWaker::default());
        let waker = std::task::Waker::from(Arc::clone(&outer));
        let mut second = Box::pin(nursery(|n: Nursery<'_, Cancelled>| async move {
            n.spawn(async {
                sleep_forever().await?;
                Ok(())
            });
            sleep_forever().await?;
            Ok(())
        }));
        let mut cx = Context::from_waker(&waker);
        // Polled until it waits with the waker registered. The body's spawn
        // woke nobody: the poll it happened in admitted the child.
        assert!(second.as_mut().poll(&mut cx).is_pending());
        assert!(second.as_mut().poll(&mut cx).is_pending());
        let woken = outer.0.load(Ordering::Relaxed);
        assert_eq!(woken, 0);
        kept.wake();
        assert_eq!(
            outer.0.load(Ordering::Relaxed),
            woken,
            "a stale waker woke another nursery"
        );
    }

    #[test]
    fn a_later_nursery_on_the_thread_reuses_the_spare_wakers() {
        // Once the kept waker is gone, the next nursery on this thread gets
        // the first one's spare wakers: the probe the three children that
        // only yielded were polled with (they kept no waker of their own);
        // the first child's was dropped, a clone of it being kept.
        drop(finish_a_nursery_keeping_a_waker());
        let (_wakeup, spare) = Wakeup::take();
        assert_eq!(spare.len(), 1, "the probe");
    }

    /// A child that counts its polls and, if `keep`, stores its waker on
    /// the first one; it finishes once `done` is set.
    fn counted(
        polls: &std::sync::atomic::AtomicUsize,
        kept: Option<&Mutex<Option<std::task::Waker>>>,
        done: &std::sync::atomic::AtomicBool,
    ) -> impl Future<Output = Result<(), crate::Cancelled>> {
        std::future::poll_fn(move |cx| {
            if polls.fetch_add(1, Ordering::Relaxed) == 0 {
                if let Some(kept) = kept {
                    *kept.lock().unwrap() = Some(cx.waker().clone());
                }
            }
            if done.load(Ordering::Relaxed) {
                Poll::Ready(Ok(()))
            } else {
                Poll::Pending
            }
        })
    }

    #[test]
    fn a_kept_waker_wakes_its_own_child_and_no_other() {
        use std::sync::atomic::{AtomicBool, AtomicUsize};

        use crate::{CancelHandle, Cancelled, typed::nursery};
        // A keeps its waker; B and C never do (they are polled with the
        // shared probe). C is spawned after A finished, into A's slot.
        let [a, b, c] = [(); 3].map(|()| AtomicUsize::new(0));
        let [a_done, b_done, c_done] = [(); 3].map(|()| AtomicBool::new(false));
        let kept = Mutex::new(None);
        let body_waker = Mutex::new(None::<std::task::Waker>);
        let scope = Mutex::new(None::<CancelHandle>);
        let spawn_c = AtomicBool::new(false);
        let (a, b, c, kept, spawn_c) = (&a, &b, &c, &kept, &spawn_c);
        let (a_done, b_done, c_done) = (&a_done, &b_done, &c_done);
        let (body_waker, scope) = (&body_waker, &scope);
        let outer = Arc::new(CountingWaker::default());
        let waker = std::task::Waker::from(Arc::clone(&outer));
        let mut cx = Context::from_waker(&waker);
        let mut run = Box::pin(nursery(|n: Nursery<'_, Cancelled>| async move {
            *scope.lock().unwrap() = Some(n.cancel_scope());
            n.spawn(counted(a, Some(kept), a_done));
            n.spawn(counted(b, None, b_done));
            std::future::poll_fn(|cx| {
                *body_waker.lock().unwrap() = Some(cx.waker().clone());
                if spawn_c.swap(false, Ordering::Relaxed) {
                    n.spawn(counted(c, None, c_done));
                }
                if b_done.load(Ordering::Relaxed) {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            })
            .await;
            Ok(())
        }));
        assert!(run.as_mut().poll(&mut cx).is_pending());
        let polls = || [a, b, c].map(|n| n.load(Ordering::Relaxed));
        assert_eq!(polls(), [1, 1, 0]);

        // A's waker reaches A, and only A.
        kept.lock().unwrap().as_ref().unwrap().wake_by_ref();
        assert_eq!(outer.0.load(Ordering::Relaxed), 1);
        assert!(run.as_mut().poll(&mut cx).is_pending());
        assert_eq!(polls(), [2, 1, 0]);

        // A finishes; C takes its slot. A's old waker then polls nobody.
        a_done.store(true, Ordering::Relaxed);
        kept.lock().unwrap().as_ref().unwrap().wake_by_ref();
        assert!(run.as_mut().poll(&mut cx).is_pending());
        assert_eq!(polls(), [3, 1, 0]);
        spawn_c.store(true, Ordering::Relaxed);
        body_waker.lock().unwrap().as_ref().unwrap().wake_by_ref();
        assert!(run.as_mut().poll(&mut cx).is_pending());
        assert_eq!(polls(), [3, 1, 1], "C admitted and polled once");
        kept.lock().unwrap().take().unwrap().wake();
        assert!(run.as_mut().poll(&mut cx).is_pending());
        assert_eq!(polls(), [3, 1, 1], "a stale waker polled a child");

        // B and C have no waker of their own; the scope's cancel reaches
        // them, and the body.
        b_done.store(true, Ordering::Relaxed);
        c_done.store(true, Ordering::Relaxed);
        scope.lock().unwrap().take().unwrap().cancel();
        // Everything finished in that poll: leaving is a checkpoint (it
        // yields once), then the nursery returns.
        assert!(run.as_mut().poll(&mut cx).is_pending());
        assert!(matches!(run.as_mut().poll(&mut cx), Poll::Ready(Ok(_))));
        assert_eq!(polls(), [3, 2, 2]);
    }
}
