//! The Redis Cluster harness of `tests/redis_cluster` proves itself: each
//! test starts its own six-node cluster and checks what the harness says
//! about it against what the nodes answer, through a failover, a restart and
//! a slot migration. Without redis-server installed the tests say so and
//! pass, unless `WS_REQUIRE_REDIS=1`, when they fail.

#![allow(clippy::unwrap_used)] // test helpers panic on failure by design

mod redis_cluster;

use redis::aio::MultiplexedConnection;
use redis::{ErrorKind, ServerErrorKind};
use redis_cluster::{NODES, RedisCluster, SLOTS, key_slot, room_slot};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Generous: a wait for an event, never a measure of speed.
const PATIENCE: Duration = Duration::from_secs(30);

#[tokio::test]
async fn three_primaries_with_one_replica_each_serve_every_slot() {
    let Some(cluster) = RedisCluster::start().await else { return };
    let primaries = cluster.primaries().await;
    assert_eq!(primaries.len(), 3, "{primaries:?}");
    for slot in 0..SLOTS {
        assert_eq!(primaries.iter().filter(|primary| primary.serves(slot)).count(), 1, "slot {slot}");
    }
    let mut nodes = BTreeSet::new();
    for primary in &primaries {
        assert_eq!(primary.replicas.len(), 1, "{primary:?}");
        assert_eq!(primary.port, cluster.port(primary.node));
        let role: Vec<redis::Value> = cluster.query(primary.replicas[0], &["ROLE"]).await;
        assert_eq!(role[0], redis::Value::BulkString(b"slave".to_vec()));
        nodes.extend([primary.node, primary.replicas[0]]);
    }
    assert_eq!(nodes.len(), NODES, "six distinct nodes");
    assert_eq!(cluster.url().matches("127.0.0.1:").count(), NODES, "{}", cluster.url());
    assert!(cluster.url().starts_with("redis+cluster://127.0.0.1:"), "{}", cluster.url());

    for key in ["ws:{general}:seq", "plain", "{user1000}.following", "empty{}tag", "{}", "a{b}{c}", "123456789"] {
        assert_eq!(cluster.query::<u16>(0, &["CLUSTER", "KEYSLOT", key]).await, key_slot(key), "{key}");
    }
    let rooms = cluster.rooms_on_every_primary("room", 2).await;
    assert_eq!(rooms.len(), 6, "{rooms:?}");
    let mut on = Vec::new();
    for room in &rooms {
        on.push(cluster.primary_of_room(room).await.node);
    }
    let expected: Vec<usize> = primaries.iter().flat_map(|primary| [primary.node; 2]).collect();
    assert_eq!(on, expected, "rooms {rooms:?}");
}

#[tokio::test]
async fn a_replicated_write_survives_its_primarys_failover_and_the_primary_rejoins_as_replica() {
    let Some(mut cluster) = RedisCluster::start().await else { return };
    let key = "ws:{failover}:seq";
    let slot = key_slot(key);
    let owner = cluster.primary_of(slot).await;
    let mut writer = cluster.connection(owner.node).await;
    redis::cmd("SET").arg(key).arg(7).query_async::<()>(&mut writer).await.unwrap();
    replicated(&mut writer).await;

    cluster.kill(owner.node).await;
    let heir = cluster.wait_failover(owner.node).await;
    assert_eq!(heir, owner.replicas[0]);
    assert_eq!(cluster.primary_of(slot).await.node, heir);
    assert_eq!(cluster.query::<String>(heir, &["GET", key]).await, "7");
    let moved = cluster.command(heir, &["GET", "{elsewhere}"]).await.map(|_| ()).unwrap_err();
    assert_eq!(moved.kind(), ErrorKind::Server(ServerErrorKind::Moved), "{moved}");

    cluster.restart(owner.node).await;
    let now = cluster.primary_of(slot).await;
    assert_eq!((now.node, now.replicas), (heir, vec![owner.node]));
    let mut reader = cluster.connection(owner.node).await;
    redis::cmd("READONLY").query_async::<()>(&mut reader).await.unwrap();
    let value: String = redis::cmd("GET").arg(key).query_async(&mut reader).await.unwrap();
    assert_eq!(value, "7", "the restarted node has the key from its new primary");
}

#[tokio::test]
async fn a_migrated_slot_takes_its_keys_to_the_target_and_the_old_node_answers_moved() {
    let Some(cluster) = RedisCluster::start().await else { return };
    let room = "migrating";
    let slot = room_slot(room);
    let (seq, history, members) =
        (format!("ws:{{{room}}}:seq"), format!("ws:{{{room}}}:history"), format!("ws:{{{room}}}:members"));
    let source = cluster.primary_of(slot).await;
    let target = cluster.primaries().await.into_iter().find(|primary| primary.node != source.node).unwrap();
    cluster.query::<()>(source.node, &["SET", &seq, "3"]).await;
    cluster.query::<()>(source.node, &["XADD", &history, "1-0", "m", "one"]).await;
    cluster.query::<()>(source.node, &["XADD", &history, "2-0", "m", "two"]).await;
    cluster.query::<()>(source.node, &["HSET", &members, "ada", "1"]).await;

    // A client increments the seq while the slot moves, following MOVED and ASK.
    let migrated = AtomicBool::new(false);
    let migrate = async {
        cluster.migrate_slot(slot, target.node).await;
        migrated.store(true, Ordering::Relaxed);
    };
    let increments = async {
        let (mut node, mut seqs) = (source.node, Vec::new());
        while !migrated.load(Ordering::Relaxed) {
            seqs.push(incr_following_redirects(&cluster, &mut node, &seq).await);
        }
        seqs
    };
    let ((), seqs) = tokio::join!(migrate, increments);
    let last = 3 + seqs.len() as i64;
    assert_eq!(seqs, (4..=last).collect::<Vec<i64>>(), "every increment counted once, in order");

    assert_eq!(cluster.primary_of(slot).await.node, target.node);
    let slot_arg = slot.to_string();
    assert_eq!(cluster.query::<u64>(target.node, &["CLUSTER", "COUNTKEYSINSLOT", &slot_arg]).await, 3);
    assert_eq!(cluster.query::<u64>(source.node, &["CLUSTER", "COUNTKEYSINSLOT", &slot_arg]).await, 0);
    assert_eq!(cluster.query::<i64>(target.node, &["GET", &seq]).await, last);
    assert_eq!(cluster.query::<u64>(target.node, &["XLEN", &history]).await, 2);
    assert_eq!(cluster.query::<String>(target.node, &["HGET", &members, "ada"]).await, "1");

    let moved = cluster.command(source.node, &["GET", &seq]).await.map(|_| ()).unwrap_err();
    assert_eq!(moved.kind(), ErrorKind::Server(ServerErrorKind::Moved), "{moved}");
    let to = format!("127.0.0.1:{}", target.port);
    assert_eq!(moved.redirect_node(), Some((to.as_str(), slot)), "{moved}");
    let kept = source.slots[0].clone().find(|&other| other != slot).unwrap();
    assert_eq!(cluster.primary_of(kept).await.node, source.node, "the source keeps its other slots");
}

/// INCRs `key` as a cluster client does: on `node`, which a MOVED changes;
/// once on the node an ASK names, after ASKING; again after TRYAGAIN.
async fn incr_following_redirects(cluster: &RedisCluster, node: &mut usize, key: &str) -> i64 {
    let mut asked = None;
    let deadline = Instant::now() + PATIENCE;
    loop {
        assert!(Instant::now() < deadline, "INCR {key} not answered within {PATIENCE:?}");
        let to = asked.take().unwrap_or(*node);
        let mut con = cluster.connection(to).await;
        if to != *node {
            redis::cmd("ASKING").query_async::<()>(&mut con).await.unwrap();
        }
        let error = match redis::cmd("INCR").arg(key).query_async(&mut con).await {
            Ok(seq) => return seq,
            Err(error) => error,
        };
        let redirect = error
            .redirect_node()
            .map(|(addr, _)| cluster.node_on_port(addr.rsplit(':').next().unwrap().parse().unwrap()));
        match error.kind() {
            ErrorKind::Server(ServerErrorKind::Moved) => *node = redirect.unwrap(),
            ErrorKind::Server(ServerErrorKind::Ask) => asked = redirect,
            ErrorKind::Server(ServerErrorKind::TryAgain) => {}
            _ => panic!("INCR {key} on node {to}: {error}"),
        }
    }
}

/// Waits until a replica has acknowledged every write of `con` so far
/// (`WAIT 1 1000`, again while it says none did).
async fn replicated(con: &mut MultiplexedConnection) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let acknowledged: u64 = redis::cmd("WAIT").arg(1).arg(1000).query_async(con).await.unwrap();
        if acknowledged >= 1 {
            return;
        }
        assert!(Instant::now() < deadline, "no replica acknowledged the write within {PATIENCE:?}");
    }
}
