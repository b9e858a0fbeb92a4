//! Slow and stuck callers against the real binary, on both request paths: a request head sent a
//! byte at a time is cut at `client_header_timeout` (a large one too), without cutting keep-alive
//! idle time or normal callers; `max_connections` closes
//! connections over the cap when accepted and counts them; a caller that stops reading its
//! response is closed after `client_write_timeout`, and so is the upstream connection.

mod common;

use std::time::{Duration, Instant};

use common::rawup::{Client, Received, Reply};
use common::rig::Rig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SECRET: &str = "limits-secret";
/// How often the slow caller sends the next byte of its head.
const PACE: Duration = Duration::from_millis(300);

/// The proxy (one route, `raw`, to a raw upstream) with some top-level settings.
async fn rig<F>(top: &[&str], handler: F) -> Rig
where
    F: Fn(&Received) -> Reply + Send + Sync + 'static,
{
    let mut b = Rig::builder()
        .secret(SECRET)
        .raw(handler)
        .route("raw", &[])
        .env("RUST_LOG", "info");
    for line in top {
        b = b.top(line);
    }
    b.start().await
}

fn lean(on: bool) -> String {
    format!("lean_path: {on}")
}

async fn timeouts(rig: &Rig, kind: &str) -> f64 {
    rig.metric(&format!(
        r#"tokenproxy_client_timeouts_total{{route="raw",kind="{kind}"}}"#
    ))
    .await
}

/// Sends `start` at once on `s`, then the rest of a head one byte every [`PACE`] (a header line
/// that never ends), until the proxy closes the connection. Returns how long after the start the
/// close came; panics if it did not within `give_up`.
async fn trickle_head(s: &mut TcpStream, start: &[u8], give_up: Duration) -> Duration {
    let started = Instant::now();
    let (mut rd, mut wr) = s.split();
    // Ends only with the error of a write the proxy did not take.
    let trickle = async {
        if let Err(e) = wr.write_all(start).await {
            return e;
        }
        loop {
            tokio::time::sleep(PACE).await;
            if let Err(e) = wr.write_all(b"a").await {
                return e;
            }
        }
    };
    let closed = async {
        let mut got = Vec::new();
        let _ = rd.read_to_end(&mut got).await;
        got
    };
    tokio::select! {
        got = closed => {
            // No answer either: the connection is just closed.
            assert!(got.is_empty(), "the slow caller got {:?}", String::from_utf8_lossy(&got));
        }
        e = trickle => {
            // The proxy closed while bytes were on their way: a reset, also a close.
            assert!(
                matches!(e.kind(), std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset),
                "{e}"
            );
        }
        _ = tokio::time::sleep(give_up) => panic!("the slow head was still open after {give_up:?}"),
    }
    started.elapsed()
}

/// The head of a request whose last header line is still being sent.
fn unfinished_head(padding: usize) -> Vec<u8> {
    let mut head = b"GET /slow HTTP/1.1\r\nHost: proxy.test\r\n".to_vec();
    if padding > 0 {
        head.extend_from_slice(format!("X-Pad: {}\r\n", "p".repeat(padding)).as_bytes());
    }
    head.extend_from_slice(b"X-Slow: ");
    head
}

/// One byte every 300 ms keeps no head open past `client_header_timeout: 1s` (the old per-read
/// timer of 60 s would have kept it open for ever); a normal caller on the same proxy is served.
async fn slow_head_is_cut(lean_path: bool, padding: usize) {
    let rig = rig(&["client_header_timeout: 1s", &lean(lean_path)], |_| {
        Reply::ok("fine")
    })
    .await;
    // For the first request of a connection the time counts from the accept.
    let mut s = TcpStream::connect(("127.0.0.1", rig.port("raw")))
        .await
        .unwrap();
    let took = trickle_head(&mut s, &unfinished_head(padding), Duration::from_secs(4)).await;
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2500),
        "closed {took:?} after the connect, want about 1 s"
    );
    assert!(
        rig.raw().received().is_empty(),
        "{:?}",
        rig.raw().received()
    );
    rig.wait_metric(
        r#"tokenproxy_client_timeouts_total{route="raw",kind="header"}"#,
        1.0,
    )
    .await;

    // A head sent whole, and one in two parts well within the deadline, are served.
    let mut c = Client::connect(rig.port("raw")).await;
    assert_eq!(c.get("/whole").await.status, 200);
    let mut c = Client::connect(rig.port("raw")).await;
    c.send(b"GET /parts HTTP/1.1\r\nHost: proxy.test\r\n").await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    c.send(b"X-Late: yes\r\n\r\n").await;
    assert_eq!(c.response(false).await.unwrap().status, 200);
    assert_eq!(timeouts(&rig, "header").await, 1.0);
}

#[tokio::test]
async fn a_head_sent_a_byte_at_a_time_is_cut_at_client_header_timeout_on_the_lean_path() {
    slow_head_is_cut(true, 0).await;
}

#[tokio::test]
async fn a_head_sent_a_byte_at_a_time_is_cut_at_client_header_timeout_through_pingora() {
    slow_head_is_cut(false, 0).await;
}

/// A large head (within the 32 KiB limit) takes several reads before its last line trickles.
#[tokio::test]
async fn a_large_head_is_cut_at_client_header_timeout_on_both_paths() {
    slow_head_is_cut(true, 24 * 1024).await;
    slow_head_is_cut(false, 24 * 1024).await;
}

/// Between requests the keep-alive idle time applies, not the head's: a connection idle for
/// longer than `client_header_timeout` is still served; the next head's time counts from its
/// first byte.
#[tokio::test]
async fn keep_alive_idle_time_is_not_cut_by_the_header_timeout_but_the_next_head_is() {
    for lean_path in [true, false] {
        let rig = rig(&["client_header_timeout: 1s", &lean(lean_path)], |_| {
            Reply::ok("fine")
        })
        .await;
        let mut c = Client::connect(rig.port("raw")).await;
        assert_eq!(c.get("/first").await.status, 200);
        // The pause IS the scenario: idle past the header timeout, within keep-alive.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(
            c.get("/after-idle").await.status,
            200,
            "lean_path {lean_path}"
        );

        let took = trickle_head(
            &mut c.wire.stream,
            &unfinished_head(0),
            Duration::from_secs(4),
        )
        .await;
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_millis(2500),
            "lean_path {lean_path}: closed {took:?} after the head began, want about 1 s"
        );
        assert_eq!(timeouts(&rig, "header").await, 1.0, "lean_path {lean_path}");
    }
}

/// Opens a connection and makes sure the proxy serves it (so that it holds a place).
async fn served(port: u16) -> Client {
    let mut c = Client::connect(port).await;
    assert_eq!(c.get("/held").await.status, 200);
    c
}

async fn connection_cap(lean_path: bool) {
    let rig = rig(&["max_connections: 3", &lean(lean_path)], |_| {
        Reply::ok("fine")
    })
    .await;
    let open = r#"tokenproxy_connections_open{route="raw"}"#;
    let refused = r#"tokenproxy_connections_refused_total{route="raw"}"#;
    let mut held = vec![
        served(rig.port("raw")).await,
        served(rig.port("raw")).await,
        served(rig.port("raw")).await,
    ];
    rig.wait_metric(open, 3.0).await;

    // The fourth is closed at once, without an answer.
    let mut fourth = Client::connect(rig.port("raw")).await;
    assert!(
        fourth.closed().await,
        "the fourth connection was not closed"
    );
    rig.wait_metric(refused, 1.0).await;
    assert_eq!(rig.metric(open).await, 3.0);
    assert_eq!(rig.raw().received().len(), 3);

    // Once one closes, a new one is served.
    drop(held.pop());
    rig.wait_metric(open, 2.0).await;
    let mut again = served(rig.port("raw")).await;
    assert_eq!(again.get("/again").await.status, 200);
    assert_eq!(rig.metric(refused).await, 1.0);
    assert_eq!(rig.metric(open).await, 3.0);
}

#[tokio::test]
async fn max_connections_closes_the_connection_over_the_cap_on_the_lean_path() {
    connection_cap(true).await;
}

#[tokio::test]
async fn max_connections_closes_the_connection_over_the_cap_through_pingora() {
    connection_cap(false).await;
}

/// A reload that changes `max_connections` applies to connections accepted after it; those open
/// stay open.
#[tokio::test]
async fn a_reloaded_max_connections_applies_to_new_connections() {
    let rig = rig(&["max_connections: 2"], |_| Reply::ok("fine")).await;
    let held = vec![served(rig.port("raw")).await, served(rig.port("raw")).await];
    assert!(Client::connect(rig.port("raw")).await.closed().await);

    let yaml = std::fs::read_to_string(&rig.proxy.config_path).unwrap();
    rig.reload(&yaml.replace("max_connections: 2", "max_connections: 1"))
        .await;
    // Two open, one allowed now: both stay open, and a new one is refused until none is left.
    let mut held = held;
    assert_eq!(held[1].get("/still").await.status, 200);
    drop(held.pop());
    rig.wait_metric(r#"tokenproxy_connections_open{route="raw"}"#, 1.0)
        .await;
    assert!(Client::connect(rig.port("raw")).await.closed().await);
    drop(held);
    rig.wait_metric(r#"tokenproxy_connections_open{route="raw"}"#, 0.0)
        .await;
    let _one = served(rig.port("raw")).await;
    assert!(Client::connect(rig.port("raw")).await.closed().await);
}

/// Larger than what the socket buffers between the proxy and a caller hold, so that a caller
/// that does not read blocks the proxy's writes.
const BIG: usize = 32 * 1024 * 1024;

async fn stuck_reader(lean_path: bool) {
    let rig = rig(&["client_write_timeout: 1s", &lean(lean_path)], |_| {
        Reply::ok(vec![b'x'; BIG])
    })
    .await;
    // A caller that reads is not cut, however big the response.
    let mut reader = Client::connect(rig.port("raw")).await;
    let resp = reader.get("/big").await;
    assert_eq!((resp.status, resp.body.len()), (200, BIG));
    drop(reader);

    // One that never reads: the proxy gives up on it and on the upstream connection.
    let mut stuck = TcpStream::connect(("127.0.0.1", rig.port("raw")))
        .await
        .unwrap();
    stuck
        .write_all(b"GET /big HTTP/1.1\r\nHost: proxy.test\r\n\r\n")
        .await
        .unwrap();
    let sent = Instant::now();
    // The first upstream connection may be pooled (and used again for this request): only
    // this request's connection ends.
    rig.raw().wait_ended(1).await;
    let took = sent.elapsed();
    assert!(
        took < Duration::from_secs(4),
        "the upstream connection ended {took:?} after the request"
    );
    rig.wait_metric(
        r#"tokenproxy_client_timeouts_total{route="raw",kind="write"}"#,
        1.0,
    )
    .await;
    // The caller's connection is closed too: what it can still read ends short of the body.
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stuck.read_to_end(&mut got)).await;
    match read {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        Err(_) => panic!("the stuck caller's connection is still open"),
    }
    assert!(got.len() < BIG, "the whole response arrived after all");
    // Recorded with the status it was being sent.
    rig.wait_metric(r#"tokenproxy_requests_total{route="raw",code="200"}"#, 2.0)
        .await;
}

#[tokio::test]
async fn a_caller_that_stops_reading_is_closed_at_client_write_timeout_on_the_lean_path() {
    stuck_reader(true).await;
}

#[tokio::test]
async fn a_caller_that_stops_reading_is_closed_at_client_write_timeout_through_pingora() {
    stuck_reader(false).await;
}
