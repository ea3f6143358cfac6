//! Echo server on tokio-tungstenite 0.30 (tungstenite 0.30), in the crate's
//! own `echo-server` example's design: `accept_async`, split, and forward
//! every text and binary message back. `forward` feeds the sink and flushes
//! only when the stream is pending; the library answers pings, and a close
//! ends the stream.

use futures_util::future::ready;
use futures_util::{StreamExt, TryStreamExt};
use tokio::net::TcpStream;
use ws_benches::Failure;

/// Echoes one connection until it closes.
pub(crate) async fn serve(stream: TcpStream) -> Result<(), Failure> {
    let (write, read) = tokio_tungstenite::accept_async(stream).await?.split();
    read.try_filter(|m| ready(m.is_text() || m.is_binary())).forward(write).await?;
    Ok(())
}
