//! Real processes, real signals: each example (and a few probes, which are
//! this test binary re-run in a special mode) is started as a child process,
//! sent SIGINT or SIGTERM with `kill`, and judged by its output and exit
//! status.
//!
//! A process started in the background by a script inherits SIGINT as
//! ignored, and hatchery leaves an ignored signal alone; so the children are
//! started through `env --default-signal` where it exists.
#![cfg(unix)]

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Long enough for a debug build on a loaded two-core machine; a test that
/// waits this long has failed.
const PATIENCE: Duration = Duration::from_secs(60);

struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
    stdout: Vec<String>,
    stderr: Stderr,
}

enum Stderr {
    Read(std::thread::JoinHandle<String>),
    /// Kept open and never read: once the pipe is full, every write to the
    /// child's stderr blocks.
    Unread(#[allow(dead_code)] ChildStderr),
}

fn example(name: &str) -> PathBuf {
    // `cargo test` builds the examples next to the test binaries' directory.
    let exe = std::env::current_exe().expect("current_exe");
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps")
        .join("examples")
        .join(name);
    if !path.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--example", name])
            .status()
            .expect("cargo build --example");
        assert!(status.success(), "could not build example {name}");
    }
    path
}

fn command(program: PathBuf) -> Command {
    let env_resets = Command::new("env")
        .args(["--default-signal=INT,TERM", "true"])
        .status()
        .is_ok_and(|status| status.success());
    if env_resets {
        let mut command = Command::new("env");
        command.arg("--default-signal=INT,TERM").arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn spawn(command: Command) -> Proc {
    spawn_reading_stderr(command, true)
}

fn spawn_reading_stderr(mut command: Command, read_stderr: bool) -> Proc {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the child process");
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    let (send, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if send.send(line).is_err() {
                break;
            }
        }
    });
    let stderr = if read_stderr {
        let mut stderr = stderr;
        Stderr::Read(std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        }))
    } else {
        Stderr::Unread(stderr)
    };
    Proc {
        child,
        lines,
        stdout: Vec::new(),
        stderr,
    }
}

impl Proc {
    /// Waits for a stdout line containing `needle`; returns it.
    fn expect_line(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.stdout.push(line.clone());
                    if line.contains(needle) {
                        return line;
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

    fn kill(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits for the exit; returns the status, all of stdout and stderr.
    fn finish(mut self) -> (ExitStatus, Vec<String>, String) {
        let deadline = Instant::now() + PATIENCE;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "the child did not exit; stdout:\n{}",
                    self.stdout.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.stdout.push(line);
        }
        let stderr = match self.stderr {
            Stderr::Read(reader) => reader.join().expect("stderr reader"),
            Stderr::Unread(_) => "(not read)".to_owned(),
        };
        (status, self.stdout, stderr)
    }
}

fn count(lines: &[String], needle: &str) -> usize {
    lines.iter().filter(|line| line.contains(needle)).count()
}

const SHUTDOWN_LINE: &str = "shutting down gracefully";

#[test]
fn shleepy_cleans_up_on_sigint_and_exits_130() {
    let mut proc = spawn(command(example("shleepy")));
    proc.expect_line("shleepy: going to sleep");
    proc.expect_line("shleepier: going to sleep");
    proc.kill("INT");
    let (status, stdout, stderr) = proc.finish();
    assert_eq!(
        status.code(),
        Some(130),
        "stdout: {stdout:?}\nstderr: {stderr}"
    );
    assert_eq!(count(&stdout, "cancelled after"), 2, "{stdout:?}");
    assert_eq!(count(&stdout, "cleaned up"), 2, "{stdout:?}");
    // Nothing on stderr but the one shutdown line.
    let stderr_lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(stderr_lines.len(), 1, "stderr: {stderr}");
    assert!(stderr_lines[0].contains(SHUTDOWN_LINE), "stderr: {stderr}");
    assert!(stderr_lines[0].contains("SIGINT"), "stderr: {stderr}");
}

#[test]
fn shleepy_exits_143_on_sigterm() {
    let mut proc = spawn(command(example("shleepy")));
    proc.expect_line("shleepier: going to sleep");
    proc.kill("TERM");
    let (status, stdout, stderr) = proc.finish();
    assert_eq!(status.code(), Some(143), "stderr: {stderr}");
    assert_eq!(count(&stdout, "cleaned up"), 2, "{stdout:?}");
    assert!(
        stderr.contains("received SIGTERM, shutting down gracefully"),
        "stderr: {stderr}"
    );
    // Nobody pressed Ctrl+C: the line says how to force this shutdown.
    assert!(!stderr.contains("Ctrl+C"), "stderr: {stderr}");
    assert!(stderr.contains("send SIGTERM again"), "stderr: {stderr}");
}

#[test]
fn shielded_writers_finish_their_record_while_waiters_are_cancelled() {
    let mut proc = spawn(command(example("shielded")));
    for i in 1..=3 {
        proc.expect_line(&format!("waiter {i}: waiting"));
    }
    proc.kill("INT");
    let (status, stdout, stderr) = proc.finish();
    assert_eq!(
        status.code(),
        Some(130),
        "stdout: {stdout:?}\nstderr: {stderr}"
    );
    for i in 1..=3 {
        assert_eq!(
            count(&stdout, &format!("waiter {i}: cancelled")),
            1,
            "{stdout:?}"
        );
        // The record in flight when the signal came was finished...
        let started = count(&stdout, &format!("writer {i}: writing record"));
        let done = count(&stdout, &format!("writer {i}: record"));
        assert_eq!(
            done - started,
            0,
            "writer {i} left a record half-written: {stdout:?}"
        );
        // ...and then the writer stopped instead of starting another one.
        assert_eq!(
            count(&stdout, &format!("writer {i}: stopping")),
            1,
            "{stdout:?}"
        );
    }
    // Every waiter was cancelled before any writer finished its record.
    let last_cancel = stdout
        .iter()
        .rposition(|l| l.contains(": cancelled"))
        .unwrap();
    let first_done = stdout.iter().position(|l| l.contains(" done")).unwrap();
    assert!(last_cancel < first_done, "{stdout:?}");
}

#[test]
fn a_second_sigint_while_children_clean_up_forces_the_shutdown() {
    let mut proc = spawn(command(example("shielded")));
    proc.expect_line("waiter 3: waiting");
    proc.kill("INT");
    proc.expect_line("waiter 3: cancelled");
    // The writers are inside their shielded 2 s write: force it.
    proc.kill("INT");
    let (status, stdout, stderr) = proc.finish();
    assert_eq!(status.code(), Some(130), "stderr: {stderr}");
    assert!(stderr.contains("received SIGINT again"), "stderr: {stderr}");
    // The report names the writers that were dropped mid-record, and the
    // shield each one held.
    for i in 1..=3 {
        assert!(
            stderr.contains(&format!("task `writer {i}` spawned at examples")),
            "{stderr}"
        );
    }
    assert!(stderr.contains("[shield held]"), "{stderr}");
    assert_eq!(
        count(&stdout, " done"),
        0,
        "the hard cancel dropped the writes: {stdout:?}"
    );
}

fn line_of(file: &str, needle: &str) -> usize {
    let source = std::fs::read_to_string(file).expect("read the example's source");
    source
        .lines()
        .position(|line| line.contains(needle))
        .expect("needle in source")
        + 1
}

#[test]
fn stuck_reports_the_stubborn_task_when_the_grace_period_runs_out() {
    let mut proc = spawn(command(example("stuck")));
    proc.expect_line("stubborn: waiting");
    proc.kill("INT");
    let (status, stdout, stderr) = proc.finish();
    assert_eq!(status.code(), Some(130), "stderr: {stderr}");
    assert_eq!(
        count(&stdout, "polite: cancelled, cleaned up"),
        1,
        "{stdout:?}"
    );
    assert_eq!(count(&stdout, "stubborn: done"), 0, "{stdout:?}");
    assert!(
        stderr.contains("the grace period ran out"),
        "stderr: {stderr}"
    );
    let line = line_of("examples/stuck.rs", "n.named(\"stubborn\"");
    let location = format!("task `stubborn` spawned at examples/stuck.rs:{line}:");
    assert!(
        stderr.contains(&location),
        "expected {location:?} in:\n{stderr}"
    );
    // The polite task had finished: the report lists only the stubborn one.
    assert!(stderr.contains("1 task still running"), "stderr: {stderr}");
    assert!(!stderr.contains("`polite`"), "stderr: {stderr}");
}

#[test]
fn stuck_exits_at_once_on_a_second_sigint() {
    let mut proc = spawn(command(example("stuck")));
    proc.expect_line("stubborn: waiting");
    proc.kill("INT");
    proc.expect_line("polite: cancelled");
    proc.kill("INT");
    let (status, _stdout, stderr) = proc.finish();
    assert_eq!(status.code(), Some(130), "stderr: {stderr}");
    // Forced by the signal, not by the (1 s) grace period.
    assert!(stderr.contains("received SIGINT again"), "stderr: {stderr}");
    assert!(!stderr.contains("grace period ran out"), "stderr: {stderr}");
    assert!(stderr.contains("task `stubborn`"), "stderr: {stderr}");
}

#[test]
fn echo_server_finishes_the_message_in_flight_then_closes() {
    use std::io::Write;
    use std::net::TcpStream;

    let mut proc = spawn(command(example("echo_server")));
    let line = proc.expect_line("listening on ");
    let addr = line.trim_start_matches("listening on ").trim().to_owned();
    let connect = || {
        let stream = TcpStream::connect(&addr).expect("connect");
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        (BufReader::new(stream.try_clone().unwrap()), stream)
    };
    let read_line = |reader: &mut BufReader<TcpStream>| {
        let mut line = String::new();
        reader.read_line(&mut line).expect("read a line");
        line
    };
    // An idle connection, and one with a message half sent.
    let (mut idle_reader, mut idle) = connect();
    idle.write_all(b"hello\n").unwrap();
    assert_eq!(read_line(&mut idle_reader), "hello\n");
    let (mut busy_reader, mut busy) = connect();
    busy.write_all(b"first half, ").unwrap();
    std::thread::sleep(Duration::from_millis(200)); // the server is inside the message
    proc.kill("INT");
    proc.expect_line("no longer accepting");
    // The listener closed with the accept loop: a new client is refused,
    // not queued and reset once the connections have drained (a new-user
    // round saw resets).
    let refused = TcpStream::connect(&addr).map(drop);
    assert_eq!(
        refused.map_err(|error| error.kind()),
        Err(std::io::ErrorKind::ConnectionRefused)
    );
    busy.write_all(b"second half\n").unwrap();
    assert_eq!(read_line(&mut busy_reader), "first half, second half\n");
    assert_eq!(read_line(&mut busy_reader), "server shutting down, bye\n");
    assert_eq!(read_line(&mut busy_reader), "", "then the server closes");
    assert_eq!(read_line(&mut idle_reader), "server shutting down, bye\n");
    assert_eq!(read_line(&mut idle_reader), "");
    drop((idle, idle_reader, busy, busy_reader));
    let (status, stdout, stderr) = proc.finish();
    assert_eq!(
        status.code(),
        Some(130),
        "stdout: {stdout:?}\nstderr: {stderr}"
    );
    assert_eq!(
        count(&stdout, "served 2 connections, closed 2 at shutdown"),
        1,
        "{stdout:?}"
    );
}

/// Clients still talking when the shutdown begins read the goodbye and a
/// clean end, not a reset: the server reads what they send until they hang
/// up (a lingering close), because a socket closed with unread input is
/// reset, and the reset destroyed the goodbye (a new-user round: 12 resets
/// of 20 connections with the old example).
#[test]
fn echo_server_clients_still_talking_at_the_shutdown_get_the_goodbye() {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    let mut proc = spawn(command(example("echo_server")));
    let line = proc.expect_line("listening on ");
    let addr = line.trim_start_matches("listening on ").trim().to_owned();
    let mut clients: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut stream = TcpStream::connect(&addr).expect("connect");
            stream.set_read_timeout(Some(PATIENCE)).unwrap();
            stream.write_all(b"hi\n").unwrap();
            let mut echo = [0; 3];
            stream.read_exact(&mut echo).unwrap();
            stream
        })
        .collect();
    proc.kill("INT");
    for client in &mut clients {
        let _ = client.write_all(b"still talking\n");
    }
    std::thread::sleep(Duration::from_millis(300));
    for mut client in clients {
        client.shutdown(std::net::Shutdown::Write).unwrap();
        let mut rest = String::new();
        client
            .read_to_string(&mut rest)
            .expect("a clean end, not a reset");
        assert!(rest.ends_with("server shutting down, bye\n"), "{rest:?}");
    }
    let (status, stdout, stderr) = proc.finish();
    assert_eq!(
        status.code(),
        Some(130),
        "stdout: {stdout:?}\nstderr: {stderr}"
    );
}

// ---------------------------------------------------------------------------
// Probes: this test binary, re-run with HATCHERY_PROBE set, is the child.

/// The "spinner" probes: a run with one worker, stuck in a parallel child
/// that never yields, and a 100 ms grace period; says "spinning", then
/// waits for the signal.
fn spin_one_worker(builder: hatchery::Builder<hatchery::Cancelled>) {
    let _ = builder
        .grace_period(Duration::from_millis(100))
        .worker_threads(1)
        .run(|n: hatchery::Nursery<'_, hatchery::Cancelled>| async move {
            let spinning = Arc::new(AtomicBool::new(false));
            let started = Arc::clone(&spinning);
            n.spawn_parallel(async move {
                started.store(true, Ordering::SeqCst);
                loop {
                    std::hint::spin_loop();
                }
            });
            // Not a hatchery sleep: on the tokio root, tokio's timers stop
            // with its worker.
            while !spinning.load(Ordering::SeqCst) {
                std::thread::yield_now();
            }
            println!("spinning");
            hatchery::sleep_forever().await?;
            Ok(())
        });
    println!("run returned (should have exited)");
}

fn run_probe(mode: &str) -> Proc {
    spawn(probe_command(mode))
}

fn probe_command(mode: &str) -> Command {
    let exe = std::env::current_exe().expect("current_exe");
    let mut command = command(exe);
    command
        .args(["--exact", "probe", "--nocapture", "--test-threads=1"])
        .env("HATCHERY_PROBE", mode);
    command
}

/// Whether this process catches `signal` (its bit in SigCgt), on Linux.
fn caught(signal: i32) -> Option<bool> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let mask = status
        .lines()
        .find_map(|line| line.strip_prefix("SigCgt:"))?;
    let mask = u64::from_str_radix(mask.trim(), 16).ok()?;
    Some(mask & (1 << (signal - 1)) != 0)
}

static PROGRAM_SIGINTS: AtomicUsize = AtomicUsize::new(0);
static PROGRAM_SIGTERMS: AtomicUsize = AtomicUsize::new(0);

extern "C" fn count_sigint(_: libc::c_int) {
    PROGRAM_SIGINTS.fetch_add(1, Ordering::SeqCst);
}

extern "C" fn count_sigterm(_: libc::c_int) {
    PROGRAM_SIGTERMS.fetch_add(1, Ordering::SeqCst);
}

/// The program's own `sigaction`, as a program that knows nothing of
/// hatchery would call it.
fn set_disposition(signal: libc::c_int, handler: libc::sighandler_t) {
    // SAFETY: a zeroed sigaction is a valid value (empty mask, no flags); the
    // handler is SIG_IGN, SIG_DFL or an `extern "C" fn(c_int)` that only
    // touches an atomic.
    let ok = unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = handler;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(signal, &action, std::ptr::null_mut()) == 0
    };
    assert!(ok, "sigaction({signal}) failed");
}

fn disposition(signal: libc::c_int) -> libc::sighandler_t {
    // SAFETY: a null new action only reads the current one into `old`.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        assert_eq!(libc::sigaction(signal, std::ptr::null(), &mut old), 0);
        old.sa_sigaction
    }
}

/// Fills the stderr pipe: writes without blocking until the pipe is full,
/// then puts stderr back in blocking mode, so that the next write to it
/// blocks until someone reads (nobody will).
fn fill_stderr() {
    use std::io::Write;
    use std::os::fd::AsRawFd;

    let fd = std::io::stderr().as_raw_fd();
    // SAFETY: fcntl on our own stderr descriptor, reading then setting its
    // status flags.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    assert!(flags >= 0, "fcntl(F_GETFL)");
    assert!(unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } >= 0);
    let chunk = [b'.'; 4096];
    let mut filled = 0usize;
    loop {
        match std::io::stderr().write(&chunk) {
            Ok(n) => filled += n,
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(error) => panic!("writing to stderr: {error}"),
        }
    }
    assert!(unsafe { libc::fcntl(fd, libc::F_SETFL, flags) } >= 0);
    println!("stderr is full after {filled} bytes");
}

/// The child side of the probes; does nothing in a normal test run.
#[test]
fn probe() {
    use hatchery::{Builder, CancelScope, Cancelled, Nursery, sleep, typed::run};
    use signal_hook::consts::{SIGINT, SIGTERM};

    let Ok(mode) = std::env::var("HATCHERY_PROBE") else {
        return;
    };
    let raise_signal = |signal| signal_hook::low_level::raise(signal).unwrap();
    let raise = || raise_signal(SIGINT);
    match mode.as_str() {
        // A signal before the body has been polled even once.
        "startup" => {
            let _ = run(|n: Nursery<'_, Cancelled>| {
                raise();
                async move {
                    n.spawn(async {
                        let slept = sleep(Duration::from_secs(30)).await;
                        println!("child: cancelled={}", slept.is_err());
                        slept
                    });
                    Ok(())
                }
            });
            println!("run returned (should have exited)");
        }
        // A signal as the body returns: nothing waits for it any more.
        "late" => {
            let _ = run(|_n: Nursery<'_, Cancelled>| async move {
                raise();
                Ok(())
            });
            println!("run returned (should have exited)");
        }
        // After run returns, SIGINT does what it did before: terminate.
        "after" => {
            let out = run(|_n: Nursery<'_, Cancelled>| async move { Ok(5) });
            println!("run returned {out:?}");
            std::thread::sleep(PATIENCE);
            println!("still alive: the default action was not restored");
        }
        // exit_on_signal(false): run returns a value that says so.
        "returns" => {
            let out = hatchery::Builder::new()
                .error_type()
                .exit_on_signal(false)
                .run(|_n: Nursery<'_, Cancelled>| async move {
                    raise();
                    sleep(Duration::from_secs(30)).await?;
                    Ok(())
                });
            let error = out.unwrap_err();
            println!("interrupted={:?} display={error}", error.interrupted());
            std::process::exit(7);
        }
        // The tokio root: children parked in tokio's timer and accept, inline
        // and on tokio's workers; SIGINT drops them and the run exits 130.
        #[cfg(feature = "tokio")]
        "tokio" => {
            let _ = hatchery::Builder::new()
                .tokio()
                .worker_threads(2)
                .grace_period(Duration::MAX)
                .run(|n| async move {
                    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                    n.named("acceptor").spawn(async move {
                        let _bye = Bye("acceptor: dropped");
                        listener.accept().await?;
                        Ok(())
                    });
                    n.named("sleeper").spawn_parallel(async {
                        let _bye = Bye("sleeper: dropped");
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        Ok(())
                    });
                    println!("ready");
                    Ok(())
                });
            println!("run returned (should have exited)");
        }
        // Children parked in foreign awaits (an accept, another crate's
        // timer) under an unbounded grace period: SIGINT drops them.
        "foreign" => {
            let _ = hatchery::Builder::new()
                .error_type()
                .grace_period(Duration::MAX)
                .run(|n: Nursery<'_, std::io::Error>| async move {
                    let listener =
                        async_io::Async::<std::net::TcpListener>::bind(([127, 0, 0, 1], 0))?;
                    n.named("acceptor").spawn(async move {
                        let _bye = Bye("acceptor: dropped");
                        listener.accept().await?;
                        Ok(())
                    });
                    n.named("timer").spawn(async {
                        let _bye = Bye("timer: dropped");
                        async_io::Timer::after(Duration::from_secs(3600)).await;
                        Ok(())
                    });
                    println!("ready");
                    Ok(())
                });
            println!("run returned (should have exited)");
        }
        // An unbounded grace period: the second signal still forces.
        "maxgrace" => {
            let _ = hatchery::Builder::new()
                .error_type()
                .grace_period(Duration::MAX)
                .run(|n: Nursery<'_, Cancelled>| async move {
                    n.named("stubborn").spawn(async {
                        // Shielded without a deadline: nothing can drop it.
                        hatchery::CancelScope::new()
                            .shield(true)
                            .run_typed(async {
                                async_io::Timer::after(Duration::from_secs(30)).await;
                                Ok::<_, Cancelled>(())
                            })
                            .await?;
                        Ok(())
                    });
                    println!("ready");
                    Ok(())
                });
            println!("run returned (should have exited)");
        }
        // After run returns, no handler of hatchery's is installed, and a
        // handler the program installs then is in charge.
        "neighbour_after" => {
            println!("before: SIGINT caught={:?}", caught(SIGINT));
            let out = run(|_n: Nursery<'_, Cancelled>| async move { Ok(5) });
            println!("run returned {out:?}");
            println!(
                "after: SIGINT caught={:?} SIGTERM caught={:?}",
                caught(SIGINT),
                caught(SIGTERM)
            );
            // signal-hook's registry: what tokio::signal installs too.
            let seen = Arc::new(AtomicBool::new(false));
            signal_hook::flag::register(SIGINT, Arc::clone(&seen)).unwrap();
            raise();
            println!(
                "after: the program's handler saw SIGINT={}",
                seen.load(Ordering::SeqCst)
            );
        }
        // Handlers the program installs while run owns the signals stay in
        // charge after it returns.
        "neighbour_during" => {
            let seen = Arc::new(AtomicBool::new(false));
            let seen_in_run = Arc::clone(&seen);
            let out = run(|_n: Nursery<'_, Cancelled>| async move {
                signal_hook::flag::register(SIGINT, seen_in_run).unwrap();
                set_disposition(SIGTERM, count_sigterm as *const () as libc::sighandler_t);
                Ok(())
            });
            println!("run returned {out:?}");
            raise();
            raise_signal(SIGTERM);
            println!(
                "after: signal-hook handler saw SIGINT={} sigaction handler counted {} SIGTERM",
                seen.load(Ordering::SeqCst),
                PROGRAM_SIGTERMS.load(Ordering::SeqCst)
            );
        }
        // The dispositions the program had before run are back after it.
        "neighbour_before" => {
            set_disposition(SIGINT, count_sigint as *const () as libc::sighandler_t);
            set_disposition(SIGTERM, libc::SIG_IGN);
            let out = run(|_n: Nursery<'_, Cancelled>| async move { Ok(()) });
            println!("run returned {out:?}");
            println!(
                "after: SIGINT handler is the program's={} SIGTERM ignored={}",
                disposition(SIGINT) == count_sigint as *const () as libc::sighandler_t,
                disposition(SIGTERM) == libc::SIG_IGN
            );
            raise();
            raise_signal(SIGTERM);
            println!(
                "after: the program's handler counted {} SIGINT",
                PROGRAM_SIGINTS.load(Ordering::SeqCst)
            );
        }
        // A parallel child that never yields, and a signal: the run exits
        // once its grace period is over, without that worker.
        "spinner" => spin_one_worker(Builder::new().error_type()),
        // The tokio root with its one worker stuck in a parallel child that
        // never awaits: nothing drives tokio's timers, the grace period
        // still ends the run (the signal watcher times it).
        #[cfg(feature = "tokio")]
        "tokio_spinner" => spin_one_worker(Builder::new().error_type().tokio()),
        // A body that blocks its thread: the shutdown is forced when the
        // grace period runs out, and cannot finish.
        "blocked" => {
            let _ = Builder::new()
                .error_type()
                .grace_period(Duration::from_millis(100))
                .run(|_n: Nursery<'_, Cancelled>| async move {
                    println!("blocking");
                    std::thread::sleep(Duration::from_secs(60));
                    Ok(())
                });
            println!("run returned (should have exited)");
        }
        // A run inside spawn_blocking of another: the outer one owns the
        // signals; the inner one is cancelled with it and does not exit.
        "nested" => {
            let _ = run(|n: Nursery<'_, Cancelled>| async move {
                n.spawn(async {
                    let slept = sleep(Duration::from_secs(3600)).await;
                    println!("outer: cancelled, cleaning up");
                    CancelScope::new()
                        .shield(true)
                        .run_typed(async {
                            sleep(Duration::from_millis(300)).await?;
                            println!("outer: shielded cleanup done");
                            Ok::<_, Cancelled>(())
                        })
                        .await?;
                    slept
                });
                n.spawn_blocking(|_cancel| {
                    let out = run(|_m: Nursery<'_, Cancelled>| async move {
                        println!("inner: running");
                        sleep(Duration::from_secs(3600)).await?;
                        Ok(())
                    });
                    println!("inner: returned {out:?}");
                    Ok(())
                });
                Ok(())
            });
            println!("run returned (should have exited)");
        }
        // A task fails; its sibling's cleanup is still going when Ctrl+C
        // comes: the failure must not vanish with the exit.
        "failed_then_signal" => {
            let _ = hatchery::run(|n| async move {
                n.named("loader")
                    .spawn(async { Err(hatchery::Error::msg("config file missing")) });
                n.spawn(async move {
                    let slept = sleep(Duration::from_secs(3600)).await;
                    CancelScope::new()
                        .shield(true)
                        .run(async move {
                            raise();
                            sleep(Duration::from_millis(200)).await?;
                            println!("cleanup done");
                            Ok(())
                        })
                        .await?;
                    Ok(slept?)
                });
                Ok(())
            });
            println!("run returned (should have exited)");
        }
        // As above, but the cleanup never ends: the grace period runs out
        // and the forced shutdown drops the root nursery, failures and all.
        // With `exit_on_signal(false)` (FORCED_RETURNS set), `run` returns
        // them instead.
        "failed_then_forced" => {
            let returns = std::env::var_os("FORCED_RETURNS").is_some();
            let out = hatchery::Builder::new()
                .grace_period(Duration::from_millis(100))
                .exit_on_signal(!returns)
                .run(|n| async move {
                    n.named("loader")
                        .spawn(async { Err(hatchery::Error::msg("config file missing")) });
                    n.spawn(async move {
                        let _ = sleep(Duration::from_secs(3600)).await;
                        CancelScope::new()
                            .shield(true)
                            .run(async move {
                                raise();
                                async_io::Timer::after(Duration::from_secs(3600)).await;
                                Ok(())
                            })
                            .await?;
                        Ok(())
                    });
                    Ok(())
                });
            let failures: Vec<String> = out
                .unwrap_err()
                .failures()
                .iter()
                .map(|failure| format!("{}: {}", failure.task, failure.error))
                .collect();
            println!("run returned failures {failures:?}");
        }
        // A failure, then a panic in a cleanup, then a task stuck behind a
        // shield: the grace period runs out, the forced shutdown drops the
        // root, and run resumes the panic; the failure must be said first.
        "fail_panic_forced" => {
            let _ = hatchery::Builder::new()
                .grace_period(Duration::from_millis(50))
                .handle_signals(false)
                .run(|n| async move {
                    n.named("failer")
                        .spawn(async { Err(hatchery::Error::msg("disk full")) });
                    n.spawn(async {
                        let _ = sleep(Duration::from_secs(3600)).await;
                        panic!("the cleanup panicked");
                    });
                    n.spawn(async {
                        let _ = sleep(Duration::from_secs(3600)).await;
                        CancelScope::new()
                            .shield(true)
                            .run(async {
                                async_io::Timer::after(Duration::from_secs(3600)).await;
                                Ok(())
                            })
                            .await?;
                        Ok(())
                    });
                    Ok(())
                });
            println!("run returned (should have resumed the panic)");
        }
        // A named parallel child panics on an executor thread: the panic
        // hook names that thread, the nursery names the task.
        "parallel_panic" => {
            let _ = run(|n: Nursery<'_, Cancelled>| async move {
                n.named("worker-7").spawn_parallel(async {
                    panic!("worker-7 broke");
                });
                sleep(Duration::from_secs(3600)).await?;
                Ok(())
            });
            println!("run returned (should have resumed the panic)");
        }
        // A task fails at once, which starts the grace period (1 s); a
        // sibling cleans up behind a shield; SIGINT comes later.
        "fail_then_signal" => {
            let _ = hatchery::Builder::new()
                .grace_period(Duration::from_secs(1))
                .run(|n| async move {
                    n.spawn(async { Err(hatchery::Error::msg("disk full")) });
                    n.spawn(async {
                        let _ = sleep(Duration::from_secs(3600)).await;
                        println!("cleaning up");
                        CancelScope::new()
                            .shield(true)
                            .run_typed(sleep(Duration::from_secs(3600)))
                            .await?;
                        Ok(())
                    });
                    Ok(())
                });
            println!("run returned (should have exited)");
        }
        // A panic two nurseries deep: the inner nursery names the task that
        // panicked; the outer one, which catches it again, says nothing more.
        "nested_panic" => {
            let _ = run(|n: Nursery<'_, Cancelled>| async move {
                n.named("outer-child").spawn(async {
                    hatchery::typed::nursery(|inner: Nursery<'_, Cancelled>| async move {
                        inner.named("leaf").spawn(async {
                            panic!("the leaf broke");
                        });
                        Ok(())
                    })
                    .await?;
                    Ok(())
                });
                Ok(())
            });
            println!("run returned (should have resumed the panic)");
        }
        // The body raises SIGINT at once: the whole grace period is left.
        "plain_signal" => {
            let _ = Builder::new()
                .error_type()
                .grace_period(Duration::from_secs(10))
                .run(|_n: Nursery<'_, Cancelled>| async move {
                    raise();
                    sleep(Duration::from_secs(30)).await?;
                    Ok(())
                });
            println!("run returned (should have exited)");
        }
        // SIGINT and SIGTERM back to back: each is credited to itself.
        "int_then_term" => {
            let _ = run(|_n: Nursery<'_, Cancelled>| async move {
                raise();
                raise_signal(SIGTERM);
                sleep(Duration::from_secs(30)).await?;
                Ok(())
            });
            println!("run returned (should have exited)");
        }
        // Nobody reads stderr: hatchery's lines must not hold the shutdown.
        "stderr_blocked" => {
            fill_stderr();
            let _ = Builder::new()
                .error_type()
                .grace_period(Duration::from_secs(3600))
                .run(|n: Nursery<'_, Cancelled>| async move {
                    n.spawn(async {
                        let slept = sleep(Duration::from_secs(3600)).await;
                        println!("polite: cancelled");
                        slept
                    });
                    n.named("stubborn").spawn(async {
                        CancelScope::new()
                            .shield(true)
                            .run_typed(sleep(Duration::from_secs(3600)))
                            .await?;
                        Ok(())
                    });
                    println!("ready");
                    Ok(())
                });
            println!("run returned (should have exited)");
        }
        // Another thread holds stdout's lock for good (as one blocked in
        // `println!` on a pipe nobody reads would) when the signal comes.
        "stdout_held" => {
            let _ = run(|n: Nursery<'_, Cancelled>| async move {
                n.spawn(async {
                    let slept = hatchery::sleep_forever().await;
                    slept?;
                    Ok(())
                });
                println!("holding stdout");
                let (held, holding) = std::sync::mpsc::channel();
                std::thread::spawn(move || {
                    let _lock = std::io::stdout().lock();
                    let _ = held.send(());
                    std::thread::park();
                    std::thread::sleep(Duration::from_secs(3600));
                });
                let _ = holding.recv();
                raise_signal(SIGTERM);
                hatchery::sleep_forever().await?;
                Ok(())
            });
        }
        // No grace period at all.
        "grace_zero" => {
            let _ = Builder::new().grace_period(Duration::ZERO).run(
                |n: Nursery<'_, hatchery::Error>| async move {
                    n.spawn(async {
                        CancelScope::new()
                            .shield(true)
                            .run(async {
                                hatchery::sleep_forever().await?;
                                Ok(())
                            })
                            .await?;
                        Ok(())
                    });
                    hatchery::checkpoint().await?;
                    raise();
                    hatchery::sleep_forever().await?;
                    Ok(())
                },
            );
            println!("run returned (should have exited)");
        }
        // A child that writes to stderr as it cleans up.
        "line_first" => {
            let _ = run(|n: Nursery<'_, Cancelled>| async move {
                n.spawn(async {
                    let slept = hatchery::sleep_forever().await;
                    eprintln!("child: cleaning up");
                    slept?;
                    Ok(())
                });
                hatchery::checkpoint().await?;
                raise();
                hatchery::sleep_forever().await?;
                Ok(())
            });
            println!("run returned (should have exited)");
        }
        // A SignalGuard's program that exits as soon as `forced()`
        // completes, the guard still alive: the report is out by then.
        "guard_exit_undropped" => {
            use futures_lite::FutureExt;
            let scope = CancelScope::new();
            let guard = hatchery::SignalGuard::install(&scope.handle())
                .unwrap()
                .grace_period(Duration::from_millis(50));
            futures::executor::block_on(async {
                let work = scope.run(hatchery::nursery(|n| async move {
                    // Wakes the work often: `forced()` is polled often.
                    n.spawn(async {
                        CancelScope::new()
                            .shield(true)
                            .run(async {
                                loop {
                                    hatchery::sleep(Duration::from_micros(100)).await?;
                                }
                                #[allow(unreachable_code)]
                                Ok(())
                            })
                            .await?;
                        Ok(())
                    });
                    // A long report: it takes a while to write.
                    for i in 0..300 {
                        n.named(format!("stuck {i}")).spawn(async {
                            CancelScope::new()
                                .shield(true)
                                .run(async {
                                    hatchery::sleep_forever().await?;
                                    Ok(())
                                })
                                .await?;
                            Ok(())
                        });
                    }
                    hatchery::checkpoint().await?;
                    raise();
                    hatchery::sleep_forever().await?;
                    Ok(())
                }));
                let finished = async { Some(work.await) }
                    .or(async {
                        guard.forced().await;
                        None
                    })
                    .await;
                println!("finished: {}", finished.is_some());
            });
            std::process::exit(guard.exit_code().unwrap_or(3));
        }
        other => panic!("unknown probe {other}"),
    }
}

#[test]
fn a_signal_during_start_up_cancels_the_root_before_the_body_runs() {
    let (status, stdout, stderr) = run_probe("startup").finish();
    assert_eq!(
        status.code(),
        Some(130),
        "stdout: {stdout:?}\nstderr: {stderr}"
    );
    assert_eq!(count(&stdout, "child: cancelled=true"), 1, "{stdout:?}");
    assert_eq!(count(&stdout, "run returned"), 0, "{stdout:?}");
}

#[test]
fn a_failure_before_the_signal_is_written_to_stderr_at_the_exit() {
    let (status, stdout, stderr) = run_probe("failed_then_signal").finish();
    assert_eq!(
        status.code(),
        Some(130),
        "stdout: {stdout:?}\nstderr: {stderr}"
    );
    assert_eq!(count(&stdout, "cleanup done"), 1, "{stdout:?}");
    assert_eq!(count(&stdout, "run returned"), 0, "{stdout:?}");
    let failure = stderr
        .lines()
        .find(|line| line.contains("config file missing"))
        .unwrap_or_else(|| panic!("the failure is lost; stderr: {stderr}"));
    assert!(failure.contains("task `loader` spawned at"), "{stderr}");
    assert_eq!(stderr.matches(SHUTDOWN_LINE).count(), 1, "{stderr}");
}

#[test]
fn a_failure_before_a_forced_shutdown_is_written_to_stderr_or_returned() {
    let (status, stdout, stderr) = run_probe("failed_then_forced").finish();
    assert_eq!(
        status.code(),
        Some(130),
        "stdout: {stdout:?}\nstderr: {stderr}"
    );
    assert!(stderr.contains("forcing the shutdown"), "{stderr}");
    let failure = stderr
        .lines()
        .find(|line| line.contains("config file missing"))
        .unwrap_or_else(|| panic!("the failure is lost; stderr: {stderr}"));
    assert!(failure.contains("task `loader` spawned at"), "{stderr}");

    let mut command = probe_command("failed_then_forced");
    command.env("FORCED_RETURNS", "1");
    let (status, stdout, stderr) = spawn(command).finish();
    assert_eq!(
        status.code(),
        Some(0),
        "stdout: {stdout:?}\nstderr: {stderr}"
    );
    assert_eq!(count(&stdout, "config file missing"), 1, "{stdout:?}");
}

#[test]
fn a_failure_is_said_when_run_resumes_a_panic_after_a_forced_shutdown() {
    let (status, stdout, stderr) = run_probe("fail_panic_forced").finish();
    assert_eq!(
        status.code(),
        Some(101),
        "stdout: {stdout:?}\nstderr: {stderr}"
    );
    assert_eq!(count(&stdout, "run returned"), 0, "{stdout:?}");
    assert!(stderr.contains("the cleanup panicked"), "{stderr}");
    let failure = stderr
        .lines()
        .find(|line| line.contains("disk full"))
        .unwrap_or_else(|| panic!("the failure is lost; stderr: {stderr}"));
    assert!(failure.contains("task `failer` spawned at"), "{stderr}");
}

/// The panic hook says "thread 'hatchery-worker-0' panicked": the nursery
/// that resumes the panic says which task it was (nothing did).
#[test]
fn a_resumed_panic_names_the_task_that_panicked() {
    let (status, stdout, stderr) = run_probe("parallel_panic").finish();
    assert_eq!(
        status.code(),
        Some(101),
        "stdout: {stdout:?}\nstderr: {stderr}"
    );
    assert_eq!(count(&stdout, "run returned"), 0, "{stdout:?}");
    assert!(stderr.contains("worker-7 broke"), "{stderr}");
    let said = stderr
        .lines()
        .find(|line| line.contains("task `worker-7` spawned at"))
        .unwrap_or_else(|| panic!("no line names the task; stderr: {stderr}"));
    assert!(
        said.contains("panicked; its nursery resumes the panic"),
        "{stderr}"
    );
    assert!(said.contains("signals.rs"), "{stderr}");
}

/// A grace period that a task's failure started before the signal: the
/// signal's line says what is left of it, not the whole period (it said
/// "up to 1s" with 0.6 s left; adversarial round).
#[test]
fn a_signal_during_a_grace_period_already_running_says_what_is_left() {
    let mut proc = run_probe("fail_then_signal");
    proc.expect_line("cleaning up");
    std::thread::sleep(Duration::from_millis(300));
    proc.kill("INT");
    let (status, stdout, stderr) = proc.finish();
    assert_eq!(
        status.code(),
        Some(130),
        "stdout: {stdout:?}\nstderr: {stderr}"
    );
    let line = stderr
        .lines()
        .find(|line| line.contains("shutting down gracefully (up to "))
        .unwrap_or_else(|| panic!("stderr: {stderr}"));
    let left = line
        .split("(up to ")
        .nth(1)
        .and_then(|rest| rest.split("ms)").next())
        .and_then(|millis| millis.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("not a count of milliseconds left: {line}"));
    assert!(left < 800, "{line}");
}

/// Each nursery that passes a panic on used to write its own line (three
/// in a server: handler, connection, root body), the outer ones blaming a
/// task that only passed it on (review).
#[test]
fn a_panic_passed_up_two_nurseries_is_named_once() {
    let (status, stdout, stderr) = run_probe("nested_panic").finish();
    assert_eq!(
        status.code(),
        Some(101),
        "stdout: {stdout:?}\nstderr: {stderr}"
    );
    assert_eq!(
        count_lines(&stderr, "panicked; its nursery resumes the panic"),
        1,
        "{stderr}"
    );
    assert_eq!(
        count_lines(&stderr, "task `leaf` spawned at"),
        1,
        "{stderr}"
    );
}

/// A signal that starts the grace period announces all of it: run's root,
/// cancelled by the signal, must not pass for a failure that started it
/// earlier (the line read "up to 9.999s" in about one run in eight;
/// review). Twenty processes, each a fresh race.
#[test]
fn a_signal_that_starts_the_grace_period_announces_all_of_it() {
    for _ in 0..20 {
        let (status, stdout, stderr) = run_probe("plain_signal").finish();
        assert_eq!(
            status.code(),
            Some(130),
            "stdout: {stdout:?}\nstderr: {stderr}"
        );
        assert!(
            stderr.contains("shutting down gracefully (up to 10s)"),
            "{stderr}"
        );
    }
}

#[test]
fn a_signal_as_the_body_returns_is_still_honoured() {
    let (status, stdout, stderr) = run_probe("late").finish();
    assert_eq!(
        status.code(),
        Some(130),
        "stdout: {stdout:?}\nstderr: {stderr}"
    );
    assert_eq!(count(&stdout, "run returned"), 0, "{stdout:?}");
}

#[test]
fn the_default_action_is_restored_after_run_returns() {
    let mut proc = run_probe("after");
    proc.expect_line("run returned Ok(Some(5))");
    proc.kill("INT");
    let (status, stdout, stderr) = proc.finish();
    assert_eq!(
        status.signal(),
        Some(2),
        "{status:?}\nstdout: {stdout:?}\nstderr: {stderr}"
    );
    assert_eq!(count(&stdout, "still alive"), 0);
    assert!(!stderr.contains(SHUTDOWN_LINE), "stderr: {stderr}");
}

/// The signal's line comes before what the program writes to stderr as it
/// shuts down (it came after, most runs: it was said after the cancel).
#[test]
fn the_signal_line_comes_before_the_cleanup_output() {
    for _ in 0..10 {
        let (status, stdout, stderr) = run_probe("line_first").finish();
        assert_eq!(
            status.code(),
            Some(130),
            "stdout: {stdout:?}\nstderr: {stderr}"
        );
        let line = stderr.find("hatchery: received SIGINT");
        let cleanup = stderr.find("child: cleaning up");
        assert!(
            line.is_some() && cleanup.is_some() && line < cleanup,
            "out of order: {stderr}"
        );
    }
}

/// One SIGTERM ends the process even while another thread holds stdout's
/// lock for good: the exit does not wait for it (it waited for ever, the
/// signal watcher already stopped).
#[test]
fn a_signal_exits_while_another_thread_holds_stdout() {
    let (status, stdout, stderr) = run_probe("stdout_held").finish();
    assert_eq!(
        status.code(),
        Some(143),
        "stdout: {stdout:?}\nstderr: {stderr}"
    );
    assert_eq!(count(&stdout, "holding stdout"), 1, "{stdout:?}");
}

/// With no grace period, the first signal's line says the shutdown is
/// forced at once (it read "gracefully (up to 0ns); press Ctrl+C again to
/// force"), and it is.
#[test]
fn with_no_grace_period_the_line_says_the_shutdown_is_forced_now() {
    let (status, stdout, stderr) = run_probe("grace_zero").finish();
    assert_eq!(
        status.code(),
        Some(130),
        "stdout: {stdout:?}\nstderr: {stderr}"
    );
    assert!(
        stderr.contains("received SIGINT, shutting down (no grace period left: forcing it now)"),
        "{stderr}"
    );
    assert!(!stderr.contains("0ns"), "{stderr}");
    assert!(stderr.contains("forcing the shutdown"), "{stderr}");
}

/// The same with stderr a file, which hatchery writes the line to at once
/// (no writer thread): still before the cleanup's output.
#[test]
fn the_signal_line_comes_first_in_a_stderr_file_too() {
    let path = std::env::temp_dir().join(format!("hatchery-line-first-{}.txt", std::process::id()));
    for _ in 0..5 {
        let file = std::fs::File::create(&path).expect("a file for stderr");
        let status = probe_command("line_first")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .status()
            .expect("run the probe");
        let stderr = std::fs::read_to_string(&path).expect("read stderr back");
        assert_eq!(status.code(), Some(130), "{stderr}");
        let line = stderr.find("hatchery: received SIGINT");
        let cleanup = stderr.find("child: cleaning up");
        assert!(
            line.is_some() && cleanup.is_some() && line < cleanup,
            "out of order: {stderr}"
        );
    }
    let _ = std::fs::remove_file(&path);
}

/// `SignalGuard::forced()` completes once the report of the forced
/// shutdown is out: a program that exits right then, without dropping the
/// guard first, does not lose it (it did in some runs).
#[test]
fn a_guard_program_exiting_as_forced_completes_keeps_the_report() {
    for _ in 0..5 {
        let (status, stdout, stderr) = run_probe("guard_exit_undropped").finish();
        assert_eq!(
            status.code(),
            Some(130),
            "stdout: {stdout:?}\nstderr: {stderr}"
        );
        assert_eq!(count(&stdout, "finished: false"), 1, "{stdout:?}");
        assert!(
            stderr.contains("the grace period ran out; forcing the shutdown")
                && stderr.contains("task `stuck 299`"),
            "the report is lost: {stderr}"
        );
    }
}

#[test]
fn without_exit_on_signal_run_returns_the_interruption() {
    let (status, stdout, stderr) = run_probe("returns").finish();
    assert_eq!(
        status.code(),
        Some(7),
        "stdout: {stdout:?}\nstderr: {stderr}"
    );
    assert_eq!(
        count(
            &stdout,
            "interrupted=Some(SIGINT) display=interrupted by SIGINT"
        ),
        1,
        "{stdout:?}"
    );
}

/// Prints when dropped.
struct Bye(&'static str);

impl Drop for Bye {
    fn drop(&mut self) {
        println!("{}", self.0);
    }
}

#[cfg(feature = "tokio")]
#[test]
fn sigint_shuts_the_tokio_root_down_like_any_other() {
    let mut proc = run_probe("tokio");
    proc.expect_line("ready");
    proc.kill("INT");
    let (status, stdout, stderr) = proc.finish();
    assert_eq!(
        status.code(),
        Some(130),
        "stdout: {stdout:?}\nstderr: {stderr}"
    );
    assert_eq!(count(&stdout, "acceptor: dropped"), 1, "{stdout:?}");
    assert_eq!(count(&stdout, "sleeper: dropped"), 1, "{stdout:?}");
    assert_eq!(stderr.lines().count(), 1, "stderr: {stderr}");
    // Its grace period is `Duration::MAX`: said as such, not in seconds.
    assert!(
        stderr.contains("shutting down gracefully (no time limit)"),
        "stderr: {stderr}"
    );
}

#[test]
fn sigint_drops_children_parked_in_foreign_awaits_without_waiting_for_the_grace_period() {
    let mut proc = run_probe("foreign");
    proc.expect_line("ready");
    proc.kill("INT");
    // The grace period is unbounded: had the shutdown waited for these
    // children, the process would not exit at all.
    let (status, stdout, stderr) = proc.finish();
    assert_eq!(
        status.code(),
        Some(130),
        "stdout: {stdout:?}\nstderr: {stderr}"
    );
    assert_eq!(count(&stdout, "acceptor: dropped"), 1, "{stdout:?}");
    assert_eq!(count(&stdout, "timer: dropped"), 1, "{stdout:?}");
    assert!(!stderr.contains("forcing the shutdown"), "stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "stderr: {stderr}");
}

#[test]
fn an_unbounded_grace_period_still_escalates_on_the_second_signal() {
    let mut proc = run_probe("maxgrace");
    proc.expect_line("ready");
    proc.kill("INT");
    std::thread::sleep(Duration::from_millis(200));
    proc.kill("INT");
    let (status, stdout, stderr) = proc.finish();
    assert_eq!(
        status.code(),
        Some(130),
        "stdout: {stdout:?}\nstderr: {stderr}"
    );
    assert!(stderr.contains("received SIGINT again"), "stderr: {stderr}");
    assert!(stderr.contains("task `stubborn`"), "stderr: {stderr}");
}

#[test]
#[cfg(target_os = "linux")]
fn no_handler_of_hatcherys_is_left_installed_after_run() {
    let (status, stdout, stderr) = run_probe("neighbour_after").finish();
    assert_eq!(
        count(&stdout, "before: SIGINT caught=Some(false)"),
        1,
        "started with SIGINT at its default: {stdout:?}"
    );
    assert_eq!(
        count(
            &stdout,
            "after: SIGINT caught=Some(false) SIGTERM caught=Some(false)"
        ),
        1,
        "stdout: {stdout:?}\nstderr: {stderr}"
    );
    assert_eq!(
        count(&stdout, "after: the program's handler saw SIGINT=true"),
        1,
        "{status:?}\nstdout: {stdout:?}\nstderr: {stderr}"
    );
    assert!(status.success(), "{status:?}\nstderr: {stderr}");
}

#[test]
fn handlers_installed_during_run_stay_in_charge_after_it() {
    let (status, stdout, stderr) = run_probe("neighbour_during").finish();
    assert_eq!(
        count(
            &stdout,
            "after: signal-hook handler saw SIGINT=true sigaction handler counted 1 SIGTERM"
        ),
        1,
        "{status:?}\nstdout: {stdout:?}\nstderr: {stderr}"
    );
    assert!(status.success(), "{status:?}\nstderr: {stderr}");
    assert!(!stderr.contains(SHUTDOWN_LINE), "stderr: {stderr}");
}

#[test]
fn the_programs_dispositions_are_back_after_run() {
    let (status, stdout, stderr) = run_probe("neighbour_before").finish();
    assert_eq!(
        count(
            &stdout,
            "after: SIGINT handler is the program's=true SIGTERM ignored=true"
        ),
        1,
        "{status:?}\nstdout: {stdout:?}\nstderr: {stderr}"
    );
    assert_eq!(
        count(&stdout, "after: the program's handler counted 1 SIGINT"),
        1,
        "{status:?}\nstdout: {stdout:?}\nstderr: {stderr}"
    );
    assert!(status.success(), "{status:?}\nstderr: {stderr}");
}

#[test]
fn a_worker_that_never_yields_is_abandoned_when_the_grace_period_ends() {
    let mut proc = run_probe("spinner");
    proc.expect_line("spinning");
    proc.kill("INT");
    let (status, stdout, stderr) = proc.finish();
    assert_eq!(
        status.code(),
        Some(130),
        "stdout: {stdout:?}\nstderr: {stderr}"
    );
    // The run exited by itself, not through the wedged-executor exit.
    assert!(
        !stderr.contains("did not finish within"),
        "stderr: {stderr}"
    );
    assert!(
        stderr.contains("1 worker thread abandoned") && stderr.contains("hatchery-worker-0"),
        "stderr: {stderr}"
    );
}

/// The same on the tokio root, whose one worker spins: tokio's timers do
/// not run, and the grace period still ends the run.
#[cfg(feature = "tokio")]
#[test]
fn on_tokio_a_worker_that_never_yields_is_abandoned_when_the_grace_period_ends() {
    let mut proc = run_probe("tokio_spinner");
    proc.expect_line("spinning");
    proc.kill("INT");
    let (status, stdout, stderr) = proc.finish();
    assert_eq!(
        status.code(),
        Some(130),
        "stdout: {stdout:?}\nstderr: {stderr}"
    );
    // The run exited by itself, not through the wedged-executor exit.
    assert!(
        !stderr.contains("did not finish within"),
        "stderr: {stderr}"
    );
    assert!(
        stderr.contains("the grace period ran out"),
        "stderr: {stderr}"
    );
}

/// The signal after a forced shutdown exits at once, and says so on stderr
/// (from the signal handler: the process is wedged).
#[test]
fn a_signal_after_the_forced_shutdown_exits_at_once_and_says_so() {
    let mut proc = run_probe("blocked");
    proc.expect_line("blocking");
    proc.kill("INT");
    // The grace period (100 ms) runs out: the shutdown is forced.
    std::thread::sleep(Duration::from_millis(500));
    proc.kill("INT");
    let (status, stdout, stderr) = proc.finish();
    assert_eq!(
        status.code(),
        Some(130),
        "stdout: {stdout:?}\nstderr: {stderr}"
    );
    assert!(
        stderr.lines().last() == Some("hatchery: received another signal: exiting now"),
        "stderr: {stderr}"
    );
    // Not the two-second fallback for a wedged forced shutdown.
    assert!(
        !stderr.contains("did not finish within"),
        "stderr: {stderr}"
    );
    assert_eq!(count(&stdout, "run returned"), 0, "{stdout:?}");
}

#[test]
fn a_run_inside_spawn_blocking_defers_to_the_outer_runs_shutdown() {
    let mut proc = run_probe("nested");
    proc.expect_line("inner: running");
    proc.kill("INT");
    let (status, stdout, stderr) = proc.finish();
    assert_eq!(
        status.code(),
        Some(130),
        "stdout: {stdout:?}\nstderr: {stderr}"
    );
    assert_eq!(
        count(&stdout, "outer: shielded cleanup done"),
        1,
        "the inner run exited in the middle of the outer one's cleanup: \
         stdout: {stdout:?}\nstderr: {stderr}"
    );
    // The inner run was cancelled by the outer one's signal, and returned.
    assert_eq!(count(&stdout, "inner: returned Ok(None)"), 1, "{stdout:?}");
    // One shutdown line: only the owner of the signals speaks.
    assert_eq!(count_lines(&stderr, SHUTDOWN_LINE), 1, "stderr: {stderr}");
}

fn count_lines(text: &str, needle: &str) -> usize {
    text.lines().filter(|line| line.contains(needle)).count()
}

#[test]
fn sigint_then_sigterm_is_credited_to_sigint() {
    let (status, stdout, stderr) = run_probe("int_then_term").finish();
    assert_eq!(
        status.code(),
        Some(130),
        "stdout: {stdout:?}\nstderr: {stderr}"
    );
    let first = stderr.lines().next().unwrap_or_default();
    assert!(
        first.contains("received SIGINT, shutting down gracefully"),
        "stderr: {stderr}"
    );
    // The second signal escalated, under its own name.
    assert!(
        stderr.contains("received SIGTERM after SIGINT"),
        "stderr: {stderr}"
    );
    // The root scope's reason, in the report, names the first one.
    assert!(
        stderr.contains("[cancelled: the process received SIGINT (signal 2)]"),
        "stderr: {stderr}"
    );
}

#[test]
fn a_stderr_nobody_reads_does_not_hold_the_shutdown() {
    let mut proc = spawn_reading_stderr(probe_command("stderr_blocked"), false);
    proc.expect_line("stderr is full");
    proc.expect_line("ready");
    proc.kill("INT");
    proc.expect_line("polite: cancelled");
    // The stubborn task holds a shield for an hour: force it.
    proc.kill("INT");
    let (status, stdout, _) = proc.finish();
    assert_eq!(status.code(), Some(130), "{status:?}\nstdout: {stdout:?}");
    assert_eq!(count(&stdout, "run returned"), 0, "{stdout:?}");
}
