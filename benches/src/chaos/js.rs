//! The JavaScript members of the chaos run: clients/js's `HubClient`s in one
//! Node process (members.mjs), whose events, one JSON line each, go to the
//! run's record as a Rust client's do.

use super::lock;
use super::record::Record;
use crate::Failure;
use serde_json::Value;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use ws_client::hub::HubEvent;

/// The script, beside this file.
const MEMBERS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/chaos/members.mjs");

/// The packages clients/js installs for Node.
const PACKAGES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../clients/js/node_modules/ws");

/// Starts the members, client `first + i` in `rooms[i]`, given every
/// server's URL; their events go to `record`. The process ends when it is dropped.
pub(super) fn start(
    urls: &[String],
    first: usize,
    rooms: &[Vec<String>],
    record: Arc<Mutex<Record>>,
) -> Result<Child, Failure> {
    if !Path::new(PACKAGES).is_dir() {
        return Err("the JavaScript members need clients/js's packages: (cd clients/js && npm ci)".into());
    }
    let config = serde_json::json!({"urls": urls, "first": first, "rooms": rooms});
    let mut child = Command::new("node")
        .arg(MEMBERS)
        .arg(config.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("node: {e} (apt-get install nodejs)"))?;
    let stdout = child.stdout.take().ok_or("no output of node")?;
    tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let mut record = lock(&record);
            match event(&line) {
                Some((c, event)) => record.heard(c, event),
                None => record.violations.push(format!("a JavaScript member said: {line}")),
            }
        }
    });
    Ok(child)
}

/// A line of members.mjs: the client and its event, as a Rust client tells it.
fn event(line: &str) -> Option<(usize, HubEvent)> {
    let line: Value = serde_json::from_str(line).ok()?;
    let (c, value) = (usize::try_from(line["c"].as_u64()?).ok()?, &line["v"]);
    let room = || value["room"].as_str().unwrap_or_default().to_owned();
    let envelope = |kind: &str| {
        let mut envelope = value.clone();
        envelope["type"] = Value::from(kind);
        HubEvent::Envelope(envelope)
    };
    let event = match line["e"].as_str()? {
        "connected" => HubEvent::Connected,
        "disconnected" => HubEvent::Disconnected {
            code: value["code"].as_u64().and_then(|code| u16::try_from(code).ok()),
            reason: value["reason"].as_str().unwrap_or_default().to_owned(),
        },
        "message" => HubEvent::Message { room: room(), seq: value["seq"].as_u64()?, envelope: value.clone() },
        "gap" => HubEvent::Gap { room: room(), from: value["from"].as_u64()?, to: value["to"].as_u64()? },
        "renumbered" => HubEvent::Renumbered { room: room() },
        "joined" => envelope("joined"),
        "error" => envelope("error"),
        _ => return None,
    };
    Some((c, event))
}
