//! A TCP echo server on 127.0.0.1: each connection is a child of a nursery.
//! Press Ctrl+C: the server stops accepting, each open connection finishes
//! the message in flight (within the grace period), says goodbye and closes;
//! the server prints how many connections it served and closed, and exits
//! with status 130.
//!
//! ```text
//! cargo run --example echo_server -- 7000     # 0 (the default) picks a free port
//! nc 127.0.0.1 7000                           # type lines, they come back
//! ```

use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_io::Async;
use futures_lite::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use hatchery::{CancelScope, CancellableExt, Cancelled, nursery, run};

fn main() {
    let port: u16 = match std::env::args().nth(1) {
        Some(port) => port.parse().unwrap_or_else(|_| {
            eprintln!("usage: echo_server [PORT] (got {port:?}; 0 picks a free port)");
            std::process::exit(2)
        }),
        None => 0,
    };
    let served = AtomicUsize::new(0);
    let closed = AtomicUsize::new(0);
    let (served, closed) = (&served, &closed);
    let out = run(|_root| async move {
        let listener = Async::<TcpListener>::bind(([127, 0, 0, 1], port))?;
        println!("listening on {}", listener.get_ref().local_addr()?);
        // The accept loop owns the listener: it closes the moment accepting
        // stops, so that a client connecting during the shutdown is refused
        // at once instead of queued and then reset.
        let result = nursery(move |n| async move {
            loop {
                // Accepting is where a shutdown stops the server.
                let Ok(accepted) = listener.accept().cancellable().await else {
                    drop(listener);
                    println!("shutting down: no longer accepting");
                    return Ok(());
                };
                let (stream, peer) = accepted?;
                served.fetch_add(1, Ordering::Relaxed);
                n.named(format!("connection from {peer}"))
                    .spawn(async move { serve(stream, closed).await });
            }
        })
        .await;
        // Every connection has finished here: the nursery waited for them.
        println!(
            "served {} connections, closed {} at shutdown",
            served.load(Ordering::Relaxed),
            closed.load(Ordering::Relaxed)
        );
        result?;
        Ok(())
    });
    out.expect("the server failed");
}

async fn serve(stream: Async<TcpStream>, closed: &AtomicUsize) -> hatchery::Result<()> {
    let mut reader = BufReader::new(&stream);
    let mut writer = &stream;
    loop {
        // Idle between messages: a shutdown closes the connection here.
        let eof = match reader.fill_buf().cancellable().await {
            Ok(buffered) => buffered?.is_empty(),
            Err(Cancelled) => {
                // In a cancelled scope every await is a cancellation point:
                // the goodbye goes behind a shield, with a deadline of its
                // own so that a client that stopped reading cannot hold the
                // shutdown.
                // Then a lingering close: what the client still sends is
                // read and dropped until it hangs up too, because closing a
                // socket with unread input resets it, and a reset can
                // destroy the goodbye before the client reads it.
                CancelScope::new()
                    .shield(true)
                    .timeout(Duration::from_secs(1))
                    .run(async {
                        writer.write_all(b"server shutting down, bye\n").await?;
                        stream.get_ref().shutdown(std::net::Shutdown::Write)?;
                        let mut rest = [0; 1024];
                        while futures_lite::AsyncReadExt::read(&mut reader, &mut rest).await? > 0 {}
                        Ok(())
                    })
                    .await?;
                closed.fetch_add(1, Ordering::Relaxed);
                return Err(Cancelled.into());
            }
        };
        if eof {
            return Ok(()); // the client hung up
        }
        // A message is in flight: finish it even during a shutdown, within
        // five seconds (and the grace period).
        CancelScope::new()
            .shield(true)
            .timeout(Duration::from_secs(5))
            .run(async {
                let mut line = String::new();
                reader.read_line(&mut line).await?;
                writer.write_all(line.as_bytes()).await?;
                Ok(())
            })
            .await?;
    }
}
