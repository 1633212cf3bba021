//! An MPD-style line protocol client that shuts down cleanly on Ctrl+C.
//!
//! ```text
//! cargo run --example protocol_client -- 127.0.0.1:6600 [COMMAND ...]   # default: status currentsong
//! ```
//!
//! The question this answers ("Graceful shutdown of asyncio coroutines"): an
//! asyncio client connects with a timeout and retries, waits for the server's
//! `OK MPD <version>` greeting, then forwards commands from a queue and puts
//! each response on another queue. On Ctrl+C its handler sets a flag, sleeps,
//! stops the loop, and Python prints "Task was destroyed but it is pending!"
//! for the task that was waiting on a queue.
//!
//! Here the connection is a child of the root nursery, started with
//! `start()` so that the commands go out only once the greeting arrived. On
//! SIGINT or SIGTERM every await is a cancellation point: a connect, a
//! greeting or a response still awaited is dropped where it waits; once the
//! greeting has arrived, the connection says `close` and waits for the
//! server to hang up, behind a shield with a 1 s deadline; the program exits
//! with 130 (SIGINT) or 143 (SIGTERM) once no task is left.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use async_channel::{Receiver, Sender};
use async_io::Async;
use futures_lite::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use hatchery::{Builder, CancelScope, CancellableExt, Started, fail_after, sleep, sleep_forever};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(1);

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(addr) = args.next().and_then(|addr| addr.parse::<SocketAddr>().ok()) else {
        eprintln!("usage: protocol_client HOST:PORT [COMMAND ...]  (e.g. 127.0.0.1:6600 status)");
        std::process::exit(2);
    };
    let mut script: Vec<String> = args.collect();
    if script.is_empty() {
        script = vec!["status".into(), "currentsong".into()];
    }
    // exit_on_signal(false): `run` returns after a signal instead of exiting,
    // so that this program decides its exit (and can print its counters).
    let out = Builder::new().exit_on_signal(false).run(|n| async move {
        let (commands, command_queue) = async_channel::unbounded();
        let (response_queue, responses) = async_channel::unbounded();
        let version = n
            .start(|status| connection(addr, status, command_queue, response_queue))
            .await?;
        println!("handshake OK: MPD {version}");
        for command in script {
            commands.send(command).await?;
            let response = responses.recv().await?;
            for line in response.lines() {
                println!("got {line}");
            }
        }
        println!("idle: press Ctrl+C to say goodbye and quit");
        sleep_forever().await?;
        Ok(())
    });
    #[cfg(feature = "test-util")]
    {
        let live = hatchery::testing::live();
        let (tasks, scopes, listeners) = (live.tasks, live.scopes, live.listeners);
        println!("live: {tasks} tasks, {scopes} scopes, {listeners} listeners");
    }
    if let Err(error) = out {
        if let Some(signal) = error.interrupted() {
            std::process::exit(signal.exit_code()); // 130 after SIGINT, 143 after SIGTERM
        }
        eprintln!("protocol_client: {error}");
        std::process::exit(1);
    }
}

/// Connects, waits for the greeting, hands the server's version to
/// `start()`, then serves the command queue until it closes or the scope is
/// cancelled, and says goodbye.
async fn connection(
    addr: SocketAddr,
    status: Started<String>,
    commands: Receiver<String>,
    responses: Sender<String>,
) -> hatchery::Result<()> {
    let stream = connect(addr).await?;
    println!("connected to {addr}");
    let mut reader = BufReader::new(&stream);
    // No session to close before the greeting: a shutdown here drops this
    // task at the read (a foreign await), and dropping the stream closes
    // the socket.
    let greeting = read_line(&mut reader).await?;
    let Some(version) = greeting.strip_prefix("OK MPD ") else {
        let message = format!("{addr} is not an MPD server; it said {greeting:?}");
        return Err(hatchery::Error::msg(message));
    };
    status.started(version.to_owned());
    // `.cancellable()` turns a shutdown into `Err(Cancelled)` here instead
    // of a drop of the whole task, so that the goodbye below still runs. A
    // response still awaited is dropped unread: whoever asked for it is
    // cancelled too, and a server slow to answer must not hold the shutdown.
    // MPD answers commands in order, so `close` after an unanswered one is
    // still understood.
    let served = serve(&mut reader, &stream, &commands, &responses)
        .cancellable()
        .await;
    goodbye(&mut reader).await;
    Ok(served??)
}

async fn serve(
    reader: &mut BufReader<&Async<TcpStream>>,
    mut writer: &Async<TcpStream>,
    commands: &Receiver<String>,
    responses: &Sender<String>,
) -> io::Result<()> {
    while let Ok(command) = commands.recv().await {
        writer.write_all(format!("{command}\n").as_bytes()).await?;
        println!("sent {command}");
        let response = read_response(reader).await?;
        if responses.send(response).await.is_err() {
            break; // nobody waits for responses any more
        }
    }
    Ok(())
}

/// One connection attempt per line on stdout, with a timeout each and a
/// growing pause between them, until one succeeds or the scope is cancelled.
async fn connect(addr: SocketAddr) -> hatchery::Result<Async<TcpStream>> {
    let mut backoff = FIRST_BACKOFF;
    let mut attempt = 1;
    loop {
        println!("connecting to {addr} (attempt {attempt})");
        match fail_after(CONNECT_TIMEOUT, async {
            Ok(Async::<TcpStream>::connect(addr).await?)
        })
        .await
        {
            Ok(stream) => return Ok(stream),
            // A shutdown, not a failed attempt: no retry.
            Err(error) if error.is_cancelled() => return Err(error),
            Err(error) => println!("could not connect: {error}; retrying in {backoff:?}"),
        }
        sleep(backoff).await?;
        backoff = (backoff * 2).min(MAX_BACKOFF);
        attempt += 1;
    }
}

/// Reads an MPD response: lines up to `OK` or `ACK <error>`.
async fn read_response(reader: &mut BufReader<&Async<TcpStream>>) -> io::Result<String> {
    let mut response = Vec::new();
    loop {
        let line = read_line(reader).await?;
        let last = line == "OK" || line.starts_with("ACK ");
        response.push(line);
        if last {
            return Ok(response.join("\n"));
        }
    }
}

async fn read_line(reader: &mut BufReader<&Async<TcpStream>>) -> io::Result<String> {
    // A fresh String each time: futures-lite's `read_line` asserts (in debug
    // builds) that the buffer it is given is empty.
    let mut line = String::new();
    if reader.read_line(&mut line).await? == 0 {
        let message = "the server closed the connection";
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, message));
    }
    Ok(line.trim_end().to_owned())
}

/// Says `close`, then waits for the server to hang up: closing first, with
/// the answer to a command in flight unread, would reset the connection, and
/// a reset can discard the `close` before the server reads it. Behind a
/// shield, since on a shutdown the scope is cancelled by now; with a
/// deadline, so that a server that neither reads nor hangs up cannot hold
/// the shutdown.
async fn goodbye(reader: &mut BufReader<&Async<TcpStream>>) {
    let mut writer = *reader.get_ref();
    let said = CancelScope::new()
        .shield(true)
        .timeout(GOODBYE_TIMEOUT)
        .run(async {
            writer.write_all(b"close\n").await?;
            Ok(futures_lite::io::copy(reader, &mut futures_lite::io::sink()).await?)
        })
        .await;
    match said {
        Ok(Some(_)) => println!("goodbye sent, the server hung up"),
        Ok(None) => println!("goodbye: no hang-up within {GOODBYE_TIMEOUT:?}, closing anyway"),
        Err(error) => println!("goodbye failed: {error}"),
    }
}
