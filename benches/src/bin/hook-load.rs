//! What a publish hook costs (docs/hooks.md): one server in memory, without
//! a hook and then with `--hook-publish` to a backend on loopback that
//! allows every message (a hyper server in this process, on a thread of its
//! own), the same load on each: messages per second, deliveries per second,
//! and p50/p99 from a publish to each member's receipt.
//!
//! Run: `cargo build --release -p ws-server && cargo run --release -p ws-benches --bin hook-load`
//!
//! Arguments as `cluster-load`'s: members (default 100), messages (default
//! 20000), publishers (default 1), window (default 64).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use ws_benches::room::{Load, QUEUE, report, run};
use ws_benches::{Failure, start_server};

#[tokio::main]
async fn main() -> Result<(), Failure> {
    let Load { members, messages, publishers, window } = Load::from_args()?;
    let load = (publishers, window);

    let plain = start_server(&QUEUE).await?;
    report("one server, no hook", &run(std::slice::from_ref(&plain.1), members, messages, load).await?);
    drop(plain);

    let url = format!("http://{}/publish", backend()?);
    let hooked = start_server(&[&QUEUE[..], &["--hook-publish", &url]].concat()).await?;
    report("the same, a publish hook", &run(std::slice::from_ref(&hooked.1), members, messages, load).await?);
    Ok(())
}

/// Starts a backend that allows every message, on a thread and runtime of
/// its own so that the load's tasks do not delay its answers: its address.
fn backend() -> Result<std::net::SocketAddr, Failure> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::spawn(move || {
        runtime.block_on(async move {
            let Ok(listener) = TcpListener::from_std(listener) else { return };
            while let Ok((tcp, _)) = listener.accept().await {
                let _ = tcp.set_nodelay(true);
                let service = service_fn(|request: hyper::Request<hyper::body::Incoming>| async move {
                    // Read whole, as a backend that looks at the message would.
                    let _ = request.into_body().collect().await;
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                        br#"{"allow":true}"#,
                    ))))
                });
                tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(tcp), service));
            }
        });
    });
    Ok(addr)
}
