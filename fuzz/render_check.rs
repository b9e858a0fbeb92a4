//! One request head, rendered both ways: the lean path's upstream bytes
//! (`h1::wire::write_upstream_head`) and pingora's `RequestHeader` as `proxy::Forward::render`
//! leaves it, serialised by pingora. Both come from the same plan; the check fails when they
//! send a different request line or a different multiset of fields. Shared by the fuzz target
//! `forward_render` and the test `tests/render.rs`.

use http::{HeaderName, HeaderValue};
use pingora::http::RequestHeader;
use pingora::protocols::http::v1::client::http_req_header_to_wire;
use tokenproxy::forward::{self, RouteView};
use tokenproxy::h1::wire::{write_upstream_head, Rewrite};
use tokenproxy::proxy::Forward;

const HOST: &str = "api.example:8443";
const BASE: &str = "/base";
const TOKEN: &str = "Bearer t0ken";

/// A request as the upstream would read it: request line, then the fields' multiset.
fn as_upstream_reads(bytes: &[u8]) -> (String, Vec<(String, Vec<u8>)>) {
    let mut headers = [httparse::EMPTY_HEADER; forward::MAX_HEADERS + 4];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(bytes) {
        Ok(httparse::Status::Complete(n)) => assert_eq!(n, bytes.len(), "trailing bytes"),
        other => panic!("the rendered head does not parse: {other:?}: {bytes:?}"),
    }
    let line = format!(
        "{} {} HTTP/1.{}",
        req.method.unwrap_or(""),
        req.path.unwrap_or(""),
        req.version.unwrap_or(9)
    );
    let mut fields: Vec<_> = req
        .headers
        .iter()
        .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
        .collect();
    fields.sort();
    (line, fields)
}

/// Renders `data` (when it is a head the policy accepts) both ways and compares.
/// `keep_callers` is the route's `existing: keep`.
pub fn check(data: &[u8], keep_callers: bool) {
    let token_header = HeaderName::from_static("authorization");
    let view = RouteView {
        token_header: &token_header,
        keep_callers,
        upstream_authority: HOST,
        upstream_port: 8443,
        listen: "127.0.0.1:8081".parse().unwrap(),
        verify: None,
        claim_headers: &[],
    };
    let mut headers = forward::header_slots();
    let Ok(Some((_, req))) = forward::parse_head(data, &mut headers) else {
        return;
    };
    let Ok(plan) = forward::plan(&req, &view) else {
        return;
    };

    let rewrite = Rewrite {
        host: HOST.as_bytes(),
        base_path: BASE.as_bytes(),
        inject: plan.inject.then_some((&token_header, TOKEN.as_bytes())),
        claims: &[],
    };
    let mut lean = Vec::new();
    write_upstream_head(&req, &plan, &rewrite, &mut lean);

    // The header pingora's server builds from the same bytes.
    let Ok(mut header) = RequestHeader::build(
        req.method.unwrap_or(""),
        req.path.unwrap_or("").as_bytes(),
        Some(req.headers.len()),
    ) else {
        return;
    };
    header.set_version(if req.version == Some(0) {
        http::Version::HTTP_10
    } else {
        http::Version::HTTP_11
    });
    for h in req.headers.iter() {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_bytes(h.value),
        ) else {
            return;
        };
        header.append_header(name, value).unwrap();
    }
    let forward = Forward::new(&plan, header.headers.keys());
    let token = plan
        .inject
        .then(|| (&token_header, HeaderValue::from_static(TOKEN)));
    forward
        .render(&mut header, HeaderValue::from_static(HOST), BASE, token)
        .expect("pingora's rendering failed on a head the policy accepted");
    let pingora = http_req_header_to_wire(&header).expect("pingora cannot serialise the head");

    let lean_view = as_upstream_reads(&lean);
    let pingora_view = as_upstream_reads(&pingora);
    assert_eq!(
        lean_view,
        pingora_view,
        "the paths disagree on {:?}",
        String::from_utf8_lossy(data)
    );
}
