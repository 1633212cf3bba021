//! HTTP/1 on loopback: what the structure of `examples/http_server.rs`
//! costs against the same hyper service on plain tokio.
//!
//! * `http_keepalive`: `CONNECTIONS` keep-alive connections, each sending
//!   `REQUESTS_PER_CONNECTION` requests one after another, from raw clients
//!   on a current-thread tokio runtime in this process. criterion's
//!   throughput is requests per second. Rows: `hatchery` (a supervised,
//!   named child per connection in the root nursery of
//!   `Builder::new().tokio().run`, each connection under
//!   `cancel_gracefully`), `tokio_spawn` (`tokio::spawn` per connection,
//!   no shutdown at all) and `tokio_tracker` (`TaskTracker` and a
//!   `CancellationToken`, which is what plain tokio needs for the
//!   shutdown hatchery gives).
//! * `http_shutdown`: `IDLE_CONNECTIONS` keep-alive connections that each
//!   made one request and sit idle; the time from the cancel to the
//!   server's return (every connection closed, every task ended, the
//!   runtime let go). Rows: `hatchery` (cancel the root scope) and
//!   `tokio_tracker` (cancel the token, close and wait for the tracker).
//!
//! Every server runs on a tokio runtime with `SERVER_THREADS` workers, its
//! accept loop on a thread of its own (as `run` does). Run with
//! `cargo bench --features tokio --bench http`; `HTTP_BENCH_REVERSE=1`
//! measures the rows in the opposite order, so that runs can alternate.
//! `http_keepalive` also prints the server's CPU time per request (every
//! thread but the clients'), which what else runs on the machine moves
//! less than it moves wall time.
//!
//! Measured on the shared 2-core VM (release, three runs alternating the
//! order of the rows, another build running beside them, load 0.7 to
//! 2.3), hatchery / peer: `http_keepalive` requests per second 0.88,
//! 1.05 and 1.01 of `tokio_spawn` (server CPU per request 1.10, 0.98 and
//! 1.01), 0.81, 0.73 and 0.99 of `tokio_tracker` (CPU 1.18, 0.99, 1.05);
//! `http_shutdown` time 1.17, 1.18 and 1.18 of `tokio_tracker` (14.0 to
//! 22.0 ms against 11.8 to 18.6 ms for 1,000 idle connections).

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use hatchery::{Builder, CancellableExt};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const CONNECTIONS: usize = 50;
const REQUESTS_PER_CONNECTION: usize = 100;
const IDLE_CONNECTIONS: usize = 1_000;
const SERVER_THREADS: usize = 2;
/// How long a connection may take to finish after the shutdown began
/// (never reached here: every connection is idle or done).
const GRACE: Duration = Duration::from_secs(5);
const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";

async fn hello(_: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::new(Full::from("hello\n")))
}

/// Starts a server, once it listens.
type StartServer = fn() -> Server;

/// A server on a thread of its own.
struct Server {
    addr: SocketAddr,
    stop: Box<dyn FnOnce() + Send>,
    thread: JoinHandle<()>,
}

impl Server {
    /// Tells the server to stop, and waits until it has returned.
    fn stop(self) {
        (self.stop)();
        self.thread.join().expect("the server thread panicked");
    }
}

/// The structure of `examples/http_server.rs`: the accept loop is the
/// root nursery's body; each connection a named child, supervised, on
/// tokio's workers, stopped by hyper's graceful shutdown.
fn hatchery_server() -> Server {
    let (ready, addr) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        let out: Result<Option<Infallible>, _> = Builder::new()
            .tokio()
            .worker_threads(SERVER_THREADS)
            .handle_signals(false)
            .run(|n| async move {
                let listener = TcpListener::bind("127.0.0.1:0").await?;
                let _ = ready.send((listener.local_addr()?, n.cancel_scope()));
                loop {
                    let (stream, peer) = listener.accept().await?;
                    n.named(format!("connection from {peer}"))
                        .on_failure(|failure| {
                            eprintln!("{}: {}", failure.task, failure.error);
                            Ok(())
                        })
                        .spawn_parallel(async move {
                            http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service_fn(hello))
                                .cancel_gracefully(GRACE, |c| c.graceful_shutdown())
                                .await??;
                            Ok(())
                        });
                }
            });
        // Stopped by cancelling the root scope, which catches it.
        assert!(
            matches!(out, Ok(None)),
            "the hatchery server failed: {out:?}"
        );
    });
    let (addr, scope) = addr.recv().expect("the hatchery server started");
    Server {
        addr,
        stop: Box::new(move || scope.cancel()),
        thread,
    }
}

fn server_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(SERVER_THREADS)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Plain tokio: `tokio::spawn` per connection, nothing to stop them.
fn tokio_spawn_server() -> Server {
    let stop = CancellationToken::new();
    let token = stop.clone();
    let (ready, addr) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        let runtime = server_runtime();
        runtime.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let _ = ready.send(listener.local_addr().expect("local_addr"));
            loop {
                let (stream, peer) = tokio::select! {
                    accepted = listener.accept() => accepted.expect("accept"),
                    () = token.cancelled() => break,
                };
                tokio::spawn(async move {
                    let connection = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service_fn(hello));
                    if let Err(error) = connection.await {
                        eprintln!("connection from {peer}: {error}");
                    }
                });
            }
        });
        runtime.shutdown_background();
    });
    Server {
        addr: addr.recv().expect("the tokio server started"),
        stop: Box::new(move || stop.cancel()),
        thread,
    }
}

/// Plain tokio with a graceful shutdown: a `CancellationToken` every
/// connection listens to, and a `TaskTracker` to wait for them.
fn tokio_tracker_server() -> Server {
    let stop = CancellationToken::new();
    let token = stop.clone();
    let (ready, addr) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        let runtime = server_runtime();
        runtime.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let _ = ready.send(listener.local_addr().expect("local_addr"));
            let tracker = TaskTracker::new();
            loop {
                let (stream, peer) = tokio::select! {
                    accepted = listener.accept() => accepted.expect("accept"),
                    () = token.cancelled() => break,
                };
                let token = token.clone();
                tracker.spawn(async move {
                    let connection = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service_fn(hello));
                    let mut connection = std::pin::pin!(connection);
                    let served = tokio::select! {
                        served = connection.as_mut() => served,
                        () = token.cancelled() => {
                            connection.as_mut().graceful_shutdown();
                            match tokio::time::timeout(GRACE, connection).await {
                                Ok(served) => served,
                                Err(_) => return,
                            }
                        }
                    };
                    if let Err(error) = served {
                        eprintln!("connection from {peer}: {error}");
                    }
                });
            }
            drop(listener);
            tracker.close();
            tracker.wait().await;
        });
        runtime.shutdown_background();
    });
    Server {
        addr: addr.recv().expect("the tokio server started"),
        stop: Box::new(move || stop.cancel()),
        thread,
    }
}

fn client_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Reads one response (headers and `Content-Length` body) into `buffer`.
async fn read_response(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> io::Result<()> {
    buffer.clear();
    loop {
        if let Some(end) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
            let length = content_length(&buffer[..end])?;
            while buffer.len() < end + 4 + length {
                if stream.read_buf(buffer).await? == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
            }
            return Ok(());
        }
        if stream.read_buf(buffer).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
}

fn content_length(head: &[u8]) -> io::Result<usize> {
    let head = std::str::from_utf8(head).map_err(io::Error::other)?;
    head.lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .ok_or_else(|| io::Error::other("a response without Content-Length"))
}

/// Connects and makes `requests` requests, one after another.
async fn keep_alive(addr: SocketAddr, requests: usize) -> io::Result<TcpStream> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut buffer = Vec::with_capacity(256);
    for _ in 0..requests {
        stream.write_all(REQUEST).await?;
        read_response(&mut stream, &mut buffer).await?;
    }
    Ok(stream)
}

/// `connections` clients at once, `requests` each; returns the open
/// connections.
async fn clients(addr: SocketAddr, connections: usize, requests: usize) -> Vec<TcpStream> {
    let mut clients = JoinSet::new();
    for _ in 0..connections {
        clients.spawn(keep_alive(addr, requests));
    }
    let mut streams = Vec::with_capacity(connections);
    while let Some(client) = clients.join_next().await {
        streams.push(client.expect("a client task").expect("a client's requests"));
    }
    streams
}

/// Every connection was closed by the server (it reads end of file).
async fn expect_closed(streams: Vec<TcpStream>) {
    for mut stream in streams {
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest));
        match read.await {
            Ok(Ok(0)) => {}
            other => panic!("a connection was not closed cleanly: {other:?}"),
        }
    }
}

/// The servers in the order to measure them: as listed, or reversed with
/// `HTTP_BENCH_REVERSE=1`, so that runs can alternate which side goes
/// first.
fn in_order<const N: usize>(mut servers: [(&str, StartServer); N]) -> [(&str, StartServer); N] {
    if std::env::var_os("HTTP_BENCH_REVERSE").is_some_and(|value| value == "1") {
        servers.reverse();
    }
    servers
}

/// CPU time of every thread of this process but the calling one (which
/// runs the clients): the server's, on Linux (`/proc/self/task/*/schedstat`,
/// nanoseconds on CPU). Less sensitive than wall time to what else runs
/// on the machine. `None` where `/proc` does not say.
fn server_cpu() -> Option<Duration> {
    let me = std::fs::read_link("/proc/thread-self").ok()?;
    let me = me.file_name()?.to_owned();
    let mut total = 0;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let task = task.ok()?;
        if task.file_name() == me {
            continue;
        }
        // A thread that exited meanwhile has nothing more to count.
        let Ok(stat) = std::fs::read_to_string(task.path().join("schedstat")) else {
            continue;
        };
        total += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(Duration::from_nanos(total))
}

fn keepalive(c: &mut Criterion) {
    const REQUESTS: usize = CONNECTIONS * REQUESTS_PER_CONNECTION;
    let client = client_runtime();
    let mut group = c.benchmark_group("http_keepalive");
    group
        .throughput(Throughput::Elements(REQUESTS as u64))
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    let servers = in_order([
        ("hatchery", hatchery_server),
        ("tokio_spawn", tokio_spawn_server),
        ("tokio_tracker", tokio_tracker_server),
    ]);
    for (name, start) in servers {
        let server = start();
        let (mut cpu, mut requests) = (Some(Duration::ZERO), 0);
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let cpu_before = server_cpu();
                let start = Instant::now();
                for _ in 0..iters {
                    client.block_on(clients(server.addr, CONNECTIONS, REQUESTS_PER_CONNECTION));
                }
                let took = start.elapsed();
                cpu = cpu
                    .zip(server_cpu().zip(cpu_before))
                    .map(|(sum, (after, before))| sum + after.saturating_sub(before));
                requests += iters as usize * REQUESTS;
                took
            })
        });
        server.stop();
        if let Some(cpu) = cpu {
            let per_request = cpu.as_secs_f64() * 1e6 / requests as f64;
            println!("http_keepalive/{name}: server CPU {per_request:.2} µs per request");
        }
    }
    group.finish();
}

fn shutdown(c: &mut Criterion) {
    let client = client_runtime();
    let mut group = c.benchmark_group("http_shutdown");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(5));
    let servers = in_order([
        ("hatchery", hatchery_server),
        ("tokio_tracker", tokio_tracker_server),
    ]);
    for (name, start) in servers {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut took = Duration::ZERO;
                for _ in 0..iters {
                    let server = start();
                    let idle = client.block_on(clients(server.addr, IDLE_CONNECTIONS, 1));
                    let cancelled = Instant::now();
                    server.stop();
                    took += cancelled.elapsed();
                    client.block_on(expect_closed(idle));
                }
                took
            })
        });
    }
    group.finish();
}

criterion_group!(benches, keepalive, shutdown);
criterion_main!(benches);
