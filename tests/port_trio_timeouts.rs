//! Ports of trio's _tests/test_timeouts.py.
use std::time::Duration;

use hatchery::{
    CancelScope, Cancelled, TimedOut, checkpoint, fail_after, fail_at, move_on_after, move_on_at,
    now, seconds, sleep, sleep_forever, sleep_until, testing::VirtualClock,
};

#[path = "ports/mod.rs"]
mod ports;
use ports::*;

const TARGET: Duration = Duration::from_secs(1);

#[test]
fn sleep_takes_about() {
    vrun(async {
        let t0 = now();
        sleep_until(now() + TARGET).await.unwrap();
        assert_eq!(now() - t0, TARGET);
        let t0 = now();
        sleep(TARGET).await.unwrap();
        assert_eq!(now() - t0, TARGET);
        sleep(Duration::ZERO).await.unwrap();
        // trivial move_on_at: sleep(0) raises Cancelled
        let out = move_on_at(now(), async {
            assert_eq!(sleep(Duration::ZERO).await, Err(Cancelled));
            Ok(())
        })
        .await;
        assert!(matches!(out, Ok(Some(()))));
    });
}

#[test]
fn move_on_after_takes_about() {
    vrun(async {
        let t0 = now();
        move_on_after(TARGET, async {
            sleep(secs(100.0)).await?;
            Ok(())
        })
        .await
        .unwrap();
        assert_eq!(now() - t0, TARGET);
    });
}

#[test]
fn context_shields_from_outer_move_on_after() {
    vrun(async {
        let outer = CancelScope::new();
        let oh = outer.handle();
        let inner = CancelScope::new().timeout(TARGET).shield(true);
        let ih = inner.handle();
        let out = outer
            .run(inner.run(async move {
                oh.cancel();
                checkpoint().await.expect("shield didn't work");
                ih.set_shield(false);
                assert_eq!(checkpoint().await, Err(Cancelled));
                Ok(())
            }))
            .await;
        assert!(out.is_ok());
    });
}

#[test]
fn context_shields_from_outer_fail_after() {
    // fail_after has no shield argument: a shield around it.
    vrun(async {
        let outer = CancelScope::new();
        let oh = outer.handle();
        let shield = CancelScope::new().shield(true);
        let sh = shield.handle();
        let out = outer
            .run(shield.run(fail_after(TARGET, async move {
                oh.cancel();
                checkpoint().await.expect("shield didn't work");
                sh.set_shield(false);
                assert_eq!(checkpoint().await, Err(Cancelled));
                Ok(())
            })))
            .await;
        assert!(out.is_ok());
    });
}

#[test]
fn move_on_after_moves_on_even_if_shielded() {
    vrun(async {
        let t0 = now();
        let outer = CancelScope::new();
        let oh = outer.handle();
        let out = outer
            .run(
                CancelScope::new()
                    .timeout(TARGET)
                    .shield(true)
                    .run(async move {
                        oh.cancel();
                        sleep_forever().await?;
                        Ok(())
                    }),
            )
            .await;
        // The shielded scope caught its own deadline; the outer's cancel
        // was never seen by a checkpoint.
        assert!(matches!(out, Ok(Some(None))), "{out:?}");
        assert_eq!(now() - t0, TARGET);
    });
}

#[test]
fn fail_after_fails_even_if_shielded() {
    vrun(async {
        let t0 = now();
        let outer = CancelScope::new();
        let oh = outer.handle();
        let out = outer
            .run(async move {
                let r = CancelScope::new()
                    .shield(true)
                    .run(fail_after(TARGET, async move {
                        oh.cancel();
                        sleep_forever().await?;
                        Ok(())
                    }))
                    .await;
                let e = r.unwrap_err();
                assert!(e.downcast_ref::<TimedOut>().is_some(), "{e:?}");
                Ok(())
            })
            .await;
        assert!(out.is_ok());
        assert_eq!(now() - t0, TARGET);
    });
}

#[test]
fn fail() {
    vrun(async {
        let t0 = now();
        let out = fail_at(now() + TARGET, async {
            sleep(secs(100.0)).await?;
            Ok(())
        })
        .await;
        assert!(out.unwrap_err().downcast_ref::<TimedOut>().is_some());
        assert_eq!(now() - t0, TARGET);
        fail_at(now() + secs(100.0), async {
            sleep(Duration::ZERO).await?;
            Ok(())
        })
        .await
        .unwrap();
        let t0 = now();
        let out = fail_after(TARGET, async {
            sleep(secs(100.0)).await?;
            Ok(())
        })
        .await;
        assert!(out.unwrap_err().downcast_ref::<TimedOut>().is_some());
        assert_eq!(now() - t0, TARGET);
        fail_after(secs(100.0), async {
            sleep(Duration::ZERO).await?;
            Ok(())
        })
        .await
        .unwrap();
    });
}

/// Deadlines may be negative (in the past); durations may not (Duration is
/// unsigned; `seconds` rejects -1 and NaN).
#[test]
fn timeouts_raise_value_error_and_negative_deadlines() {
    assert!(seconds(-1.0).is_err());
    assert!(seconds(f64::NAN).is_err());
    vrun(async {
        let past = now() - secs(10.0);
        let s = CancelScope::new().deadline(past);
        let h = s.handle();
        let out = s
            .run(async {
                assert!(hatchery::current_effective_deadline().unwrap() <= now());
                checkpoint().await?;
                Ok(())
            })
            .await;
        assert!(matches!(out, Ok(None)));
        assert!(h.cancel_called() && h.cancelled_caught());
        // sleep_until a past instant still yields once and returns Ok
        sleep_until(past).await.unwrap();
        let out = move_on_at(past, async {
            sleep_until(past).await?;
            Ok(())
        })
        .await;
        assert!(matches!(out, Ok(None)));
        let out = fail_at(past, async {
            checkpoint().await?;
            Ok(())
        })
        .await;
        assert!(out.unwrap_err().downcast_ref::<TimedOut>().is_some());
    });
}

#[test]
fn timeout_deadline_on_entry() {
    let clock = VirtualClock::new().autojump_threshold(Duration::MAX);
    let c = clock.clone();
    clock.run(async move {
        let rcs = CancelScope::new().timeout(secs(5.0));
        let h = rcs.handle();
        c.advance(secs(3.0));
        let start = now();
        rcs.run(async {
            assert_eq!(h.deadline(), Some(start + secs(5.0)));
            h.set_deadline(start + secs(3.0));
            assert_eq!(h.deadline(), Some(start + secs(3.0)));
            h.set_timeout(secs(4.0));
            assert_eq!(h.deadline(), Some(start + secs(4.0)));
            Ok(())
        })
        .await
        .unwrap();
    });
}
