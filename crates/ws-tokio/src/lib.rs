//! ws-tokio: WebSockets on tokio, for both roles, on top of ws-proto.
//!
//! [`WebSocket`] runs a ws-proto [`Connection`](ws_proto::Connection) over any
//! `AsyncRead + AsyncWrite`: plain TCP or TLS. The server side reads the
//! opening request within a timeout and lets the application look at it
//! before it accepts, picks a subprotocol or refuses ([`server`]); the client
//! side connects to a `ws://` URL ([`client`]). It is not an application: it
//! knows nothing of rooms, JSON or routing.
//!
//! ```
//! use std::time::Duration;
//! use ws_proto::{Event, Message};
//! use ws_tokio::{Options, client, server};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), ws_tokio::Error> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let url = format!("ws://{}/echo", listener.local_addr()?);
//! tokio::spawn(async move {
//!     let (tcp, _) = listener.accept().await?;
//!     let mut ws = server::accept(tcp, Options::default(), Duration::from_secs(5)).await?;
//!     while let Some(Ok(event)) = ws.recv().await {
//!         if let Event::Message(message) = event {
//!             ws.queue(&message)?;
//!         }
//!     }
//!     Ok::<_, ws_tokio::Error>(())
//! });
//!
//! let (mut ws, _response) = client::connect(&url).await?;
//! ws.send(&Message::from("Hello")).await?;
//! assert_eq!(ws.recv().await.transpose()?, Some(Event::Message(Message::from("Hello"))));
//! ws.close(ws_proto::CloseCode::NORMAL, "done").await?;
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]

pub mod client;
mod error;
pub mod server;
mod socket;

pub use error::Error;
pub use socket::{Options, Sender, WebSocket};
