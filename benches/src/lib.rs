//! Benchmarks of the WebSocket stack; run them with `cargo bench -p ws-benches`.
//! This library holds the inputs the benches share, the start of a
//! `ws-server` for the load binaries, and one room under load (room.rs).

#![forbid(unsafe_code)]

pub mod chaos;
pub mod redis;
pub mod room;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use ws_proto::frame::{FrameHeader, OpCode, encode_frame};

/// What the load binaries fail with.
pub type Failure = Box<dyn std::error::Error + Send + Sync>;

/// Starts `target/release/ws-server` on a free port with its limits lifted
/// and `args` besides; the process (killed when dropped) and its address.
pub async fn start_server(args: &[&str]) -> Result<(Child, String), Failure> {
    let binary = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/release/ws-server");
    let mut server = Command::new(binary)
        .args(["--listen", "127.0.0.1:0", "--max-connections", "0", "--max-connections-per-ip", "0"])
        .args(["--rate-limit", "0"])
        .args(args)
        .env("RUST_LOG", "warn,ws_server=info")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("{binary}: {e} (build it with cargo build --release -p ws-server)"))?;
    let mut log = BufReader::new(server.stderr.take().ok_or("no stderr")?).lines();
    let addr = loop {
        let line = log.next_line().await?.ok_or("the server exited")?;
        if let Some(rest) = line.split("listening on ").nth(1) {
            break rest.split_whitespace().next().ok_or("no address")?.to_owned();
        }
    };
    // Keep reading the log so the server never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = log.next_line().await {} });
    Ok((server, addr))
}

/// `count` masked binary frames of `size` bytes each, as a client sends them.
pub fn masked_frames(size: usize, count: usize) -> Vec<u8> {
    let mut out = bytes::BytesMut::new();
    let header = FrameHeader { fin: true, rsv: 0, opcode: OpCode::Binary, mask: Some([1, 2, 3, 4]), payload_len: 0 };
    for _ in 0..count {
        encode_frame(header, &vec![0x5a; size], &mut out);
    }
    out.to_vec()
}

/// Text like a hub carries, about `len` bytes of JSON messages with varied
/// words and numbers, the same for the same `seed`.
pub fn json_text(len: usize, seed: u64) -> String {
    const WORDS: [&str; 16] = [
        "price",
        "update",
        "hello",
        "room",
        "market",
        "order",
        "the",
        "player",
        "moved",
        "to",
        "score",
        "chat",
        "dashboard",
        "value",
        "latency",
        "ok",
    ];
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut next = move || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 33) as usize
    };
    let mut out = String::with_capacity(len + 128);
    while out.len() < len {
        let words: Vec<&str> = (0..3 + next() % 8).map(|_| WORDS[next() % WORDS.len()]).collect();
        out.push_str(&format!(
            r#"{{"type":"message","room":"room-{}","seq":{},"data":{{"text":"{}","value":{}.{:02}}}}}"#,
            next() % 50,
            next() % 1_000_000,
            words.join(" "),
            next() % 10_000,
            next() % 100
        ));
        out.push('\n');
    }
    out.truncate(len);
    out
}

/// The resident set of process `pid`, in bytes.
pub fn rss_bytes(pid: u32) -> Result<u64, Failure> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .ok_or("no VmRSS")?
        .parse()?;
    Ok(kib * 1024)
}

/// The user and system CPU time process `pid` has used, in seconds.
pub fn cpu_seconds(pid: u32) -> Result<f64, Failure> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which ends with the last ')': utime and stime are the 12th and 13th.
    let fields: Vec<&str> = stat.rsplit_once(')').ok_or("bad stat")?.1.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    Ok(ticks / 100.0)
}
