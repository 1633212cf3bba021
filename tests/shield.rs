//! Shields: outer cancellation stops at a shielded scope, but its own
//! cancel() and deadline still apply, and toggling takes effect at once.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use hatchery::{
    CancelScope, Cancelled, Nursery, checkpoint, sleep, sleep_forever, typed::move_on_after,
    typed::nursery,
};

mod common;

common::matrix! {
#[test]
fn toggling_a_shield_inside_a_cancelled_scope() {
    let outer = CancelScope::new();
    outer.handle().cancel();
    let shielded = CancelScope::new().shield(true);
    let shield = shielded.handle();
    let mut steps = Vec::new();
    let out = block_on(outer.run_typed(async {
        let inner = shielded
            .run_typed(async {
                checkpoint().await?;
                checkpoint().await?;
                steps.push("shielded checkpoints pass");
                shield.set_shield(false);
                assert_eq!(
                    checkpoint().await,
                    Err(Cancelled),
                    "unshielded: cancelled at once"
                );
                shield.set_shield(true);
                checkpoint().await?;
                steps.push("shielded again");
                Ok::<_, Cancelled>(())
            })
            .await;
        assert_eq!(inner, Ok(Some(())));
        checkpoint().await?;
        steps.push("never: the outer scope is cancelled");
        Ok::<_, Cancelled>(())
    }));
    assert_eq!(out, Ok(None));
    assert_eq!(steps, ["shielded checkpoints pass", "shielded again"]);
}

#[test]
fn a_shield_does_not_protect_against_its_own_cancel() {
    let scope = CancelScope::new().shield(true);
    let handle = scope.handle();
    let out = block_on(scope.run_typed(async {
        handle.cancel();
        checkpoint().await?;
        Ok::<_, Cancelled>(())
    }));
    assert_eq!(out, Ok(None));
    assert!(handle.cancelled_caught());
}

#[test]
fn unshielding_wakes_a_sleeper() {
    let outer = CancelScope::new();
    outer.handle().cancel();
    let shielded = CancelScope::new().shield(true);
    let shield = shielded.handle();
    let log = Mutex::new(Vec::new());
    let log = &log;
    let out = block_on(outer.run_typed(
        shielded.run_typed(nursery(|n: Nursery<'_, Cancelled>| async move {
            n.spawn(async move {
                let result = sleep(Duration::from_secs(3600)).await;
                log.lock().unwrap().push(("sleeper", result));
                result
            });
            n.spawn(async move {
                checkpoint().await?;
                checkpoint().await?;
                log.lock().unwrap().push(("unshielding", Ok(())));
                shield.set_shield(false);
                Ok(())
            });
            Ok(())
        })),
    ));
    assert_eq!(
        *log.lock().unwrap(),
        [("unshielding", Ok(())), ("sleeper", Err(Cancelled))]
    );
    // The nursery propagated the outer cancellation, which the outer scope caught.
    assert!(matches!(out, Ok(None)), "{out:?}");
}

#[test]
fn a_shielded_move_on_after_inside_a_cancelled_scope_still_fires() {
    let outer = CancelScope::new();
    outer.handle().cancel();
    let started = Instant::now();
    let out = block_on(outer.run_typed(async {
        let inner = CancelScope::new()
            .shield(true)
            .timeout(Duration::from_millis(20))
            .run_typed(sleep_forever())
            .await;
        assert!(
            matches!(inner, Ok(None)),
            "the shielded scope caught its own deadline"
        );
        assert!(started.elapsed() >= Duration::from_millis(20));
        checkpoint().await?;
        Ok::<_, Cancelled>(())
    }));
    assert_eq!(out, Ok(None));
}

#[test]
fn shielded_cleanup_runs_to_completion_after_cancel() {
    let log = Mutex::new(Vec::new());
    let out = block_on(move_on_after(Duration::from_millis(10), async {
        let result = sleep_forever().await;
        CancelScope::new()
            .shield(true)
            .run_typed(async {
                sleep(Duration::from_millis(10)).await?;
                log.lock().unwrap().push("flushed");
                Ok::<_, Cancelled>(())
            })
            .await?;
        result.map(|never| match never {})
    }));
    assert_eq!(out, Ok(None));
    assert_eq!(*log.lock().unwrap(), ["flushed"]);
}

// Found by the fuzz program (issue 16), fixed: a shielded scope inside a
// combinator that re-polls only what woke it (`FuturesUnordered`, and
// `join_all` over more than 30 futures) is not polled in every poll of its
// task, and the nursery took such a poll in its cancelled scope for a task
// parked in a foreign future: it dropped the task, the shield did not hold,
// the cleanup never ran. Now a pending scope polled with another waker than
// its task's holds the task (`cancel::foreign::Hold`).
#[test]
fn a_shield_inside_futures_unordered_holds_when_the_nursery_is_cancelled() {
    use futures::StreamExt;
    let log = Mutex::new(Vec::new());
    let log = &log;
    let out = block_on(nursery(|n: Nursery<'_, Cancelled>| async move {
        let cancel = n.cancel_scope();
        n.spawn(async move {
            checkpoint().await?;
            cancel.cancel();
            Ok(())
        });
        let shielded = CancelScope::new().shield(true).run_typed(async {
            sleep(Duration::from_millis(10)).await?;
            log.lock().unwrap().push("flushed");
            Ok::<_, Cancelled>(())
        });
        let mut arms = futures::stream::FuturesUnordered::new();
        arms.push(shielded);
        while let Some(out) = arms.next().await {
            out?;
        }
        log.lock().unwrap().push("body done");
        Ok(())
    }));
    assert!(out.is_ok(), "{out:?}");
    assert_eq!(*log.lock().unwrap(), ["flushed", "body done"]);
}
}
