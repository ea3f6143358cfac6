//! Echo: connections that each keep `depth` messages in flight; every echo
//! that comes back is counted and answered with a new message, all the
//! messages one read brings answered in one write.

use crate::wire::{CLOSE, Conn, client_frame, close_reason};
use crate::{Run, Shared, open_all};
use serde_json::Value;
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Instant;
use tokio::io::AsyncWriteExt;
use ws_benches::Failure;
use ws_proto::frame::OpCode;

/// The echo mode's options.
#[derive(clap::Args)]
pub(crate) struct Options {
    /// The echo endpoint.
    #[arg(long)]
    url: String,
    /// Connections.
    #[arg(long, default_value_t = 100)]
    connections: usize,
    /// Bytes per message.
    #[arg(long, default_value_t = 20)]
    size: usize,
    /// Messages in flight per connection.
    #[arg(long, default_value_t = 10)]
    depth: usize,
    /// Text messages (valid UTF-8) rather than binary.
    #[arg(long)]
    text: bool,
}

pub(crate) async fn run(options: &Options, run: &Run) -> Result<Value, Failure> {
    let target = run.target(&options.url).await?;
    let (opcode, byte) = if options.text { (OpCode::Text, b'x') } else { (OpCode::Binary, 0x5a) };
    let frame = client_frame(opcode, &vec![byte; options.size]);
    let batch: Rc<[u8]> = frame.repeat(options.depth).into();
    let (frame_len, depth) = (frame.len(), options.depth);
    println!("echo: {} connections, {} B messages, {depth} in flight each", options.connections, options.size);
    open_all(&target, options.connections, 100, run, |conn| {
        echo(conn, batch.clone(), frame_len, depth, run.shared.clone())
    })
    .await?;
    let mut report = run.measure("messages", "message").await?;
    report["mode"] = "echo".into();
    Ok(report)
}

/// Keeps `depth` messages in flight on one connection until the run stops.
async fn echo(
    mut conn: Conn,
    batch: Rc<[u8]>,
    frame_len: usize,
    depth: usize,
    shared: Rc<Shared>,
) -> Result<(), Failure> {
    let mut sent = VecDeque::with_capacity(depth);
    conn.writer.write_all(&batch).await?;
    sent.extend(std::iter::repeat_n(Instant::now(), depth));
    while !shared.stopped() {
        if !conn.reader.fill().await? {
            return Err("the server ended the connection".into());
        }
        let mut echoed = 0;
        while let Some(frame) = conn.reader.next_frame() {
            if frame.opcode == CLOSE {
                return Err(close_reason(&frame).into());
            }
            if !frame.is_data() {
                continue;
            }
            let at = sent.pop_front().ok_or("more echoes than messages sent")?;
            shared.record(at.elapsed());
            echoed += 1;
        }
        if echoed > 0 {
            conn.writer.write_all(&batch[..echoed * frame_len]).await?;
            sent.extend(std::iter::repeat_n(Instant::now(), echoed));
        }
    }
    Ok(())
}
