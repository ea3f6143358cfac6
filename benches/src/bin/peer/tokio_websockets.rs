//! Echo server on tokio-websockets 0.13, as in the crate's own
//! `echo_server` example: `ServerBuilder::new().accept(stream)`, then send
//! back every text and binary message (SIMD masking and UTF-8 validation
//! are detected at run time; the library answers pings and closes).

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_websockets::ServerBuilder;
use ws_benches::Failure;

/// Echoes one connection until it closes.
pub(crate) async fn serve(stream: TcpStream) -> Result<(), Failure> {
    let (_request, mut ws) = ServerBuilder::new().accept(stream).await?;
    while let Some(Ok(msg)) = ws.next().await {
        if msg.is_text() || msg.is_binary() {
            ws.send(msg).await?;
        }
    }
    Ok(())
}
