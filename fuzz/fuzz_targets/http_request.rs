//! One connection to the server's routes, in memory, on a paused clock: the
//! first byte chooses what the rest of the input becomes: raw bytes as they
//! are, a call of the server API with the rest as its body, a GET of the rest
//! as a path, or a WebSocket upgrade to `/ws` or `/echo` followed by the rest
//! as frames. The client then closes its side. Nothing panics; the
//! connection ends; whatever the server answers begins with an HTTP/1.1
//! status line, and the status is never a server error (500).
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use ws_server::config::ServerConfig;
use ws_server::server::Server;

/// The API's key of the server under test.
const KEY: &str = "fuzz-key";

/// The API's calls, and one that is none.
const CALLS: [&str; 9] = ["publish", "history", "presence", "disconnect", "unsubscribe", "rooms", "info", "none", ""];

fn config() -> Arc<ServerConfig> {
    static CONFIG: OnceLock<Arc<ServerConfig>> = OnceLock::new();
    let flags = ["ws-server", "--echo", "--api-key", KEY, "--history", "4", "--max-message-size", "4096"];
    CONFIG.get_or_init(|| Arc::new(ServerConfig::load(flags).expect("valid flags"))).clone()
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().expect("a runtime")
    })
}

fuzz_target!(|data: &[u8]| runtime().block_on(drive(data)));

async fn drive(data: &[u8]) {
    let Some((kind, rest)) = data.split_first() else { return };
    let server = Arc::new(Server::new(config()).expect("a server"));
    let (near, mut far) = tokio::io::duplex(1 << 20);
    let serving =
        tokio::spawn(
            async move { ws_server::http::serve_stream(near, ([127, 0, 0, 1], 4000).into(), None, &server).await },
        );
    // The pipe holds the whole request; the server may have closed its side already.
    let _ = far.write_all(&request(*kind, rest)).await;
    let _ = far.shutdown().await;
    let mut answer = Vec::new();
    let ended = async {
        // The server may close before it has read everything: a reset is an end too.
        let _ = far.read_to_end(&mut answer).await;
        serving.await.expect("the connection ends without a panic")
    };
    let _ = tokio::time::timeout(Duration::from_secs(120), ended).await.expect("the connection ends once closed");
    check(&answer);
}

/// The request that `kind` makes of `rest`.
fn request(kind: u8, rest: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(rest);
    match kind % 4 {
        0 => rest.to_vec(),
        1 => {
            let (call, body) =
                rest.split_first().map_or(("", &[][..]), |(c, body)| (CALLS[usize::from(*c) % CALLS.len()], body));
            let head = format!(
                "POST /api/{call} HTTP/1.1\r\nHost: hub\r\nAuthorization: Bearer {KEY}\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            [head.as_bytes(), body].concat()
        }
        2 => format!("GET {text} HTTP/1.1\r\nHost: hub\r\n\r\n").into_bytes(),
        _ => {
            let path = if rest.first().is_some_and(|b| b % 2 == 0) { "/ws" } else { "/echo" };
            let head = format!(
                "GET {path} HTTP/1.1\r\nHost: hub\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            );
            [head.as_bytes(), rest.get(1..).unwrap_or_default()].concat()
        }
    }
}

/// Whatever the server answered begins with a status line, and no status is 500.
fn check(answer: &[u8]) {
    if answer.is_empty() {
        return;
    }
    let status = answer.strip_prefix(b"HTTP/1.1 ").and_then(|line| line.get(..3)).expect("an HTTP/1.1 status line");
    let status: u16 = std::str::from_utf8(status).ok().and_then(|s| s.parse().ok()).expect("a numeric status");
    assert!((100..600).contains(&status) && status != 500, "status {status}: {}", String::from_utf8_lossy(answer));
}
