//! The two request paths as one behaviour: the same raw bytes through a proxy with
//! `lean_path: true` and one with `lean_path: false`, each in front of its own raw upstream,
//! must give the caller the same statuses and the upstream the same requests (request line,
//! field multiset and body; the token value aside, each proxy has its own). Then the same for a
//! corpus of upstream responses: the caller must read the same status, end-to-end fields and
//! body. The request corpus also over TLS to the upstream. Plus the smuggling regression of the
//! request-path security issue on both paths.

mod common;

use common::rawup::{with_length, Client, RawUpstream, Received, Reply, Then};
use common::rig::Rig;

const SECRET: &str = "differential-secret";

/// One proxy process and the raw upstream behind it.
struct Side {
    name: &'static str,
    rig: Rig,
    port: u16,
    /// `Bearer <token>`: the one token this side's IdP issued.
    bearer: String,
}

impl Side {
    fn up(&self) -> &RawUpstream {
        self.rig.raw()
    }
}

async fn side<F>(lean: bool, handler: F) -> Side
where
    F: Fn(&Received) -> Reply + Send + Sync + 'static,
{
    side_over(lean, handler, false).await
}

/// A side whose upstream speaks TLS with the rig's CA (HTTP/1.1 only, `http2: off`, so that
/// both paths speak the same protocol to it) when `tls`.
async fn side_over<F>(lean: bool, handler: F, tls: bool) -> Side
where
    F: Fn(&Received) -> Reply + Send + Sync + 'static,
{
    let name = if lean { "lean" } else { "pingora" };
    let b = Rig::builder()
        .secret(SECRET)
        .label(name)
        .top(&format!("lean_path: {lean}"))
        .env("RUST_LOG", "info");
    let rig = if tls {
        b.raw_tls(handler)
            .route("diff", &["{ca_file}", "http2: off"])
    } else {
        b.raw(handler).route("diff", &[])
    }
    .start()
    .await;
    let port = rig.port("diff");
    let tokens = rig.idp.issued_tokens();
    assert_eq!(tokens.len(), 1, "one route, one token");
    Side {
        name,
        port,
        bearer: format!("Bearer {}", tokens[0]),
        rig,
    }
}

/// Two sides with the same upstream behaviour.
async fn both<F>(handler: F) -> (Side, Side)
where
    F: Fn(&Received) -> Reply + Send + Sync + Clone + 'static,
{
    let lean = side(true, handler.clone()).await;
    let pingora = side(false, handler).await;
    (lean, pingora)
}

/// A request as the upstream saw it, comparable across sides: the token replaced by `<token>`,
/// field names lowercased, fields sorted (their multiset).
fn normalised(req: &Received, bearer: &str) -> String {
    let mut fields: Vec<String> = req
        .head
        .headers
        .iter()
        .map(|(n, v)| {
            let n = n.to_ascii_lowercase();
            let v = if n == "authorization" && v == bearer {
                "<token>".to_string()
            } else {
                v.clone()
            };
            format!("{n}: {v}")
        })
        .collect();
    fields.sort();
    format!(
        "{} {} {} | {} | body {:?}",
        req.method,
        req.target,
        req.version,
        fields.join(" ; "),
        String::from_utf8_lossy(&req.body)
    )
}

/// Sends `bytes` on a new connection and reads up to `responses` answers (fewer when the proxy
/// closes the connection). Returns the statuses, then what reached the upstream meanwhile.
async fn exchange(side: &Side, bytes: &[u8], responses: usize) -> (Vec<u16>, Vec<String>) {
    let before = side.up().received().len();
    let mut c = Client::connect(side.port).await;
    c.send(bytes).await;
    let mut statuses = Vec::new();
    let head_request = bytes.starts_with(b"HEAD ");
    for _ in 0..responses {
        match c.response(head_request).await {
            Ok(r) => statuses.push(r.status),
            Err(_) => break,
        }
    }
    let seen = side.up().received()[before..]
        .iter()
        .map(|r| normalised(r, &side.bearer))
        .collect();
    (statuses, seen)
}

/// `200` naming the request and the length of its body.
fn echo(req: &Received) -> Reply {
    Reply::ok(format!(
        "{} {} len={}",
        req.method,
        req.target,
        req.body.len()
    ))
}

/// The request corpus: (what it is, the bytes, how many responses to read).
fn request_corpus(up: &str) -> Vec<(&'static str, Vec<u8>, usize)> {
    let big_body = "b".repeat(70 * 1024);
    let big_head = format!(
        "GET /big HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(40 * 1024)
    );
    let mut cases: Vec<(&'static str, Vec<u8>, usize)> = vec![
        ("plain GET", b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\nX-App: 1\r\n\r\n".to_vec(), 1),
        (
            "hop-by-hop fields and a Connection nomination",
            b"GET /hop HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\n\
              Keep-Alive: timeout=5\r\nTE: trailers\r\nTrailer: X-T\r\nProxy-Connection: keep-alive\r\n\
              Proxy-Authorization: Basic dTpw\r\nX-Kept: yes\r\n\r\n"
                .to_vec(),
            1,
        ),
        (
            "the caller's own Authorization is replaced",
            b"GET /auth HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer callers-own\r\nauthorization: Basic eA==\r\n\r\n".to_vec(),
            1,
        ),
        (
            "an h2c upgrade offer is dropped",
            b"GET /h2c HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n".to_vec(),
            1,
        ),
        ("two Host fields", b"GET /h HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n".to_vec(), 1),
        ("no Host in HTTP/1.1", b"GET /h HTTP/1.1\r\nX: y\r\n\r\n".to_vec(), 1),
        ("Connection: host", b"GET /h HTTP/1.1\r\nHost: x\r\nConnection: host\r\n\r\n".to_vec(), 1),
        (
            "Connection names the token header",
            b"GET /h HTTP/1.1\r\nHost: x\r\nConnection: authorization\r\nAuthorization: x\r\n\r\n".to_vec(),
            1,
        ),
        ("quote in target", b"GET /a\"b HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 1),
        ("angle brackets in target", b"GET /a<b> HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 1),
        ("braces and pipe in target", b"GET /a{b}|c HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 1),
        ("backslash and caret in target", b"GET /a\\b^c HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 1),
        ("backtick in target", b"GET /a`b HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 1),
        ("fragment in target", b"GET /a#frag HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 1),
        ("NUL in target", b"GET /a\0b HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 1),
        ("space in target", b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 1),
        ("tab in target", b"GET /a\tb HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 1),
        ("non-ASCII in target", "GET /caf\u{e9} HTTP/1.1\r\nHost: x\r\n\r\n".as_bytes().to_vec(), 1),
        ("double space after the method", b"GET  /a HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 1),
        ("brackets in the query are fine", b"GET /q?a[]=1&b=%20 HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 1),
        ("asterisk form", b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 1),
        ("CONNECT", b"CONNECT api.example:443 HTTP/1.1\r\nHost: api.example:443\r\n\r\n".to_vec(), 1),
        ("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(), 1),
        ("HTTP/0.9", b"GET /\r\n\r\n".to_vec(), 1),
        ("not HTTP", b"THIS IS NOT HTTP\r\n\r\n".to_vec(), 1),
        ("obs-fold in a request field", b"GET /f HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n 2\r\n\r\n".to_vec(), 1),
        ("space before a colon", b"GET /f HTTP/1.1\r\nHost: x\r\nX-A : 1\r\n\r\n".to_vec(), 1),
        ("bare CR in a value", b"GET /f HTTP/1.1\r\nHost: x\r\nX-A: 1\r2\r\n\r\n".to_vec(), 1),
        ("head over 32 KiB", big_head.into_bytes(), 1),
        ("small body", b"POST /small HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello".to_vec(), 1),
        (
            "body over 64 KiB",
            format!("PUT /large HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{big_body}", big_body.len()).into_bytes(),
            1,
        ),
        (
            "chunked body",
            b"POST /chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".to_vec(),
            1,
        ),
        (
            "Content-Length and Transfer-Encoding",
            b"POST /cl-te HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
            1,
        ),
        (
            "a transfer coding other than chunked",
            b"POST /gz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n".to_vec(),
            1,
        ),
        (
            "two Content-Length fields",
            b"POST /cl HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc".to_vec(),
            1,
        ),
        ("Content-Length not a number", b"POST /cl HTTP/1.1\r\nHost: x\r\nContent-Length: 0x3\r\n\r\nabc".to_vec(), 1),
        (
            "Connection: content-length (the smuggling shape)",
            b"POST /s HTTP/1.1\r\nHost: x\r\nConnection: content-length\r\nContent-Length: 26\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n".to_vec(),
            2,
        ),
        (
            "Connection: close, Content-Length",
            b"POST /s HTTP/1.1\r\nHost: x\r\nConnection: close, Content-Length\r\nContent-Length: 26\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n".to_vec(),
            2,
        ),
        (
            "Connection: transfer-encoding",
            b"POST /s HTTP/1.1\r\nHost: x\r\nConnection: transfer-encoding\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
            1,
        ),
        ("an Expect other than 100-continue", b"GET /e HTTP/1.1\r\nHost: x\r\nExpect: teapot\r\n\r\n".to_vec(), 1),
        (
            "Expect: 100-continue with its body",
            b"PUT /e HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc".to_vec(),
            1,
        ),
        ("HTTP/1.0", b"GET /ten HTTP/1.0\r\nX-A: 1\r\n\r\n".to_vec(), 1),
        (
            "absolute form for another host",
            b"GET http://evil.example/steal HTTP/1.1\r\nHost: evil.example\r\n\r\n".to_vec(),
            1,
        ),
        (
            "three GETs pipelined",
            b"GET /p1 HTTP/1.1\r\nHost: x\r\n\r\nGET /p2 HTTP/1.1\r\nHost: x\r\n\r\nGET /p3 HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            3,
        ),
        (
            "pipelined behind a request pingora serves",
            b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
              GET /after1 HTTP/1.1\r\nHost: x\r\n\r\nGET /after2 HTTP/1.1\r\nHost: x\r\n\r\n"
                .to_vec(),
            3,
        ),
        (
            "pipelined behind a refused request",
            b"GET /h HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\nGET /never HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            2,
        ),
        ("unknown method", b"PURGE /m HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 1),
        ("HEAD", b"HEAD /head HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 1),
    ];
    cases.push((
        "absolute form for the upstream itself",
        format!("GET http://{up}/own?q HTTP/1.1\r\nHost: {up}\r\n\r\n").into_bytes(),
        1,
    ));
    cases
}

/// What some cases must get, besides getting the same on both paths.
const EXPECTED: &[(&str, &[u16])] = &[
    ("plain GET", &[200]),
    ("two Host fields", &[400]),
    ("Connection: host", &[400]),
    ("fragment in target", &[400]),
    ("NUL in target", &[400]),
    ("double space after the method", &[400]),
    ("space in target", &[400]),
    ("quote in target", &[400]),
    ("obs-fold in a request field", &[400]),
    ("space before a colon", &[400]),
    ("bare CR in a value", &[400]),
    ("no Host in HTTP/1.1", &[400]),
    ("HTTP/2 preface", &[400]),
    ("unknown method", &[200]),
    ("hop-by-hop fields and a Connection nomination", &[200]),
    ("an h2c upgrade offer is dropped", &[200]),
    ("CONNECT", &[405]),
    ("head over 32 KiB", &[431]),
    ("body over 64 KiB", &[200]),
    ("chunked body", &[200]),
    ("Content-Length and Transfer-Encoding", &[400]),
    ("a transfer coding other than chunked", &[501]),
    ("Connection: content-length (the smuggling shape)", &[400]),
    ("an Expect other than 100-continue", &[417]),
    ("HTTP/1.0", &[200]),
    ("absolute form for another host", &[421]),
    ("three GETs pipelined", &[200, 200, 200]),
    (
        "pipelined behind a request pingora serves",
        &[200, 200, 200],
    ),
    ("pipelined behind a refused request", &[400]),
    ("absolute form for the upstream itself", &[200]),
];

#[tokio::test]
async fn the_same_request_bytes_get_the_same_answer_and_upstream_request_on_both_paths() {
    let (lean, pingora) = both(echo).await;
    check_request_corpus(&lean, &pingora).await;
}

#[tokio::test]
async fn the_same_request_bytes_get_the_same_answer_over_tls_on_both_paths() {
    let lean = side_over(true, echo, true).await;
    let pingora = side_over(false, echo, true).await;
    check_request_corpus(&lean, &pingora).await;
    // The lean side served over TLS what it serves over plain TCP: no handoff for the upstream.
    let text = common::metrics_text(lean.rig.proxy.admin).await;
    for reason in ["tls_upstream", "http2_unknown", "http2_upstream"] {
        assert!(!text.contains(&format!("reason=\"{reason}\"")), "{reason}");
    }
    let full = r#"tokenproxy_upstream_tls_handshakes_total{route="diff",outcome="full"}"#;
    assert!(common::sample(&text, full).unwrap_or(0.0) >= 1.0, "{text}");
}

/// The request corpus through both sides: the same statuses and the same upstream requests.
async fn check_request_corpus(lean: &Side, pingora: &Side) {
    // Both upstreams listen on 127.0.0.1; the absolute-form case names each side's own.
    let mut failures = Vec::new();
    let lean_cases = request_corpus(&lean.up().addr.to_string());
    let pingora_cases = request_corpus(&pingora.up().addr.to_string());
    for ((name, bytes_l, n), (_, bytes_p, _)) in lean_cases.iter().zip(&pingora_cases) {
        let (status_l, seen_l) = exchange(lean, bytes_l, *n).await;
        let (status_p, seen_p) = exchange(pingora, bytes_p, *n).await;
        // The upstream's authority is the one part of an absolute-form target that differs.
        let seen_l: Vec<_> = seen_l
            .iter()
            .map(|s| s.replace(&lean.up().addr.to_string(), "UP"))
            .collect();
        let seen_p: Vec<_> = seen_p
            .iter()
            .map(|s| s.replace(&pingora.up().addr.to_string(), "UP"))
            .collect();
        if let Some((_, want)) = EXPECTED.iter().find(|(n, _)| n == name) {
            assert_eq!(&status_l, want, "{name}");
        }
        if status_l != status_p || seen_l != seen_p {
            failures.push(format!(
                "{name}:\n  lean    {status_l:?} {seen_l:#?}\n  pingora {status_p:?} {seen_p:#?}"
            ));
        }
        // Nothing the proxy refused may reach the upstream, and what it forwards carries our
        // token and no hop-by-hop field.
        for seen in &seen_l {
            assert!(
                !seen.contains("smuggled") && !seen.contains("/never"),
                "{name}: {seen}"
            );
            assert!(seen.contains("authorization: <token>"), "{name}: {seen}");
            for hop in [
                "connection:",
                "keep-alive:",
                "proxy-",
                "te:",
                "trailer:",
                "x-hop:",
                "upgrade:",
            ] {
                assert!(
                    !seen.contains(&format!("| {hop}")) && !seen.contains(&format!("; {hop}")),
                    "{name}: {seen}"
                );
            }
        }
    }
    assert!(
        failures.is_empty(),
        "the paths disagree:\n{}",
        failures.join("\n")
    );
}

/// The response corpus: what the upstream answers to `GET /r/<i>`.
fn response_corpus() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("length", with_length("HTTP/1.1 200 OK\r\nX-A: 1\r\n", b"hello")),
        (
            "chunked with extension and trailer",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-Trailer: t\r\n\r\n".to_vec(),
        ),
        (
            "Content-Length and Transfer-Encoding",
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".to_vec(),
        ),
        ("obs-fold", with_length("HTTP/1.1 200 OK\r\nX-Folded: a\r\n  b\r\n", b"fold")),
        ("space before colon", with_length("HTTP/1.1 200 OK\r\nX-Space : s\r\n", b"space")),
        ("status 099", with_length("HTTP/1.1 099 Odd\r\n", b"odd")),
        ("status 600", with_length("HTTP/1.1 600 Odd\r\n", b"odd")),
        ("unsolicited 101", b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\nraw".to_vec()),
        ("bad first chunk", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n".to_vec()),
        ("204 with a length", b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n".to_vec()),
        ("404 with a body", with_length("HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\n", b"nope")),
        ("duplicate fields", with_length("HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n", b"two")),
        ("two different lengths", b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd".to_vec()),
        ("not HTTP", b"SSH-2.0-OpenSSH\r\n\r\n".to_vec()),
    ]
}

/// A response as the caller read it, comparable across sides: status, end-to-end fields (the
/// framing and connection fields each hop sets for itself are left out), body.
/// `Date` is compared by presence: each path sends exactly one, pingora's with the proxy's
/// clock, the lean path the upstream's when it sent one (else the proxy's).
fn caller_view(r: &common::rawup::Response) -> String {
    const PER_HOP: [&str; 4] = [
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
    ];
    let mut fields: Vec<String> = r
        .head
        .headers
        .iter()
        .filter(|(n, _)| !PER_HOP.contains(&n.to_ascii_lowercase().as_str()))
        .map(|(n, v)| match n.to_ascii_lowercase().as_str() {
            "date" => "date: <date>".to_string(),
            n => format!("{n}: {v}"),
        })
        .collect();
    fields.sort();
    format!("{} | {} | {:?}", r.status, fields.join(" ; "), r.text())
}

#[tokio::test]
async fn the_same_upstream_responses_reach_the_caller_the_same_on_both_paths() {
    check_response_corpus(false).await;
}

#[tokio::test]
async fn the_same_upstream_responses_reach_the_caller_the_same_over_tls_on_both_paths() {
    check_response_corpus(true).await;
}

/// The response corpus from an upstream (over TLS with `ca`) through both sides.
async fn check_response_corpus(tls: bool) {
    let corpus = response_corpus();
    let replies: Vec<Vec<u8>> = corpus.iter().map(|(_, b)| b.clone()).collect();
    let lean = side_over(true, scripted(replies.clone()), tls).await;
    let pingora = side_over(false, scripted(replies), tls).await;
    let mut failures = Vec::new();
    for (i, (name, _)) in corpus.iter().enumerate() {
        let mut answers = Vec::new();
        for side in [&lean, &pingora] {
            answers.push(match fetch(side, i).await {
                Ok(r) => caller_view(&r),
                Err(e) => format!("no whole response: {:?}", e.kind()),
            });
        }
        if *name == "bad first chunk" {
            // The documented exception: the lean path sees the broken chunk with the head and
            // answers 502; pingora has sent the head by then and can only cut the response.
            assert!(
                answers[0].starts_with("502 "),
                "{name}: lean {}",
                answers[0]
            );
            assert_eq!(answers[1], "no whole response: UnexpectedEof", "{name}");
            continue;
        }
        if answers[0] != answers[1] {
            failures.push(format!(
                "{name}:\n  lean    {}\n  pingora {}",
                answers[0], answers[1]
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "the paths disagree:\n{}",
        failures.join("\n")
    );
}

/// An upstream that answers `GET /r/<i>` with `replies[i]`, then closes.
fn scripted(replies: Vec<Vec<u8>>) -> impl Fn(&Received) -> Reply + Send + Sync + Clone {
    let replies = std::sync::Arc::new(replies);
    move |req: &Received| {
        let i: usize = req
            .target
            .strip_prefix("/r/")
            .and_then(|i| i.parse().ok())
            .unwrap_or(0);
        Reply::new(replies[i].clone(), Then::Close)
    }
}

/// `GET /r/<i>` through `side`, on a new connection.
async fn fetch(side: &Side, i: usize) -> std::io::Result<common::rawup::Response> {
    let mut c = Client::connect(side.port).await;
    c.send(format!("GET /r/{i} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await;
    c.response(false).await
}

#[tokio::test]
async fn the_documented_differences_in_responses() {
    let replies: Vec<Vec<u8>> = [
        &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-Trailer: t\r\n\r\n"[..],
        b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\nContent-Length: 5\r\n\r\nhello",
    ]
    .map(<[u8]>::to_vec)
    .into();
    let (lean, pingora) = both(scripted(replies)).await;
    // Trailers: the lean path relays a chunked body byte for byte, trailers included; pingora's
    // drops them.
    let l = fetch(&lean, 0).await.unwrap();
    let p = fetch(&pingora, 0).await.unwrap();
    assert_eq!(
        (l.text(), p.text()),
        ("hello".to_string(), "hello".to_string())
    );
    assert_eq!(l.trailers, vec![("X-Trailer".to_string(), "t".to_string())]);
    assert!(p.trailers.is_empty());
    // Interim responses: not relayed by the lean path.
    let l = fetch(&lean, 1).await.unwrap();
    let p = fetch(&pingora, 1).await.unwrap();
    assert_eq!((l.status, p.status), (200, 200));
    assert!(l.interim.is_empty(), "{:?}", l.interim);
    assert_eq!(p.interim, [103]);
    // Date: the lean path keeps the upstream's, pingora's path sets the proxy's.
    let l = fetch(&lean, 2).await.unwrap();
    let p = fetch(&pingora, 2).await.unwrap();
    assert_eq!(l.head.all("date"), ["Sun, 06 Nov 1994 08:49:37 GMT"]);
    assert_eq!(p.head.all("date").len(), 1);
    assert_ne!(p.head.all("date"), ["Sun, 06 Nov 1994 08:49:37 GMT"]);
}

/// The smuggling attack of the request-path security issue, on both paths: a caller's
/// `Connection` names `Content-Length` so that its body (an unfinished request head) would be
/// read upstream as a second request, to be completed by the next caller's request on the same
/// pooled upstream connection. The proxy must refuse it, and the upstream must see exactly the
/// requests the proxy accepted, each with its own framing.
#[tokio::test]
async fn a_connection_nominated_content_length_cannot_smuggle_a_request_on_either_path() {
    let smuggled =
        "GET /admin/delete-everything HTTP/1.1\r\nHost: internal-admin.example\r\nX-Pad: ";
    for lean in [true, false] {
        let side = side(lean, echo).await;
        let mut warm = Client::connect(side.port).await;
        warm.send(b"GET /warm HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert_eq!(warm.response(false).await.unwrap().status, 200);
        for connection in [
            "content-length",
            "close, Content-Length",
            "Content-Length, keep-alive",
        ] {
            let mut attacker = Client::connect(side.port).await;
            attacker
                .send(
                    format!(
                        "POST /innocent HTTP/1.1\r\nHost: x\r\nConnection: {connection}\r\n\
                         Content-Length: {}\r\n\r\n{smuggled}",
                        smuggled.len()
                    )
                    .as_bytes(),
                )
                .await;
            let refused = attacker.response(false).await.unwrap();
            assert_eq!(refused.status, 400, "{}: {connection}", side.name);
            assert!(refused.text().contains("invalid_connection_header"));
            // The victim, on its own connection; the upstream connection is the pooled one.
            let mut victim = Client::connect(side.port).await;
            victim
                .send(b"GET /victim HTTP/1.1\r\nHost: x\r\n\r\n")
                .await;
            let answer = victim.response(false).await.unwrap();
            assert_eq!(answer.status, 200, "{}: {connection}", side.name);
            assert_eq!(
                answer.text(),
                "GET /victim len=0",
                "{}: {connection}",
                side.name
            );
        }
        let seen: Vec<String> = side
            .up()
            .received()
            .iter()
            .map(|r| format!("{} {} body={}", r.method, r.target, r.body.len()))
            .collect();
        assert_eq!(
            seen,
            [
                "GET /warm body=0",
                "GET /victim body=0",
                "GET /victim body=0",
                "GET /victim body=0"
            ],
            "{}",
            side.name
        );
        for r in side.up().received() {
            assert_eq!(
                r.head.all("host"),
                [side.up().addr.to_string()],
                "{}",
                side.name
            );
            assert_eq!(
                r.head.all("authorization"),
                [side.bearer.as_str()],
                "{}",
                side.name
            );
        }
    }
}

/// A verify route (checking inbound tokens from one test issuer) on one side.
struct VerifySide {
    rig: Rig,
    port: u16,
}

impl VerifySide {
    fn up(&self) -> &RawUpstream {
        self.rig.raw()
    }
}

async fn verify_side(lean: bool, jwks: &common::jwks::JwksServer) -> VerifySide {
    let verify = format!(
        "verify: {{ issuer: \"{}\", audiences: [api], required_scopes: [read] }}",
        jwks.issuer()
    );
    let rig = Rig::builder()
        .secret(SECRET)
        .raw(echo)
        .top(&format!("lean_path: {lean}"))
        .route("verify", &[&verify])
        .env("RUST_LOG", "info")
        .start()
        .await;
    let port = rig.port("verify");
    VerifySide { rig, port }
}

/// What the caller of a verify route reads: status, challenge and body of each answer.
async fn verify_exchange(
    side: &VerifySide,
    bytes: &[u8],
    responses: usize,
) -> (Vec<String>, Vec<String>) {
    let before = side.up().received().len();
    let mut c = Client::connect(side.port).await;
    c.send(bytes).await;
    let mut answers = Vec::new();
    for _ in 0..responses {
        match c.response(false).await {
            Ok(r) => answers.push(format!(
                "{} | {:?} | {}",
                r.status,
                r.head.get("www-authenticate"),
                r.text()
            )),
            Err(_) => break,
        }
    }
    // Each side has its own upstream: its authority is the one difference.
    let seen = side.up().received()[before..]
        .iter()
        .map(|r| normalised(r, "").replace(&side.up().addr.to_string(), "UP"))
        .collect();
    (answers, seen)
}

#[tokio::test]
async fn verify_routes_decide_the_same_on_both_paths() {
    use common::jwks::{JwksServer, TestKey};
    let key = TestKey::ec("k1");
    let jwks = JwksServer::start(vec![key.jwk.clone()]).await;
    let lean = verify_side(true, &jwks).await;
    let pingora = verify_side(false, &jwks).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut c = serde_json::json!({
            "iss": jwks.issuer(), "aud": "api", "sub": "svc", "exp": now + 300, "scope": "read",
        });
        f(&mut c);
        key.sign(&c)
    };
    let valid = claims(&|_| {});
    let expired = claims(&|c| c["exp"] = (now - 100).into());
    let wrong_aud = claims(&|c| c["aud"] = "other".into());
    let no_scope = claims(&|c| c["scope"] = "write".into());
    let mut forged_kid = jsonwebtoken::Header::new(key.alg);
    forged_kid.kid = Some("unknown".into());
    let unknown_kid = jsonwebtoken::encode(
        &forged_kid,
        &serde_json::json!({"iss": jwks.issuer(), "aud": "api", "exp": now + 300}),
        &key.encoding,
    )
    .unwrap();
    let get = |token: &str, extra: &str| {
        format!("GET /v HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n{extra}\r\n")
            .into_bytes()
    };
    let cases: Vec<(&str, Vec<u8>, usize, &[u16])> = vec![
        ("valid", get(&valid, ""), 1, &[200]),
        (
            "missing",
            b"GET /v HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            1,
            &[401],
        ),
        ("expired", get(&expired, ""), 1, &[401]),
        ("wrong aud", get(&wrong_aud, ""), 1, &[401]),
        ("insufficient scope", get(&no_scope, ""), 1, &[403]),
        ("unknown kid", get(&unknown_kid, ""), 1, &[401]),
        (
            "spoofed X-Auth-Subject",
            get(&valid, "X-Auth-Subject: root\r\nx-auth-scope: all\r\n"),
            1,
            &[200],
        ),
        (
            "valid with a chunked body (pingora's path on both)",
            format!(
                "POST /v HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {valid}\r\n\
                 Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
            )
            .into_bytes(),
            1,
            &[200],
        ),
        (
            "expired with a body",
            format!(
                "POST /v HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {expired}\r\n\
                 Content-Length: 3\r\n\r\nabc"
            )
            .into_bytes(),
            1,
            &[401],
        ),
        (
            "valid then missing, pipelined",
            [
                get(&valid, ""),
                b"GET /w HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            ]
            .concat(),
            2,
            &[200, 401],
        ),
    ];
    let mut failures = Vec::new();
    for (name, bytes, n, want) in &cases {
        let (answers_l, seen_l) = verify_exchange(&lean, bytes, *n).await;
        let (answers_p, seen_p) = verify_exchange(&pingora, bytes, *n).await;
        let statuses: Vec<u16> = answers_l.iter().map(|a| a[..3].parse().unwrap()).collect();
        assert_eq!(&statuses, want, "{name}: {answers_l:?}");
        if answers_l != answers_p || seen_l != seen_p {
            failures.push(format!(
                "{name}:\n  lean    {answers_l:#?} {seen_l:#?}\n  pingora {answers_p:#?} {seen_p:#?}"
            ));
        }
        for seen in &seen_l {
            assert!(
                !seen.contains("root") && !seen.contains(": all"),
                "{name}: {seen}"
            );
            assert!(seen.contains("x-auth-subject: svc"), "{name}: {seen}");
        }
        // A refused request never reaches the API.
        let allowed = want.iter().filter(|s| **s == 200).count();
        assert_eq!(seen_l.len(), allowed, "{name}");
    }
    if !failures.is_empty() {
        eprintln!("lean stderr:\n{}", lean.rig.proxy.stderr());
    }
    assert!(
        failures.is_empty(),
        "the paths disagree:\n{}",
        failures.join("\n")
    );
}
