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
//! Press Ctrl+C and, in this order: the accept loop is dropped where it
//! waits, and the listener with it, so new connections are refused; every
//! connection is asked to stop (hyper's `graceful_shutdown`), which closes
//! the idle ones at once and lets a request in flight finish, for up to
//! `GRACE`; then the program exits with status 130. A second Ctrl+C forces
//! the shutdown and prints the connections still open.

use std::convert::Infallible;
use std::time::Duration;

use hatchery::{Builder, CancellableExt};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

/// How long a request in flight may take to finish after Ctrl+C. Below the
/// run's grace period (10 s), so that a connection that overruns it is
/// dropped by its own deadline, not by the forced shutdown.
const GRACE: Duration = Duration::from_secs(5);

fn main() {
    let port: u16 = match std::env::args().nth(1) {
        Some(port) => port.parse().unwrap_or_else(|_| {
            eprintln!("usage: http_server [PORT] (got {port:?}; 0 picks a free port)");
            std::process::exit(2)
        }),
        None => 0,
    };
    // The accept loop never returns a value: only Ctrl+C or an error ends it.
    let out: Result<Option<Infallible>, _> = Builder::new().tokio().run(|n| async move {
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        println!("listening on {}", listener.local_addr()?);
        loop {
            // A foreign await: on Ctrl+C this loop is dropped right here,
            // and the listener with it.
            let (stream, peer) = listener.accept().await?;
            n.named(format!("connection from {peer}"))
                .on_failure(|failure| {
                    // One bad connection is logged; the others go on.
                    eprintln!("{}: {}", failure.task, failure.error);
                    Ok(())
                })
                .spawn_parallel(serve(stream));
        }
    });
    out.expect("the server failed");
}

async fn serve(stream: TcpStream) -> hatchery::Result<()> {
    let connection =
        http1::Builder::new().serve_connection(TokioIo::new(stream), service_fn(route));
    // Ctrl+C asks the connection to stop instead of dropping it mid-response.
    let served = connection
        .cancel_gracefully(GRACE, |connection| connection.graceful_shutdown())
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

async fn route(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(match request.uri().path() {
        "/" => Response::new(Full::from("hello\n")),
        "/slow" => {
            println!("GET /slow: answering in 2 s");
            // hatchery's sleep is fine here: after Ctrl+C the connection
            // drains inside the shield of `cancel_gracefully`, so this
            // request in flight is still answered.
            match hatchery::sleep(Duration::from_secs(2)).await {
                Ok(()) => Response::new(Full::from("hello, slowly\n")),
                // The grace period is over (or a second Ctrl+C): no answer.
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
