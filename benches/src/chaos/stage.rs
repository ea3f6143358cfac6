//! What the chaos run breaks: one Redis (persisting every write, so that a
//! kill loses nothing acked), and three `ws-server` processes, each linked
//! to Redis through a proxy and reached by its clients through another; or
//! a Redis Cluster (three primaries with a replica each, a failover taking
//! about two seconds), the servers acking a message once a replica has it.

use super::proxy::Proxy;
use crate::redis::{Redis, RedisCluster, scratch_dir};
use crate::{Failure, start_server};
use std::fmt;
use std::time::Duration;
use tokio::process::Child;

/// How long a stopped server has to complete its closing handshakes.
const SHUTDOWN: Duration = Duration::from_secs(5);

/// Generous: how long past its shutdown timeout a stopped server may take to exit.
const EXIT: Duration = Duration::from_secs(30);

/// Messages a room keeps: every one of a run, for the audit.
const HISTORY: &str = "1000000";

/// Where the servers keep the rooms.
pub enum Store {
    /// One Redis, each server linked to it through a proxy of the run.
    Single(Redis),
    /// A Redis Cluster, which the servers reach directly.
    Cluster(RedisCluster),
}

impl Store {
    /// Its URL for `--redis`.
    fn url(&self) -> String {
        match self {
            Store::Single(redis) => redis.url(),
            Store::Cluster(cluster) => cluster.url(),
        }
    }
}

/// The store and the servers.
pub struct Stage {
    /// The store every server shares.
    pub store: Store,
    /// The servers.
    pub servers: Vec<Server>,
}

/// A `ws-server` process, and the proxies it is reached and linked through.
pub struct Server {
    flags: Vec<String>,
    process: Option<Child>,
    /// Its clients' way in.
    pub front: Proxy,
    /// Its way to one Redis (none to a cluster).
    pub link: Option<Proxy>,
}

/// What the servers go through.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    /// One Redis, through a proxy the run can blackhole.
    Single,
    /// A Redis Cluster, reached directly.
    Cluster {
        /// A message is acked once a replica holds it (`--redis-ack-replicas 1`).
        durable: bool,
    },
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Single => "one Redis",
            Kind::Cluster { durable: true } => "a Redis Cluster (acks after a replica)",
            Kind::Cluster { durable: false } => "a Redis Cluster (acks without waiting for a replica)",
        })
    }
}

impl Stage {
    /// The store of `kind` and `servers` servers; server `i` deals with slow
    /// consumers by `policies[i % len]`.
    pub async fn start(servers: usize, policies: &[&str], kind: Kind) -> Result<Stage, Failure> {
        let store = match kind {
            Kind::Cluster { .. } => {
                Store::Cluster(RedisCluster::start_with(&["--cluster-node-timeout", "2000"]).await?)
            }
            Kind::Single => {
                let dir = scratch_dir("ws-chaos-redis")?;
                let dir = dir.to_str().ok_or("a temporary path that is not UTF-8")?.to_owned();
                let flags = ["--dir", &dir, "--save", "", "--appendonly", "yes", "--appendfsync", "always"];
                Store::Single(Redis::start_with(&flags).await?)
            }
        };
        let mut stage = Stage { store, servers: Vec::new() };
        for i in 0..servers {
            let (redis, link) = match &stage.store {
                Store::Single(redis) => {
                    let link = Proxy::start(format!("127.0.0.1:{}", redis.port).parse()?).await?;
                    (format!("redis://{}/", link.addr), Some(link))
                }
                Store::Cluster(cluster) => (cluster.url(), None),
            };
            let mut flags = Server::flags(&redis, policies[i % policies.len()]);
            if kind == (Kind::Cluster { durable: true }) {
                flags.extend(["--redis-ack-replicas".to_owned(), "1".to_owned()]);
            }
            // Turned to the server once it listens.
            let front = Proxy::start("127.0.0.1:9".parse()?).await?;
            let mut server = Server { flags, process: None, front, link };
            server.start().await?;
            stage.servers.push(server);
        }
        Ok(stage)
    }

    /// A server for the audit, on the store directly, that queues all a replay
    /// takes (the run's servers would close a member so far behind): its
    /// process and its hub's URL.
    pub async fn auditor(&self) -> Result<(Child, String), Failure> {
        let redis = self.store.url();
        let flags = ["--redis", &redis, "--history", HISTORY, "--max-queue-bytes", "1073741824"];
        let (process, addr) = start_server(&flags).await?;
        Ok((process, format!("ws://{addr}/ws")))
    }

    /// The URLs of the servers' fronts.
    pub fn urls(&self) -> Vec<String> {
        self.servers.iter().map(|s| format!("ws://{}/ws", s.front.addr)).collect()
    }
}

impl Server {
    /// A hub through Redis at `redis` that keeps every message of the run
    /// for recovery, queues little for a client (so that a burst makes slow
    /// consumers), and notices a silent client within seconds.
    fn flags(redis: &str, slow_consumer: &str) -> Vec<String> {
        let flags = [
            ("--redis", redis.to_owned()),
            ("--history", HISTORY.into()),
            ("--room-buffer", "64".into()),
            ("--max-queue-bytes", "65536".into()),
            ("--slow-consumer", slow_consumer.into()),
            ("--heartbeat-interval", "1".into()),
            ("--heartbeat-timeout", "3".into()),
            ("--shutdown-timeout", SHUTDOWN.as_secs().to_string()),
        ];
        flags.into_iter().flat_map(|(flag, value)| [flag.to_owned(), value]).collect()
    }

    /// Starts the process, and turns the front to it.
    pub async fn start(&mut self) -> Result<(), Failure> {
        let flags: Vec<&str> = self.flags.iter().map(String::as_str).collect();
        let (process, addr) = start_server(&flags).await?;
        self.front.retarget(addr.parse()?);
        self.process = Some(process);
        Ok(())
    }

    /// SIGKILLs the process.
    pub async fn kill(&mut self) -> Result<(), Failure> {
        if let Some(mut process) = self.process.take() {
            process.kill().await?;
        }
        Ok(())
    }

    /// Sends the process SIGTERM and waits for it to exit; an error if it
    /// does not within its shutdown timeout and then some (it is killed).
    pub async fn stop(&mut self) -> Result<(), Failure> {
        let Some(mut process) = self.process.take() else { return Ok(()) };
        let pid = process.id().ok_or("the server already exited")?;
        tokio::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().await?;
        match tokio::time::timeout(SHUTDOWN + EXIT, process.wait()).await {
            Ok(status) => match status? {
                status if status.success() => Ok(()),
                status => Err(format!("a server stopped with SIGTERM exited with {status}").into()),
            },
            Err(_) => {
                process.kill().await?;
                Err(format!("a server stopped with SIGTERM had not exited after {:?}", SHUTDOWN + EXIT).into())
            }
        }
    }
}
