//! `hatchery::testing`: the virtual clock (autojump, manual advance, its
//! reach into sleeps, deadlines, shields and nurseries) and the live counters.
#![cfg(feature = "test-util")]

use std::sync::Mutex;
use std::time::Duration;

use hatchery::testing::{self, VirtualClock};
use hatchery::{
    CancelScope, Cancelled, Nursery, checkpoint, current_effective_deadline, now, sleep,
    sleep_forever, typed::fail_after, typed::move_on_after, typed::nursery,
};

/// The live counters are process-wide and every test here creates tasks and
/// scopes: the tests of this file run one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

const HOUR: Duration = Duration::from_secs(3600);
const SEC: Duration = Duration::from_secs(1);

/// A tree of sleeping tasks under nested deadlines and a shield; returns what
/// happened, with virtual timestamps relative to the start.
fn scenario() -> Vec<(String, Duration)> {
    testing::run(async {
        let start = now();
        let log = Mutex::new(Vec::new());
        let note = |what: &str| log.lock().unwrap().push((what.to_string(), now() - start));
        let note = &note;
        let out = move_on_after(HOUR, async {
            nursery(|n: Nursery<'_, Cancelled>| async move {
                n.spawn(async move {
                    sleep(HOUR * 2)
                        .await
                        .inspect_err(|_| note("sleeper cancelled"))?;
                    note("sleeper woke");
                    Ok(())
                });
                n.spawn(async move {
                    for minute in 1..=3 {
                        sleep(SEC * 60).await?;
                        note(&format!("minute {minute}"));
                    }
                    Ok(())
                });
                n.spawn(async move {
                    sleep_forever()
                        .await
                        .inspect_err(|_| note("cleanup starts"))?;
                    Ok(())
                });
                n.spawn(async move {
                    // The shield holds past the outer deadline; the scope's
                    // own timeout still applies.
                    CancelScope::new()
                        .shield(true)
                        .timeout(HOUR + SEC * 30)
                        .run_typed(async {
                            sleep_forever().await.ok();
                            Ok::<_, Cancelled>(())
                        })
                        .await?;
                    note("shielded work done");
                    Ok(())
                });
                Ok(())
            })
            .await
            .map_err(|_| Cancelled)
        })
        .await;
        note(&format!("move_on_after returned {out:?}"));
        log.into_inner().unwrap()
    })
}

#[test]
fn an_hour_long_scenario_runs_in_virtual_time_with_exact_timestamps() {
    let _serial = one_at_a_time();
    let log = scenario();
    let at = |what: &str| {
        log.iter()
            .find(|(seen, _)| seen == what)
            .unwrap_or_else(|| panic!("{what:?} missing from {log:?}"))
            .1
    };
    assert_eq!(at("minute 1"), SEC * 60);
    assert_eq!(at("minute 3"), SEC * 180);
    assert_eq!(at("sleeper cancelled"), HOUR);
    assert_eq!(at("cleanup starts"), HOUR);
    assert_eq!(at("shielded work done"), HOUR + SEC * 30);
    assert_eq!(at("move_on_after returned Ok(None)"), HOUR + SEC * 30);
    assert!(!log.iter().any(|(what, _)| what == "sleeper woke"));
}

#[test]
fn the_same_program_gives_the_same_result_every_time() {
    let _serial = one_at_a_time();
    let first = scenario();
    for _ in 0..5 {
        assert_eq!(scenario(), first);
    }
}

#[test]
fn fail_after_times_out_after_exactly_its_timeout() {
    let _serial = one_at_a_time();
    let (out, took) = testing::run(async {
        let start = now();
        let out = fail_after(SEC * 10, async {
            sleep(SEC * 60).await?;
            Ok::<_, std::io::Error>(())
        })
        .await;
        (out, now() - start)
    });
    assert_eq!(out.unwrap_err().kind(), std::io::ErrorKind::TimedOut);
    assert_eq!(took, SEC * 10);
}

#[test]
fn time_stands_still_while_a_task_can_run() {
    let _serial = one_at_a_time();
    let elapsed = testing::run(async {
        let start = now();
        for _ in 0..1000 {
            checkpoint().await.unwrap();
        }
        now() - start
    });
    assert_eq!(elapsed, Duration::ZERO);
}

#[test]
fn deadlines_are_read_from_the_virtual_clock() {
    let _serial = one_at_a_time();
    testing::run(async {
        let start = now();
        move_on_after(SEC * 5, async {
            assert_eq!(current_effective_deadline(), Some(start + SEC * 5));
            let handle = hatchery::current_scope().unwrap();
            sleep(SEC * 2).await?;
            // Moving the deadline relative to the virtual `now`.
            handle.set_deadline(now() + SEC * 10);
            sleep(SEC * 9).await?;
            assert_eq!(now() - start, SEC * 11);
            let last = sleep(SEC * 9).await;
            assert_eq!(
                last,
                Err(Cancelled),
                "the deadline at 12 s cancels this sleep"
            );
            Ok::<(), Cancelled>(())
        })
        .await
        .unwrap();
        assert_eq!(now() - start, SEC * 12);
    });
}

#[test]
fn without_autojump_only_advance_moves_time() {
    let _serial = one_at_a_time();
    let clock = VirtualClock::new().autojump_threshold(Duration::MAX);
    let start = clock.now();
    let ticker = clock.clone();
    let woke_at = clock.run(async move {
        futures_lite::future::or(
            async {
                sleep(SEC * 3).await.unwrap();
                Some(now())
            },
            async {
                for _ in 0..100 {
                    ticker.advance(Duration::from_millis(500));
                    checkpoint().await.unwrap();
                }
                None
            },
        )
        .await
    });
    assert_eq!(woke_at, Some(start + SEC * 3));
}

#[test]
fn a_threshold_lets_work_on_other_threads_finish_before_the_jump() {
    let _serial = one_at_a_time();
    let clock = VirtualClock::new().autojump_threshold(Duration::from_millis(200));
    let start = clock.now();
    let out = clock.run(async {
        futures_lite::future::or(async { Some(blocking::unblock(|| 7).await) }, async {
            sleep(HOUR).await.unwrap();
            None
        })
        .await
    });
    assert_eq!(out, Some(7));
    assert_eq!(clock.now(), start, "the clock never jumped");
}

#[test]
fn outside_a_virtual_clock_time_is_real() {
    let _serial = one_at_a_time();
    let before = std::time::Instant::now();
    let now = now();
    assert!(now >= before && now <= std::time::Instant::now());
}

#[test]
fn nothing_is_left_alive_after_cancelled_and_failed_nurseries() {
    let _serial = one_at_a_time();
    let before = testing::live();
    let during = testing::run(async {
        let during = Mutex::new(None);
        let during_ref = &during;
        let out = nursery(|n: Nursery<'_, std::io::Error>| async move {
            for _ in 0..10 {
                n.spawn(async {
                    sleep(HOUR).await?;
                    Ok(())
                });
            }
            n.spawn(async {
                sleep(SEC).await?;
                Err(std::io::Error::other("boom"))
            });
            // Every child is waiting by now.
            sleep(SEC / 2).await?;
            *during_ref.lock().unwrap() = Some(testing::live());
            Ok(())
        })
        .await;
        assert!(out.is_err());
        during.into_inner().unwrap().unwrap()
    });
    assert_eq!(during.tasks - before.tasks, 11);
    assert!(during.scopes > before.scopes);
    // The nursery listens to its scope for the 11 waiting children and the
    // body: one listener, not one per waiting task.
    assert_eq!(during.listeners - before.listeners, 1, "{during:?}");
    assert_eq!(testing::live(), before);
}

/// A blocking child counts as a live task while it runs, like any child.
#[test]
fn a_blocking_child_is_counted_live_while_it_runs() {
    let _serial = one_at_a_time();
    let before = testing::live();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let during = futures_lite::future::block_on(nursery(|n: Nursery<'_, Cancelled>| async move {
        n.spawn_blocking(move |_| {
            let _ = rx.recv();
            Ok(())
        });
        checkpoint().await?;
        let during = testing::live();
        tx.send(()).unwrap();
        Ok(during)
    }))
    .unwrap()
    .unwrap();
    assert_eq!(during.tasks - before.tasks, 1, "{during:?}");
    assert_eq!(testing::live(), before);
}

/// Issue 15, item 5: a deadline that expires is an event at that instant
/// (trio cancels the scope before any task of that batch runs): a task woken
/// in the same instant cannot undo it by moving the deadline later.
#[test]
fn a_deadline_that_expired_stays_expired_for_a_task_woken_in_the_same_instant() {
    let _serial = one_at_a_time();
    let (out, took, cancel_called) = testing::run(async {
        let start = now();
        let scope = CancelScope::new().deadline(start + 10 * SEC);
        let handle = scope.handle();
        let mover = handle.clone();
        let out = Mutex::new(None);
        let out_ref = &out;
        nursery(|n: Nursery<'_, Cancelled>| async move {
            // Outside the scope, woken at the same instant as its deadline.
            n.spawn(async move {
                hatchery::sleep_until(start + 10 * SEC).await?;
                mover.set_deadline(start + HOUR);
                Ok(())
            });
            n.spawn(async move {
                let ended = scope.run_typed(sleep_forever()).await;
                *out_ref.lock().unwrap() = Some((ended.map(|_| ()), now() - start));
                Ok(())
            });
            Ok(())
        })
        .await
        .unwrap();
        let (ended, took) = out.into_inner().unwrap().unwrap();
        (ended, took, handle.cancel_called())
    });
    assert_eq!(out, Ok(()), "the scope caught its own deadline");
    assert_eq!(took, 10 * SEC);
    assert!(cancel_called);
}

/// Issue 15, item 5: a scope that has exited never becomes `cancel_called`
/// when its old deadline passes.
#[test]
fn an_exited_scope_is_never_cancelled_by_its_old_deadline() {
    let _serial = one_at_a_time();
    let (called, cancelled) = testing::run(async {
        let scope = CancelScope::new().timeout(10 * SEC);
        let handle = scope.handle();
        scope
            .run_typed(async { Ok::<_, Cancelled>(()) })
            .await
            .unwrap();
        sleep(20 * SEC).await.unwrap();
        (handle.cancel_called(), handle.is_cancelled())
    });
    assert!(!called);
    assert!(!cancelled);
}

/// Issue 15, item 5: no deadline is clamped: 600 years into virtual time
/// (past what the encoding of deadlines reaches), deadlines still expire
/// exactly when they should, neither before nor never.
#[test]
fn deadlines_past_five_hundred_years_of_virtual_time_are_exact() {
    let _serial = one_at_a_time();
    let clock = VirtualClock::new();
    clock.advance(Duration::from_secs(600 * 365 * 86_400));
    let out = clock.run(async {
        let start = now();
        let finished = move_on_after(3 * SEC, async {
            sleep(SEC).await?;
            Ok::<_, Cancelled>(now() - start)
        })
        .await;
        let start = now();
        let cut = move_on_after(SEC, async {
            assert_eq!(current_effective_deadline(), Some(start + SEC));
            sleep(3 * SEC).await?;
            Ok::<_, Cancelled>(())
        })
        .await;
        (finished, cut, now() - start)
    });
    assert_eq!(out, (Ok(Some(SEC)), Ok(None), SEC));
}

/// A thread keeps the last exited scope's state as a spare for its next
/// scope: the spare is not a live scope, and a scope made from it is one.
#[test]
fn a_spare_scope_state_is_not_counted_as_a_live_scope() {
    let _serial = one_at_a_time();
    let before = testing::live();
    for _ in 0..3 {
        let out = testing::run(move_on_after(HOUR, async {
            let inside = testing::live();
            assert_eq!(inside.scopes, before.scopes + 1, "{inside:?}");
            Ok::<_, Cancelled>(())
        }));
        assert_eq!(out, Ok(Some(())));
        assert_eq!(testing::live(), before);
    }
}

/// An error type whose `CancelError::is_cancelled` panics.
#[derive(Debug)]
struct PanicsWhenAsked;

impl From<Cancelled> for PanicsWhenAsked {
    fn from(_: Cancelled) -> Self {
        PanicsWhenAsked
    }
}

impl hatchery::CancelError for PanicsWhenAsked {
    fn is_cancelled(&self) -> bool {
        panic!("is_cancelled panics")
    }
}

/// A panic in the error type's own code while a scope exits (its
/// `CancelError` methods run then) still exits the scope: its state is
/// freed, not left linked under its parent.
#[test]
fn a_panic_in_cancel_error_code_at_a_scope_exit_leaves_nothing_alive() {
    let _serial = one_at_a_time();
    let before = testing::live();
    let panicked = std::panic::catch_unwind(|| {
        futures_lite::future::block_on(CancelScope::new().run_typed(async {
            CancelScope::new()
                .run_typed(async { Err::<(), _>(PanicsWhenAsked) })
                .await
                .map(drop)
        }))
    });
    assert!(panicked.is_err(), "is_cancelled was asked and panicked");
    assert_eq!(testing::live(), before);
}

/// Runs `f` on a thread of its own; fails if it has not returned within 20
/// real seconds (a hang would otherwise stall the suite).
fn within_20s<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("hung: the virtual clock never reached the deadline")
}

/// A parallel child on another thread (which runs on real time) is the only
/// thing waiting in a scope with a deadline: the nursery keeps a timer at
/// that deadline on the virtual clock, so the clock jumps there and the
/// child is cancelled on its thread.
#[test]
fn a_deadline_reaches_a_parallel_child_on_another_thread() {
    let _one = one_at_a_time();
    let executor = std::sync::Arc::new(async_executor::Executor::new());
    let runner = std::sync::Arc::clone(&executor);
    std::thread::spawn(move || {
        futures_lite::future::block_on(runner.run(std::future::pending::<()>()))
    });
    let took = an_hour_deadline_around(move |n| {
        n.spawn_on(&*executor, async {
            sleep_forever().await?;
            Ok(())
        });
        n.spawn_on(&*executor, async {
            // Another crate's wait: dropped on its thread.
            std::future::pending::<()>().await;
            Ok(())
        });
    });
    assert_eq!(took, HOUR);
}

/// The same for a blocking closure that polls its cancel handle.
#[test]
fn a_deadline_reaches_a_blocking_closure() {
    let _one = one_at_a_time();
    let took = an_hour_deadline_around(|n| {
        n.spawn_blocking(|cancel| {
            while !cancel.is_cancelled() {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(Cancelled)
        });
    });
    assert_eq!(took, HOUR);
}

/// Under `testing::run`, a nursery whose children come from `spawn`, inside
/// `move_on_after(HOUR)`: the virtual time it took the deadline to cancel
/// it (fails after 20 real seconds if it never did).
fn an_hour_deadline_around(
    spawn: impl FnOnce(&Nursery<'_, Cancelled>) + Send + 'static,
) -> Duration {
    within_20s(|| {
        testing::run(async move {
            let start = now();
            let out = move_on_after(HOUR, async {
                nursery(|n: Nursery<'_, Cancelled>| async move {
                    spawn(&n);
                    Ok(())
                })
                .await?;
                Ok::<_, Cancelled>(())
            })
            .await;
            assert_eq!(out, Ok(None), "the deadline cancelled the nursery");
            now() - start
        })
    })
}

/// `run_blocking`'s closure runs on a pool thread, on the real clock: a
/// deadline of the virtual clock, an hour ahead of it, reaches the closure
/// through its handle all the same (the awaiting side watches it).
#[test]
fn a_virtual_deadline_reaches_a_run_blocking_closure_after_the_clock_jumped() {
    let _one = one_at_a_time();
    // A closure that never sees the cancellation would spin for 10 s.
    let out = testing::run(async {
        sleep(HOUR).await?;
        move_on_after(Duration::from_millis(10), async {
            let told = hatchery::run_blocking(|cancel| {
                let start = std::time::Instant::now();
                while !cancel.is_cancelled() {
                    if start.elapsed() > Duration::from_secs(10) {
                        return false;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                true
            })
            .await?;
            assert!(told, "the closure never saw the virtual deadline pass");
            checkpoint().await?;
            Ok::<_, Cancelled>(())
        })
        .await
    });
    assert_eq!(out, Ok(None));
}

/// trio's run loop cancels a scope at its deadline whether or not anything
/// looks: a later explicit cancel does not replace that reason (it did when
/// nothing had checked the scope between the expiry and the cancel).
#[test]
fn a_deadline_that_passed_unseen_stays_the_reason_after_a_later_cancel() {
    let _serial = one_at_a_time();
    let reason = testing::run(async {
        let scope = CancelScope::new().timeout(Duration::from_secs(1));
        let handle = scope.handle();
        let inside = handle.clone();
        let out = scope
            .run_typed(async move {
                // Shielded: nothing in the scope sees its deadline pass.
                CancelScope::new()
                    .shield(true)
                    .run_typed(sleep(Duration::from_secs(5)))
                    .await?;
                inside.cancel_with_reason("operator pressed stop");
                checkpoint().await?;
                Ok::<_, Cancelled>(())
            })
            .await;
        assert_eq!(out, Ok(None));
        handle.reason()
    });
    assert_eq!(reason, Some(hatchery::CancelReason::Deadline));
}

/// A deadline counts once its scope is entered (trio): one that passed, and
/// was moved later before the scope was entered, never cancelled it.
#[test]
fn a_passed_deadline_moved_later_before_entry_does_not_cancel() {
    let _serial = one_at_a_time();
    let out = testing::run(async {
        let scope = CancelScope::new().deadline(now() - Duration::from_secs(1));
        // (Reading `cancel_called` now would cancel it, as trio's property
        // does for a scope not entered yet.)
        scope
            .handle()
            .set_deadline(now() + Duration::from_secs(100));
        scope
            .run_typed(async {
                checkpoint().await?;
                Ok::<_, Cancelled>(1)
            })
            .await
    });
    assert_eq!(out, Ok(Some(1)));
}

/// `advance(Duration::MAX)` moves the clock as far as it goes, and every
/// sleep is due (trio's `jump(inf)`); it moved nothing.
#[test]
fn advancing_by_duration_max_makes_everything_due() {
    let _serial = one_at_a_time();
    let clock = VirtualClock::new().autojump_threshold(Duration::MAX);
    let inside = clock.clone();
    let out = clock.run(async move {
        move_on_after(Duration::from_secs(3600), async {
            inside.advance(Duration::MAX);
            sleep(Duration::from_secs(10)).await?;
            Ok::<_, Cancelled>("slept")
        })
        .await
    });
    assert_eq!(out, Ok(None));
}

/// `spawn_parallel` inside `testing::run` on a current-thread tokio runtime
/// (`#[tokio::test]`): the runtime's only thread runs `testing::run`, so
/// the child could never run; refused with a message (it waited for ever).
#[cfg(feature = "tokio")]
#[test]
#[should_panic(
    expected = "spawn_parallel inside testing::run (or VirtualClock::run) on a current-thread tokio runtime"
)]
fn spawn_parallel_under_testing_run_on_a_current_thread_tokio_runtime_is_refused() {
    let _serial = one_at_a_time();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let _ = testing::run(hatchery::nursery(|n| async move {
            n.spawn_parallel(async { Ok(()) });
            Ok(())
        }));
    });
}
