//! The token-response parser (status, headers, body) on arbitrary input: a token or an error,
//! never a panic. Also the JWT `exp` reader and the Auth0 quota header parser.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokenproxy::token::client::{jwt_exp, parse_quota, parse_response};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    let status = match selector % 6 {
        0 => 200,
        1 => 400,
        2 => 401,
        3 => 429,
        4 => 500,
        _ => 100 + u16::from(selector),
    };
    let Ok(status) = http::StatusCode::from_u16(status) else { return };
    // The first line, if any, is a Retry-After / quota header value.
    let (header_line, body) = match rest.iter().position(|b| *b == b'\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (&[][..], rest),
    };
    let mut headers = http::HeaderMap::new();
    if let Ok(v) = http::HeaderValue::from_bytes(header_line) {
        headers.insert(http::header::RETRY_AFTER, v.clone());
        headers.insert("auth0-client-quota-limit", v);
    }
    let _ = parse_response(status, &headers, body);
    if let Ok(text) = std::str::from_utf8(body) {
        let _ = jwt_exp(text);
        let _ = parse_quota(text);
    }
});
