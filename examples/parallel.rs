//! CPU-bound and I/O-bound children across all cores under `hatchery::run`,
//! with one deadline over the whole job:
//!
//! ```text
//! cargo run --release --example parallel
//! ```
//!
//! * a TCP echo server is started with `start()` (its address comes back once
//!   it listens), and 32 clients talk to it concurrently;
//! * the range 1..=3,000,000 is split into chunks counted for primes by
//!   parallel children on the worker threads; each checks for cancellation
//!   every few thousand numbers, so the deadline reaches them too;
//! * everything runs inside `fail_after(10 s)`; when the job is done, the
//!   server is cancelled and the run returns.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_io::Async;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use hatchery::{CancellableExt, Nursery, Started, check_cancelled, fail_after, nursery, run};

const LIMIT: u64 = 3_000_000;
const CHUNKS: u64 = 24;
const CLIENTS: usize = 32;

fn is_prime(n: u64) -> bool {
    n >= 2
        && (2..)
            .take_while(|d| d * d <= n)
            .all(|d| !n.is_multiple_of(d))
}

/// Counts primes in `range`, checking for cancellation as it goes.
fn count_primes(range: std::ops::Range<u64>) -> Result<u64, hatchery::Cancelled> {
    let mut count = 0;
    for n in range {
        if n % 4096 == 0 {
            check_cancelled()?;
        }
        count += u64::from(is_prime(n));
    }
    Ok(count)
}

async fn echo_server(n: Nursery<'_>, status: Started<SocketAddr>) -> hatchery::Result<()> {
    let listener = Async::<TcpListener>::bind(([127, 0, 0, 1], 0))?;
    status.started(listener.get_ref().local_addr()?);
    loop {
        let (mut stream, _) = listener.accept().cancellable().await??;
        n.spawn(async move {
            let mut buf = [0u8; 64];
            loop {
                let read = stream.read(&mut buf).cancellable().await??;
                if read == 0 {
                    return Ok(());
                }
                stream.write_all(&buf[..read]).cancellable().await??;
            }
        });
    }
}

async fn client(addr: SocketAddr, id: usize) -> io::Result<Duration> {
    let start = Instant::now();
    let mut stream = Async::<TcpStream>::connect(addr).cancellable().await??;
    let message = format!("hello from client {id:02}");
    stream.write_all(message.as_bytes()).cancellable().await??;
    let mut reply = vec![0u8; message.len()];
    stream.read_exact(&mut reply).cancellable().await??;
    assert_eq!(reply, message.as_bytes());
    Ok(start.elapsed())
}

fn main() {
    let started = Instant::now();
    let primes = Arc::new(AtomicU64::new(0));
    let echoes = Arc::new(AtomicU64::new(0));
    let (primes_out, echoes_out) = (primes.clone(), echoes.clone());

    let out = run(|n| async move {
        fail_after(Duration::from_secs(10), async {
            // CPU-bound: chunks counted on the worker threads.
            let chunk = LIMIT / CHUNKS;
            for i in 0..CHUNKS {
                let primes = primes.clone();
                n.spawn_parallel(async move {
                    let end = if i + 1 == CHUNKS {
                        LIMIT + 1
                    } else {
                        (i + 1) * chunk
                    };
                    let range = i * chunk..end;
                    primes.fetch_add(count_primes(range)?, Ordering::Relaxed);
                    Ok(())
                });
            }

            // I/O-bound: an echo server and its clients, in a nursery of their own.
            nursery(|io| async move {
                let server = io.clone();
                let addr = io.start(|status| echo_server(server, status)).await?;
                println!("echo server listening on {addr}");
                nursery(|clients| async move {
                    for id in 0..CLIENTS {
                        let echoes = echoes.clone();
                        clients.spawn(async move {
                            client(addr, id).await?;
                            echoes.fetch_add(1, Ordering::Relaxed);
                            Ok(())
                        });
                    }
                    Ok(())
                })
                .await?;
                io.cancel_scope().cancel(); // the clients are done: stop the server
                Ok(())
            })
            .await?;
            Ok(())
        })
        .await
    });

    match out {
        Ok(_) => println!(
            "{} primes up to {LIMIT} (on {} worker threads), {} echoes, in {:?}",
            primes_out.load(Ordering::Relaxed),
            std::thread::available_parallelism().map_or(1, |n| n.get()),
            echoes_out.load(Ordering::Relaxed),
            started.elapsed()
        ),
        Err(error) => {
            eprintln!("the job failed: {error}");
            std::process::exit(1);
        }
    }
}
