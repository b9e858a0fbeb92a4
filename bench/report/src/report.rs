//! The report: the header, the six sections, the targets and the notes, rendered from the
//! raw inputs of one run in the layout bench/README.md shows.

use std::fmt::Write as _;
use std::path::Path;

use crate::aggregate::{aggregate, paired, Row, Table};
use crate::facts::{parse_facts, Facts};
use crate::inputs::{self, InputError, RefreshRound, Run};
use crate::notes::notes;
use crate::num::{awk_num, g6, int, left, right};
use crate::stats::{busy, capacity, expected_refreshes, mib, ratio, refresh_totals, stolen};
use crate::targets;

/// Everything one report is made from.
pub struct Inputs {
    pub facts: Facts,
    pub runs: Vec<Run>,
    pub discarded: Vec<Run>,
    pub refresh: Vec<RefreshRound>,
    /// `tls.txt`, the TLS counters around the https set; empty when the run had none.
    pub tls: String,
    /// `wakeup.txt`, how long each core took to wake up from idle (proxy's core, then the
    /// load core); `None` when the run did not measure it.
    pub wakeup: Option<Vec<crate::wakeup::Core>>,
}

impl Inputs {
    /// Reads `facts.txt`, `runs.tsv`, `discarded.tsv` and `refresh.tsv` from a work directory,
    /// and `tls.txt` and `wakeup.txt` when it has them.
    pub fn load(dir: &Path) -> Result<Inputs, InputError> {
        let wakeup = match std::fs::read_to_string(dir.join("wakeup.txt")) {
            Ok(text) => Some(
                crate::wakeup::parse(&text).map_err(|what| inputs::err("wakeup.txt", 0, what))?,
            ),
            Err(_) => None,
        };
        Ok(Inputs {
            facts: parse_facts(&inputs::read(dir, "facts.txt")?, "facts.txt")?,
            runs: inputs::parse_runs(&inputs::read(dir, "runs.tsv")?, "runs.tsv")?,
            discarded: inputs::parse_runs(&inputs::read(dir, "discarded.tsv")?, "discarded.tsv")?,
            refresh: inputs::parse_refresh(&inputs::read(dir, "refresh.tsv")?, "refresh.tsv")?,
            tls: inputs::read(dir, "tls.txt").unwrap_or_default(),
            wakeup,
        })
    }
}

const ROWS: [&str; 5] = [
    "direct",
    "nginx",
    "tokenproxy",
    "bare-pingora",
    "tokenproxy-pingora",
];

/// The whole report, byte for byte what `bench/run.sh` prints.
#[allow(clippy::too_many_lines)] // one straight pass down the page
pub fn render(inp: &Inputs) -> String {
    let f = &inp.facts;
    let rows = aggregate(&inp.runs);
    let t = Table(&rows);
    let (pc, lc) = (f.proxy_cpu.as_str(), f.load_cpu.as_str());
    let mut o = String::new();

    // Header.
    let (i0, i1) = (f.idle_ticks_before, f.idle_ticks_after);
    let bg_p = busy(i0.proxy_total, i0.proxy_idle, i1.proxy_total, i1.proxy_idle);
    let bg_l = busy(i0.load_total, i0.load_idle, i1.load_total, i1.load_idle);
    let (l0, l1) = (f.load_ticks_before, f.load_ticks_after);
    let steal_p = stolen(
        l0.proxy_total,
        l0.proxy_steal,
        l1.proxy_total,
        l1.proxy_steal,
    );
    let steal_l = stolen(l0.load_total, l0.load_steal, l1.load_total, l1.load_steal);
    let max_steal = awk_num(&f.max_steal);
    let kept_over = inp
        .runs
        .iter()
        .filter(|r| r.steal_proxy() > max_steal || r.steal_load() > max_steal)
        .count();
    let cpu_model = if f.cpu_model.is_empty() {
        "unknown CPU"
    } else {
        &f.cpu_model
    };
    let mut commit = f.commit.clone();
    if f.profile != "release" {
        let _ = write!(commit, " ({} build: figures not comparable)", f.profile);
    }
    let _ = writeln!(o, "tokenproxy bench, {} mode, {}", f.mode, f.date);
    let _ = writeln!(o, "command:   {}", f.command);
    let _ = writeln!(
        o,
        "machine:   {} cores, {cpu_model}, Linux {}",
        f.cpus, f.kernel
    );
    let _ = writeln!(
        o,
        "software:  tokenproxy {commit}; {}; {}; {}",
        f.nginx_version, f.wrk_version, f.rustc_version
    );
    let _ = writeln!(o, "placement: proxy under test on cpu {pc}; wrk, upstream nginx and token issuers on cpu {lc},");
    let _ = writeln!(o, "           except the 1-connection set, where the upstream runs beside the proxy on cpu {pc}");
    let _ = writeln!(
        o,
        "idle:      cpu{pc} {bg_p}%, cpu{lc} {bg_l}% busy in the 2 s before the load (all started, nothing loaded)"
    );
    if let Some(idle) = &f.cpuidle {
        let polling = match idle.halt_poll_ns {
            None => String::new(),
            Some(0) => "; guest halt polling off: an idle core halts at once".to_string(),
            Some(ns) => format!(
                "; guest halt polling up to {ns} ns: an idle core polls for work that long before it halts"
            ),
        };
        let _ = writeln!(
            o,
            "cpuidle:   {} driver, {} governor{polling}",
            idle.driver, idle.governor
        );
    }
    if let Some(cores) = &inp.wakeup {
        let samples = cores.first().map_or(0, |c| c.samples);
        // cyclictest numbers its threads by the cores of its set in increasing order.
        let mut cpus = [pc, lc];
        cpus.sort_by_key(|c| c.parse::<u32>().unwrap_or(u32::MAX));
        let _ = writeln!(
            o,
            "wake-up:   {} (an idle core woken by its timer: cyclictest, {samples} sleeps of 1 ms per core)",
            crate::wakeup::line(cores, &cpus)
        );
    }
    let _ = writeln!(
        o,
        "load:      wrk -t1 --latency, {} s per run after a {} s warm-up per row, rows alternating,",
        f.duration, f.warmup
    );
    let _ = writeln!(
        o,
        "           {} rounds in set 1, {} in the refresh set, {} in the others",
        f.main_rounds, f.refresh_rounds, f.rounds
    );
    o.push_str("columns:   req/s over all rounds; p50, p99 (median of the rounds) and max latency in µs;\n");
    o.push_str("           errors summed; cpu/req: µs of CPU per request used by the process under test (the\n");
    let _ = writeln!(
        o,
        "           proxy, or the upstream for direct); proc%: its CPU as % of one core; cpu{pc}%/cpu{lc}%: how"
    );
    o.push_str("           busy each core was, whoever used it (steal included); steal%: the share of the run\n");
    let _ = writeln!(o, "           the hypervisor held cpu{pc}/cpu{lc} back while it had work (mean of the rounds)");
    let _ = writeln!(
        o,
        "steal:     cpu{pc} {steal_p}%, cpu{lc} {steal_l}% over all the load; {} run(s) measured again for steal over {}%",
        inp.discarded.len(),
        f.max_steal
    );
    let _ = writeln!(
        o,
        "           (at most {} more time(s) each), {kept_over} kept over it for want of a better attempt",
        f.steal_retries
    );

    // 1. small body, 64 connections.
    let _ = writeln!(
        o,
        "\n1. small body ({} bytes), {} connections",
        f.small_body.len() + 1,
        f.conns
    );
    table(&mut o, &t, pc, lc, "small-64", &ROWS);
    let tp = t.num("small-64", "tokenproxy", |r| &r.rps);
    let nginx_rps = t.num("small-64", "nginx", |r| &r.rps);
    let bare_rps = t.num("small-64", "bare-pingora", |r| &r.rps);
    let direct_rps = t.num("small-64", "direct", |r| &r.rps);
    let _ = writeln!(
        o,
        "ratios (req/s): tokenproxy/nginx {}  tokenproxy/bare-pingora {}  tokenproxy/direct {}",
        ratio(tp, nginx_rps),
        ratio(tp, bare_rps),
        ratio(tp, direct_rps)
    );
    let tp_us_text = t.get("small-64", "tokenproxy", |r| &r.us_req);
    let nginx_us_text = t.get("small-64", "nginx", |r| &r.us_req);
    let (tp_us, nginx_us) = (awk_num(&tp_us_text), awk_num(&nginx_us_text));
    let bare_us = t.num("small-64", "bare-pingora", |r| &r.us_req);
    let _ = writeln!(
        o,
        "ratios (cpu/req): tokenproxy/nginx {}  tokenproxy/bare-pingora {}",
        ratio(tp_us, nginx_us),
        ratio(tp_us, bare_us)
    );
    let _ = writeln!(
        o,
        "capacity (req/s per second of proxy CPU, 1e6 / cpu/req): tokenproxy {}  nginx {}  bare-pingora {}  tokenproxy-pingora {}",
        capacity(tp_us),
        capacity(nginx_us),
        capacity(bare_us),
        capacity(t.num("small-64", "tokenproxy-pingora", |r| &r.us_req))
    );
    let _ = writeln!(
        o,
        "handoffs to pingora (tokenproxy_pingora_handoffs_total, whole run): tokenproxy {}; tokenproxy-pingora {} (lean_path: false)",
        f.tp_handoffs, f.tpp_handoffs
    );

    // 2. small body, 1 connection. Whole µs, as the script's shell arithmetic had them.
    o.push_str("\n2. small body, 1 connection\n");
    table(&mut o, &t, pc, lc, "small-1", &ROWS);
    let p50_1 = |row: &str| whole(&t.get("small-1", row, |r| &r.p50));
    let d50 = p50_1("direct");
    o.push_str("p50 added over direct:");
    for row in &ROWS[1..] {
        let _ = write!(o, "  {row} +{} µs", p50_1(row) - d50);
    }
    o.push('\n');

    // 3. response bodies.
    let _ = writeln!(o, "\n3. response bodies, {} connections", f.conns);
    let _ = writeln!(
        o,
        "{} {} {} {} {} {} {} {} {} {} {} {}",
        left("row", 19),
        right("body", 4),
        right("MiB/s", 7),
        right("req/s", 7),
        right("p50", 6),
        right("p99", 6),
        right("errors", 6),
        right("cpu/req", 7),
        right("proc%", 6),
        right(&format!("cpu{pc}%"), 6),
        right(&format!("cpu{lc}%"), 6),
        right("steal%", 9)
    );
    for set in ["4k", "1m"] {
        for row in ["direct", "nginx", "tokenproxy"] {
            let g = |col: fn(&Row) -> &String| t.get(set, row, col);
            let _ = writeln!(
                o,
                "{} {} {} {} {} {} {} {} {} {} {} {}",
                left(row, 19),
                right(set, 4),
                right(&g(|r| &r.mibs), 7),
                right(&g(|r| &r.rps), 7),
                right(&g(|r| &r.p50), 6),
                right(&g(|r| &r.p99), 6),
                right(&g(|r| &r.errors), 6),
                right(&g(|r| &r.us_req), 7),
                right(&g(|r| &r.proc_pct), 6),
                right(&g(|r| &r.cpu_proxy), 6),
                right(&g(|r| &r.cpu_load), 6),
                right(&steal_cell(&t, set, row), 9)
            );
        }
    }
    o.push_str("(MiB/s counts response bytes as wrk read them, headers included)\n");

    // 4. token refresh.
    let rt = refresh_totals(&inp.refresh);
    let long_issued = f.issuer_long_after - f.issuer_long_before;
    let load_requests: f64 = inp
        .runs
        .iter()
        .filter(|r| r.row == "tokenproxy" || r.row == "tokenproxy-pingora")
        .map(|r| r.requests)
        .sum();
    let _ = writeln!(
        o,
        "\n4. token refresh, {} connections, {} s per run",
        f.conns, f.refresh_secs
    );
    table(
        &mut o,
        &t,
        pc,
        lc,
        "refresh",
        &["tokenproxy", "tokenproxy-refresh"],
    );
    let _ = writeln!(
        o,
        "tokenproxy (1 h tokens):         {} token fetches during {} requests",
        rt.steady_fetches,
        t.get("refresh", "tokenproxy", |r| &r.requests)
    );
    #[allow(clippy::cast_precision_loss)] // seconds
    let lifetime = f.refresh_lifetime as f64;
    let _ = writeln!(
        o,
        "tokenproxy-refresh ({} s tokens): {} token fetches ({} failed) in {} s of its runs; ~{} expected from the schedule",
        f.refresh_lifetime,
        rt.fetches,
        rt.failed,
        rt.elapsed,
        expected_refreshes(awk_num(&rt.elapsed), lifetime)
    );
    let _ = writeln!(
        o,
        "issuers (their /stats):          the 2 s issuer answered {} token requests in those {} s;",
        rt.issued, rt.elapsed
    );
    let _ = writeln!(
        o,
        "                                 the 1 h issuer answered {long_issued} during all the load ({} requests through tokenproxy rows)",
        int(load_requests)
    );

    // 5. CPU-limited.
    let limited_ratio = ratio(
        t.num("limited", "tokenproxy", |r| &r.rps),
        t.num("limited", "nginx", |r| &r.rps),
    );
    if f.limited {
        #[allow(clippy::cast_precision_loss)] // microseconds
        let share = f.limit_quota_us as f64 / f.limit_period_us as f64;
        let millicpu = f
            .limit_quota_us
            .saturating_mul(1000)
            .checked_div(f.limit_period_us)
            .unwrap_or(0);
        let _ = writeln!(
            o,
            "\n5. each proxy held to {} CPU (cgroup quota {} ms per {} ms, like limits.cpu: {millicpu}m), {} connections",
            g6(share),
            f.limit_quota_us / 1000,
            f.limit_period_us / 1000,
            f.conns
        );
        table(&mut o, &t, pc, lc, "limited", &["nginx", "tokenproxy"]);
        let _ = writeln!(
            o,
            "ratio (req/s): tokenproxy/nginx {limited_ratio} (latency here is mostly the quota: a throttled proxy waits for its next period)"
        );
    } else {
        o.push_str(
            "\n5. each proxy held to half a CPU: skipped (no writable cgroup cpu controller)\n",
        );
    }

    // 6. memory.
    #[allow(clippy::cast_precision_loss)] // KiB
    let kib = |k: i64| mib(k as f64);
    o.push_str(
        "\n6. memory (VmRSS; peaks are VmHWM, reset before the scenario where the kernel allows)\n",
    );
    let _ = writeln!(
        o,
        "tokenproxy, {} routes: idle {} MiB; mid-run at {} conns {} MiB; peak {} MiB; peak with 4 KiB/1 MiB bodies {} MiB; idle after all load {} MiB",
        f.routes,
        kib(f.tp_idle_kib),
        f.conns,
        mib(t.num("small-64", "tokenproxy", |r| &r.rss)),
        kib(f.tp_load_hwm_kib),
        kib(f.tp_body_hwm_kib),
        kib(f.tp_after_kib)
    );
    let _ = writeln!(
        o,
        "bare-pingora:          idle {} MiB; mid-run at {} conns {} MiB; peak {} MiB",
        kib(f.bare_idle_kib),
        f.conns,
        mib(t.num("small-64", "bare-pingora", |r| &r.rss)),
        kib(f.bare_load_hwm_kib)
    );

    let https = crate::https::present(&inp.runs);
    if https {
        crate::https::section(&mut o, &t, pc, lc, &f.conns, &inp.tls);
    }

    // Targets.
    o.push_str("\ntargets (informational: the exit status does not depend on them)\n");
    let r_bare = ratio(tp, bare_rps);
    o.push_str(&targets::line(
        targets::within_bare_pingora(awk_num(&r_bare)),
        "req/s within 5% of bare pingora (64 conns)",
        &format!("{r_bare} × bare"),
    ));
    let r_nginx = ratio(tp, nginx_rps);
    o.push_str(&targets::line(
        targets::beats_nginx(awk_num(&r_nginx)),
        "req/s >= 1.1 × nginx (64 conns)",
        &format!("{r_nginx} × nginx"),
    ));
    if targets::nginx_target_out_of_reach(direct_rps, nginx_rps) {
        let _ = writeln!(
            o,
            "      out of reach on this machine: direct, the ceiling of every proxy row, was {} × nginx",
            ratio(direct_rps, nginx_rps)
        );
    }
    if f.limited {
        o.push_str(&targets::line(
            targets::beats_nginx(awk_num(&limited_ratio)),
            "req/s >= 1.1 × nginx, each held to half a CPU",
            &format!("{limited_ratio} × nginx"),
        ));
    }
    let r_cap = ratio(nginx_us, tp_us);
    o.push_str(&targets::line(
        targets::beats_nginx(awk_num(&r_cap)),
        "capacity >= 1.1 × nginx (req/s per proxy CPU)",
        &format!("{r_cap} × nginx ({tp_us_text} vs {nginx_us_text} µs cpu/req)"),
    ));
    let (p99_m, p99_rounds) = paired(&inp.runs, "small-64", "tokenproxy", "nginx");
    o.push_str(&targets::line(
        targets::p99_within_nginx(awk_num(&p99_m)),
        "p99 <= nginx p99 (64 conns, paired rounds)",
        &format!(
            "{p99_m} × nginx (rounds:{}; medians {} vs {} µs)",
            p99_rounds.join(" "),
            t.get("small-64", "tokenproxy", |r| &r.p99),
            t.get("small-64", "nginx", |r| &r.p99)
        ),
    ));
    let added = p50_1("tokenproxy") - d50;
    #[allow(clippy::cast_precision_loss)] // µs
    let added_f = added as f64;
    o.push_str(&targets::line(
        targets::added_p50_ok(added_f),
        "p50 added over direct <= 100 µs (1 conn)",
        &format!("+{added} µs"),
    ));
    let every = || inp.runs.iter().chain(&inp.discarded);
    let all_errors: f64 = every().map(|r| r.errors).sum();
    let tp_errors: f64 = every()
        .filter(|r| r.row.starts_with("tokenproxy"))
        .map(|r| r.errors)
        .sum();
    o.push_str(&targets::line(
        targets::zero_errors(all_errors),
        "zero errors (every run of every row)",
        &format!(
            "{} ({} in tokenproxy rows)",
            int(all_errors),
            int(tp_errors)
        ),
    ));
    #[allow(clippy::cast_precision_loss)] // KiB
    let (idle_kib, load_kib) = (f.tp_idle_kib as f64, f.tp_load_hwm_kib as f64);
    o.push_str(&targets::line(
        targets::idle_rss_ok(idle_kib),
        &format!("idle RSS <= 20 MiB with {} routes", f.routes),
        &format!("{} MiB", mib(idle_kib)),
    ));
    o.push_str(&targets::line(
        targets::load_rss_ok(load_kib),
        &format!("RSS under load <= 64 MiB (peak, {} conns)", f.conns),
        &format!("{} MiB", mib(load_kib)),
    ));
    let (ref_m, ref_rounds) = paired(&inp.runs, "refresh", "tokenproxy-refresh", "tokenproxy");
    o.push_str(&targets::line(
        targets::refresh_p99_ok(awk_num(&ref_m)),
        "p99 while refreshing within 10% of steady (paired)",
        &format!(
            "{ref_m} × (rounds:{}; medians {} vs {} µs)",
            ref_rounds.join(" "),
            t.get("refresh", "tokenproxy-refresh", |r| &r.p99),
            t.get("refresh", "tokenproxy", |r| &r.p99)
        ),
    ));
    #[allow(clippy::cast_precision_loss)] // counts
    let pass = targets::token_requests_follow_refreshes(
        rt.issued as f64,
        awk_num(&rt.elapsed),
        long_issued as f64,
    );
    o.push_str(&targets::line(
        pass,
        "token requests follow refreshes, not requests",
        &format!(
            "{} at the 2 s issuer, {long_issued} at the 1 h one",
            rt.issued
        ),
    ));

    if https {
        crate::https::target_lines(&mut o, &t, &inp.runs);
    }

    o.push_str(&notes(&rows, pc, lc));
    o
}

/// A number the script handled with shell arithmetic: whole, 0 when it is not one.
fn whole(s: &str) -> i64 {
    s.parse().unwrap_or(0)
}

fn steal_cell(t: &Table<'_>, set: &str, row: &str) -> String {
    format!(
        "{}/{}",
        t.get(set, row, |r| &r.steal_proxy),
        t.get(set, row, |r| &r.steal_load)
    )
}

/// One of the 12-column tables: a header, then a line per row.
pub(crate) fn table(o: &mut String, t: &Table<'_>, pc: &str, lc: &str, set: &str, rows: &[&str]) {
    let line = |o: &mut String, c: [&str; 12]| {
        let _ = writeln!(
            o,
            "{} {} {} {} {} {} {} {} {} {} {}  {}",
            left(c[0], 19),
            right(c[1], 7),
            right(c[2], 6),
            right(c[3], 6),
            right(c[4], 6),
            right(c[5], 6),
            right(c[6], 7),
            right(c[7], 6),
            right(c[8], 6),
            right(c[9], 6),
            right(c[10], 9),
            c[11]
        );
    };
    let (cp, cl) = (format!("cpu{pc}%"), format!("cpu{lc}%"));
    line(
        o,
        [
            "row",
            "req/s",
            "p50",
            "p99",
            "max",
            "errors",
            "cpu/req",
            "proc%",
            &cp,
            &cl,
            "steal%",
            "req/s per round",
        ],
    );
    for row in rows {
        let g = |col: fn(&Row) -> &String| t.get(set, row, col);
        line(
            o,
            [
                row,
                &g(|r| &r.rps),
                &g(|r| &r.p50),
                &g(|r| &r.p99),
                &g(|r| &r.max),
                &g(|r| &r.errors),
                &g(|r| &r.us_req),
                &g(|r| &r.proc_pct),
                &g(|r| &r.cpu_proxy),
                &g(|r| &r.cpu_load),
                &steal_cell(t, set, row),
                &g(|r| &r.each),
            ],
        );
    }
    let sleeps: Vec<String> = rows
        .iter()
        .filter_map(|row| {
            let s = t.row(set, row)?.sleeps.as_ref()?;
            Some(format!("{row} {s}"))
        })
        .collect();
    if !sleeps.is_empty() {
        let _ = writeln!(
            o,
            "sleeps/s (times a second the process under test had nothing to do and slept until woken): {}",
            sleeps.join("  ")
        );
    }
    if TAIL_SETS.contains(&set) {
        tail_line(o, t, set, rows);
    }
}

/// The sets whose p99 a target judges: their report shows more of each row's latency
/// distribution than p50 and p99, since two rows' p99s can sit where their distributions cross.
const TAIL_SETS: [&str; 3] = ["small-64", "https-64", "refresh"];

/// p50, p90, p99, p99.9 (medians of the rounds) and the max of each row that has them all.
fn tail_line(o: &mut String, t: &Table<'_>, set: &str, rows: &[&str]) {
    let cells: Vec<String> = rows
        .iter()
        .filter_map(|row| {
            let r = t.row(set, row)?;
            Some(format!(
                "{row} {} / {} / {} / {}, {}",
                r.p50,
                r.p90.as_ref()?,
                r.p99,
                r.p999.as_ref()?,
                r.max
            ))
        })
        .collect();
    if !cells.is_empty() {
        let _ = writeln!(
            o,
            "latency in µs, p50 / p90 / p99 / p99.9 (medians of the rounds), max: {}",
            cells.join("  ")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::aggregate;
    use crate::inputs::parse_runs;

    // set row conns round requests duration bytes p50 p99 max errors cpu_p cpu_l rss proc_us
    // st_p st_l, then sleeps, p90 and p99.9
    const NX: &str = "small-64\tnginx\t64\t1\t2000\t1000000\t0\t1185\t2583\t26831\t0\t99\t99\t50\t30000\t0.0\t0.0\t300\t1724\t10498";
    const TP: &str = "small-64\ttokenproxy\t64\t1\t2000\t1000000\t0\t1193\t2834\t6166\t0\t90\t99\t50\t20000\t0.0\t0.0\t900\t1682\t4377";

    #[test]
    fn the_tail_line_gives_each_rows_percentiles_where_a_p99_is_judged() {
        let runs = parse_runs(&[NX, TP].join("\n"), "test").expect("valid runs");
        let rows = aggregate(&runs);
        let t = Table(&rows);
        let mut o = String::new();
        tail_line(&mut o, &t, "small-64", &["nginx", "tokenproxy", "absent"]);
        assert_eq!(
            o,
            "latency in µs, p50 / p90 / p99 / p99.9 (medians of the rounds), max: \
             nginx 1185 / 1724 / 2583 / 10498, 26831  tokenproxy 1193 / 1682 / 2834 / 4377, 6166\n"
        );
        // Older runs without the columns: no line rather than a line of zeros.
        let old: Vec<String> = [NX, TP]
            .iter()
            .map(|l| l.rsplitn(3, '\t').nth(2).expect("columns").to_string())
            .collect();
        let runs = parse_runs(&old.join("\n"), "test").expect("valid runs");
        let rows = aggregate(&runs);
        let mut o = String::new();
        tail_line(&mut o, &Table(&rows), "small-64", &["nginx", "tokenproxy"]);
        assert_eq!(o, "");
        // Only the sets with a p99 target get it from the table.
        let runs =
            parse_runs(&[NX, TP].join("\n").replace("small-64", "4k"), "test").expect("valid");
        let rows = aggregate(&runs);
        let mut o = String::new();
        table(
            &mut o,
            &Table(&rows),
            "0",
            "1",
            "4k",
            &["nginx", "tokenproxy"],
        );
        assert!(!o.contains("p99.9"), "{o}");
    }
}
