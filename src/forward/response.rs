//! The response policy both request paths apply to an upstream's answer: which statuses can be
//! relayed, and how a head that frames its body twice is relayed.

use super::Answer;

/// Whether an upstream response with `status` may be relayed to the caller. A status outside
/// 100..=599 is not HTTP; a `101 Switching Protocols` the request did not ask for (only a
/// WebSocket handshake does) would turn the caller's connection into a raw tunnel.
pub fn check_status(status: u16, websocket: bool) -> Result<(), Answer> {
    if !(100..=599).contains(&status) || (status == 101 && !websocket) {
        return Err(Answer::UpstreamOther);
    }
    Ok(())
}

/// With both `Transfer-Encoding` and `Content-Length`, the transfer coding frames the body and
/// the `Content-Length` field is removed before the head is relayed (RFC 9112 §6.3); the
/// upstream connection it came on is not reused.
pub fn drops_content_length(has_transfer_encoding: bool, has_content_length: bool) -> bool {
    has_transfer_encoding && has_content_length
}

/// Whether a field value carries an obsolete line folding (a line break inside the value).
pub fn is_folded(value: &[u8]) -> bool {
    value.iter().any(|&b| b == b'\r' || b == b'\n')
}

/// Appends `value` to `out` with each obsolete line folding (a line break and the white space
/// after it) replaced by one space, as a proxy must before forwarding it (RFC 9112 §5.2).
pub fn unfold(value: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < value.len() {
        let b = value[i];
        if b == b'\r' || b == b'\n' {
            while i < value.len() && matches!(value[i], b'\r' | b'\n' | b' ' | b'\t') {
                i += 1;
            }
            out.push(b' ');
            continue;
        }
        out.push(b);
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folded_values_become_one_line() {
        let mut out = Vec::new();
        unfold(b"a\r\n  b\r\n\tc", &mut out);
        assert_eq!(out, b"a b c");
        assert!(is_folded(b"a\r\n b"));
        assert!(!is_folded(b"a b"));
    }

    #[test]
    fn statuses() {
        for (status, websocket, ok) in [
            (99, false, false),
            (100, false, true),
            (101, false, false),
            (101, true, true),
            (200, false, true),
            (599, false, true),
            (600, false, false),
            (0, false, false),
        ] {
            assert_eq!(
                check_status(status, websocket).is_ok(),
                ok,
                "{status} {websocket}"
            );
        }
    }
}
