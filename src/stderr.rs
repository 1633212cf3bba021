//! hatchery's own lines on stderr that must never block their writer: they
//! are queued for a thread that writes them (spawned when the queue goes
//! from empty to not, and gone when it is empty again), so a stderr that
//! nobody reads (a full pipe) blocks only that thread. Whoever must know the
//! lines are out (an exit, `run` returning) waits for the queue to drain,
//! for a bounded time.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crate::sync::Recover;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().recover()
}

/// How long an exit, or `run` returning, waits for stderr to take the lines
/// hatchery has queued for it (`signal` invariant 5). A stderr that someone reads
/// takes them in microseconds; one that nobody reads never will.
pub(crate) const STDERR_PATIENCE: Duration = Duration::from_secs(1);

/// Lines waiting for stderr, and whether a writer thread is taking them.
struct StderrQueue {
    lines: VecDeque<String>,
    writing: bool,
}

static STDERR: Mutex<StderrQueue> = Mutex::new(StderrQueue {
    lines: VecDeque::new(),
    writing: false,
});
/// Notified when the writer has written every queued line.
static STDERR_DRAINED: Condvar = Condvar::new();

/// Queues `text` for stderr (invariant 5); never blocks on stderr itself.
pub(crate) fn say(text: String) {
    let mut queue = lock(&STDERR);
    queue.lines.push_back(text);
    if queue.writing {
        return;
    }
    queue.writing = true;
    drop(queue);
    let writer = std::thread::Builder::new()
        .name("hatchery-stderr".into())
        .spawn(write_queued);
    if writer.is_err() {
        // No thread to spare: writing here may block, which beats losing
        // the report.
        write_queued();
    }
}

/// Writes queued lines until none is left. A blocked stderr blocks only
/// this thread, which nobody joins.
fn write_queued() {
    loop {
        let line = {
            let mut queue = lock(&STDERR);
            match queue.lines.pop_front() {
                Some(line) => line,
                None => {
                    queue.writing = false;
                    STDERR_DRAINED.notify_all();
                    return;
                }
            }
        };
        let _ = io::stderr().write_all(line.as_bytes());
    }
}

/// Waits until stderr has taken every queued line, or `patience` ran out.
/// Returns whether it took them all.
pub(crate) fn flush_stderr(patience: Duration) -> bool {
    let queue = lock(&STDERR);
    let (queue, _) = STDERR_DRAINED
        .wait_timeout_while(queue, patience, |queue| queue.writing)
        .recover();
    !queue.writing
}

/// Writes `text` at once, on this thread, if that cannot block: stderr is
/// a regular file or a character device (a terminal, `/dev/null`), and no
/// line is waiting for the writer thread (it would be overtaken). Returns
/// whether it did; if not, the caller queues it (`say`). Saves the writer
/// thread's start where it is not needed: the first signal's line is
/// written before the cancel, and this keeps it off the shutdown's time.
pub(crate) fn write_now_if_safe(text: &str) -> bool {
    let queue = lock(&STDERR);
    if queue.writing || !never_blocks() {
        return false;
    }
    let _ = io::stderr().write_all(text.as_bytes());
    drop(queue);
    true
}

/// Whether a write to stderr returns without waiting for a reader: a
/// regular file or a character device. (A pipe or a socket that nobody
/// reads blocks its writer once full.)
#[cfg(unix)]
fn never_blocks() -> bool {
    use std::os::fd::AsFd;
    let Ok(fd) = io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    let Ok(metadata) = std::fs::File::from(fd).metadata() else {
        return false;
    };
    let kind = metadata.file_type();
    kind.is_file() || std::os::unix::fs::FileTypeExt::is_char_device(&kind)
}

#[cfg(not(unix))]
fn never_blocks() -> bool {
    false
}

/// Set once a forced shutdown is under way: from then on, every line goes
/// through the writer thread (`write`).
static QUEUE_ONLY: AtomicBool = AtomicBool::new(false);

/// A forced shutdown is under way, which must not wait on stderr (`signal`
/// invariant 5): from now on, `write` queues its lines too.
pub(crate) fn queue_from_now_on() {
    QUEUE_ONLY.store(true, Ordering::Relaxed);
}

/// The forced shutdown is over (its `run` returned, its guard was dropped)
/// and the queue drained: `write` writes at once again (queued, a later
/// panic's line could be lost to the program's exit).
pub(crate) fn write_at_once_again() {
    if !lock(&STDERR).writing {
        QUEUE_ONLY.store(false, Ordering::Relaxed);
    }
}

/// Writes `text` (whole lines) to stderr, ignoring a stderr that fails (it
/// must not panic instead of what it reports): at once, so that it is out
/// before a panic unwinds further or the process exits; through the writer
/// thread once a forced shutdown is under way, so that a stderr nobody
/// reads cannot hold it.
pub(crate) fn write(text: &str) {
    if QUEUE_ONLY.load(Ordering::Relaxed) {
        say(text.to_owned());
    } else {
        let _ = io::stderr().write_all(text.as_bytes());
    }
}
