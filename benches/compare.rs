//! hatchery against its unstructured peers, side by side in one run.
//!
//! Every group runs the same workload for every id. Results land in
//! `target/criterion/<group>/<id>/new/estimates.json`; `benches/compare.sh`
//! turns them into one table with ratios.
//!
//! `hatchery_parallel` rows run the children on an async-executor `Executor`
//! driven by 2 worker threads, through `Nursery::spawn_on`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use futures::stream::{FuturesUnordered, StreamExt};
use futures_lite::future::{block_on, yield_now};
use hatchery::{
    CancelScope, Cancelled, Nursery, check_cancelled, typed::move_on_after, typed::nursery,
};

mod common;

use common::{CHILDREN, parallel_executor};
const HOUR: Duration = Duration::from_secs(3600);

fn tokio_current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a tokio runtime")
}

fn spawn_join(c: &mut Criterion) {
    let mut group = c.benchmark_group("spawn_join");
    group.bench_function("hatchery", |b| {
        b.iter(|| {
            block_on(nursery(|n: Nursery<'_, Cancelled>| async move {
                for _ in 0..CHILDREN {
                    n.spawn(async {
                        yield_now().await;
                        Ok(())
                    });
                }
                Ok(())
            }))
            .unwrap()
        })
    });
    group.bench_function("hatchery_parallel", |b| {
        let executor = parallel_executor();
        b.iter(|| common::hatchery_parallel_spawn_join(executor))
    });
    group.bench_function("futures_unordered", |b| {
        b.iter(|| {
            block_on(async {
                let mut set = FuturesUnordered::new();
                for _ in 0..CHILDREN {
                    set.push(async { yield_now().await });
                }
                while set.next().await.is_some() {}
            })
        })
    });
    group.bench_function("future_group", |b| {
        use futures_concurrency::future::FutureGroup;
        b.iter(|| {
            block_on(async {
                let mut group = FutureGroup::new();
                for _ in 0..CHILDREN {
                    group.insert(async { yield_now().await });
                }
                let mut group = std::pin::pin!(group);
                while group.next().await.is_some() {}
            })
        })
    });
    group.bench_function("moro", |b| {
        b.iter(|| {
            block_on(moro::async_scope!(|scope| {
                for _ in 0..CHILDREN {
                    // The child runs whether or not its result is awaited.
                    drop(scope.spawn(async { yield_now().await }));
                }
            }))
        })
    });
    let runtime = tokio_current_thread();
    group.bench_function("tokio_joinset", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let mut set = tokio::task::JoinSet::new();
                for _ in 0..CHILDREN {
                    set.spawn(async { yield_now().await });
                }
                while set.join_next().await.is_some() {}
            })
        })
    });
    group.bench_function("async_executor", |b| {
        let executor = async_executor::LocalExecutor::new();
        b.iter(|| common::local_executor_spawn_join(&executor))
    });
    group.finish();
}

/// Measures, for `iters` rounds, the time from the cancel call until every one
/// of `CHILDREN` parked children has been joined.
fn cancel_idle(c: &mut Criterion) {
    let mut group = c.benchmark_group("cancel_idle");
    group.bench_function("hatchery", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let scope = CancelScope::new();
                let handle = scope.handle();
                let cancelled_at = std::cell::Cell::new(None);
                let at = &cancelled_at;
                block_on(
                    scope.run_typed(nursery(|n: Nursery<'_, Cancelled>| async move {
                        for _ in 0..CHILDREN {
                            n.spawn(async {
                                hatchery::sleep_forever().await?;
                                Ok(())
                            });
                        }
                        // Let every child park, then cancel.
                        yield_now().await;
                        yield_now().await;
                        at.set(Some(Instant::now()));
                        handle.cancel();
                        Ok(())
                    })),
                )
                .unwrap_or(None);
                total += cancelled_at.get().map_or(Duration::ZERO, |at| at.elapsed());
            }
            total
        })
    });
    group.bench_function("hatchery_parallel", |b| {
        let executor = parallel_executor();
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let scope = CancelScope::new();
                let handle = scope.handle();
                let parked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
                let cancelled_at = std::cell::Cell::new(None);
                let at = &cancelled_at;
                block_on(
                    scope.run_typed(nursery(|n: Nursery<'_, Cancelled>| async move {
                        for _ in 0..CHILDREN {
                            let parked = parked.clone();
                            n.spawn_on(executor, async move {
                                parked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                hatchery::sleep_forever().await?;
                                Ok(())
                            });
                        }
                        // Wait until every child is parked on a worker, then cancel.
                        while parked.load(std::sync::atomic::Ordering::Relaxed) < CHILDREN {
                            yield_now().await;
                        }
                        at.set(Some(Instant::now()));
                        handle.cancel();
                        Ok(())
                    })),
                )
                .unwrap_or(None);
                total += cancelled_at.get().map_or(Duration::ZERO, |at| at.elapsed());
            }
            total
        })
    });
    let runtime = tokio_current_thread();
    group.bench_function("tokio_token_joinset", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let root = tokio_util::sync::CancellationToken::new();
                    let mut set = tokio::task::JoinSet::new();
                    for _ in 0..CHILDREN {
                        let token = root.child_token();
                        set.spawn(async move { token.cancelled().await });
                    }
                    tokio::task::yield_now().await;
                    tokio::task::yield_now().await;
                    let start = Instant::now();
                    root.cancel();
                    while set.join_next().await.is_some() {}
                    total += start.elapsed();
                }
                total
            })
        })
    });
    group.bench_function("tokio_abort_all", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let mut set = tokio::task::JoinSet::new();
                    for _ in 0..CHILDREN {
                        set.spawn(std::future::pending::<()>());
                    }
                    tokio::task::yield_now().await;
                    tokio::task::yield_now().await;
                    let start = Instant::now();
                    set.abort_all();
                    while set.join_next().await.is_some() {}
                    total += start.elapsed();
                }
                total
            })
        })
    });
    group.finish();
}

/// 10,000 children parked in a future that never consults hatchery (a
/// foreign await); the time from the cancel until all are joined. hatchery
/// drops them where they wait; tokio aborts them.
fn cancel_foreign(c: &mut Criterion) {
    let mut group = c.benchmark_group("cancel_foreign");
    group.bench_function("hatchery", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let scope = CancelScope::new();
                let handle = scope.handle();
                let cancelled_at = std::cell::Cell::new(None);
                let at = &cancelled_at;
                block_on(
                    scope.run_typed(nursery(|n: Nursery<'_, Cancelled>| async move {
                        for _ in 0..CHILDREN {
                            n.spawn(async {
                                std::future::pending::<()>().await;
                                Ok(())
                            });
                        }
                        // Let every child park, then cancel.
                        yield_now().await;
                        yield_now().await;
                        at.set(Some(Instant::now()));
                        handle.cancel();
                        hatchery::checkpoint().await?;
                        Ok(())
                    })),
                )
                .unwrap_or(None);
                total += cancelled_at.get().map_or(Duration::ZERO, |at| at.elapsed());
            }
            total
        })
    });
    let runtime = tokio_current_thread();
    group.bench_function("tokio_abort_all", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let mut set = tokio::task::JoinSet::new();
                    for _ in 0..CHILDREN {
                        set.spawn(std::future::pending::<()>());
                    }
                    tokio::task::yield_now().await;
                    tokio::task::yield_now().await;
                    let start = Instant::now();
                    set.abort_all();
                    while set.join_next().await.is_some() {}
                    total += start.elapsed();
                }
                total
            })
        })
    });
    group.finish();
}

/// Enters `depth` nested scopes and runs `body` inside the innermost.
fn in_nested_scopes(depth: usize, body: impl FnOnce()) {
    fn nest<'a>(
        depth: usize,
        body: Box<dyn FnOnce() + 'a>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), Cancelled>> + 'a>> {
        Box::pin(async move {
            if depth == 0 {
                body();
                return Ok(());
            }
            CancelScope::new().run_typed(nest(depth - 1, body)).await?;
            Ok(())
        })
    }
    block_on(nest(depth, Box::new(body))).unwrap();
}

fn checkpoint(c: &mut Criterion) {
    let mut group = c.benchmark_group("checkpoint");
    for (id, depth) in [("hatchery_depth1", 1), ("hatchery_depth1000", 1000)] {
        group.bench_function(id, |b| {
            in_nested_scopes(depth, || b.iter(|| black_box(check_cancelled()).is_err()));
        });
    }
    group.bench_function("tokio_is_cancelled", |b| {
        let root = tokio_util::sync::CancellationToken::new();
        let token = root.child_token();
        b.iter(|| black_box(&token).is_cancelled())
    });
    group.finish();
}

fn timeout_scope(c: &mut Criterion) {
    let mut group = c.benchmark_group("timeout_scope");
    group.bench_function("hatchery_move_on_after", |b| {
        b.iter(|| {
            block_on(move_on_after(HOUR, async {
                Ok::<_, Cancelled>(black_box(1))
            }))
        })
    });
    let runtime = tokio_current_thread();
    group.bench_function("tokio_timeout", |b| {
        b.iter(|| {
            runtime.block_on(async { tokio::time::timeout(HOUR, async { black_box(1) }).await })
        })
    });
    group.bench_function("async_io_timer", |b| {
        use futures_lite::FutureExt;
        b.iter(|| {
            block_on(async { Some(black_box(1)) }.or(async {
                async_io::Timer::after(HOUR).await;
                None
            }))
        })
    });
    group.finish();
}

fn nested_tree(c: &mut Criterion) {
    let mut group = c.benchmark_group("nested_tree");
    group.bench_function("hatchery", |b| {
        b.iter(|| {
            block_on(nursery(|n: Nursery<'_, Cancelled>| async move {
                for _ in 0..10 {
                    n.spawn(async {
                        nursery(|n: Nursery<'_, Cancelled>| async move {
                            for _ in 0..10 {
                                n.spawn(async {
                                    nursery(|n: Nursery<'_, Cancelled>| async move {
                                        for _ in 0..10 {
                                            n.spawn(async { Ok(()) });
                                        }
                                        Ok(())
                                    })
                                    .await?;
                                    Ok(())
                                });
                            }
                            Ok(())
                        })
                        .await?;
                        Ok(())
                    });
                }
                Ok(())
            }))
            .unwrap()
        })
    });
    let runtime = tokio_current_thread();
    group.bench_function("tokio_joinset", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let mut top = tokio::task::JoinSet::new();
                for _ in 0..10 {
                    top.spawn(async {
                        let mut middle = tokio::task::JoinSet::new();
                        for _ in 0..10 {
                            middle.spawn(async {
                                let mut leaves = tokio::task::JoinSet::new();
                                for _ in 0..10 {
                                    leaves.spawn(async {});
                                }
                                while leaves.join_next().await.is_some() {}
                            });
                        }
                        while middle.join_next().await.is_some() {}
                    });
                }
                while top.join_next().await.is_some() {}
            })
        })
    });
    group.finish();
}

fn scale(c: &mut Criterion) {
    let mut group = c.benchmark_group("scale");
    group.sample_size(10);
    for n in [1_000usize, 10_000, 100_000, 1_000_000] {
        group.throughput(criterion::Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("hatchery", n), &n, |b, &n| {
            b.iter(|| common::scale(n))
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    spawn_join,
    cancel_idle,
    cancel_foreign,
    checkpoint,
    timeout_scope,
    nested_tree,
    scale
);
criterion_main!(benches);
