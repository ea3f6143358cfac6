//! `ws-load`: load on a WebSocket server, ours or a peer (or on our hub's
//! HTTP publish API), measured on both sides: messages per second and
//! latency percentiles here, and, given the server's pid, its CPU time per
//! message and resident memory per connection from /proc. Those last
//! figures hold even when this generator, not the server, is the bottleneck.
//!
//! Run: `cargo run --release -p ws-benches --bin ws-load -- --pid PID echo --url ws://127.0.0.1:PORT/echo`
//! (`--help` on each mode lists its options). It runs on one thread: pin it
//! to a core of its own with taskset. Its last line is `result {json}`, the
//! figures for `benches/compare`.

mod api;
mod browser;
mod connect;
mod echo;
mod fanout;
mod idle;
mod soak;
mod wire;

use bytes::Bytes;
use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use http_body_util::Empty;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};
use ws_benches::{Failure, cpu_seconds, rss_bytes};

/// Load on a WebSocket server, with the server's own CPU and memory cost.
#[derive(Parser)]
#[command(name = "ws-load")]
struct Args {
    /// The server's process id: with it, its CPU time per message (from
    /// /proc/PID/stat) and its memory per connection (VmRSS) are reported.
    #[arg(long, global = true)]
    pid: Option<u32>,
    /// Seconds of load before the measurement starts.
    #[arg(long, global = true, default_value_t = 1.0)]
    warmup: f64,
    /// Seconds the measurement lasts.
    #[arg(long, global = true, default_value_t = 5.0)]
    duration: f64,
    /// Open every WebSocket as a stream of one HTTP/2 connection in
    /// cleartext (RFC 8441, prior knowledge: a ws-server with `--h2c`)
    /// rather than on a TCP connection of its own.
    #[arg(long, global = true)]
    http2: bool,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Connections that each keep messages in flight and read the echoes.
    Echo(echo::Options),
    /// Members of one room and a publisher; counts the deliveries.
    Fanout(fanout::Options),
    /// Connections held open with nothing to say: memory per connection.
    Idle(idle::Options),
    /// Messages published through the HTTP API over one kept-alive connection.
    Api(api::Options),
    /// Opening handshakes, one after another on several connections at once.
    Connect(connect::Options),
    /// Connections held for long, some reconnecting every second, under a
    /// steady publish: the server's memory, files and tasks sampled.
    Soak(soak::Options),
}

fn main() -> Result<(), Failure> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let local = tokio::task::LocalSet::new();
    let report = local.block_on(&runtime, async {
        let run = Run::new(&args);
        match &args.mode {
            Mode::Echo(options) => echo::run(options, &run).await,
            Mode::Fanout(options) => fanout::run(options, &run).await,
            Mode::Idle(options) => idle::run(options, &run).await,
            Mode::Api(options) => api::run(options, &run).await,
            Mode::Connect(options) => connect::run(options, &run).await,
            Mode::Soak(options) => soak::run(options, &run).await,
        }
    })?;
    println!("result {report}");
    Ok(())
}

/// How far a run has come.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Warmup,
    Measure,
    Stop,
}

/// What the tasks of a run share: the phase, the count of events (messages
/// echoed, deliveries, handshakes) and their latency while measuring, and
/// the first failure.
struct Shared {
    phase: Cell<Phase>,
    count: Cell<u64>,
    latency: RefCell<Histogram<u64>>,
    failure: RefCell<Option<String>>,
}

impl Shared {
    /// Counts one event that took `latency`, if the run is measuring.
    fn record(&self, latency: Duration) {
        self.record_n(latency, 1);
    }

    /// Counts `n` events that each took `latency`, if the run is measuring.
    fn record_n(&self, latency: Duration, n: u64) {
        if self.phase.get() == Phase::Measure && n > 0 {
            self.count.set(self.count.get() + n);
            let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
            self.latency.borrow_mut().saturating_record_n(nanos.max(1), n);
        }
    }

    /// Keeps the first failure of any task.
    fn fail(&self, failure: Failure) {
        self.failure.borrow_mut().get_or_insert_with(|| failure.to_string());
    }

    fn stopped(&self) -> bool {
        self.phase.get() == Phase::Stop
    }
}

/// A run: the shared state, the server to watch, and its timing.
struct Run {
    shared: Rc<Shared>,
    pid: Option<u32>,
    /// With `--http2`, the connection once it is made.
    http2: Option<RefCell<Option<SendRequest<Empty<Bytes>>>>>,
    warmup: Duration,
    duration: Duration,
}

impl Run {
    fn new(args: &Args) -> Run {
        let latency = Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds");
        let shared = Shared {
            phase: Cell::new(Phase::Warmup),
            count: Cell::new(0),
            latency: RefCell::new(latency),
            failure: RefCell::new(None),
        };
        Run {
            shared: Rc::new(shared),
            pid: args.pid,
            http2: args.http2.then(RefCell::default),
            warmup: Duration::from_secs_f64(args.warmup),
            duration: Duration::from_secs_f64(args.duration),
        }
    }

    /// Lets the load warm up, measures for the run's duration, then stops the
    /// tasks. The figures of the window: events per second, latency, and the
    /// server's CPU time per event.
    async fn measure(&self, event: &str, one: &str) -> Result<Value, Failure> {
        self.sleep_unless_failed(self.warmup).await?;
        let cpu = self.pid.map(cpu_seconds).transpose()?;
        let start = Instant::now();
        self.shared.phase.set(Phase::Measure);
        self.sleep_unless_failed(self.duration).await?;
        self.shared.phase.set(Phase::Stop);
        let wall = start.elapsed().as_secs_f64();
        let cpu = match (self.pid, cpu) {
            (Some(pid), Some(before)) => Some(cpu_seconds(pid)? - before),
            _ => None,
        };
        let count = self.shared.count.get();
        if count == 0 {
            return Err(format!("no {event} in {wall:.1} s").into());
        }
        let latency = self.shared.latency.borrow();
        let micros = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
        let per_second = count as f64 / wall;
        let cpu_us = cpu.map(|cpu| cpu * 1e6 / count as f64);
        println!(
            "{count} {event} in {wall:.2} s: {per_second:.0}/s; latency p50 {:.0} us, p99 {:.0} us, p99.9 {:.0} us",
            micros(0.5),
            micros(0.99),
            micros(0.999)
        );
        if let Some(cpu_us) = cpu_us {
            println!("server CPU: {cpu_us:.3} us per {one}");
        }
        Ok(json!({
            "count": count,
            "per_second": per_second,
            "p50_us": micros(0.5),
            "p99_us": micros(0.99),
            "server_cpu_us": cpu_us,
        }))
    }

    /// Waits `time`, but fails at once when a task has failed.
    async fn sleep_unless_failed(&self, time: Duration) -> Result<(), Failure> {
        let end = tokio::time::Instant::now() + time;
        while tokio::time::Instant::now() < end {
            self.check()?;
            tokio::time::sleep_until(end.min(tokio::time::Instant::now() + Duration::from_millis(50))).await;
        }
        self.check()
    }

    /// The first failure of any task, as an error.
    fn check(&self) -> Result<(), Failure> {
        match self.shared.failure.borrow().as_ref() {
            Some(failure) => Err(failure.clone().into()),
            None => Ok(()),
        }
    }

    /// The WebSocket endpoint of `url`, over the run's HTTP/2 connection
    /// with `--http2` (made to its server at the first call).
    async fn target(&self, url: &str) -> Result<wire::Target, Failure> {
        let mut target = wire::Target::parse(url)?;
        if let Some(http2) = &self.http2 {
            if http2.borrow().is_none() {
                let tcp = tokio::net::TcpStream::connect(&target.authority).await?;
                tcp.set_nodelay(true)?;
                let (send, connection) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await?;
                tokio::spawn(connection);
                *http2.borrow_mut() = Some(send);
            }
            target.http2.clone_from(&http2.borrow());
        }
        Ok(target)
    }

    /// The server's resident memory, when its pid is known.
    fn rss(&self) -> Result<Option<u64>, Failure> {
        self.pid.map(rss_bytes).transpose()
    }
}

/// Opens `count` connections, `at_once` handshakes in flight at a time, and
/// hands each to `serve` in a task of its own; a failure stops the run.
async fn open_all<F, Fut>(
    target: &wire::Target,
    count: usize,
    at_once: usize,
    run: &Run,
    serve: F,
) -> Result<(), Failure>
where
    F: Fn(wire::Conn) -> Fut,
    Fut: Future<Output = Result<(), Failure>> + 'static,
{
    let mut opened = 0;
    while opened < count {
        let batch = at_once.min(count - opened);
        let mut handshakes = Vec::with_capacity(batch);
        for _ in 0..batch {
            let target = target.clone();
            handshakes.push(tokio::task::spawn_local(async move { wire::Conn::open(&target).await }));
        }
        for handshake in handshakes {
            let conn = handshake.await??;
            let shared = run.shared.clone();
            let task = serve(conn);
            tokio::task::spawn_local(async move {
                if let Err(e) = task.await {
                    shared.fail(e);
                }
            });
        }
        opened += batch;
        run.check()?;
    }
    Ok(())
}
