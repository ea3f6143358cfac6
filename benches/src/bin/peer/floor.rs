//! The physical limit, not a WebSocket server: it answers the upgrade
//! request's head with a `101` (its accept key from `ws-proto`), then writes
//! back every read as it came: no framing, no unmasking, no UTF-8 check. Its
//! 64 KiB buffer is allocated at the first byte, so an idle connection holds
//! none, and a 16 KiB message takes one read and one write.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use ws_benches::Failure;
use ws_proto::handshake::accept_key;

/// The most of a request head read before giving up.
const HEAD_LIMIT: usize = 8 << 10;
/// The most one read takes.
const BUFFER: usize = 64 << 10;

/// Upgrades one connection, then echoes its bytes until it closes.
pub(crate) async fn serve(mut stream: TcpStream) -> Result<(), Failure> {
    let (head, rest) = read_head(&mut stream).await?;
    let key = websocket_key(&head).ok_or("no Sec-WebSocket-Key")?;
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        accept_key(key)
    );
    stream.write_all(response.as_bytes()).await?;
    stream.write_all(&rest).await?;
    drop((head, rest));
    stream.readable().await?;
    let mut buf = vec![0; BUFFER];
    loop {
        match stream.read(&mut buf).await? {
            0 => return Ok(()),
            n => stream.write_all(&buf[..n]).await?,
        }
    }
}

/// The request head up to its blank line, and the bytes read past it.
async fn read_head(stream: &mut TcpStream) -> Result<(Vec<u8>, Vec<u8>), Failure> {
    let mut buf = Vec::with_capacity(1024);
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Ok((buf, rest));
        }
        if buf.len() >= HEAD_LIMIT {
            return Err("request head too long".into());
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Err("closed during the request head".into());
        }
    }
}

/// The trimmed value of the `Sec-WebSocket-Key` header, matched in any case.
fn websocket_key(head: &[u8]) -> Option<&[u8]> {
    head.split(|&b| b == b'\n').find_map(|line| {
        let colon = line.iter().position(|&b| b == b':')?;
        let (name, value) = line.split_at(colon);
        name.eq_ignore_ascii_case(b"sec-websocket-key").then(|| value[1..].trim_ascii())
    })
}
