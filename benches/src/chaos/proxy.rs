//! A TCP proxy the chaos run controls. Blackholed, it stops carrying bytes
//! both ways and closes nothing, as a network path that went dark: what was
//! sent waits in the sockets' buffers and flows on, in order, once the
//! proxy is restored (a TCP connection that survives an outage loses no
//! byte, so neither does this one). It can be turned to a new target,
//! a server started again on another port, for the connections that follow.

use std::io;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A proxy on a port of its own to its target; stops when dropped.
pub struct Proxy {
    /// Where it listens.
    pub addr: SocketAddr,
    target: watch::Sender<SocketAddr>,
    open: watch::Sender<bool>,
    accepting: JoinHandle<()>,
}

impl Proxy {
    /// A proxy to `target` on a free port of 127.0.0.1.
    pub async fn start(target: SocketAddr) -> io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (target, targets) = watch::channel(target);
        let (open, opened) = watch::channel(true);
        let accepting = tokio::spawn(accept(listener, targets, opened));
        Ok(Proxy { addr, target, open, accepting })
    }

    /// New connections go to `target`.
    pub fn retarget(&self, target: SocketAddr) {
        self.target.send_replace(target);
    }

    /// From now on no byte passes, either way, and no new connection reaches the target.
    pub fn blackhole(&self) {
        self.open.send_replace(false);
    }

    /// Bytes pass again.
    pub fn restore(&self) {
        self.open.send_replace(true);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

/// Takes connections, each carried on its own task to the target of the moment.
async fn accept(listener: TcpListener, targets: watch::Receiver<SocketAddr>, opened: watch::Receiver<bool>) {
    loop {
        let client = match listener.accept().await {
            Ok((client, _)) => client,
            // Out of file descriptors, for a while: take the next one later.
            Err(_) => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let (target, mut gate) = (*targets.borrow(), opened.clone());
        tokio::spawn(async move {
            // Blackholed, a new connection waits: its handshake times out, as through a dark path.
            if gate.wait_for(|open| *open).await.is_err() {
                return;
            }
            // The target is down: the client's connection just ends.
            let Ok(server) = TcpStream::connect(target).await else { return };
            let _ = (client.set_nodelay(true), server.set_nodelay(true));
            let ((client_in, client_out), (server_in, server_out)) = (client.into_split(), server.into_split());
            tokio::join!(carry(client_in, server_out, gate.clone()), carry(server_in, client_out, gate));
        });
    }
}

/// Copies `from` to `to` while the proxy is open, until `from` ends; then ends `to`.
async fn carry(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, open: watch::Receiver<bool>) {
    let (mut opened, mut closing) = (open.clone(), open);
    let mut buf = vec![0; 16 * 1024];
    loop {
        if opened.wait_for(|open| *open).await.is_err() {
            return;
        }
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(n @ 1..) => n,
                _ => break,
            },
            // Blackholed while waiting: stop reading, so the bytes wait in the socket.
            _ = closing.wait_for(|open| !*open) => continue,
        };
        if opened.wait_for(|open| *open).await.is_err() || to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
