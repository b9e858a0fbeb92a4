use super::*;

fn request(raw: &[u8]) -> Parsed<RequestHead> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    parse_request(raw, &mut headers).0
}

fn upstream_head(raw: &[u8], rw: &Rewrite<'_>) -> String {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let (parsed, req) = parse_request(raw, &mut headers);
    assert!(matches!(parsed, Parsed::Done(_)), "{parsed:?}");
    let mut out = Vec::new();
    write_upstream_head(&req.unwrap(), rw, &mut out);
    String::from_utf8(out).unwrap()
}

#[test]
fn takes_plain_requests_and_reads_their_framing() {
    let raw =
        b"POST /a?b=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello";
    assert_eq!(
        request(raw),
        Parsed::Done(RequestHead {
            head_len: raw.len() - 5,
            content_length: 5,
            close: true,
            idempotent: false,
            is_head: false,
        })
    );
    match request(b"HEAD / HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\n") {
        Parsed::Done(h) => assert!(h.is_head && h.idempotent && h.close && h.content_length == 0),
        other => panic!("{other:?}"),
    }
    assert_eq!(request(b"GET / HTTP/1.1\r\nHost: x\r\n"), Parsed::Partial);
}

#[test]
fn leaves_everything_unusual_to_pingora() {
    let cases: &[(&[u8], &str)] = &[
        (b"GET / HTTP/1.0\r\n\r\n", "http_version"),
        (b"CONNECT a:443 HTTP/1.1\r\n\r\n", "connect_method"),
        (b"GET http://other/ HTTP/1.1\r\n\r\n", "absolute_form"),
        (b"GET * HTTP/1.1\r\n\r\n", "absolute_form"),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "transfer_encoding",
        ),
        (
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
            "content_length_repeated",
        ),
        (
            b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            "content_length_invalid",
        ),
        (
            b"POST / HTTP/1.1\r\nContent-Length: 1 2\r\n\r\n",
            "content_length_invalid",
        ),
        (
            b"POST / HTTP/1.1\r\nContent-Length: 65537\r\n\r\n",
            "large_body",
        ),
        (b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n", "upgrade"),
        (b"PUT / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n", "expect"),
        (b"GET / HTTP/1.1\r\nbad header\r\n\r\n", "malformed"),
    ];
    for (raw, why) in cases {
        assert_eq!(
            request(raw),
            Parsed::Unsupported(why),
            "{}",
            String::from_utf8_lossy(raw)
        );
    }
    let mut many = b"GET / HTTP/1.1\r\n".to_vec();
    for i in 0..=MAX_HEADERS {
        many.extend_from_slice(format!("x-{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    assert_eq!(request(&many), Parsed::Unsupported("too_many_headers"));
    let mut big = b"GET / HTTP/1.1\r\nx: ".to_vec();
    big.resize(MAX_REQUEST_HEAD + 10, b'a');
    assert_eq!(request(&big), Parsed::Unsupported("large_head"));
    big.extend_from_slice(b"\r\n\r\n");
    assert_eq!(request(&big), Parsed::Unsupported("large_head"));
}

#[test]
fn upstream_head_replaces_host_and_token_and_drops_hop_by_hop_fields() {
    let name = HeaderName::from_static("authorization");
    let rw = Rewrite {
        host: b"api.example:8443",
        base_path: b"/v1",
        inject: Some((&name, b"Bearer t")),
    };
    let raw = b"GET /x?y HTTP/1.1\r\nHost: 127.0.0.1:9\r\nAuthorization: Basic a\r\nX-A: 1\r\n\
        authorization: Bearer b\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 2\r\nKeep-Alive: 5\r\n\
        TE: trailers\r\nX-B: 3\r\n\r\n";
    assert_eq!(
        upstream_head(raw, &rw),
        "GET /v1/x?y HTTP/1.1\r\nHost: api.example:8443\r\nX-A: 1\r\nX-B: 3\r\n\
         authorization: Bearer t\r\n\r\n"
    );
    // Keeping the caller's own header: it goes through as sent.
    let keep = Rewrite {
        host: b"h",
        base_path: b"",
        inject: None,
    };
    assert_eq!(
        upstream_head(b"GET / HTTP/1.1\r\nAuthorization: Basic a\r\n\r\n", &keep),
        "GET / HTTP/1.1\r\nHost: h\r\nAuthorization: Basic a\r\n\r\n"
    );
}

fn response(raw: &[u8], head: bool) -> Result<Option<ResponseHead>, WireError> {
    parse_response(raw, head)
}

#[test]
fn response_framing_follows_rfc_9112() {
    let framing = |raw: &[u8], head: bool| response(raw, head).unwrap().unwrap().framing;
    assert_eq!(
        framing(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n", false),
        Framing::Length(12)
    );
    assert_eq!(
        framing(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n", true),
        Framing::Empty
    );
    assert_eq!(
        framing(
            b"HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\n",
            false
        ),
        Framing::Empty
    );
    assert_eq!(
        framing(b"HTTP/1.1 304 Not Modified\r\n\r\n", false),
        Framing::Empty
    );
    assert_eq!(
        framing(b"HTTP/1.1 103 Early Hints\r\n\r\n", false),
        Framing::Empty
    );
    assert_eq!(
        framing(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            false
        ),
        Framing::Chunked
    );
    assert_eq!(
        framing(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            false
        ),
        Framing::Close
    );
    assert_eq!(framing(b"HTTP/1.1 200 OK\r\n\r\n", false), Framing::Close);
    assert_eq!(
        response(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            false
        ),
        Err(WireError::BadLength)
    );
    assert_eq!(
        response(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", false),
        Err(WireError::BadLength)
    );
    assert_eq!(
        response(b"HTTP/1.1 101 Switching\r\n\r\n", false),
        Err(WireError::UnexpectedUpgrade)
    );
    assert_eq!(response(b"HTTP/1.1 200 OK\r\n", false), Ok(None));
    assert_eq!(
        response(b"NOPE\r\n\r\n", false),
        Err(WireError::MalformedHead)
    );
}

#[test]
fn response_reuse_needs_http_1_1_keep_alive_and_unambiguous_framing() {
    let reusable = |raw: &[u8]| response(raw, false).unwrap().unwrap().reusable;
    assert!(reusable(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"));
    assert!(reusable(
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n"
    ));
    assert!(!reusable(
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    ));
    assert!(!reusable(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"));
    assert!(!reusable(b"HTTP/1.1 200 OK\r\n\r\n"));
    assert!(!reusable(
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
    ));
    let head = response(b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\n\r\n", false)
        .unwrap()
        .unwrap();
    assert!(head.has_connection);
}

fn scan_all(body: &[u8], piece: usize) -> Result<(usize, bool), WireError> {
    let mut s = ChunkedScanner::default();
    let mut used = 0;
    for chunk in body.chunks(piece) {
        let n = s.scan(chunk)?;
        used += n;
        if n < chunk.len() {
            break;
        }
    }
    Ok((used, s.done()))
}

#[test]
fn chunked_scanner_finds_the_end_whatever_the_pieces() {
    let body = b"5;foo=bar\r\nhello\r\nA\r\n0123456789\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT";
    let end = body.len() - 4;
    for piece in 1..=body.len() {
        assert_eq!(scan_all(body, piece), Ok((end, true)), "piece {piece}");
    }
    assert_eq!(scan_all(b"0\r\n\r\n", 100), Ok((5, true)));
    assert_eq!(scan_all(b"000\r\n\r\n", 100), Ok((7, true)));
    // Not finished yet.
    assert_eq!(scan_all(b"5\r\nhel", 100), Ok((6, false)));
    assert_eq!(scan_all(b"0\r\nX: 1\r\n", 100), Ok((9, false)));
}

#[test]
fn chunked_scanner_rejects_malformed_framing() {
    for bad in [
        &b"\r\n"[..],
        b"g\r\n",
        b"5\r\nhelloXX",
        b"5\nhello\r\n",
        b"1234567890abcdef0\r\n",
        b"0\r\n\n",
        b"5;ext\nhello",
    ] {
        assert_eq!(
            scan_all(bad, 100),
            Err(WireError::BadChunk),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn decimal_and_token_helpers() {
    assert_eq!(parse_decimal(b" 42 "), Some(42));
    assert_eq!(parse_decimal(b""), None);
    assert_eq!(parse_decimal(b"+1"), None);
    assert_eq!(parse_decimal(b"9999999999999999999"), None);
    assert!(has_token(b"keep-alive, close", b"close"));
    assert!(!has_token(b"closed", b"close"));
    assert!(last_token_is(b"gzip ,Chunked ", b"chunked"));
}
