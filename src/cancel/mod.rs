//! Cancel scopes: the [`CancelScope`] builder and the [`ScopeFuture`] that
//! runs a body inside a scope (`scope.rs`), the [`CancelHandle`] that
//! cancels or reconfigures one from anywhere (`handle.rs`), and the
//! [`CancelReason`] a scope records (`reason.rs`).
//!
//! Underneath: the status tree (how cancellation reaches nested scopes with
//! one atomic load per checkpoint, `tree.rs`) and a node's list of listeners
//! (`listeners.rs`); on top of it, a task waiting on a scope
//! (`scope_wait.rs`) and what an owner does with a task parked where the
//! cancellation cannot reach (`foreign.rs`).

pub(crate) mod foreign;
mod handle;
mod listeners;
pub(crate) mod reason;
mod scope;
pub(crate) mod scope_wait;
pub(crate) mod tree;

pub use handle::{CancelHandle, HandleCancelled, check_cancelled, current_scope};
pub use reason::{CancelReason, Signal};
pub(crate) use scope::enter_node;
pub use scope::{CancelScope, ScopeFuture};
