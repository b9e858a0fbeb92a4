//! The arithmetic of the report: medians, ratios, busy and steal shares, capacity, MiB, the
//! refresh counters and schedule. Each returns the text the report prints, formatted as the
//! awk did.

use crate::inputs::RefreshRound;
use crate::num::{awk_num, fixed, int};

/// The median: the middle value of an odd count, the mean of the two middle ones of an even
/// count; `None` for no values.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// `a / b` to two decimals, "0.00" when `b` is not positive.
pub fn ratio(a: f64, b: f64) -> String {
    fixed(if b > 0.0 { a / b } else { 0.0 }, 2)
}

/// Requests per second of CPU (1e6 / µs per request), "0" when `us_per_req` is not positive.
pub fn capacity(us_per_req: f64) -> String {
    fixed(
        if us_per_req > 0.0 {
            1e6 / us_per_req
        } else {
            0.0
        },
        0,
    )
}

/// How busy a core was between two `/proc/stat` samples (total and idle ticks), in whole
/// percent rounded half up; 0 when no time passed.
pub fn busy(total0: f64, idle0: f64, total1: f64, idle1: f64) -> String {
    let dt = total1 - total0;
    let b = if dt > 0.0 {
        100.0 * (dt - (idle1 - idle0)) / dt
    } else {
        0.0
    };
    int(b + 0.5)
}

/// The share of the time between two samples (total and steal ticks) that the hypervisor took,
/// in percent to one decimal; 0.0 when no time passed.
pub fn stolen(total0: f64, steal0: f64, total1: f64, steal1: f64) -> String {
    let dt = total1 - total0;
    fixed(
        if dt > 0.0 {
            100.0 * (steal1 - steal0) / dt
        } else {
            0.0
        },
        1,
    )
}

/// KiB as MiB to one decimal.
pub fn mib(kib: f64) -> String {
    fixed(kib / 1024.0, 1)
}

/// Token fetches the refresh schedule expects in `elapsed` seconds of tokens living `lifetime`
/// seconds: one per 77.5% of the lifetime (80% less half of the up-to-5% jitter).
pub fn expected_refreshes(elapsed: f64, lifetime: f64) -> String {
    fixed(elapsed / (lifetime * 0.775), 0)
}

/// Seconds of the refresh runs so far: `elapsed` plus one run from `start` to `end` (epoch
/// seconds), rounded to one decimal at each step as the running total always was.
pub fn add_elapsed(elapsed: f64, start: f64, end: f64) -> String {
    fixed(elapsed + end - start, 1)
}

/// The refresh set's counters summed over its rounds.
#[derive(Debug, PartialEq)]
pub struct RefreshTotals {
    /// Fetches of the steady tokenproxy (1 h tokens) during its runs.
    pub steady_fetches: i64,
    /// Fetches of tokenproxy-refresh, and how many of them failed.
    pub fetches: i64,
    pub failed: i64,
    /// Token requests the 2 s issuer answered during tokenproxy-refresh's runs.
    pub issued: i64,
    /// Seconds of those runs, as printed ("0" before any round).
    pub elapsed: String,
}

pub fn refresh_totals(rounds: &[RefreshRound]) -> RefreshTotals {
    let mut t = RefreshTotals {
        steady_fetches: 0,
        fetches: 0,
        failed: 0,
        issued: 0,
        elapsed: "0".to_string(),
    };
    for r in rounds {
        t.steady_fetches += r.steady_after - r.steady_before;
        t.elapsed = add_elapsed(awk_num(&t.elapsed), r.start, r.end);
        t.issued += r.issuer_after - r.issuer_before;
        let all = r.fetches_after - r.fetches_before;
        t.fetches += all;
        t.failed += all - (r.ok_after - r.ok_before);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_count_is_the_middle_value() {
        assert_eq!(median(&[5.0]), Some(5.0));
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[1568.0, 1554.0, 9.0, 2000.0, 1.0]), Some(1554.0));
    }

    #[test]
    fn median_of_even_count_is_the_mean_of_the_middle_two() {
        assert_eq!(median(&[1.0, 2.0]), Some(1.5));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        // Printed with %.0f the tie goes to even, as glibc's printf did.
        assert_eq!(fixed(median(&[248.0, 249.0]).unwrap_or(0.0), 0), "248");
    }

    #[test]
    fn median_of_nothing_is_none() {
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn ratio_rounds_to_two_decimals_and_guards_zero() {
        assert_eq!(ratio(26304.0, 57736.0), "0.46");
        assert_eq!(ratio(1.0, 0.0), "0.00");
        assert_eq!(ratio(1.0, -1.0), "0.00");
        assert_eq!(ratio(0.0, 3.0), "0.00");
    }

    #[test]
    fn capacity_is_a_million_over_cpu_per_request() {
        assert_eq!(capacity(32.1), "31153");
        assert_eq!(capacity(0.0), "0");
    }

    #[test]
    fn busy_is_the_non_idle_share_rounded_half_up() {
        // 202 ticks, 148 idle: 26.73% -> 27
        assert_eq!(busy(196_148.0, 96_558.0, 196_350.0, 96_706.0), "27");
        assert_eq!(busy(0.0, 0.0, 200.0, 101.0), "50"); // 49.5 -> 50
        assert_eq!(busy(0.0, 0.0, 200.0, 102.0), "49");
        assert_eq!(busy(0.0, 0.0, 100.0, 100.0), "0");
        assert_eq!(busy(5.0, 0.0, 5.0, 0.0), "0"); // no time passed
    }

    #[test]
    fn stolen_is_the_steal_share_to_one_decimal() {
        assert_eq!(stolen(196_350.0, 40.0, 200_987.0, 49.0), "0.2");
        assert_eq!(stolen(0.0, 0.0, 1000.0, 55.0), "5.5");
        assert_eq!(stolen(7.0, 1.0, 7.0, 9.0), "0.0");
    }

    #[test]
    fn mib_is_kib_over_1024() {
        assert_eq!(mib(29012.0), "28.3");
        assert_eq!(mib(20480.0), "20.0");
        assert_eq!(mib(0.0), "0.0");
    }

    #[test]
    fn expected_refreshes_follow_77_5_percent_of_the_lifetime() {
        assert_eq!(expected_refreshes(40.3, 2.0), "26");
        assert_eq!(expected_refreshes(3.1, 2.0), "2");
    }

    #[test]
    fn elapsed_is_rounded_at_each_step() {
        let one = add_elapsed(0.0, 1_796_404_123.554_351_9, 1_796_404_126.636_909);
        assert_eq!(one, "3.1");
        // 3.1 + 2.04 = 5.14 -> 5.1, not the 5.12 an unrounded sum would round from
        assert_eq!(add_elapsed(3.1, 10.0, 12.04), "5.1");
    }

    fn round(
        steady: (i64, i64),
        fetches: (i64, i64),
        ok: (i64, i64),
        issuer: (i64, i64),
        secs: (f64, f64),
    ) -> RefreshRound {
        RefreshRound {
            steady_before: steady.0,
            steady_after: steady.1,
            fetches_before: fetches.0,
            fetches_after: fetches.1,
            ok_before: ok.0,
            ok_after: ok.1,
            issuer_before: issuer.0,
            issuer_after: issuer.1,
            start: secs.0,
            end: secs.1,
        }
    }

    #[test]
    fn refresh_totals_sum_the_rounds() {
        let t = refresh_totals(&[
            round((50, 50), (4, 7), (4, 6), (4, 7), (100.0, 105.04)),
            round((50, 51), (7, 10), (6, 9), (7, 10), (120.0, 125.04)),
        ]);
        assert_eq!(
            t,
            RefreshTotals {
                steady_fetches: 1,
                fetches: 6,
                failed: 1,
                issued: 6,
                // 5.04 s is kept as 5.0, then 5.0 + 5.04 as 10.0 (not the 10.1 of 10.08)
                elapsed: "10.0".to_string(),
            }
        );
    }

    #[test]
    fn no_refresh_rounds_print_zero_seconds() {
        assert_eq!(refresh_totals(&[]).elapsed, "0");
    }
}
