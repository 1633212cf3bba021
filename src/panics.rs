//! What hatchery says about the panics of tasks it catches: which task
//! panicked (once per panic, however many nurseries it passes through on
//! its way out), and the panics it cannot resume (a second one while a
//! first is on its way), written to stderr in a way that cannot panic
//! itself. A nursery resumes only the first panic of its tasks.

use std::any::Any;
use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::stderr;
use crate::task::TaskInfo;

/// The payload of the last panic `say_panicked` named (its `identity`).
static NAMED: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// The payload a nursery on this thread is resuming (its `identity`; 0:
    /// none), until the next catch of a task's panic on this thread takes
    /// it (`caught_panic`).
    static RESUMING: Cell<usize> = const { Cell::new(0) };
}

/// What tells a payload apart while it lives, and, mostly, from a later
/// one that reuses its freed memory: its address, its type and where its
/// text is (a `panic!` with another literal has its text elsewhere). Never
/// 0.
fn identity(payload: &(dyn Any + Send)) -> usize {
    use std::hash::{Hash, Hasher};
    let text = payload
        .downcast_ref::<&str>()
        .map(|text| text.as_ptr())
        .or_else(|| payload.downcast_ref::<String>().map(|text| text.as_ptr()));
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (payload as *const (dyn Any + Send))
        .cast::<()>()
        .hash(&mut hasher);
    payload.type_id().hash(&mut hasher);
    text.hash(&mut hasher);
    (hasher.finish() as usize) | 1
}

/// A task's poll unwound and the panic was caught, to be recorded. A
/// payload that a nursery inside that task has just resumed was named
/// there; any other is a new panic, and a payload named earlier at the
/// same address (freed since, its memory reused) no longer counts as
/// named.
#[cold]
pub(crate) fn caught_panic(payload: &(dyn Any + Send)) {
    let id = identity(payload);
    let resumed = RESUMING.try_with(|r| r.replace(0)).unwrap_or(0);
    if resumed != id {
        let _ = NAMED.compare_exchange(id, 0, Ordering::Relaxed, Ordering::Relaxed);
    }
}

/// A supervision handler caught `payload`: whether a nursery inside had
/// resumed it (and named it). It is no longer on its way to a nursery.
pub(crate) fn take_resumed(payload: &(dyn Any + Send)) -> bool {
    RESUMING.try_with(|r| r.replace(0)).unwrap_or(0) == identity(payload)
}

/// A payload a nursery resumed before is gone (a new nursery is made: the
/// program caught it): it is no longer on its way to one.
pub(crate) fn forget_resuming() {
    let _ = RESUMING.try_with(|r| r.set(0));
}

/// Says on stderr which task panicked, once per panic: the panic hook named
/// the thread it ran on, not the task, and a nursery around this one that
/// catches the panic again (in the task that held this nursery) says
/// nothing more. Never panics (a closed or broken stderr is ignored).
pub(crate) fn say_panicked(task: &TaskInfo, payload: &Box<dyn Any + Send>) {
    let id = identity(&**payload);
    if size_of_val(&**payload) > 0 && NAMED.swap(id, Ordering::Relaxed) == id {
        return;
    }
    stderr::write(&format!(
        "hatchery: {task} panicked; its nursery resumes the panic\n"
    ));
}

/// A nursery is about to resume `payload`, named: the catch outside
/// (`caught_panic`, on this thread) knows it then.
pub(crate) fn resuming(payload: &(dyn Any + Send)) -> usize {
    let id = identity(payload);
    let _ = RESUMING.try_with(|r| r.set(id));
    id
}

/// Writes `what` and the payload's message to stderr (ignoring a stderr
/// that fails: this must not panic instead), then drops the payload; a
/// payload whose `Drop` panics is leaked rather than let that panic
/// replace the one being handled.
#[cold]
pub(crate) fn say_and_drop(what: String, payload: Box<dyn Any + Send>) {
    stderr::write(&format!("hatchery: {what}: {}\n", panic_message(&*payload)));
    if let Err(nested) = catch_unwind(AssertUnwindSafe(move || drop(payload))) {
        std::mem::forget(nested);
    }
}

/// `text()`, or a placeholder if it panics (user code: an error's `Debug`):
/// a line about a failure must not panic instead.
pub(crate) fn caught_text(text: impl FnOnce() -> String) -> String {
    match catch_unwind(AssertUnwindSafe(text)) {
        Ok(text) => text,
        Err(payload) => {
            if let Err(nested) = catch_unwind(AssertUnwindSafe(move || drop(payload))) {
                std::mem::forget(nested);
            }
            "(its `Debug` panicked)".to_owned()
        }
    }
}

/// A nursery that resumed a panic is dropped: if nothing caught the panic
/// on its way to a nursery (the program did, in the task), the payload is
/// gone and its address may be reused; it no longer counts as resumed.
pub(crate) fn forget_resumed(id: usize) {
    let _ = RESUMING.try_with(|r| {
        if r.get() == id {
            r.set(0);
        }
    });
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
