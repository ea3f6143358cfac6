//! API: messages published through the server's HTTP API, `POST
//! /api/publish` with `Authorization: Bearer KEY`, over one kept-alive
//! HTTP/1.1 connection: `depth` requests in flight, pipelined, their answers
//! read in order. A request carries one envelope, or with `--batch N` a JSON
//! array of N, answered by an array of N acks or errors in their order;
//! every ack is one message, timed from its request's send.

use crate::wire::Target;
use crate::{Run, Shared};
use bytes::{Buf, BytesMut};
use serde_json::{Value, json};
use std::cell::Cell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use ws_benches::Failure;

/// The API mode's options.
#[derive(clap::Args)]
pub(crate) struct Options {
    /// The publish endpoint, `http://HOST:PORT/api/publish`.
    #[arg(long)]
    url: String,
    /// The server's `--api-key`.
    #[arg(long)]
    api_key: String,
    /// Requests in flight on the connection.
    #[arg(long, default_value_t = 32)]
    depth: usize,
    /// Envelopes per request, sent as a JSON array; without it, each request
    /// is one envelope object.
    #[arg(long)]
    batch: Option<usize>,
    /// Characters of content per message.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// The room published to.
    #[arg(long, default_value = "general")]
    room: String,
}

pub(crate) async fn run(options: &Options, run: &Run) -> Result<Value, Failure> {
    let target = Target::parse(&options.url)?;
    let content = format!("api {}", "x".repeat(options.size.saturating_sub(4)));
    let envelope = json!({"type": "message", "room": options.room, "content": content});
    let body = match options.batch {
        Some(n) => Value::Array(vec![envelope; n.max(1)]).to_string(),
        None => envelope.to_string(),
    };
    let request = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        target.path,
        target.authority,
        options.api_key,
        body.len()
    );
    let stream = TcpStream::connect(&target.authority).await?;
    stream.set_nodelay(true)?;
    let depth = options.depth.max(1);
    let per_request = options.batch.map_or(1, |n| n.max(1));
    println!("api: {depth} requests in flight on one connection, {per_request} messages each");
    let errors = Rc::new(Cell::new(0));
    let publishing = publish(stream, request.into_bytes(), depth, errors.clone(), run.shared.clone());
    let shared = run.shared.clone();
    tokio::task::spawn_local(async move { publishing.await.unwrap_or_else(|e| shared.fail(e)) });
    let mut report = run.measure("messages", "message").await?;
    if errors.get() > 0 {
        println!("api: {} envelopes answered with an error", errors.get());
    }
    report["mode"] = "api".into();
    report["depth"] = json!(depth);
    report["batch"] = json!(options.batch);
    report["errors"] = json!(errors.get());
    Ok(report)
}

/// Keeps `depth` copies of `request` in flight until the run stops; every
/// batch of answers one read brings is followed by as many requests, in one write.
async fn publish(
    mut stream: TcpStream,
    request: Vec<u8>,
    depth: usize,
    errors: Rc<Cell<u64>>,
    shared: Rc<Shared>,
) -> Result<(), Failure> {
    let window = request.repeat(depth);
    stream.write_all(&window).await?;
    let mut sent: VecDeque<Instant> = std::iter::repeat_n(Instant::now(), depth).collect();
    let mut buf = BytesMut::with_capacity(64 << 10);
    let mut answers = 0u64;
    while !shared.stopped() {
        buf.reserve(64 << 10);
        if stream.read_buf(&mut buf).await? == 0 {
            return Err(format!(
                "the server closed the connection after {answers} answers: the API must keep it alive"
            )
            .into());
        }
        let mut answered = 0;
        while let Some(answer) = Answer::parse(&buf)? {
            buf.advance(answer.len);
            let at = sent.pop_front().ok_or("more answers than requests")?;
            shared.record_n(at.elapsed(), answer.acks);
            errors.set(errors.get() + answer.errors);
            answered += 1;
        }
        if answered > 0 {
            answers += answered as u64;
            stream.write_all(&window[..answered * request.len()]).await?;
            sent.extend(std::iter::repeat_n(Instant::now(), answered));
        }
    }
    Ok(())
}

/// One whole answer at the start of the buffer: its length, and how many
/// envelopes it acks and refuses.
#[derive(Debug)]
struct Answer {
    len: usize,
    acks: u64,
    errors: u64,
}

impl Answer {
    /// The answer at the start of `buf`, once it is all there. A status
    /// other than 2xx, or `Connection: close`, is a failure of the run.
    fn parse(buf: &[u8]) -> Result<Option<Answer>, Failure> {
        let mut fields = [httparse::EMPTY_HEADER; 16];
        let mut response = httparse::Response::new(&mut fields);
        let httparse::Status::Complete(head) = response.parse(buf)? else { return Ok(None) };
        let header = |name: &str| response.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value);
        let len = header("content-length")
            .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse::<usize>().ok())
            .ok_or("an answer without a Content-Length")?;
        let Some(body) = buf.get(head..head + len) else { return Ok(None) };
        let status = response.code.unwrap_or_default();
        if !(200..300).contains(&status) {
            return Err(format!("the server answered {status}: {}", String::from_utf8_lossy(body)).into());
        }
        if header("connection").is_some_and(|v| v.eq_ignore_ascii_case(b"close")) {
            return Err("the server answered Connection: close: the API must keep the connection alive".into());
        }
        let is_ack = |v: &Value| v["type"] == "ack";
        let (acks, all) = match serde_json::from_slice(body)? {
            Value::Array(answers) => (answers.iter().filter(|v| is_ack(v)).count(), answers.len()),
            answer => (usize::from(is_ack(&answer)), 1),
        };
        Ok(Some(Answer { len: head + len, acks: acks as u64, errors: (all - acks) as u64 }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(head: &str, body: &str) -> String {
        format!("HTTP/1.1 200 OK\r\n{head}Content-Length: {}\r\n\r\n{body}", body.len())
    }

    #[test]
    fn answers_count_acks() {
        let one = answer("", r#"{"type":"ack","seq":1}"#);
        let parsed = Answer::parse(one.as_bytes()).unwrap().unwrap();
        assert_eq!((parsed.len, parsed.acks, parsed.errors), (one.len(), 1, 0));
        let batch = answer("", r#"[{"type":"ack","seq":2},{"type":"error","code":"too_long"},{"type":"ack","seq":3}]"#);
        let parsed = Answer::parse(format!("{batch}HTTP/1.1").as_bytes()).unwrap().unwrap();
        assert_eq!((parsed.len, parsed.acks, parsed.errors), (batch.len(), 2, 1));
    }

    #[test]
    fn a_cut_answer_waits() {
        let one = answer("", r#"{"type":"ack","seq":1}"#);
        assert!(Answer::parse(&one.as_bytes()[..one.len() - 1]).unwrap().is_none());
        assert!(Answer::parse(&one.as_bytes()[..10]).unwrap().is_none());
    }

    #[test]
    fn close_and_refusals_fail() {
        let close = answer("Connection: close\r\n", r#"{"type":"ack","seq":1}"#);
        assert!(Answer::parse(close.as_bytes()).unwrap_err().to_string().contains("Connection: close"));
        let refused = "HTTP/1.1 401 Unauthorized\r\nContent-Length: 2\r\n\r\n{}";
        assert!(Answer::parse(refused.as_bytes()).unwrap_err().to_string().contains("401"));
    }
}
