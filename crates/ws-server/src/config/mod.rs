//! The server's settings, from the command line, the environment and a
//! TOML file; the namespaces of rooms and their options (namespaces.rs).

pub mod namespaces;

use crate::envelope::Limits;
use crate::hooks::{self, HookFailure};
use crate::hub::{History, HubSettings};
use crate::policy::auth::Authenticator;
use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser};
use ipnet::IpNet;
use namespaces::{Namespace, NamespaceTable, NamespaceTables, Namespaces, Publish, UnknownNamespaces};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::time::Duration;
use ws_proto::DeflateConfig;
use ws_tokio::Options;

/// The WebSocket hub server.
#[derive(Debug, Clone, Parser)]
#[command(name = "ws-server", version, about)]
pub struct ServerConfig {
    /// A TOML file of settings, named as the flags are (`max-connections-per-ip = 20`,
    /// `allowed-origin = ["https://a.example"]`). Flags and environment
    /// variables take precedence over it.
    #[arg(long, env = "WS_CONFIG", value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,

    /// Check FILE, a TOML file of settings as --config takes, print the
    /// effective settings of every namespace, and exit: 0 if it is valid,
    /// else 2 with an error that names the line.
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    pub check_config: Option<std::path::PathBuf>,

    /// Address to listen on; port 0 picks a free port (the log says which).
    #[arg(long, env = "WS_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Serve TLS (wss://, and https:// for the pages) with this PEM
    /// certificate chain, the server's own certificate first; needs --tls-key.
    #[arg(long, env = "WS_TLS_CERT", value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,

    /// The PEM private key of --tls-cert.
    #[arg(long, env = "WS_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,

    /// Serve cleartext HTTP/2 with prior knowledge (h2c) beside HTTP/1.1, for
    /// a proxy in front that speaks HTTP/2 to the server: WebSockets then
    /// come as extended CONNECT streams (RFC 8441), many over one
    /// connection. With TLS, HTTP/2 is offered by ALPN without this flag.
    #[arg(long, env = "WS_H2C", conflicts_with = "tls_cert")]
    pub h2c: bool,

    /// HTTP/2 streams one connection may have open at once
    /// (SETTINGS_MAX_CONCURRENT_STREAMS): each WebSocket over HTTP/2 is one,
    /// and counts as a connection for the limits below.
    #[arg(long, env = "WS_MAX_STREAMS_PER_CONNECTION", default_value_t = 1024, value_name = "COUNT",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_streams_per_connection: u32,

    /// Serve /echo, which sends every text and binary message back unchanged
    /// (for conformance testing and benchmarks).
    #[arg(long, env = "WS_ECHO")]
    pub echo: bool,

    /// Hub connections one client address may have open; more are answered
    /// 429 at the handshake. 0 for no limit.
    #[arg(long, env = "WS_MAX_CONNECTIONS_PER_IP", default_value_t = 10, value_name = "COUNT")]
    pub max_connections_per_ip: usize,

    /// Hub connections open at most; more are answered 503 at the handshake.
    /// 0 for no limit (the open-file limit still applies).
    #[arg(long, env = "WS_MAX_CONNECTIONS", default_value_t = 10_000, value_name = "COUNT")]
    pub max_connections: usize,

    /// A reverse proxy (an address or a CIDR block, repeatable) whose
    /// connections carry the client's address in X-Forwarded-For; it counts
    /// for the limits and as the sender. From any other peer the header is ignored.
    #[arg(long = "trusted-proxy", env = "WS_TRUSTED_PROXY", value_name = "CIDR", value_delimiter = ',', value_parser = cidr)]
    pub trusted_proxies: Vec<IpNet>,

    /// An origin whose pages may open hub connections, such as
    /// `https://app.example.com` (repeatable); `*` for every origin. The
    /// server's own origin and clients that send no Origin (not browsers)
    /// are always accepted; any other origin is answered 403.
    #[arg(long = "allowed-origin", env = "WS_ALLOWED_ORIGIN", value_name = "ORIGIN", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// Turn on `POST /api/publish` for other services, who must send this
    /// key as `Authorization: Bearer KEY`.
    #[arg(long, env = "WS_API_KEY", value_name = "KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// Require a JWT signed with this HS256 secret on every hub connection
    /// (docs/protocol.md says where the token goes). Without a secret or a
    /// public key the hub is open to anyone.
    #[arg(long, env = "WS_JWT_SECRET", value_name = "SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// Require a JWT signed with the private half of this PEM public key
    /// (RSA for RS256, P-256 for ES256) on every hub connection.
    #[arg(long, env = "WS_JWT_PUBLIC_KEY", value_name = "FILE", conflicts_with = "jwt_secret")]
    pub jwt_public_key: Option<std::path::PathBuf>,

    /// Join the servers that share this Redis into one hub, such as
    /// `redis://127.0.0.1:6379`: a message reaches the members of its room on
    /// every server, and the rooms' seqs and history live in Redis
    /// (docs/operations.md). Without it, everything is in this server's memory.
    /// A Redis Cluster is given as `redis+cluster://h1:7000,h2:7001`: its
    /// nodes, any of them enough to find the others.
    #[arg(long, env = "WS_REDIS", value_name = "URL")]
    pub redis: Option<String>,

    /// With `--redis`, a message is acked only once this many replicas of
    /// its Redis primary hold it (Redis `WAIT`), so that an acked message
    /// survives the loss of the primary; 0: acked once the primary has it.
    #[arg(long, env = "WS_REDIS_ACK_REPLICAS", default_value_t = 0, value_name = "REPLICAS", requires = "redis")]
    pub redis_ack_replicas: u32,

    /// How long the replicas of `--redis-ack-replicas` have to take a
    /// message before it is refused `unavailable` (it may still be delivered:
    /// a retry with its id tells).
    #[arg(long, env = "WS_REDIS_ACK_TIMEOUT", default_value = "1", value_name = "SECONDS", value_parser = ack_timeout)]
    pub redis_ack_timeout: Duration,

    /// The application's backend decides who a hub connection is, at its
    /// handshake: it is sent the client's address, the query, the cookies
    /// and the --hook-header headers, and answers with the user or a
    /// refusal. With a JWT key too, a request that carries a token is
    /// checked by the key alone (docs/hooks.md).
    #[arg(long, env = "WS_HOOK_CONNECT", value_name = "URL", value_parser = hooks::url)]
    pub hook_connect: Option<hyper::Uri>,

    /// The application's backend extends the connections of the connect
    /// hook that have an end (its `expires`): asked --refresh-before ahead
    /// of it, it answers a new end, or lets the connection close then
    /// (4001) (docs/hooks.md).
    #[arg(long, env = "WS_HOOK_REFRESH", value_name = "URL", value_parser = hooks::url)]
    pub hook_refresh: Option<hyper::Uri>,

    /// A header of the hub handshake that the connect hook is sent
    /// (repeatable), such as `user-agent`.
    #[arg(long = "hook-header", env = "WS_HOOK_HEADER", value_name = "NAME", value_delimiter = ',', value_parser = header_name)]
    pub hook_headers: Vec<String>,

    /// The application's backend allows or refuses every join of a room,
    /// and may give data for the member's `joined` (docs/hooks.md).
    #[arg(long, env = "WS_HOOK_JOIN", value_name = "URL", value_parser = hooks::url)]
    pub hook_join: Option<hyper::Uri>,

    /// The application's backend decides on every message a client
    /// publishes before it is numbered: allows it, rewrites it or refuses
    /// it. JSON is posted to this `http://` URL (docs/hooks.md).
    #[arg(long, env = "WS_HOOK_PUBLISH", value_name = "URL", value_parser = hooks::url)]
    pub hook_publish: Option<hyper::Uri>,

    /// The application's backend answers a client's `rpc` envelopes: JSON
    /// is posted to this `http://` URL (docs/hooks.md).
    #[arg(long, env = "WS_HOOK_RPC", value_name = "URL", value_parser = hooks::url)]
    pub hook_rpc: Option<hyper::Uri>,

    /// The application's backend is told of every connect, disconnect,
    /// join and leave, and of rooms occupied and vacated: batches of events
    /// posted to this `http://` URL, in order, at least once (docs/hooks.md).
    /// Not yet with --redis.
    #[arg(long, env = "WS_HOOK_EVENTS", value_name = "URL", value_parser = hooks::url)]
    pub hook_events: Option<hyper::Uri>,

    /// Events kept while the backend does not take them, at most; past
    /// that, the oldest are dropped (and counted).
    #[arg(long, env = "WS_HOOK_EVENTS_MAX_WAITING", default_value = "100000", value_name = "EVENTS", value_parser = clap::value_parser!(u32).range(1..))]
    pub hook_events_max_waiting: u32,

    /// Seconds a hook's call may take, waiting for a place among those in
    /// flight included; then it failed.
    #[arg(long, env = "WS_HOOK_TIMEOUT", default_value = "1", value_name = "SECONDS", value_parser = seconds)]
    pub hook_timeout: Duration,

    /// Calls to each hook in flight at once at most; more wait their turn,
    /// within --hook-timeout.
    #[arg(long, env = "WS_HOOK_MAX_IN_FLIGHT", default_value = "256", value_name = "CALLS", value_parser = clap::value_parser!(u32).range(1..))]
    pub hook_max_in_flight: u32,

    /// What a hook's call that fails (no answer in time, a status other
    /// than 2xx, an answer that is not one) comes to: the request refused
    /// `unavailable`, or allowed as it was (an rpc is still `unavailable`).
    #[arg(long, env = "WS_HOOK_FAILURE", value_enum, default_value_t = HookFailure::Refuse)]
    pub hook_failure: HookFailure,

    /// The room every connection joins on arrival; empty for none.
    #[arg(long, env = "WS_DEFAULT_ROOM", default_value = "general", value_name = "ROOM")]
    pub default_room: Option<String>,

    /// Who may publish to the rooms of the default namespace (rooms without
    /// `:`): every member, or only the server, through the HTTP API.
    /// `[namespace.NAME]` tables of the TOML file set it and the options
    /// below for rooms named `NAME:...` (docs/operations.md).
    #[arg(long, env = "WS_PUBLISH", value_enum, default_value_t = Publish::Members)]
    pub publish: Publish,

    /// Whether a join to a room of the default namespace may ask for what
    /// it missed with `since`; `false` refuses it with `not_offered`.
    #[arg(long, env = "WS_RECOVERY", default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub recovery: bool,

    /// Whether members of a room of the default namespace may ask who is
    /// in it; `false` refuses it with `not_offered`.
    #[arg(long, env = "WS_PRESENCE", default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub presence: bool,

    /// Whether the members of a room of the default namespace are told when
    /// a member comes into it (`member_joined`, at its first connection
    /// there) and leaves it (`member_left`, at its last), on any server.
    #[arg(long, env = "WS_JOIN_LEAVE_EVENTS", default_value_t = false, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub join_leave_events: bool,

    /// What happens to a room of a namespace the TOML file does not list:
    /// it has the default namespace's options, or it is refused with
    /// `unknown_namespace`.
    #[arg(long, env = "WS_UNKNOWN_NAMESPACES", value_enum, default_value_t = UnknownNamespaces::Default)]
    pub unknown_namespaces: UnknownNamespaces,

    /// The namespaces the TOML file lists, as it gives them.
    #[arg(skip)]
    pub namespace_tables: BTreeMap<String, NamespaceTable>,

    /// Messages each room keeps, so that a client joining with `since` can
    /// recover what it missed.
    #[arg(long, env = "WS_HISTORY", default_value_t = 100, value_name = "MESSAGES")]
    pub history: usize,

    /// Seconds a room keeps a message for recovery at most, however few
    /// came after it. Without it, as long as `--history` allows.
    #[arg(long, env = "WS_HISTORY_MAX_AGE", value_name = "SECONDS", value_parser = seconds)]
    pub history_max_age: Option<Duration>,

    /// Messages a room's channel keeps for members that fall behind. What
    /// leaves it before a member took it is sent from the room's history;
    /// what the history no longer holds makes the member a slow consumer.
    #[arg(long, env = "WS_ROOM_BUFFER", default_value_t = 256, value_name = "MESSAGES")]
    pub room_buffer: usize,

    /// Rooms the server holds at most; when full, rooms without members are
    /// let go (with their history).
    #[arg(long, env = "WS_MAX_ROOMS", default_value_t = 10_000, value_name = "COUNT")]
    pub max_rooms: usize,

    /// Rooms one connection may be in at once.
    #[arg(long, env = "WS_MAX_ROOMS_PER_CONNECTION", default_value_t = 32, value_name = "COUNT")]
    pub max_rooms_per_connection: usize,

    /// Envelopes each connection may send per second (bursts up to one
    /// second's worth); more get `rate_limited`, and a client that keeps on
    /// is closed with 1008. 0 for no limit.
    #[arg(long, env = "WS_RATE_LIMIT", default_value_t = 10.0, value_name = "PER_SECOND", value_parser = rate)]
    pub rate_limit: f64,

    /// The most characters of a message's content; more is a `too_long` error.
    #[arg(long, env = "WS_MAX_CONTENT_CHARS", default_value_t = 1000, value_name = "CHARS")]
    pub max_content_chars: usize,

    /// The most bytes of a message's `data`, its JSON value as written; more
    /// is a `too_long` error. Within --max-message-size, which bounds the
    /// whole envelope.
    #[arg(long, env = "WS_MAX_DATA_BYTES", default_value_t = 16 << 10, value_name = "BYTES")]
    pub max_data_bytes: usize,

    /// The largest WebSocket message a client may send; more is close 1009.
    #[arg(long, env = "WS_MAX_MESSAGE_SIZE", default_value_t = 64 << 10, value_name = "BYTES")]
    pub max_message_size: usize,

    /// Bytes queued for one client at most; a client that falls further
    /// behind is a slow consumer.
    #[arg(long, env = "WS_MAX_QUEUE_BYTES", default_value_t = 1 << 20, value_name = "BYTES")]
    pub max_queue_bytes: usize,

    /// What happens to a slow consumer.
    #[arg(long, env = "WS_SLOW_CONSUMER", value_enum, default_value_t = SlowConsumer::Disconnect)]
    pub slow_consumer: SlowConsumer,

    /// Seconds between the server's pings.
    #[arg(long, env = "WS_HEARTBEAT_INTERVAL", default_value = "30", value_name = "SECONDS", value_parser = seconds)]
    pub heartbeat_interval: Duration,

    /// Seconds a client may send nothing, pongs included, before it is closed.
    #[arg(long, env = "WS_HEARTBEAT_TIMEOUT", default_value = "60", value_name = "SECONDS", value_parser = seconds)]
    pub heartbeat_timeout: Duration,

    /// Seconds before a token's `exp` from which the server asks the
    /// client for a fresh one (`refresh`), at each heartbeat; a connection
    /// whose token expires unrefreshed is closed with 4001, within a
    /// heartbeat interval of its `exp`.
    #[arg(long, env = "WS_REFRESH_BEFORE", default_value = "60", value_name = "SECONDS", value_parser = seconds)]
    pub refresh_before: Duration,

    /// Seconds a shutdown (SIGINT or SIGTERM) waits for connections to
    /// complete their closing handshake, and for the events hook to have
    /// their events, before the server exits.
    #[arg(long, env = "WS_SHUTDOWN_TIMEOUT", default_value = "10", value_name = "SECONDS", value_parser = seconds)]
    pub shutdown_timeout: Duration,

    /// Seconds a client has to complete the opening handshake.
    #[arg(long, env = "WS_HANDSHAKE_TIMEOUT", default_value = "10", value_name = "SECONDS", value_parser = seconds)]
    pub handshake_timeout: Duration,

    /// Turn permessage-deflate compression (RFC 7692) off; it is on by default
    /// for clients that offer it.
    #[arg(long, env = "WS_NO_DEFLATE")]
    pub no_deflate: bool,

    /// Messages shorter than this many bytes are sent uncompressed.
    #[arg(long, env = "WS_DEFLATE_THRESHOLD", default_value_t = 128, value_name = "BYTES")]
    pub deflate_threshold: usize,

    /// The largest window the server compresses with, as a power of two
    /// (8-15). A connection that keeps its context holds about
    /// 2^(BITS+2) bytes plus 128 KiB for it (docs/benchmarks.md has the
    /// figures). 8 sends uncompressed.
    #[arg(long, env = "WS_DEFLATE_WINDOW_BITS", default_value_t = 15, value_name = "BITS",
          value_parser = clap::value_parser!(u8).range(8..=15))]
    pub deflate_window_bits: u8,

    /// The largest window a client may compress with (8-15), asked of
    /// clients that support it: the server inflates with 2^BITS bytes.
    #[arg(long, env = "WS_DEFLATE_CLIENT_WINDOW_BITS", default_value_t = 15, value_name = "BITS",
          value_parser = clap::value_parser!(u8).range(8..=15))]
    pub deflate_client_window_bits: u8,

    /// zlib memory level, 1 (least memory) to 9 (fastest): a compressor
    /// holds 7 * 2^(LEVEL+6) bytes of match buffers.
    #[arg(long, env = "WS_DEFLATE_MEMORY_LEVEL", default_value_t = 8, value_name = "LEVEL",
          value_parser = clap::value_parser!(u8).range(1..=9))]
    pub deflate_memory_level: u8,

    /// zlib compression level, 0 (fastest) to 9 (smallest).
    #[arg(long, env = "WS_DEFLATE_LEVEL", default_value_t = 6, value_name = "LEVEL",
          value_parser = clap::value_parser!(u8).range(0..=9))]
    pub deflate_level: u8,

    /// Keep the compression context from message to message for each
    /// connection: smaller envelopes of its own on the wire, but about 370
    /// KiB of zlib state per connection; a room's messages, encoded once
    /// for all members, then reach it uncompressed.
    /// By default each message is compressed on its own
    /// (server_no_context_takeover), once for all receivers of a broadcast,
    /// with zlib state lent by a per-thread pool for the one message.
    #[arg(long, env = "WS_DEFLATE_CONTEXT_TAKEOVER")]
    pub deflate_context_takeover: bool,

    /// Let clients keep their compression context from message to message:
    /// smaller messages from them on the wire, but a 15-bit inflate window
    /// of about 48 KiB per connection kept between messages. By default the
    /// server asks each client to compress each message on its own
    /// (client_no_context_takeover, which browsers accept although they do
    /// not offer it), and borrows inflate state for one message at a time.
    #[arg(long, env = "WS_DEFLATE_CLIENT_CONTEXT_TAKEOVER")]
    pub deflate_client_context_takeover: bool,
}

/// What happens to a client that falls more than `--max-queue-bytes` behind,
/// or misses messages that left a room's buffer and its history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SlowConsumer {
    /// Close the connection with 1008 "slow consumer".
    Disconnect,
    /// Drop what does not fit and send a `gap` notice, so the client can recover with `since`.
    Skip,
}

impl ServerConfig {
    /// Parses the command line `args` (program name first) and the
    /// environment, and the TOML file of `--config` (or `--check-config`)
    /// if one is named, which they take precedence over. On a bad flag or
    /// file, clap's error; a bad line of the file is named.
    pub fn load<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        let command = ServerConfig::command();
        let matches = command.clone().try_get_matches_from(&args)?;
        let file = matches.get_one::<std::path::PathBuf>("config").or(matches.get_one("check_config"));
        let Some(path) = file else {
            let invalid = |e| command.clone().error(ErrorKind::ValueValidation, e);
            return ServerConfig::from_arg_matches(&matches)?.checked(None).map_err(invalid);
        };
        let file_error = |e: String| command.clone().error(ErrorKind::InvalidValue, format!("{}: {e}", path.display()));
        let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
        let settings: BTreeMap<String, toml::Spanned<toml::Value>> =
            toml::from_str(&text).map_err(|e: toml::de::Error| file_error(e.to_string()))?;
        let tables: NamespaceTables = toml::from_str(&text).map_err(|e: toml::de::Error| file_error(e.to_string()))?;
        let mut merged = args[..1].to_vec();
        // The line of each flag the file sets, to name it in clap's error about its value.
        let mut lines = BTreeMap::new();
        for (key, value) in settings.iter().filter(|(key, _)| *key != "namespace") {
            let at_line = |e: String| file_error(format!("line {}: {e}", line_of(&text, value.span().start)));
            let name = key.replace('_', "-");
            let arg = command.get_arguments().find(|a| a.get_long() == Some(name.as_str()) && !is_file_flag(&name));
            let Some(arg) = arg else { return Err(at_line(format!("unknown setting {key}"))) };
            let given = matches!(
                matches.value_source(arg.get_id().as_str()),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            );
            if !given {
                merged.extend(file_values(arg, value.get_ref()).map_err(at_line)?);
                lines.insert(name, line_of(&text, value.span().start));
            }
        }
        merged.extend(args.into_iter().skip(1));
        let mut config = ServerConfig::try_parse_from(merged).map_err(|e| {
            match invalid_flag(&e).and_then(|flag| lines.get(&flag)) {
                Some(line) => file_error(format!("line {line}: {}", first_line(&e.to_string()))),
                None => e,
            }
        })?;
        config.namespace_tables = tables.namespace;
        config.checked(Some(&text)).map_err(file_error)
    }

    /// The settings, if they hold together: the namespaces named as a room
    /// may start, and the default room not refused. `file`, the TOML text,
    /// to name the line of a bad namespace.
    fn checked(self, file: Option<&str>) -> Result<Self, String> {
        if let Some(name) = self.namespace_tables.keys().find(|name| !namespaces::is_namespace_name(name)) {
            let headers =
                [format!("[namespace.{name}]"), format!("[namespace.\"{name}\"]"), format!("[namespace.'{name}']")];
            let header = file.and_then(|text| headers.iter().find_map(|h| Some(line_of(text, text.find(h)?))));
            let line = header.map_or_else(String::new, |line| format!("line {line}: "));
            return Err(format!(
                "{line}namespace {name:?}: a namespace is named with 1 to 63 letters, digits, '-', '_' or '.'"
            ));
        }
        if let Some(room) = self.default_room.as_deref().filter(|room| !room.is_empty()) {
            if let Err(refused) = self.namespaces().of(room) {
                return Err(format!("--default-room {room}: {}", refused.message));
            }
        }
        Ok(self)
    }

    /// Every namespace: the default one from the settings above, and those
    /// of the TOML file over it.
    pub fn namespaces(&self) -> Namespaces {
        let default = Namespace {
            publish: self.publish,
            history: History { len: self.history, max_age: self.history_max_age },
            recovery: self.recovery,
            presence: self.presence,
            join_leave_events: self.join_leave_events,
            limits: self.limits(),
        };
        let listed = self.namespace_tables.iter().map(|(name, table)| (name.clone(), table.over(&default))).collect();
        Namespaces { default, listed, unknown: self.unknown_namespaces }
    }

    /// The token checker, when a key is configured.
    pub fn authenticator(&self) -> std::io::Result<Option<Authenticator>> {
        if let Some(secret) = &self.jwt_secret {
            return Ok(Some(Authenticator::from_secret(secret.as_bytes())));
        }
        let Some(path) = &self.jwt_public_key else { return Ok(None) };
        let pem = std::fs::read(path)?;
        let invalid = |e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{}: {e}", path.display()));
        Authenticator::from_public_key_pem(&pem).map(Some).map_err(invalid)
    }

    /// The hub's settings.
    pub fn hub_settings(&self) -> HubSettings {
        let deflate = self.socket_options().deflate.filter(|d| d.no_context_takeover);
        HubSettings { room_buffer: self.room_buffer, max_rooms: self.max_rooms, deflate }
    }

    /// The bounds of what a message of the default namespace may say.
    pub fn limits(&self) -> Limits {
        Limits { content_chars: self.max_content_chars, data_bytes: self.max_data_bytes }
    }

    /// The settings of every WebSocket this server accepts.
    pub fn socket_options(&self) -> Options {
        let deflate = (!self.no_deflate).then_some(DeflateConfig {
            level: self.deflate_level,
            window_bits: self.deflate_window_bits,
            peer_window_bits: self.deflate_client_window_bits,
            no_context_takeover: !self.deflate_context_takeover,
            peer_no_context_takeover: !self.deflate_client_context_takeover,
            memory_level: self.deflate_memory_level,
            threshold: self.deflate_threshold,
        });
        let size = self.max_message_size;
        let config = ws_proto::Config { max_frame_size: size, max_message_size: size, ..ws_proto::Config::default() };
        Options { config, deflate, max_output: self.max_queue_bytes, ..Options::default() }
    }
}

/// A rate: a finite number, 0 or more, such as `10` or `0.5`.
fn rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if rate >= 0.0 && rate.is_finite() => Ok(rate),
        _ => Err(format!("{text:?} is not a number of messages a second (0 for no limit)")),
    }
}

/// A wait for replicas: more than 0 and at most 4 seconds, within the
/// time a request to Redis may take.
fn ack_timeout(text: &str) -> Result<Duration, String> {
    match seconds(text)? {
        timeout if timeout <= Duration::from_secs(4) => Ok(timeout),
        _ => Err(format!("{text:?} is more than 4 seconds, the longest a message may wait for replicas")),
    }
}

/// A positive number of seconds, such as `30` or `0.5`.
fn seconds(text: &str) -> Result<Duration, String> {
    match text.parse::<f64>() {
        Ok(secs) if secs > 0.0 && secs.is_finite() => Duration::try_from_secs_f64(secs).map_err(|e| e.to_string()),
        _ => Err(format!("{text:?} is not a positive number of seconds")),
    }
}

/// An HTTP header's name, such as `user-agent`.
fn header_name(text: &str) -> Result<String, String> {
    match hyper::header::HeaderName::from_bytes(text.as_bytes()) {
        Ok(name) => Ok(name.as_str().to_owned()),
        Err(_) => Err(format!("{text:?} is not an HTTP header's name")),
    }
}

/// An address block such as `10.0.0.0/8`, or one address.
fn cidr(text: &str) -> Result<IpNet, String> {
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{text:?} is neither an address nor a CIDR block"))
}

/// Whether `name` is a flag that names the TOML file itself, which a file cannot set.
fn is_file_flag(name: &str) -> bool {
    name == "config" || name == "check-config"
}

/// The line of byte `at` in `text`, from 1.
fn line_of(text: &str, at: usize) -> usize {
    text[..at.min(text.len())].matches('\n').count() + 1
}

/// A setting of the TOML file as command-line arguments for the flag
/// `arg`: `--name=value` for each value of an array, and for a flag without
/// a value `--name` for `true`, nothing for `false`.
fn file_values(arg: &clap::Arg, value: &toml::Value) -> Result<Vec<OsString>, String> {
    let name = arg.get_long().unwrap_or_default();
    let takes_value = arg.get_action().takes_values();
    let one = |value: &toml::Value| {
        let text = match value {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(true) if !takes_value => return Ok(Some(format!("--{name}"))),
            toml::Value::Boolean(false) if !takes_value => return Ok(None),
            toml::Value::Boolean(b) => b.to_string(),
            other => return Err(format!("{name}: {other} is not a string, number or boolean")),
        };
        if !takes_value {
            return Err(format!("{name} is true or false, not {text:?}"));
        }
        Ok(Some(format!("--{name}={text}")))
    };
    let values = match value {
        toml::Value::Array(values) => values.iter().collect(),
        value => vec![value],
    };
    values.into_iter().filter_map(|v| one(v).transpose()).map(|v| v.map(OsString::from)).collect()
}

/// The long name of the flag whose value clap's error is about, if it is one.
fn invalid_flag(error: &clap::Error) -> Option<String> {
    let Some(clap::error::ContextValue::String(arg)) = error.get(clap::error::ContextKind::InvalidArg) else {
        return None;
    };
    Some(arg.strip_prefix("--")?.split([' ', '=']).next()?.to_owned())
}

/// The first line of clap's error, without its `error: `.
fn first_line(error: &str) -> String {
    let line = error.lines().next().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loads `args` after writing `toml` to a file of its own, named by `--config`.
    fn load_with_file(name: &str, toml: &str, args: &[&str]) -> Result<ServerConfig, clap::Error> {
        let path = std::env::temp_dir().join(format!("ws-server-config-{}-{name}.toml", std::process::id()));
        std::fs::write(&path, toml).expect("a temporary file");
        let path = path.to_str().expect("a UTF-8 path").to_owned();
        let result = ServerConfig::load(["ws-server", "--config", &path].iter().chain(args));
        let _ = std::fs::remove_file(&path);
        result
    }

    #[test]
    fn a_file_sets_what_the_command_line_does_not() {
        let toml = r#"
            listen = "127.0.0.1:9000"
            max-connections-per-ip = 20
            allowed_origin = ["https://a.example", "https://b.example"]
            echo = true
            no-deflate = false
            heartbeat-interval = 2.5
            slow-consumer = "skip"
            redis = "redis://127.0.0.1:6379"
        "#;
        let config = load_with_file("sets", toml, &["--max-connections-per-ip", "3"]).expect("valid");
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.max_connections_per_ip, 3, "the command line wins");
        assert_eq!(config.allowed_origins, ["https://a.example", "https://b.example"]);
        assert!(config.echo);
        assert!(!config.no_deflate);
        assert_eq!(config.heartbeat_interval, Duration::from_millis(2500));
        assert_eq!(config.slow_consumer, SlowConsumer::Skip);
        assert_eq!(config.redis.as_deref(), Some("redis://127.0.0.1:6379"));
        assert_eq!(config.history, 100, "defaults stay");
    }

    #[test]
    fn clients_are_asked_to_reset_their_context_unless_a_flag_or_the_file_lets_them_keep_it() {
        let deflate = |config: ServerConfig| config.socket_options().deflate.expect("on");
        let default = deflate(ServerConfig::load(["ws-server"]).expect("valid"));
        assert!(default.no_context_takeover && default.peer_no_context_takeover);
        let flag = ServerConfig::load(["ws-server", "--deflate-client-context-takeover"]).expect("valid");
        assert!(!deflate(flag).peer_no_context_takeover);
        let file = load_with_file("client-context", "deflate-client-context-takeover = true", &[]).expect("valid");
        let file = deflate(file);
        assert!(file.no_context_takeover && !file.peer_no_context_takeover, "the server's own context stays reset");
    }

    #[test]
    fn a_bad_file_is_a_clear_error() {
        let unknown = load_with_file("unknown", "max-conections = 5", &[]).unwrap_err();
        assert!(unknown.to_string().contains("unknown setting max-conections"), "{unknown}");
        let bad_value = load_with_file("bad", "max-connections = \"many\"", &[]).unwrap_err();
        assert!(bad_value.to_string().contains("many"), "{bad_value}");
        let not_toml = load_with_file("syntax", "listen = ", &[]).unwrap_err();
        assert!(not_toml.to_string().contains("ws-server-config-"), "{not_toml}");
        let missing = ServerConfig::load(["ws-server", "--config", "/nonexistent/ws.toml"]).unwrap_err();
        assert!(missing.to_string().contains("/nonexistent/ws.toml"), "{missing}");
    }

    #[test]
    fn seconds_must_be_positive() {
        assert!(ServerConfig::load(["ws-server", "--heartbeat-timeout", "0"]).is_err());
        assert!(ServerConfig::load(["ws-server", "--heartbeat-timeout", "-1"]).is_err());
        assert!(ServerConfig::load(["ws-server", "--heartbeat-timeout", "inf"]).is_err());
        let config = ServerConfig::load(["ws-server", "--heartbeat-timeout", "0.5"]).expect("valid");
        assert_eq!(config.heartbeat_timeout, Duration::from_millis(500));
    }

    #[test]
    fn durable_acks_need_redis_and_a_wait_within_a_requests_time() {
        let error = ServerConfig::load(["ws-server", "--redis-ack-replicas", "1"]).unwrap_err().to_string();
        assert!(error.contains("--redis <URL>"), "{error}");
        let redis = ["ws-server", "--redis", "redis://127.0.0.1:6379", "--redis-ack-replicas", "1"];
        let error = ServerConfig::load(redis.iter().chain(&["--redis-ack-timeout", "5"])).unwrap_err().to_string();
        assert!(error.contains("--redis-ack-timeout") && error.contains("4 seconds"), "{error}");
        assert!(ServerConfig::load(redis.iter().chain(&["--redis-ack-timeout", "0"])).is_err());
        let config = ServerConfig::load(redis.iter().chain(&["--redis-ack-timeout", "0.25"])).expect("valid");
        assert_eq!((config.redis_ack_replicas, config.redis_ack_timeout), (1, Duration::from_millis(250)));
    }

    #[test]
    fn a_rate_limit_is_a_finite_number_not_below_zero() {
        for refused in ["-1", "NaN", "inf", "ten"] {
            assert!(ServerConfig::load(["ws-server", "--rate-limit", refused]).is_err(), "{refused}");
        }
        assert_eq!(ServerConfig::load(["ws-server", "--rate-limit", "0"]).expect("no limit").rate_limit, 0.0);
        assert_eq!(ServerConfig::load(["ws-server", "--rate-limit", "2.5"]).expect("valid").rate_limit, 2.5);
    }

    #[test]
    fn the_top_level_is_the_default_namespace_and_tables_take_what_they_leave_out() {
        let toml = "presence = false\nhistory = 7\npublish = \"server\"\n[namespace.chat]\npublish = \"members\"\n";
        let namespaces = load_with_file("namespaces", toml, &[]).expect("valid").namespaces();
        let (default, chat) = (&namespaces.default, &namespaces.listed["chat"]);
        assert_eq!((default.publish, default.presence, default.history.len), (Publish::Server, false, 7));
        assert_eq!((chat.publish, chat.presence, chat.history.len), (Publish::Members, false, 7));
        let flags = ServerConfig::load(["ws-server", "--presence", "false", "--recovery=false"]).expect("valid");
        assert_eq!((flags.presence, flags.recovery), (false, false));
    }

    #[test]
    fn the_default_room_must_not_be_refused() {
        let toml = "unknown-namespaces = \"refuse\"\ndefault-room = \"lobby:main\"\n";
        let error = load_with_file("refused", toml, &[]).unwrap_err().to_string();
        assert!(error.contains("--default-room lobby:main"), "{error}");
        let toml = "unknown-namespaces = \"refuse\"\ndefault-room = \"lobby:main\"\n[namespace.lobby]\n";
        assert!(load_with_file("listed", toml, &[]).is_ok());
        assert!(ServerConfig::load(["ws-server", "--unknown-namespaces", "refuse", "--default-room", "a:b"]).is_err());
    }
}
