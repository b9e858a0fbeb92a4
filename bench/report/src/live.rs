//! What `bench/run.sh` computes while it runs: the counters it samples (`/proc/stat`,
//! `/proc/PID/stat`, `/metrics`), one wrk run turned into its `runs.tsv` line and progress
//! line, and the steal figure that decides whether a run is measured again.

use crate::inputs::{parse_run, Run, Ticks};
use crate::num::{awk_num, fixed, g6, left, right};
use crate::stats::{busy, stolen};

/// The six counters of `Ticks` from the text of `/proc/stat`: for the proxy's core and the
/// load core, total ticks (user to steal) and idle ticks (idle + iowait), then each one's
/// steal ticks.
pub fn cpu_ticks(stat: &str, proxy_cpu: &str, load_cpu: &str) -> Result<String, String> {
    let core = |cpu: &str| -> Result<(u64, u64, u64), String> {
        let name = format!("cpu{cpu}");
        let line = stat
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name.as_str()))
            .ok_or_else(|| format!("/proc/stat has no line for {name}"))?;
        let v: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .take(8)
            .map(str::parse)
            .collect::<Result<_, _>>()
            .map_err(|_| format!("/proc/stat: {name} has a field that is not a whole number"))?;
        if v.len() < 8 {
            return Err(format!(
                "/proc/stat: {name} has {} counters, expected 8 or more",
                v.len()
            ));
        }
        // user nice system idle iowait irq softirq steal
        Ok((v.iter().sum(), v[3] + v[4], v[7]))
    };
    let (pt, pi, ps) = core(proxy_cpu)?;
    let (lt, li, ls) = core(load_cpu)?;
    Ok(format!("{pt} {pi} {lt} {li} {ps} {ls}"))
}

/// CPU ticks (user + system) of processes, summed, from the texts of their `/proc/PID/stat`.
pub fn proc_ticks<'a>(stats: impl IntoIterator<Item = &'a str>) -> u64 {
    stats
        .into_iter()
        .map(|s| {
            // The command name may hold spaces and parentheses: the fields start after the last ") ".
            let rest = s.rfind(") ").map_or("", |i| &s[i + 2..]);
            let f: Vec<&str> = rest.split_whitespace().collect();
            // utime and stime are fields 14 and 15; `rest` starts at field 3.
            let field = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            field(11) + field(12)
        })
        .sum()
}

/// Voluntary context switches, summed, from the texts of `/proc/PID/task/TID/status` files:
/// how many times those threads went to sleep waiting for something (for a proxy at load,
/// for the next readable socket).
pub fn sleeps<'a>(statuses: impl IntoIterator<Item = &'a str>) -> u64 {
    statuses
        .into_iter()
        .filter_map(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
        })
        .sum()
}

/// The sum of a metric's samples over all label sets in Prometheus text, or of those with
/// `label="value"` when `label` is given as `label=value`. Whole, as counters are.
pub fn metric_sum(text: &str, name: &str, label: Option<&str>) -> String {
    let want = label.map(|l| match l.split_once('=') {
        Some((k, v)) => format!("{k}=\"{v}\""),
        None => l.to_string(),
    });
    let sum: f64 = text
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| want.as_ref().is_none_or(|w| l.contains(w.as_str())))
        .filter_map(|l| l.split_whitespace().last())
        .map(awk_num)
        .sum();
    crate::num::int(sum)
}

/// The counters around one wrk run.
pub struct Sample<'a> {
    pub set: &'a str,
    pub row: &'a str,
    pub conns: &'a str,
    pub round: &'a str,
    /// wrk's output, with `bench/report.lua`'s `BENCH key=value ...` line.
    pub wrk_output: &'a str,
    pub clk_tck: u64,
    /// Mid-run RSS of the process under test, KiB.
    pub rss_kib: &'a str,
    /// CPU ticks of the process under test before and after.
    pub proc_ticks: (u64, u64),
    /// `cpu-ticks` before and after.
    pub ticks: (Ticks, Ticks),
    /// `sleeps` of the process under test before and after.
    pub sleeps: (u64, u64),
}

/// The `runs.tsv` line of one wrk run.
pub fn run_line(s: &Sample<'_>) -> Result<String, String> {
    let bench = s
        .wrk_output
        .lines()
        .find_map(|l| l.strip_prefix("BENCH "))
        .ok_or("wrk printed no BENCH summary line (bench/report.lua)")?;
    let get = |key: &str| -> Result<u64, String> {
        bench
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
            .ok_or_else(|| format!("wrk's BENCH line has no {key}"))?
            .parse()
            .map_err(|_| format!("wrk's BENCH line: {key} is not a whole number"))
    };
    let errors = get("err_status")?
        + get("err_connect")?
        + get("err_read")?
        + get("err_write")?
        + get("err_timeout")?;
    if s.clk_tck == 0 {
        return Err("CLK_TCK is 0".to_string());
    }
    let proc_us = s.proc_ticks.1.saturating_sub(s.proc_ticks.0) * 1_000_000 / s.clk_tck;
    let (c0, c1) = s.ticks;
    let fields = [
        s.set.to_string(),
        s.row.to_string(),
        s.conns.to_string(),
        s.round.to_string(),
        get("requests")?.to_string(),
        get("duration_us")?.to_string(),
        get("bytes")?.to_string(),
        get("p50_us")?.to_string(),
        get("p99_us")?.to_string(),
        get("max_us")?.to_string(),
        errors.to_string(),
        busy(c0.proxy_total, c0.proxy_idle, c1.proxy_total, c1.proxy_idle),
        busy(c0.load_total, c0.load_idle, c1.load_total, c1.load_idle),
        s.rss_kib.to_string(),
        proc_us.to_string(),
        stolen(
            c0.proxy_total,
            c0.proxy_steal,
            c1.proxy_total,
            c1.proxy_steal,
        ),
        stolen(c0.load_total, c0.load_steal, c1.load_total, c1.load_steal),
        s.sleeps.1.saturating_sub(s.sleeps.0).to_string(),
        get("p90_us")?.to_string(),
        get("p999_us")?.to_string(),
    ];
    Ok(fields.join("\t"))
}

/// The larger of a run's two steal shares, as recorded.
pub fn steal(run: &Run) -> &str {
    if run.steal_proxy() > run.steal_load() {
        &run.steal_proxy
    } else {
        &run.steal_load
    }
}

/// The progress line printed on stderr after each run.
pub fn progress(run: &Run, proxy_cpu: &str, load_cpu: &str) -> String {
    // The figures went through awk's `print` (6 significant digits) before printf rounded them.
    let rps = awk_num(&g6(run.requests * 1e6 / run.duration_us));
    let us_req = if run.requests == 0.0 {
        0.0
    } else {
        awk_num(&g6(run.proc_us / run.requests))
    };
    format!(
        "    {} round {}  {} {} req/s  p50 {} µs  p99 {} µs  errors {}  {} µs cpu/req  cpu{proxy_cpu} {}%  cpu{load_cpu} {}%  steal {}/{}%",
        left(&run.set, 8),
        run.round,
        left(&run.row, 19),
        right(&fixed(rps, 0), 7),
        right(&crate::num::int(run.p50_us), 6),
        right(&crate::num::int(run.p99_us), 6),
        crate::num::int(run.errors),
        right(&fixed(us_req, 1), 5),
        right(&crate::num::int(run.cpu_proxy), 3),
        right(&crate::num::int(run.cpu_load), 3),
        run.steal_proxy,
        run.steal_load
    )
}

/// Parses a `runs.tsv` line given on the command line.
pub fn parse_line(line: &str) -> Result<Run, String> {
    parse_run(line, "runs.tsv line", 0).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "cpu  10 0 10 100 0 0 0 0 0 0\n\
        cpu0 196148 10 5000 90000 6558 1 2 40 0 0\n\
        cpu1 100 0 100 88448 0 0 0 39 0 0\nintr 1 2 3\n";

    #[test]
    fn cpu_ticks_sum_eight_counters_per_core() {
        assert_eq!(
            cpu_ticks(STAT, "0", "1").as_deref(),
            Ok("297759 96558 88687 88448 40 39")
        );
        assert!(cpu_ticks(STAT, "0", "7").unwrap_err().contains("cpu7"));
        // One core for both: the same counters twice.
        assert_eq!(
            cpu_ticks(STAT, "1", "1").as_deref(),
            Ok("88687 88448 88687 88448 39 39")
        );
    }

    #[test]
    fn proc_ticks_add_utime_and_stime_of_each_process() {
        let a = "42 (nginx: worker) S 1 42 42 0 -1 4194560 10 0 0 0 70 30 0 0 20 0 1 0 5";
        let b = "43 (odd ) name) S 1 43 43 0 -1 4194560 10 0 0 0 5 6 0 0 20 0 1 0 5";
        assert_eq!(proc_ticks([a, b]), 111);
        assert_eq!(proc_ticks([""]), 0);
    }

    #[test]
    fn sleeps_add_the_voluntary_switches_of_each_thread() {
        let a =
            "Name:\ttokenproxy\nvoluntary_ctxt_switches:\t1200\nnonvoluntary_ctxt_switches:\t7\n";
        let b =
            "Name:\tTimer thread\nvoluntary_ctxt_switches:\t34\nnonvoluntary_ctxt_switches:\t900\n";
        assert_eq!(sleeps([a, b]), 1234);
        // A thread that ended between listing and reading: its empty text adds nothing.
        assert_eq!(sleeps([a, ""]), 1200);
    }

    #[test]
    fn metric_sum_adds_every_label_set_or_the_chosen_one() {
        let m = "# HELP tokenproxy_token_fetches_total x\n\
            tokenproxy_token_fetches_total{provider=\"demo\",outcome=\"success\"} 4\n\
            tokenproxy_token_fetches_total{provider=\"demo\",outcome=\"error\"} 2\n\
            tokenproxy_token_fetches_total_other 100\n\
            tokenproxy_pingora_handoffs_total 7\n";
        assert_eq!(metric_sum(m, "tokenproxy_token_fetches_total", None), "6");
        assert_eq!(
            metric_sum(m, "tokenproxy_token_fetches_total", Some("outcome=success")),
            "4"
        );
        assert_eq!(
            metric_sum(m, "tokenproxy_pingora_handoffs_total", None),
            "7"
        );
        assert_eq!(metric_sum(m, "absent_total", None), "0");
    }

    fn ticks(s: &str) -> Ticks {
        Ticks::parse(s).expect("six numbers")
    }

    #[test]
    fn a_wrk_run_becomes_its_runs_tsv_line() {
        let wrk = "Running 1s test\n  Latency ...\nBENCH requests=63452 duration_us=1099007 bytes=11294456 \
            p50_us=770 p90_us=1700 p99_us=54995 p999_us=60001 max_us=67261 err_status=1 err_connect=2 err_read=0 \
            err_write=0 err_timeout=3\n";
        let s = Sample {
            set: "small-64",
            row: "nginx",
            conns: "64",
            round: "1",
            wrk_output: wrk,
            clk_tck: 100,
            rss_kib: "6868",
            proc_ticks: (1000, 1070),
            ticks: (
                ticks("1000 500 1000 500 10 10"),
                ticks("1200 512 1200 516 13 10"),
            ),
            sleeps: (5000, 7345),
        };
        assert_eq!(
            run_line(&s).as_deref(),
            Ok("small-64\tnginx\t64\t1\t63452\t1099007\t11294456\t770\t54995\t67261\t6\t94\t92\t6868\t700000\t1.5\t0.0\t2345\t1700\t60001")
        );
        let none = Sample {
            wrk_output: "unable to connect\n",
            ..s
        };
        assert!(run_line(&none).unwrap_err().contains("no BENCH"));
    }

    #[test]
    fn steal_is_the_larger_share_as_recorded() {
        let r =
            parse_line("s\tr\t64\t1\t1\t1\t1\t1\t1\t1\t0\t1\t1\t1\t1\t0.3\t12.0").expect("valid");
        assert_eq!(steal(&r), "12.0");
        let r =
            parse_line("s\tr\t64\t1\t1\t1\t1\t1\t1\t1\t0\t1\t1\t1\t1\t5.1\t5.0").expect("valid");
        assert_eq!(steal(&r), "5.1");
    }

    #[test]
    fn progress_line_shows_the_run() {
        let r = parse_line("small-64\tnginx\t64\t1\t63452\t1099007\t11294456\t770\t54995\t67261\t0\t94\t92\t6868\t700000\t0.0\t0.0")
            .expect("valid");
        assert_eq!(
            progress(&r, "0", "1"),
            "    small-64 round 1  nginx                 57736 req/s  p50    770 µs  p99  54995 µs  errors 0   11.0 µs cpu/req  cpu0  94%  cpu1  92%  steal 0.0/0.0%"
        );
    }
}
