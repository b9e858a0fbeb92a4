//! The targets of bench/README.md as rules: each takes the figure the report shows (read back
//! from its printed text, so a ratio is judged to two decimals) and says whether it passes.

/// tokenproxy req/s ≥ 0.95 × bare-pingora req/s.
pub fn within_bare_pingora(ratio: f64) -> bool {
    ratio >= 0.95
}

/// tokenproxy req/s ≥ 1.1 × nginx req/s (64 connections, or each held to half a CPU), and
/// nginx cpu/req ≥ 1.1 × tokenproxy cpu/req (capacity).
pub fn beats_nginx(ratio: f64) -> bool {
    ratio >= 1.1
}

/// When `direct`, the ceiling of every proxy row, is itself under 1.1 × nginx, the
/// throughput target cannot pass on this machine, and the report says so.
pub fn nginx_target_out_of_reach(direct_rps: f64, nginx_rps: f64) -> bool {
    direct_rps < 1.1 * nginx_rps
}

/// Median over the rounds of tokenproxy p99 / nginx p99 ≤ 1.
pub fn p99_within_nginx(ratio: f64) -> bool {
    ratio <= 1.0
}

/// tokenproxy p50 − direct p50 at 1 connection ≤ 100 µs.
pub fn added_p50_ok(added_us: f64) -> bool {
    added_us <= 100.0
}

/// tokenproxy's p50 added over direct at 1 connection ≤ nginx's.
pub fn added_p50_within_nginx(tokenproxy_us: i64, nginx_us: i64) -> bool {
    tokenproxy_us <= nginx_us
}

/// No errors in any run of any row, kept or measured again.
pub fn zero_errors(errors: f64) -> bool {
    errors == 0.0
}

/// Idle RSS with 50 routes ≤ 20 MiB.
pub fn idle_rss_ok(kib: f64) -> bool {
    kib <= 20.0 * 1024.0
}

/// Peak RSS over the 64-connection set ≤ 64 MiB.
pub fn load_rss_ok(kib: f64) -> bool {
    kib <= 64.0 * 1024.0
}

/// Median over the rounds of tokenproxy-refresh p99 / tokenproxy p99 ≤ 1.1.
pub fn refresh_p99_ok(ratio: f64) -> bool {
    ratio <= 1.10
}

/// The 2 s issuer answered at least one and at most one token request per second of the
/// refresh runs, and the 1 h issuer none during all the load.
pub fn token_requests_follow_refreshes(
    short_issued: f64,
    elapsed_secs: f64,
    long_issued: f64,
) -> bool {
    short_issued >= 1.0 && short_issued <= elapsed_secs && long_issued == 0.0
}

/// One target line: verdict, description padded to 52 bytes, the figure as shown.
pub fn line(pass: bool, description: &str, shown: &str) -> String {
    let verdict = if pass { "PASS" } else { "FAIL" };
    format!("{verdict}  {} {shown}\n", crate::num::left(description, 52))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::num::awk_num;

    #[test]
    fn bare_pingora_target_passes_from_0_95() {
        assert!(within_bare_pingora(awk_num("0.95")));
        assert!(!within_bare_pingora(awk_num("0.94")));
    }

    #[test]
    fn nginx_targets_pass_from_1_10() {
        assert!(beats_nginx(awk_num("1.10")));
        assert!(!beats_nginx(awk_num("1.09")));
    }

    #[test]
    fn out_of_reach_when_direct_is_under_1_1_nginx() {
        assert!(nginx_target_out_of_reach(1099.0, 1000.0));
        assert!(!nginx_target_out_of_reach(1100.0, 1000.0));
        assert!(!nginx_target_out_of_reach(1101.0, 1000.0));
        // In doubles 1.1 × 100 is a hair above 110, as it was in awk.
        assert!(nginx_target_out_of_reach(110.0, 100.0));
    }

    #[test]
    fn p99_target_passes_up_to_1_00() {
        assert!(p99_within_nginx(awk_num("1.00")));
        assert!(!p99_within_nginx(awk_num("1.01")));
        // No pairs at all prints "0", which passes: the report shows the empty rounds.
        assert!(p99_within_nginx(awk_num("0")));
    }

    #[test]
    fn added_p50_passes_up_to_100_us() {
        assert!(added_p50_ok(100.0));
        assert!(!added_p50_ok(101.0));
        assert!(added_p50_ok(-6.0));
    }

    #[test]
    fn added_p50_within_nginx_passes_up_to_equal() {
        assert!(added_p50_within_nginx(40, 40));
        assert!(added_p50_within_nginx(-3, 40));
        assert!(!added_p50_within_nginx(41, 40));
    }

    #[test]
    fn errors_pass_only_at_zero() {
        assert!(zero_errors(0.0));
        assert!(!zero_errors(1.0));
    }

    #[test]
    fn rss_targets_pass_up_to_their_mib() {
        assert!(idle_rss_ok(20480.0));
        assert!(!idle_rss_ok(20481.0));
        assert!(load_rss_ok(65536.0));
        assert!(!load_rss_ok(65537.0));
    }

    #[test]
    fn refresh_p99_passes_up_to_1_10() {
        assert!(refresh_p99_ok(awk_num("1.10")));
        assert!(!refresh_p99_ok(awk_num("1.11")));
    }

    #[test]
    fn token_requests_need_one_to_one_per_second_and_none_at_the_1h_issuer() {
        assert!(token_requests_follow_refreshes(1.0, 3.1, 0.0));
        assert!(token_requests_follow_refreshes(3.0, 3.1, 0.0));
        assert!(!token_requests_follow_refreshes(0.0, 3.1, 0.0));
        assert!(!token_requests_follow_refreshes(4.0, 3.1, 0.0));
        assert!(!token_requests_follow_refreshes(2.0, 3.1, 1.0));
        assert!(token_requests_follow_refreshes(40.0, 40.0, 0.0));
    }

    #[test]
    fn a_line_pads_the_description_in_bytes() {
        assert_eq!(
            line(false, "req/s >= 1.1 × nginx (64 conns)", "0.46 × nginx"),
            "FAIL  req/s >= 1.1 × nginx (64 conns)                     0.46 × nginx\n"
        );
        assert_eq!(
            line(true, "x", "y"),
            format!("PASS  x{} y\n", " ".repeat(51))
        );
    }
}
