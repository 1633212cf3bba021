//! HTTP/1 on loopback: `examples/http_server.rs` against the same hyper
//! service on plain tokio, each server a process of its own (this bench
//! binary run again, `HTTP_BENCH_SERVER` naming the server), the clients
//! raw HTTP/1.1 on a current-thread tokio runtime in the bench process.
//!
//! * `http_keepalive`: `CONNECTIONS` keep-alive connections, each sending
//!   `REQUESTS_PER_CONNECTION` requests one after another. criterion's
//!   throughput is requests per second; the bench also prints the server
//!   process's CPU time per request, which what else runs on the machine
//!   moves less than it moves wall time. Rows: `hatchery` (the example
//!   itself: a supervised, named child per connection in the root nursery
//!   of `Builder::new().tokio().run`, each connection under
//!   `cancel_gracefully`), `tokio_spawn` (`tokio::spawn` per connection,
//!   no shutdown at all) and `tokio_tracker` (a `TaskTracker` and a
//!   `CancellationToken`: what plain tokio needs for the shutdown the
//!   example does).
//! * `http_shutdown`: `IDLE_CONNECTIONS` keep-alive connections that each
//!   made one request and sit idle; the time from SIGINT to the server
//!   process's exit (status 130). Sides: `hatchery` and `tokio_tracker`,
//!   which shut down in the same order (listener closed; then each
//!   connection reads what is in its socket and stops with hyper's
//!   graceful shutdown) and exit the same way (one line on stderr, the
//!   runtime let go, `process::exit(130)`). Measured in rounds, one server
//!   of each kind per round in alternating order, outside criterion (see
//!   `shutdown_rounds`); printed as medians, ranges and their ratio.
//! * `http_keepalive_rounds`: the load of `http_keepalive` on `hatchery`
//!   and `tokio_spawn`, both started, one batch each per round in
//!   alternating order (`keepalive_rounds`); printed as medians and their
//!   ratio, throughput and server CPU per request.
//!
//! Every server runs a multi-thread tokio runtime with one worker per core
//! and its accept loop on the main thread. Run with
//! `cargo bench --features tokio --bench http` (a filter such as
//! `http_shutdown` runs only that part); `HTTP_BENCH_REVERSE=1` measures
//! the `http_keepalive` rows in the opposite order, so that runs can
//! alternate; `HTTP_SHUTDOWN_ROUNDS=N` sets the shutdown's rounds (60 by
//! default: with 20, the median of a run moved by 0.2 from run to run).
//! The signal is sent by a shell started beforehand (`kill` is a builtin:
//! no process starts between the clock and the signal).
//!
//! Figures: README.md, Performance.

#[cfg(not(unix))]
fn main() {
    eprintln!("benches/http.rs runs on Unix only: signals, sh, /proc");
}

#[cfg(unix)]
fn main() {
    bench::main();
}

#[cfg(unix)]
#[path = "../examples/http_server.rs"]
mod example;

#[cfg(unix)]
mod bench {
    use std::io::{self, BufRead, BufReader, Write};
    use std::net::SocketAddr;
    use std::pin::pin;
    use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
    use std::sync::atomic::Ordering;
    use std::task::Poll;
    use std::time::{Duration, Instant};

    use criterion::{Criterion, Throughput, criterion_group};
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::signal::unix::{SignalKind, signal};
    use tokio::task::JoinSet;
    use tokio_util::sync::CancellationToken;
    use tokio_util::task::TaskTracker;

    use super::example;

    const CONNECTIONS: usize = 50;
    const REQUESTS_PER_CONNECTION: usize = 100;
    const IDLE_CONNECTIONS: usize = 1_000;
    const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
    /// The variable that makes this binary a server.
    const SERVER: &str = "HTTP_BENCH_SERVER";

    pub fn main() {
        match std::env::var(SERVER).as_deref() {
            Ok("hatchery") => example::main(),
            Ok("tokio_spawn") => tokio_spawn_main(),
            Ok("tokio_tracker") => tokio_tracker_main(),
            Ok(other) => panic!("{SERVER}={other}: no such server"),
            Err(_) => {
                refuse_if_sigint_is_ignored();
                benches();
                criterion::Criterion::default()
                    .configure_from_args()
                    .final_summary();
                if selected("http_keepalive_rounds") {
                    keepalive_rounds();
                }
                if selected("http_shutdown") {
                    shutdown_rounds();
                }
            }
        }
    }

    /// The runtime of the plain tokio servers: what `Builder::new().tokio()`
    /// builds (one worker per core, everything enabled).
    fn server_runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime")
    }

    /// Plain tokio: `tokio::spawn` per connection; SIGINT exits at once.
    fn tokio_spawn_main() {
        let runtime = server_runtime();
        runtime.block_on(async {
            let mut interrupt = signal(SignalKind::interrupt()).expect("SIGINT handler");
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            println!(
                "listening on {}",
                listener.local_addr().expect("local_addr")
            );
            loop {
                let (stream, peer) = tokio::select! {
                    accepted = listener.accept() => accepted.expect("accept"),
                    _ = interrupt.recv() => break,
                };
                tokio::spawn(async move {
                    let connection = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service_fn(example::route));
                    if let Err(error) = connection.await {
                        eprintln!("connection from {peer}: {error}");
                    }
                });
            }
        });
        runtime.shutdown_background();
        std::process::exit(130);
    }

    /// Plain tokio with the example's shutdown: on SIGINT the listener is
    /// closed, then a `CancellationToken` tells every connection, which reads
    /// what is in its socket and stops (hyper's graceful shutdown, for up to
    /// the example's `GRACE`); a `TaskTracker` waits for them all.
    fn tokio_tracker_main() {
        let runtime = server_runtime();
        runtime.block_on(async {
            let mut interrupt = signal(SignalKind::interrupt()).expect("SIGINT handler");
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            println!(
                "listening on {}",
                listener.local_addr().expect("local_addr")
            );
            let listener_closed = CancellationToken::new();
            let tracker = TaskTracker::new();
            loop {
                let (stream, peer) = tokio::select! {
                    accepted = listener.accept() => accepted.expect("accept"),
                    _ = interrupt.recv() => break,
                };
                let listener_closed = listener_closed.clone();
                tracker.spawn(async move {
                    if let Err(error) = serve_tracked(stream, listener_closed).await {
                        eprintln!("connection from {peer}: {error}");
                    }
                });
            }
            eprintln!("received SIGINT, shutting down gracefully");
            drop(listener);
            listener_closed.cancel();
            tracker.close();
            tracker.wait().await;
        });
        runtime.shutdown_background();
        std::process::exit(130);
    }

    /// One connection of `tokio_tracker`: the example's `serve`, on tokio.
    async fn serve_tracked(
        stream: TcpStream,
        listener_closed: CancellationToken,
    ) -> Result<(), hyper::Error> {
        let (socket, read_past_tokio) = example::Socket::new(stream);
        let connection = http1::Builder::new()
            .serve_connection(TokioIo::new(socket), service_fn(example::route));
        let mut connection = pin!(connection);
        tokio::select! {
            served = connection.as_mut() => return served,
            () = listener_closed.cancelled() => {}
        }
        read_past_tokio.store(true, Ordering::Relaxed);
        let polled = std::future::poll_fn(|cx| Poll::Ready(connection.as_mut().poll(cx))).await;
        if let Poll::Ready(served) = polled {
            return served;
        }
        connection.as_mut().graceful_shutdown();
        tokio::time::timeout(example::GRACE, connection)
            .await
            .unwrap_or(Ok(()))
    }

    /// A server process, once it listens.
    struct Server {
        name: &'static str,
        child: Child,
        addr: SocketAddr,
        /// Kept open: the server may print more.
        _stdout: BufReader<ChildStdout>,
        /// A shell that sends SIGINT to the server once it reads a line.
        killer: Child,
        trigger: Option<ChildStdin>,
    }

    impl Server {
        fn start(name: &'static str) -> Server {
            let mut child = Command::new(std::env::current_exe().expect("current_exe"))
                .arg("0")
                .env(SERVER, name)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("start the server");
            let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
            let mut line = String::new();
            stdout
                .read_line(&mut line)
                .expect("the server's first line");
            let addr = line
                .trim()
                .strip_prefix("listening on ")
                .and_then(|addr| addr.parse().ok())
                .unwrap_or_else(|| panic!("{name} said {line:?}"));
            let mut killer = Command::new("sh")
                .arg("-c")
                .arg(format!("read _ && kill -INT {}", child.id()))
                .stdin(Stdio::piped())
                .spawn()
                .expect("start sh");
            let trigger = killer.stdin.take();
            Server {
                name,
                child,
                addr,
                _stdout: stdout,
                killer,
                trigger,
            }
        }

        /// CPU time the server process has used so far (every thread's,
        /// `/proc/PID/task/*/schedstat`); `None` where `/proc` does not say.
        fn cpu(&self) -> Option<Duration> {
            let mut total = 0;
            for task in std::fs::read_dir(format!("/proc/{}/task", self.child.id())).ok()? {
                // A thread that exited meanwhile has nothing more to count.
                let Ok(stat) = std::fs::read_to_string(task.ok()?.path().join("schedstat")) else {
                    continue;
                };
                total += stat.split_whitespace().next()?.parse::<u64>().ok()?;
            }
            Some(Duration::from_nanos(total))
        }

        /// Sends SIGINT; returns how long the server took to exit after it.
        fn interrupt(mut self) -> Duration {
            let mut trigger = self.trigger.take().expect("interrupted once");
            let sent = Instant::now();
            trigger
                .write_all(b"\n")
                .expect("tell the shell to send SIGINT");
            let status = self.child.wait().expect("wait for the server");
            let took = sent.elapsed();
            assert_eq!(
                status.code(),
                Some(130),
                "{} exited with {status}",
                self.name
            );
            took
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
            drop(self.trigger.take());
            let _ = self.killer.kill();
            let _ = self.killer.wait();
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
            clients.spawn(async move {
                // A connection the loopback's backlog turned away while a
                // thousand came at once: made again (rare). Its handshake
                // may even have completed on this side only (the server's
                // accept queue was full), with nothing ever answered: hence
                // the time limit.
                let mut again = 0;
                loop {
                    let made =
                        tokio::time::timeout(Duration::from_secs(5), keep_alive(addr, requests));
                    let made = made
                        .await
                        .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()));
                    match made {
                        Err(error) if again < 3 && error.kind() != io::ErrorKind::Other => {
                            again += 1;
                        }
                        made => break made,
                    }
                }
            });
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
    fn in_order<const N: usize>(mut servers: [&'static str; N]) -> [&'static str; N] {
        if std::env::var_os("HTTP_BENCH_REVERSE").is_some_and(|value| value == "1") {
            servers.reverse();
        }
        servers
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
        for name in in_order(["hatchery", "tokio_spawn", "tokio_tracker"]) {
            // Started when criterion runs this row (not when a filter skips it).
            let mut server = None;
            let (mut cpu, mut requests) = (Some(Duration::ZERO), 0);
            group.bench_function(name, |b| {
                let server: &Server = server.get_or_insert_with(|| Server::start(name));
                b.iter_custom(|iters| {
                    let cpu_before = server.cpu();
                    let start = Instant::now();
                    for _ in 0..iters {
                        client.block_on(clients(server.addr, CONNECTIONS, REQUESTS_PER_CONNECTION));
                    }
                    let took = start.elapsed();
                    cpu = cpu
                        .zip(server.cpu().zip(cpu_before))
                        .map(|(sum, (after, before))| sum + after.saturating_sub(before));
                    requests += iters as usize * REQUESTS;
                    took
                })
            });
            drop(server);
            if let (Some(cpu), 1..) = (cpu, requests) {
                let per_request = cpu.as_secs_f64() * 1e6 / requests as f64;
                println!("http_keepalive/{name}: server CPU {per_request:.2} µs per request");
            }
        }
        group.finish();
    }

    /// `http_keepalive_rounds`: the keep-alive load of `http_keepalive`,
    /// on `hatchery` and `tokio_spawn` started side by side, measured in
    /// rounds of one batch (`CONNECTIONS` × `REQUESTS_PER_CONNECTION`) per
    /// server in alternating order, so that the machine's other load and
    /// whatever builds up over the run fall on both alike (criterion's rows
    /// run one server after the other). Prints each side's median
    /// throughput and server CPU per request, and the ratios of the medians
    /// with the quartiles of a single round's.
    fn keepalive_rounds() {
        const ROUNDS: usize = 200;
        const NAMES: [&str; 2] = ["hatchery", "tokio_spawn"];
        const REQUESTS: f64 = (CONNECTIONS * REQUESTS_PER_CONNECTION) as f64;
        let client = client_runtime();
        let servers = NAMES.map(Server::start);
        for server in &servers {
            for _ in 0..2 {
                client.block_on(clients(server.addr, CONNECTIONS, REQUESTS_PER_CONNECTION));
            }
        }
        // Per side and round: requests per second, server CPU µs per request.
        let mut rates: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
        let mut cpus: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
        for round in 0..ROUNDS {
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for side in order {
                let server = &servers[side];
                let cpu_before = server.cpu();
                let start = Instant::now();
                client.block_on(clients(server.addr, CONNECTIONS, REQUESTS_PER_CONNECTION));
                let took = start.elapsed();
                rates[side].push(REQUESTS / took.as_secs_f64());
                if let (Some(after), Some(before)) = (server.cpu(), cpu_before) {
                    cpus[side].push(after.saturating_sub(before).as_secs_f64() * 1e6 / REQUESTS);
                }
            }
        }
        let quartiles = |ratios: &mut Vec<f64>| {
            ratios.sort_by(f64::total_cmp);
            let n = ratios.len();
            (ratios[n / 4], ratios[3 * n / 4])
        };
        let mut rate_ratios: Vec<f64> = (0..ROUNDS).map(|r| rates[0][r] / rates[1][r]).collect();
        let (rate_q1, rate_q3) = quartiles(&mut rate_ratios);
        let median = |values: &mut Vec<f64>| {
            values.sort_by(f64::total_cmp);
            values[values.len() / 2]
        };
        let [rate_h, rate_t] = rates.each_mut().map(median);
        println!(
            "http_keepalive_rounds: requests per second, median over {ROUNDS} rounds: hatchery \
             {rate_h:.0}, tokio_spawn {rate_t:.0}; hatchery / tokio_spawn {:.2} (medians), \
             quartiles of a round's ratio {rate_q1:.2} and {rate_q3:.2}",
            rate_h / rate_t,
        );
        if cpus.iter().all(|cpus| cpus.len() == ROUNDS) {
            let mut cpu_ratios: Vec<f64> = (0..ROUNDS).map(|r| cpus[0][r] / cpus[1][r]).collect();
            let (cpu_q1, cpu_q3) = quartiles(&mut cpu_ratios);
            let [cpu_h, cpu_t] = cpus.each_mut().map(median);
            println!(
                "http_keepalive_rounds: server CPU per request, median: hatchery {cpu_h:.2} µs, \
                 tokio_spawn {cpu_t:.2} µs; hatchery / tokio_spawn {:.2} (medians), quartiles \
                 of a round's ratio {cpu_q1:.2} and {cpu_q3:.2}",
                cpu_h / cpu_t,
            );
        }
    }

    /// `http_shutdown`, measured in rounds rather than as criterion rows:
    /// each round shuts down one server of each kind, in alternating order,
    /// so that what builds up over a run and the machine's other load fall
    /// on both alike. (As criterion rows, hatchery / tokio_tracker was
    /// 1.02 to 1.33 with hatchery first and 1.49 to 2.24 with it second;
    /// the first row leaves some 30,000 sockets in TIME_WAIT behind it.)
    /// Prints each side's median and range, and the ratio of the medians.
    fn shutdown_rounds() {
        const NAMES: [&str; 2] = ["hatchery", "tokio_tracker"];
        let rounds: usize = std::env::var("HTTP_SHUTDOWN_ROUNDS")
            .ok()
            .and_then(|rounds| rounds.parse().ok())
            .filter(|&rounds| rounds >= 4)
            .unwrap_or(60);
        let client = client_runtime();
        let mut times: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
        for round in 0..rounds {
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for side in order {
                let server = Server::start(NAMES[side]);
                let idle = client.block_on(clients(server.addr, IDLE_CONNECTIONS, 1));
                times[side].push(server.interrupt());
                client.block_on(expect_closed(idle));
            }
        }
        let mut ratios: Vec<f64> = (0..rounds)
            .map(|round| times[0][round].as_secs_f64() / times[1][round].as_secs_f64())
            .collect();
        ratios.sort_by(f64::total_cmp);
        for times in &mut times {
            times.sort();
        }
        for (name, times) in NAMES.iter().zip(&times) {
            println!(
                "http_shutdown/{name}: median {:.2?}, {:.2?} to {:.2?} over {rounds} rounds",
                times[rounds / 2],
                times[0],
                times[rounds - 1],
            );
        }
        println!(
            "http_shutdown: hatchery / tokio_tracker {:.2} (medians); per round {:.2} to {:.2}, \
             quartiles {:.2} and {:.2}",
            times[0][rounds / 2].as_secs_f64() / times[1][rounds / 2].as_secs_f64(),
            ratios[0],
            ratios[rounds - 1],
            ratios[rounds / 4],
            ratios[3 * rounds / 4],
        );
    }

    /// The servers inherit this process's signal dispositions, and hatchery
    /// leaves a SIGINT that was ignored at startup ignored (as Python and
    /// trio do): a bench started as a background job of a non-interactive
    /// shell (`cmd &`), where SIGINT starts ignored, would wait for ever for
    /// the hatchery server to shut down. Says so and exits instead.
    fn refuse_if_sigint_is_ignored() {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let ignored = status
            .lines()
            .find_map(|line| line.strip_prefix("SigIgn:"))
            .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
            .is_some_and(|mask| mask & (1 << (2 - 1)) != 0);
        if ignored {
            eprintln!(
                "benches/http.rs: SIGINT is ignored in this process (a background job of a \
                 non-interactive shell?); the servers it starts would inherit that and never \
                 shut down. Run the bench in the foreground."
            );
            std::process::exit(2);
        }
    }

    /// Whether the command line's filter (if any) selects `name`.
    fn selected(name: &str) -> bool {
        let filters: Vec<String> = std::env::args()
            .skip(1)
            .filter(|arg| !arg.starts_with('-'))
            .collect();
        filters.is_empty() || filters.iter().any(|filter| name.contains(filter.as_str()))
    }

    criterion_group!(benches, keepalive);
}
