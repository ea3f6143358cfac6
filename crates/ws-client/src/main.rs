//! `ws-client URL`: prints each message that arrives, one per line, and sends
//! each line typed on standard input as a text message. End of input closes
//! the connection (1000); the server's close ends the program.
//!
//! `ws-client URL --room ROOM` speaks the hub's protocol instead: it joins
//! the room, sends each line as a message to it, prints the room's messages
//! as `sender: content` (and the JSON `data` of those that carry it;
//! `--json`: the envelopes as they came), and
//! reconnects after a drop, recovering what it missed. `--token-command`
//! gives it a token for every connection, and a fresh one whenever the
//! server asks before the last expires.

use clap::Parser;
use std::process::ExitCode;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines, Stdin, Stdout};
use ws_client::hub::{HubClient, HubEvent, HubSettings, TokenSource};
use ws_client::{ClientSettings, Trust, connect};
use ws_proto::{CloseCode, DeflateConfig, Event, Message};

/// A WebSocket command-line client.
#[derive(Debug, Parser)]
#[command(name = "ws-client", version, about)]
struct Args {
    /// The server, such as ws://127.0.0.1:8080/ws.
    url: String,

    /// An extra request header, as `Name: value` (repeatable).
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE")]
    headers: Vec<String>,

    /// Join ROOM of a ws-server hub, send each line typed to it, and reconnect after a drop.
    #[arg(long, value_name = "ROOM")]
    room: Option<String>,

    /// With --room: print the server's envelopes as JSON, one per line.
    #[arg(long, requires = "room")]
    json: bool,

    /// A token for the server, sent as `Authorization: Bearer TOKEN`.
    #[arg(long, value_name = "TOKEN", conflicts_with = "token_command")]
    token: Option<String>,

    /// A command (run by `sh -c`) whose output is a token for the server:
    /// run for every connection and, with --room, whenever the server asks
    /// for a fresh token before the last one expires.
    #[arg(long, value_name = "COMMAND")]
    token_command: Option<String>,

    /// For wss://: trust the certificate authorities in this PEM file instead of the web's.
    #[arg(long, value_name = "FILE", conflicts_with = "insecure")]
    ca_file: Option<std::path::PathBuf>,

    /// For wss://: accept any certificate, such as a development server's
    /// self-signed one. Anyone on the path can then read and change the traffic.
    #[arg(long)]
    insecure: bool,

    /// Open the WebSocket over HTTP/2 (RFC 8441): TLS with ALPN h2 for
    /// wss://, prior knowledge for ws:// (a server with --h2c).
    #[arg(long)]
    http2: bool,

    /// A subprotocol to offer (repeatable, in order of preference).
    #[arg(long = "subprotocol", value_name = "NAME")]
    subprotocols: Vec<String>,

    /// Do not offer permessage-deflate compression.
    #[arg(long)]
    no_deflate: bool,

    /// The largest window this client compresses with (8-15; 8 sends uncompressed).
    #[arg(long, default_value_t = 15, value_name = "BITS", value_parser = clap::value_parser!(u8).range(8..=15))]
    deflate_window_bits: u8,

    /// The largest window the server may compress with (8-15), asked of it.
    #[arg(long, default_value_t = 15, value_name = "BITS", value_parser = clap::value_parser!(u8).range(8..=15))]
    deflate_server_window_bits: u8,

    /// Compress each message on its own, and ask the server to do the same.
    #[arg(long)]
    deflate_no_context_takeover: bool,

    /// Messages shorter than this many bytes are sent uncompressed.
    #[arg(long, default_value_t = 128, value_name = "BYTES")]
    deflate_threshold: usize,
}

impl Args {
    fn settings(&self) -> Result<ClientSettings, String> {
        let mut headers = self
            .headers
            .iter()
            .map(|h| h.split_once(':').map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned())))
            .collect::<Option<Vec<_>>>()
            .ok_or("a header is `Name: value`")?;
        headers.extend(self.token.as_ref().map(|t| ("Authorization".to_owned(), format!("Bearer {t}"))));
        let deflate = (!self.no_deflate).then_some(DeflateConfig {
            window_bits: self.deflate_window_bits,
            peer_window_bits: self.deflate_server_window_bits,
            no_context_takeover: self.deflate_no_context_takeover,
            peer_no_context_takeover: self.deflate_no_context_takeover,
            threshold: self.deflate_threshold,
            ..DeflateConfig::default()
        });
        let trust = match (&self.ca_file, self.insecure) {
            (Some(path), _) => Trust::CaFile(path.clone()),
            (None, true) => Trust::Insecure,
            (None, false) => Trust::WebRoots,
        };
        Ok(ClientSettings {
            url: self.url.clone(),
            trust,
            protocols: self.subprotocols.clone(),
            headers,
            deflate,
            http2: self.http2,
            ..ClientSettings::default()
        })
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ws-client: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let token = args.token_command.clone().map(|command| TokenSource::new(move || run_token_command(&command)));
    if let Some(room) = &args.room {
        return chat(HubSettings { token, ..HubSettings::new(args.settings()?) }, room, args.json).await;
    }
    let mut settings = args.settings()?;
    if let Some(source) = token {
        settings.headers.push(("Authorization".to_owned(), format!("Bearer {}", source.fetch().await?)));
    }
    let (mut ws, response) = connect(&settings).await?;
    let agreed: Vec<String> = response.extensions.iter().map(ToString::to_string).collect();
    eprintln!(
        "connected to {}{}",
        args.url,
        if agreed.is_empty() { String::new() } else { format!(" ({})", agreed.join(", ")) }
    );
    let mut console = Console::new();
    loop {
        tokio::select! {
            line = console.line() => match line? {
                Some(line) => ws.queue(&Message::from(line))?,
                None => ws.queue_close(CloseCode::NORMAL, "")?,
            },
            event = ws.recv() => match event {
                Some(Ok(Event::Message(Message::Text(text)))) => console.print(text.as_str()).await?,
                Some(Ok(Event::Message(Message::Binary(bytes)))) => eprintln!("(binary message of {} bytes)", bytes.len()),
                Some(Ok(Event::Close(frame))) => {
                    let (code, reason) = frame.map_or((1005, String::new()), |f| (f.code.0, f.reason.as_str().to_owned()));
                    eprintln!("closed by the server: {code} {reason}");
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => return Ok(ExitCode::SUCCESS),
            },
        }
    }
}

/// Lines typed on standard input, lines printed on standard output.
struct Console {
    /// `None` once the input has ended.
    lines: Option<Lines<BufReader<Stdin>>>,
    stdout: Stdout,
}

impl Console {
    fn new() -> Self {
        Console { lines: Some(BufReader::new(tokio::io::stdin()).lines()), stdout: tokio::io::stdout() }
    }

    /// The next line typed; `None` once, at the end of input, and after that never ready.
    async fn line(&mut self) -> std::io::Result<Option<String>> {
        let Some(lines) = &mut self.lines else { return std::future::pending().await };
        let line = lines.next_line().await?;
        if line.is_none() {
            self.lines = None;
        }
        Ok(line)
    }

    async fn print(&mut self, line: &str) -> std::io::Result<()> {
        self.stdout.write_all(format!("{line}\n").as_bytes()).await?;
        self.stdout.flush().await
    }
}

/// The hub mode: lines typed go to `room`, its messages come back, the
/// connection comes back after a drop.
async fn chat(settings: HubSettings, room: &str, json: bool) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let url = settings.connection.url.clone();
    let (client, mut events) = HubClient::start(settings);
    client.join(room);
    let mut console = Console::new();
    loop {
        tokio::select! {
            line = console.line() => match line? {
                Some(line) => {
                    client.send(room, &line);
                }
                None => client.close(),
            },
            event = events.recv() => {
                let Some(event) = event else { return Ok(ExitCode::SUCCESS) };
                if let HubEvent::Refused { status, reason } = event {
                    return Err(format!("{url}: the server refused the connection with HTTP {status}: {reason}").into());
                }
                if let Some(line) = show(event, &url, json) {
                    console.print(&line).await?;
                }
            }
        }
    }
}

/// The token that `command`, run by `sh -c`, prints, or why there is none.
fn run_token_command(command: &str) -> Result<String, String> {
    let output = std::process::Command::new("sh").args(["-c", command]).output();
    let output = output.map_err(|e| format!("--token-command {command:?}: {e}"))?;
    if !output.status.success() {
        return Err(format!("--token-command {command:?}: {}", output.status));
    }
    let token = String::from_utf8(output.stdout).map_err(|_| format!("--token-command {command:?}: not UTF-8"))?;
    match token.trim() {
        "" => Err(format!("--token-command {command:?} printed no token")),
        token => Ok(token.to_owned()),
    }
}

/// What a hub event prints on standard output; notices go to standard error.
fn show(event: HubEvent, url: &str, json: bool) -> Option<String> {
    match event {
        HubEvent::Message { envelope, .. } if json => Some(envelope.to_string()),
        HubEvent::Message { envelope, .. } => {
            // The text, then the JSON data, of those the message has.
            let content = envelope["content"].as_str().map(str::to_owned);
            let said: Vec<String> = content.into_iter().chain(envelope.get("data").map(|d| d.to_string())).collect();
            Some(format!("{}: {}", envelope["sender"].as_str().unwrap_or("?"), said.join(" ")))
        }
        HubEvent::Envelope(envelope) if json => Some(envelope.to_string()),
        HubEvent::Envelope(envelope) => {
            match envelope["type"].as_str() {
                Some("system") => eprintln!("* {}", envelope["content"].as_str().unwrap_or_default()),
                Some("error") => eprintln!(
                    "error: {}: {}",
                    envelope["code"].as_str().unwrap_or_default(),
                    envelope["message"].as_str().unwrap_or_default()
                ),
                _ => {}
            }
            None
        }
        HubEvent::Connected => {
            eprintln!("connected to {url}");
            None
        }
        HubEvent::Disconnected { code, reason } => {
            eprintln!("disconnected ({}): {reason}", code.map_or("no close".to_owned(), |c| c.to_string()));
            None
        }
        HubEvent::Reconnecting { attempt, delay, .. } => {
            eprintln!("reconnecting in {} ms (attempt {attempt})", delay.as_millis());
            None
        }
        HubEvent::Gap { room, from, to } => {
            eprintln!("missed messages {from} to {to} of {room}");
            None
        }
        HubEvent::Renumbered { room } => {
            eprintln!("room {room} started over (the server lost its history): what it holds now follows");
            None
        }
        HubEvent::Refused { .. } => None,
    }
}
