//! The lean path's HTTP/1.1 wire code on arbitrary bytes: request and response heads parse or
//! are refused, never a panic; a request it takes is rewritten into a head that parses again
//! with the same method, path and token; and the chunked-body scanner gives the same answer
//! whether the body comes whole or in pieces.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokenproxy::h1::wire::{
    parse_request, parse_response, write_upstream_head, ChunkedScanner, Parsed, Rewrite,
    MAX_HEADERS,
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

fuzz_target!(|data: &[u8]| {
    let Some((&piece, data)) = data.split_first() else { return };

    let whole = scan(data, data.len());
    let pieces = scan(data, usize::from(piece));
    // Where an error is found may differ by piece size only in how much was consumed before it.
    assert_eq!((whole.1, whole.2), (pieces.1, pieces.2));
    if !whole.2 {
        assert_eq!(whole.0, pieces.0);
    }

    let _ = parse_response(data, piece % 2 == 0);

    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let (parsed, req) = parse_request(data, &mut headers);
    if let (Parsed::Done(head), Some(req)) = (parsed, req) {
        assert!(head.head_len <= data.len());
        let name = http::header::AUTHORIZATION;
        let rewrite = Rewrite {
            host: b"upstream.example:8080",
            base_path: b"/base",
            inject: Some((&name, b"Bearer t0ken")),
        };
        let mut out = Vec::new();
        write_upstream_head(&req, &rewrite, &mut out);
        let mut again = [httparse::EMPTY_HEADER; MAX_HEADERS + 2];
        let mut up = httparse::Request::new(&mut again);
        assert!(matches!(up.parse(&out), Ok(httparse::Status::Complete(n)) if n == out.len()));
        assert_eq!(up.method, req.method);
        assert_eq!(up.path.map(|p| p.strip_prefix("/base").unwrap_or("")), req.path);
        let auth: Vec<_> = up
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("authorization"))
            .map(|h| h.value)
            .collect();
        assert_eq!(auth, [&b"Bearer t0ken"[..]]);
    }
});
