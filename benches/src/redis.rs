//! `redis-server` processes of a run, on free ports of 127.0.0.1: one
//! Redis, or a Redis Cluster of three primaries with a replica each.
//! Debian's `redis-server` and `redis-cli` must be installed.

use crate::Failure;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// One `redis-server` of this run, killed when dropped.
pub struct Redis {
    child: Option<Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    flags: Vec<String>,
}

impl Redis {
    /// One without persistence.
    pub async fn start() -> Result<Redis, Failure> {
        Redis::start_with(&["--save", "", "--appendonly", "no"]).await
    }

    /// One with `flags` besides its port.
    pub async fn start_with(flags: &[&str]) -> Result<Redis, Failure> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut redis = Redis { child: None, port, flags: flags.iter().map(|f| f.to_string()).collect() };
        redis.restart().await?;
        Ok(redis)
    }

    /// Starts it (again, after [`Redis::kill`]) on its port with its flags, and waits until it takes connections.
    pub async fn restart(&mut self) -> Result<(), Failure> {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(&self.flags)
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("redis-server: {e} (apt-get install redis-server)"))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", self.port)).await.is_err() {
            if Instant::now() > deadline {
                return Err("redis-server did not start".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// SIGKILLs it and waits until it is gone.
    pub async fn kill(&mut self) -> Result<(), Failure> {
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
        }
        Ok(())
    }

    /// Its URL for `--redis`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// What `redis-cli` prints for `args` asked of it.
    pub async fn cli(&self, args: &[&str]) -> Result<String, Failure> {
        let output = Command::new("redis-cli").args(["-p", &self.port.to_string()]).args(args).output().await?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

/// A directory of this run for a `redis-server`'s files, emptied.
pub fn scratch_dir(name: &str) -> Result<PathBuf, Failure> {
    let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// A Redis Cluster of this run: three primaries with a replica each, on free ports.
pub struct RedisCluster {
    /// Its nodes, primaries and replicas.
    pub nodes: Vec<Redis>,
}

impl RedisCluster {
    /// Six nodes, each with a directory of its own (a replica's first
    /// sync writes dump.rdb there), joined by `redis-cli --cluster create`.
    pub async fn start() -> Result<RedisCluster, Failure> {
        RedisCluster::start_with(&[]).await
    }

    /// The same, each node given `flags` too.
    pub async fn start_with(flags: &[&str]) -> Result<RedisCluster, Failure> {
        let mut nodes = Vec::new();
        for n in 0..6 {
            let dir = scratch_dir(&format!("ws-redis-cluster-{n}"))?;
            let dir = dir.to_str().ok_or("a temporary path that is not UTF-8")?.to_owned();
            let own = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--dir", &dir];
            nodes.push(Redis::start_with(&[&own[..], &["--save", "", "--appendonly", "no"], flags].concat()).await?);
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
    pub async fn settled(&self) -> Result<(), Failure> {
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

    /// The nodes that are primaries now, by their place in `nodes`.
    pub async fn primaries(&self) -> Result<Vec<usize>, Failure> {
        let mut primaries = Vec::new();
        for (n, node) in self.nodes.iter().enumerate() {
            if node.cli(&["role"]).await?.starts_with("master") {
                primaries.push(n);
            }
        }
        Ok(primaries)
    }

    /// The replica of primary `n`, by its place in `nodes`.
    pub async fn replica_of(&self, n: usize) -> Result<usize, Failure> {
        let port = self.nodes[n].port.to_string();
        for (r, node) in self.nodes.iter().enumerate() {
            let role = node.cli(&["role"]).await?;
            let mut lines = role.lines();
            if lines.next() == Some("slave") && lines.nth(1) == Some(port.as_str()) {
                return Ok(r);
            }
        }
        Err(format!("primary {} has no replica", self.nodes[n].port).into())
    }

    /// SIGKILLs primary `n` and waits until its replica has taken over.
    pub async fn fail_over(&mut self, n: usize) -> Result<(), Failure> {
        let replica = self.replica_of(n).await?;
        self.nodes[n].kill().await?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.nodes[replica].cli(&["role"]).await?.starts_with("master") {
            if Instant::now() > deadline {
                return Err(format!("no replica took over from {} within 60 s", self.nodes[n].port).into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// Its URL for `--redis`.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        format!("redis+cluster://{}", nodes.join(","))
    }
}
