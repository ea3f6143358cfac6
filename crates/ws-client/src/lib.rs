//! ws-client: a WebSocket client on ws-tokio, as a library and the
//! `ws-client` command-line tool.
//!
//! [`ClientSettings`] gathers what a client offers (subprotocols, headers,
//! permessage-deflate with its settings) and [`connect`] opens a connection
//! with them. It is not a protocol implementation: the protocol is ws-proto's
//! and its tokio binding ws-tokio's. [`hub::HubClient`] is a client of the
//! ws-server hub that reconnects with backoff and recovers what it missed.
//!
//! ```no_run
//! # async fn run() -> Result<(), ws_tokio::Error> {
//! use ws_client::{ClientSettings, connect};
//! use ws_proto::{Event, Message};
//!
//! let settings = ClientSettings { url: "ws://127.0.0.1:8080/ws".into(), ..ClientSettings::default() };
//! let (mut ws, _response) = connect(&settings).await?;
//! ws.send(&Message::from(r#"{"type":"join","room":"general"}"#)).await?;
//! while let Some(event) = ws.recv().await {
//!     if let Event::Message(Message::Text(text)) = event? {
//!         println!("{}", text.as_str());
//!     }
//! }
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]

pub mod http2;
pub mod hub;
pub mod tls;

use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::timeout;
use ws_proto::DeflateConfig;
use ws_proto::handshake::client::Response;
use ws_tokio::client::{ClientOptions, Target, handshake};
use ws_tokio::{Options, WebSocket};

pub use tls::{Stream, Trust};

/// Where a client connects and what it offers.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// A `ws://` or `wss://host[:port]/path?query` URL.
    pub url: String,
    /// Whose certificates a `wss://` server may present.
    pub trust: Trust,
    /// Subprotocols to offer, in order of preference.
    pub protocols: Vec<String>,
    /// Extra header fields, such as `Authorization`.
    pub headers: Vec<(String, String)>,
    /// permessage-deflate to offer, with this end's settings; `None` offers none.
    pub deflate: Option<DeflateConfig>,
    /// How long connecting and the opening handshake may take.
    pub handshake_timeout: Duration,
    /// Open the WebSocket over HTTP/2 (RFC 8441), as a stream of a
    /// connection of its own: TLS with ALPN `h2` for `wss://`, prior
    /// knowledge for `ws://`. ([`http2::Http2`] opens many over one.)
    pub http2: bool,
}

impl Default for ClientSettings {
    /// No URL yet; permessage-deflate offered with its default settings; 10 s to connect.
    fn default() -> Self {
        ClientSettings {
            url: String::new(),
            trust: Trust::default(),
            protocols: Vec::new(),
            headers: Vec::new(),
            deflate: Some(DeflateConfig::default()),
            handshake_timeout: Duration::from_secs(10),
            http2: false,
        }
    }
}

/// Connects with `settings`, over TLS for `wss://` (and over HTTP/2 with
/// `settings.http2`): the WebSocket and the
/// server's response (its chosen subprotocol and the extensions it agreed
/// to). Connecting, TLS and the opening handshake together take at most
/// `handshake_timeout`.
pub async fn connect(settings: &ClientSettings) -> Result<(WebSocket<Stream>, Response), ws_tokio::Error> {
    let options = client_options(settings);
    let target = Target::new(&settings.url, &options)?;
    if settings.http2 {
        let opening = async { http2::Http2::connect(settings).await?.open(&target.request.target).await };
        return timeout(settings.handshake_timeout, opening).await.map_err(|_| ws_tokio::Error::HandshakeTimeout)?;
    }
    let connecting = async {
        let tcp = TcpStream::connect((target.host.as_str(), target.port)).await?;
        tcp.set_nodelay(true)?;
        let stream = match target.secure {
            true => tls::connect(tcp, &target.host, &settings.trust).await?,
            false => Stream::Plain(tcp),
        };
        handshake(stream, &target.request, options.socket).await
    };
    timeout(settings.handshake_timeout, connecting).await.map_err(|_| ws_tokio::Error::HandshakeTimeout)?
}

/// What `settings` offer, as ws-tokio's client takes it.
fn client_options(settings: &ClientSettings) -> ClientOptions {
    ClientOptions {
        protocols: settings.protocols.clone(),
        headers: settings.headers.clone(),
        socket: Options { deflate: settings.deflate, ..Options::default() },
        handshake_timeout: settings.handshake_timeout,
    }
}
