//! `/echo` (with `--echo`): every text and binary message sent back as it
//! came, for the Autobahn testsuite and benchmarks. Like a hub session it is
//! a hand-written future holding the WebSocket and its place among the
//! pulse's listeners and little else, so an idle echo connection costs
//! little; writes are batched by `poll_recv`. At shutdown it closes with 1001.

use crate::pulse::{Listener, Signal};
use crate::server::Server;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::info;
use ws_proto::{CloseCode, Event, State};
use ws_tokio::WebSocket;

/// One echo connection, served until it ends.
pub struct Echo<S> {
    ws: WebSocket<S>,
    server: Arc<Server>,
    /// Taken when the echo is dropped, to give its slot back.
    pulse: Listener,
    peer: SocketAddr,
}

impl<S> Echo<S> {
    /// The echo of `ws`, whose client is `peer`.
    pub fn new(ws: WebSocket<S>, peer: SocketAddr, server: Arc<Server>) -> Self {
        info!(%peer, "echo connection open");
        Echo { ws, pulse: server.pulse.listen(""), server, peer }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Echo<S> {
    /// At shutdown, the closing handshake with 1001.
    fn poll_pulse(&mut self, cx: &mut Context<'_>) {
        if self.pulse.poll(&self.server.pulse, cx) == Some(Signal::Shutdown)
            && self.ws.connection().state() == State::Open
        {
            // Fails only if the connection is closing already.
            let _ = self.ws.queue_close(CloseCode::GOING_AWAY, "server shutting down");
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Future for Echo<S> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let echo = self.get_mut();
        loop {
            echo.poll_pulse(cx);
            match ready!(echo.ws.poll_recv(cx)) {
                // Fails only once the closing handshake began; the message is then dropped.
                Some(Ok(Event::Message(message))) => _ = echo.ws.queue(&message),
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    info!(peer = %echo.peer, code = ?e.close_code().map(|c| c.0), "echo connection failed: {e}");
                    return Poll::Ready(());
                }
                None => {
                    info!(peer = %echo.peer, "echo connection closed");
                    return Poll::Ready(());
                }
            }
        }
    }
}

impl<S> Drop for Echo<S> {
    fn drop(&mut self) {
        self.pulse.release(&self.server.pulse);
    }
}
