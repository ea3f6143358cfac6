//! The chaos run: three `ws-server` processes through one Redis, a few
//! hundred hub clients spread over them (each given every server's URL, so
//! that one whose server is gone goes to another), publishers sending
//! messages with ids, and, drawn from a seed, one fault after another: a
//! server SIGKILLed or stopped with SIGTERM and started again, Redis
//! SIGKILLed and started again, the link between a server and Redis or
//! between a server and its clients blackholed and restored, a burst that
//! makes members slow consumers. Then every fault is mended, every message
//! answered, and the audit: every acked message delivered to every member
//! once and in order or inside a gap the member was told of, never twice,
//! never a seq out of order, and kept in its room's history (Redis writes
//! every command to its append-only file before it answers, so a kill
//! loses nothing acked).

mod js;
pub mod proxy;
pub mod record;
pub mod stage;

use crate::Failure;
use clap::Parser;
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, index::sample};
use rand::{Rng, SeedableRng};
use record::{Answer, Record};
use serde_json::{Value, json};
use stage::{Stage, Store};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::process::Child;
use tokio::sync::watch;
use ws_client::hub::{Backoff, HubClient, HubEvent, HubSettings};
use ws_client::{ClientSettings, connect};
use ws_proto::{Event, Message};

/// Generous: how long the end may take to settle (every message answered, every member caught up).
const SETTLE: Duration = Duration::from_secs(180);

/// The run's settings, from the command line.
#[derive(Parser, Debug, Clone)]
#[command(name = "chaos", about = "The hub under faults, audited")]
pub struct Settings {
    /// How long faults are injected, in seconds.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// The seed of the faults and the clients' rooms; a random one if not given.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Hub clients, spread over the servers.
    #[arg(long, default_value_t = 300)]
    pub clients: usize,
    /// Members that are the JavaScript client (clients/js, in one Node
    /// process; its packages installed by `npm ci` there), besides the others.
    #[arg(long, default_value_t = 30)]
    pub js_clients: usize,
    /// Rooms; each client is a member of three.
    #[arg(long, default_value_t = 12)]
    pub rooms: usize,
    /// One client in this many publishes.
    #[arg(long, default_value_t = 10)]
    pub publisher_every: usize,
    /// Milliseconds between two messages of a publisher.
    #[arg(long, default_value_t = 500)]
    pub publish_ms: u64,
    /// Mean seconds between the end of a fault and the start of the next.
    #[arg(long, default_value_t = 5.0)]
    pub fault_every: f64,
    /// The kinds of fault to draw from: kill (a server SIGKILLed), stop
    /// (SIGTERM), redis (Redis SIGKILLed), redis-link and clients-link
    /// (blackholed), burst (slow consumers).
    #[arg(long, value_delimiter = ',', default_value = "kill,stop,redis,redis-link,clients-link,burst")]
    pub faults: Vec<FaultKind>,
    /// A Redis Cluster (three primaries with a replica each) instead of one
    /// Redis: the servers ack once a replica has a message
    /// (`--redis-ack-replicas 1`), `redis` SIGKILLs a primary (its replica
    /// takes over; it comes back as a replica, empty), and `redis-link` is
    /// left out (the servers reach the nodes directly).
    #[arg(long)]
    pub redis_cluster: bool,
    /// With `--redis-cluster`: the servers ack a message without waiting
    /// for a replica. A primary's death may then lose acked messages: the
    /// audit forgives an acked message missing from its room's history, but
    /// not one told to a member as neither delivered nor inside a gap, nor a
    /// seq that holds another message.
    #[arg(long, requires = "redis_cluster")]
    pub no_durable_acks: bool,
}

/// A kind of fault.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq)]
pub enum FaultKind {
    /// A server SIGKILLed and started again.
    Kill,
    /// A server stopped with SIGTERM and started again.
    Stop,
    /// Redis (a primary of a cluster) SIGKILLed and started again.
    Redis,
    /// The link between a server and Redis blackholed, then restored.
    RedisLink,
    /// The link between a server and its clients blackholed, then restored.
    ClientsLink,
    /// Members made slow consumers by a burst.
    Burst,
}

/// What a run found.
pub struct Outcome {
    /// The seed it ran with.
    pub seed: u64,
    /// What broke a promise.
    pub violations: Vec<String>,
}

/// Runs `settings`, printing what it does and counts: the seed and the violations found.
pub async fn run(settings: Settings) -> Result<Outcome, Failure> {
    let seed = settings.seed.unwrap_or_else(rand::random);
    let store = match settings.redis_cluster {
        false => stage::Kind::Single,
        true => stage::Kind::Cluster { durable: !settings.no_durable_acks },
    };
    println!(
        "chaos: seed {seed}, {} s of faults, 3 servers through {store}, {} clients and {} JavaScript members in {} rooms",
        settings.seconds, settings.clients, settings.js_clients, settings.rooms
    );
    let mut rng = StdRng::seed_from_u64(seed);
    let policies = if rng.random_bool(0.5) { ["skip", "disconnect"] } else { ["disconnect", "skip"] };
    let mut stage = Stage::start(3, &policies, store).await?;
    let mut settings = settings;
    if settings.redis_cluster {
        settings.faults.retain(|kind| *kind != FaultKind::RedisLink);
    }
    let crowd = Crowd::start(&settings, &stage.urls(), &mut rng).await?;
    let publishing = crowd.publish(&settings, seed);
    let mut faults = BTreeMap::new();
    let end = Instant::now() + Duration::from_secs(settings.seconds);
    let begun = Instant::now();
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_secs_f64(rng.random_range(0.0..2.0 * settings.fault_every))).await;
        let fault = Fault::draw(&mut rng, &crowd, &settings.faults);
        println!("{:>7.1} s  {fault}", begun.elapsed().as_secs_f64());
        *faults.entry(fault.kind()).or_default() += 1;
        if let Err(e) = fault.apply(&mut stage, &crowd).await {
            crowd.record().violations.push(format!("{fault}: {e}"));
        }
    }
    publishing.send_replace(true);
    crowd.settle().await;
    let (_auditor, url) = stage.auditor().await?;
    let history = crowd.history(&url, settings.rooms).await?;
    let mut record = crowd.record();
    record.audit(&history, settings.no_durable_acks);
    print_counts(&record, &faults, crowd.clients.len());
    Ok(Outcome { seed, violations: std::mem::take(&mut record.violations) })
}

/// Prints the faults injected, by kind, and what the record counted.
fn print_counts(record: &Record, faults: &BTreeMap<&str, u64>, clients: usize) {
    let kinds: Vec<String> = faults.iter().map(|(kind, n)| format!("{kind} {n}")).collect();
    println!("faults: {} ({})", faults.values().sum::<u64>(), kinds.join(", "));
    let mut refused: BTreeMap<&str, u64> = BTreeMap::new();
    let mut acked = 0;
    for sent in &record.sent {
        match &sent.answer {
            Answer::Acked(_) => acked += 1,
            Answer::Refused(code) => *refused.entry(code).or_default() += 1,
            Answer::Waiting => {}
        }
    }
    let refused: Vec<String> = refused.iter().map(|(code, n)| format!("{code} {n}")).collect();
    println!(
        "messages: {} sent, {acked} acked, refused: [{}], {} unanswered",
        record.sent.len(),
        refused.join(", "),
        record.waiting()
    );
    let memberships = || record.clients.iter().flat_map(|c| c.rooms.values());
    let delivered: usize = memberships().map(|m| m.delivered.len()).sum();
    let gaps: usize = memberships().map(|m| m.gaps.len()).sum();
    let missed: u64 = memberships().flat_map(|m| &m.gaps).map(|(from, to)| to - from + 1).sum();
    let connections: u64 = record.clients.iter().map(|c| c.connections).sum();
    let slow: u64 = record.clients.iter().map(|c| c.slow_closes).sum();
    let rejoins: u64 = record.clients.iter().map(|c| c.joins_refused).sum();
    println!(
        "deliveries: {delivered}; gaps told: {gaps} ({missed} seqs); reconnections: {}; slow-consumer closes: {slow}; \
         joins refused and sent again: {rejoins}",
        connections.saturating_sub(clients as u64)
    );
    println!("violations: {}", record.violations.len());
}

/// The hub clients, what they are in, and what they saw.
struct Crowd {
    clients: Vec<HubClient>,
    rooms: Vec<Vec<String>>,
    /// Per client: whether its application stops reading its events.
    slow: Vec<watch::Sender<bool>>,
    publishers: Vec<usize>,
    record: Arc<Mutex<Record>>,
    /// The Node process of the JavaScript members, which ends with it.
    _js: Option<Child>,
}

impl Crowd {
    /// `settings.clients` clients, client `c` on server `c % servers` first,
    /// each in three rooms; returns once every one has joined its rooms.
    async fn start(settings: &Settings, urls: &[String], rng: &mut StdRng) -> Result<Crowd, Failure> {
        let record = Arc::new(Mutex::new(Record::new(settings.clients + settings.js_clients)));
        let mut crowd = Crowd {
            clients: Vec::new(),
            rooms: Vec::new(),
            slow: Vec::new(),
            publishers: Vec::new(),
            record,
            _js: None,
        };
        for c in 0..settings.clients {
            let mut turn = urls.to_vec();
            turn.rotate_left(c % urls.len());
            let connection = ClientSettings {
                url: turn.remove(0),
                handshake_timeout: Duration::from_secs(5),
                ..ClientSettings::default()
            };
            let backoff = Backoff { initial: Duration::from_millis(100), max: Duration::from_secs(2) };
            let hub = HubSettings {
                servers: turn,
                backoff,
                heartbeat: Duration::from_secs(1),
                ..HubSettings::new(connection)
            };
            let (client, events) = HubClient::start(hub);
            let rooms = three_rooms(rng, settings.rooms);
            for room in &rooms {
                client.join(room);
            }
            let (slow, slowed) = watch::channel(false);
            tokio::spawn(listen(c, events, slowed, crowd.record.clone()));
            crowd.clients.push(client);
            crowd.rooms.push(rooms);
            crowd.slow.push(slow);
            if c % settings.publisher_every == 0 {
                crowd.publishers.push(c);
            }
        }
        if settings.js_clients > 0 {
            let rooms: Vec<Vec<String>> = (0..settings.js_clients).map(|_| three_rooms(rng, settings.rooms)).collect();
            crowd._js = Some(js::start(urls, settings.clients, &rooms, crowd.record.clone())?);
            crowd.rooms.extend(rooms);
        }
        let rooms = crowd.rooms.clone();
        let joined = move |r: &Record| {
            let started = |c: usize, room: &String| r.clients[c].rooms.get(room).is_some_and(|m| m.start.is_some());
            rooms.iter().enumerate().all(|(c, rooms)| rooms.iter().all(|room| started(c, room)))
        };
        if !crowd.until(joined, SETTLE).await {
            return Err("the clients did not all join their rooms".into());
        }
        Ok(crowd)
    }

    fn record(&self) -> MutexGuard<'_, Record> {
        lock(&self.record)
    }

    /// Client `c` sends its next message to `room`.
    fn send(&self, c: usize, room: &str, padding: &str) {
        send(&self.record, (c, &self.clients[c]), room, padding);
    }

    /// Starts the publishers: each sends a message to one of its rooms every
    /// `publish_ms`, until told to stop.
    fn publish(&self, settings: &Settings, seed: u64) -> watch::Sender<bool> {
        let (stop, stopped) = watch::channel(false);
        for &c in &self.publishers {
            let (client, rooms, record) = (self.clients[c].clone(), self.rooms[c].clone(), self.record.clone());
            let (mut stopped, period) = (stopped.clone(), Duration::from_millis(settings.publish_ms));
            let mut rng = StdRng::seed_from_u64(seed ^ c as u64);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(period);
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = stopped.wait_for(|stop| *stop) => return,
                    }
                    let room = rooms.choose(&mut rng).cloned().unwrap_or_default();
                    send(&record, (c, &client), &room, "");
                }
            });
        }
        stop
    }

    /// Waits until `done` holds of the record, polling, at most `patience`; whether it did.
    async fn until(&self, done: impl Fn(&Record) -> bool, patience: Duration) -> bool {
        let deadline = Instant::now() + patience;
        while !done(&self.record()) {
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        true
    }

    /// Waits until every message is answered and every member has reached
    /// its rooms' latest acked seq; what did not is a violation.
    async fn settle(&self) {
        if !self.until(|r| r.waiting() == 0, SETTLE).await {
            let waiting = self.record().waiting();
            self.record().violations.push(format!("{waiting} messages never answered"));
        }
        if !self.until(|r| r.behind() == 0, SETTLE).await {
            let behind = self.record().behind();
            self.record().violations.push(format!("{behind} members never reached their rooms' latest acked message"));
        }
    }

    /// Each room's history as a fresh member replays it: seq to message key.
    /// A join refused `unavailable` (the server's link to Redis not up yet)
    /// is sent again, as the protocol asks; each room's replay must end within [`SETTLE`].
    async fn history(&self, url: &str, rooms: usize) -> Result<BTreeMap<String, BTreeMap<u64, String>>, Failure> {
        let connection = ClientSettings { url: url.to_owned(), deflate: None, ..ClientSettings::default() };
        let (mut ws, _) = connect(&connection).await?;
        let mut history = BTreeMap::new();
        for r in 0..rooms {
            let room = format!("room-{r}");
            let join = Message::from(json!({"type": "join", "room": room, "since": 0, "id": room}).to_string());
            ws.send(&join).await?;
            // One deadline for the room: the server's pings must not put it off.
            let deadline = tokio::time::Instant::now() + SETTLE;
            let mut kept = BTreeMap::new();
            loop {
                let event = tokio::time::timeout_at(deadline, ws.recv()).await;
                let event = event.map_err(|_| format!("the auditor's replay of {room}: not done in {SETTLE:?}"))?;
                let Some(event) = event else { return Err("the auditor's connection ended".into()) };
                let Event::Message(Message::Text(text)) = event? else { continue };
                let envelope: Value = serde_json::from_str(text.as_str())?;
                // An error names the join by its id, not by the room.
                let ours = envelope["room"] == room.as_str() || envelope["id"] == room.as_str();
                match envelope["type"].as_str().unwrap_or_default() {
                    _ if !ours => {}
                    "message" => {
                        let seq = envelope["seq"].as_u64().unwrap_or(0);
                        kept.insert(seq, record::key(&envelope).to_owned());
                    }
                    "recovered" => break,
                    "error" if envelope["code"] == "unavailable" => {
                        println!(
                            "auditor: the join of {room} was refused unavailable ({}); sent again",
                            envelope["message"]
                        );
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        ws.send(&join).await?;
                    }
                    "gap" | "error" => return Err(format!("the auditor's replay of {room}: {envelope}").into()),
                    _ => {}
                }
            }
            history.insert(room, kept);
        }
        Ok(history)
    }
}

/// Three rooms of `rooms` (fewer if there are not three), drawn at random.
fn three_rooms(rng: &mut StdRng, rooms: usize) -> Vec<String> {
    sample(rng, rooms, 3.min(rooms)).iter().map(|r| format!("room-{r}")).collect()
}

/// The record, even if a task panicked holding it.
fn lock(record: &Mutex<Record>) -> MutexGuard<'_, Record> {
    record.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Client `c` sends its next message to `room`: its key, then `padding`.
fn send(record: &Mutex<Record>, (c, client): (usize, &HubClient), room: &str, padding: &str) {
    let mut record = lock(record);
    // Noted before any answer can be: the listener waits for the lock.
    let id = client.send(room, &format!("{}{padding}", record.next_key(c)));
    record.sent(c, id, room);
}

/// Hands client `c`'s events to the record, except while it is slow.
async fn listen(
    c: usize,
    mut events: tokio::sync::mpsc::Receiver<HubEvent>,
    mut slow: watch::Receiver<bool>,
    record: Arc<Mutex<Record>>,
) {
    loop {
        if slow.wait_for(|slow| !*slow).await.is_err() {
            return;
        }
        let Some(event) = events.recv().await else { return };
        lock(&record).heard(c, event);
    }
}

/// One fault, drawn from the seed.
#[derive(Debug)]
enum Fault {
    /// Server `server` SIGKILLed, started again after `down`.
    Kill { server: usize, down: Duration },
    /// Server `server` stopped with SIGTERM, started again after `down`.
    Stop { server: usize, down: Duration },
    /// Redis SIGKILLed, started again after `down`; on a cluster, the
    /// `primary`th of its primaries (modulo their number), after its replica took over.
    KillRedis { primary: usize, down: Duration },
    /// The link between server `server` and Redis blackholed for `dark`.
    DarkRedisLink { server: usize, dark: Duration },
    /// The link between server `server` and its clients blackholed for `dark`.
    DarkClients { server: usize, dark: Duration },
    /// The `slow` clients stop reading for `hold` while every publisher sends `messages` long messages at once.
    Burst { slow: Vec<usize>, messages: usize, hold: Duration },
}

impl Fault {
    /// A fault of one of `kinds`, with its target and length.
    fn draw(rng: &mut StdRng, crowd: &Crowd, kinds: &[FaultKind]) -> Fault {
        let server = rng.random_range(0..3);
        let seconds = |rng: &mut StdRng, from: f64, to: f64| Duration::from_secs_f64(rng.random_range(from..to));
        match kinds.choose(rng).copied().unwrap_or(FaultKind::Burst) {
            FaultKind::Kill => Fault::Kill { server, down: seconds(rng, 0.5, 5.0) },
            FaultKind::Stop => Fault::Stop { server, down: seconds(rng, 0.5, 5.0) },
            FaultKind::Redis => Fault::KillRedis { primary: rng.random_range(0..3), down: seconds(rng, 0.5, 5.0) },
            FaultKind::RedisLink => Fault::DarkRedisLink { server, dark: seconds(rng, 1.0, 10.0) },
            FaultKind::ClientsLink => Fault::DarkClients { server, dark: seconds(rng, 1.0, 10.0) },
            FaultKind::Burst => {
                let hold = seconds(rng, 2.0, 8.0);
                let slow = sample(rng, crowd.clients.len(), crowd.clients.len() / 10).into_vec();
                Fault::Burst { slow, messages: rng.random_range(50..300), hold }
            }
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Fault::Kill { .. } => "server killed",
            Fault::Stop { .. } => "server stopped",
            Fault::KillRedis { .. } => "Redis killed",
            Fault::DarkRedisLink { .. } => "Redis link dark",
            Fault::DarkClients { .. } => "clients' link dark",
            Fault::Burst { .. } => "burst",
        }
    }

    /// Injects the fault, waits out its length, and mends it.
    async fn apply(&self, stage: &mut Stage, crowd: &Crowd) -> Result<(), Failure> {
        match *self {
            Fault::Kill { server, down } => {
                stage.servers[server].kill().await?;
                tokio::time::sleep(down).await;
                stage.servers[server].start().await
            }
            Fault::Stop { server, down } => {
                let stopped = stage.servers[server].stop().await;
                tokio::time::sleep(down).await;
                stage.servers[server].start().await?;
                stopped
            }
            Fault::KillRedis { primary, down } => kill_redis(&mut stage.store, primary, down).await,
            Fault::DarkRedisLink { server, dark } => {
                if let Some(link) = &stage.servers[server].link {
                    blackhole(link, dark).await;
                }
                Ok(())
            }
            Fault::DarkClients { server, dark } => {
                blackhole(&stage.servers[server].front, dark).await;
                Ok(())
            }
            Fault::Burst { ref slow, messages, hold } => {
                burst(crowd, slow, messages, hold).await;
                Ok(())
            }
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Kill { server, down } | Fault::Stop { server, down } => {
                write!(f, "{}: server {server}, down {down:.1?}", self.kind())
            }
            Fault::KillRedis { down, .. } => write!(f, "{}: down {down:.1?}", self.kind()),
            Fault::DarkRedisLink { server, dark } | Fault::DarkClients { server, dark } => {
                write!(f, "{}: server {server}, for {dark:.1?}", self.kind())
            }
            Fault::Burst { slow, messages, hold } => {
                write!(
                    f,
                    "{}: {} clients slow for {hold:.1?}, {messages} messages from each publisher",
                    self.kind(),
                    slow.len()
                )
            }
        }
    }
}

/// SIGKILLs Redis and starts it again after `down`; on a cluster, a
/// primary, once its replica has taken over, and waits until it is that
/// one's replica.
async fn kill_redis(store: &mut Store, primary: usize, down: Duration) -> Result<(), Failure> {
    match store {
        Store::Single(redis) => {
            redis.kill().await?;
            tokio::time::sleep(down).await;
            redis.restart().await
        }
        Store::Cluster(cluster) => {
            let primaries = cluster.primaries().await?;
            let n = primaries[primary % primaries.len()];
            cluster.fail_over(n).await?;
            tokio::time::sleep(down).await;
            cluster.nodes[n].restart().await?;
            cluster.settled().await
        }
    }
}

async fn blackhole(proxy: &proxy::Proxy, dark: Duration) {
    proxy.blackhole();
    tokio::time::sleep(dark).await;
    proxy.restore();
}

/// Makes the `slow` clients stop reading while every publisher sends
/// `messages` messages of about 1 KB to its rooms at once; after `hold`,
/// they read again.
async fn burst(crowd: &Crowd, slow: &[usize], messages: usize, hold: Duration) {
    for &c in slow {
        crowd.slow[c].send_replace(true);
    }
    let padding: String = (0..900).map(|i| char::from(b'a' + (i * 7 % 26) as u8)).collect();
    let padding = format!(" {padding}");
    for &c in &crowd.publishers {
        for n in 0..messages {
            let room = &crowd.rooms[c][n % crowd.rooms[c].len()];
            crowd.send(c, room, &padding);
        }
    }
    tokio::time::sleep(hold).await;
    for &c in slow {
        crowd.slow[c].send_replace(false);
    }
}
