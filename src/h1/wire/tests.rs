use super::*;
use crate::forward::{self, RouteView};

fn upstream_head(raw: &[u8], rw: &Rewrite<'_>, keep_callers: bool) -> String {
    let token_header = HeaderName::from_static("authorization");
    let view = RouteView {
        token_header: &token_header,
        keep_callers,
        upstream_authority: "api.example:8443",
        upstream_port: 8443,
        listen: "127.0.0.1:8081".parse().unwrap(),
        verify: None,
        claim_headers: &[],
    };
    let mut headers = forward::header_slots();
    let (_, req) = forward::parse_head(raw, &mut headers).unwrap().unwrap();
    let plan = forward::plan(&req, &view).unwrap();
    let mut out = Vec::new();
    let at = write_upstream_head(&req, &plan, rw, &mut out);
    if let Some(at) = at {
        assert!(out[at..].starts_with(rw.inject.unwrap().0.as_str().as_bytes()));
    }
    String::from_utf8(out).unwrap()
}

#[test]
fn upstream_head_replaces_host_and_token_and_drops_hop_by_hop_fields() {
    let name = HeaderName::from_static("authorization");
    let rw = Rewrite {
        host: b"api.example:8443",
        base_path: b"/v1",
        inject: Some((&name, b"Bearer t")),
        claims: &[],
    };
    let raw = b"GET /x?y HTTP/1.1\r\nHost: 127.0.0.1:9\r\nAuthorization: Basic a\r\nX-A: 1\r\n\
        authorization: Bearer b\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 2\r\nKeep-Alive: 5\r\n\
        TE: trailers\r\nX-B: 3\r\n\r\n";
    assert_eq!(
        upstream_head(raw, &rw, false),
        "GET /v1/x?y HTTP/1.1\r\nHost: api.example:8443\r\nX-A: 1\r\nX-B: 3\r\n\
         authorization: Bearer t\r\n\r\n"
    );
    // A WebSocket handshake gets its pair of fields written anew.
    let ws =
        b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: WebSocket\r\nConnection: keep-alive, upgrade\r\n\
        Sec-WebSocket-Key: k\r\n\r\n";
    assert_eq!(
        upstream_head(ws, &rw, false),
        "GET /v1/ws HTTP/1.1\r\nHost: api.example:8443\r\nSec-WebSocket-Key: k\r\n\
         Connection: Upgrade\r\nUpgrade: websocket\r\nauthorization: Bearer t\r\n\r\n"
    );
    // Keeping the caller's own header: it goes through as sent.
    let keep = Rewrite {
        host: b"h",
        base_path: b"",
        inject: None,
        claims: &[],
    };
    assert_eq!(
        upstream_head(
            b"GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Basic a\r\n\r\n",
            &keep,
            true
        ),
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
        Err(WireError::BadStatus(101))
    );
    assert_eq!(
        response(b"HTTP/1.1 099 Odd\r\n\r\n", false),
        Err(WireError::BadStatus(99))
    );
    assert_eq!(
        response(b"HTTP/1.1 600 Odd\r\n\r\n", false),
        Err(WireError::BadStatus(600))
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

#[test]
fn unusual_response_heads_are_rendered_anew() {
    let as_is = |raw: &[u8]| response(raw, false).unwrap().unwrap().as_is;
    assert!(as_is(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"));
    for raw in [
        &b"HTTP/1.1 200 OK\r\nX-A : 1\r\nContent-Length: 0\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\nX-A: 1\r\n  more\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\nContent-Length: 0\n\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
    ] {
        assert!(!as_is(raw), "{}", String::from_utf8_lossy(raw));
        let mut out = Vec::new();
        write_response_head(raw, &mut out).unwrap();
        let again = response(&out, false).unwrap().unwrap();
        assert!(again.as_is, "{}", String::from_utf8_lossy(&out));
        assert_eq!(again.head_len, out.len());
    }
    let mut out = Vec::new();
    write_response_head(
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-A : 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        &mut out,
    )
    .unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "HTTP/1.1 200 OK\r\nX-A: 1\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
}

#[test]
fn a_colon_or_space_in_a_value_or_the_reason_keeps_a_head_plain() {
    let as_is = |raw: &[u8]| response(raw, false).unwrap().unwrap().as_is;
    assert!(as_is(
        b"HTTP/1.1 200 OK :)\r\nX-A: a : b\r\nX-B: :c\r\nContent-Length: 0\r\n\r\n"
    ));
    assert!(!as_is(
        b"HTTP/1.1 200 OK\r\nX-A\t: a\r\nContent-Length: 0\r\n\r\n"
    ));
    // What the fuzzer found: a rendered value that starts with a colon must count as plain.
    let raw = b"HTTP/1.0 102\r\nX:::\r\n\r\n";
    let mut out = Vec::new();
    write_response_head(raw, &mut out).unwrap();
    let again = response(&out, false).unwrap().unwrap();
    assert!(
        again.as_is && again.head_len == out.len(),
        "{:?}",
        String::from_utf8_lossy(&out)
    );
}

/// The plain-head rule byte by byte (how `is_plain_head` was first written), the oracle for
/// the line-by-line scan.
fn plain_byte_by_byte(head: &[u8]) -> bool {
    let mut prev = 0u8;
    let mut in_name = false;
    let mut line_start = false;
    for &b in head {
        if b == b'\n' {
            if prev != b'\r' {
                return false;
            }
            (in_name, line_start, prev) = (true, true, b);
            continue;
        }
        if line_start && (b == b' ' || b == b'\t') {
            return false;
        }
        if in_name {
            match b {
                b':' => in_name = false,
                b' ' | b'\t' => return false,
                _ => {}
            }
        }
        line_start = false;
        prev = b;
    }
    true
}

#[test]
fn the_line_scan_agrees_with_the_byte_scan_on_every_small_edit_of_a_head() {
    let bases: [&[u8]; 3] = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-A: a : b\r\n\r\n",
        b"HTTP/1.1 204 No Content :)\r\nDate: x\r\nX-Folded: a\r\n b\r\n\r\n",
        b"HTTP/1.0 200 OK\r\nA:B\r\nC :D\r\n\r\n",
    ];
    let mut heads = 0;
    let mut plain = 0;
    for base in bases {
        for at in 0..=base.len() {
            let mut edits = Vec::new();
            for b in [b' ', b'\t', b'\n', b'\r', b':', b'x'] {
                let mut head = base.to_vec();
                head.insert(at, b);
                edits.push(head);
            }
            if at < base.len() {
                let mut head = base.to_vec();
                head.remove(at);
                edits.push(head);
            }
            // A whole head ends with its blank line; that is all the scan is given.
            for head in edits.into_iter().filter(|h| h.ends_with(b"\n")) {
                let expected = plain_byte_by_byte(&head);
                assert_eq!(
                    is_plain_head(&head),
                    expected,
                    "{:?}",
                    String::from_utf8_lossy(&head)
                );
                heads += 1;
                plain += usize::from(expected);
            }
        }
    }
    // Both answers occur often enough for the comparison to mean something.
    assert!(
        plain > 100 && heads - plain > 100,
        "{plain} plain of {heads}"
    );
}
