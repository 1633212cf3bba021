//! Loom models of hatchery's concurrent core: the cancel tree
//! (`src/cancel/tree.rs`, with the crate's waiter from `src/cancel/wait.rs`)
//! and a nursery's wake path (`src/nursery/children.rs`). Loom runs each model
//! under every interleaving of its threads (up to the preemption bound) and
//! every outcome the memory model allows for their atomic loads; a waiter
//! whose wakeup was lost leaves every thread parked, which loom reports as a
//! deadlock.
//!
//! Built only with `--cfg hatchery_loom` (see `src/sync.rs` for why not
//! `--cfg loom`):
//!
//! ```text
//! RUSTFLAGS="--cfg hatchery_loom" LOOM_MAX_PREEMPTIONS=2 CARGO_TARGET_DIR=target/loom cargo test --release --test loom
//! ```

#![cfg(hatchery_loom)]

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use hatchery::__loom::{CANCELLED, ChildSet, NEVER, Scope};
use loom::sync::Mutex;
use loom::thread;

/// Runs `f` under loom (every execution it can tell apart). Without
/// `LOOM_MAX_PREEMPTIONS`, bounds preemptions at 3 so that a bare `cargo test`
/// stays quick. Prints how many executions were explored (`--nocapture`).
fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound.get_or_insert(3);
    let executions = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&executions);
    builder.check(move || {
        counter.fetch_add(1, Ordering::Relaxed);
        f();
    });
    let name = thread_name();
    let executions = executions.load(Ordering::Relaxed);
    println!("{name}: {executions} executions explored");
}

/// The test's name (libtest names the thread after it).
fn thread_name() -> String {
    std::thread::current().name().unwrap_or("model").to_owned()
}

/// A waker that unparks a loom thread. A std `Arc` on purpose: cloning and
/// waking it are no loom operations, so nothing can be scheduled in between
/// while the waker is used under another primitive's lock.
///
/// It also raises `woken` (a std atomic: no loom operation either), which
/// `block_on` checks before parking: loom 0.7 forgets an unpark that arrives
/// while its thread is runnable if that thread then blocks on a loom
/// `Mutex` before parking (`Mutex::release_lock` resets the waiter to
/// runnable without its saved unpark), which would show as a false deadlock.
struct Unpark {
    thread: thread::Thread,
    woken: AtomicBool,
}

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::SeqCst);
        self.thread.unpark();
    }
}

/// Polls `future` to completion on this loom thread, parking between polls
/// until woken (loom parks have no spurious wakeups); returns how often it
/// was polled.
fn block_on<F: Future + Unpin>(mut future: F) -> (F::Output, usize) {
    let unpark = Arc::new(Unpark {
        thread: thread::current(),
        woken: AtomicBool::new(false),
    });
    let waker = Waker::from(Arc::clone(&unpark));
    let mut cx = Context::from_waker(&waker);
    let mut polls = 0;
    loop {
        polls += 1;
        if let Poll::Ready(output) = Pin::new(&mut future).poll(&mut cx) {
            return (output, polls);
        }
        while !unpark.woken.swap(false, Ordering::SeqCst) {
            thread::park();
        }
    }
}

/// Whether a listener has been notified, without waiting.
fn notified(listener: &mut (impl Future<Output = ()> + Unpin)) -> bool {
    Pin::new(listener)
        .poll(&mut Context::from_waker(Waker::noop()))
        .is_ready()
}

/// The effective state of the last scope of `chain` (a root first, each next
/// one linked under the one before), computed from scratch from what each
/// scope recorded (tree.rs invariant 1; no deadlines here).
fn effective(chain: &[&Scope]) -> u64 {
    let mut state = NEVER;
    for (depth, scope) in chain.iter().enumerate() {
        let inherited = if depth == 0 || scope.shield() {
            NEVER
        } else {
            state
        };
        state = if scope.cancel_called() {
            CANCELLED
        } else {
            inherited
        };
    }
    state
}

// ---------------------------------------------------------------------------
// 1. Cancel racing a waiter: `listen`'s `listened` flag and the fences that
//    let `recompute_locked` skip the notify when nobody listened.
// ---------------------------------------------------------------------------

/// Cancels `scope` from a new loom thread.
fn cancel_on_another_thread(scope: &Scope) -> thread::JoinHandle<()> {
    let scope = scope.clone();
    thread::spawn(move || scope.cancel())
}

/// The waiter protocol by hand, as tree.rs invariant 5 states it: check,
/// listen, re-check, wait on the listener. Returns how often it had to wait.
fn wait_by_hand(scope: &Scope) -> usize {
    let mut waits = 0;
    loop {
        if scope.is_cancelled() {
            return waits;
        }
        let listener = scope.listen();
        if scope.is_cancelled() {
            return waits;
        }
        block_on(listener);
        waits += 1;
    }
}

#[test]
fn cancel_racing_a_listener_never_loses_the_wakeup() {
    model(|| {
        let scope = Scope::new(None, false);
        let waiter = {
            let scope = scope.clone();
            thread::spawn(move || wait_by_hand(&scope))
        };
        scope.cancel();
        let waits = waiter.join().unwrap();
        // One change of state: one notification is all a waiter ever needs.
        assert!(waits <= 1, "waited {waits} times for one change");
        assert_eq!(scope.state(), CANCELLED, "0 is CANCELLED");
    });
}

#[test]
fn the_crates_waiter_wakes_when_its_scope_is_cancelled() {
    model(|| {
        let scope = Scope::new(None, false);
        let waiter = {
            let scope = scope.clone();
            thread::spawn(move || block_on(scope.cancelled()).1)
        };
        scope.cancel();
        let polls = waiter.join().unwrap();
        assert!(polls <= 2, "polled {polls} times for one change");
        assert!(scope.is_cancelled());
    });
}

/// The notification reaches a nested scope's waiter through `push_down`.
#[test]
fn cancelling_the_parent_wakes_a_waiter_on_the_child() {
    model(|| {
        let parent = Scope::new(None, false);
        let child = Scope::new(Some(&parent), false);
        let waiter = {
            let child = child.clone();
            thread::spawn(move || block_on(child.cancelled()).1)
        };
        parent.cancel();
        let polls = waiter.join().unwrap();
        assert!(polls <= 2, "polled {polls} times for one change");
        assert_eq!(child.state(), CANCELLED, "the child follows its parent");
        assert!(!child.cancel_called(), "cancelled through its parent only");
        child.unlink();
    });
}

/// A scope entered without its own lock (`enter_owned`: nobody else holds its
/// node yet) while another thread cancels the parent: it ends cancelled, and
/// a waiter on it is woken.
#[test]
fn a_scope_entered_without_its_lock_under_a_parent_being_cancelled_ends_cancelled() {
    model(|| {
        let parent = Scope::new(None, false);
        let canceller = cancel_on_another_thread(&parent);
        let child = Scope::enter_owned(Some(&parent));
        let waits = wait_by_hand(&child);
        assert!(waits <= 1, "waited {waits} times for one change");
        canceller.join().unwrap();
        assert_eq!(child.state(), CANCELLED, "the child follows its parent");
        assert_eq!(effective(&[&parent, &child]), CANCELLED);
        child.unlink();
    });
}

// ---------------------------------------------------------------------------
// 2. A shield toggled while the parent is cancelled.
// ---------------------------------------------------------------------------

#[test]
fn shielding_while_the_parent_is_cancelled_ends_not_cancelled() {
    model(|| {
        let parent = Scope::new(None, false);
        let child = Scope::new(Some(&parent), false);
        let canceller = cancel_on_another_thread(&parent);
        child.set_shield(true);
        canceller.join().unwrap();
        assert_eq!(parent.state(), CANCELLED, "0 is CANCELLED");
        assert_eq!(effective(&[&parent, &child]), NEVER);
        assert_eq!(child.state(), NEVER, "a shielded child follows no parent");
        assert!(!child.is_cancelled());
        child.unlink();
    });
}

#[test]
fn unshielding_while_the_parent_is_cancelled_ends_cancelled_and_notifies() {
    model(|| {
        let parent = Scope::new(None, false);
        let child = Scope::new(Some(&parent), true);
        let mut listener = child.listen();
        let canceller = cancel_on_another_thread(&parent);
        child.set_shield(false);
        canceller.join().unwrap();
        assert_eq!(effective(&[&parent, &child]), CANCELLED);
        assert_eq!(
            child.state(),
            CANCELLED,
            "an unshielded child follows its parent"
        );
        assert!(
            notified(&mut listener),
            "the child's state changed: its listener must know"
        );
        child.unlink();
    });
}

/// On and off again while the parent is cancelled: whichever of the three
/// updates of the child comes last must leave it cancelled, and its waiter
/// (another thread) woken.
#[test]
fn toggling_the_shield_while_the_parent_is_cancelled_wakes_the_childs_waiter() {
    model(|| {
        let parent = Scope::new(None, false);
        let child = Scope::new(Some(&parent), false);
        let waiter = {
            let child = child.clone();
            thread::spawn(move || block_on(child.cancelled()).1)
        };
        let toggler = {
            let child = child.clone();
            thread::spawn(move || {
                child.set_shield(true);
                child.set_shield(false);
            })
        };
        parent.cancel();
        toggler.join().unwrap();
        waiter.join().unwrap();
        assert_eq!(effective(&[&parent, &child]), CANCELLED);
        assert_eq!(child.state(), CANCELLED, "the last update must win");
        child.unlink();
    });
}

// ---------------------------------------------------------------------------
// 3. A child scope exiting (unlinking) while its nursery is cancelled.
// ---------------------------------------------------------------------------

#[test]
fn a_child_exiting_while_its_parent_is_cancelled_ends_unlinked_and_uncancelled() {
    model(|| {
        let parent = Scope::new(None, false);
        let child = Scope::new(Some(&parent), false);
        let canceller = cancel_on_another_thread(&parent);
        child.unlink();
        canceller.join().unwrap();
        assert_eq!(parent.state(), CANCELLED, "0 is CANCELLED");
        assert_eq!(parent.children(), 0);
        assert!(!child.has_parent());
        // The exited scope's state is its own: it does not follow a former
        // parent, whichever of the two updates reached it last.
        assert_eq!(effective(&[&child]), NEVER);
        assert_eq!(child.state(), NEVER, "u64::MAX is NEVER");
        // The parent/child cycle is broken: only this model's handles remain.
        assert_eq!(parent.references(), 1);
        assert_eq!(child.references(), 1);
    });
}

/// The same with a scope still entered inside the exiting one (its state is
/// pushed down by both threads) and the exiting one cancelled itself first.
#[test]
fn a_cancelled_child_exiting_while_its_parent_is_cancelled_keeps_its_own_state() {
    model(|| {
        let parent = Scope::new(None, false);
        let child = Scope::new(Some(&parent), false);
        let grandchild = Scope::new(Some(&child), false);
        let canceller = cancel_on_another_thread(&parent);
        let exiting = {
            let child = child.clone();
            thread::spawn(move || {
                child.cancel();
                child.unlink();
            })
        };
        canceller.join().unwrap();
        exiting.join().unwrap();
        assert_eq!(parent.children(), 0);
        assert_eq!(child.children(), 1);
        assert_eq!(child.state(), CANCELLED, "cancelled itself");
        assert_eq!(effective(&[&child, &grandchild]), CANCELLED);
        assert_eq!(grandchild.state(), CANCELLED, "the last push must win");
        grandchild.unlink();
        assert_eq!(child.children(), 0);
        for scope in [&parent, &child, &grandchild] {
            assert_eq!(scope.references(), 1);
        }
    });
}

#[test]
fn an_uncancelled_child_exiting_under_a_cancelled_parent_frees_its_subtree() {
    model(|| {
        let parent = Scope::new(None, false);
        let child = Scope::new(Some(&parent), false);
        let grandchild = Scope::new(Some(&child), false);
        let canceller = cancel_on_another_thread(&parent);
        child.unlink();
        canceller.join().unwrap();
        assert_eq!(parent.children(), 0);
        // Both threads pushed a state down to the grandchild; the last one
        // must be the child's own.
        assert_eq!(effective(&[&child, &grandchild]), NEVER);
        assert_eq!(grandchild.state(), NEVER, "the last push must win");
        grandchild.unlink();
        for scope in [&parent, &child, &grandchild] {
            assert_eq!(scope.references(), 1);
        }
    });
}

// ---------------------------------------------------------------------------
// 4. A nursery's wake path: `TaskWaker::queue` / `Wakeup::push` racing
//    `take_batch`.
// ---------------------------------------------------------------------------

/// What a child shares with the thread that wakes it.
#[derive(Default)]
struct Signal {
    done: bool,
    waker: Option<Waker>,
    polls: usize,
}

/// A child that waits for `signal` to be done.
fn child(signal: &Arc<Mutex<Signal>>) -> impl Future<Output = ()> + Send + 'static {
    let signal = Arc::clone(signal);
    poll_fn(move |cx| {
        let mut signal = signal.lock().unwrap();
        signal.polls += 1;
        if signal.done {
            return Poll::Ready(());
        }
        signal.waker = Some(cx.waker().clone());
        Poll::Pending
    })
}

/// Another thread finishing `signal` and waking the child that waits for it.
fn finish(signal: &Arc<Mutex<Signal>>) -> thread::JoinHandle<()> {
    let signal = Arc::clone(signal);
    thread::spawn(move || {
        let waker = {
            let mut signal = signal.lock().unwrap();
            signal.done = true;
            signal.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    })
}

#[test]
fn a_wake_from_another_thread_during_take_batch_is_never_lost() {
    model(|| {
        let signal = Arc::new(Mutex::new(Signal::default()));
        let mut set = ChildSet::default();
        set.spawn(child(&signal));
        let finisher = finish(&signal);
        let (_, polls) = block_on(poll_fn(|cx| set.poll_children(cx)));
        finisher.join().unwrap();
        let child_polls = signal.lock().unwrap().polls;
        // Polled at most once per wake: once on admission, once after it.
        assert!(child_polls <= 2, "the child was polled {child_polls} times");
        assert!(polls <= 2, "the nursery was polled {polls} times");
    });
}

/// Two children woken from two threads: the second push finds the queue
/// non-empty and does not wake the nursery (children.rs invariant 4), yet
/// both are polled.
#[test]
fn two_wakes_from_two_threads_each_poll_their_child() {
    model(|| {
        let signals = [(); 2].map(|()| Arc::new(Mutex::new(Signal::default())));
        let mut set = ChildSet::default();
        for signal in &signals {
            set.spawn(child(signal));
        }
        let finishers = signals.each_ref().map(finish);
        block_on(poll_fn(|cx| set.poll_children(cx)));
        for finisher in finishers {
            finisher.join().unwrap();
        }
        for signal in &signals {
            let polls = signal.lock().unwrap().polls;
            assert!(polls <= 2, "a child was polled {polls} times");
        }
    });
}
