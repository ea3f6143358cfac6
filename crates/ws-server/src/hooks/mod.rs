//! Calls to the application's backend (docs/hooks.md): at a hub
//! connection's handshake (`connect`), before a join (`join`), before a
//! client's message is numbered (`publish`), and a client's remote
//! procedure call (`rpc`). Each is JSON posted over HTTP/1.1 through one pooled client
//! with keep-alive, within a timeout and a bound on the calls in flight to
//! that hook; a backend that fails them is, by `--hook-failure`, refused
//! (the client gets `unavailable`) or passed over.

pub mod events;

use crate::config::ServerConfig;
use crate::envelope::{Body, Call, EnvelopeError, Limits};
use crate::metrics::{HookLabel, HookMetrics};
use crate::policy::auth::{Grants, Identity};
use bytes::Bytes;
use events::Events;
use http_body_util::{BodyExt, Full, Limited};
use hyper::Uri;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use ws_proto::handshake::server::Request;

/// What the server does when a hook's call fails: no answer in time, an
/// HTTP status other than 2xx, or an answer that is not one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HookFailure {
    /// Refuse what was asked: the client gets `unavailable`.
    Refuse,
    /// Carry on as if the backend allowed it as it was (a publish); an RPC,
    /// which has no answer but the backend's, is still `unavailable`.
    Allow,
}

/// The hooks of one server, and the client that calls them.
#[derive(Debug)]
pub struct Hooks {
    client: Client<HttpConnector, Full<Bytes>>,
    connect: Option<Endpoint>,
    refresh: Option<Endpoint>,
    join: Option<Endpoint>,
    publish: Option<Endpoint>,
    rpc: Option<Endpoint>,
    events_hook: Option<Endpoint>,
    /// The events waiting for the events hook, with one.
    events: Option<Arc<Events>>,
    /// The handshake's headers the connect hook is sent, in lower case.
    headers: Vec<String>,
    timeout: Duration,
    failure: HookFailure,
    /// The most bytes of an answer that is read.
    max_answer: usize,
    metrics: HookMetrics,
}

/// One hook's URL, and the calls that may be in flight to it.
#[derive(Debug)]
struct Endpoint {
    label: HookLabel,
    url: Uri,
    in_flight: Semaphore,
}

/// What the connect hook is sent: the hub handshake's request.
#[derive(Serialize)]
struct ConnectCall<'a> {
    address: String,
    path: &'a str,
    query: BTreeMap<String, String>,
    cookies: BTreeMap<&'a str, &'a str>,
    headers: BTreeMap<&'a str, &'a str>,
}

/// The connect hook's answer: the user, with what it may do (as a token's
/// claims say it) and until when, or a refusal with its status and reason.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConnectVerdict {
    allow: bool,
    user: Option<String>,
    rooms: Option<Vec<String>>,
    publish: Option<Vec<String>>,
    expires: Option<u64>,
    status: Option<u16>,
    reason: Option<String>,
}

/// A handshake refused: the HTTP status and the reason the client gets.
#[derive(Debug)]
pub struct Refusal {
    /// 4xx or 5xx.
    pub status: u16,
    /// Why.
    pub reason: String,
}

/// What the refresh hook is sent: whose connection, ending when.
#[derive(Serialize)]
struct RefreshCall<'a> {
    user: &'a str,
    expires: u64,
}

/// The refresh hook's answer: the connection's new end, or none.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RefreshVerdict {
    allow: bool,
    expires: Option<u64>,
    #[serde(rename = "reason")]
    _reason: Option<String>,
}

/// What the join hook is sent.
#[derive(Serialize)]
struct JoinCall<'a> {
    user: &'a str,
    room: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    since: Option<u64>,
}

/// The join hook's answer: allowed, with `data` for the member's `joined`
/// if it gives some, or refused for `reason`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JoinVerdict {
    allow: bool,
    reason: Option<String>,
    data: Option<Box<RawValue>>,
}

/// The longest user name the connect hook may give, in characters.
const MAX_USER_LEN: usize = 256;

/// What the publish hook is sent: the message as the client sent it.
#[derive(Serialize)]
struct PublishCall<'a> {
    user: &'a str,
    room: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
}

/// The publish hook's answer: allowed as it was, allowed with `content`
/// and `data` in its stead (either or both), or refused for `reason`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishVerdict {
    allow: bool,
    reason: Option<String>,
    content: Option<String>,
    data: Option<Box<RawValue>>,
}

/// What the rpc hook is sent.
#[derive(Serialize)]
struct RpcCall<'a> {
    user: &'a str,
    method: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a RawValue>,
}

/// The rpc hook's answer: `{"result": ...}` for the client, or
/// `{"error": "..."}`, the reason the call is refused.
#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum RpcAnswer {
    Result(Box<RawValue>),
    Error(String),
}

impl Hooks {
    /// The hooks `config` names, the events' ids starting with `prefix`;
    /// `None` when it names none. With an events hook, its events wait for
    /// a task to post them ([`Events::deliver`]) or to hand them to Redis.
    pub fn start(config: &ServerConfig, prefix: &str, metrics: HookMetrics) -> Option<Arc<Hooks>> {
        let endpoint = |hook, url: &Option<Uri>| {
            let in_flight = Semaphore::new(config.hook_max_in_flight as usize);
            url.clone().map(|url| Endpoint { label: HookLabel { hook }, url, in_flight })
        };
        let [connect, refresh, join, publish, rpc, events_hook] = [
            endpoint("connect", &config.hook_connect),
            endpoint("refresh", &config.hook_refresh),
            endpoint("join", &config.hook_join),
            endpoint("publish", &config.hook_publish),
            endpoint("rpc", &config.hook_rpc),
            endpoint("events", &config.hook_events),
        ];
        if [&connect, &refresh, &join, &publish, &rpc, &events_hook].iter().all(|hook| hook.is_none()) {
            return None;
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let events = events_hook.as_ref().map(|_| {
            let max_waiting = config.hook_events_max_waiting as usize;
            Arc::new(Events::new(prefix.to_owned(), max_waiting, config.redis.is_none(), metrics.clone()))
        });
        let hooks = Arc::new(Hooks {
            client: Client::builder(TokioExecutor::new()).build(connector),
            connect,
            refresh,
            join,
            publish,
            rpc,
            events_hook,
            events: events.clone(),
            headers: config.hook_headers.iter().map(|name| name.to_ascii_lowercase()).collect(),
            timeout: config.hook_timeout,
            failure: config.hook_failure,
            max_answer: config.max_message_size,
            metrics,
        });
        Some(hooks)
    }

    /// The events waiting for the events hook, if there is one.
    pub fn events(&self) -> Option<&Arc<Events>> {
        self.events.as_ref()
    }

    /// How long a call may take (`--hook-timeout`).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Whether hub handshakes go to the connect hook.
    pub fn connects(&self) -> bool {
        self.connect.is_some()
    }

    /// Who the handshake's `request` from `address` speaks for, as the
    /// connect hook says (`None` without one), or its refusal; a failed
    /// call is refused 503, whatever `--hook-failure` says, since no user
    /// is known.
    pub async fn connect(&self, request: &Request, address: IpAddr) -> Result<Option<Identity>, Refusal> {
        let Some(endpoint) = &self.connect else { return Ok(None) };
        let unavailable = |e: EnvelopeError| Refusal { status: 503, reason: e.message };
        let verdict: ConnectVerdict =
            self.call(endpoint, &self.connect_call(request, address)).await.map_err(unavailable)?;
        if !verdict.allow {
            let status = verdict.status.filter(|s| (400..600).contains(s)).unwrap_or(403);
            return Err(Refusal { status, reason: refused(verdict.reason).message });
        }
        let user = verdict.user.filter(|u| (1..=MAX_USER_LEN).contains(&u.chars().count()));
        let Some(user) = user else {
            self.metrics.errors.get_or_create(&endpoint.label).inc();
            let reason = format!("the connect hook allowed no user (1 to {MAX_USER_LEN} characters)");
            return Err(Refusal { status: 503, reason });
        };
        // Without `expires`, the connection lasts as long as it is open.
        let (rooms, publish, expires) = (verdict.rooms, verdict.publish, verdict.expires.unwrap_or(u64::MAX));
        let grants = Grants { rooms, publish, expires, by_hook: true, refreshing: false };
        Ok(Some(Identity { name: user.into(), grants: Some(Box::new(grants)) }))
    }

    /// The connect hook's call for `request`: the address, the path, the
    /// query's and the cookies' pairs, and the headers it is to be sent.
    fn connect_call<'a>(&'a self, request: &'a Request, address: IpAddr) -> ConnectCall<'a> {
        let query = url::form_urlencoded::parse(request.query().unwrap_or_default().as_bytes()).into_owned().collect();
        let pairs = request.headers.get_all("cookie").flat_map(|v| v.split(';'));
        let cookies = pairs.filter_map(|pair| pair.trim().split_once('=')).collect();
        let headers =
            self.headers.iter().filter_map(|name| Some((name.as_str(), request.headers.get(name)?))).collect();
        ConnectCall { address: address.to_string(), path: request.path(), query, cookies, headers }
    }

    /// Whether the ends of the connect hook's connections are extended by the refresh hook.
    pub fn refreshes(&self) -> bool {
        self.refresh.is_some()
    }

    /// The new end of `user`'s connection, which ends at `expires`, as the
    /// refresh hook says; `None` if the backend lets it end then.
    pub async fn refresh(&self, user: &str, expires: u64) -> Result<Option<u64>, EnvelopeError> {
        let Some(endpoint) = &self.refresh else { return Ok(None) };
        let verdict: RefreshVerdict = self.call(endpoint, &RefreshCall { user, expires }).await?;
        Ok(verdict.expires.filter(|_| verdict.allow))
    }

    /// Whether joins go through the join hook.
    pub fn joins(&self) -> bool {
        self.join.is_some()
    }

    /// Whether `user` may join `room` (with `since`), as the join hook
    /// says: the data for its `joined`, if the backend gave some.
    pub async fn join(
        &self,
        user: &str,
        room: &str,
        since: Option<u64>,
    ) -> Result<Option<Box<RawValue>>, EnvelopeError> {
        let Some(endpoint) = &self.join else { return Ok(None) };
        let Some(verdict) = self.decided::<JoinVerdict>(endpoint, &JoinCall { user, room, since }).await? else {
            return Ok(None);
        };
        if !verdict.allow {
            return Err(refused(verdict.reason));
        }
        Ok(verdict.data.filter(|raw| raw.get() != "null"))
    }

    /// Whether a client's messages go through the publish hook.
    pub fn publishes(&self) -> bool {
        self.publish.is_some()
    }

    /// Whether clients' `rpc` envelopes go to the rpc hook.
    pub fn answers_rpc(&self) -> bool {
        self.rpc.is_some()
    }

    /// What is to be published of `body`, sent by `user` to `room` with the
    /// client's `id`: the body as it was, or as the backend rewrote it
    /// (within `limits`), or the backend's refusal.
    pub async fn publish(
        &self,
        user: &str,
        room: &str,
        body: Body,
        id: Option<&str>,
        limits: &Limits,
    ) -> Result<Body, EnvelopeError> {
        let Some(endpoint) = &self.publish else { return Ok(body) };
        let call = PublishCall { user, room, content: body.content.as_deref(), data: body.data.as_deref(), id };
        let Some(verdict) = self.decided::<PublishVerdict>(endpoint, &call).await? else { return Ok(body) };
        if !verdict.allow {
            return Err(refused(verdict.reason));
        }
        if verdict.content.is_none() && verdict.data.is_none() {
            return Ok(body);
        }
        let data = verdict.data.filter(|raw| raw.get() != "null");
        let rewritten = Body { content: verdict.content, data };
        rewritten
            .check(limits)
            .map_err(|e| EnvelopeError::new("unavailable", format!("the publish hook's rewrite: {}", e.message)))?;
        Ok(rewritten)
    }

    /// The backend's answer to `call` by `user`: the result, as the
    /// backend wrote it.
    pub async fn rpc(&self, user: &str, call: &Call) -> Result<Box<RawValue>, EnvelopeError> {
        let Some(endpoint) = &self.rpc else { return Err(no_rpc_hook()) };
        let (method, data) = (call.method.as_str(), call.data.as_deref());
        match self.call(endpoint, &RpcCall { user, method, data }).await? {
            RpcAnswer::Result(result) => Ok(result),
            RpcAnswer::Error(reason) => Err(EnvelopeError::new("refused", reason)),
        }
    }

    /// The backend's verdict on `call`; `None` when the call failed and
    /// `--hook-failure allow` passes it over.
    async fn decided<V: DeserializeOwned>(
        &self,
        endpoint: &Endpoint,
        call: &impl Serialize,
    ) -> Result<Option<V>, EnvelopeError> {
        match self.call(endpoint, call).await {
            Ok(verdict) => Ok(Some(verdict)),
            Err(_) if self.failure == HookFailure::Allow => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Posts `call` to `endpoint`: its answer, or why there is none, as
    /// the client is told it (`unavailable`).
    async fn call<A: DeserializeOwned>(&self, endpoint: &Endpoint, call: &impl Serialize) -> Result<A, EnvelopeError> {
        self.timed(endpoint, async {
            let body = self.post(endpoint, call).await?;
            serde_json::from_slice(&body).map_err(|e| format!("answered what is not an answer: {e}"))
        })
        .await
    }

    /// Posts `events` to the events hook: whether it took them.
    pub async fn tell(&self, events: &[events::Event]) -> Result<(), EnvelopeError> {
        let Some(endpoint) = &self.events_hook else { return Ok(()) };
        self.timed(endpoint, async { self.post(endpoint, &events::Batch { events }).await.map(drop) }).await
    }

    /// What `work`, a call to `endpoint`, comes to within the timeout,
    /// counted in the hook's metrics.
    async fn timed<T>(
        &self,
        endpoint: &Endpoint,
        work: impl Future<Output = Result<T, String>>,
    ) -> Result<T, EnvelopeError> {
        let started = Instant::now();
        let answer = match tokio::time::timeout(self.timeout, work).await {
            Ok(answer) => answer,
            Err(_) => Err(format!("did not answer within {} s", self.timeout.as_secs_f64())),
        };
        let label = &endpoint.label;
        self.metrics.calls.get_or_create(label).inc();
        self.metrics.latency.get_or_create(label).observe(started.elapsed().as_secs_f64());
        answer.map_err(|e| {
            self.metrics.errors.get_or_create(label).inc();
            tracing::warn!(hook = label.hook, "hook call failed: {e}");
            EnvelopeError::new("unavailable", format!("the {} hook {e}", label.hook))
        })
    }

    /// Posts `call` to `endpoint` once a place among the calls in flight is
    /// free: the body of a 2xx answer.
    async fn post(&self, endpoint: &Endpoint, call: &impl Serialize) -> Result<Bytes, String> {
        // Never closed.
        let _permit = endpoint.in_flight.acquire().await.map_err(|e| e.to_string())?;
        let json = serde_json::to_vec(call).map_err(|e| e.to_string())?;
        let mut request = hyper::Request::post(endpoint.url.clone()).body(Full::new(Bytes::from(json)));
        if let Ok(request) = &mut request {
            request.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        let request = request.map_err(|e| e.to_string())?;
        let response = self.client.request(request).await.map_err(|e| format!("could not be reached: {e:#}"))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("answered {status}"));
        }
        let body = Limited::new(response.into_body(), self.max_answer).collect().await;
        Ok(body.map_err(|e| format!("answer could not be read: {e}"))?.to_bytes())
    }
}

/// An rpc refused: the server has no rpc hook.
pub fn no_rpc_hook() -> EnvelopeError {
    EnvelopeError::new("not_offered", "the server has no rpc hook")
}

/// The backend's refusal, for `reason` if it gave one.
fn refused(reason: Option<String>) -> EnvelopeError {
    EnvelopeError::new("refused", reason.unwrap_or_else(|| "refused by the application".into()))
}

/// A hook's URL: `http://` with a host (the client speaks no TLS yet).
pub fn url(text: &str) -> Result<Uri, String> {
    let url: Uri = text.parse().map_err(|e| format!("{text:?} is not a URL: {e}"))?;
    if url.scheme_str() != Some("http") || url.host().is_none() {
        return Err(format!("{text:?} is not an http:// URL with a host"));
    }
    Ok(url)
}
