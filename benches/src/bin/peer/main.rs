//! The peer servers our benchmarks compare against, one per run:
//! `peer <KIND> [--listen 127.0.0.1:0]`, where KIND is `tungstenite`,
//! `tokio-websockets`, `fastwebsockets`, `gorilla-hub` or `floor`.
//!
//! Once bound it prints `listening on <addr>` on stdout, the one line a
//! benchmark driver reads to find the port. Every accepted connection gets
//! `TCP_NODELAY` and a task of its own; a connection's errors end only it,
//! and nothing is logged per connection.

use std::future::Future;
use std::io::{ErrorKind, Write};
use std::process::ExitCode;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use ws_benches::Failure;

mod fastwebsockets;
mod floor;
mod gorilla_hub;
mod tokio_websockets;
mod tungstenite;

const USAGE: &str =
    "usage: peer <tungstenite|tokio-websockets|fastwebsockets|gorilla-hub|floor> [--listen 127.0.0.1:0]";

/// The server to run.
#[derive(Clone, Copy)]
enum Kind {
    Tungstenite,
    TokioWebsockets,
    Fastwebsockets,
    GorillaHub,
    Floor,
}

impl Kind {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "tungstenite" => Self::Tungstenite,
            "tokio-websockets" => Self::TokioWebsockets,
            "fastwebsockets" => Self::Fastwebsockets,
            "gorilla-hub" => Self::GorillaHub,
            "floor" => Self::Floor,
            _ => return None,
        })
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let Some((kind, listen)) = parse_args(std::env::args().skip(1)) else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    match run(kind, &listen).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("peer: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The KIND and the listen address, or `None` for anything unknown.
fn parse_args(mut args: impl Iterator<Item = String>) -> Option<(Kind, String)> {
    let kind = Kind::parse(&args.next()?)?;
    let listen = match (args.next().as_deref(), args.next(), args.next()) {
        (None, _, _) => "127.0.0.1:0".to_owned(),
        (Some("--listen"), Some(addr), None) => addr,
        _ => return None,
    };
    Some((kind, listen))
}

async fn run(kind: Kind, listen: &str) -> Result<(), Failure> {
    let listener = TcpListener::bind(listen).await?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on {}", listener.local_addr()?)?;
    stdout.flush()?;
    drop(stdout);
    match kind {
        Kind::Tungstenite => accept_loop(listener, tungstenite::serve).await,
        Kind::TokioWebsockets => accept_loop(listener, tokio_websockets::serve).await,
        Kind::Fastwebsockets => accept_loop(listener, fastwebsockets::serve).await,
        Kind::GorillaHub => gorilla_hub::run(listener).await,
        Kind::Floor => accept_loop(listener, floor::serve).await,
    }
}

/// Accepts forever, serving each connection, `TCP_NODELAY` set, with
/// `serve` on a task of its own whose error is dropped.
async fn accept_loop<F, Fut>(listener: TcpListener, mut serve: F) -> Result<(), Failure>
where
    F: FnMut(TcpStream) -> Fut,
    Fut: Future<Output = Result<(), Failure>> + Send + 'static,
{
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                if stream.set_nodelay(true).is_ok() {
                    tokio::spawn(serve(stream));
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset) => {}
            Err(e) => {
                // Out of file descriptors, say: not one connection's fault.
                eprintln!("peer: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
