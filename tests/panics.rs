//! Panics on the paths where two things go wrong at once: a child's `Drop`
//! panicking after the child failed or panicked, a nursery dropped while
//! its owner unwinds, a stderr that cannot be written, and the line that
//! names a panicking task. Nothing is lost: what is not resumed is said.
//!
//! Each test runs its case in a child process (this binary again, with
//! `HATCHERY_PANICS_PROBE` naming the case), so that it can read what the
//! case wrote to stderr, or break that stderr, and survive an abort.

use std::future::Future;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hatchery::{CancelScope, Cancelled, Nursery, checkpoint, sleep_forever, typed::nursery};

const PROBE: &str = "HATCHERY_PANICS_PROBE";

/// The case this process runs, if it is a probe.
fn probe_case() -> Option<String> {
    std::env::var(PROBE).ok()
}

/// Runs `case` in a child process and returns its exit status, stdout and
/// stderr; `broken_stderr` closes the read end of its stderr pipe first.
/// A child still running after 30 s is killed (the case hung).
fn probe(case: &str, broken_stderr: bool) -> (std::process::ExitStatus, String, String) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([case, "--exact", "--nocapture", "--test-threads=1"])
        .env(PROBE, case)
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr_pipe = child.stderr.take();
    if broken_stderr {
        drop(stderr_pipe.take());
    }
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(30) {
            child.kill().unwrap();
            let _ = child.wait();
            panic!("the case {case} hung");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut stdout = String::new();
    let mut stderr = String::new();
    io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut stdout).unwrap();
    if let Some(mut pipe) = stderr_pipe {
        io::Read::read_to_string(&mut pipe, &mut stderr).unwrap();
    }
    (child.wait().unwrap(), stdout, stderr)
}

/// Runs `case`, which must panic, and prints its payload for the parent.
fn print_payload<T>(case: impl FnOnce() -> T) {
    let out = catch_unwind(AssertUnwindSafe(case));
    let Err(payload) = out else {
        panic!("the case did not panic");
    };
    println!("payload: {}", message(&*payload));
}

fn message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(not text)")
}

/// A child that returns `output` in its first poll, and whose `Drop`
/// panics with `"drop bomb"`.
struct ThenDropPanics<F>(Option<F>);

impl<F: FnOnce() -> Result<(), io::Error> + Unpin> Future for ThenDropPanics<F> {
    type Output = Result<(), io::Error>;
    fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Self::Output> {
        Poll::Ready((self.0.take().expect("polled once"))())
    }
}

impl<F> Drop for ThenDropPanics<F> {
    fn drop(&mut self) {
        panic!("drop bomb");
    }
}

/// An executor with one thread running it, for the whole process.
fn executor() -> &'static async_executor::Executor<'static> {
    static EXECUTOR: std::sync::OnceLock<&'static async_executor::Executor<'static>> =
        std::sync::OnceLock::new();
    EXECUTOR.get_or_init(|| {
        let executor: &'static async_executor::Executor<'static> =
            Box::leak(Box::new(async_executor::Executor::new()));
        std::thread::spawn(|| {
            futures::executor::block_on(executor.run(std::future::pending::<()>()))
        });
        executor
    })
}

#[test]
fn an_error_is_not_lost_when_its_childs_drop_panics() {
    if probe_case().is_some() {
        print_payload(|| {
            futures::executor::block_on(nursery(|n: Nursery<'_, io::Error>| async move {
                n.named("bomb").spawn(ThenDropPanics(Some(|| {
                    Err(io::Error::other("the error before the drop"))
                })));
                Ok(())
            }))
        });
        return;
    }
    let (status, stdout, stderr) = probe("an_error_is_not_lost_when_its_childs_drop_panics", false);
    assert!(status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("payload: drop bomb"), "{stdout}");
    assert!(
        stderr.contains("the error before the drop") && stderr.contains("task `bomb`"),
        "the child's error is nowhere: {stderr}"
    );
}

#[test]
fn an_error_is_not_lost_when_its_parallel_childs_drop_panics() {
    if probe_case().is_some() {
        print_payload(|| {
            futures::executor::block_on(nursery(|n: Nursery<'_, io::Error>| async move {
                n.named("bomb").spawn_on(
                    executor(),
                    ThenDropPanics(Some(|| Err(io::Error::other("the error before the drop")))),
                );
                Ok(())
            }))
        });
        return;
    }
    let (status, stdout, stderr) = probe(
        "an_error_is_not_lost_when_its_parallel_childs_drop_panics",
        false,
    );
    assert!(status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("payload: drop bomb"), "{stdout}");
    assert!(
        stderr.contains("the error before the drop") && stderr.contains("task `bomb`"),
        "the child's error is nowhere: {stderr}"
    );
}

/// A child that panics in its poll, then in its `Drop`: the first panic is
/// the one resumed (as for a parallel child), the second is said.
#[test]
fn a_child_panicking_then_panicking_in_its_drop_resumes_the_first_panic() {
    if probe_case().is_some() {
        print_payload(|| {
            futures::executor::block_on(nursery(|n: Nursery<'_, io::Error>| async move {
                n.named("twice")
                    .spawn(ThenDropPanics(Some(|| panic!("the first panic"))));
                Ok(())
            }))
        });
        return;
    }
    let (status, stdout, stderr) = probe(
        "a_child_panicking_then_panicking_in_its_drop_resumes_the_first_panic",
        false,
    );
    assert!(status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("payload: the first panic"), "{stdout}");
    assert!(
        stderr.contains("drop bomb") && stderr.contains("task `twice`"),
        "{stderr}"
    );
}

/// Two children panic while a third cleans up behind a shield; stderr is a
/// pipe nobody reads any more. The first payload is resumed once the
/// cleanup is done: hatchery's own lines about the second panic must not
/// panic instead.
#[test]
fn a_broken_stderr_changes_neither_the_payload_nor_the_cleanup() {
    if probe_case().is_some() {
        let cleaned = AtomicBool::new(false);
        let cleaned = &cleaned;
        let out = catch_unwind(AssertUnwindSafe(|| {
            futures::executor::block_on(nursery(|n: Nursery<'_, Cancelled>| async move {
                n.spawn(async move {
                    let slept = sleep_forever().await;
                    CancelScope::new()
                        .shield(true)
                        .run_typed(async {
                            checkpoint().await?;
                            checkpoint().await
                        })
                        .await?;
                    cleaned.store(true, Ordering::SeqCst);
                    slept?;
                    Ok(())
                });
                checkpoint().await?;
                n.spawn(async { panic!("first payload") });
                n.spawn(async { panic!("second payload") });
                Ok(())
            }))
        }));
        println!(
            "payload: {}; cleaned: {}",
            message(&*out.unwrap_err()),
            cleaned.load(Ordering::SeqCst)
        );
        return;
    }
    let (status, stdout, _) = probe(
        "a_broken_stderr_changes_neither_the_payload_nor_the_cleanup",
        true,
    );
    assert!(status.success(), "{stdout}");
    assert!(
        stdout.contains("payload: first payload; cleaned: true"),
        "{stdout}"
    );
}

/// A parallel child that panics in its poll and again in its `Drop`, with
/// stderr broken: the nursery hears of it (it waited forever when the line
/// about the second panic panicked).
#[test]
fn a_broken_stderr_does_not_lose_a_parallel_childs_outcome() {
    if probe_case().is_some() {
        print_payload(|| {
            futures::executor::block_on(nursery(|n: Nursery<'_, io::Error>| async move {
                n.spawn_on(
                    executor(),
                    ThenDropPanics(Some(|| panic!("the first panic"))),
                );
                Ok(())
            }))
        });
        return;
    }
    let (status, stdout, _) = probe(
        "a_broken_stderr_does_not_lose_a_parallel_childs_outcome",
        true,
    );
    assert!(status.success(), "{stdout}");
    assert!(stdout.contains("payload: the first panic"), "{stdout}");
}

/// Every panic a nursery resumes is named once: a panic caught by the
/// program, then an unrelated one (whose payload may sit at the freed
/// first one's address), then one that passes through two nurseries.
#[test]
fn every_resumed_panic_names_its_task_once() {
    if probe_case().is_some() {
        for round in 0..20 {
            let out = catch_unwind(AssertUnwindSafe(|| {
                futures::executor::block_on(nursery(|n: Nursery<'_, Cancelled>| async move {
                    n.named(format!("round {round}"))
                        .spawn(async move { panic!("the same text") });
                    Ok(())
                }))
            }));
            assert!(out.is_err());
        }
        let out = catch_unwind(AssertUnwindSafe(|| {
            futures::executor::block_on(nursery(|_n: Nursery<'_, Cancelled>| async move {
                panic!("the same text");
                #[allow(unreachable_code)]
                Ok(())
            }))
        }));
        assert!(out.is_err());
        let out = catch_unwind(AssertUnwindSafe(|| {
            futures::executor::block_on(nursery(|n: Nursery<'_, Cancelled>| async move {
                n.named("outer").spawn(async {
                    nursery(|n: Nursery<'_, Cancelled>| async move {
                        n.named("inner").spawn(async { panic!("nested") });
                        Ok(())
                    })
                    .await
                    .map(drop)
                    .map_err(|_| Cancelled)
                });
                Ok(())
            }))
        }));
        assert!(out.is_err());
        return;
    }
    let (status, stdout, stderr) = probe("every_resumed_panic_names_its_task_once", false);
    assert!(status.success(), "{stdout}\n{stderr}");
    for round in 0..20 {
        let line = format!("task `round {round}` spawned at");
        assert_eq!(stderr.matches(&line).count(), 1, "{line}\n{stderr}");
    }
    assert_eq!(
        stderr
            .matches("panicked; its nursery resumes the panic")
            .count(),
        22,
        "{stderr}"
    );
    assert!(stderr.contains("the body of the nursery at"), "{stderr}");
    assert!(stderr.contains("task `inner`"), "{stderr}");
}

/// A nursery dropped while its owner unwinds, with a child whose `Drop`
/// panics: the process does not abort ("panic in a destructor during
/// cleanup"); the owner's panic goes on, the child's is said.
#[test]
fn a_child_drop_panicking_while_its_nursery_is_dropped_by_unwinding_does_not_abort() {
    struct PanicsOnDrop;
    impl Drop for PanicsOnDrop {
        fn drop(&mut self) {
            panic!("the child's drop");
        }
    }
    if probe_case().is_some() {
        print_payload(|| {
            futures::executor::block_on(async {
                let mut nursery = std::pin::pin!(nursery(|n: Nursery<'_, Cancelled>| async move {
                    for _ in 0..2 {
                        n.spawn(async {
                            let _guard = PanicsOnDrop;
                            sleep_forever().await?;
                            Ok(())
                        });
                    }
                    sleep_forever().await?;
                    Ok(())
                }));
                for _ in 0..3 {
                    assert!(futures::poll!(nursery.as_mut()).is_pending());
                }
                panic!("the owner's panic");
            })
        });
        return;
    }
    let (status, stdout, stderr) = probe(
        "a_child_drop_panicking_while_its_nursery_is_dropped_by_unwinding_does_not_abort",
        false,
    );
    assert!(status.success(), "{status}\n{stdout}\n{stderr}");
    assert!(stdout.contains("payload: the owner's panic"), "{stdout}");
    assert!(stderr.contains("the child's drop"), "{stderr}");
}

/// A nursery dropped unfinished (not while unwinding) with two children
/// whose `Drop` panics: both are dropped, the first panic comes out of the
/// drop, the second is said (two panicking drops in a row aborted).
#[test]
fn two_child_drops_panicking_when_their_nursery_is_dropped_do_not_abort() {
    struct PanicsOnDrop(&'static str);
    impl Drop for PanicsOnDrop {
        fn drop(&mut self) {
            panic!("{}", self.0);
        }
    }
    if probe_case().is_some() {
        print_payload(|| {
            futures::executor::block_on(async {
                let mut nursery = Box::pin(nursery(|n: Nursery<'_, Cancelled>| async move {
                    for name in ["first drop", "second drop"] {
                        n.spawn(async move {
                            let _guard = PanicsOnDrop(name);
                            sleep_forever().await?;
                            Ok(())
                        });
                    }
                    sleep_forever().await?;
                    Ok(())
                }));
                for _ in 0..3 {
                    assert!(futures::poll!(nursery.as_mut()).is_pending());
                }
                drop(nursery);
            })
        });
        return;
    }
    let (status, stdout, stderr) = probe(
        "two_child_drops_panicking_when_their_nursery_is_dropped_do_not_abort",
        false,
    );
    assert!(status.success(), "{status}\n{stdout}\n{stderr}");
    assert!(stdout.contains("payload: first drop"), "{stdout}");
    assert!(stderr.contains("second drop"), "{stderr}");
}

/// A nursery dropped unfinished (a `select` took the other branch) after a
/// child had failed: the failure it would have returned is said on stderr,
/// not lost (`run`'s root hands it on instead; a cancellation is no
/// failure and says nothing).
#[test]
fn a_nursery_dropped_after_a_failure_says_the_failure() {
    if probe_case().is_some() {
        use futures::FutureExt;
        futures::executor::block_on(async {
            let nursery = nursery(|n: Nursery<'_, io::Error>| async move {
                n.named("cleaner").spawn(async {
                    // Its cleanup outlasts the select's other branch.
                    let slept = sleep_forever().await;
                    CancelScope::new()
                        .shield(true)
                        .run_typed(async {
                            sleep_forever().await?;
                            Ok::<(), Cancelled>(())
                        })
                        .await?;
                    slept?;
                    Ok(())
                });
                n.named("failer").spawn(async {
                    checkpoint().await?;
                    Err(io::Error::other("the failure nobody returned"))
                });
                n.named("quiet").spawn(async {
                    sleep_forever().await?;
                    Ok(())
                });
                Ok(())
            });
            futures::select! {
                _ = nursery.fuse() => println!("the nursery returned"),
                () = futures_timer(Duration::from_millis(50)).fuse() => println!("dropped"),
            }
        });
        return;
    }
    let (status, stdout, stderr) =
        probe("a_nursery_dropped_after_a_failure_says_the_failure", false);
    assert!(status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("dropped"), "{stdout}");
    assert!(
        stderr.contains("the failure nobody returned") && stderr.contains("task `failer`"),
        "the failure is lost: {stderr}"
    );
    assert!(!stderr.contains("task `quiet`"), "{stderr}");
}

/// A timer on its own thread (no runtime needed).
async fn futures_timer(after: Duration) {
    let (tx, rx) = futures::channel::oneshot::channel();
    std::thread::spawn(move || {
        std::thread::sleep(after);
        let _ = tx.send(());
    });
    let _ = rx.await;
}

/// A task catches a nested nursery's panic itself, then panics again (its
/// payload maybe at the first one's freed address): the second panic is
/// named too.
#[test]
fn a_panic_after_the_program_caught_a_resumed_one_is_named() {
    if probe_case().is_some() {
        use futures::FutureExt;
        let out = catch_unwind(AssertUnwindSafe(|| {
            futures::executor::block_on(nursery(|n: Nursery<'_, Cancelled>| async move {
                n.named("outer child").spawn(async {
                    let caught =
                        AssertUnwindSafe(nursery(|m: Nursery<'_, Cancelled>| async move {
                            m.named("inner child")
                                .spawn(async { panic!("the same text") });
                            Ok(())
                        }))
                        .catch_unwind()
                        .await;
                    assert!(caught.is_err());
                    drop(caught);
                    panic!("the same text");
                });
                Ok(())
            }))
        }));
        assert!(out.is_err());
        return;
    }
    let (status, stdout, stderr) = probe(
        "a_panic_after_the_program_caught_a_resumed_one_is_named",
        false,
    );
    assert!(status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("task `inner child`"), "{stderr}");
    assert!(stderr.contains("task `outer child`"), "{stderr}");
}

/// `run`'s forced shutdown drops a child whose `Drop` panics: the failure
/// recorded before is still returned (the panic was resumed out of the
/// root's drop, and `run` lost its failures).
#[test]
fn a_drop_panicking_in_runs_forced_shutdown_loses_no_failure() {
    struct PanicsOnDrop;
    impl Drop for PanicsOnDrop {
        fn drop(&mut self) {
            panic!("the child's drop");
        }
    }
    if probe_case().is_some() {
        let out = catch_unwind(AssertUnwindSafe(|| {
            hatchery::Builder::new()
                .error_type::<io::Error>()
                .handle_signals(false)
                .grace_period(Duration::from_millis(50))
                .run(|n: Nursery<'_, io::Error>| async move {
                    n.named("stubborn").spawn(async {
                        let _guard = PanicsOnDrop;
                        CancelScope::new()
                            .shield(true)
                            .run_typed(async {
                                sleep_forever().await?;
                                Ok::<(), Cancelled>(())
                            })
                            .await?;
                        Ok(())
                    });
                    n.named("failer").spawn(async {
                        checkpoint().await?;
                        Err(io::Error::other("the failure"))
                    });
                    sleep_forever().await?;
                    Ok(())
                })
        }));
        match out {
            Ok(out) => println!("run returned: {out:?}"),
            Err(payload) => println!("run panicked: {}", message(&*payload)),
        }
        return;
    }
    let (status, stdout, stderr) = probe(
        "a_drop_panicking_in_runs_forced_shutdown_loses_no_failure",
        false,
    );
    assert!(status.success(), "{stdout}\n{stderr}");
    // The drop's panic is resumed by `run` after the forced shutdown, and
    // the failure is said as it resumes it.
    assert!(
        stdout.contains("run panicked: the child's drop"),
        "{stdout}"
    );
    assert!(
        stderr.contains("the failure") && stderr.contains("task `failer`"),
        "the failure is lost: {stderr}"
    );
}

/// stderr blocked (a thread holds it, writing to a pipe nobody reads): a
/// forced shutdown that drops a nested nursery with a failure returns all
/// the same (that nursery's line about its failure was a blocking write).
#[test]
fn a_forced_shutdown_does_not_wait_on_a_blocked_stderr() {
    if probe_case().is_some() {
        std::thread::spawn(|| {
            let junk = vec![b'x'; 1 << 20];
            let _ = io::Write::write_all(&mut io::stderr(), &junk);
        });
        std::thread::sleep(Duration::from_millis(200));
        let out = hatchery::Builder::new()
            .error_type::<io::Error>()
            .handle_signals(false)
            .grace_period(Duration::from_millis(50))
            .run(|n: Nursery<'_, io::Error>| async move {
                n.named("holder").spawn(async {
                    nursery(|m: Nursery<'_, io::Error>| async move {
                        m.spawn(async {
                            CancelScope::new()
                                .shield(true)
                                .run_typed(async {
                                    sleep_forever().await?;
                                    Ok::<(), Cancelled>(())
                                })
                                .await?;
                            Ok(())
                        });
                        m.spawn(async {
                            checkpoint().await?;
                            Err(io::Error::other("nested failure"))
                        });
                        Ok(())
                    })
                    .await
                    .map(drop)
                    .map_err(|error| io::Error::other(format!("{error:?}")))
                });
                checkpoint().await?;
                checkpoint().await?;
                n.cancel_scope().cancel();
                sleep_forever().await?;
                Ok(())
            });
        println!("run returned: {}", out.is_err());
        std::process::exit(0);
    }
    // Its stderr is a pipe this test never reads.
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "a_forced_shutdown_does_not_wait_on_a_blocked_stderr",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(PROBE, "blocked")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(20) {
            child.kill().unwrap();
            let _ = child.wait();
            panic!("the forced shutdown waited on stderr");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut stdout = String::new();
    io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut stdout).unwrap();
    assert!(stdout.contains("run returned: true"), "{stdout}");
}

/// A nursery inside a supervised child resumes a panic (and says so); the
/// child's `on_panic` handler takes it: that is said too, so that the first
/// line does not read as if the panic went on.
#[test]
fn a_panic_taken_by_on_panic_after_a_nursery_resumed_it_is_said_taken() {
    if probe_case().is_some() {
        let out = futures::executor::block_on(nursery(|n: Nursery<'_, Cancelled>| async move {
            n.named("client")
                .on_failure(|_failure| Ok(()))
                .on_panic(|_task, _payload| Ok(()))
                .spawn(async {
                    nursery(|m: Nursery<'_, Cancelled>| async move {
                        m.named("reader").spawn(async { panic!("a bug") });
                        Ok(())
                    })
                    .await
                    .map(drop)
                    .map_err(|_| Cancelled)
                });
            Ok(())
        }));
        println!("returned ok: {}", out.is_ok());
        return;
    }
    let (status, stdout, stderr) = probe(
        "a_panic_taken_by_on_panic_after_a_nursery_resumed_it_is_said_taken",
        false,
    );
    assert!(status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("returned ok: true"), "{stdout}");
    assert!(
        stderr.contains("task `reader`") && stderr.contains("its nursery resumes the panic"),
        "{stderr}"
    );
    assert!(
        stderr.contains("task `client`") && stderr.contains("its on_panic handler takes the panic"),
        "{stderr}"
    );
}
