//! The one table of answers the proxy gives itself: for each reason a request is not forwarded
//! (or its exchange failed), the status, the JSON `error` and the metric label. Both request
//! paths render these; neither spells a status or an error string of its own.

use bytes::Bytes;

use crate::metrics::METRICS;

/// Why the proxy answers a request itself instead of relaying the upstream's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The head could not be parsed, or broke a rule with no answer of its own.
    BadRequest,
    /// `Host` missing (HTTP/1.1) or repeated.
    InvalidHost,
    /// A request target with a byte outside RFC 3986's set, a fragment, or an unusable form.
    InvalidTarget,
    /// `Content-Length` repeated, listed twice, or not a number.
    InvalidContentLength,
    /// Both `Content-Length` and `Transfer-Encoding`, or `Transfer-Encoding` in HTTP/1.0.
    ConflictingFraming,
    /// `Connection` names a field that frames or routes the request, or is malformed.
    InvalidConnection,
    /// A transfer coding other than `chunked`.
    UnsupportedTransferEncoding,
    /// An `Expect` other than `100-continue`.
    ExpectationFailed,
    /// `CONNECT`: this is not a forward proxy.
    MethodNotAllowed,
    /// The head, or its fields, are too large.
    HeadersTooLarge,
    /// An absolute-form target for a host other than this route's.
    Misdirected,
    /// No route serves the listener (it was removed by a reload).
    RouteNotConfigured,
    /// No usable token: the request is not forwarded (fail closed).
    TokenUnavailable,
    /// A verify route: no bearer token (401, a challenge without `error`).
    MissingToken,
    /// A verify route: the bearer token failed a check (401 `invalid_token`).
    InvalidToken,
    /// A verify route: the token lacks a scope the request needs (403).
    InsufficientScope,
    UpstreamConnect,
    UpstreamTimeout,
    UpstreamTls,
    /// The upstream's answer could not be relayed, or the exchange broke.
    UpstreamOther,
    Internal,
}

impl Answer {
    pub fn status(self) -> u16 {
        match self {
            Answer::BadRequest
            | Answer::InvalidHost
            | Answer::InvalidTarget
            | Answer::InvalidContentLength
            | Answer::ConflictingFraming
            | Answer::InvalidConnection => 400,
            Answer::MissingToken | Answer::InvalidToken => 401,
            Answer::InsufficientScope => 403,
            Answer::MethodNotAllowed => 405,
            Answer::ExpectationFailed => 417,
            Answer::Misdirected => 421,
            Answer::HeadersTooLarge => 431,
            Answer::Internal => 500,
            Answer::UnsupportedTransferEncoding => 501,
            Answer::UpstreamConnect | Answer::UpstreamTls | Answer::UpstreamOther => 502,
            Answer::RouteNotConfigured | Answer::TokenUnavailable => 503,
            Answer::UpstreamTimeout => 504,
        }
    }

    /// The JSON body's `error`.
    pub fn error(self) -> &'static str {
        match self {
            Answer::BadRequest => "bad_request",
            Answer::InvalidHost => "invalid_host",
            Answer::InvalidTarget => "invalid_target",
            Answer::InvalidContentLength => "invalid_content_length",
            Answer::ConflictingFraming => "conflicting_framing",
            Answer::InvalidConnection => "invalid_connection_header",
            Answer::UnsupportedTransferEncoding => "unsupported_transfer_encoding",
            Answer::ExpectationFailed => "expectation_failed",
            Answer::MethodNotAllowed => "method_not_allowed",
            Answer::HeadersTooLarge => "request_headers_too_large",
            Answer::Misdirected => "misdirected_request",
            Answer::RouteNotConfigured => "route_not_configured",
            Answer::TokenUnavailable => "token_unavailable",
            Answer::MissingToken => "missing_token",
            Answer::InvalidToken => "invalid_token",
            Answer::InsufficientScope => "insufficient_scope",
            Answer::UpstreamConnect => "upstream_connect_failed",
            Answer::UpstreamTimeout => "upstream_timeout",
            Answer::UpstreamTls => "upstream_tls_failed",
            Answer::UpstreamOther => "upstream_error",
            Answer::Internal => "internal_error",
        }
    }

    /// The `kind` label of `tokenproxy_upstream_errors_total`, for the upstream's failures.
    pub fn upstream_kind(self) -> Option<&'static str> {
        match self {
            Answer::UpstreamConnect => Some("connect"),
            Answer::UpstreamTimeout => Some("timeout"),
            Answer::UpstreamTls => Some("tls"),
            Answer::UpstreamOther => Some("other"),
            _ => None,
        }
    }

    /// Counts an upstream failure in `tokenproxy_upstream_errors_total`; nothing for the others.
    pub fn count_upstream(self, route: &str) {
        if let Some(kind) = self.upstream_kind() {
            METRICS
                .upstream_errors
                .with_label_values(&[route, kind])
                .inc();
        }
    }

    /// The JSON body: `{"error": ..., "route": ..., "reason": ...}` (`reason` only when known).
    pub fn body(self, route: &str, reason: Option<&str>) -> Bytes {
        let mut v = serde_json::json!({ "error": self.error(), "route": route });
        if let Some(r) = reason {
            v["reason"] = serde_json::Value::from(r);
        }
        Bytes::from(v.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_answer_has_a_distinct_error_and_a_4xx_or_5xx_status() {
        let all = [
            Answer::BadRequest,
            Answer::InvalidHost,
            Answer::InvalidTarget,
            Answer::InvalidContentLength,
            Answer::ConflictingFraming,
            Answer::InvalidConnection,
            Answer::UnsupportedTransferEncoding,
            Answer::ExpectationFailed,
            Answer::MethodNotAllowed,
            Answer::HeadersTooLarge,
            Answer::Misdirected,
            Answer::RouteNotConfigured,
            Answer::TokenUnavailable,
            Answer::MissingToken,
            Answer::InvalidToken,
            Answer::InsufficientScope,
            Answer::UpstreamConnect,
            Answer::UpstreamTimeout,
            Answer::UpstreamTls,
            Answer::UpstreamOther,
            Answer::Internal,
        ];
        let mut errors: Vec<_> = all.iter().map(|a| a.error()).collect();
        errors.sort_unstable();
        errors.dedup();
        assert_eq!(errors.len(), all.len());
        assert!(all.iter().all(|a| (400..600).contains(&a.status())));
    }

    #[test]
    fn body_names_the_route_and_the_reason() {
        let body = Answer::TokenUnavailable.body("api", Some("idp_unreachable"));
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"], "token_unavailable");
        assert_eq!(v["route"], "api");
        assert_eq!(v["reason"], "idp_unreachable");
        let v: serde_json::Value =
            serde_json::from_slice(&Answer::InvalidHost.body("api", None)).unwrap();
        assert!(v.get("reason").is_none());
    }
}
