//! Per row set and row, the figures of the report's tables, from all the rounds in
//! `runs.tsv`: requests/s over all rounds, median p50/p99, the largest max, summed errors, and
//! the rest. Each is kept as the text the report prints; later arithmetic (ratios, capacity,
//! notes) reads that text back, as the script always did.

use crate::inputs::Run;
use crate::num::{awk_num, fixed, int};
use crate::stats::median;

/// The figures of one row in one set.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub set: String,
    pub row: String,
    /// Requests/s over all rounds.
    pub rps: String,
    /// Median of the rounds' p50 and p99, µs.
    pub p50: String,
    pub p99: String,
    /// Largest max latency, µs.
    pub max: String,
    pub errors: String,
    /// Response bytes as wrk read them, MiB/s.
    pub mibs: String,
    /// Mean busy share of the proxy's core and of the load core, %.
    pub cpu_proxy: String,
    pub cpu_load: String,
    /// Each round's requests/s, in order.
    pub each: String,
    /// Largest mid-run RSS, KiB.
    pub rss: String,
    pub requests: String,
    /// µs of CPU per request of the process under test.
    pub us_req: String,
    /// That process's CPU as % of one core.
    pub proc_pct: String,
    /// Mean steal shares, %.
    pub steal_proxy: String,
    pub steal_load: String,
    /// Times per second the process under test went to sleep with nothing to do (and had to be
    /// woken for the next request); `None` when a round lacks the count.
    pub sleeps: Option<String>,
    /// Median of the rounds' p90 and p99.9, µs; `None` when a round lacks them.
    pub p90: Option<String>,
    pub p999: Option<String>,
}

/// The rows in the order their first run appears.
pub fn aggregate(runs: &[Run]) -> Vec<Row> {
    let mut keys: Vec<(&str, &str)> = Vec::new();
    for r in runs {
        if !keys.contains(&(r.set.as_str(), r.row.as_str())) {
            keys.push((r.set.as_str(), r.row.as_str()));
        }
    }
    keys.into_iter()
        .map(|(set, row)| {
            let rs: Vec<&Run> = runs
                .iter()
                .filter(|r| r.set == set && r.row == row)
                .collect();
            one(set, row, &rs)
        })
        .collect()
}

fn one(set: &str, row: &str, rs: &[&Run]) -> Row {
    let sum = |f: fn(&Run) -> f64| rs.iter().map(|r| f(r)).sum::<f64>();
    // Never below 0: the script's running maximum started from an unset (0) value.
    let most = |f: fn(&Run) -> f64| rs.iter().map(|r| f(r)).fold(0.0, f64::max);
    #[allow(clippy::cast_precision_loss)] // a handful of rounds
    let n = rs.len() as f64;
    let req = sum(|r| r.requests);
    let dur = sum(|r| r.duration_us);
    let pus = sum(|r| r.proc_us);
    let p50: Vec<f64> = rs.iter().map(|r| r.p50_us).collect();
    let p99: Vec<f64> = rs.iter().map(|r| r.p99_us).collect();
    let each: Vec<String> = rs
        .iter()
        .map(|r| fixed(r.requests * 1e6 / r.duration_us, 0))
        .collect();
    Row {
        set: set.to_string(),
        row: row.to_string(),
        rps: fixed(req * 1e6 / dur, 0),
        p50: fixed(median(&p50).unwrap_or(0.0), 0),
        p99: fixed(median(&p99).unwrap_or(0.0), 0),
        max: int(most(|r| r.max_us)),
        errors: int(sum(|r| r.errors)),
        mibs: fixed(sum(|r| r.bytes) * 1e6 / dur / 1_048_576.0, 1),
        cpu_proxy: fixed(sum(|r| r.cpu_proxy) / n, 0),
        cpu_load: fixed(sum(|r| r.cpu_load) / n, 0),
        each: each.join(" "),
        rss: int(most(|r| r.rss_kib)),
        requests: int(req),
        us_req: fixed(pus / req, 1),
        proc_pct: fixed(100.0 * pus / dur, 0),
        steal_proxy: fixed(sum(Run::steal_proxy) / n, 1),
        steal_load: fixed(sum(Run::steal_load) / n, 1),
        sleeps: rs
            .iter()
            .map(|r| r.sleeps)
            .sum::<Option<f64>>()
            .map(|s| fixed(s * 1e6 / dur, 0)),
        p90: median_of(rs, |r| r.p90_us),
        p999: median_of(rs, |r| r.p999_us),
    }
}

/// The median over the rounds of a figure not every line has; `None` unless every round has it.
fn median_of(rs: &[&Run], f: fn(&Run) -> Option<f64>) -> Option<String> {
    let v: Option<Vec<f64>> = rs.iter().map(|r| f(r)).collect();
    Some(fixed(median(&v?)?, 0))
}

/// Looks rows up by set and row; a missing row reads as "0" in every column, as before.
pub struct Table<'a>(pub &'a [Row]);

impl Table<'_> {
    pub fn row(&self, set: &str, row: &str) -> Option<&Row> {
        self.0.iter().find(|r| r.set == set && r.row == row)
    }

    /// A column's text, "0" for a row that was not run.
    pub fn get(&self, set: &str, row: &str, col: fn(&Row) -> &String) -> String {
        self.row(set, row)
            .map_or_else(|| "0".to_string(), |r| col(r).clone())
    }

    /// A column read back as a number.
    pub fn num(&self, set: &str, row: &str, col: fn(&Row) -> &String) -> f64 {
        awk_num(&self.get(set, row, col))
    }
}

/// The p99 of row `a` over that of row `b` in each round of `set` (the two runs next to each
/// other in time), from round 1 up to the first round `a` lacks; rounds where `b` is missing
/// or 0 are left out. Returns the median of those ratios ("0" when there are none) and the
/// ratios, each to two decimals.
pub fn paired(runs: &[Run], set: &str, a: &str, b: &str) -> (String, Vec<String>) {
    // The last run of a round wins, as when the script keyed them by round.
    let p99_of = |row: &str, round: &str| {
        runs.iter()
            .rev()
            .find(|r| r.set == set && r.row == row && r.round == round)
            .map(|r| r.p99_us)
    };
    let mut ratios = Vec::new();
    for round in 1.. {
        let round = round.to_string();
        let Some(pa) = p99_of(a, &round) else { break };
        if let Some(pb) = p99_of(b, &round).filter(|pb| *pb > 0.0) {
            ratios.push(fixed(pa / pb, 2));
        }
    }
    let values: Vec<f64> = ratios.iter().map(|r| awk_num(r)).collect();
    match median(&values) {
        Some(m) => (fixed(m, 2), ratios),
        None => ("0".to_string(), ratios),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inputs::parse_runs;

    fn runs(lines: &[&str]) -> Vec<Run> {
        parse_runs(&lines.join("\n"), "test").expect("valid runs")
    }

    // set row conns round requests duration bytes p50 p99 max errors cpu_p cpu_l rss proc_us st_p st_l
    const A1: &str =
        "s\ttp\t64\t1\t1000\t1000000\t1048576\t100\t900\t5000\t1\t90\t99\t100\t10000\t1.0\t0.0";
    const A2: &str =
        "s\ttp\t64\t2\t3000\t1000000\t1048576\t101\t1000\t4000\t2\t91\t98\t300\t20000\t2.0\t4.0";
    const B1: &str =
        "s\tnx\t64\t1\t2000\t1000000\t0\t200\t1000\t7000\t0\t99\t99\t50\t30000\t0.0\t0.0";
    const B2: &str =
        "s\tnx\t64\t2\t2000\t1000000\t0\t200\t800\t7000\t0\t99\t99\t50\t30000\t0.0\t0.0";

    #[test]
    fn a_row_sums_and_medians_its_rounds() {
        let rows = aggregate(&runs(&[A1, B1, A2, B2]));
        assert_eq!(
            rows.iter().map(|r| r.row.as_str()).collect::<Vec<_>>(),
            ["tp", "nx"]
        );
        let tp = &rows[0];
        assert_eq!(tp.rps, "2000"); // 4000 requests in 2 s
        assert_eq!(tp.p50, "100"); // median of 100 and 101 is 100.5, printed to even
        assert_eq!(tp.p99, "950");
        assert_eq!(tp.max, "5000");
        assert_eq!(tp.errors, "3");
        assert_eq!(tp.mibs, "1.0");
        assert_eq!((tp.cpu_proxy.as_str(), tp.cpu_load.as_str()), ("90", "98")); // 90.5, 98.5 to even
        assert_eq!(tp.each, "1000 3000");
        assert_eq!(tp.rss, "300");
        assert_eq!(tp.requests, "4000");
        assert_eq!(tp.us_req, "7.5"); // 30000 µs of CPU for 4000 requests
        assert_eq!(tp.proc_pct, "2"); // 30 ms in 2 s: 1.5% to even
        assert_eq!(
            (tp.steal_proxy.as_str(), tp.steal_load.as_str()),
            ("1.5", "2.0")
        );
    }

    #[test]
    fn later_percentiles_are_medians_only_when_every_round_has_them() {
        let rows = aggregate(&runs(&[A1, A2]));
        assert_eq!(
            (rows[0].p90.as_deref(), rows[0].p999.as_deref()),
            (None, None)
        );
        let a1 = format!("{A1}\t10\t400\t2000");
        let a2 = format!("{A2}\t20\t600\t3001");
        let a3 = A2.replace("\t2\t3000\t", "\t3\t3000\t") + "\t20\t500\t9000";
        let rows = aggregate(&runs(&[&a1, &a2, &a3]));
        assert_eq!(
            (rows[0].p90.as_deref(), rows[0].p999.as_deref()),
            (Some("500"), Some("3001"))
        );
        let rows = aggregate(&runs(&[&a1, A2]));
        assert_eq!(
            (rows[0].p90.as_deref(), rows[0].p999.as_deref()),
            (None, None)
        );
    }

    #[test]
    fn a_missing_row_reads_as_zero() {
        let rows = aggregate(&runs(&[A1]));
        let t = Table(&rows);
        assert_eq!(t.get("s", "tp", |r| &r.rps), "1000");
        assert_eq!(t.get("s", "absent", |r| &r.rps), "0");
        assert_eq!(t.num("other", "tp", |r| &r.us_req), 0.0);
    }

    #[test]
    fn paired_ratios_are_per_round_and_their_median() {
        let r = runs(&[A1, B1, A2, B2]);
        // round 1: 900/1000 = 0.90; round 2: 1000/800 = 1.25; median 1.075 -> 1.07 (binary below .075)
        let (m, each) = paired(&r, "s", "tp", "nx");
        assert_eq!(each, ["0.90", "1.25"]);
        assert_eq!(m, "1.07");
        let (m, each) = paired(&r, "s", "nx", "tp");
        assert_eq!(each, ["1.11", "0.80"]);
        assert_eq!(m, "0.96"); // (1.11 + 0.80) / 2, as glibc rounds it
    }

    #[test]
    fn paired_skips_missing_or_zero_partners_and_stops_at_the_first_gap() {
        let zero_b2 = B2.replace("\t800\t", "\t0\t");
        let r = runs(&[A1, B1, A2, &zero_b2]);
        assert_eq!(
            paired(&r, "s", "tp", "nx"),
            ("0.90".to_string(), vec!["0.90".to_string()])
        );
        let r = runs(&[A2, B2]); // no round 1 of tp: nothing is paired
        assert_eq!(paired(&r, "s", "tp", "nx"), ("0".to_string(), vec![]));
    }
}
