//! The workloads that `benches/instructions.rs` counts and
//! `benches/alternate.rs` times: each a name, the units of work one
//! repetition does (children, checks, scopes), and a setup that returns one
//! repetition. Peers run exactly the same work as hatchery.

use std::hint::black_box;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use futures_lite::future::{block_on, yield_now};
use hatchery::{
    CancelScope, Cancelled, Nursery, check_cancelled, typed::move_on_after, typed::nursery,
};

use crate::common::{self, CHILDREN};

/// `(name, units of work per repetition, setup returning one repetition)`.
pub type Workload = (&'static str, usize, fn() -> Box<dyn FnMut()>);

const HOUR: Duration = Duration::from_secs(3600);

fn tokio_current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a tokio runtime")
}

/// `scale`'s work for `FuturesUnordered`: `n` futures that wait forever,
/// each polled once, then all dropped.
fn futures_unordered_scale(n: usize) {
    block_on(async {
        let mut set: FuturesUnordered<_> = (0..n)
            .map(|_| async { std::future::pending::<()>().await })
            .collect();
        futures::future::poll_fn(|cx| {
            assert!(set.poll_next_unpin(cx).is_pending());
            std::task::Poll::Ready(())
        })
        .await;
        drop(set);
    })
}

/// `cancel_idle/tokio_abort_all` and `scale`'s work for tokio: `n` tasks
/// that wait forever, each polled once, then aborted and joined.
fn tokio_abort_all_scale(runtime: &tokio::runtime::Runtime, n: usize) {
    runtime.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..n {
            set.spawn(std::future::pending::<()>());
        }
        tokio::task::yield_now().await;
        tokio::task::yield_now().await;
        set.abort_all();
        while set.join_next().await.is_some() {}
    })
}

pub const WORKLOADS: &[Workload] = &[
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
        Box::new(move || common::executor_spawn_join(executor))
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
    ("cancel_idle/tokio_abort_all", CHILDREN, || {
        let runtime = tokio_current_thread();
        Box::new(move || tokio_abort_all_scale(&runtime, CHILDREN))
    }),
    ("scale/hatchery_1000", 1_000, || {
        Box::new(|| common::scale(1_000))
    }),
    ("scale/hatchery_1000000", 1_000_000, || {
        Box::new(|| common::scale(1_000_000))
    }),
    // The peers' own growth from a thousand to a million, for comparison.
    ("scale/futures_unordered_1000", 1_000, || {
        Box::new(|| futures_unordered_scale(1_000))
    }),
    ("scale/futures_unordered_1000000", 1_000_000, || {
        Box::new(|| futures_unordered_scale(1_000_000))
    }),
    ("scale/tokio_abort_all_1000", 1_000, || {
        let runtime = tokio_current_thread();
        Box::new(move || tokio_abort_all_scale(&runtime, 1_000))
    }),
    ("scale/tokio_abort_all_1000000", 1_000_000, || {
        let runtime = tokio_current_thread();
        Box::new(move || tokio_abort_all_scale(&runtime, 1_000_000))
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
    // The loop around the checks alone (the same `black_box` and `?` on an
    // `Ok` that is always there): its count, taken from the two above, is
    // what one check costs.
    ("checkpoint/loop_only", CHILDREN, || {
        Box::new(|| {
            let _ = block_on(CancelScope::new().run_typed(async {
                for _ in 0..CHILDREN {
                    black_box(Ok::<(), Cancelled>(()))?;
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
            let _ = black_box(
                runtime
                    .block_on(async { tokio::time::timeout(HOUR, async { black_box(1) }).await }),
            );
        })
    }),
];
