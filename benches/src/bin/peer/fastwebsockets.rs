//! Echo server on fastwebsockets 0.10 with hyper 1, as in the crate's own
//! `echo_server` example: hyper's HTTP/1 `serve_connection` with upgrades,
//! `fastwebsockets::upgrade::upgrade`, then a `FragmentCollector` whose
//! text and binary frames are written back (auto-close and auto-pong on,
//! the defaults); a close ends it.

use fastwebsockets::upgrade::{UpgradeFut, upgrade};
use fastwebsockets::{FragmentCollector, OpCode, WebSocketError};
use http_body_util::Empty;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use ws_benches::Failure;

/// Serves one connection's HTTP/1 until its upgrade, on any path.
pub(crate) async fn serve(stream: TcpStream) -> Result<(), Failure> {
    http1::Builder::new().serve_connection(TokioIo::new(stream), service_fn(upgrade_request)).with_upgrades().await?;
    Ok(())
}

/// Answers the upgrade and echoes on a task of its own once it completes.
async fn upgrade_request(mut request: Request<Incoming>) -> Result<Response<Empty<Bytes>>, WebSocketError> {
    let (response, upgraded) = upgrade(&mut request)?;
    tokio::spawn(echo(upgraded));
    Ok(response)
}

/// Writes every text and binary frame back until a close.
async fn echo(upgraded: UpgradeFut) -> Result<(), WebSocketError> {
    let mut ws = upgraded.await?;
    ws.set_auto_close(true);
    ws.set_auto_pong(true);
    let mut ws = FragmentCollector::new(ws);
    loop {
        let frame = ws.read_frame().await?;
        match frame.opcode {
            OpCode::Close => return Ok(()),
            OpCode::Text | OpCode::Binary => ws.write_frame(frame).await?,
            _ => {}
        }
    }
}
