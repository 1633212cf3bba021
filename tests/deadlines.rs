//! Deadlines: when they are fixed, when they are noticed, how they combine,
//! and move_on_*/fail_*.

use std::io;
use std::time::{Duration, Instant};

use hatchery::{
    CancelError, CancelScope, Cancelled, checkpoint, current_effective_deadline, seconds, sleep,
    typed::fail_after, typed::fail_at, typed::move_on_after, typed::move_on_at,
};

mod common;

common::matrix! {
const HOUR: Duration = Duration::from_secs(3600);

#[test]
fn a_past_deadline_cancels_at_the_first_checkpoint() {
    let mut reached = Vec::new();
    let out = block_on(move_on_at(
        Instant::now() - Duration::from_millis(1),
        async {
            reached.push("before the checkpoint");
            checkpoint().await?;
            reached.push("after the checkpoint");
            Ok::<_, Cancelled>(())
        },
    ));
    assert_eq!(out, Ok(None));
    assert_eq!(reached, ["before the checkpoint"]);
}

#[test]
fn move_on_after_zero_cancels_at_the_first_checkpoint() {
    let mut reached = 0;
    let out = block_on(move_on_after(Duration::ZERO, async {
        reached += 1;
        checkpoint().await?;
        reached += 1;
        Ok::<_, Cancelled>(())
    }));
    assert_eq!(out, Ok(None));
    assert_eq!(reached, 1);
}

#[test]
fn moving_a_deadline_earlier_cancels_at_the_next_checkpoint() {
    let scope = CancelScope::new().timeout(HOUR);
    let handle = scope.handle();
    let mut reached = Vec::new();
    let out = block_on(scope.run_typed(async {
        checkpoint().await?;
        reached.push("first checkpoint passed");
        handle.set_deadline(Instant::now());
        checkpoint().await?;
        reached.push("second checkpoint passed");
        Ok::<_, Cancelled>(())
    }));
    assert_eq!(out, Ok(None));
    assert_eq!(reached, ["first checkpoint passed"]);
    assert_eq!(handle.reason(), Some(hatchery::CancelReason::Deadline));
}

#[test]
fn moving_an_expired_deadline_later_does_not_undo_the_cancel() {
    // The deadline has passed, though no checkpoint looked yet: as in trio,
    // the expiry was an event at that instant, and moving the deadline later
    // does not undo it.
    let scope = CancelScope::new().deadline(Instant::now());
    let handle = scope.handle();
    let out = block_on(scope.run_typed(async {
        handle.set_deadline(Instant::now() + HOUR);
        checkpoint().await?;
        Ok::<_, Cancelled>("finished")
    }));
    assert_eq!(out, Ok(None));
    assert!(handle.cancel_called());
    assert_eq!(handle.reason(), Some(hatchery::CancelReason::Deadline));
}

#[test]
fn moving_a_running_deadline_later_prevents_the_cancel() {
    let scope = CancelScope::new().timeout(Duration::from_millis(300));
    let handle = scope.handle();
    let out = block_on(scope.run_typed(async {
        handle.set_timeout(HOUR);
        sleep(Duration::from_millis(400)).await?;
        Ok::<_, Cancelled>("slept past the old deadline")
    }));
    assert_eq!(out, Ok(Some("slept past the old deadline")));
}

#[test]
fn a_deadline_is_noticed_only_at_a_checkpoint() {
    let scope = CancelScope::new().deadline(Instant::now());
    let handle = scope.handle();
    let out = block_on(scope.run_typed(async {
        // Blocking work with no checkpoint runs to completion.
        std::thread::sleep(Duration::from_millis(2));
        Ok::<_, Cancelled>("no checkpoint, no cancel")
    }));
    assert_eq!(out, Ok(Some("no checkpoint, no cancel")));
    assert!(!handle.cancelled_caught());
}

/// trio's `with move_on_after(0) as cs: pass` leaves `cs.cancel_called`
/// true: a deadline that passed while the scope was entered cancelled it,
/// whether or not a checkpoint saw it, and the answer does not depend on
/// whether anyone asked before the exit (an anyio/trio port found it false).
#[test]
fn a_deadline_that_passed_while_entered_leaves_cancel_called_after_the_exit() {
    let past = CancelScope::new().deadline(Instant::now() - Duration::from_secs(1));
    let zero = CancelScope::new().timeout(Duration::ZERO);
    let (past_handle, zero_handle) = (past.handle(), zero.handle());
    assert_eq!(block_on(past.run_typed(async { Ok::<_, Cancelled>(1) })), Ok(Some(1)));
    assert_eq!(block_on(zero.run_typed(async { Ok::<_, Cancelled>(2) })), Ok(Some(2)));
    for handle in [past_handle, zero_handle] {
        assert!(handle.cancel_called(), "the deadline had passed inside the scope");
        assert!(!handle.cancelled_caught(), "no checkpoint saw it");
        assert_eq!(handle.reason(), Some(hatchery::CancelReason::Deadline));
    }
}

/// The deadline passes while the body waits behind a shield of its own,
/// which keeps it from seeing it; the body then returns normally. trio's
/// run loop cancels the scope at the expiry all the same.
#[test]
fn a_deadline_that_passed_behind_an_inner_shield_leaves_cancel_called() {
    let scope = CancelScope::new().timeout(Duration::from_millis(5));
    let handle = scope.handle();
    let out = block_on(scope.run_typed(async {
        CancelScope::new()
            .shield(true)
            .run_typed(sleep(Duration::from_millis(30)))
            .await?;
        Ok::<_, Cancelled>("returned")
    }));
    assert_eq!(out, Ok(Some("returned")));
    assert!(handle.cancel_called());
    assert!(!handle.cancelled_caught());
}

/// An exited scope is never cancelled by its old deadline (trio: a scope
/// never becomes `cancel_called` after it exited).
#[test]
fn a_deadline_that_passes_after_the_exit_leaves_cancel_called_false() {
    let scope = CancelScope::new().timeout(Duration::from_millis(5));
    let handle = scope.handle();
    assert_eq!(block_on(scope.run_typed(async { Ok::<_, Cancelled>(()) })), Ok(Some(())));
    std::thread::sleep(Duration::from_millis(10));
    assert!(!handle.cancel_called());
}

#[test]
fn the_effective_deadline_is_the_minimum_over_unshielded_ancestors() {
    let now = Instant::now();
    let (t1, t2, t3) = (now + HOUR, now + 2 * HOUR, now + 3 * HOUR);
    block_on(async {
        assert_eq!(current_effective_deadline(), None);
        move_on_at(t1, async {
            assert_eq!(current_effective_deadline(), Some(t1));
            move_on_at(t2, async {
                assert_eq!(
                    current_effective_deadline(),
                    Some(t1),
                    "the outer one is earlier"
                );
                CancelScope::new()
                    .shield(true)
                    .deadline(t3)
                    .run_typed(async {
                        assert_eq!(current_effective_deadline(), Some(t3), "a shield resets it");
                        CancelScope::new()
                            .shield(true)
                            .run_typed(async {
                                assert_eq!(current_effective_deadline(), None);
                                Ok::<_, Cancelled>(())
                            })
                            .await
                    })
                    .await
            })
            .await
        })
        .await
        .unwrap();
    });
}

#[test]
fn a_cancelled_scope_has_an_effective_deadline_in_the_past() {
    let scope = CancelScope::new();
    scope.handle().cancel();
    block_on(scope.run_typed(async {
        let deadline = current_effective_deadline().expect("cancelled means a deadline");
        assert!(deadline <= Instant::now());
        Ok::<_, Cancelled>(())
    }))
    .unwrap();
}

#[test]
fn a_relative_timeout_starts_when_the_scope_is_entered() {
    let scope = CancelScope::new().timeout(Duration::from_millis(100));
    let handle = scope.handle();
    std::thread::sleep(Duration::from_millis(150)); // longer than the timeout
    let entered = Instant::now();
    let out = block_on(scope.run_typed(async {
        checkpoint().await?; // would fail if the timeout had started at build time
        Ok::<_, Cancelled>(())
    }));
    assert_eq!(out, Ok(Some(())));
    assert!(handle.deadline().unwrap() >= entered + Duration::from_millis(100));
}

#[test]
fn fail_after_inside_a_cancelled_scope_yields_cancelled_not_a_timeout() {
    let outer = CancelScope::new();
    let outer_handle = outer.handle();
    outer_handle.cancel();
    let out = block_on(outer.run_typed(async {
        let inner: Result<(), io::Error> = fail_after(Duration::ZERO, async {
            checkpoint().await?;
            Ok(())
        })
        .await;
        let error = inner.unwrap_err();
        assert!(error.is_cancelled(), "expected Cancelled, got {error}");
        assert_ne!(error.kind(), io::ErrorKind::TimedOut);
        Err::<(), _>(error)
    }));
    assert!(matches!(out, Ok(None)), "the outer scope catches: {out:?}");
    assert!(outer_handle.cancelled_caught());
}

#[test]
fn fail_after_its_own_deadline_is_a_timeout() {
    let out: Result<(), io::Error> = block_on(fail_after(Duration::from_millis(5), async {
        sleep(HOUR).await?;
        Ok(())
    }));
    assert_eq!(out.unwrap_err().kind(), io::ErrorKind::TimedOut);

    let out: Result<u8, Box<dyn std::error::Error + Send + Sync>> =
        block_on(fail_at(Instant::now() + HOUR, async { Ok(3) }));
    assert_eq!(out.unwrap(), 3);
}

#[test]
fn move_on_after_an_outer_cancellation_passes_through() {
    let outer = CancelScope::new();
    outer.handle().cancel();
    let out = block_on(outer.run_typed(async {
        let inner = move_on_after(HOUR, checkpoint()).await;
        assert_eq!(inner, Err(Cancelled));
        inner
    }));
    assert_eq!(out, Ok(None));
}

#[test]
fn a_sleep_wakes_at_the_deadline_of_its_scope() {
    let started = Instant::now();
    let out = block_on(move_on_after(Duration::from_millis(20), sleep(HOUR)));
    assert_eq!(out, Ok(None));
    assert!(started.elapsed() >= Duration::from_millis(20));
}

#[test]
fn a_timeout_too_large_for_instant_means_no_deadline() {
    let scope = CancelScope::new().timeout(Duration::MAX);
    let handle = scope.handle();
    block_on(scope.run_typed(async { checkpoint().await })).unwrap();
    assert_eq!(handle.deadline(), None);
}

#[test]
fn bad_float_durations_are_rejected_with_a_clear_error() {
    assert_eq!(seconds(0.25), Ok(Duration::from_millis(250)));
    assert_eq!(seconds(0.0), Ok(Duration::ZERO));
    for (value, says) in [
        (f64::NAN, "NaN"),
        (-1.0, "negative"),
        (f64::NEG_INFINITY, "negative"),
        (f64::INFINITY, "too large"),
        (1e300, "too large"),
    ] {
        let message = seconds(value).unwrap_err().to_string();
        assert!(message.contains(says), "{value}: {message}");
    }
}

#[test]
fn a_zero_sleep_still_yields_once_like_a_checkpoint() {
    block_on(async {
        let mut zero = std::pin::pin!(sleep(Duration::ZERO));
        assert!(futures::poll!(zero.as_mut()).is_pending(), "yields first");
        assert_eq!(futures::poll!(zero.as_mut()), std::task::Poll::Ready(Ok(())));
    });
}
}
