use super::*;

const LISTEN: &str = "127.0.0.1:8081";

fn with_plan<R>(
    head: &[u8],
    keep_callers: bool,
    f: impl FnOnce(Result<Plan<'_>, Answer>) -> R,
) -> R {
    let token_header = HeaderName::from_static("authorization");
    let route = RouteView {
        token_header: &token_header,
        keep_callers,
        upstream_authority: "api.example:8443",
        upstream_port: 8443,
        listen: LISTEN.parse().unwrap(),
        verify: None,
        claim_headers: &[],
    };
    let mut headers = header_slots();
    let parsed = parse_head(head, &mut headers);
    match parsed {
        Ok(Some((_, req))) => f(plan(&req, &route)),
        Ok(None) => panic!("partial head"),
        Err(a) => f(Err(a)),
    }
}

fn verdict(head: &str) -> Result<(), Answer> {
    with_plan(head.as_bytes(), false, |p| p.map(|_| ()))
}

#[test]
fn refusals() {
    let cases: &[(&str, Answer)] = &[
        ("GET /a HTTP/1.1\r\nHost: x\r\nConnection: content-length\r\nContent-Length: 3\r\n\r\n", Answer::InvalidConnection),
        ("GET /a HTTP/1.1\r\nHost: x\r\nConnection: close, Content-Length\r\n\r\n", Answer::InvalidConnection),
        ("GET /a HTTP/1.1\r\nHost: x\r\nConnection: transfer-encoding\r\n\r\n", Answer::InvalidConnection),
        ("GET /a HTTP/1.1\r\nHost: x\r\nConnection: host\r\n\r\n", Answer::InvalidConnection),
        ("GET /a HTTP/1.1\r\nHost: x\r\nConnection: Authorization\r\n\r\n", Answer::InvalidConnection),
        ("GET /a HTTP/1.1\r\nHost: x\r\nConnection: \"x-a\"\r\n\r\n", Answer::InvalidConnection),
        ("GET /a HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", Answer::InvalidHost),
        ("GET /a HTTP/1.1\r\n\r\n", Answer::InvalidHost),
        ("GET /a#frag HTTP/1.1\r\nHost: x\r\n\r\n", Answer::InvalidTarget),
        ("GET /a\"b HTTP/1.1\r\nHost: x\r\n\r\n", Answer::InvalidTarget),
        ("GET /a{b} HTTP/1.1\r\nHost: x\r\n\r\n", Answer::InvalidTarget),
        ("GET /a|b HTTP/1.1\r\nHost: x\r\n\r\n", Answer::InvalidTarget),
        ("GET /a\\b HTTP/1.1\r\nHost: x\r\n\r\n", Answer::InvalidTarget),
        ("GET /a^b HTTP/1.1\r\nHost: x\r\n\r\n", Answer::InvalidTarget),
        ("GET /a<b> HTTP/1.1\r\nHost: x\r\n\r\n", Answer::InvalidTarget),
        ("GET * HTTP/1.1\r\nHost: x\r\n\r\n", Answer::InvalidTarget),
        ("GET /a b HTTP/1.1\r\nHost: x\r\n\r\n", Answer::BadRequest),
        ("GET  /a HTTP/1.1\r\nHost: x\r\n\r\n", Answer::BadRequest),
        ("GET http://evil.example/steal HTTP/1.1\r\nHost: evil.example\r\n\r\n", Answer::Misdirected),
        ("POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n", Answer::InvalidContentLength),
        ("POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\n", Answer::InvalidContentLength),
        ("POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\n", Answer::InvalidContentLength),
        ("POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", Answer::ConflictingFraming),
        ("POST /a HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", Answer::ConflictingFraming),
        ("POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", Answer::UnsupportedTransferEncoding),
        ("POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", Answer::UnsupportedTransferEncoding),
        ("GET /a HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\n\r\n", Answer::ExpectationFailed),
        ("CONNECT api.example:443 HTTP/1.1\r\nHost: api.example:443\r\n\r\n", Answer::MethodNotAllowed),
    ];
    for (head, want) in cases {
        assert_eq!(verdict(head), Err(*want), "{head:?}");
    }
}

#[test]
fn too_large_or_unparsable_heads() {
    let mut headers = header_slots();
    let big = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX: {}\r\n\r\n",
        "a".repeat(MAX_HEAD)
    );
    assert_eq!(
        parse_head(big.as_bytes(), &mut headers).err(),
        Some(Answer::HeadersTooLarge)
    );
    let partial = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(MAX_HEAD));
    let mut headers = header_slots();
    assert_eq!(
        parse_head(partial.as_bytes(), &mut headers).err(),
        Some(Answer::HeadersTooLarge)
    );
    let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
    let many = format!("GET / HTTP/1.1\r\n{many}\r\n");
    let mut headers = header_slots();
    assert_eq!(
        parse_head(many.as_bytes(), &mut headers).err(),
        Some(Answer::HeadersTooLarge)
    );
    let mut headers = header_slots();
    assert!(matches!(
        parse_head(b"GET / HTTP/1.1\r\nHost", &mut headers),
        Ok(None)
    ));
    for bad in [
        &b"THIS IS NOT HTTP\r\n\r\n"[..],
        b"GET /\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"GET /a HTTP/1.1\r\nX:\0\r\n\r\n",
    ] {
        let mut headers = header_slots();
        assert_eq!(
            parse_head(bad, &mut headers).err(),
            Some(Answer::BadRequest),
            "{bad:?}"
        );
    }
}

#[test]
fn accepted_requests_and_what_they_forward() {
    let head = b"POST /a/b?c=[1]&d=%20 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\
        Connection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: 5\r\nTE: trailers\r\n\
        Trailer: X-T\r\nProxy-Authorization: Basic eA==\r\nProxy-Connection: x\r\n\
        Upgrade: h2c\r\nHTTP2-Settings: AA\r\nAuthorization: Bearer caller\r\nX-Keep: 1\r\n\r\n";
    with_plan(head, false, |p| {
        let p = p.unwrap();
        assert_eq!(p.method, "POST");
        assert_eq!(p.path_and_query, "/a/b?c=[1]&d=%20");
        assert_eq!(p.body, Body::Length(5));
        assert!(
            !p.close && !p.idempotent && !p.is_head && p.inject && p.has_upgrade && !p.websocket
        );
        for dropped in [
            "host",
            "Connection",
            "x-hop",
            "keep-alive",
            "te",
            "trailer",
            "proxy-authorization",
            "proxy-connection",
            "upgrade",
            "http2-settings",
            "authorization",
            "transfer-encoding",
            "proxy-authenticate",
        ] {
            assert!(!p.forwards(dropped.as_bytes()), "{dropped} is forwarded");
        }
        for kept in ["x-keep", "content-length", "X-Other", "expect"] {
            assert!(p.forwards(kept.as_bytes()), "{kept} is dropped");
        }
    });
    // existing: keep forwards the caller's own header, and our token is not injected.
    with_plan(
        b"GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Basic x\r\n\r\n",
        true,
        |p| {
            let p = p.unwrap();
            assert!(!p.inject);
            assert!(p.forwards(b"authorization"));
        },
    );
    with_plan(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", true, |p| {
        assert!(p.unwrap().inject);
    });
}

#[test]
fn connection_options_and_versions() {
    with_plan(
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        false,
        |p| assert!(p.unwrap().close),
    );
    with_plan(b"GET / HTTP/1.0\r\n\r\n", false, |p| {
        let p = p.unwrap();
        assert!(p.close && p.http10);
    });
    with_plan(
        b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        false,
        |p| assert!(!p.unwrap().close),
    );
    with_plan(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        false,
        |p| {
            let p = p.unwrap();
            assert!(p.websocket && p.has_upgrade && p.idempotent);
        },
    );
    with_plan(
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked \r\n\r\n",
        false,
        |p| assert_eq!(p.unwrap().body, Body::Chunked),
    );
    with_plan(
        b"PUT / HTTP/1.1\r\nHost: x\r\nExpect: 100-Continue\r\nContent-Length: 0\r\n\r\n",
        false,
        |p| {
            let p = p.unwrap();
            assert!(p.expect_continue && p.idempotent);
            assert_eq!(p.body, Body::None);
        },
    );
    let many: String = (0..MAX_CONNECTION_OPTIONS + 1)
        .map(|i| format!("x-{i},"))
        .collect();
    assert_eq!(
        verdict(&format!(
            "GET / HTTP/1.1\r\nHost: x\r\nConnection: {many}\r\n\r\n"
        )),
        Err(Answer::InvalidConnection)
    );
}

#[test]
fn absolute_form_for_this_route() {
    for target in [
        "http://api.example:8443/p?q",
        "https://API.example:8443/p?q",
        "http://127.0.0.1:8081/p?q",
        "http://localhost:8081/p?q",
    ] {
        with_plan(
            format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
            false,
            |p| {
                let p = p.unwrap();
                assert!(p.absolute_form, "{target}");
                assert_eq!(p.path_and_query, "/p?q", "{target}");
            },
        );
    }
    with_plan(
        b"GET http://api.example:8443 HTTP/1.1\r\nHost: x\r\n\r\n",
        false,
        |p| assert_eq!(p.unwrap().path_and_query, "/"),
    );
    for target in [
        "http://127.0.0.1:9999/p",
        "ftp://api.example:8443/p",
        "http://u@api.example:8443/p",
        "http://api.example:8443/p#f",
    ] {
        assert!(
            verdict(&format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n")).is_err(),
            "{target}"
        );
    }
}

#[test]
fn replay_needs_the_whole_body_within_the_limit() {
    with_plan(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n",
        false,
        |p| {
            let p = p.unwrap();
            assert!(p.replayable(10, None));
            assert!(!p.replayable(9, None));
        },
    );
    with_plan(
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
        false,
        |p| {
            let p = p.unwrap();
            assert!(p.replayable(10, Some(10)));
            assert!(!p.replayable(10, Some(11)));
            assert!(!p.replayable(10, None));
        },
    );
}
