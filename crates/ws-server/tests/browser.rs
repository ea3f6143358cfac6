//! The demo pages in a real browser, on the JavaScript client the server
//! serves (/client.js): two headless Chromium instances, driven through
//! WebDriver (chromedriver, with fantoccini), chat through the hub, see
//! each other in the presence list, lose the hub to a restart, reconnect on
//! their own and go on, each message shown once; the dashboard page
//! updates in place from the server API's publishes. And one Chromium on
//! the demo over HTTPS (a certificate made here, which it is told to
//! trust), whose WebSocket comes over HTTP/2 (RFC 8441).
//!
//! It needs Debian's `chromium` and `chromium-driver`, which `.ci/run`
//! installs. Without them it says so in one line and passes, unless
//! `WS_REQUIRE_BROWSER=1` (as `.ci/run` sets) makes their absence a failure.

#![allow(clippy::unwrap_used)] // test helpers panic on failure by design

mod common;

use clap::Parser;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tokio_rustls::rustls::pki_types::CertificateDer;
use ws_proto::Message;
use ws_server::config::ServerConfig;
use ws_server::http::{Running, spawn};

/// Generous: a wait for an event, never a measure of speed.
const PATIENCE: Duration = Duration::from_secs(60);

/// Where this test leaves its screenshots and browser profiles.
fn output_folder() -> PathBuf {
    let folder = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser");
    std::fs::create_dir_all(&folder).unwrap();
    folder
}

fn installed(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// Whether Chromium or chromedriver is missing, which fails the test when
/// `WS_REQUIRE_BROWSER=1` and is otherwise said in one line.
fn no_browser() -> bool {
    if installed("chromium") && installed("chromedriver") {
        return false;
    }
    let why = "the browser test needs chromium and chromedriver (apt-get install chromium chromium-driver)";
    assert!(std::env::var("WS_REQUIRE_BROWSER").as_deref() != Ok("1"), "WS_REQUIRE_BROWSER=1, but {why}");
    // Straight to standard error, past the test harness's capture: the skip must show.
    let skipped = format!("browser test skipped: {why}; WS_REQUIRE_BROWSER=1 makes this a failure\n");
    let _ = std::io::Write::write_all(&mut std::io::stderr(), skipped.as_bytes());
    true
}

/// The server API's key of the test's hubs.
const API_KEY: &str = "k";

/// A hub on `listen` whose members are told of joins and leaves, with the server API.
async fn server(listen: &str) -> Running {
    let flags = ["ws-server", "--listen", listen, "--join-leave-events", "true", "--api-key", API_KEY];
    spawn(ServerConfig::parse_from(flags)).await.unwrap()
}

/// Starts chromedriver on a free port; returns it (killed when dropped) and its URL.
async fn chromedriver() -> (tokio::process::Child, String) {
    let port = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
    let driver = tokio::process::Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Ready when it listens: each look is a connection attempt, a short pause between them.
    let listening = async {
        while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    timeout(PATIENCE, listening).await.expect("chromedriver listening");
    (driver, format!("http://127.0.0.1:{port}"))
}

/// A headless Chromium with a fresh profile, on the page `path` at `addr`.
async fn browser(driver: &str, name: &str, addr: SocketAddr, path: &str) -> Client {
    let client = chromium(driver, name, &[]).await;
    client.goto(&format!("http://{addr}{path}")).await.unwrap();
    client
}

/// A headless Chromium with a fresh profile named after `name`, and `more` arguments.
async fn chromium(driver: &str, name: &str, more: &[String]) -> Client {
    let profile = output_folder().join(format!("profile-{name}-{}", std::process::id()));
    let mut args = [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--no-first-run",
    ]
    .map(str::to_owned)
    .to_vec();
    args.push(format!("--user-data-dir={}", profile.display()));
    args.extend_from_slice(more);
    let capabilities = json!({"goog:chromeOptions": {"args": args}});
    let serde_json::Value::Object(capabilities) = capabilities else { unreachable!() };
    ClientBuilder::new(HttpConnector::new()).capabilities(capabilities).connect(driver).await.expect("a browser")
}

/// Waits until the page's status line says `status`.
async fn status_is(page: &Client, status: &str) {
    let xpath = format!("//span[@id='status' and starts-with(text(), '{status}')]");
    page.wait().at_most(PATIENCE).for_element(Locator::XPath(&xpath)).await.unwrap();
}

/// Types `text` and presses Enter.
async fn say(page: &Client, text: &str) {
    let input = page.find(Locator::Id("text")).await.unwrap();
    input.send_keys(&format!("{text}\u{E007}")).await.unwrap();
}

/// Waits until the log shows a line with `text`, and returns how many it shows.
async fn shows(page: &Client, text: &str) -> usize {
    let xpath = format!("//ul[@id='log']/li[contains(., '{text}')]");
    page.wait().at_most(PATIENCE).for_element(Locator::XPath(&xpath)).await.unwrap();
    page.find_all(Locator::XPath(&xpath)).await.unwrap().len()
}

/// Waits until the presence list names `count` members.
async fn members_are(page: &Client, count: usize) {
    let xpath = format!("//ul[@id='members' and count(li) = {count}]");
    page.wait().at_most(PATIENCE).for_element(Locator::XPath(&xpath)).await.unwrap();
}

/// Waits until the dashboard's tile `name` shows `value`; how many tiles have that name.
async fn tile_shows(page: &Client, name: &str, value: &str) -> usize {
    let tile = format!("//div[@class='tile' and @data-name='{name}']");
    let xpath = format!("{tile}/div[@class='value' and text()='{value}']");
    page.wait().at_most(PATIENCE).for_element(Locator::XPath(&xpath)).await.unwrap();
    page.find_all(Locator::XPath(&tile)).await.unwrap().len()
}

/// Publishes a message to `general` from a plain client: `said` holds its
/// `content`, its `data` or both.
async fn publish(addr: SocketAddr, said: serde_json::Value) {
    let (mut ws, _) = ws_tokio::client::connect(&format!("ws://{addr}/ws")).await.unwrap();
    let mut envelope = json!({"type": "message", "room": "general"});
    envelope.as_object_mut().unwrap().extend(said.as_object().unwrap().clone());
    ws.send(&Message::from(envelope.to_string())).await.unwrap();
    ws.close(ws_proto::CloseCode::NORMAL, "").await.unwrap();
}

#[tokio::test]
async fn the_demo_pages_chat_come_back_after_a_restart_and_feed_the_dashboard_in_chromium() {
    if no_browser() {
        return;
    }
    let first = server("127.0.0.1:0").await;
    let addr = first.addr;
    let (_driver, driver_url) = chromedriver().await;
    let alice = browser(&driver_url, "alice", addr, "/").await;
    status_is(&alice, "connected").await;
    shows(&alice, "joined general").await;
    let bob = browser(&driver_url, "bob", addr, "/").await;
    status_is(&bob, "connected").await;
    shows(&bob, "joined general").await;
    // Alice was in the room first: she is told of Bob, by his address.
    let xpath = "//ul[@id='log']/li[contains(., '127.0.0.1:') and contains(., ' joined')]";
    alice.wait().at_most(PATIENCE).for_element(Locator::XPath(xpath)).await.unwrap();
    for page in [&alice, &bob] {
        members_are(page, 2).await;
    }
    say(&alice, "hello from alice").await;
    say(&bob, "hello from bob").await;
    for page in [&alice, &bob] {
        assert_eq!(shows(page, "hello from alice").await, 1);
        assert_eq!(shows(page, "hello from bob").await, 1);
    }

    first.stop().await.unwrap();
    for page in [&alice, &bob] {
        status_is(page, "disconnected").await;
    }
    let _second = server(&addr.to_string()).await;
    for page in [&alice, &bob] {
        status_is(page, "connected").await;
        members_are(page, 2).await;
        // The in-memory hub lost the room's history: the page says so.
        assert_eq!(shows(page, "general started over").await, 1);
    }
    say(&bob, "bob is back").await;
    publish(addr, json!({"content": "after the restart"})).await;
    publish(addr, json!({"data": {"price": 1.5}})).await;
    for page in [&alice, &bob] {
        assert_eq!(shows(page, "bob is back").await, 1);
        assert_eq!(shows(page, "after the restart").await, 1);
        assert_eq!(shows(page, r#"{"price":1.5}"#).await, 1, "a message's data, as JSON");
        assert_eq!(shows(page, "hello from alice").await, 1, "what came before the restart, once");
        assert_eq!(shows(page, "hello from bob").await, 1);
    }
    let screenshot = output_folder().join("demo-page.png");
    std::fs::write(&screenshot, alice.screenshot().await.unwrap()).unwrap();
    eprintln!("screenshot: {}", screenshot.display());
    alice.close().await.unwrap();
    bob.close().await.unwrap();

    let dashboard = browser(&driver_url, "dashboard", addr, "/dashboard").await;
    status_is(&dashboard, "connected").await;
    let feed = r#"{"type":"message","room":"dashboard","data":{"price":64210.5,"volume":3}}"#;
    assert_eq!(common::api_publish(addr, API_KEY, feed).await.0, 200);
    assert_eq!(tile_shows(&dashboard, "price", "64210.5").await, 1);
    let feed = r#"{"type":"message","room":"dashboard","data":{"price":64211}}"#;
    assert_eq!(common::api_publish(addr, API_KEY, feed).await.0, 200);
    assert_eq!(tile_shows(&dashboard, "price", "64211").await, 1, "updated in place");
    assert_eq!(tile_shows(&dashboard, "volume", "3").await, 1);
    dashboard.close().await.unwrap();
}

/// A hub serving TLS with a certificate for localhost made here, the
/// Chromium argument that trusts that certificate's key, and the certificate.
async fn tls_server() -> (Running, String, CertificateDer<'static>) {
    use base64::Engine;
    use sha2::Digest;
    let made = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert, key) = (output_folder().join("http2.crt"), output_folder().join("http2.key"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let flags = ["ws-server", "--listen", "127.0.0.1:0", "--tls-cert", cert, "--tls-key", key];
    let running = spawn(ServerConfig::parse_from(flags)).await.unwrap();
    let spki = sha2::Sha256::digest(rcgen::PublicKeyData::subject_public_key_info(&made.signing_key));
    let trust =
        format!("--ignore-certificate-errors-spki-list={}", base64::engine::general_purpose::STANDARD.encode(spki));
    (running, trust, made.cert.der().clone())
}

/// The metrics of the hub at `addr`, over TLS (HTTP/1.1, no ALPN), trusting `certificate`.
async fn metrics_over_tls(addr: SocketAddr, certificate: CertificateDer<'static>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls::{ClientConfig, RootCertStore, crypto::ring};
    let mut roots = RootCertStore::empty();
    roots.add(certificate).unwrap();
    let config = ClientConfig::builder_with_provider(std::sync::Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let mut tls = connector.connect("localhost".try_into().unwrap(), tcp).await.unwrap();
    tls.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut response = Vec::new();
    // The server closes without a TLS close_notify after `Connection: close`, which rustls reports.
    let _ = timeout(PATIENCE, tls.read_to_end(&mut response)).await.unwrap();
    String::from_utf8_lossy(&response).into_owned()
}

/// Chromium loads the demo over HTTPS, HTTP/2 chosen by ALPN, and opens
/// its WebSocket as a stream of that connection (RFC 8441), which the
/// server's metrics count; the chat works over it.
#[tokio::test]
async fn the_demo_page_chats_over_http2_in_chromium() {
    if no_browser() {
        return;
    }
    let (running, trust, certificate) = tls_server().await;
    let addr = running.addr;
    let (_driver, driver_url) = chromedriver().await;
    let page = chromium(&driver_url, "http2", &[trust]).await;
    page.goto(&format!("https://localhost:{}/", addr.port())).await.unwrap();
    status_is(&page, "connected").await;
    shows(&page, "joined general").await;
    say(&page, "hello over http/2").await;
    assert_eq!(shows(&page, "hello over http/2").await, 1);
    let metrics = metrics_over_tls(addr, certificate).await;
    assert!(metrics.contains("\nws_connections_accepted_total 1\n"), "{metrics}");
    assert!(
        metrics.contains("\nws_connections_accepted_h2_total 1\n"),
        "the page's WebSocket came over HTTP/2: {metrics}"
    );
    page.close().await.unwrap();
}
