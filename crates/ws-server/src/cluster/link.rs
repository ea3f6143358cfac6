//! The connections to Redis: one Redis (`redis://`) or a Redis Cluster
//! (`redis+cluster://h1:7000,h2:7001`). Commands go through [`Commands`],
//! which the cluster's client routes to the primary of each key's slot;
//! channels are heard through a [`Feed`]: plain pub/sub on one Redis,
//! sharded pub/sub (SSUBSCRIBE, SPUBLISH) on a cluster, where a room's
//! channel lives on the node of its slot.

use super::store::{BACKOFF, REQUEST_TIMEOUT};
use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection, PubSubSink, PubSubStream,
};
use redis::cluster::{ClusterClient, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::{
    AsyncConnectionConfig, Cmd, ConnectionAddr, ConnectionInfo, ErrorKind, IntoConnectionInfo, Msg, Pipeline, PushInfo,
    PushKind, RedisError, RedisFuture, RedisResult, Value,
};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use tokio::sync::Notify;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;

/// The scheme of a Redis Cluster's URL; its nodes follow, separated by commas.
const CLUSTER_SCHEME: &str = "redis+cluster://";

/// Where the hub's Redis is.
#[derive(Clone)]
pub(super) enum Target {
    Single(redis::Client),
    /// A Redis Cluster, reached through any of its nodes (RESP3, for sharded
    /// pub/sub); the nodes its URL names, whose credentials are every node's.
    Cluster {
        client: Box<ClusterClient>,
        named: Vec<ConnectionInfo>,
    },
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.sharded() { "Target::Cluster" } else { "Target::Single" })
    }
}

impl Target {
    /// The Redis of `url`: a cluster for `redis+cluster://[user:password@]h1:p1,h2:p2`.
    pub(super) fn open(url: &str) -> RedisResult<Target> {
        let Some(nodes) = url.strip_prefix(CLUSTER_SCHEME) else {
            return Ok(Target::Single(redis::Client::open(url.into_connection_info()?.set_tcp_settings(tcp()))?));
        };
        let nodes = nodes.trim_end_matches('/');
        let (credentials, nodes) = nodes.rsplit_once('@').map_or(("", nodes), |(c, n)| (c, n));
        let urls = nodes.split(',').map(|node| match credentials {
            "" => format!("redis://{node}/"),
            credentials => format!("redis://{credentials}@{node}/"),
        });
        let named = urls.map(|url| Ok(url.into_connection_info()?.set_tcp_settings(tcp())));
        let named = named.collect::<RedisResult<Vec<_>>>()?;
        let client = ClusterClient::builder(named.clone())
            .use_protocol(redis::ProtocolVersion::RESP3)
            .tcp_settings(tcp())
            .connection_timeout(REQUEST_TIMEOUT)
            .response_timeout(REQUEST_TIMEOUT)
            .build()?;
        Ok(Target::Cluster { client: Box::new(client), named })
    }

    /// Whether channels are sharded: a Redis Cluster.
    pub(super) fn sharded(&self) -> bool {
        matches!(self, Target::Cluster { .. })
    }

    /// The addresses (`host:port`) of the nodes the URL names: the one
    /// Redis, or the nodes a cluster is first reached through.
    pub(super) fn named(&self) -> Vec<String> {
        match self {
            Target::Single(client) => vec![client.get_connection_info().addr().to_string()],
            Target::Cluster { named, .. } => named.iter().map(|node| node.addr().to_string()).collect(),
        }
    }

    /// A connection to the one node at `address` (`host:port`, as a cluster
    /// names its nodes), with the URL's credentials, made in the background
    /// and again whenever it is lost; for one Redis, a connection to it.
    pub(super) fn node(&self, address: &str) -> RedisResult<ConnectionManager> {
        let client = match self {
            Target::Single(client) => client.clone(),
            Target::Cluster { named, .. } => {
                let (host, port) = address.rsplit_once(':').unwrap_or((address, ""));
                let (Ok(port), Some(first)) = (port.parse(), named.first()) else {
                    return Err((ErrorKind::InvalidClientConfig, "not a node's host:port", address.into()).into());
                };
                redis::Client::open(first.clone().set_addr(ConnectionAddr::Tcp(host.to_owned(), port)))?
            }
        };
        manager(client)
    }

    /// The connection for commands, made in the background and again
    /// whenever it is lost.
    pub(super) fn commands(&self) -> RedisResult<Commands> {
        match self {
            Target::Single(client) => Ok(Commands::Single(Link::start(client.clone()))),
            Target::Cluster { client, .. } => {
                let config = Self::cluster_config();
                Ok(Commands::Cluster(client.get_pending_async_connection_with_config(config)))
            }
        }
    }

    /// A new subscription connection.
    pub(super) async fn feed(&self) -> RedisResult<Feed> {
        match self {
            Target::Single(client) => {
                let (sink, stream) = client.get_async_pubsub().await?.split();
                Ok(Feed::Single { sink, stream })
            }
            Target::Cluster { client, .. } => {
                let (pushes, heard) = mpsc::unbounded_channel();
                let config = Self::cluster_config().set_push_sender(pushes);
                let connection = client.get_async_connection_with_config(config).await?;
                Ok(Feed::Cluster { connection, heard })
            }
        }
    }

    fn cluster_config() -> ClusterConfig {
        ClusterConfig::new().set_connection_timeout(REQUEST_TIMEOUT).set_response_timeout(REQUEST_TIMEOUT)
    }
}

/// A connection to one Redis (or one node), made in the background and again
/// whenever it is lost.
/// Every request is sent at once (no Nagle delay): a request written while
/// the one before waits in a `WAIT` would otherwise be held for the
/// peer's delayed ACK, tens of milliseconds.
fn tcp() -> redis::io::tcp::TcpSettings {
    redis::io::tcp::TcpSettings::default().set_nodelay(true)
}

fn manager(client: redis::Client) -> RedisResult<ConnectionManager> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(REQUEST_TIMEOUT))
        .set_response_timeout(Some(REQUEST_TIMEOUT))
        .set_min_delay(BACKOFF.0)
        .set_max_delay(BACKOFF.1)
        .set_number_of_retries(1);
    ConnectionManager::new_lazy_with_config(client, config)
}

/// The queue of commands waiting to be written to Redis takes every one at
/// once. Bounded, it would let a command through before an earlier one of
/// the same hub connection that waited for room (the room freed goes to the
/// earlier, which is only polled later). Each hub connection's pipeline and
/// the connection limit bound it.
const COMMANDS_QUEUED: usize = tokio::sync::Semaphore::MAX_PERMITS;

/// A connection for commands to one Redis, made in the background and again
/// whenever it is lost. A command is handed to the connection when it is
/// first polled, or fails at once while there is none, so that a hub
/// connection's messages, each sent on before the one before is answered,
/// reach Redis in the order they were sent. (A `ConnectionManager` holds
/// commands while it connects, and lets newer ones through before those.)
#[derive(Clone)]
pub(super) struct Link(Arc<Linked>);

struct Linked {
    client: redis::Client,
    /// The connection and its number, while there is one.
    current: Mutex<Option<(u64, MultiplexedConnection)>>,
    /// Told when the connection is lost, and when the last handle is dropped.
    lost: Arc<Notify>,
}

impl Drop for Linked {
    fn drop(&mut self) {
        self.lost.notify_one();
    }
}

impl Link {
    /// Connects in the background, and again whenever the connection is lost.
    fn start(client: redis::Client) -> Link {
        let lost = Arc::new(Notify::new());
        let link = Link(Arc::new(Linked { client, current: Mutex::new(None), lost: lost.clone() }));
        tokio::spawn(Link::keep(Arc::downgrade(&link.0), lost));
        link
    }

    /// Connects, with backoff, each time the connection is lost, until every handle is dropped.
    async fn keep(link: Weak<Linked>, lost: Arc<Notify>) {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(REQUEST_TIMEOUT))
            .set_response_timeout(Some(REQUEST_TIMEOUT))
            .set_pipeline_buffer_size(COMMANDS_QUEUED);
        let (mut number, mut delay) = (0, BACKOFF.0);
        while let Some(client) = link.upgrade().map(|linked| linked.client.clone()) {
            let Ok(connection) = client.get_multiplexed_async_connection_with_config(&config).await else {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(BACKOFF.1);
                continue;
            };
            let Some(linked) = link.upgrade() else { return };
            number += 1;
            let told = lost.notified();
            *linked.current.lock().unwrap_or_else(PoisonError::into_inner) = Some((number, connection));
            drop(linked);
            delay = BACKOFF.0;
            told.await;
        }
    }

    /// `answer`, from connection `number`; an error that leaves the
    /// connection unusable loses it, and a new one is made.
    fn kept<T>(&self, number: u64, answer: RedisResult<T>) -> RedisResult<T> {
        if answer.as_ref().is_err_and(RedisError::is_unrecoverable_error) {
            let mut current = self.0.current.lock().unwrap_or_else(PoisonError::into_inner);
            if current.as_ref().is_some_and(|(now, _)| *now == number) {
                *current = None;
                self.0.lost.notify_one();
            }
        }
        answer
    }

    fn connection(&self) -> RedisResult<(u64, MultiplexedConnection)> {
        let current = self.0.current.lock().unwrap_or_else(PoisonError::into_inner).clone();
        current.ok_or_else(|| (ErrorKind::Io, "no connection to redis").into())
    }
}

impl ConnectionLike for Link {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        let connection = self.connection();
        Box::pin(async move {
            let (number, mut connection) = connection?;
            self.kept(number, connection.send_packed_command(cmd).await)
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        let connection = self.connection();
        Box::pin(async move {
            let (number, mut connection) = connection?;
            self.kept(number, connection.send_packed_commands(pipeline, offset, count).await)
        })
    }

    fn get_db(&self) -> i64 {
        self.0.client.get_connection_info().redis_settings().db()
    }
}

/// A connection for commands to one Redis or to a cluster.
#[derive(Clone)]
pub(super) enum Commands {
    Single(Link),
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for Commands {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Commands::Single(_) => "Commands::Single",
            Commands::Cluster(_) => "Commands::Cluster",
        })
    }
}

impl Commands {
    /// Publishes `payload` on `channel`: sharded (SPUBLISH) on a cluster.
    pub(super) fn publish_command(&self, channel: &str, payload: impl redis::ToRedisArgs) -> Cmd {
        let command = match self {
            Commands::Single(_) => "PUBLISH",
            Commands::Cluster(_) => "SPUBLISH",
        };
        redis::cmd(command).arg(channel).arg(payload).to_owned()
    }
}

impl ConnectionLike for Commands {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Commands::Single(connection) => connection.req_packed_command(cmd),
            Commands::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Commands::Single(connection) => connection.req_packed_commands(pipeline, offset, count),
            Commands::Cluster(connection) => connection.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Commands::Single(connection) => connection.get_db(),
            Commands::Cluster(connection) => connection.get_db(),
        }
    }
}

/// What a subscription connection hears.
pub(super) enum Heard {
    /// A message on a channel subscribed to.
    Message(Msg),
    /// Redis ended the subscription to this channel on its own: its slot
    /// moved to another node, where it must be subscribed to again.
    Dropped(String),
    /// The link to a node was lost.
    Lost,
}

/// A subscription connection.
pub(super) enum Feed {
    Single { sink: PubSubSink, stream: PubSubStream },
    Cluster { connection: ClusterConnection, heard: mpsc::UnboundedReceiver<PushInfo> },
}

impl Feed {
    pub(super) async fn subscribe(&mut self, channel: &str) -> RedisResult<()> {
        match self {
            Feed::Single { sink, .. } => sink.subscribe(channel).await,
            Feed::Cluster { connection, .. } => connection.ssubscribe(channel).await,
        }
    }

    pub(super) async fn unsubscribe(&mut self, channel: &str) -> RedisResult<()> {
        match self {
            Feed::Single { sink, .. } => sink.unsubscribe(channel).await,
            Feed::Cluster { connection, .. } => connection.sunsubscribe(channel).await,
        }
    }

    /// What comes next; `Lost` once the connection is gone.
    pub(super) async fn next(&mut self) -> Heard {
        match self {
            Feed::Single { stream, .. } => stream.next().await.map_or(Heard::Lost, Heard::Message),
            Feed::Cluster { heard, .. } => loop {
                let Some(push) = heard.recv().await else { return Heard::Lost };
                match push.kind {
                    PushKind::Disconnection => return Heard::Lost,
                    PushKind::SUnsubscribe => {
                        let channel = push.data.first().and_then(|c| redis::from_redis_value_ref(c).ok());
                        if let Some(channel) = channel {
                            return Heard::Dropped(channel);
                        }
                    }
                    _ => {
                        if let Some(message) = Msg::from_push_info(push) {
                            return Heard::Message(message);
                        }
                    }
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_is_named_by_its_nodes_and_one_redis_by_its_url() {
        assert!(Target::open("redis+cluster://127.0.0.1:7000,127.0.0.1:7001").unwrap().sharded());
        assert!(Target::open("redis+cluster://user:secret@127.0.0.1:7000,127.0.0.1:7001/").unwrap().sharded());
        assert!(!Target::open("redis://127.0.0.1:6379").unwrap().sharded());
        assert!(Target::open("redis+cluster://").is_err());
        assert!(Target::open("redis+cluster://127.0.0.1:notaport").is_err());
        assert!(Target::open("http://127.0.0.1:6379").is_err());
    }
}
