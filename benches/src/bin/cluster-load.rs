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

use ws_benches::redis::{Redis, RedisCluster};
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
