//! `examples/http_server.rs` as a real process under real load: raw
//! HTTP/1.1 keep-alive clients on threads, a real SIGINT sent with `kill`,
//! and the server judged by what its clients received, its exit status and
//! its stderr.
//!
//! What a client may see at the shutdown: whole responses to every
//! request it sent before the listener closed, then its connection closed
//! between two requests. A request sent after the listener closed may meet
//! its connection closing (the server reads nothing more once it has
//! stopped): it may then see the connection closed before the first byte
//! of a response, the case HTTP/1.1 tells clients to retry (RFC 9112,
//! 9.3.1), or reset, when it reached the server's socket just before it
//! closed. The test knows when the listener closed to within one
//! connection attempt (it tries to connect, without pause, from the signal
//! on): a request written before the last attempt that got through was
//! sent while the listener was open, and must be answered in full; one
//! written in the gap between that attempt and the first refusal cannot be
//! placed, and is allowed either way. A response cut short is never
//! allowed.
//!
//! A process started in the background by a script inherits SIGINT as
//! ignored, and hatchery leaves an ignored signal alone; so the server is
//! started through `env --default-signal` where it exists.
#![cfg(unix)]

use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Long enough for a debug build on a loaded two-core machine; a test that
/// waits this long has failed.
const PATIENCE: Duration = Duration::from_secs(60);

/// Keep-alive clients hammering `/`.
const CLIENTS: usize = 50;

/// How long one attempt to connect may take while the listener is watched
/// after the signal (`watch_listener`): on loopback a connection is
/// accepted or refused in microseconds, unless the SYN was dropped.
const ATTEMPT: Duration = Duration::from_millis(20);

/// Requests on `/slow` in flight when the signal arrives.
const SLOW: usize = 5;

/// A bound on each client's loop, so that the load stops by itself even if
/// the server never shuts down.
const MAX_REQUESTS_PER_CLIENT: usize = 100_000;

const HELLO: &[u8] = b"hello\n";
const SLOW_HELLO: &[u8] = b"hello, slowly\n";

/// The example, built with the features this test was built with (among
/// them `tokio`, which the example requires).
fn server_binary() -> &'static PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let features: Vec<&str> = [
            ("test-util", cfg!(feature = "test-util")),
            ("tokio", cfg!(feature = "tokio")),
            ("tracing", cfg!(feature = "tracing")),
        ]
        .into_iter()
        .filter_map(|(name, on)| on.then_some(name))
        .collect();
        let exe = std::env::current_exe().expect("current_exe");
        let profile_dir = exe
            .parent()
            .and_then(|deps| deps.parent())
            .expect("target/<profile>/deps");
        let profile = match profile_dir.file_name().and_then(|name| name.to_str()) {
            Some("debug") | None => "dev",
            Some(name) => name,
        };
        // Always built: `cargo test --test http_server` does not build
        // examples, and a binary left from an older build would be tested.
        let status = Command::new(env!("CARGO"))
            .args(["build", "--example", "http_server", "--profile", profile])
            .arg("--features")
            .arg(features.join(","))
            .status()
            .expect("run cargo build --example http_server");
        assert!(status.success(), "could not build examples/http_server");
        profile_dir.join("examples").join("http_server")
    })
}

struct Server {
    child: Child,
    addr: SocketAddr,
    lines: mpsc::Receiver<String>,
    stdout: Vec<String>,
    errors: mpsc::Receiver<String>,
    stderr: Vec<String>,
    exited: bool,
}

impl Server {
    fn start() -> Server {
        let env_resets = Command::new("env")
            .args(["--default-signal=INT,TERM", "true"])
            .status()
            .is_ok_and(|status| status.success());
        let mut command = if env_resets {
            let mut command = Command::new("env");
            command
                .arg("--default-signal=INT,TERM")
                .arg(server_binary());
            command
        } else {
            Command::new(server_binary())
        };
        let mut child = command
            .arg("0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the server");
        let lines = read_lines(child.stdout.take().expect("piped stdout"));
        let errors = read_lines(child.stderr.take().expect("piped stderr"));
        let mut server = Server {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            lines,
            stdout: Vec::new(),
            errors,
            stderr: Vec::new(),
            exited: false,
        };
        let line = server.expect_line("listening on ");
        server.addr = line
            .trim_start_matches("listening on ")
            .trim()
            .parse()
            .expect("an address after `listening on`");
        server
    }

    /// Waits for a stdout line containing `needle`; returns it.
    fn expect_line(&mut self, needle: &str) -> String {
        expect_line(&self.lines, &mut self.stdout, needle, "stdout")
    }

    /// Waits for a stderr line containing `needle`; returns it.
    fn expect_error(&mut self, needle: &str) -> String {
        expect_line(&self.errors, &mut self.stderr, needle, "stderr")
    }

    fn kill(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for the exit; returns the status, all of stdout and stderr.
    fn finish(mut self) -> (ExitStatus, Vec<String>, String) {
        let deadline = Instant::now() + PATIENCE;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not exit; stdout:\n{}",
                self.stdout.join("\n")
            );
            std::thread::sleep(Duration::from_millis(5));
        };
        self.exited = true;
        // Both pipes end with the process: read them to the end.
        self.stdout.extend(self.lines.iter());
        self.stderr.extend(self.errors.iter());
        let stderr = self.stderr.iter().map(|line| format!("{line}\n")).collect();
        (status, std::mem::take(&mut self.stdout), stderr)
    }
}

/// The lines of `pipe`, as they come.
fn read_lines(pipe: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (send, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if send.send(line).is_err() {
                break;
            }
        }
    });
    lines
}

/// Waits for a line containing `needle` on `lines`, keeping every line
/// read in `seen`; returns it.
fn expect_line(
    lines: &mpsc::Receiver<String>,
    seen: &mut Vec<String>,
    needle: &str,
    name: &str,
) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                seen.push(line.clone());
                if line.contains(needle) {
                    return line;
                }
            }
            Err(_) => panic!(
                "no line containing {needle:?}; {name} so far:\n{}",
                seen.join("\n")
            ),
        }
    }
}

impl Drop for Server {
    /// A failed test does not leave the server running.
    fn drop(&mut self) {
        if !self.exited {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What one request got.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    /// A whole response: status line, headers, and `Content-Length` bytes
    /// of body.
    Response {
        status: u16,
        body: Vec<u8>,
        /// The server announced `connection: close`.
        close: bool,
    },
    /// The connection was closed before the first byte of a response:
    /// the request could not be written (the server had closed the
    /// connection), or the server closed it without reading the request.
    /// HTTP/1.1 calls this a closed idle connection, which a client may
    /// retry (RFC 9112, 9.3.1).
    Closed,
    /// The connection was reset before the first byte of a response.
    Reset,
    /// Anything else: an error, a response cut short. Never acceptable.
    Broken(String),
}

fn connect(addr: SocketAddr) -> io::Result<BufReader<TcpStream>> {
    let stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(PATIENCE))?;
    stream.set_nodelay(true)?;
    Ok(BufReader::new(stream))
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").into_bytes()
}

/// Writes `request`, reads one response.
fn exchange(connection: &mut BufReader<TcpStream>, request: &[u8]) -> Outcome {
    match send(connection, request) {
        Ok(()) => read_response(connection),
        Err(outcome) => outcome,
    }
}

fn send(connection: &mut BufReader<TcpStream>, request: &[u8]) -> Result<(), Outcome> {
    connection.get_mut().write_all(request).map_err(|error| {
        // Written after the server had closed the connection (and its
        // kernel answered with a reset): nothing of this request was read.
        match error.kind() {
            ErrorKind::BrokenPipe | ErrorKind::ConnectionReset => Outcome::Closed,
            _ => Outcome::Broken(format!("writing the request: {error}")),
        }
    })
}

fn read_response(connection: &mut BufReader<TcpStream>) -> Outcome {
    let mut status_line = String::new();
    match connection.read_line(&mut status_line) {
        Ok(0) => return Outcome::Closed,
        Ok(_) => {}
        Err(error) if error.kind() == ErrorKind::ConnectionReset => return Outcome::Reset,
        Err(error) => return Outcome::Broken(format!("before the response: {error}")),
    }
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok());
    let Some(status) = status.filter(|_| status_line.ends_with("\r\n")) else {
        return Outcome::Broken(format!("status line {status_line:?}"));
    };
    let (mut length, mut close) = (None, false);
    loop {
        let mut header = String::new();
        match connection.read_line(&mut header) {
            Ok(_) if header == "\r\n" => break,
            Ok(_) if header.ends_with("\r\n") => {}
            Ok(_) => return Outcome::Broken(format!("cut in the headers: {header:?}")),
            Err(error) => return Outcome::Broken(format!("in the headers: {error}")),
        }
        let header = header.to_ascii_lowercase();
        if let Some(value) = header.strip_prefix("content-length:") {
            length = value.trim().parse::<usize>().ok();
        }
        if header.trim_end() == "connection: close" {
            close = true;
        }
    }
    let Some(length) = length else {
        return Outcome::Broken("no Content-Length".to_owned());
    };
    let mut body = vec![0; length];
    if let Err(error) = connection.read_exact(&mut body) {
        return Outcome::Broken(format!("cut in the body: {error}"));
    }
    Outcome::Response {
        status,
        body,
        close,
    }
}

/// What one keep-alive client saw, in order.
#[derive(Debug)]
struct ClientLog {
    /// Whole `200 hello` responses.
    hellos: usize,
    /// How its connection ended: `Closed` (or `Reset`) unless something
    /// broke.
    end: Outcome,
    /// When it saw the end.
    ended_at: Instant,
    /// When the last request was written, if the connection was closed or
    /// reset after it was written and before any byte of its response.
    unanswered: Option<Instant>,
}

/// Sends `GET /` on one keep-alive connection until the server closes it,
/// counting whole responses in `progress`.
fn hammer(addr: SocketAddr, progress: Arc<AtomicUsize>) -> ClientLog {
    let mut hellos = 0;
    let mut unanswered = None;
    let request = get("/");
    let end = match connect(addr) {
        Err(error) => Outcome::Broken(format!("connect: {error}")),
        Ok(mut connection) => loop {
            if hellos == MAX_REQUESTS_PER_CLIENT {
                break Outcome::Broken("the server never closed the connection".to_owned());
            }
            // A request that cannot be written was not sent: the server
            // had closed the connection before.
            if let Err(outcome) = send(&mut connection, &request) {
                break outcome;
            }
            let written = Instant::now();
            match read_response(&mut connection) {
                Outcome::Response {
                    status: 200,
                    body,
                    close,
                } if body == HELLO => {
                    hellos += 1;
                    progress.fetch_add(1, Ordering::SeqCst);
                    if close {
                        // The server answered, and said it closes: a client
                        // sends nothing more on this connection.
                        break Outcome::Closed;
                    }
                }
                outcome @ (Outcome::Closed | Outcome::Reset) => {
                    unanswered = Some(written);
                    break outcome;
                }
                other => break other,
            }
        },
    };
    ClientLog {
        hellos,
        end,
        ended_at: Instant::now(),
        unanswered,
    }
}

/// When the listener closed, as a client sees it: tries to connect, without
/// pause, from now on. Returns when the last attempt that got through
/// started (the listener was open at some moment after that), or
/// `signalled` (when it was still open) if none did, and when the first
/// refusal came (it was closed by then).
fn watch_listener(addr: SocketAddr, signalled: Instant) -> (Instant, Instant) {
    let start = Instant::now();
    let mut open_at = signalled;
    loop {
        let attempt = Instant::now();
        match TcpStream::connect_timeout(&addr, ATTEMPT) {
            // Closed at once: the server may serve it, close it as idle,
            // or reset it (Linux resets the connections still queued on a
            // listener when it closes); either way it sent nothing.
            Ok(_) => open_at = attempt,
            // Refused; or reset, which a connection being made as the
            // listener closes may be: closed either way.
            Err(error)
                if matches!(
                    error.kind(),
                    ErrorKind::ConnectionRefused | ErrorKind::ConnectionReset
                ) =>
            {
                return (open_at, Instant::now());
            }
            // Unanswered (a SYN the kernel dropped, to be sent again in a
            // second): this attempt tells nothing; the next one may.
            Err(error) if error.kind() == ErrorKind::TimedOut => {}
            Err(error) => panic!("a connection after the signal: {error}"),
        }
        assert!(
            start.elapsed() < PATIENCE,
            "connections were still accepted long after the signal"
        );
    }
}

/// Waits until `done` holds, or fails with `what`.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn count(lines: &[String], needle: &str) -> usize {
    lines.iter().filter(|line| line.contains(needle)).count()
}

#[test]
fn sigint_under_load_closes_the_listener_then_idle_connections_and_finishes_requests_in_flight() {
    let mut server = Server::start();
    let addr = server.addr;

    let progress: Vec<Arc<AtomicUsize>> = (0..CLIENTS).map(|_| Arc::default()).collect();
    let clients: Vec<JoinHandle<ClientLog>> = progress
        .iter()
        .map(|progress| {
            let progress = Arc::clone(progress);
            std::thread::spawn(move || hammer(addr, progress))
        })
        .collect();
    let served = |client: usize| progress[client].load(Ordering::SeqCst);
    wait_until("every client got responses", || {
        (0..CLIENTS).all(|client| served(client) >= 20)
    });

    // A malformed request in the middle of the load: a 400, or the
    // connection closed, and nothing else.
    let garbage = {
        let mut connection = connect(addr).expect("connect for the malformed request");
        exchange(&mut connection, b"GARBAGE\r\n\r\n")
    };
    assert!(
        matches!(
            garbage,
            Outcome::Response { status: 400, .. } | Outcome::Closed
        ),
        "the malformed request got {garbage:?}"
    );
    // ...and every other client goes on.
    let before: Vec<usize> = (0..CLIENTS).map(served).collect();
    wait_until(
        "every client was served after the malformed request",
        || (0..CLIENTS).all(|client| served(client) > before[client]),
    );

    // Five requests in flight on /slow, each on a connection of its own.
    let slow_done = Arc::new(AtomicUsize::new(0));
    let slow: Vec<JoinHandle<(Outcome, Instant)>> = (0..SLOW)
        .map(|_| {
            let slow_done = Arc::clone(&slow_done);
            std::thread::spawn(move || {
                let outcome = match connect(addr) {
                    Ok(mut connection) => exchange(&mut connection, &get("/slow")),
                    Err(error) => Outcome::Broken(format!("connect: {error}")),
                };
                slow_done.fetch_add(1, Ordering::SeqCst);
                (outcome, Instant::now())
            })
        })
        .collect();
    // The server has read all five (so they are in flight, not in a socket
    // buffer) when it printed this line five times.
    for _ in 0..SLOW {
        server.expect_line("GET /slow: answering in 2 s");
    }

    let signalled = Instant::now();
    server.kill("INT");

    // New connections: refused once the listener is closed.
    let (listener_open_at, refused_at) = watch_listener(addr, signalled);
    // The listener closed while the requests in flight still ran: it went
    // first. (The slow requests end 2 s after they were read, just before
    // the signal; closing the listener takes a poll.)
    let slow_finished_at_refusal = slow_done.load(Ordering::SeqCst);
    let still_running_at_refusal = server.is_running();

    let logs: Vec<ClientLog> = clients
        .into_iter()
        .map(|client| client.join().expect("client thread"))
        .collect();
    let slow: Vec<(Outcome, Instant)> = slow
        .into_iter()
        .map(|request| request.join().expect("slow request thread"))
        .collect();
    let (status, stdout, stderr) = server.finish();
    let context = format!("stdout:\n{}\nstderr:\n{stderr}", stdout.join("\n"));

    // Every keep-alive client got only whole responses to what it sent
    // while the listener was open, then saw its connection closed between
    // two requests: nothing cut short, and no request sent before the
    // listener closed left unanswered (closed or reset).
    for (client, log) in logs.iter().enumerate() {
        let context = format!("client {client} after {} responses: {context}", log.hellos);
        match (&log.end, log.unanswered) {
            (Outcome::Closed, None) => {}
            (Outcome::Closed | Outcome::Reset, Some(written)) => assert!(
                written >= listener_open_at,
                "a request written {:?} before the listener was last seen open got {:?}: \
                 {context}",
                listener_open_at - written,
                log.end
            ),
            (other, _) => panic!("{other:?}: {context}"),
        }
        assert!(
            log.ended_at > signalled,
            "the connection closed before the signal: {context}"
        );
    }
    // All five requests in flight were answered, in full, and the server
    // announced that it would close those connections.
    for (outcome, _) in &slow {
        assert_eq!(
            *outcome,
            Outcome::Response {
                status: 200,
                body: SLOW_HELLO.to_vec(),
                close: true
            },
            "{context}"
        );
    }
    // The order of the shutdown: the listener closed, and every idle
    // connection too, while the requests in flight were still running.
    assert_eq!(slow_finished_at_refusal, 0, "{context}");
    assert!(still_running_at_refusal, "{context}");
    let first_slow_answer = slow.iter().map(|(_, at)| *at).min().expect("five");
    let last_idle_close = logs.iter().map(|log| log.ended_at).max().expect("fifty");
    assert!(
        last_idle_close < first_slow_answer,
        "an idle connection stayed open until a request in flight finished: {context}"
    );

    assert_eq!(status.code(), Some(130), "{context}");
    let stderr_lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(stderr_lines.len(), 1, "{context}");
    assert!(
        stderr_lines[0].contains("received SIGINT, shutting down gracefully"),
        "{context}"
    );
    if matches!(garbage, Outcome::Response { status: 400, .. }) {
        assert_eq!(count(&stdout, "rejected a request"), 1, "{context}");
    }

    let hellos: usize = logs.iter().map(|log| log.hellos).sum();
    let unanswered: Vec<Instant> = logs.iter().filter_map(|log| log.unanswered).collect();
    let resets = logs.iter().filter(|log| log.end == Outcome::Reset).count();
    let in_the_gap = unanswered.iter().filter(|at| **at < refused_at).count();
    println!(
        "{hellos} responses to {CLIENTS} clients; a request unanswered on {} connections \
         ({resets} reset), all written after the listener was last seen open, {in_the_gap} \
         of them before it was seen closed; listener seen open {:?} and closed {:?} after the \
         signal, last idle connection closed {:?} after it, first slow answer {:?} after it",
        unanswered.len(),
        listener_open_at - signalled,
        refused_at - signalled,
        last_idle_close.saturating_duration_since(signalled),
        first_slow_answer - signalled,
    );
}

#[test]
fn a_second_sigint_forces_the_shutdown_and_names_the_connections_still_open() {
    // The second signal must come while `/slow` (2 s) is still in flight: on
    // a loaded machine, seeing the listener close can take longer, and then
    // the round proves nothing (the answer comes first and the server exits
    // gracefully); such a round is run again.
    for _ in 0..5 {
        if second_sigint_round() {
            return;
        }
    }
    panic!("in 5 rounds the listener was never seen closed within 1.5 s of the first SIGINT");
}

/// One round of the test above; false if the second signal could not be
/// sent within 1.5 s of the first.
fn second_sigint_round() -> bool {
    let mut server = Server::start();
    let addr = server.addr;
    let mut connection = connect(addr).expect("connect");
    let port = connection
        .get_ref()
        .local_addr()
        .expect("local_addr")
        .port();
    connection
        .get_mut()
        .write_all(&get("/slow"))
        .expect("send the request");
    server.expect_line("GET /slow: answering in 2 s");
    let signalled = Instant::now();
    server.kill("INT");
    // The first signal has been handled once the listener is closed. (Each
    // attempt to connect is bounded: one whose SYN the kernel dropped as
    // the listener closed would wait a second for its retry, and the slow
    // answer would come first.)
    watch_listener(addr, signalled);
    if signalled.elapsed() > Duration::from_millis(1500) {
        return false; // dropped: the server is killed with it
    }
    server.kill("INT");
    let outcome = read_response(&mut connection);
    let (status, stdout, stderr) = server.finish();
    let context = format!("stdout:\n{}\nstderr:\n{stderr}", stdout.join("\n"));
    assert_eq!(status.code(), Some(130), "{context}");
    assert!(stderr.contains("received SIGINT again"), "{context}");
    // The report names the connection that was still open, by its peer.
    let task =
        format!("task `connection from 127.0.0.1:{port}` spawned at examples/http_server.rs");
    assert!(stderr.contains(&task), "expected {task:?} in {context}");
    // Forced: the request in flight was dropped, unanswered.
    assert_eq!(outcome, Outcome::Closed, "{context}");
    true
}

#[test]
fn a_connection_that_fails_is_logged_and_the_others_go_on() {
    let mut server = Server::start();
    let addr = server.addr;
    let mut keep_alive = connect(addr).expect("connect");
    let mut hello = || {
        let outcome = exchange(&mut keep_alive, &get("/"));
        assert!(
            matches!(&outcome, Outcome::Response { status: 200, body, .. } if body == HELLO),
            "{outcome:?}"
        );
    };
    hello();
    // A client that hangs up in the middle of its request: hyper fails
    // that connection, and the handler logs it on stderr.
    let port = {
        let mut quitter = TcpStream::connect(addr).expect("connect");
        quitter
            .write_all(b"GET / HTTP/1.1\r\nHost: loc")
            .expect("send half a request");
        quitter.local_addr().expect("local_addr").port()
    };
    let failure = server.expect_error(&format!("task `connection from 127.0.0.1:{port}`"));
    assert!(
        failure.contains("connection closed before message completed"),
        "{failure}"
    );
    // The failure cancelled nothing: the other connection is still served.
    hello();
    hello();
    server.kill("INT");
    let (status, stdout, stderr) = server.finish();
    let context = format!("stdout:\n{}\nstderr:\n{stderr}", stdout.join("\n"));
    assert_eq!(status.code(), Some(130), "{context}");
    // The failure, then the shutdown: nothing else.
    assert_eq!(stderr.lines().count(), 2, "{context}");
}

/// Connections the kernel completed just before the listener closed, each
/// with a whole request sent, are accepted and answered, not reset when the
/// listener goes (a load balancer would see a reset of a new connection).
/// The signal follows the last request at once, from this thread, so some
/// of them are still in the listener's queue when the accept loop hears of
/// it (the old example reset some in about a third of such bursts).
#[test]
fn connections_waiting_in_the_listeners_queue_at_sigint_are_answered() {
    for round in 0..5 {
        let server = Server::start();
        let mut connections: Vec<_> = (0..50)
            .map(|_| {
                let mut connection = connect(server.addr).expect("connect");
                connection
                    .get_mut()
                    .write_all(&get("/"))
                    .expect("send the request");
                connection
            })
            .collect();
        // At once (a `kill` command would take a millisecond or two, long
        // enough for the accept loop to take them all first).
        // SAFETY: `kill(2)` with the pid of our live child and a valid
        // signal number; it touches no memory of ours.
        let sent = unsafe { libc::kill(server.child.id() as libc::pid_t, libc::SIGINT) };
        assert_eq!(sent, 0, "kill: {}", io::Error::last_os_error());
        let outcomes: Vec<Outcome> = connections.iter_mut().map(read_response).collect();
        let (status, stdout, stderr) = server.finish();
        let context = format!(
            "round {round}\nstdout:\n{}\nstderr:\n{stderr}",
            stdout.join("\n")
        );
        assert_eq!(status.code(), Some(130), "{context}");
        for outcome in &outcomes {
            assert!(
                matches!(outcome, Outcome::Response { status: 200, body, .. } if body == HELLO),
                "{outcome:?} in {outcomes:?}\n{context}"
            );
        }
    }
}
