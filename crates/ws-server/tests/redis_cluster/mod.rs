//! A real Redis Cluster on loopback for the hub's tests: six `redis-server`
//! processes in cluster mode on free ports of 127.0.0.1, joined by
//! `redis-cli --cluster create` into three primaries with one replica each.
//! A test reads who serves which hash slot, picks rooms on every primary,
//! kills a node and waits for its replica to take over, restarts it, and
//! moves a slot with its keys from one primary to another. Every wait polls
//! the nodes for a state within a generous deadline; nothing sleeps to
//! synchronize. [`Redis`] is one `redis-server`, not in cluster mode.
//! Without redis-server installed, [`RedisCluster::start`] and
//! [`Redis::start`] say so and give `None`, unless `WS_REQUIRE_REDIS=1`,
//! when they fail.

#![allow(clippy::unwrap_used, dead_code)] // helpers panic on failure by design; each test file uses some

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, FromRedisValue, RedisResult, Value};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How many hash slots a Redis Cluster has.
pub(crate) const SLOTS: u16 = 16384;

/// How many nodes the cluster has: three primaries and one replica of each.
pub(crate) const NODES: usize = 6;

/// How long a node may be unreachable before the others count it failing:
/// short, so that a failover takes a couple of seconds.
const NODE_TIMEOUT_MS: &str = "1000";

/// Generous: a deadline for the cluster to reach a state, never a measure of speed.
const SETTLE: Duration = Duration::from_secs(60);

/// Between two looks at the nodes while waiting for a state.
const POLL: Duration = Duration::from_millis(100);

/// Generous: how long a connection or one command's answer may take.
const ANSWER: Duration = Duration::from_secs(30);

/// How long MIGRATE may take to hand one batch of keys to the target, in ms.
const MIGRATE_TIMEOUT_MS: u64 = 10_000;

/// How many keys one MIGRATE moves.
const MIGRATE_BATCH: usize = 100;

/// A Redis Cluster of this test alone; its processes are killed and its
/// directories removed when it is dropped, also when the test panics.
///
/// Nodes are named by their index, `0..NODES`, which stays the same across a
/// kill and a restart (as do the node's ports and node id).
pub(crate) struct RedisCluster {
    /// The nodes, by index.
    nodes: Vec<Node>,
    /// The directory holding one directory per node.
    dir: PathBuf,
}

/// One `redis-server` process and what it keeps across a restart.
struct Node {
    /// The port clients connect to.
    port: u16,
    /// The port of the cluster bus, where nodes talk to each other.
    bus_port: u16,
    /// Its working directory, with its `nodes.conf`.
    dir: PathBuf,
    /// The process, `None` while killed.
    child: Option<Child>,
    /// Its node id (CLUSTER MYID), known once it answers.
    id: String,
    /// What it served when it was killed as a primary: for `wait_failover`.
    served: Option<Primary>,
    /// A replica whose link to its primary was cut on purpose (`cut_off`):
    /// the cluster is settled without it linked.
    cut_off: bool,
}

/// A primary as the cluster sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Primary {
    /// Its node index.
    pub(crate) node: usize,
    /// Its node id.
    pub(crate) id: String,
    /// Its client port on 127.0.0.1.
    pub(crate) port: u16,
    /// The hash slots it serves, as ranges in increasing order.
    pub(crate) slots: Vec<RangeInclusive<u16>>,
    /// The node indexes of its replicas (a killed one included, while the
    /// cluster still lists it so).
    pub(crate) replicas: Vec<usize>,
}

impl Primary {
    /// Whether it serves `slot`.
    pub(crate) fn serves(&self, slot: u16) -> bool {
        self.slots.iter().any(|range| range.contains(&slot))
    }
}

/// A node as a line of some node's CLUSTER NODES describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    /// Its node id.
    id: String,
    /// `master` among its flags.
    primary: bool,
    /// The node id of its primary, when it is a replica.
    primary_id: Option<String>,
    /// Flagged `fail`, `fail?`, `handshake` or `noaddr`, or its link down.
    troubled: bool,
    /// The slots it serves.
    slots: Vec<RangeInclusive<u16>>,
    /// Slots being migrated or imported (`[slot->-id]`, `[slot-<-id]`),
    /// which a node lists on its own line only.
    open_slots: Vec<String>,
}

/// What one live node says about the cluster.
struct Report {
    /// The node index that said it.
    node: usize,
    /// Its CLUSTER NODES, sorted by node id.
    view: Vec<Seen>,
    /// Its CLUSTER INFO says `cluster_state:ok`.
    state_ok: bool,
    /// It is a primary, or a replica whose INFO says `master_link_status:up`.
    linked: bool,
}

impl RedisCluster {
    /// Starts a cluster of three primaries and three replicas and waits until
    /// it is formed; `None` (said on stderr) when redis-server or redis-cli is
    /// not installed, unless `WS_REQUIRE_REDIS=1`.
    pub(crate) async fn start() -> Option<RedisCluster> {
        if !installed() {
            return None;
        }
        let dir = std::env::temp_dir().join(format!("ws-server-redis-cluster-{}-{}", std::process::id(), next()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut cluster = RedisCluster { nodes: Vec::new(), dir };
        for index in 0..NODES {
            cluster.start_node(index).await;
        }
        cluster.create().await;
        cluster.wait_settled("the cluster is formed", formed).await;
        Some(cluster)
    }

    /// The address of the whole cluster for the server's `--redis`:
    /// `redis+cluster://127.0.0.1:P1,127.0.0.1:P2,...`, all six nodes.
    pub(crate) fn url(&self) -> String {
        let nodes: Vec<String> = self.nodes.iter().map(|node| format!("127.0.0.1:{}", node.port)).collect();
        format!("redis+cluster://{}", nodes.join(","))
    }

    /// The client port of `node`.
    pub(crate) fn port(&self, node: usize) -> u16 {
        self.nodes[node].port
    }

    /// The node listening on `port`, as a MOVED or ASK names it.
    pub(crate) fn node_on_port(&self, port: u16) -> usize {
        self.nodes.iter().position(|node| node.port == port).unwrap_or_else(|| panic!("no node on port {port}"))
    }

    /// The node id of `node`.
    pub(crate) fn id(&self, node: usize) -> &str {
        &self.nodes[node].id
    }

    /// Whether `node` runs (it was not killed, or was restarted since).
    pub(crate) fn is_running(&self, node: usize) -> bool {
        self.nodes[node].child.is_some()
    }

    /// A connection of its own to `node` (a plain one: a command for a slot
    /// the node does not serve gets MOVED). Long timeouts, for WAIT and MIGRATE.
    pub(crate) async fn connection(&self, node: usize) -> MultiplexedConnection {
        self.try_connection(node).await.unwrap_or_else(|e| panic!("connecting to node {node}: {e}"))
    }

    /// Sends `args` to `node` on a fresh connection: its reply, or the
    /// error (a MOVED included: see `redis::RedisError::redirect_node`).
    pub(crate) async fn command(&self, node: usize, args: &[&str]) -> RedisResult<Value> {
        self.try_query(node, args).await
    }

    /// Sends `args` to `node` on a fresh connection; its reply as `T`,
    /// panicking on an error.
    pub(crate) async fn query<T: FromRedisValue>(&self, node: usize, args: &[&str]) -> T {
        self.try_query(node, args).await.unwrap_or_else(|e| panic!("{args:?} on node {node}: {e}"))
    }

    /// The primaries serving slots now, in the order of their first slot,
    /// once the running nodes agree on them (see `wait_settled`).
    pub(crate) async fn primaries(&self) -> Vec<Primary> {
        let view = self.wait_settled("the nodes agree on the slots", |view| Ok(view.to_vec())).await;
        self.primaries_in(&view)
    }

    /// The primary serving `slot` now.
    pub(crate) async fn primary_of(&self, slot: u16) -> Primary {
        let primaries = self.primaries().await;
        primaries.into_iter().find(|primary| primary.serves(slot)).unwrap_or_else(|| panic!("no primary serves {slot}"))
    }

    /// The primary serving the keys of `room` (`ws:{room}:...`) now.
    pub(crate) async fn primary_of_room(&self, room: &str) -> Primary {
        self.primary_of(room_slot(room)).await
    }

    /// `n` room names for each primary, `"{prefix}-{i}"` for increasing i:
    /// the first n rooms' keys are on the first of `primaries()`, the next n
    /// on the second, the last n on the third.
    pub(crate) async fn rooms_on_every_primary(&self, prefix: &str, n: usize) -> Vec<String> {
        let primaries = self.primaries().await;
        let mut rooms = vec![Vec::new(); primaries.len()];
        for i in 0.. {
            if rooms.iter().all(|on| on.len() == n) {
                break;
            }
            let room = format!("{prefix}-{i}");
            let on = primaries.iter().position(|primary| primary.serves(room_slot(&room))).unwrap();
            if rooms[on].len() < n {
                rooms[on].push(room);
            }
        }
        rooms.concat()
    }

    /// Kills `node` outright (SIGKILL): whatever it held in memory is gone.
    /// A primary's slots and replicas are noted first, for `wait_failover`,
    /// once the cluster is settled (see `wait_settled`): kill one node at a
    /// time, and wait for its failover before killing the next.
    pub(crate) async fn kill(&mut self, node: usize) {
        assert!(self.is_running(node), "node {node} is not running");
        let primaries = self.primaries().await;
        self.nodes[node].served = primaries.into_iter().find(|primary| primary.node == node);
        self.nodes[node].kill();
    }

    /// Waits until `replica` holds every write its primary `node` had made.
    pub(crate) async fn wait_replicated(&self, node: usize, replica: usize) {
        let offset = |info: String| -> u64 {
            let line = info.lines().find_map(|l| l.strip_prefix("master_repl_offset:")).unwrap().trim().to_owned();
            line.parse().unwrap()
        };
        let made = offset(self.query(node, &["INFO", "replication"]).await);
        let held = async {
            while offset(self.query(replica, &["INFO", "replication"]).await) < made {
                // Between two looks at the replica.
                tokio::time::sleep(POLL).await;
            }
        };
        tokio::time::timeout(SETTLE, held).await.expect("the replica up to date in time");
    }

    /// Cuts `replica` off from its primary for good, the cluster knowing
    /// nothing of it: its replication link is closed and it cannot open it
    /// again (it offers a password its primary does not have), so the
    /// primary's writes from now on are held by the primary alone.
    pub(crate) async fn cut_off(&mut self, replica: usize) {
        let primary = self.primaries().await.into_iter().find(|p| p.replicas.contains(&replica));
        let primary = primary.expect("cut_off is for a replica").node;
        self.nodes[replica].cut_off = true;
        let () = self.query(replica, &["CONFIG", "SET", "masterauth", "not-the-primarys"]).await;
        let cut: u64 = self.query(primary, &["CLIENT", "KILL", "TYPE", "replica"]).await;
        assert_eq!(cut, 1, "the link of node {replica} cut");
        let down = async {
            while !self.query::<String>(replica, &["INFO", "replication"]).await.contains("master_link_status:down") {
                // Between two looks at the replica.
                tokio::time::sleep(POLL).await;
            }
        };
        tokio::time::timeout(SETTLE, down).await.expect("the replica's link down in time");
    }

    /// Waits until one of the replicas of `killed`, a primary killed with
    /// `kill`, is a primary serving all its former slots, and the running
    /// nodes are settled (see `wait_settled`); that replica's node index.
    pub(crate) async fn wait_failover(&self, killed: usize) -> usize {
        let former = self.nodes[killed].served.clone().expect("wait_failover is for a primary killed with kill");
        let what = format!("a replica of node {killed} serves its slots {:?}", former.slots);
        self.wait_settled(&what, |view| {
            let primaries = self.primaries_in(view);
            let heir = primaries.iter().find(|p| former.replicas.contains(&p.node) && serves_all(p, &former.slots));
            heir.map(|heir| heir.node).ok_or_else(|| format!("primaries {primaries:?}"))
        })
        .await
    }

    /// Starts a killed `node` again on its ports, with its nodes.conf (so it
    /// rejoins as the node it was; a primary that failed over comes back as a
    /// replica of the new one) and no data, and waits until it is a settled
    /// member of the cluster (see `wait_settled`).
    pub(crate) async fn restart(&mut self, node: usize) {
        assert!(!self.is_running(node), "node {node} is running");
        let _ = std::fs::remove_file(self.nodes[node].dir.join("dump.rdb"));
        self.nodes[node].spawn();
        assert!(self.answers_ping(node).await, "node {node} exited when restarted");
        self.nodes[node].served = None;
        self.wait_settled(&format!("node {node} rejoins"), |_| Ok(())).await;
    }

    /// Moves `slot` with its keys from its primary to the primary `to`, as
    /// `redis-cli --cluster reshard` does: the target IMPORTING, the source
    /// MIGRATING (new keys then go to the target by ASK), the keys moved in
    /// batches with MIGRATE until the source has none, then the slot given
    /// to the target on it, the source and every other primary. Waits until
    /// the running nodes agree that `to` serves it.
    pub(crate) async fn migrate_slot(&self, slot: u16, to: usize) {
        let primaries = self.primaries().await;
        let from = primaries.iter().find(|primary| primary.serves(slot)).unwrap().node;
        assert!(primaries.iter().any(|primary| primary.node == to), "node {to} is not a primary");
        if from == to {
            return;
        }
        let slot_arg = slot.to_string();
        let setslot = |state: &'static str, node: usize| ["CLUSTER", "SETSLOT", &slot_arg, state, self.id(node)];
        self.query::<()>(to, &setslot("IMPORTING", from)).await;
        self.query::<()>(from, &setslot("MIGRATING", to)).await;
        self.move_keys(slot, from, to).await;
        let others = primaries.iter().map(|primary| primary.node).filter(|node| ![from, to].contains(node));
        for node in [to, from].into_iter().chain(others) {
            self.query::<()>(node, &setslot("NODE", to)).await;
        }
        let what = format!("node {to} serves slot {slot}");
        self.wait_settled(&what, |view| self.serves(view, to, slot)).await;
    }

    /// Moves the keys of `slot` from the node `from` to the node `to`, by
    /// batches, until `from` has none left.
    async fn move_keys(&self, slot: u16, from: usize, to: usize) {
        let mut con = self.connection(from).await;
        loop {
            let mut keys = redis::cmd("CLUSTER");
            keys.arg("GETKEYSINSLOT").arg(slot).arg(MIGRATE_BATCH);
            let keys: Vec<Vec<u8>> = keys.query_async(&mut con).await.unwrap();
            if keys.is_empty() {
                return;
            }
            let mut migrate = redis::cmd("MIGRATE");
            migrate.arg("127.0.0.1").arg(self.port(to)).arg("").arg(0).arg(MIGRATE_TIMEOUT_MS).arg("KEYS").arg(keys);
            migrate.query_async::<()>(&mut con).await.unwrap();
        }
    }

    /// Ok when `to` serves `slot` in `view`.
    fn serves(&self, view: &[Seen], to: usize, slot: u16) -> Result<(), String> {
        let primaries = self.primaries_in(view);
        match primaries.iter().any(|primary| primary.node == to && primary.serves(slot)) {
            true => Ok(()),
            false => Err(format!("primaries {primaries:?}")),
        }
    }

    /// Waits until the cluster is settled and `done` accepts its view; what
    /// `done` gives. Settled: every running node answers, all agree on who
    /// serves which slots and who replicates whom, none has a slot migrating
    /// or importing, all say `cluster_state:ok`, none sees a node other than
    /// a killed one failing, unreachable or in handshake, and every running
    /// replica is linked to its primary.
    async fn wait_settled<T>(&self, what: &str, mut done: impl FnMut(&[Seen]) -> Result<T, String>) -> T {
        let deadline = Instant::now() + SETTLE;
        loop {
            let state = match self.settled().await {
                Ok(view) => done(&view),
                Err(why) => Err(why),
            };
            match state {
                Ok(done) => return done,
                Err(why) if Instant::now() > deadline => panic!("{what}: not within {SETTLE:?}; last: {why}"),
                Err(_) => tokio::time::sleep(POLL).await,
            }
        }
    }

    /// The view the running nodes share when the cluster is settled (see
    /// `wait_settled`); Err: what is not settled yet.
    async fn settled(&self) -> Result<Vec<Seen>, String> {
        let reports = self.reports().await?;
        let killed: Vec<&str> = (0..self.nodes.len()).filter(|&n| !self.is_running(n)).map(|n| self.id(n)).collect();
        for report in &reports {
            let node = report.node;
            if report.view.iter().any(|seen| !seen.open_slots.is_empty()) {
                return Err(format!("node {node} has open slots: {:?}", report.view));
            }
            if shape(&report.view) != shape(&reports[0].view) {
                return Err(format!("node {node} disagrees: {:?} against {:?}", report.view, reports[0].view));
            }
            if !report.state_ok || !(report.linked || self.nodes[node].cut_off) {
                return Err(format!("node {node}: cluster_state ok {}, linked {}", report.state_ok, report.linked));
            }
            if let Some(seen) = report.view.iter().find(|seen| seen.troubled && !killed.contains(&seen.id.as_str())) {
                return Err(format!("node {node} sees {seen:?}"));
            }
        }
        Ok(reports.into_iter().next().unwrap().view)
    }

    /// What every running node says; Err when one does not answer.
    async fn reports(&self) -> Result<Vec<Report>, String> {
        let mut reports = Vec::new();
        for node in (0..self.nodes.len()).filter(|&node| self.is_running(node)) {
            reports.push(self.report(node).await.map_err(|e| format!("node {node}: {e}"))?);
        }
        Ok(reports)
    }

    /// What `node` says: its CLUSTER NODES, CLUSTER INFO and INFO replication.
    async fn report(&self, node: usize) -> RedisResult<Report> {
        let mut con = self.try_connection(node).await?;
        let nodes: String = redis::cmd("CLUSTER").arg("NODES").query_async(&mut con).await?;
        let info: String = redis::cmd("CLUSTER").arg("INFO").query_async(&mut con).await?;
        let replication: String = redis::cmd("INFO").arg("replication").query_async(&mut con).await?;
        let mut view: Vec<Seen> = nodes.lines().filter(|line| !line.trim().is_empty()).map(parse_line).collect();
        view.sort_by(|a, b| a.id.cmp(&b.id));
        let linked = replication.contains("role:master") || replication.contains("master_link_status:up");
        Ok(Report { node, view, state_ok: info.contains("cluster_state:ok"), linked })
    }

    /// The primaries serving slots in `view`, in the order of their first slot.
    fn primaries_in(&self, view: &[Seen]) -> Vec<Primary> {
        let mut primaries: Vec<Primary> = view
            .iter()
            .filter(|seen| seen.primary && !seen.slots.is_empty())
            .map(|seen| Primary {
                node: self.index_of(&seen.id),
                id: seen.id.clone(),
                port: self.port(self.index_of(&seen.id)),
                slots: seen.slots.clone(),
                replicas: view
                    .iter()
                    .filter(|r| r.primary_id == Some(seen.id.clone()))
                    .map(|r| self.index_of(&r.id))
                    .collect(),
            })
            .collect();
        primaries.sort_by_key(|primary| *primary.slots[0].start());
        primaries
    }

    /// The index of the node with node id `id`.
    fn index_of(&self, id: &str) -> usize {
        self.nodes.iter().position(|node| node.id == id).unwrap_or_else(|| panic!("no node has id {id}"))
    }

    /// Starts node `index` on two free ports (again on two others if it exits
    /// at once, say because another process took a port) and learns its id.
    async fn start_node(&mut self, index: usize) {
        let dir = self.dir.join(format!("node-{index}"));
        std::fs::create_dir_all(&dir).unwrap();
        for _attempt in 0..3 {
            let [port, bus_port] = free_ports();
            let node =
                Node { port, bus_port, dir: dir.clone(), child: None, id: String::new(), served: None, cut_off: false };
            self.nodes.truncate(index);
            self.nodes.push(node);
            self.nodes[index].spawn();
            if self.answers_ping(index).await {
                self.nodes[index].id = self.query(index, &["CLUSTER", "MYID"]).await;
                return;
            }
        }
        panic!("redis-server of node {index} exited three times at start");
    }

    /// Waits until `node` answers PING: true, or false when it exits first.
    async fn answers_ping(&mut self, node: usize) -> bool {
        let deadline = Instant::now() + SETTLE;
        loop {
            if self.try_query::<String>(node, &["PING"]).await.is_ok() {
                return true;
            }
            if self.nodes[node].exited() {
                return false;
            }
            assert!(Instant::now() < deadline, "node {node} does not answer PING within {SETTLE:?}");
            tokio::time::sleep(POLL).await;
        }
    }

    /// Joins the nodes with `redis-cli --cluster create`, one replica each.
    async fn create(&self) {
        let mut cli = tokio::process::Command::new("redis-cli");
        cli.args(["--cluster", "create"]).args(self.nodes.iter().map(|node| format!("127.0.0.1:{}", node.port)));
        cli.args(["--cluster-replicas", "1", "--cluster-yes"]).stdin(Stdio::null()).kill_on_drop(true);
        let output = tokio::time::timeout(SETTLE, cli.output()).await.expect("redis-cli --cluster create in time");
        let output = output.unwrap();
        let said = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "redis-cli --cluster create: {}\n{said}", output.status);
    }

    /// A connection to `node` with long timeouts.
    async fn try_connection(&self, node: usize) -> RedisResult<MultiplexedConnection> {
        let config =
            AsyncConnectionConfig::new().set_connection_timeout(Some(ANSWER)).set_response_timeout(Some(ANSWER));
        let client = redis::Client::open(format!("redis://127.0.0.1:{}/", self.port(node)))?;
        client.get_multiplexed_async_connection_with_config(&config).await
    }

    /// Sends `args` to `node` on a fresh connection; its reply as `T`.
    async fn try_query<T: FromRedisValue>(&self, node: usize, args: &[&str]) -> RedisResult<T> {
        let mut con = self.try_connection(node).await?;
        redis::cmd(args[0]).arg(&args[1..]).query_async(&mut con).await
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Node {
    /// Starts its `redis-server` in cluster mode, without persistence.
    fn spawn(&mut self) {
        let (port, bus_port) = (self.port.to_string(), self.bus_port.to_string());
        let child = Command::new("redis-server")
            .args(["--port", &port, "--bind", "127.0.0.1", "--cluster-enabled", "yes", "--cluster-port", &bus_port])
            .args(["--cluster-config-file", "nodes.conf", "--cluster-node-timeout", NODE_TIMEOUT_MS])
            .args(["--cluster-replica-validity-factor", "0", "--save", "", "--appendonly", "no"])
            // A replica's first sync starts at once rather than 5 s later.
            .args(["--repl-diskless-sync-delay", "0"])
            .arg("--dir")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// Kills its process (SIGKILL), if it runs, and reaps it.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether its process has exited (reaped, then forgotten).
    fn exited(&mut self) -> bool {
        let exited = self.child.as_mut().is_none_or(|child| child.try_wait().unwrap().is_some());
        if exited {
            self.child = None;
        }
        exited
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The hash slot of `key`: CRC16 (XMODEM) of its hash tag, the part between
/// the first `{` and the next `}` when not empty, or else of the whole key,
/// mod 16384, as CLUSTER KEYSLOT says.
pub(crate) fn key_slot(key: impl AsRef<[u8]>) -> u16 {
    let key = key.as_ref();
    let tag = key.iter().position(|&b| b == b'{').and_then(|open| {
        let close = key[open + 1..].iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &key[open + 1..open + 1 + close])
    });
    crc16(tag.unwrap_or(key)) % SLOTS
}

/// The hash slot of the server's keys of `room`, `ws:{room}:seq` and the others.
pub(crate) fn room_slot(room: &str) -> u16 {
    key_slot(format!("ws:{{{room}}}:seq"))
}

/// CRC16 with polynomial 0x1021 and no initial value (XMODEM), Redis Cluster's.
fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in bytes {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
        }
    }
    crc
}

/// Ok when `view` is a formed cluster: six nodes, three primaries covering
/// every slot, each with one replica.
fn formed(view: &[Seen]) -> Result<(), String> {
    let primaries: Vec<&Seen> = view.iter().filter(|seen| seen.primary && !seen.slots.is_empty()).collect();
    let covered: usize = primaries.iter().flat_map(|seen| &seen.slots).map(|range| range.len()).sum();
    let replicated =
        primaries.iter().all(|p| view.iter().filter(|r| r.primary_id.as_ref() == Some(&p.id)).count() == 1);
    match view.len() == NODES && primaries.len() == 3 && covered == usize::from(SLOTS) && replicated {
        true => Ok(()),
        false => Err(format!("not formed yet: {view:?}")),
    }
}

/// Whether `primary` serves every slot of `slots`.
fn serves_all(primary: &Primary, slots: &[RangeInclusive<u16>]) -> bool {
    slots.iter().all(|range| range.clone().all(|slot| primary.serves(slot)))
}

/// What running nodes must agree on in their views: who is a primary, who
/// replicates whom, who serves which slots (not who is failing, which they
/// learn one after another).
fn shape(view: &[Seen]) -> Vec<Seen> {
    view.iter().map(|seen| Seen { troubled: false, open_slots: Vec::new(), ..seen.clone() }).collect()
}

/// Reads a line of CLUSTER NODES: `id addr flags primary ping pong epoch link slot...`.
fn parse_line(line: &str) -> Seen {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let flags: Vec<&str> = fields[2].split(',').collect();
    let troubled = ["fail", "fail?", "handshake", "noaddr"].iter().any(|flag| flags.contains(flag));
    let (open_slots, slots): (Vec<&str>, Vec<&str>) = fields[8..].iter().partition(|slot| slot.starts_with('['));
    Seen {
        id: fields[0].to_owned(),
        primary: flags.contains(&"master"),
        primary_id: (fields[3] != "-").then(|| fields[3].to_owned()),
        troubled: troubled || fields[7] != "connected",
        slots: slots.iter().map(|range| parse_range(range)).collect(),
        open_slots: open_slots.iter().map(|slot| slot.to_string()).collect(),
    }
}

/// Reads `a-b` or `a` as a range of slots.
fn parse_range(range: &str) -> RangeInclusive<u16> {
    let (start, end) = range.split_once('-').unwrap_or((range, range));
    start.parse().unwrap()..=end.parse().unwrap()
}

/// Two distinct free ports of 127.0.0.1: a node's and its cluster bus's.
fn free_ports() -> [u16; 2] {
    let listeners = [(); 2].map(|()| std::net::TcpListener::bind("127.0.0.1:0").unwrap());
    listeners.map(|listener| listener.local_addr().unwrap().port())
}

/// A `redis-server` of this test alone, not in cluster mode, killed when dropped.
pub(crate) struct Redis {
    child: Child,
    pub(crate) port: u16,
}

impl Redis {
    /// Starts one on a free port and waits until it answers PING; `None`
    /// (said on stderr) when redis-server is not installed, unless `WS_REQUIRE_REDIS=1`.
    pub(crate) async fn start() -> Option<Redis> {
        if !installed() {
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let mut started = Redis { child, port };
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
        let deadline = Instant::now() + SETTLE;
        while client.get_multiplexed_async_connection().await.is_err() {
            assert!(started.child.try_wait().unwrap().is_none(), "redis-server exited");
            assert!(Instant::now() < deadline, "redis-server answers within {SETTLE:?}");
            tokio::time::sleep(POLL).await;
        }
        Some(started)
    }

    /// Its URL.
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A number for this process's next cluster, so that its directory is its own.
fn next() -> usize {
    static CLUSTERS: AtomicUsize = AtomicUsize::new(0);
    CLUSTERS.fetch_add(1, Ordering::Relaxed)
}

/// Whether redis-server and redis-cli are installed; when not, says so on
/// stderr once, or fails when `WS_REQUIRE_REDIS=1`.
fn installed() -> bool {
    let runs = |program: &str| Command::new(program).arg("--version").stdout(Stdio::null()).status().is_ok();
    if runs("redis-server") && runs("redis-cli") {
        return true;
    }
    let why = "the Redis tests need redis-server and redis-cli (apt-get install redis-server)";
    assert!(std::env::var("WS_REQUIRE_REDIS").as_deref() != Ok("1"), "WS_REQUIRE_REDIS=1, but {why}");
    // Once for all the tests, straight to standard error, past the harness's capture.
    static SKIPPED: std::sync::Once = std::sync::Once::new();
    SKIPPED.call_once(|| {
        let skipped = format!("Redis tests skipped: {why}; WS_REQUIRE_REDIS=1 makes this a failure\n");
        let _ = std::io::Write::write_all(&mut std::io::stderr(), skipped.as_bytes());
    });
    false
}
