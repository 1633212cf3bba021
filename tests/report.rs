//! The report of who is still running: its tree, and trees too deep to walk
//! recursively.

use std::future::Future;
use std::pin::Pin;

use hatchery::{
    CancelScope, Cancelled, Nursery, Report, checkpoint, sleep_forever, typed::nursery,
};

#[test]
fn the_report_draws_nurseries_tasks_and_scopes_as_a_tree() {
    let shield = CancelScope::new().shield(true);
    let shield_handle = shield.handle();
    let text = futures::executor::block_on(nursery(|n: Nursery<'_, Cancelled>| async move {
        n.named("outer task").spawn(async {
            sleep_forever().await?;
            Ok(())
        });
        n.spawn(async {
            nursery(|inner: Nursery<'_, Cancelled>| async move {
                inner.named("inner task").spawn(async {
                    sleep_forever().await?;
                    Ok(())
                });
                shield.run_typed(sleep_forever()).await?;
                Ok(())
            })
            .await?;
            Ok(())
        });
        for _ in 0..3 {
            checkpoint().await?;
        }
        let report = Report::capture();
        n.cancel_scope().cancel();
        shield_handle.cancel();
        Ok(report.to_string())
    }))
    .unwrap()
    .unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "3 tasks still running:", "{text}");
    assert!(
        lines[1].starts_with("nursery at tests/report.rs:"),
        "{text}"
    );
    assert!(
        lines[2].starts_with("├─ task `outer task` spawned at tests/report.rs:"),
        "{text}"
    );
    assert!(lines[2].ends_with(", running"), "{text}");
    assert!(
        lines[3].starts_with("├─ unnamed task spawned at tests/report.rs:"),
        "{text}"
    );
    assert!(
        lines[4].starts_with("└─ nursery at tests/report.rs:"),
        "{text}"
    );
    assert!(lines[5].starts_with("   ├─ task `inner task`"), "{text}");
    assert!(
        lines[6].starts_with("   └─ cancel scope at tests/report.rs:"),
        "{text}"
    );
    assert!(lines[6].ends_with("[shield held]"), "{text}");
    assert_eq!(lines.len(), 7, "{text}");
}

/// A nursery with more tasks than a report lists: the first ones, then
/// how many more; `Report::tasks()` still has them all.
#[test]
fn a_report_of_thousands_of_tasks_lists_the_first_and_counts_the_rest() {
    let report = futures::executor::block_on(nursery(|n: Nursery<'_, Cancelled>| async move {
        for _ in 0..3_000 {
            n.spawn(async {
                sleep_forever().await?;
                Ok(())
            });
        }
        checkpoint().await?;
        let report = Report::capture();
        n.cancel_scope().cancel();
        Ok(report)
    }))
    .unwrap()
    .unwrap();
    assert_eq!(report.tasks().len(), 3_000);
    let text = report.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "3000 tasks still running:");
    assert!(lines.len() <= 1_002, "{} lines", lines.len());
    // Nothing else is left out: the last line counts the tasks not listed.
    assert!(
        lines
            .last()
            .unwrap()
            .ends_with("└─ … and 2002 more tasks here"),
        "{}",
        lines[lines.len() - 3..].join("\n")
    );
}

/// A nursery (inside another one) gets its children from `spawn`, is
/// cancelled, and is reported a few polls later (from the outer nursery,
/// which is not cancelled); then `release` lets its children end.
fn report_after_cancelling_a_nursery_with(
    spawn: impl FnOnce(&Nursery<'_, Cancelled>) + Send,
    release: impl FnOnce(),
) -> String {
    futures::executor::block_on(nursery(|outer: Nursery<'_, Cancelled>| async move {
        let (scope_tx, scope_rx) = futures::channel::oneshot::channel();
        outer.spawn(async move {
            nursery(|n: Nursery<'_, Cancelled>| async move {
                scope_tx.send(n.cancel_scope()).unwrap();
                spawn(&n);
                Ok(())
            })
            .await?;
            Ok(())
        });
        let scope = scope_rx.await.unwrap();
        checkpoint().await?;
        scope.cancel();
        for _ in 0..3 {
            checkpoint().await?;
        }
        let text = Report::of(&scope).to_string();
        release();
        Ok(text)
    }))
    .unwrap()
    .unwrap()
}

/// A `cancel_gracefully` whose future outlives its stop runs behind a
/// shield that the report shows under the task's nursery.
#[test]
fn a_graceful_drain_that_outlives_its_stop_is_reported_behind_its_shield() {
    use hatchery::CancellableExt;
    use std::time::Duration;
    let (done, finish) = futures::channel::oneshot::channel::<()>();
    let text = report_after_cancelling_a_nursery_with(
        move |n| {
            n.named("draining").spawn(async {
                // Ignores its stop: it ends when released.
                let drained = finish
                    .cancel_gracefully(Duration::from_secs(3600), |_| {})
                    .await;
                drained?.ok();
                Ok(())
            });
        },
        move || done.send(()).unwrap(),
    );
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[1].starts_with("nursery at tests/report.rs:"),
        "{text}"
    );
    assert!(lines[2].contains("task `draining`"), "{text}");
    assert!(
        lines[3].starts_with("└─ cancel scope at tests/report.rs:")
            && lines[3].ends_with("[shield held]"),
        "{text}"
    );
}

/// What runs inside a `cancel_gracefully` future (a nested nursery and its
/// task) is in the report before the stop, too: its shield is in the tree
/// from the first poll. It was a root until the stop, and a connection that
/// was never polled again after the cancel (its handler stuck) hid the
/// stuck handler from the forced shutdown's report (adversarial round).
#[test]
fn what_runs_inside_cancel_gracefully_is_reported_before_its_stop() {
    use hatchery::CancellableExt;
    use std::time::Duration;
    let text = futures::executor::block_on(nursery(|n: Nursery<'_, Cancelled>| async move {
        n.named("connection").spawn(async {
            let served = nursery(|handlers: Nursery<'_, Cancelled>| async move {
                handlers.named("handler").spawn(async {
                    sleep_forever().await?;
                    Ok(())
                });
                Ok(())
            })
            .cancel_gracefully(Duration::ZERO, |_| {})
            .await;
            assert!(served.is_err(), "overran a zero grace: {served:?}");
            Ok(())
        });
        for _ in 0..3 {
            checkpoint().await?;
        }
        let text = Report::capture().to_string();
        n.cancel_scope().cancel();
        Ok(text)
    }))
    .unwrap()
    .expect("the body returned before the cancel");
    let connection = text
        .lines()
        .position(|line| line.contains("task `connection`"))
        .unwrap_or_else(|| panic!("{text}"));
    let handler = text
        .lines()
        .position(|line| line.contains("task `handler`"))
        .unwrap_or_else(|| panic!("the handler is missing:\n{text}"));
    assert!(connection < handler, "{text}");
}

/// Enters `depth` nested scopes, then snapshots the whole tree.
fn nest(depth: usize) -> Pin<Box<dyn Future<Output = Result<Report, Cancelled>>>> {
    Box::pin(async move {
        if depth == 0 {
            return Ok(Report::capture());
        }
        let inner = CancelScope::new().run_typed(nest(depth - 1)).await?;
        Ok(inner.expect("nothing is cancelled"))
    })
}

#[test]
fn a_deep_tree_is_reported_without_recursion() {
    const DEPTH: usize = 3_000;
    // Entering the scopes recurses through nested futures: a big stack.
    let report = std::thread::Builder::new()
        .stack_size(256 << 20)
        .spawn(|| futures::executor::block_on(nest(DEPTH)).unwrap())
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(report.scopes().len(), DEPTH);
    // Formatting and dropping happen on a thread with a small stack.
    let text = std::thread::Builder::new()
        .stack_size(256 << 10)
        .spawn(move || {
            let text = report.to_string();
            let deepest = report.scopes().last().unwrap().path().to_owned();
            drop(report);
            (text, deepest)
        })
        .unwrap()
        .join()
        .unwrap();
    // Printed bounded: a thousand lines at most, none of them wider than
    // two dozen levels of guides, then what was left out.
    let lines: Vec<&str> = text.0.lines().collect();
    assert!(lines.len() <= 1_002, "{} lines", lines.len());
    let widest = lines.iter().map(|line| line.chars().count()).max().unwrap();
    assert!(widest < 250, "a line of {widest} characters");
    assert!(
        lines.iter().any(|line| line.contains("┆ (depth 100) ")),
        "deep lines say their depth"
    );
    let last = lines.last().unwrap();
    assert!(
        last.starts_with(&format!(
            "… {} more scopes and 0 more tasks not shown",
            DEPTH - 1000
        )),
        "{last}"
    );
    assert!(text.1.contains("more) > cancel scope at"), "{}", text.1);
    assert!(
        text.1.len() < 2_000,
        "the path is elided: {} bytes",
        text.1.len()
    );
}

#[test]
fn after_a_cancel_the_report_says_who_was_told_and_who_is_shielded() {
    use std::time::Duration;

    use hatchery::{Builder, sleep};
    let text = Builder::new()
        .error_type()
        .handle_signals(false)
        .worker_threads(1)
        .run(|n: Nursery<'_, Cancelled>| async move {
            n.named("told").spawn(async {
                let slept = sleep_forever().await;
                // Its cleanup takes a while, behind a shield.
                CancelScope::new()
                    .shield(true)
                    .run_typed(sleep(Duration::from_millis(100)))
                    .await?;
                slept.map(|never| match never {})
            });
            n.named("shielded").spawn(async {
                CancelScope::new()
                    .shield(true)
                    .run_typed(sleep(Duration::from_millis(100)))
                    .await?;
                Ok(())
            });
            n.spawn_parallel(async {
                CancelScope::new()
                    .shield(true)
                    .run_typed(sleep(Duration::from_millis(100)))
                    .await?;
                Ok(())
            });
            checkpoint().await?;
            n.cancel_scope().cancel();
            // The nursery polls its children once more, which tells them.
            CancelScope::new()
                .shield(true)
                .run_typed(sleep(Duration::from_millis(20)))
                .await?;
            Ok(Report::capture().to_string())
        })
        .unwrap()
        .unwrap();
    let line = |name: &str| {
        text.lines()
            .find(|line| line.contains(name))
            .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
            .to_owned()
    };
    assert!(
        line("task `told`").ends_with("told to cancel, cleaning up behind a shield"),
        "{text}"
    );
    assert!(
        line("task `shielded`").ends_with("behind a shield: the cancellation does not reach it"),
        "{text}"
    );
    assert!(
        line("unnamed task")
            .ends_with("runs on another thread (or waits for a worker there), told there (at its next unshielded checkpoint, or by its cancel handle)"),
        "{text}"
    );
}

#[test]
fn the_report_lists_a_running_parallel_child_by_name_and_forgets_it_once_finished() {
    use std::time::Duration;

    use hatchery::{Builder, sleep};
    let (running, finished) = Builder::new()
        .error_type()
        .handle_signals(false)
        .worker_threads(2)
        .run(|n: Nursery<'_, Cancelled>| async move {
            let (started_tx, started_rx) = futures::channel::oneshot::channel();
            let (stop_tx, stop_rx) = futures::channel::oneshot::channel::<()>();
            n.named("cruncher").spawn_parallel(async move {
                started_tx.send(()).unwrap();
                let _ = stop_rx.await;
                Ok(())
            });
            n.named("brief").spawn_parallel(async { Ok(()) });
            started_rx.await.unwrap();
            sleep(Duration::from_millis(20)).await?;
            let running = Report::capture().to_string();
            stop_tx.send(()).unwrap();
            // Given the time to finish.
            sleep(Duration::from_millis(20)).await?;
            let finished = Report::capture().to_string();
            Ok((running, finished))
        })
        .unwrap()
        .unwrap();
    let line = running
        .lines()
        .find(|line| line.contains("task `cruncher`"))
        .unwrap_or_else(|| panic!("the running child is listed:\n{running}"));
    assert!(line.contains("tests/report.rs"), "its spawn site: {line}");
    assert!(line.ends_with("running"), "{line}");
    let age: f64 = line
        .split("age ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit() && c != '.').next())
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("an age: {line}"));
    assert!(age > 0.0, "it has been running a while: {line}");
    assert!(
        !running.contains("task `brief`"),
        "a finished child is not listed:\n{running}"
    );
    assert!(
        !finished.contains("cruncher"),
        "nor once it finished:\n{finished}"
    );
}

/// After a cancel, a blocking child whose closure still runs is reported
/// as running on another thread (told through its handle), not as a task
/// that blocks the nursery's thread.
#[test]
fn a_blocking_child_after_a_cancel_is_reported_on_its_own_thread() {
    let (release, wait) = std::sync::mpsc::channel::<()>();
    let text = report_after_cancelling_a_nursery_with(
        move |n| {
            n.named("crunching").spawn_blocking(move |_cancel| {
                // Ignores the cancel until released.
                let _ = wait.recv();
                Ok(())
            });
        },
        move || release.send(()).unwrap(),
    );
    let line = text
        .lines()
        .find(|line| line.contains("task `crunching`"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.ends_with("runs on another thread (or waits for a worker there), told there (at its next unshielded checkpoint, or by its cancel handle)"),
        "{text}"
    );
}

/// A scope whose own deadline passed while nothing inside it could see it
/// (its task waits for a nested nursery, already cancelled by a deadline
/// further in, whose child waits behind a shield of its own) is reported as
/// cancelled by its deadline, not "from outside": a shield cannot be
/// cancelled from outside.
#[test]
fn a_scope_whose_deadline_passed_unseen_is_reported_as_cancelled_by_it() {
    use std::time::Duration;
    let (release, released) = async_channel::bounded::<()>(1);
    let report = futures::executor::block_on(nursery(|n: Nursery<'_, Cancelled>| async move {
        n.named("worker").spawn(async move {
            CancelScope::new()
                .shield(true)
                .timeout(Duration::from_millis(40))
                .run_typed(hatchery::typed::move_on_after(
                    Duration::from_millis(10),
                    nursery(|inner: Nursery<'_, Cancelled>| async move {
                        // Behind a shield of its own, in a future from
                        // another crate: nothing in it sees a deadline.
                        inner.named("stuck").spawn(async move {
                            CancelScope::new()
                                .shield(true)
                                .run_typed(async move {
                                    released.recv().await.ok();
                                    Ok::<(), Cancelled>(())
                                })
                                .await?;
                            Ok(())
                        });
                        Ok(())
                    }),
                ))
                .await?;
            Ok(())
        });
        hatchery::sleep(Duration::from_millis(100)).await?; // both deadlines passed
        let report = Report::of(&n.cancel_scope());
        release.close();
        Ok(report)
    }))
    .unwrap()
    .unwrap();
    let shield = report
        .scopes()
        .iter()
        .find(|scope| scope.is_shielded())
        .expect("the shielded scope is in the report");
    assert_eq!(
        shield.cancel_reason().map(ToString::to_string).as_deref(),
        Some("its deadline passed"),
        "{report}"
    );
    let text = report.to_string();
    let line = text.lines().find(|line| line.contains("[shield held]"));
    assert!(
        line.is_some_and(|line| line.contains("[cancelled: its deadline passed]")),
        "{text}"
    );
}

/// The scope `run_blocking` gives its closure is reported at the line that
/// called `run_blocking`, not inside hatchery.
#[test]
fn a_run_blocking_scope_is_reported_at_its_callers_line() {
    let text = futures::executor::block_on(nursery(|n: Nursery<'_, Cancelled>| async move {
        let (release, released) = std::sync::mpsc::channel::<()>();
        n.named("waiter").spawn(async move {
            hatchery::run_blocking(move |_cancel| {
                let _ = released.recv();
            })
            .await?;
            Ok(())
        });
        checkpoint().await?; // the waiter is polled: its closure's scope is entered
        let text = Report::capture().to_string();
        release.send(()).unwrap();
        Ok(text)
    }))
    .unwrap()
    .unwrap();
    assert!(text.contains("cancel scope at tests/report.rs:"), "{text}");
    assert!(!text.contains("src/nursery/blocking.rs"), "{text}");
}
