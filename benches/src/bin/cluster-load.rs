//! Messages across servers joined through Redis, beside one server in
//! memory: messages published per second, deliveries per second, and the
//! latency from a publish to each member's receipt (p50, p99).
//!
//! Run: `cargo build --release -p ws-server && cargo run --release -p ws-benches --bin cluster-load`
//!
//! Arguments: members (default 100), messages (default 20000), publishers
//! (default 1), window (default 64): each publisher keeps up to that many
//! messages in flight (unacked); one publisher with a window of 1 measures
//! the latency of a lone message. Members and publishers are spread over
//! the servers. It starts its own `redis-server`
//! (Debian's package) on a free port, without persistence. The servers
//! queue up to 256 MiB and 65536 messages per client, so that a member
//! behind a burst is not closed as a slow consumer. The clients offer
//! permessage-deflate, as browsers do; with `CLUSTER_LOAD_PLAIN=1` they
//! do not, and the members' inflating no longer takes most of the
//! clients' share of the cores. Clients and servers share the machine's
//! cores: the figures are for comparing the two set-ups in the same run,
//! not absolute.

use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use ws_benches::room::{Load, QUEUE, report, run};
use ws_benches::{Failure, start_server};

#[tokio::main]
async fn main() -> Result<(), Failure> {
    let Load { members, messages, publishers, window } = Load::from_args()?;

    let memory = start_server(&QUEUE).await?;
    report(
        "one server, in memory",
        &run(std::slice::from_ref(&memory.1), members, messages, (publishers, window)).await?,
    );
    drop(memory);

    let redis = Redis::start().await?;
    let url = redis.url();
    let first = start_server(&[&QUEUE[..], &["--redis", &url]].concat()).await?;
    let second = start_server(&[&QUEUE[..], &["--redis", &url]].concat()).await?;
    let report_two = run(&[first.1.clone(), second.1.clone()], members, messages, (publishers, window)).await?;
    report("two servers through Redis", &report_two);
    drop((first, second, redis));

    let cluster = match std::env::var("CLUSTER_LOAD_CLUSTER") {
        Ok(url) => Err(url),
        Err(_) => Ok(RedisCluster::start().await?),
    };
    let url = cluster.as_ref().map_or_else(|url| url.clone(), RedisCluster::url);
    for (setup, durable) in
        [("two servers, Redis Cluster", &[][..]), ("... acks after 1 replica", &["--redis-ack-replicas", "1"])]
    {
        let flags = [&QUEUE[..], &["--redis", &url], durable].concat();
        let (first, second) = (start_server(&flags).await?, start_server(&flags).await?);
        report(setup, &run(&[first.1.clone(), second.1.clone()], members, messages, (publishers, window)).await?);
    }
    Ok(())
}

/// A `redis-server` of this run, on a free port, without persistence.
struct Redis {
    _child: Child,
    port: u16,
}

impl Redis {
    async fn start() -> Result<Redis, Failure> {
        Redis::start_with(&[]).await
    }

    /// One with `flags` besides the port and no persistence.
    async fn start_with(flags: &[&str]) -> Result<Redis, Failure> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(flags)
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("redis-server: {e} (apt-get install redis-server)"))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            if Instant::now() > deadline {
                return Err("redis-server did not start".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Redis { _child: child, port })
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

/// A Redis Cluster of this run: three primaries with a replica each, on free ports.
struct RedisCluster {
    nodes: Vec<Redis>,
}

impl RedisCluster {
    async fn start() -> Result<RedisCluster, Failure> {
        let mut nodes = Vec::new();
        for _ in 0..6 {
            // A directory of its own: a replica's first sync writes dump.rdb there.
            let dir = std::env::temp_dir().join(format!("cluster-load-{}-{}", std::process::id(), nodes.len()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir)?;
            let dir = dir.to_str().ok_or("a temporary path that is not UTF-8")?.to_owned();
            let flags = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--dir", &dir];
            nodes.push(Redis::start_with(&flags).await?);
        }
        let cluster = RedisCluster { nodes };
        let addresses: Vec<String> = cluster.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdout(Stdio::null())
            .status()
            .await?;
        if !created.success() {
            return Err("redis-cli --cluster create failed".into());
        }
        cluster.settled().await?;
        Ok(cluster)
    }

    /// Waits until every node says the cluster is ok and every primary has its replica.
    async fn settled(&self) -> Result<(), Failure> {
        let deadline = Instant::now() + Duration::from_secs(60);
        for node in &self.nodes {
            loop {
                let info = node.cli(&["cluster", "info"]).await? + &node.cli(&["info", "replication"]).await?;
                // A replica linked to its primary, or a primary with its replica.
                let replicated = info.contains("master_link_status:up") || info.contains("connected_slaves:1");
                if info.contains("cluster_state:ok") && replicated {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!("the cluster did not settle: {info}").into());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    fn url(&self) -> String {
        let nodes: Vec<String> = self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        format!("redis+cluster://{}", nodes.join(","))
    }
}

impl Redis {
    /// What `redis-cli` prints for `args` asked of this one.
    async fn cli(&self, args: &[&str]) -> Result<String, Failure> {
        let output = Command::new("redis-cli").args(["-p", &self.port.to_string()]).args(args).output().await?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}
