//! `examples/protocol_client.rs` as a real process against a fake MPD server
//! that lives in the test: a signal at each stage of the client's life
//! (connecting, waiting for the greeting, a command in flight, idle), judged
//! by the exit status, the client's stdout and what the server received.
//!
//! A process started in the background by a script inherits SIGINT as
//! ignored, and hatchery leaves an ignored signal alone; so the client is
//! started through `env --default-signal` where it exists.
#![cfg(unix)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{OnceLock, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Long enough for a debug build on a loaded two-core machine; a test that
/// waits this long has failed.
const PATIENCE: Duration = Duration::from_secs(60);

/// How long the client may take to exit after a signal. Its only bounded
/// wait is the 1 s goodbye; hatchery's grace period (10 s) is what a stuck
/// task would cost, and stderr says when that happened.
const PROMPT_EXIT: Duration = Duration::from_secs(10);

/// The example, built with the features this test was built with, so that
/// its `live:` line is there exactly when `test-util` is on.
fn client_binary() -> &'static PathBuf {
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
        // Always built: `cargo test --test protocol_client` does not build
        // examples, and a binary left from an older build would be tested.
        let status = Command::new(env!("CARGO"))
            .args([
                "build",
                "--example",
                "protocol_client",
                "--profile",
                profile,
            ])
            .arg("--features")
            .arg(features.join(","))
            .status()
            .expect("run cargo build --example protocol_client");
        assert!(status.success(), "could not build examples/protocol_client");
        profile_dir.join("examples").join("protocol_client")
    })
}

struct Client {
    child: Child,
    lines: mpsc::Receiver<String>,
    stdout: Vec<String>,
    stderr: JoinHandle<String>,
}

struct Exit {
    status: ExitStatus,
    /// From the signal to the exit.
    took: Duration,
    stdout: Vec<String>,
    stderr: String,
}

impl Client {
    fn spawn(addr: SocketAddr, commands: &[&str]) -> Client {
        let env_resets = Command::new("env")
            .args(["--default-signal=INT,TERM", "true"])
            .status()
            .is_ok_and(|status| status.success());
        let mut command = if env_resets {
            let mut command = Command::new("env");
            command
                .arg("--default-signal=INT,TERM")
                .arg(client_binary());
            command
        } else {
            Command::new(client_binary())
        };
        let mut child = command
            .arg(addr.to_string())
            .args(commands)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the client");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut stderr = child.stderr.take().expect("piped stderr");
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        Client {
            child,
            lines,
            stdout: Vec::new(),
            stderr,
        }
    }

    /// Waits for a stdout line containing `needle`.
    fn expect_line(&mut self, needle: &str) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(needle);
                    self.stdout.push(line);
                    if found {
                        return;
                    }
                }
                Err(_) => {
                    let _ = self.child.kill();
                    panic!(
                        "no line containing {needle:?}; stdout so far:\n{}",
                        self.stdout.join("\n")
                    );
                }
            }
        }
    }

    /// Sends `signal` with `kill`, then waits for the exit.
    fn signal_and_wait(mut self, signal: &str) -> Exit {
        // Before `kill` runs: the client may act on the signal before `kill`
        // returns, and `took` must not miss that time.
        let sent = Instant::now();
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if sent.elapsed() > PATIENCE {
                let _ = self.child.kill();
                panic!(
                    "the client did not exit after SIG{signal}; stdout:\n{}",
                    self.stdout.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let took = sent.elapsed();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.stdout.push(line);
        }
        let stderr = self.stderr.join().expect("stderr reader");
        Exit {
            status,
            took,
            stdout: self.stdout,
            stderr,
        }
    }
}

impl Exit {
    /// The exit every signal path must have: the given status, in good
    /// time, by the graceful path, with nothing of hatchery's left alive.
    fn assert_clean(&self, code: i32) {
        let context = format!(
            "took {:?}\nstdout:\n{}\nstderr:\n{}",
            self.took,
            self.stdout.join("\n"),
            self.stderr
        );
        assert_eq!(self.status.code(), Some(code), "{context}");
        assert!(self.took < PROMPT_EXIT, "exit too slow: {context}");
        // Not forced: every task ended by itself, none needed the report.
        assert!(!self.stderr.contains("forcing"), "{context}");
        assert!(!self.stderr.contains("panicked"), "{context}");
        if cfg!(feature = "test-util") {
            assert_eq!(
                self.count("live: 0 tasks, 0 scopes, 0 listeners"),
                1,
                "{context}"
            );
        }
    }

    fn count(&self, needle: &str) -> usize {
        self.stdout
            .iter()
            .filter(|line| line.contains(needle))
            .count()
    }
}

/// What a fake server does once it accepted the client.
#[derive(Clone, Copy, PartialEq)]
enum Server {
    /// Accepts, never says a word.
    Silent,
    /// Greets, reads commands, never answers one; hangs up on `close`.
    Unresponsive,
    /// Greets, answers every command; hangs up on `close`, as MPD does.
    Answering,
    /// Like `Answering`, but never hangs up.
    Stubborn,
}

/// What the fake server received, line by line, and how the connection
/// ended.
#[derive(Debug)]
struct Received {
    lines: Vec<String>,
    end: End,
}

#[derive(Debug, PartialEq)]
enum End {
    /// The server hung up after `close`.
    HungUp,
    /// The client closed the connection.
    ClientClosed,
    /// Nothing happened for PATIENCE.
    TimedOut,
}

fn fake_server(behaviour: Server) -> (SocketAddr, JoinHandle<Received>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fake server");
    let addr = listener.local_addr().expect("local_addr");
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept the client");
        stream
            .set_read_timeout(Some(PATIENCE))
            .expect("read timeout");
        if behaviour != Server::Silent {
            stream.write_all(b"OK MPD 0.23.5\n").expect("greet");
        }
        let mut reader = BufReader::new(stream.try_clone().expect("clone the stream"));
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let end = match reader.read_line(&mut line) {
                Ok(0) => End::ClientClosed,
                Ok(_) => {
                    let line = line.trim_end().to_owned();
                    let close = line == "close";
                    lines.push(line);
                    match behaviour {
                        Server::Unresponsive | Server::Answering if close => End::HungUp,
                        Server::Answering | Server::Stubborn if !close => {
                            stream.write_all(b"volume: 50\nOK\n").expect("answer");
                            continue;
                        }
                        _ => continue,
                    }
                }
                // How a close looks when the client left data unread.
                Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => {
                    End::ClientClosed
                }
                Err(_) => End::TimedOut,
            };
            return Received { lines, end };
        }
    });
    (addr, server)
}

/// A listener whose accept queue is full: nobody accepts, and enough
/// connections were made that the kernel drops further SYNs, so a connect
/// to it hangs (until the connector's own timeout). The connections are
/// returned to keep the queue full.
fn listener_with_full_backlog() -> (TcpListener, Vec<TcpStream>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local_addr");
    let mut queued = Vec::new();
    // std listens with a backlog of 128 on Linux: a few hundred at most.
    for _ in 0..10_000 {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Ok(stream) => queued.push(stream),
            Err(error) if error.kind() == std::io::ErrorKind::TimedOut => {
                return (listener, queued);
            }
            Err(error) => panic!("filling the accept queue: {error}"),
        }
    }
    panic!("10,000 connections and the accept queue is still not full");
}

#[test]
fn sigint_while_the_connect_hangs_exits_130_without_connecting() {
    let (listener, _queued) = listener_with_full_backlog();
    let mut client = Client::spawn(listener.local_addr().unwrap(), &[]);
    // The first attempt times out after 3 s and is retried.
    client.expect_line("connecting to");
    client.expect_line("could not connect");
    client.expect_line("(attempt 2)");
    let exit = client.signal_and_wait("INT");
    exit.assert_clean(130);
    assert_eq!(exit.count("connected to"), 0, "{:?}", exit.stdout);
    // The shutdown is not mistaken for a failed attempt: every failure gives
    // the first one's reason, a timeout (more than one only if the signal
    // came late).
    let reasons: Vec<&str> = exit
        .stdout
        .iter()
        .filter(|line| line.starts_with("could not connect"))
        .map(|line| line.split("; retrying").next().unwrap_or(line))
        .collect();
    assert!(
        reasons.iter().all(|reason| *reason == reasons[0]),
        "{:?}",
        exit.stdout
    );
    assert_eq!(exit.count("goodbye"), 0, "{:?}", exit.stdout);
}

#[test]
fn a_refused_connect_is_retried_with_a_pause_that_doubles() {
    let addr = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().unwrap()
    }; // closed: connecting is refused
    let mut client = Client::spawn(addr, &[]);
    for pause in ["100ms", "200ms", "400ms"] {
        client.expect_line(&format!("retrying in {pause}"));
    }
    client.expect_line("(attempt 4)");
    let exit = client.signal_and_wait("INT");
    exit.assert_clean(130);
}

#[test]
fn sigint_while_waiting_for_the_greeting_closes_the_socket_without_goodbye() {
    let (addr, server) = fake_server(Server::Silent);
    let mut client = Client::spawn(addr, &[]);
    client.expect_line("connected to");
    let exit = client.signal_and_wait("INT");
    exit.assert_clean(130);
    assert_eq!(exit.count("handshake OK"), 0, "{:?}", exit.stdout);
    // No session yet: the read was dropped with its socket, nothing said.
    assert_eq!(exit.count("goodbye"), 0, "{:?}", exit.stdout);
    let received = server.join().expect("fake server");
    assert_eq!(received.end, End::ClientClosed, "{received:?}");
    assert!(received.lines.is_empty(), "{received:?}");
}

#[test]
fn sigint_with_a_command_in_flight_drops_the_response_and_says_goodbye() {
    let (addr, server) = fake_server(Server::Unresponsive);
    let mut client = Client::spawn(addr, &["status", "currentsong"]);
    client.expect_line("handshake OK: MPD 0.23.5");
    client.expect_line("sent status");
    let exit = client.signal_and_wait("INT");
    exit.assert_clean(130);
    assert_eq!(exit.count("got "), 0, "{:?}", exit.stdout);
    assert_eq!(
        exit.count("goodbye sent, the server hung up"),
        1,
        "{:?}",
        exit.stdout
    );
    let received = server.join().expect("fake server");
    assert_eq!(received.lines, ["status", "close"], "{received:?}");
    assert_eq!(received.end, End::HungUp, "{received:?}");
}

#[test]
fn sigterm_when_idle_says_goodbye_and_exits_143() {
    let (addr, server) = fake_server(Server::Answering);
    let mut client = Client::spawn(addr, &["status", "currentsong"]);
    client.expect_line("idle");
    let exit = client.signal_and_wait("TERM");
    exit.assert_clean(143);
    // Each command was answered before the next one went out.
    let conversation: Vec<&str> = exit
        .stdout
        .iter()
        .map(String::as_str)
        .filter(|line| line.starts_with("sent ") || line.starts_with("got "))
        .collect();
    assert_eq!(
        conversation,
        [
            "sent status",
            "got volume: 50",
            "got OK",
            "sent currentsong",
            "got volume: 50",
            "got OK",
        ]
    );
    assert_eq!(
        exit.count("goodbye sent, the server hung up"),
        1,
        "{:?}",
        exit.stdout
    );
    let received = server.join().expect("fake server");
    assert_eq!(
        received.lines,
        ["status", "currentsong", "close"],
        "{received:?}"
    );
    assert_eq!(received.end, End::HungUp, "{received:?}");
}

#[test]
fn a_server_that_never_hangs_up_gets_one_second_of_goodbye() {
    let (addr, server) = fake_server(Server::Stubborn);
    let mut client = Client::spawn(addr, &["status"]);
    client.expect_line("idle");
    let exit = client.signal_and_wait("INT");
    exit.assert_clean(130);
    assert_eq!(
        exit.count("goodbye: no hang-up within 1s, closing anyway"),
        1,
        "{:?}",
        exit.stdout
    );
    // The shield held the goodbye open until its deadline.
    assert!(exit.took >= Duration::from_secs(1), "took {:?}", exit.took);
    let received = server.join().expect("fake server");
    assert_eq!(received.lines, ["status", "close"], "{received:?}");
    assert_eq!(received.end, End::ClientClosed, "{received:?}");
}
