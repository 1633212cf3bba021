//! What hatchery says about the panics of tasks it catches: which task
//! panicked (once per panic, however many nurseries it passes through on
//! its way out), and the panics it cannot resume (a second one while a
//! first is on its way), written to stderr in a way that cannot panic
//! itself. A nursery resumes only the first panic of its tasks.

use std::any::Any;
use std::cell::Cell;
use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::task::TaskInfo;

/// The payload of the last panic `say_panicked` named (its address).
static NAMED: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// The payload a nursery on this thread is resuming (its address; 0:
    /// none), until the next catch of a task's panic on this thread takes
    /// it (`caught_panic`).
    static RESUMING: Cell<usize> = const { Cell::new(0) };
}

/// The address of a payload, which names it while it lives.
fn address(payload: &(dyn Any + Send)) -> usize {
    (payload as *const (dyn Any + Send)).cast::<()>() as usize
}

/// A task's poll unwound and the panic was caught, to be recorded. A
/// payload that a nursery inside that task has just resumed was named
/// there; any other is a new panic, and a payload named earlier at the
/// same address (freed since, its memory reused) no longer counts as
/// named.
#[cold]
pub(crate) fn caught_panic(payload: &(dyn Any + Send)) {
    let address = address(payload);
    let resumed = RESUMING.try_with(|r| r.replace(0)).unwrap_or(0);
    if resumed != address {
        let _ = NAMED.compare_exchange(address, 0, Ordering::Relaxed, Ordering::Relaxed);
    }
}

/// The payload a nursery resumed was caught by something else than a
/// nursery (the program, a supervision handler): it is no longer on its
/// way to one.
pub(crate) fn forget_resuming() {
    let _ = RESUMING.try_with(|r| r.set(0));
}

/// Says on stderr which task panicked, once per panic: the panic hook named
/// the thread it ran on, not the task, and a nursery around this one that
/// catches the panic again (in the task that held this nursery) says
/// nothing more. Never panics (a closed or broken stderr is ignored).
pub(crate) fn say_panicked(task: &TaskInfo, payload: &Box<dyn Any + Send>) {
    let address = address(&**payload);
    if size_of_val(&**payload) > 0 && NAMED.swap(address, Ordering::Relaxed) == address {
        return;
    }
    let _ = writeln!(
        std::io::stderr(),
        "hatchery: {task} panicked; its nursery resumes the panic"
    );
}

/// A nursery is about to resume `payload`, named: the catch outside
/// (`caught_panic`, on this thread) knows it then.
pub(crate) fn resuming(payload: &(dyn Any + Send)) {
    let _ = RESUMING.try_with(|r| r.set(address(payload)));
}

/// Writes `what` and the payload's message to stderr (ignoring a stderr
/// that fails: this must not panic instead), then drops the payload; a
/// payload whose `Drop` panics is leaked rather than let that panic
/// replace the one being handled.
#[cold]
pub(crate) fn say_and_drop(what: String, payload: Box<dyn Any + Send>) {
    let _ = writeln!(
        std::io::stderr(),
        "hatchery: {what}: {}",
        panic_message(&*payload)
    );
    if let Err(nested) = catch_unwind(AssertUnwindSafe(move || drop(payload))) {
        std::mem::forget(nested);
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
