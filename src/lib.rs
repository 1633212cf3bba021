//! # hatchery: structured concurrency for every async runtime
//!
//! hatchery brings [trio](https://trio.readthedocs.io)'s model to Rust:
//! tasks that cannot leak, cancellation that lets them clean up, and deadlines
//! and shields that compose. It runs on any executor: a bare
//! `futures::executor::block_on`, async-executor/smol, or tokio.
//!
//! ## The model on one page
//!
//! **Nurseries own their children** ([`nursery`], `src/nursery/`). A nursery
//! runs a body that spawns children through a [`Nursery`] handle; the nursery
//! future completes only when the body and every child have finished. Children
//! are polled by the nursery future itself, so they may borrow from the
//! enclosing function. If a task fails (returns an error or panics), the
//! nursery cancels the others, waits for them to clean up, then returns every
//! error at once ([`NurseryError`]) or resumes the panic. A child's name,
//! spawn location and age are kept in the nursery's child table
//! (`src/nursery/table.rs`); a child whose failure goes to a handler instead
//! is supervised (`src/nursery/supervise.rs`).
//!
//! **Cancel scopes nest** ([`CancelScope`], `src/cancel/`). Every piece of work
//! runs inside a scope; entering one while another is current makes it a child.
//! A scope can be cancelled through its [`CancelHandle`], carry a deadline, and
//! be shielded from cancellation coming from outside. Cancellation is pushed
//! down the tree when it happens, so checking it costs one atomic load however
//! deep the scope.
//!
//! **Cancellation is level-triggered, and every await is a cancellation
//! point** (`src/checkpoint.rs`, `src/time.rs`, `src/cancel/foreign.rs`). In a
//! cancelled scope that is not shielded:
//!
//! * every hatchery checkpoint ([`checkpoint`], [`sleep`], [`cancelled`],
//!   [`CancellableExt::cancellable`], …) returns `Err(`[`Cancelled`]`)`, every
//!   time, until the scope is left: code unwinds with `?`, running its
//!   cleanup. A nested scope, nursery or `start()` is a hatchery await too:
//!   never dropped for this rule, it passes the cancellation on to its own
//!   tasks (entering a scope is not a checkpoint, and leaving a nursery is
//!   a schedule point but not a cancellation point, as in trio and anyio);
//! * any other await (a socket read, a channel, another crate's timer) cannot
//!   see the cancellation, so its owner (the nursery, for its body and each
//!   child; the scope future, for its body) drops it at once, as
//!   `tokio::time::timeout` or `select!` would, and treats it as having
//!   returned `Cancelled`. This is decided per poll: a task polled in the
//!   cancelled scope that waits while none of its hatchery awaits is pending
//!   in that poll is parked where the cancellation cannot reach it (a
//!   checkpoint that already returned `Cancelled` no longer holds it).
//!
//! So a shutdown never waits on a read nobody told. Wrap a foreign await in
//! [`.cancellable()`](CancellableExt::cancellable) when you want
//! `Err(Cancelled)` there instead of a drop (to run cleanup after it), in
//! [`.cancel_gracefully()`](CancellableExt::cancel_gracefully) when it has a
//! graceful stop of its own (hyper's connections do), and behind a shield
//! with a deadline (`CancelScope::new().shield(true).timeout(d)`) when it must
//! finish: cleanup that awaits (a flush, a goodbye, a commit) goes there, as
//! in trio. Combinators inside a task (`join_all`, `FuturesUnordered`,
//! `select`) are fine: the checkpoints inside them are woken and return
//! `Cancelled`. One that then keeps waiting on a foreign future
//! (`join(sleep(d), read)`) waits where the cancellation cannot reach, and
//! its task is dropped: `try_join` returns at the first `Err` instead.
//!
//! A scope **catches** the cancellation when the body
//! returns it, the scope was cancelled itself, and no cancelled scope outside
//! it is visible (none, or behind a shield): a cancellation unwinds to the
//! outermost cancelled scope that is not shielded off. Error types join in by
//! implementing [`CancelError`].
//!
//! **The current scope travels with the future** (`src/context.rs`). Scope and
//! nursery futures make their scope current for the duration of each poll, on
//! whatever thread polls them, so `sleep(d).await?` deep inside a call chain
//! knows which scope it is in. Outside any scope nothing is ever cancelled.
//! A scope is linked under the scope that is current where it is polled: a
//! started scope future moved elsewhere (sent to another task, or awaited
//! inside another scope) follows its new owner at its next poll, whose
//! cancellation and deadlines then reach it, and its old owner's no longer
//! do (a nursery future and a `start()` future too). (The shield
//! of [`cancel_gracefully`](CancellableExt::cancel_gracefully) joins the
//! tree only if its future is still running after its stop.)
//!
//! **Parallel children run on an executor** (`src/spawn.rs`, `src/run.rs`).
//! [`Nursery::spawn_on`] hands a child to any [`Spawn`] (async-executor built
//! in, tokio's `Handle` with the `tokio` feature); it still sees the
//! nursery's cancellation, reports its error or panic to the nursery, and is
//! waited for. [`run`] is the blocking root for programs without a runtime: an
//! executor with a worker thread per core, a root nursery, and a grace period
//! after the root scope is cancelled. [`Nursery::spawn_blocking`] runs
//! blocking closures on a thread pool with a cancel handle they can poll.
//!
//! **Signals shut a program down, and escalate** ([`signal`], `src/signal.rs`,
//! `src/report.rs`; a signal's number, name and exit status: [`Signal`] in
//! `src/cancel/reason.rs`).
//! Under [`run`], the first SIGINT/SIGTERM cancels the root scope; the
//! second, or the grace period running out, prints a [`Report`] of who is
//! still running (task names, spawn locations, ages, cancel reasons, shields)
//! and drops what is left; the third exits at once. The exit status is 130
//! or 143. [`SignalGuard`] does the same for a scope of your own runtime.
//!
//! **Drop is the hard cancel.** Dropping a nursery or scope future drops its
//! inline children at once; their `Drop` runs and nothing of them keeps
//! running. Parallel children (on other threads) are cancelled on their
//! executor, which drops them once they are not in a poll, without the drop
//! waiting; blocking closures are told through their handle. The graceful
//! path is always: cancel, let tasks see `Cancelled`, let them return.
//!
//! The files are layered, lowest first, and import only downwards:
//! `ARCHITECTURE.md` lists the layers and where each concept lives, and a
//! test keeps it true.
//!
//! ## Features
//!
//! | feature | what it adds |
//! |---|---|
//! | `tokio` | [`Spawn`] for tokio's runtime `Handle`: `n.spawn_on(&Handle::current(), fut)` |
//! | `tracing` | a `tracing` span around every task, with its name and spawn location |
//! | `test-util` | `hatchery::testing`: a virtual clock with autojump, and live-object counters |
//! | `anyhow` | [`CancelError`] for `anyhow::Error`, so that it can be a nursery's error type |
//! | `eyre` | [`CancelError`] for `eyre::Report`, likewise |
//!
//! ## Example
//!
//! ```
//! use std::time::Duration;
//! use hatchery::{move_on_after, nursery, sleep, Cancelled, Nursery};
//!
//! # futures::executor::block_on(async {
//! let out = move_on_after(Duration::from_millis(50), async {
//!     nursery(|n| async move {
//!         n.spawn(async {
//!             let cleanup = scopeguard(); // runs when the task unwinds
//!             sleep(Duration::from_secs(3600)).await?;
//!             drop(cleanup);
//!             Ok(())
//!         });
//!         sleep(Duration::from_secs(3600)).await?;
//!         Ok(())
//!     })
//!     .await?;
//!     Ok(())
//! })
//! .await;
//! assert!(matches!(out, Ok(None))); // the deadline cancelled everything, then was caught
//! # fn scopeguard() {}
//! # });
//! ```

// Denied, not forbidden: `sigaction` alone allows it, to install a signal
// handler it can remove again (see that module).
#![deny(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations)]

mod cancel;
mod checkpoint;
mod chunked;
mod clock;
mod context;
mod error;
mod live;
mod nursery;
mod panics;
mod report;
mod run;
#[cfg(unix)]
mod sigaction;
pub mod signal;
mod spawn;
mod stderr;
mod sync;
mod task;
#[cfg(feature = "test-util")]
pub mod testing;
mod time;

pub use cancel::{
    CancelHandle, CancelReason, CancelScope, HandleCancelled, ScopeFuture, Signal, check_cancelled,
    current_scope,
};
pub use checkpoint::{
    CancelGracefully, Cancellable, CancellableExt, Checkpoint, WaitCancelled, cancelled, checkpoint,
};
pub use error::{
    CancelError, Cancelled, Error, NurseryError, Result, SpawnError, TaskFailure, TimedOut,
};
pub use nursery::{
    HandlePanics, LocalNursery, Nursery, PanicPolicy, ResumePanics, Started, Supervised,
    TaskBuilder, local_nursery, nursery, run_blocking,
};

/// The typed API: nurseries and `run` whose tasks return an error type of
/// your choosing, for libraries that expose their own. The untyped functions
/// at the crate root use [`Error`]. Name the type once, on the handle.
///
/// ```
/// use hatchery::{typed, Cancelled, Nursery};
///
/// # futures::executor::block_on(async {
/// let out = typed::nursery(|n: Nursery<'_, Cancelled>| async move {
///     n.spawn(async { Ok(()) });
///     Ok(1)
/// })
/// .await;
/// assert_eq!(out.unwrap(), Some(1));
/// # });
/// ```
pub mod typed {
    pub use crate::nursery::{typed_local_nursery as local_nursery, typed_nursery as nursery};
    pub use crate::run::typed_run as run;
    pub use crate::time::{
        typed_fail_after as fail_after, typed_fail_at as fail_at,
        typed_move_on_after as move_on_after, typed_move_on_at as move_on_at,
    };
}
pub use report::{Report, ScopeState, TaskState};
pub use run::{Builder, ScopedExecutor, run};
pub use signal::SignalGuard;
pub use spawn::{BoxTask, Spawn, TaskGuard};
pub use task::TaskInfo;
pub use time::{
    DurationError, Sleep, current_effective_deadline, fail_after, fail_at, move_on_after,
    move_on_at, now, seconds, sleep, sleep_forever, sleep_until,
};

// `nursery::children` is private to `nursery`: the loom models compile the same
// file a second time, here.
#[cfg(hatchery_loom)]
#[allow(dead_code, clippy::duplicate_mod)]
#[path = "nursery/children.rs"]
mod loom_children;

#[cfg(hatchery_loom)]
#[doc(hidden)]
#[path = "loom.rs"]
pub mod __loom;

#[doc = include_str!("../README.md")]
#[cfg(doctest)]
struct ReadmeDoctests;
