//! The JavaScript client's suite (clients/js/test, `node --test`) against
//! this build's `ws-server` binary. It installs the suite's pinned packages
//! with `npm ci` when clients/js/node_modules is missing. Without `node` it
//! says so in one line and passes, unless `WS_REQUIRE_NODE=1` (as `.ci/run`
//! sets) makes that a failure; the Redis part follows `WS_REQUIRE_REDIS` as
//! the cluster tests do.

#![allow(clippy::unwrap_used)] // test helpers panic on failure by design

mod common;

use common::{http, http_get, server};
use std::path::Path;
use std::process::{Command, Output};

/// The module as the server embeds it.
const CLIENT_MODULE: &str = include_str!("../../../clients/js/index.js");

/// The value of header `name` in the whole `response`.
fn header<'a>(response: &'a str, name: &str) -> Option<&'a str> {
    let head = response.split_once("\r\n\r\n")?.0;
    head.lines().find_map(|line| line.split_once(": ").filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v))
}

#[tokio::test]
async fn the_server_serves_the_client_module_revalidated_by_its_etag() {
    let addr = server(&[]).await;
    let response = http_get(addr, "/client.js").await;
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    assert_eq!(header(&response, "content-type"), Some("text/javascript; charset=utf-8"));
    assert_eq!(header(&response, "cache-control"), Some("no-cache"));
    assert_eq!(header(&response, "access-control-allow-origin"), Some("*"));
    assert_eq!(response.split_once("\r\n\r\n").unwrap().1, CLIENT_MODULE);
    let etag = header(&response, "etag").unwrap();
    let again =
        format!("GET /client.js HTTP/1.1\r\nHost: {addr}\r\nIf-None-Match: {etag}\r\nConnection: close\r\n\r\n");
    let unchanged = http(addr, &again).await;
    assert!(unchanged.starts_with("HTTP/1.1 304 Not Modified"), "{unchanged}");
    assert_eq!(header(&unchanged, "etag"), Some(etag));
    assert!(unchanged.ends_with("\r\n\r\n"), "no body: {unchanged}");
}

/// What `program` printed, both streams, for a failure's message.
fn printed(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

#[test]
fn the_javascript_client_suite_passes_against_the_server() {
    let client = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../clients/js");
    if Command::new("node").arg("--version").output().is_err() {
        let why = "the JavaScript client's suite needs node (apt-get install nodejs npm)";
        assert!(std::env::var("WS_REQUIRE_NODE").as_deref() != Ok("1"), "WS_REQUIRE_NODE=1, but {why}");
        // Straight to standard error, past the test harness's capture: the skip must show.
        let skipped = format!("JavaScript client tests skipped: {why}; WS_REQUIRE_NODE=1 makes this a failure\n");
        let _ = std::io::Write::write_all(&mut std::io::stderr(), skipped.as_bytes());
        return;
    }
    if !client.join("node_modules").is_dir() {
        let installed = Command::new("npm").args(["ci", "--no-audit", "--no-fund"]).current_dir(&client).output();
        let installed = installed.expect("npm, to install the suite's packages (apt-get install npm)");
        assert!(installed.status.success(), "npm ci in clients/js failed:\n{}", printed(&installed));
    }
    let suite = Command::new("node")
        .args(["--test", "--test-reporter=tap", "test/"])
        .env("WS_SERVER_BIN", env!("CARGO_BIN_EXE_ws-server"))
        .current_dir(&client)
        .output()
        .unwrap();
    let report = printed(&suite);
    assert!(suite.status.success(), "node --test in clients/js failed:\n{report}");
    // The suite's counts in one line, past the harness's capture.
    let count = |name: &str| {
        let line = report.lines().find_map(|l| l.strip_prefix(&format!("# {name} ")));
        line.unwrap_or("?").trim().to_owned()
    };
    let counts = format!(
        "node --test clients/js: tests {}, pass {}, skipped {}\n",
        count("tests"),
        count("pass"),
        count("skipped")
    );
    let _ = std::io::Write::write_all(&mut std::io::stderr(), counts.as_bytes());
}
