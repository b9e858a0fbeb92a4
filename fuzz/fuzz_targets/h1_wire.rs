//! The lean path's HTTP/1.1 wire code on arbitrary bytes: request and response heads parse or
//! are refused, never a panic; a request it takes is rewritten into a head that parses again
//! with the same method, path and token; and the chunked-body scanner and the response body
//! tracker give the same answer whether the body comes whole or in pieces.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokenproxy::forward::{self, RouteView, MAX_HEADERS};
use tokenproxy::h1::body::{BodyEnd, ChunkedScanner};
use tokenproxy::h1::wire::{
    parse_response, write_response_head, write_upstream_head, Framing, Rewrite,
};

/// (bytes of the body, whether it ended, whether it was refused)
fn scan(data: &[u8], piece: usize) -> (usize, bool, bool) {
    let mut s = ChunkedScanner::default();
    let mut used = 0;
    for chunk in data.chunks(piece.max(1)) {
        match s.scan(chunk) {
            Ok(n) => {
                used += n;
                if n < chunk.len() {
                    break;
                }
            }
            Err(_) => return (used, s.done(), true),
        }
    }
    (used, s.done(), false)
}

/// (bytes of the body, whether it ended) for `framing`, or `None` when the body was refused.
fn track(framing: Framing, data: &[u8], piece: usize) -> Option<(usize, bool)> {
    let mut body = BodyEnd::new(framing);
    let mut used = 0;
    for chunk in data.chunks(piece.max(1)) {
        let n = body.accept(chunk).ok()?;
        assert!(n <= chunk.len());
        used += n;
    }
    Some((used, body.done()))
}

fuzz_target!(|data: &[u8]| {
    let Some((&piece, data)) = data.split_first() else { return };

    let whole = scan(data, data.len());
    let pieces = scan(data, usize::from(piece));
    // Where an error is found may differ by piece size only in how much was consumed before it.
    assert_eq!((whole.1, whole.2), (pieces.1, pieces.2));
    if !whole.2 {
        assert_eq!(whole.0, pieces.0);
    }

    // The response body tracker: the same end whatever the pieces, and never past a length.
    let length = u64::from(piece) * 3;
    for framing in [Framing::Empty, Framing::Length(length), Framing::Chunked, Framing::Close] {
        let whole = track(framing, data, data.len());
        let pieces = track(framing, data, usize::from(piece));
        assert_eq!(whole.is_some(), pieces.is_some(), "{framing:?}");
        if let (Some(whole), Some(pieces)) = (whole, pieces) {
            assert_eq!(whole, pieces, "{framing:?}");
            if let Framing::Length(n) = framing {
                assert_eq!(whole.0 as u64, n.min(data.len() as u64));
            }
        }
    }

    if let Ok(Some(head)) = parse_response(data, piece % 2 == 0) {
        // A head the lean path renders anew must parse again, as one that is relayed as is.
        let mut out = Vec::new();
        if write_response_head(&data[..head.head_len], &mut out).is_ok() {
            let again = parse_response(&out, piece % 2 == 0).expect("rendered head parses");
            assert!(again.is_some_and(|h| h.as_is && h.head_len == out.len()));
        }
    }

    let name = http::header::AUTHORIZATION;
    let view = RouteView {
        token_header: &name,
        keep_callers: piece % 3 == 0,
        upstream_authority: "upstream.example:8080",
        upstream_port: 8080,
        listen: "127.0.0.1:8081".parse().unwrap(),
        verify: None,
        claim_headers: &[],
    };
    let mut headers = forward::header_slots();
    let Ok(Some((head_len, req))) = forward::parse_head(data, &mut headers) else {
        return;
    };
    assert!(head_len <= data.len());
    if let Ok(plan) = forward::plan(&req, &view) {
        let rewrite = Rewrite {
            host: b"upstream.example:8080",
            base_path: b"/base",
            inject: plan.inject.then_some((&name, &b"Bearer t0ken"[..])),
            claims: &[],
        };
        let mut out = Vec::new();
        let at = write_upstream_head(&req, &plan, &rewrite, &mut out);
        let mut again = [httparse::EMPTY_HEADER; MAX_HEADERS + 4];
        let mut up = httparse::Request::new(&mut again);
        assert!(matches!(up.parse(&out), Ok(httparse::Status::Complete(n)) if n == out.len()));
        assert_eq!(up.method, req.method);
        assert_eq!(
            up.path.and_then(|p| p.strip_prefix("/base")),
            Some(plan.path_and_query)
        );
        let auth: Vec<_> = up
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("authorization"))
            .map(|h| h.value)
            .collect();
        if plan.inject {
            assert_eq!(auth, [&b"Bearer t0ken"[..]]);
            assert!(at.is_some_and(|at| out[at..].starts_with(b"authorization: Bearer t0ken")));
        }
        // No field the caller's Connection names, and no framing field dropped.
        for h in up.headers.iter() {
            assert!(!h.name.eq_ignore_ascii_case("connection") || plan.websocket);
        }
        let lengths = |hs: &[httparse::Header<'_>]| {
            hs.iter()
                .filter(|h| h.name.eq_ignore_ascii_case("content-length"))
                .count()
        };
        assert_eq!(lengths(up.headers), lengths(req.headers));
    }
});
