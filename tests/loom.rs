//! Loom models of hatchery's concurrent core: the cancel tree
//! (`src/cancel/tree.rs`, with the crate's waiter from `src/cancel/wait.rs`),
//! a nursery's wake path (`src/nursery/children.rs`), and whole nurseries
//! (`typed::nursery`, the code that ships) while other threads call
//! `started` (`src/nursery/start.rs`), run a parallel child
//! (`src/spawn.rs`), spawn into them as they close (`src/nursery/shared.rs`)
//! or cancel them; and the signal watcher's hand-off to `run`
//! (`src/signal.rs`). Loom runs each model under every interleaving of its
//! threads (up to the preemption bound) and every outcome the memory model
//! allows for their atomic loads; a waiter whose wakeup was lost leaves
//! every thread parked, which loom reports as a deadlock. Each model prints
//! how many executions it explored, and in how long (`--nocapture`).
//!
//! Built only with `--cfg hatchery_loom` (see `src/sync.rs` for why not
//! `--cfg loom`); CI runs them at three preemptions:
//!
//! ```text
//! RUSTFLAGS="--cfg hatchery_loom" LOOM_MAX_PREEMPTIONS=3 CARGO_TARGET_DIR=target/loom cargo test --release --test loom
//! ```

#![cfg(hatchery_loom)]

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use hatchery::__loom::{CANCELLED, ChildSet, NEVER, OwnedScope, ParallelCount, Scope, Shutdown};
use hatchery::{
    BoxTask, CancelScope, Cancelled, Nursery, Spawn, SpawnError, Started, TaskGuard, sleep_forever,
    typed,
};
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
    let began = std::time::Instant::now();
    builder.check(move || {
        counter.fetch_add(1, Ordering::Relaxed);
        f();
    });
    let name = thread_name();
    let executions = executions.load(Ordering::Relaxed);
    let seconds = began.elapsed().as_secs_f64();
    println!("{name}: {executions} executions explored in {seconds:.2} s");
}

/// The test's name (libtest names the thread after it).
fn thread_name() -> String {
    std::thread::current().name().unwrap_or("model").to_owned()
}

/// A waker that unparks a loom thread. A std `Arc` on purpose: cloning and
/// waking it are no loom operations, so nothing can be scheduled in between
/// while the waker is used under another primitive's lock.
///
/// It raises `woken` (a std atomic: no loom operation either), which
/// `block_on` checks before parking, and unparks the thread only while it
/// is parked in `block_on` (`parked`). Loom 0.7's `unpark` makes a thread
/// that is blocked on a loom `Mutex` runnable as if it were parked there
/// (`Thread::set_unparked`), and the thread then fails loom's own assertion
/// "expected to be able to acquire lock"; and it forgets an unpark that
/// arrives while the thread is runnable if the thread then blocks on a loom
/// `Mutex` before parking. Both would be false reports. The flags are std
/// atomics read and written with no loom operation in between, so no other
/// model thread runs between `block_on`'s check and its park.
struct Unpark {
    thread: thread::Thread,
    woken: AtomicBool,
    parked: AtomicBool,
}

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::SeqCst);
        if self.parked.load(Ordering::SeqCst) {
            self.thread.unpark();
        }
    }
}

/// Polls `future` to completion on this loom thread, parking between polls
/// until woken (loom parks have no spurious wakeups); returns how often it
/// was polled.
///
/// A future woken before its poll returned (it woke itself: a nursery
/// whose verdict on a foreign await is "retry" while another thread is
/// still announcing a cancel, `cancel::foreign`) is polled again after a
/// `yield_now`, as an executor queues it behind the others: loom then runs
/// the other threads, where a plain loop would spin forever under it.
fn block_on<F: Future + Unpin>(mut future: F) -> (F::Output, usize) {
    let unpark = Arc::new(Unpark {
        thread: thread::current(),
        woken: AtomicBool::new(false),
        parked: AtomicBool::new(false),
    });
    let waker = Waker::from(Arc::clone(&unpark));
    let mut cx = Context::from_waker(&waker);
    let mut polls = 0;
    loop {
        polls += 1;
        if let Poll::Ready(output) = Pin::new(&mut future).poll(&mut cx) {
            return (output, polls);
        }
        if unpark.woken.swap(false, Ordering::SeqCst) {
            thread::yield_now();
            continue;
        }
        while !unpark.woken.swap(false, Ordering::SeqCst) {
            unpark.parked.store(true, Ordering::SeqCst);
            thread::park();
            unpark.parked.store(false, Ordering::SeqCst);
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

/// A scope's owner exits it without the node's own lock (`exit_owned`:
/// taken out of the parent's list under the parent's lock, then exited if
/// nobody else refers to it) while another thread cancels the parent, whose
/// push-down may hold the node meanwhile (then the owner takes the locked
/// path). Either way the child leaves the list and drops its parent.
#[test]
fn a_scope_exiting_without_its_lock_while_its_parent_is_cancelled_leaves_no_link() {
    model(|| {
        let parent = Scope::new(None, false);
        let child = OwnedScope::enter(Some(&parent));
        let canceller = cancel_on_another_thread(&parent);
        child.exit();
        canceller.join().unwrap();
        assert_eq!(parent.state(), CANCELLED);
        assert_eq!(parent.children(), 0);
        assert_eq!(parent.references(), 1, "the child dropped its parent");
    });
}

/// A scope future moved to another task relinks its node under the new
/// owner's scope (`Node::relink_owned`) while another thread cancels that
/// new parent: whichever comes first, the scope ends cancelled, listed
/// under the new parent only, and a listener on it is told.
#[test]
fn a_scope_relinked_under_a_parent_being_cancelled_ends_cancelled() {
    model(|| {
        let old = Scope::new(None, false);
        let new = Scope::new(None, false);
        let mut child = OwnedScope::enter(Some(&old));
        let mut listener = child.listen();
        let canceller = cancel_on_another_thread(&new);
        child.relink(Some(&new));
        canceller.join().unwrap();
        assert_eq!(child.state(), CANCELLED, "the scope follows its new parent");
        assert!(
            notified(&mut listener),
            "its state changed: its listener must know"
        );
        assert_eq!(old.children(), 0);
        assert_eq!(new.children(), 1);
        child.exit();
        assert_eq!(new.children(), 0);
        assert_eq!(old.references(), 1, "nothing refers to the old parent");
    });
}

/// The old owner's scope is cancelled while the scope moves away from it
/// (a nursery's node, `Node::relink`): whichever comes first, the scope
/// ends uncancelled under its new parent, and the old one's push-down
/// never reaches it afterwards.
#[test]
fn a_nursery_relinked_away_from_a_parent_being_cancelled_ends_uncancelled() {
    model(|| {
        let old = Scope::new(None, false);
        let new = Scope::new(None, false);
        let child = Scope::new(Some(&old), false);
        let canceller = cancel_on_another_thread(&old);
        child.relink(Some(&new));
        canceller.join().unwrap();
        assert_eq!(old.state(), CANCELLED);
        assert_eq!(child.state(), NEVER, "the old owner's cancel stays with it");
        assert!(!child.is_cancelled());
        assert_eq!(old.children(), 0);
        assert_eq!(new.children(), 1);
        child.unlink();
    });
}

/// A nursery moved between two cancelled scopes stays cancelled throughout:
/// the move never shows it without a parent (review: unlink-then-link made
/// a spinning `check_cancelled` on another thread see it uncancelled, and
/// woke its waiters twice for nothing).
#[test]
fn a_nursery_moved_between_two_cancelled_parents_never_reads_uncancelled() {
    model(|| {
        let old = Scope::new(None, false);
        let new = Scope::new(None, false);
        old.cancel();
        new.cancel();
        let child = Scope::new(Some(&old), false);
        let watcher = {
            let child = child.clone();
            thread::spawn(move || assert_eq!(child.state(), CANCELLED, "seen uncancelled"))
        };
        child.relink(Some(&new));
        watcher.join().unwrap();
        assert_eq!(child.state(), CANCELLED);
        assert_eq!(old.children(), 0);
        assert_eq!(new.children(), 1);
        child.unlink();
    });
}

/// A scope's owner exits it while one thread cancels the parent (whose
/// push-down may hold the node, sending the owner down the locked path
/// after it already took the node out of the list) and another enters a
/// sibling under the same parent (which may take the key the exiting one
/// left): the sibling stays listed and the cancel reaches it.
#[test]
fn a_sibling_entered_while_a_scope_exits_stays_listed() {
    model(|| {
        let parent = Scope::new(None, false);
        let child = OwnedScope::enter(Some(&parent));
        let canceller = cancel_on_another_thread(&parent);
        let entering = {
            let parent = parent.clone();
            thread::spawn(move || Scope::enter_owned(Some(&parent)))
        };
        child.exit();
        let sibling = entering.join().unwrap();
        canceller.join().unwrap();
        assert_eq!(parent.children(), 1, "the sibling is still listed");
        assert_eq!(sibling.state(), CANCELLED);
        sibling.unlink();
        assert_eq!(parent.children(), 0);
        assert_eq!(parent.references(), 1);
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

// ---------------------------------------------------------------------------
// 5. Whole nurseries (`typed::nursery`, the code that ships) driven on one
//    model thread while others hand values over, spawn, or cancel.
// ---------------------------------------------------------------------------

/// A one-shot event between model threads, awaited as a future that
/// consults no hatchery await (a foreign future, `cancel::foreign`).
#[derive(Clone)]
struct Gate(Arc<Mutex<(bool, Option<Waker>)>>);

impl Gate {
    fn new() -> Gate {
        Gate(Arc::new(Mutex::new((false, None))))
    }

    fn open(&self) {
        let waker = {
            let mut gate = self.0.lock().unwrap();
            gate.0 = true;
            gate.1.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    fn wait(&self) -> impl Future<Output = ()> + Send + 'static {
        let gate = self.clone();
        poll_fn(move |cx| {
            let mut gate = gate.0.lock().unwrap();
            if gate.0 {
                return Poll::Ready(());
            }
            gate.1 = Some(cx.waker().clone());
            Poll::Pending
        })
    }
}

/// Model threads started from inside a poll (by a child), joined at the
/// end of the model. The lock is std's: nothing loom does runs under it.
#[derive(Clone, Default)]
struct Threads(Arc<std::sync::Mutex<Vec<thread::JoinHandle<()>>>>);

impl Threads {
    fn spawn(&self, f: impl FnOnce() + Send + 'static) {
        let handle = thread::spawn(f);
        self.0.lock().unwrap().push(handle);
    }

    fn join(&self) {
        loop {
            let next = self.0.lock().unwrap().pop();
            match next {
                Some(handle) => handle.join().unwrap(),
                None => return,
            }
        }
    }
}

/// Nothing but the model holds `token` any more: every future, value and
/// handle that held a clone of it was dropped.
fn assert_released(token: &Arc<()>, what: &str) {
    assert_eq!(Arc::strong_count(token), 1, "{what} leaked");
}

// 5.1 `start()`: `started` on another thread (src/nursery/start.rs).

/// A child for `start()`: hands its `Started` to a new model thread, which
/// calls `started` with a clone of `token` (after `before`, if any), then
/// waits for its scope to be cancelled, holding `token`.
fn hand_over_on_another_thread(
    token: &Arc<()>,
    threads: &Threads,
    before: impl FnOnce() + Send + 'static,
) -> impl FnOnce(Started<Arc<()>>) -> BoxFuture + 'static {
    let (token, threads) = (Arc::clone(token), threads.clone());
    move |status| {
        Box::pin(async move {
            let value = Arc::clone(&token);
            threads.spawn(move || {
                before();
                status.started(value);
            });
            let _held = token;
            sleep_forever().await?;
            Ok(())
        })
    }
}

type BoxFuture = std::pin::Pin<Box<dyn Future<Output = Result<(), Cancelled>> + Send>>;

/// `started` from another thread while `start()` waits: the value reaches
/// it (its waker is woken), and the child then belongs to the nursery.
#[test]
fn started_on_another_thread_wakes_the_start_future() {
    model(|| {
        let token = Arc::new(());
        let threads = Threads::default();
        let child = hand_over_on_another_thread(&token, &threads, || {});
        let nursery = typed::nursery(|n: Nursery<'static, Cancelled>| async move {
            let value = n.start(child).await?;
            drop(value);
            // The child is the nursery's now: this cancel ends it.
            n.cancel_scope().cancel();
            Ok(())
        });
        let (out, _) = block_on(Box::pin(nursery));
        threads.join();
        assert!(matches!(out, Ok(Some(()))), "{out:?}");
        assert_released(&token, "the child, its value or its handle");
    });
}

/// `started` on one thread while another cancels the scope `start()` was
/// called in: the value is delivered (the child moved to the nursery) or
/// the child ends cancelled under `start()`; a child that was cancelled
/// when `started` ran stays (start.rs invariant 3).
#[test]
fn started_racing_a_cancel_of_the_caller_delivers_once_or_ends_cancelled() {
    model(|| {
        let token = Arc::new(());
        let threads = Threads::default();
        let caller = CancelScope::new();
        let handle = caller.handle();
        // Set once the cancel (and its push-down) is complete.
        let cancelled = Arc::new(loom::sync::atomic::AtomicBool::new(false));
        let seen = Arc::new(loom::sync::atomic::AtomicBool::new(false));
        let child = {
            let (cancelled, seen) = (Arc::clone(&cancelled), Arc::clone(&seen));
            hand_over_on_another_thread(&token, &threads, move || {
                seen.store(cancelled.load(Ordering::Acquire), Ordering::Relaxed);
            })
        };
        let nursery = typed::nursery(|n: Nursery<'static, Cancelled>| async move {
            let delivered = caller.run_typed(n.start(child)).await?;
            let delivered = delivered.is_some();
            n.cancel_scope().cancel();
            Ok(delivered)
        });
        let canceller = thread::spawn(move || {
            handle.cancel();
            cancelled.store(true, Ordering::Release);
        });
        let (out, _) = block_on(Box::pin(nursery));
        canceller.join().unwrap();
        threads.join();
        let Ok(Some(delivered)) = out else {
            panic!("the nursery ended with {out:?}");
        };
        if seen.load(Ordering::Relaxed) {
            assert!(!delivered, "moved out of a cancelled scope");
        }
        assert_released(&token, "the child, its value or its handle");
    });
}

/// `started` on one thread while the `start()` future is dropped (the
/// race `or` loses) on the nursery's: the value is delivered or dropped,
/// the child runs in the nursery or is dropped; nothing is left behind.
#[test]
fn started_racing_the_start_future_being_dropped_leaks_nothing() {
    model(|| {
        let token = Arc::new(());
        let threads = Threads::default();
        let stop = Gate::new();
        let child = hand_over_on_another_thread(&token, &threads, || {});
        let wait = stop.wait();
        let nursery = typed::nursery(|n: Nursery<'static, Cancelled>| async move {
            let start = n.start(child);
            let delivered = futures_lite::future::or(async { Some(start.await) }, async {
                wait.await;
                None
            })
            .await;
            let delivered = matches!(delivered, Some(Ok(_)));
            n.cancel_scope().cancel();
            Ok(delivered)
        });
        let stopper = {
            let stop = stop.clone();
            thread::spawn(move || stop.open())
        };
        let (out, _) = block_on(Box::pin(nursery));
        stopper.join().unwrap();
        threads.join();
        assert!(matches!(out, Ok(Some(_))), "{out:?}");
        assert_released(&token, "the child, its value or its handle");
    });
}

// 5.2 A parallel child's join (src/spawn.rs, `Handoff`).

/// A `Spawn` that runs each task on a new model thread; dropping the guard
/// tells that thread to drop the task (without waiting for it).
#[derive(Clone, Default)]
struct LoomSpawner(Threads);

struct DropTask(Gate);

impl Drop for DropTask {
    fn drop(&mut self) {
        self.0.open();
    }
}

impl Spawn<'static> for LoomSpawner {
    fn spawn_task(&self, task: BoxTask<'static>) -> TaskGuard<'static> {
        let cancel = Gate::new();
        let dropped = cancel.wait();
        self.0.spawn(move || {
            // The task first: `or` drops it once the guard is gone.
            block_on(Box::pin(futures_lite::future::or(task, dropped)));
        });
        TaskGuard::new(DropTask(cancel))
    }
}

/// The child fails on its thread while the nursery polls the join half:
/// the failure is reported once.
#[test]
fn a_parallel_childs_failure_reaches_its_nursery_once() {
    model(|| {
        let token = Arc::new(());
        let spawner = LoomSpawner::default();
        let nursery = {
            let (token, spawner) = (Arc::clone(&token), spawner.clone());
            typed::nursery(|n: Nursery<'static, std::io::Error>| async move {
                n.spawn_on(&spawner, async move {
                    let _held = token;
                    Err(std::io::Error::other("boom"))
                });
                Ok(())
            })
        };
        let (out, _) = block_on(Box::pin(nursery));
        spawner.0.join();
        let error = out.expect_err("the child failed");
        assert_eq!(error.failures().len(), 1, "{error:?}");
        assert_eq!(error.failures()[0].error.to_string(), "boom");
        assert_released(&token, "the parallel child");
    });
}

/// Two parallel children on an async-executor end on their threads, one
/// with a failure, while the nursery polls: it is woken after the last one
/// (never left waiting) and records the failure once.
#[test]
fn the_last_parallel_child_to_end_wakes_its_nursery_with_every_failure() {
    model(|| {
        let count = Arc::new(ParallelCount::new(2));
        let children: Vec<_> = [false, true]
            .into_iter()
            .map(|failed| {
                let count = Arc::clone(&count);
                thread::spawn(move || count.finish(failed))
            })
            .collect();
        let mut failures = 0;
        let (_, _) = block_on(std::future::poll_fn(|cx| {
            count.poll_nursery(cx, &mut failures)
        }));
        for child in children {
            child.join().unwrap();
        }
        assert_eq!(failures, 1, "the failure is recorded once");
    });
}

/// A child is started from another thread (under the lock that closes the
/// nursery, as every start is) while the only other one ends: the count of
/// started children is a plain store there, and the last to end compares
/// it with the ends. The nursery closes only once every started child
/// ended, and is never left waiting for one that did.
#[test]
fn a_parallel_child_started_while_the_last_one_ends_is_waited_for() {
    model(|| {
        let count = Arc::new(ParallelCount::new(1));
        let closed = Arc::new(Mutex::new(false));
        let starter = {
            let (count, closed) = (Arc::clone(&count), Arc::clone(&closed));
            thread::spawn(move || {
                let started = {
                    let closed = closed.lock().unwrap();
                    if !*closed {
                        count.start();
                    }
                    !*closed
                };
                if started {
                    count.finish(false);
                }
                started
            })
        };
        let ender = {
            let count = Arc::clone(&count);
            thread::spawn(move || count.finish(false))
        };
        let mut failures = 0;
        let (_, polls) = block_on(poll_fn(|cx| {
            if count.poll_nursery(cx, &mut failures).is_pending() {
                return Poll::Pending;
            }
            // Closes under the lock every start takes, once none runs.
            let mut closed = closed.lock().unwrap();
            if count.running() != 0 {
                return Poll::Pending;
            }
            *closed = true;
            Poll::Ready(())
        }));
        assert_eq!(count.running(), 0, "closed while a started child ran");
        let started = starter.join().unwrap();
        ender.join().unwrap();
        assert_eq!(count.running(), 0);
        // One poll per end at most, and the one that closes.
        let most = if started { 4 } else { 3 };
        assert!(polls <= most, "polled {polls} times");
    });
}

/// The nursery is cancelled (from a third thread) while its parallel child
/// waits on its own thread: the child sees it there, its `Cancelled` comes
/// back through the join half, and the nursery catches it.
#[test]
fn a_cancel_reaches_a_parallel_child_and_its_join() {
    model(|| {
        let token = Arc::new(());
        let spawner = LoomSpawner::default();
        let mut scope = None;
        let nursery = {
            let (token, spawner) = (Arc::clone(&token), spawner.clone());
            typed::nursery(|n: Nursery<'static, Cancelled>| {
                scope = Some(n.cancel_scope());
                async move {
                    n.spawn_on(&spawner, async move {
                        let _held = token;
                        sleep_forever().await?;
                        Ok(())
                    });
                    Ok(())
                }
            })
        };
        let canceller = {
            let scope = scope.take().unwrap();
            thread::spawn(move || scope.cancel())
        };
        let (out, _) = block_on(Box::pin(nursery));
        canceller.join().unwrap();
        spawner.0.join();
        assert!(matches!(out, Ok(None) | Ok(Some(()))), "{out:?}");
        assert_released(&token, "the parallel child");
    });
}

/// The nursery future is dropped (the hard cancel) while its parallel
/// child starts waiting on its thread: dropping the join half drops the
/// executor's guard, which makes that thread drop the task (spawn.rs
/// invariant 2); nothing waits for anything, nothing is left behind.
#[test]
fn a_hard_cancel_drops_a_parallel_child_on_its_thread() {
    model(|| {
        let token = Arc::new(());
        let spawner = LoomSpawner::default();
        let nursery = {
            let (token, spawner) = (Arc::clone(&token), spawner.clone());
            typed::nursery(|n: Nursery<'static, std::io::Error>| async move {
                n.spawn_on(&spawner, async move {
                    let _held = token;
                    sleep_forever().await?;
                    Ok(())
                });
                std::future::pending::<()>().await;
                Ok(())
            })
        };
        let mut nursery = Box::pin(nursery);
        let polled = nursery
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()));
        assert!(polled.is_pending());
        drop(nursery);
        spawner.0.join();
        assert_released(&token, "the parallel child");
    });
}

// 5.3 Spawns from another thread racing the nursery's close
//     (src/nursery/shared.rs: `push`, `next_chunk`, `try_close`; nursery
//     invariant 1). Each spawn either lands before the close, and its child
//     runs before the nursery returns, or fails with `Closed`, its child
//     dropped unpolled. Two spawns: the second finds the queue non-empty
//     (or the nursery draining it) and wakes nobody.

#[test]
fn spawns_racing_the_close_run_or_fail_closed() {
    model(|| {
        let token = Arc::new(());
        let ran = Arc::new([(); 2].map(|()| AtomicBool::new(false)));
        let mut handle = None;
        let nursery = typed::nursery(|n: Nursery<'static, Cancelled>| {
            handle = Some(n.clone());
            async { Ok(()) }
        });
        let spawner = {
            let (handle, token, ran) =
                (handle.take().unwrap(), Arc::clone(&token), Arc::clone(&ran));
            thread::spawn(move || {
                [0, 1].map(|i| {
                    let (token, ran) = (Arc::clone(&token), Arc::clone(&ran));
                    handle.try_spawn(async move {
                        let _held = token;
                        ran[i].store(true, Ordering::SeqCst);
                        Ok(())
                    })
                })
            })
        };
        let (out, _) = block_on(Box::pin(nursery));
        let spawned = spawner.join().unwrap();
        assert!(matches!(out, Ok(Some(()))), "{out:?}");
        for (spawned, ran) in spawned.into_iter().zip(ran.iter()) {
            match spawned {
                Ok(()) => assert!(ran.load(Ordering::SeqCst), "spawned, never run"),
                Err(error) => {
                    assert_eq!(error, SpawnError::Closed);
                    assert!(!ran.load(Ordering::SeqCst));
                }
            }
        }
        assert_released(&token, "a spawned child");
    });
}

/// `try_start` from another thread racing the close: it fails with
/// `Closed`, or it keeps the nursery open until its child is handed over
/// (start.rs invariant 1), and the child then finishes in the nursery.
#[test]
fn a_start_racing_the_close_hands_over_or_fails_closed() {
    model(|| {
        let token = Arc::new(());
        let ran = Arc::new(AtomicBool::new(false));
        let mut handle = None;
        let nursery = typed::nursery(|n: Nursery<'static, Cancelled>| {
            handle = Some(n.clone());
            async { Ok(()) }
        });
        let starter = {
            let (handle, token, ran) =
                (handle.take().unwrap(), Arc::clone(&token), Arc::clone(&ran));
            thread::spawn(move || {
                let start = handle.try_start(move |status: Started<()>| async move {
                    let _held = token;
                    status.started(());
                    // The nursery's from here: it polls the rest.
                    futures_lite::future::yield_now().await;
                    ran.store(true, Ordering::SeqCst);
                    Ok(())
                });
                start.map(|start| block_on(Box::pin(start)).0)
            })
        };
        let (out, _) = block_on(Box::pin(nursery));
        let started = starter.join().unwrap();
        assert!(matches!(out, Ok(Some(()))), "{out:?}");
        match started {
            Ok(handed_over) => {
                assert_eq!(
                    handed_over,
                    Ok(()),
                    "the nursery closed on a start in flight"
                );
                assert!(ran.load(Ordering::SeqCst), "handed over, never finished");
            }
            Err(error) => {
                assert_eq!(error, SpawnError::Closed);
                assert!(!ran.load(Ordering::SeqCst));
            }
        }
        assert_released(&token, "the started child");
    });
}

// 5.4 The nursery's listener (nursery invariant 5) with children that keep
//     no waker: one waits on the nursery's scope (covered, it listens to
//     nothing), one in a foreign future that never saw its waker. Only the
//     nursery's pass over its children after the cancel reaches them.

#[test]
fn a_cancel_reaches_children_that_keep_no_waker() {
    model(|| {
        let token = Arc::new(());
        let mut scope = None;
        let nursery = {
            let token = Arc::clone(&token);
            typed::nursery(|n: Nursery<'static, Cancelled>| {
                scope = Some(n.cancel_scope());
                async move {
                    let held = Arc::clone(&token);
                    n.spawn(async move {
                        let _held = held;
                        sleep_forever().await?;
                        Ok(())
                    });
                    n.spawn(async move {
                        let _held = token;
                        poll_fn(|_| Poll::<()>::Pending).await;
                        Ok(())
                    });
                    sleep_forever().await?;
                    Ok(())
                }
            })
        };
        let canceller = {
            let scope = scope.take().unwrap();
            thread::spawn(move || scope.cancel())
        };
        let (out, _) = block_on(Box::pin(nursery));
        canceller.join().unwrap();
        assert!(matches!(out, Ok(None)), "{out:?}");
        assert_released(&token, "a child");
    });
}

// ---------------------------------------------------------------------------
// 6. The signal watcher's hand-off to `run` (src/signal.rs, `Shutdown`):
//    the watcher records the first signal while `run` sets its root scope
//    and a run that defers to it adds its own.
// ---------------------------------------------------------------------------

#[test]
fn a_signal_racing_runs_taking_over_cancels_every_scope() {
    model(|| {
        const SIGINT: i32 = 2;
        let shutdown = Arc::new(Shutdown::default());
        let watcher = {
            let shutdown = Arc::clone(&shutdown);
            thread::spawn(move || assert!(shutdown.record(SIGINT), "the first signal"))
        };
        let deferred = {
            let shutdown = Arc::clone(&shutdown);
            thread::spawn(move || {
                let scope = Scope::new(None, false);
                shutdown.defer(&scope);
                block_on(scope.cancelled());
            })
        };
        let root = Scope::new(None, false);
        shutdown.set_scope(&root);
        // A lost hand-off leaves this waiting forever (a deadlock to loom).
        block_on(root.cancelled());
        watcher.join().unwrap();
        deferred.join().unwrap();
        assert_eq!(shutdown.signal(), Some(SIGINT));
        assert_eq!(root.state(), CANCELLED);
    });
}

// ---------------------------------------------------------------------------
// 7. The probe's check after a poll, as the real build runs it
//    (`TaskWaker::woken_if_unique` in src/nursery/children.rs, invariant 8).
//
//    The loom build of that function reads the state with a swap: the
//    waker's reference count is std's `Arc`, whose release (in the drop of
//    the last clone) loom cannot see, so loom would let the real path's
//    relaxed load read a value older than the last wake even where the
//    real program cannot. This model checks the real path itself, with the
//    count made visible: `strong` stands for the `Arc`'s count with std's
//    orderings (a clone's drop is a `fetch_sub` with `Release`,
//    `Arc::strong_count` a `Relaxed` load), and `unique_then_woken` is the
//    real build's code, line for line.
// ---------------------------------------------------------------------------

/// `QUEUED` and `RUNNING` (children.rs).
const QUEUED: usize = 1;
const RUNNING: usize = 2;

/// The probe: its state word and its reference count.
struct Probe {
    state: loom::sync::atomic::AtomicUsize,
    strong: loom::sync::atomic::AtomicUsize,
}

/// The real build's `woken_if_unique`, the count read the way
/// `Arc::strong_count` reads it.
fn unique_then_woken(probe: &Probe) -> Option<bool> {
    if probe.strong.load(Ordering::Relaxed) != 1 {
        return None;
    }
    loom::sync::atomic::fence(Ordering::Acquire);
    Some(probe.state.load(Ordering::Relaxed) & QUEUED != 0)
}

/// A child kept a clone of the probe during its poll and gave it to
/// another thread, which wakes it and drops it while the nursery checks:
/// if the check finds the probe unique, it sees the wake.
#[test]
fn the_probes_fence_sees_every_wake_made_through_a_dropped_clone() {
    model(|| {
        let probe = Arc::new(Probe {
            // Key 0, polled by the probe (invariant 9); one clone kept.
            state: loom::sync::atomic::AtomicUsize::new(RUNNING),
            strong: loom::sync::atomic::AtomicUsize::new(2),
        });
        let waker = {
            let probe = Arc::clone(&probe);
            thread::spawn(move || {
                // `TaskWaker::queue` (RUNNING set: the bit only), then the
                // clone's drop.
                probe.state.fetch_or(QUEUED, Ordering::AcqRel);
                probe.strong.fetch_sub(1, Ordering::Release);
            })
        };
        let checked = unique_then_woken(&probe);
        waker.join().unwrap();
        if let Some(woken) = checked {
            assert!(woken, "unique, yet the wake through the clone is lost");
        }
    });
}
