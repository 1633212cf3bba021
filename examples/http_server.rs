//! An HTTP/1 server (hyper on tokio) whose connections are supervised
//! children of the root nursery, and which shuts down the way a load
//! balancer expects.
//!
//! ```text
//! cargo run --example http_server --features tokio -- 8080   # 0 (the default) picks a free port
//! curl http://127.0.0.1:8080/          # hello
//! curl http://127.0.0.1:8080/slow      # hello, after 2 s
//! ```
//!
//! Press Ctrl+C and, in this order: the accept loop (the only task that
//! Ctrl+C reaches: the connections are behind a shield) closes the
//! listener, so new connections are refused (those the kernel had already
//! completed, waiting to be accepted, are accepted first and served like
//! the others); then it cancels the connections, and each idle one reads
//! and answers what its client had sent by then (a request already in its
//! socket is not lost), and is asked to stop (hyper's `graceful_shutdown`),
//! which closes the idle ones at once and lets a request in flight finish,
//! for up to `GRACE` (requests pipelined behind that one are not read: the
//! response says `connection: close`, and the client sends them again on a
//! new connection, as HTTP lets it for idempotent requests); then the
//! program exits with status 130. A second Ctrl+C forces the shutdown
//! (shields do not hold against it) and prints the connections still open.
//!
//! (`benches/http.rs` runs this program, and serves the same routes on
//! plain tokio for comparison: hence the few `pub` items.)

use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::io::{self, Read};
use std::mem::MaybeUninit;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hatchery::{Builder, CancelHandle, CancelScope, CancellableExt, Nursery};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// How long a request in flight may take to finish after Ctrl+C. Below the
/// run's grace period (10 s), so that a connection that overruns it is
/// dropped by its own deadline, not by the forced shutdown.
pub const GRACE: Duration = Duration::from_secs(5);

pub fn main() {
    let port: u16 = match std::env::args().nth(1) {
        Some(port) => port.parse().unwrap_or_else(|_| {
            eprintln!("usage: http_server [PORT] (got {port:?}; 0 picks a free port)");
            std::process::exit(2)
        }),
        None => 0,
    };
    let out = Builder::new().tokio().run(|n| async move {
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        println!("listening on {}", listener.local_addr()?);
        // Ctrl+C cancels the root scope.
        let ctrl_c = n.cancel_scope();
        // The accept loop runs on the thread that called `run` (as a
        // plain tokio server's does in `block_on`); the connections are
        // parallel children, on tokio's workers. One that ends wakes
        // nobody (it only counts itself out), and at the shutdown they are
        // told from this thread, so that every worker starts closing them
        // at once. Behind a shield, so that Ctrl+C reaches the connections
        // only through the accept loop, once the listener is closed.
        n.named("server").spawn(async move {
            CancelScope::new()
                .shield(true)
                .run(hatchery::nursery(|connections| {
                    serve(listener, ctrl_c, connections)
                }))
                .await?;
            Ok(())
        });
        Ok(())
    });
    out.expect("the server failed");
}

/// Accepts connections, each a child of `connections`, until `ctrl_c` is
/// cancelled; then closes the listener (new connections are refused),
/// and only then stops the connections.
async fn serve(
    listener: TcpListener,
    ctrl_c: CancelHandle,
    connections: Nursery<'_>,
) -> hatchery::Result<()> {
    let mut interrupted = ctrl_c.cancelled();
    let serve_one = |stream: TcpStream, peer: std::net::SocketAddr| {
        connections
            .named(format!("connection from {peer}"))
            .on_failure(|failure| {
                // One bad connection is logged; the others go on.
                eprintln!("{}: {}", failure.task, failure.error);
                Ok(())
            })
            .spawn_parallel(connection(stream));
    };
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => accepted?,
            () = &mut interrupted => break,
        };
        serve_one(stream, peer);
    }
    // Connections the kernel completed before the close wait in the
    // listener's queue, their requests maybe sent: closing the listener
    // would reset them. Accept those first, asking the kernel (tokio may not
    // have seen them arrive), and serve them like the others.
    let listener = listener.into_std()?;
    loop {
        match listener.accept() {
            Ok((stream, peer)) => {
                stream.set_nonblocking(true)?;
                serve_one(TcpStream::from_std(stream)?, peer);
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
            Err(error) => return Err(error.into()),
        }
    }
    drop(listener);
    connections.cancel_scope().cancel();
    Ok(())
}

/// Serves one connection; asked to stop, it first reads and answers what
/// its client had sent by then, then closes (idle) or finishes the
/// request in flight and closes.
async fn connection(stream: TcpStream) -> hatchery::Result<()> {
    let (socket, read_past_tokio) = Socket::new(stream);
    let connection =
        http1::Builder::new().serve_connection(TokioIo::new(socket), service_fn(route));
    let mut connection = pin!(connection);
    let stopping = AtomicBool::new(false);
    let mut asked = false;
    // The scope is cancelled (the listener is closed by then): rather than
    // being dropped mid-response, the connection is asked to stop.
    // `cancel_gracefully` calls the closure below, then drives it inside a
    // shield for up to GRACE.
    let served = poll_fn(|cx| {
        if stopping.load(Ordering::Relaxed) && !asked {
            // Read what is in the socket now (from the kernel: tokio may
            // not have seen it arrive yet) and answer it...
            read_past_tokio.store(true, Ordering::Relaxed);
            if let Poll::Ready(served) = connection.as_mut().poll(cx) {
                return Poll::Ready(served);
            }
            // ...then stop: an idle connection closes at once, a request
            // in flight is finished first.
            connection.as_mut().graceful_shutdown();
            asked = true;
        }
        connection.as_mut().poll(cx)
    })
    .cancel_gracefully(GRACE, |_| stopping.store(true, Ordering::Relaxed))
    .await?;
    match served {
        // hyper has answered 400 and closed: the client's mistake, not a
        // failure of this server.
        Err(error) if error.is_parse() => {
            println!("rejected a request: {error}");
            Ok(())
        }
        served => Ok(served?),
    }
}

pub async fn route(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(match request.uri().path() {
        "/" => Response::new(Full::from("hello\n")),
        "/slow" => {
            println!("GET /slow: answering in 2 s");
            // Slow work that the shutdown lets finish: after Ctrl+C the
            // connection drains inside the shield of `cancel_gracefully`,
            // where hatchery's awaits do not see the cancellation (the
            // grace period over, or a second Ctrl+C, drops it unanswered).
            match hatchery::sleep(Duration::from_secs(2)).await {
                Ok(()) => Response::new(Full::from("hello, slowly\n")),
                // Only outside that shield (`route` served some other way).
                Err(_) => Response::new(Full::from("cut short\n")),
            }
        }
        _ => {
            let mut response = Response::new(Full::from("not found\n"));
            *response.status_mut() = StatusCode::NOT_FOUND;
            response
        }
    })
}

/// A connection's socket, as hyper reads and writes it. tokio reads a
/// socket only once its reactor has seen data arrive, which under load
/// can be well after the data arrived; so at the shutdown, when a request
/// that arrived before the listener closed must not be mistaken for an
/// idle connection, a read that tokio answers with "not yet" asks the
/// kernel (after the flag returned by [`Socket::new`] is set).
pub struct Socket {
    stream: TcpStream,
    read_past_tokio: Arc<AtomicBool>,
}

impl Socket {
    pub fn new(stream: TcpStream) -> (Socket, Arc<AtomicBool>) {
        let read_past_tokio = Arc::new(AtomicBool::new(false));
        let socket = Socket {
            stream,
            read_past_tokio: Arc::clone(&read_past_tokio),
        };
        (socket, read_past_tokio)
    }
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        if polled.is_pending() && this.read_past_tokio.load(Ordering::Relaxed) {
            // The socket is non-blocking: a look returns at once, saying
            // whether anything is there (tokio wakes the task when more
            // arrives); only then is hyper's buffer made ready to read into.
            let socket = socket2::SockRef::from(&this.stream);
            match socket.peek(&mut [MaybeUninit::uninit()]) {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return polled,
                Err(error) => return Poll::Ready(Err(error)),
                Ok(_) => {}
            }
            match (&*socket).read(buf.initialize_unfilled()) {
                Ok(read) => {
                    buf.advance(read);
                    return Poll::Ready(Ok(()));
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                Err(error) => return Poll::Ready(Err(error)),
            }
        }
        polled
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
