//! One workload, run a given number of times, for counting instructions and
//! locked operations per child under callgrind (`benches/instructions.sh`),
//! where times cannot be trusted: a count does not depend on the machine's
//! load or on how expensive its atomics are.
//!
//! ```text
//! cargo bench --bench instructions --no-run   # builds it
//! benches/instructions.sh                      # the table
//! target/release/deps/instructions-* WORKLOAD REPS
//! ```
//!
//! Each run does the workload once to warm up (pools, buffers, lazily made
//! runtimes), then `REPS` more times; the script runs it with two values of
//! `REPS` and divides the difference by the work done, so setup and warm-up
//! cancel out.

mod common;

use std::hint::black_box;
use std::time::Duration;

use common::CHILDREN;
use futures::stream::{FuturesUnordered, StreamExt};
use futures_lite::future::{block_on, yield_now};
use hatchery::{CancelScope, Cancelled, Nursery, check_cancelled, typed::move_on_after, typed::nursery};

/// `(name, units of work per repetition, setup returning one repetition)`.
type Workload = (&'static str, usize, fn() -> Box<dyn FnMut()>);

const HOUR: Duration = Duration::from_secs(3600);

fn tokio_current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a tokio runtime")
}

const WORKLOADS: &[Workload] = &[
    ("spawn_join/hatchery", CHILDREN, || {
        Box::new(|| {
            block_on(nursery(|n: Nursery<'_, Cancelled>| async move {
                for _ in 0..CHILDREN {
                    n.spawn(async {
                        yield_now().await;
                        Ok(())
                    });
                }
                Ok(())
            }))
            .unwrap();
        })
    }),
    ("spawn_join/futures_unordered", CHILDREN, || {
        Box::new(|| {
            block_on(async {
                let mut set = FuturesUnordered::new();
                for _ in 0..CHILDREN {
                    set.push(async { yield_now().await });
                }
                while set.next().await.is_some() {}
            })
        })
    }),
    ("spawn_join/tokio_joinset", CHILDREN, || {
        let runtime = tokio_current_thread();
        Box::new(move || {
            runtime.block_on(async {
                let mut set = tokio::task::JoinSet::new();
                for _ in 0..CHILDREN {
                    set.spawn(async { tokio::task::yield_now().await });
                }
                while set.join_next().await.is_some() {}
            })
        })
    }),
    ("spawn_join/async_executor", CHILDREN, || {
        let executor = Box::leak(Box::new(async_executor::LocalExecutor::new()));
        Box::new(|| common::local_executor_spawn_join(executor))
    }),
    ("spawn_join/hatchery_parallel", CHILDREN, || {
        let executor = common::parallel_executor();
        Box::new(move || common::hatchery_parallel_spawn_join(executor))
    }),
    ("spawn_join/executor_2_threads", CHILDREN, || {
        let executor = common::parallel_executor();
        Box::new(move || {
            block_on(async {
                let tasks: Vec<_> = (0..CHILDREN)
                    .map(|_| executor.spawn(async { yield_now().await }))
                    .collect();
                for task in tasks {
                    task.await;
                }
            })
        })
    }),
    ("cancel_idle/hatchery", CHILDREN, || {
        Box::new(|| {
            let scope = CancelScope::new();
            let handle = scope.handle();
            let _ = block_on(
                scope.run_typed(nursery(|n: Nursery<'_, Cancelled>| async move {
                    for _ in 0..CHILDREN {
                        n.spawn(async {
                            hatchery::sleep_forever().await?;
                            Ok(())
                        });
                    }
                    yield_now().await;
                    yield_now().await;
                    handle.cancel();
                    Ok(())
                })),
            );
        })
    }),
    ("cancel_idle/tokio_token_joinset", CHILDREN, || {
        let runtime = tokio_current_thread();
        Box::new(move || {
            runtime.block_on(async {
                let token = tokio_util::sync::CancellationToken::new();
                let mut set = tokio::task::JoinSet::new();
                for _ in 0..CHILDREN {
                    let token = token.child_token();
                    set.spawn(async move { token.cancelled().await });
                }
                tokio::task::yield_now().await;
                tokio::task::yield_now().await;
                token.cancel();
                while set.join_next().await.is_some() {}
            })
        })
    }),
    ("checkpoint/hatchery", CHILDREN, || {
        Box::new(|| {
            let _ = block_on(CancelScope::new().run_typed(async {
                for _ in 0..CHILDREN {
                    black_box(check_cancelled())?;
                }
                Ok::<_, Cancelled>(())
            }));
        })
    }),
    ("checkpoint/tokio_is_cancelled", CHILDREN, || {
        let root = tokio_util::sync::CancellationToken::new();
        let token = root.child_token();
        Box::new(move || {
            for _ in 0..CHILDREN {
                black_box(black_box(&token).is_cancelled());
            }
        })
    }),
    ("timeout_scope/hatchery", 1, || {
        Box::new(|| {
            let _ = black_box(block_on(move_on_after(HOUR, async {
                Ok::<_, Cancelled>(black_box(1))
            })));
        })
    }),
    ("timeout_scope/tokio", 1, || {
        let runtime = tokio_current_thread();
        Box::new(move || {
            let _ = black_box(runtime.block_on(async {
                tokio::time::timeout(HOUR, async { black_box(1) }).await
            }));
        })
    }),
];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` runs every bench binary with `--bench`: nothing to do.
    if args.iter().any(|arg| arg == "--bench") || args.is_empty() {
        println!("usage: instructions WORKLOAD REPS  (or `list`); see benches/instructions.sh");
        return;
    }
    if args[0] == "list" {
        for (name, units, _) in WORKLOADS {
            println!("{name} {units}");
        }
        return;
    }
    let Some((_, _, setup)) = WORKLOADS.iter().find(|(name, _, _)| *name == args[0]) else {
        eprintln!("no workload {:?}; `list` names them", args[0]);
        std::process::exit(2);
    };
    let reps: usize = args
        .get(1)
        .and_then(|reps| reps.parse().ok())
        .unwrap_or(1);
    let mut once = setup();
    once();
    for _ in 0..reps {
        once();
    }
}
