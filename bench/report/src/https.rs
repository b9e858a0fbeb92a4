//! The https section of the report and its targets: the rows to an `https://` upstream at 64
//! and at 1 connection, what TLS cost tokenproxy in connections and handshakes (`tls.txt`,
//! counters read around the 64-connection set), and the h2 row beside them. Rendered only when
//! the run has the https sets.

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::aggregate::{paired, Table};
use crate::inputs::Run;
use crate::num::awk_num;
use crate::report::table;
use crate::stats::{capacity, ratio};
use crate::targets;

/// Whether the run measured https upstreams at all.
pub fn present(runs: &[Run]) -> bool {
    runs.iter().any(|r| r.set == "https-64")
}

/// `tls.txt`: `key=value` lines; a line without `=` is left out.
pub fn parse_counters(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), awk_num(v.trim())))
        .collect()
}

/// A counter's growth over the 64-connection set.
fn delta(c: &HashMap<String, f64>, route: &str, what: &str) -> i64 {
    let get = |when: &str| c.get(&format!("{when}_{route}_{what}")).copied();
    #[allow(clippy::cast_possible_truncation)] // counters
    match (get("before"), get("after")) {
        (Some(b), Some(a)) => (a - b) as i64,
        _ => 0,
    }
}

/// The p50 added over `direct-https` at 1 connection, whole µs.
fn added_p50(t: &Table<'_>, row: &str) -> i64 {
    let p50 = |row: &str| {
        t.get("https-1", row, |r| &r.p50)
            .parse::<i64>()
            .unwrap_or(0)
    };
    p50(row) - p50("direct-https")
}

/// Section 7.
pub fn section(o: &mut String, t: &Table<'_>, pc: &str, lc: &str, conns: &str, tls: &str) {
    let _ = writeln!(
        o,
        "\n7. https upstreams (the same nginx over TLS 1.3, sessions kept), {conns} connections"
    );
    let rows = [
        "direct-https",
        "nginx-https",
        "tokenproxy-https",
        "tokenproxy-h2",
    ];
    table(o, t, pc, lc, "https-64", &rows);
    let us = |row: &str| t.num("https-64", row, |r| &r.us_req);
    let _ = writeln!(
        o,
        "ratios (cpu/req): tokenproxy-https/nginx-https {}  tokenproxy-https/tokenproxy (http://, set 1) {}  tokenproxy-h2/tokenproxy-https {}",
        ratio(us("tokenproxy-https"), us("nginx-https")),
        ratio(us("tokenproxy-https"), t.num("small-64", "tokenproxy", |r| &r.us_req)),
        ratio(us("tokenproxy-h2"), us("tokenproxy-https"))
    );
    let _ = writeln!(
        o,
        "capacity (req/s per second of proxy CPU): tokenproxy-https {}  nginx-https {}  tokenproxy-h2 {}",
        capacity(us("tokenproxy-https")),
        capacity(us("nginx-https")),
        capacity(us("tokenproxy-h2"))
    );
    let c = parse_counters(tls);
    for (route, row) in [("https", "tokenproxy-https"), ("h2", "tokenproxy-h2")] {
        let _ = writeln!(
            o,
            "{row} during the set, warm-up included: {} requests; upstream connections opened: {} lean, {} pingora; lean TLS handshakes: {} full, {} resumed, {} failed; handoffs to pingora {}",
            delta(&c, route, "requests"),
            delta(&c, route, "opened_lean"),
            delta(&c, route, "opened_pingora"),
            delta(&c, route, "full"),
            delta(&c, route, "resumed"),
            delta(&c, route, "failed"),
            delta(&c, route, "handoffs")
        );
    }
    o.push_str("(nginx cannot proxy to h2: tokenproxy-h2 compares with the HTTP/1.1 https rows)\n");
    o.push_str("\n1 connection (the upstream beside the proxy, as in set 2)\n");
    table(
        o,
        t,
        pc,
        lc,
        "https-1",
        &["direct-https", "nginx-https", "tokenproxy-https"],
    );
    let _ = writeln!(
        o,
        "p50 added over direct-https:  nginx-https +{} µs  tokenproxy-https +{} µs",
        added_p50(t, "nginx-https"),
        added_p50(t, "tokenproxy-https")
    );
}

/// The https targets, for the targets list.
pub fn target_lines(o: &mut String, t: &Table<'_>, runs: &[Run]) {
    let tp = t.get("https-64", "tokenproxy-https", |r| &r.us_req);
    let nginx = t.get("https-64", "nginx-https", |r| &r.us_req);
    let r_cpu = ratio(awk_num(&nginx), awk_num(&tp));
    o.push_str(&targets::line(
        targets::beats_nginx(awk_num(&r_cpu)),
        "cpu/req <= nginx's / 1.1, https (64 conns)",
        &format!("{r_cpu} × nginx ({tp} vs {nginx} µs cpu/req)"),
    ));
    let (p99_m, rounds) = paired(runs, "https-64", "tokenproxy-https", "nginx-https");
    o.push_str(&targets::line(
        targets::p99_within_nginx(awk_num(&p99_m)),
        "p99 <= nginx p99, https (64 conns, paired)",
        &format!("{p99_m} × nginx (rounds:{})", rounds.join(" ")),
    ));
    let (tp_added, nginx_added) = (
        added_p50(t, "tokenproxy-https"),
        added_p50(t, "nginx-https"),
    );
    o.push_str(&targets::line(
        targets::added_p50_within_nginx(tp_added, nginx_added),
        "p50 added over direct <= nginx's, https (1 conn)",
        &format!("+{tp_added} vs +{nginx_added} µs"),
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_read_as_the_growth_over_the_set() {
        let c = parse_counters(
            "before_https_full=2\nbefore_https_resumed=0\nafter_https_full=66\nafter_https_resumed=3\nnoise\n",
        );
        assert_eq!(delta(&c, "https", "full"), 64);
        assert_eq!(delta(&c, "https", "resumed"), 3);
        // A counter the run did not record is shown as 0, not made up.
        assert_eq!(delta(&c, "h2", "full"), 0);
    }
}
