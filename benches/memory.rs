//! Bytes allocated per idle child, beyond the child future's own size,
//! measured with a counting global allocator. Prints a table.
//!
//! ```text
//! cargo bench --bench memory
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::stream::{FuturesUnordered, StreamExt};
use futures_lite::future::block_on;
use hatchery::{Cancelled, Nursery, typed::nursery};

struct Counting;

static ALLOCATED: AtomicUsize = AtomicUsize::new(0);

// The library forbids unsafe code; this bench needs it only to install a
// global allocator, which forwards every call to the system allocator and
// counts the live bytes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        ALLOCATED.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const CHILDREN: usize = 100_000;

fn live() -> usize {
    ALLOCATED.load(Ordering::Relaxed)
}

/// The idle child every row parks: it never wakes and registers nothing, so
/// what is measured is the structure holding it. Its own size is subtracted.
async fn idle_child() -> Result<(), Cancelled> {
    std::future::pending::<()>().await;
    Ok(())
}

fn per_child(total: usize, future_size: usize) -> f64 {
    total as f64 / CHILDREN as f64 - future_size as f64
}

fn main() {
    let future_size = std::mem::size_of_val(&idle_child());
    let mut rows = Vec::new();

    // hatchery inline: poll until every child is parked, measure, then drop
    // the nursery (the children ignore cancellation, so drop is the way out).
    let before = live();
    let mut fut = Box::pin(nursery(|n: Nursery<'_, Cancelled>| async move {
        for _ in 0..CHILDREN {
            n.spawn(idle_child());
        }
        std::future::pending::<()>().await;
        Ok(())
    }));
    block_on(futures::future::poll_fn(|cx| {
        for _ in 0..3 {
            let _ = fut.as_mut().poll(cx);
        }
        std::task::Poll::Ready(())
    }));
    let peak = live() - before;
    drop(fut);
    rows.push(("hatchery (inline)", per_child(peak, future_size)));

    // Parallel children on an async-executor (ticked on this thread, so
    // that every child is polled once and parked): the executor's task,
    // the task handle and identity the nursery keeps in its table, the
    // running child's listener to its scope.
    let executor = async_executor::Executor::new();
    let before = live();
    let mut fut = Box::pin(nursery(|n: Nursery<'_, Cancelled>| {
        let executor = &executor;
        async move {
            for _ in 0..CHILDREN {
                n.spawn_on(executor, idle_child());
            }
            std::future::pending::<()>().await;
            Ok(())
        }
    }));
    block_on(futures::future::poll_fn(|cx| {
        for _ in 0..3 {
            let _ = fut.as_mut().poll(cx);
            while executor.try_tick() {}
        }
        std::task::Poll::Ready(())
    }));
    let peak = live() - before;
    drop(fut);
    while executor.try_tick() {}
    rows.push((
        "hatchery (parallel, async-executor)",
        per_child(peak, future_size),
    ));

    // FuturesUnordered with the same child, run outside any scope (parks forever).
    let before = live();
    block_on(async {
        let mut set = FuturesUnordered::new();
        for _ in 0..CHILDREN {
            set.push(idle_child());
        }
        futures::future::poll_fn(|cx| {
            let _ = set.poll_next_unpin(cx);
            std::task::Poll::Ready(())
        })
        .await;
        rows.push(("FuturesUnordered", per_child(live() - before, future_size)));
    });

    // tokio JoinSet on a current-thread runtime.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        let before = live();
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..CHILDREN {
            set.spawn(idle_child());
        }
        tokio::task::yield_now().await;
        rows.push(("tokio JoinSet", per_child(live() - before, future_size)));
        set.abort_all();
        while set.join_next().await.is_some() {}
    });

    println!(
        "bytes allocated per idle child beyond its future ({future_size} bytes), {CHILDREN} children:"
    );
    println!("| runtime | bytes/child |");
    println!("|---|---|");
    for (name, bytes) in rows {
        println!("| {name} | {bytes:.1} |");
    }
}
