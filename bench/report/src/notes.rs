//! The notes under the targets: rows whose figures measured something besides the proxy.

use std::fmt::Write as _;

use crate::aggregate::Row;
use crate::num::{awk_num, fixed, int};

/// Notes on rows whose figures measured something besides the proxy: a saturated load core,
/// a proxy core much busier than the proxy, steal of 3% or more (one line per set).
pub fn notes(rows: &[Row], pc: &str, lc: &str) -> String {
    let mut o = String::new();
    let mut stolen_sets: Vec<(&str, String)> = Vec::new();
    for r in rows {
        let (cpu_p, cpu_l) = (awk_num(&r.cpu_proxy), awk_num(&r.cpu_load));
        let proc_pct = awk_num(&r.proc_pct);
        let (st_p, st_l) = (awk_num(&r.steal_proxy), awk_num(&r.steal_load));
        if r.row != "direct" {
            if cpu_l >= 97.0 {
                let _ = writeln!(
                    o,
                    "note: {}/{}: cpu{lc} (load) was {}% busy: the row may be limited by wrk and the upstream",
                    r.set,
                    r.row,
                    int(cpu_l)
                );
            }
            if r.set != "small-1" && cpu_p - proc_pct - st_p > 15.0 {
                let _ = writeln!(
                    o,
                    "note: {}/{}: cpu{pc} was {}% busy but the proxy used {}%: something else ran there",
                    r.set,
                    r.row,
                    int(cpu_p),
                    int(proc_pct)
                );
            }
        }
        if st_p >= 3.0 || st_l >= 3.0 {
            let entry = format!(" {} {}/{}", r.row, fixed(st_p, 1), fixed(st_l, 1));
            match stolen_sets.iter_mut().find(|(s, _)| *s == r.set) {
                Some((_, list)) => list.push_str(&entry),
                None => stolen_sets.push((&r.set, entry)),
            }
        }
    }
    for (set, list) in stolen_sets {
        let _ = writeln!(
            o,
            "note: {set}: steal of 3% or more (cpu{pc}/cpu{lc} %):{list}; those rows measured the host too"
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(
        set: &str,
        name: &str,
        cpu_p: &str,
        cpu_l: &str,
        proc_pct: &str,
        st: (&str, &str),
    ) -> Row {
        let s = |v: &str| v.to_string();
        Row {
            set: s(set),
            row: s(name),
            rps: s("1"),
            p50: s("1"),
            p99: s("1"),
            max: s("1"),
            errors: s("0"),
            mibs: s("0.0"),
            cpu_proxy: s(cpu_p),
            cpu_load: s(cpu_l),
            each: s("1"),
            rss: s("1"),
            requests: s("1"),
            us_req: s("1.0"),
            proc_pct: s(proc_pct),
            steal_proxy: s(st.0),
            steal_load: s(st.1),
            sleeps: None,
            p90: None,
            p999: None,
        }
    }

    #[test]
    fn a_load_core_at_97_percent_or_more_is_noted_except_for_direct() {
        let n = notes(
            &[row("small-64", "nginx", "50", "97", "50", ("0.0", "0.0"))],
            "0",
            "1",
        );
        assert_eq!(
            n,
            "note: small-64/nginx: cpu1 (load) was 97% busy: the row may be limited by wrk and the upstream\n"
        );
        assert_eq!(
            notes(
                &[row("small-64", "nginx", "50", "96", "50", ("0.0", "0.0"))],
                "0",
                "1"
            ),
            ""
        );
        assert_eq!(
            notes(
                &[row("small-64", "direct", "50", "100", "50", ("0.0", "0.0"))],
                "0",
                "1"
            ),
            ""
        );
    }

    #[test]
    fn a_proxy_core_busier_than_proxy_and_steal_by_over_15_points_is_noted_except_at_1_connection()
    {
        // 90 - 70 - 4.0 = 16 > 15
        let busy = row("4k", "tokenproxy", "90", "50", "70", ("4.0", "0.0"));
        let n = notes(std::slice::from_ref(&busy), "0", "1");
        assert!(n.starts_with("note: 4k/tokenproxy: cpu0 was 90% busy but the proxy used 70%: something else ran there\n"), "{n}");
        // 90 - 70 - 5.0 = 15: not over
        let n = notes(
            &[row("4k", "tokenproxy", "90", "50", "70", ("5.0", "0.0"))],
            "0",
            "1",
        );
        assert!(!n.contains("something else"), "{n}");
        let n = notes(
            &[row(
                "small-1",
                "tokenproxy",
                "90",
                "50",
                "10",
                ("0.0", "0.0"),
            )],
            "0",
            "1",
        );
        assert_eq!(n, "");
    }

    #[test]
    fn steal_of_3_percent_or_more_is_listed_once_per_set() {
        let rows = [
            row("small-64", "direct", "1", "1", "1", ("3.0", "0.0")),
            row("small-64", "nginx", "1", "1", "1", ("2.9", "2.9")),
            row("small-64", "tokenproxy", "1", "1", "1", ("0.0", "12.5")),
            row("1m", "nginx", "1", "1", "1", ("0.1", "3.0")),
        ];
        assert_eq!(
            notes(&rows, "0", "1"),
            "note: small-64: steal of 3% or more (cpu0/cpu1 %): direct 3.0/0.0 tokenproxy 0.0/12.5; those rows measured the host too\n\
             note: 1m: steal of 3% or more (cpu0/cpu1 %): nginx 0.1/3.0; those rows measured the host too\n"
        );
    }
}
