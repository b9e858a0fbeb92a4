//! HTTP/1.1 on the wire, black-box, with the real binary between a raw TCP client and a raw TCP
//! upstream that both deal in exact bytes: keep-alive reuse and connection counts, the injected
//! header against the caller's own, header order and duplicates, request bodies by length and
//! chunked, every response framing (length, chunked with extensions and trailers, close-delimited,
//! 204/304, HEAD), stale pooled upstream connections, `Connection: close`, pipelining, a slowly
//! read 1 MiB body, HTTP/1.0, interim 1xx answers, header name case, an upstream that dies
//! mid-body, and one that never answers.

mod common;

use std::io;
use std::time::Duration;

use common::rawup::{with_length, Client, Framing, Received, Reply, Then};
use common::rig::Rig;
use common::upstream::{pattern, sha256_hex};

const SECRET: &str = "http1-secret";

/// Starts a raw upstream answering with `handler`, an IdP, and the proxy with one route (`raw`)
/// to the upstream; returns once the route has its one token.
async fn rig<F>(handler: F) -> Rig
where
    F: Fn(&Received) -> Reply + Send + Sync + 'static,
{
    rig_with(handler, &[]).await
}

/// [`rig`] with more settings (`key: value` lines) on the route.
async fn rig_with<F>(handler: F, route_settings: &[&str]) -> Rig
where
    F: Fn(&Received) -> Reply + Send + Sync + 'static,
{
    let rig = Rig::builder()
        .secret(SECRET)
        .raw(handler)
        .route("raw", route_settings)
        .env("RUST_LOG", "info")
        .start()
        .await;
    rig.bearer();
    rig
}

/// Asserts that `req` carries exactly the route's token (`Bearer <token>`, the only
/// Authorization value the upstream may ever see) and the upstream's authority as Host.
fn assert_forwarded(rig: &Rig, req: &Received) {
    assert_eq!(
        req.head.all("authorization"),
        vec![rig.bearer().as_str()],
        "{} {}",
        req.method,
        req.target
    );
    assert_eq!(
        req.head.all("host"),
        vec![rig.raw().addr.to_string().as_str()],
        "{} {}",
        req.method,
        req.target
    );
}

/// `200` naming the request and the length of its body: `GET /x len=0`.
fn echo(req: &Received) -> Reply {
    Reply::ok(echo_text(&req.method, &req.target, req.body.len()))
}

fn echo_text(method: &str, target: &str, len: usize) -> String {
    format!("{method} {target} len={len}")
}

/// Reads the answer to a request already sent and checks it is the echo of `GET path`.
async fn expect_echo(c: &mut Client, path: &str) {
    let r = c
        .response(false)
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    assert_eq!(r.status, 200, "GET {path}: {}", r.text());
    assert_eq!(r.text(), echo_text("GET", path, 0));
}

/// Sends `GET path` on `c` and checks the echo: the connection is still usable.
async fn still_usable(c: &mut Client, path: &str) {
    c.send(get(path).as_bytes()).await;
    expect_echo(c, path).await;
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: proxy.test\r\n\r\n")
}

#[tokio::test]
async fn twenty_requests_share_one_downstream_connection_and_few_upstream_ones() {
    let rig = rig(echo).await;
    let mut c = rig.connect("raw").await;
    for i in 0..20 {
        still_usable(&mut c, &format!("/ka/{i}")).await;
    }
    let got = rig.raw().received();
    assert_eq!(got.len(), 20);
    for (i, req) in got.iter().enumerate() {
        assert_eq!(req.target, format!("/ka/{i}"));
        assert_forwarded(&rig, req);
    }
    assert!(
        rig.raw().accepts() <= 2,
        "{} upstream connections for 20 sequential requests",
        rig.raw().accepts()
    );
}

#[tokio::test]
async fn callers_authorization_is_dropped_and_other_headers_kept_in_order() {
    let rig = rig(echo).await;
    let mut c = rig.connect("raw").await;
    c.send(
        b"GET /headers HTTP/1.1\r\n\
          Host: proxy.test\r\n\
          Authorization: Bearer callers-own\r\n\
          X-Custom: a\r\n\
          X-Multi: one\r\n\
          Authorization: Basic Y2FsbGVyOm93bg==\r\n\
          X-Multi: two, three\r\n\
          \r\n",
    )
    .await;
    expect_echo(&mut c, "/headers").await;

    let got = rig.raw().received();
    assert_eq!(got.len(), 1);
    assert_forwarded(&rig, &got[0]);
    // Names compare case-insensitively (they are case-insensitive); values byte for byte.
    let ours: Vec<(String, &str)> = got[0]
        .head
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("x-custom") || n.eq_ignore_ascii_case("x-multi"))
        .map(|(n, v)| (n.to_ascii_lowercase(), v.as_str()))
        .collect();
    assert_eq!(
        ours,
        vec![
            ("x-custom".to_string(), "a"),
            ("x-multi".to_string(), "one"),
            ("x-multi".to_string(), "two, three"),
        ]
    );
}

#[tokio::test]
async fn content_length_request_bodies_arrive_byte_exact() {
    let rig = rig(echo).await;
    let mut c = rig.connect("raw").await;

    c.send(b"POST /small HTTP/1.1\r\nHost: proxy.test\r\nContent-Length: 10\r\n\r\n0123456789")
        .await;
    let r = c.response(false).await.unwrap();
    assert_eq!((r.status, r.text()), (200, echo_text("POST", "/small", 10)));

    // 100 KiB in a head and four separate writes of the body.
    let big = pattern(100 * 1024);
    c.send(
        format!(
            "PUT /big HTTP/1.1\r\nHost: proxy.test\r\nContent-Length: {}\r\n\r\n",
            big.len()
        )
        .as_bytes(),
    )
    .await;
    for piece in big.chunks(25 * 1024) {
        c.send(piece).await;
    }
    let r = c.response(false).await.unwrap();
    assert_eq!(
        (r.status, r.text()),
        (200, echo_text("PUT", "/big", big.len()))
    );

    still_usable(&mut c, "/after-bodies").await;

    let got = rig.raw().received();
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].body, b"0123456789");
    assert_eq!(sha256_hex(&got[1].body), sha256_hex(&big));
    assert_eq!(got[1].body.len(), big.len());
    for req in &got {
        assert_forwarded(&rig, req);
    }
}

#[tokio::test]
async fn chunked_request_body_arrives_decoded() {
    let rig = rig(echo).await;
    let mut c = rig.connect("raw").await;
    c.send(
        b"POST /chunked HTTP/1.1\r\n\
          Host: proxy.test\r\n\
          Transfer-Encoding: chunked\r\n\
          \r\n\
          4\r\nWiki\r\n\
          5;ext=1\r\npedia\r\n\
          B\r\n in chunks.\r\n\
          0\r\n\r\n",
    )
    .await;
    let r = c.response(false).await.unwrap();
    assert_eq!(
        (r.status, r.text()),
        (200, echo_text("POST", "/chunked", 20))
    );
    still_usable(&mut c, "/after-chunked").await;

    let got = rig.raw().received();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].body, b"Wikipedia in chunks.");
    assert_forwarded(&rig, &got[0]);
}

#[tokio::test]
async fn content_length_response_then_the_connection_is_reused() {
    let rig = rig(|req: &Received| match req.target.as_str() {
        "/length" => Reply::ok(pattern(3000)),
        _ => echo(req),
    })
    .await;
    let mut c = rig.connect("raw").await;
    let r = c.get("/length").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, pattern(3000));
    still_usable(&mut c, "/after-length").await;
}

/// One chunk of a chunked body: hex size, `ext` (e.g. `;foo=bar`), data.
fn chunk(ext: &str, data: &str) -> Vec<u8> {
    format!("{:x}{ext}\r\n{data}\r\n", data.len()).into_bytes()
}

#[tokio::test]
async fn chunked_response_with_extension_and_trailer_arrives_decoded() {
    let rig = rig(|req: &Received| match req.target.as_str() {
        "/chunked" => Reply {
            parts: vec![
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Trailer\r\n\r\n"
                    .to_vec(),
                chunk(";foo=bar", "hello"),
                [chunk("", ","), chunk("", " chunky")].concat(),
                chunk("", " world, in several parts"),
                b"0\r\nX-Trailer: t\r\n\r\n".to_vec(),
            ],
            then: Then::KeepAlive,
        },
        _ => echo(req),
    })
    .await;
    let mut c = rig.connect("raw").await;
    let r = c.get("/chunked").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "hello, chunky world, in several parts");
    still_usable(&mut c, "/after-chunked").await;
}

#[tokio::test]
async fn close_delimited_response_arrives_whole() {
    let body = pattern(40 * 1024);
    let sent = body.clone();
    let rig = rig(move |req: &Received| match req.target.as_str() {
        "/close" => {
            let mut bytes =
                b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n".to_vec();
            bytes.extend_from_slice(&sent);
            Reply::new(bytes, Then::Close)
        }
        _ => echo(req),
    })
    .await;
    let mut c = rig.connect("raw").await;
    let r = c.get("/close").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), body.len(), "framing {:?}", r.framing);
    assert_eq!(r.body, body);
    // Read to the close, the body is complete by construction; re-framed, the connection
    // must still work.
    if r.framing != Framing::Close {
        still_usable(&mut c, "/after-close-delimited").await;
    }
}

#[tokio::test]
async fn no_body_statuses_keep_the_connection_usable() {
    let rig = rig(|req: &Received| match req.target.as_str() {
        "/204" => Reply::new(
            "HTTP/1.1 204 No Content\r\nX-Kind: none\r\n\r\n",
            Then::KeepAlive,
        ),
        "/304" => Reply::new(
            "HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\n\r\n",
            Then::KeepAlive,
        ),
        _ => echo(req),
    })
    .await;
    let mut c = rig.connect("raw").await;
    let r = c.get("/204").await;
    assert_eq!(r.status, 204);
    assert_eq!(r.head.get("x-kind"), Some("none"));
    still_usable(&mut c, "/after-204").await;

    c.send(b"GET /304 HTTP/1.1\r\nHost: proxy.test\r\nIf-None-Match: \"v1\"\r\n\r\n")
        .await;
    let r = c.response(false).await.unwrap();
    assert_eq!(r.status, 304);
    assert_eq!(r.head.get("etag"), Some("\"v1\""));
    still_usable(&mut c, "/after-304").await;

    let got = rig.raw().received();
    assert_eq!(got[2].head.get("if-none-match"), Some("\"v1\""));
}

#[tokio::test]
async fn head_response_with_a_length_and_no_body_keeps_the_connection_usable() {
    let rig = rig(|req: &Received| match req.method.as_str() {
        "HEAD" => Reply::new(
            "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nContent-Type: text/plain\r\n\r\n",
            Then::KeepAlive,
        ),
        _ => echo(req),
    })
    .await;
    let mut c = rig.connect("raw").await;
    c.send(b"HEAD /head HTTP/1.1\r\nHost: proxy.test\r\n\r\n")
        .await;
    let r = c.response(true).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.head.get("content-length"), Some("1000"));
    assert_eq!(r.head.get("content-type"), Some("text/plain"));
    still_usable(&mut c, "/after-head").await;
    assert_eq!(rig.raw().received()[0].method, "HEAD");
}

#[tokio::test]
async fn a_pooled_connection_the_upstream_closed_is_not_used() {
    // Every answer looks keep-alive, but the upstream closes the connection right after it.
    let rig = rig(|req: &Received| {
        Reply::new(
            with_length("HTTP/1.1 200 OK\r\n", req.target.as_bytes()),
            Then::Close,
        )
    })
    .await;
    let mut c = rig.connect("raw").await;
    for round in 0..6 {
        // Alternately the same downstream connection and a new one.
        if round % 2 == 0 {
            c = rig.connect("raw").await;
        }
        let path = format!("/stale/{round}");
        let r = c.get(&path).await;
        assert_eq!((r.status, r.text()), (200, path.clone()), "round {round}");
        rig.raw().wait_ended(round + 1).await;
    }
    assert_eq!(rig.raw().accepts(), 6);
    assert_eq!(rig.raw().received().len(), 6);
}

#[tokio::test]
async fn connection_close_from_the_client_closes_after_the_answer() {
    let rig = rig(echo).await;
    let mut c = rig.connect("raw").await;
    c.send(b"GET /bye HTTP/1.1\r\nHost: proxy.test\r\nConnection: close\r\n\r\n")
        .await;
    expect_echo(&mut c, "/bye").await;
    assert!(c.closed().await, "the proxy sent more after the answer");
}

/// The lean path keeps what follows a request for the next one. pingora's proxy (`lean_path:
/// false`, and requests handed to it) answers the first with `Connection: keep-alive`, then closes
/// the connection: the second never reaches the upstream.
#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let rig = rig(echo).await;
    let mut c = rig.connect("raw").await;
    c.send(format!("{}{}", get("/first"), get("/second")).as_bytes())
        .await;
    expect_echo(&mut c, "/first").await;
    expect_echo(&mut c, "/second").await;
    still_usable(&mut c, "/third").await;
}

#[tokio::test]
async fn one_mebibyte_response_read_slowly_arrives_whole() {
    const MIB: usize = 1024 * 1024;
    let rig = rig(|req: &Received| match req.target.as_str() {
        "/mib" => Reply::ok(pattern(MIB)),
        _ => echo(req),
    })
    .await;
    let mut c = rig.connect("raw").await;
    c.send(get("/mib").as_bytes()).await;
    let head = c.wire.head().await.unwrap().expect("a response head");
    assert!(head.start.starts_with("HTTP/1.1 200 "), "{}", head.start);
    assert_eq!(head.content_length().unwrap(), Some(MIB));
    let body = c
        .wire
        .exact_paced(MIB, Duration::from_millis(2))
        .await
        .unwrap();
    assert_eq!(sha256_hex(&body), sha256_hex(&pattern(MIB)));
    still_usable(&mut c, "/after-mib").await;
}

#[tokio::test]
async fn http_1_0_request_without_host_gets_a_whole_answer() {
    let rig = rig(echo).await;
    let mut c = rig.connect("raw").await;
    c.send(b"GET /old HTTP/1.0\r\n\r\n").await;
    let r = c.response(false).await.unwrap();
    assert_eq!(r.status, 200);
    assert!(r.version.starts_with("HTTP/1."), "{}", r.version);
    assert_eq!(r.text(), echo_text("GET", "/old", 0));
    // HTTP/1.0 without keep-alive: the connection ends with the answer.
    assert!(c.closed().await, "framing {:?}", r.framing);
    let got = rig.raw().received();
    assert_eq!(got.len(), 1);
    assert_forwarded(&rig, &got[0]);
}

#[tokio::test]
async fn interim_1xx_before_the_final_answer() {
    let rig = rig(|req: &Received| {
        let interim: &[u8] = match req.target.as_str() {
            "/103" => b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n",
            "/100" => b"HTTP/1.1 100 Continue\r\n\r\n",
            _ => return echo(req),
        };
        Reply {
            parts: vec![
                interim.to_vec(),
                with_length("HTTP/1.1 200 OK\r\n", b"after the interim"),
            ],
            then: Then::KeepAlive,
        }
    })
    .await;
    let mut c = rig.connect("raw").await;
    for path in ["/103", "/100"] {
        let r = c.get(path).await;
        // Whether the 1xx itself is relayed is not pinned here.
        assert_eq!(r.status, 200, "{path}: interim {:?}", r.interim);
        assert_eq!(r.text(), "after the interim", "{path}");
    }
    still_usable(&mut c, "/after-interim").await;
}

#[tokio::test]
async fn response_header_with_unusual_name_case_arrives() {
    let rig = rig(|req: &Received| match req.target.as_str() {
        "/case" => Reply::new(
            "HTTP/1.1 200 OK\r\nX-CaSe-Test: v\r\nContent-Length: 2\r\n\r\nok",
            Then::KeepAlive,
        ),
        _ => echo(req),
    })
    .await;
    let mut c = rig.connect("raw").await;
    let r = c.get("/case").await;
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    assert_eq!(r.head.all("x-case-test"), vec!["v"]);
}

/// The cut-off answer: a declared 1000-byte body of which only 300 bytes come.
fn cut_off(then: Then) -> Reply {
    let mut bytes = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n".to_vec();
    bytes.extend_from_slice(&pattern(300));
    Reply::new(bytes, then)
}

#[tokio::test]
async fn upstream_dying_mid_body_never_looks_complete() {
    let rig = rig(|req: &Received| match req.target.as_str() {
        "/cut-reset" => cut_off(Then::Reset),
        "/cut-close" => cut_off(Then::Close),
        "/nothing" => Reply {
            parts: Vec::new(),
            then: Then::Close,
        },
        _ => echo(req),
    })
    .await;

    for path in ["/cut-reset", "/cut-close"] {
        let mut c = rig.connect("raw").await;
        c.send(get(path).as_bytes()).await;
        match c.response(false).await {
            // Closed before the declared length: the caller can tell it is incomplete.
            Err(e) => assert!(
                matches!(
                    e.kind(),
                    io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset
                ),
                "{path}: {e}"
            ),
            Ok(r) => assert_eq!(
                r.status,
                502,
                "{path}: a cut-off body looked complete ({:?}, {} bytes)",
                r.framing,
                r.body.len()
            ),
        }
    }

    // Nothing sent before the close: there is nothing to relay, so the caller gets a 502.
    let mut c = rig.connect("raw").await;
    let r = c.get("/nothing").await;
    assert_eq!(r.status, 502, "{}", r.text());
    let error: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(error["error"], "upstream_error", "{error}");

    // The route itself is unharmed.
    let mut c = rig.connect("raw").await;
    still_usable(&mut c, "/fine").await;
}

/// The lean path says `Connection: close` on its error answers and closes. pingora's proxy sends
/// its 502 with `Connection: keep-alive`, then closes the connection anyway.
#[tokio::test]
async fn an_error_answer_keeps_the_connection_it_advertises() {
    let rig = rig(|req: &Received| match req.target.as_str() {
        "/nothing" => Reply {
            parts: Vec::new(),
            then: Then::Close,
        },
        _ => echo(req),
    })
    .await;
    let mut c = rig.connect("raw").await;
    let r = c.get("/nothing").await;
    assert_eq!(r.status, 502, "{}", r.text());
    if r.head.connection_has("close") {
        assert!(
            c.closed().await,
            "`Connection: close`, yet the connection stayed open"
        );
    } else {
        still_usable(&mut c, "/after-502").await;
    }
}

/// Waits for the upstream are timed per request, also on a caller connection and an upstream
/// connection that earlier requests used and left idle: the request the upstream never answers
/// gets its 504 once `read_timeout` has passed, neither before nor long after.
#[tokio::test]
async fn an_unanswered_request_times_out_after_read_timeout_on_reused_connections() {
    const READ_TIMEOUT: Duration = Duration::from_millis(400);
    let rig = rig_with(
        |req| {
            if req.target == "/hang" {
                // No answer; the connection stays open.
                Reply {
                    parts: Vec::new(),
                    then: Then::KeepAlive,
                }
            } else {
                echo(req)
            }
        },
        &["read_timeout: 400ms"],
    )
    .await;
    let mut c = rig.connect("raw").await;
    for path in ["/a", "/b", "/c"] {
        still_usable(&mut c, path).await;
    }
    // Idle for longer than the timeout, so that the timers armed above fire meanwhile.
    tokio::time::sleep(READ_TIMEOUT * 2).await;
    still_usable(&mut c, "/d").await;
    assert_eq!(rig.raw().accepts(), 1, "one upstream connection, reused");

    let started = std::time::Instant::now();
    c.send(get("/hang").as_bytes()).await;
    let r = c.response(false).await.expect("an answer to /hang");
    let took = started.elapsed();
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(r.text().contains("upstream_timeout"), "{}", r.text());
    assert!(took >= READ_TIMEOUT, "answered after {took:?}");
    assert!(took < READ_TIMEOUT * 5, "answered after {took:?}");
    let hangs = rig
        .raw()
        .received()
        .iter()
        .filter(|r| r.target == "/hang")
        .count();
    assert_eq!(hangs, 1, "a timed-out request is not sent again");
}
