//! The raw measurements `bench/run.sh` keeps in its work directory: `runs.tsv` and
//! `discarded.tsv` (one wrk run a line), `refresh.tsv` (counters read around each refresh
//! round) and the CPU tick samples. Parsing is strict: a malformed line is an error naming the
//! file, the line and the field.

use std::fmt;
use std::path::Path;

/// What is wrong with an input, and where.
#[derive(Debug, PartialEq)]
pub struct InputError {
    pub file: String,
    pub line: usize,
    pub what: String,
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.what)
        } else {
            write!(f, "{} line {}: {}", self.file, self.line, self.what)
        }
    }
}

impl std::error::Error for InputError {}

pub(crate) fn err(file: &str, line: usize, what: impl Into<String>) -> InputError {
    InputError {
        file: file.to_string(),
        line,
        what: what.into(),
    }
}

/// Reads a file of the work directory, naming it when it cannot.
pub fn read(dir: &Path, name: &str) -> Result<String, InputError> {
    std::fs::read_to_string(dir.join(name)).map_err(|e| err(name, 0, e.to_string()))
}

/// The columns of `runs.tsv`, in order. The last three came later, `sleeps` first and then the
/// two percentiles: a line without them (the fixtures, work directories of older runs) is read
/// with those figures unknown.
pub const RUN_COLUMNS: [&str; 20] = [
    "set",
    "row",
    "conns",
    "round",
    "requests",
    "duration_us",
    "bytes",
    "p50_us",
    "p99_us",
    "max_us",
    "errors",
    "cpu_proxy_pct",
    "cpu_load_pct",
    "rss_kib",
    "proc_us",
    "steal_proxy_pct",
    "steal_load_pct",
    "sleeps",
    "p90_us",
    "p999_us",
];

/// How many fields a `runs.tsv` line may have: without the later columns, with `sleeps`, or
/// with all.
const RUN_WIDTHS: [usize; 3] = [17, 18, 20];

/// One wrk run: a line of `runs.tsv` or `discarded.tsv`.
#[derive(Clone, Debug, PartialEq)]
pub struct Run {
    pub set: String,
    pub row: String,
    pub conns: String,
    pub round: String,
    pub requests: f64,
    pub duration_us: f64,
    pub bytes: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    pub errors: f64,
    pub cpu_proxy: f64,
    pub cpu_load: f64,
    pub rss_kib: f64,
    pub proc_us: f64,
    /// As recorded ("%.1f"): the steal check prints the larger of the two as it is.
    pub steal_proxy: String,
    pub steal_load: String,
    /// How many times the process under test went to sleep during the run (voluntary context
    /// switches of all its threads and children's): each time it had nothing to do, and had to
    /// be woken again. `None` when the line predates the column.
    pub sleeps: Option<f64>,
    /// The run's p90 and p99.9 latency, µs; `None` when the line predates the columns.
    pub p90_us: Option<f64>,
    pub p999_us: Option<f64>,
}

impl Run {
    pub fn steal_proxy(&self) -> f64 {
        self.steal_proxy.parse().unwrap_or(0.0)
    }

    pub fn steal_load(&self) -> f64 {
        self.steal_load.parse().unwrap_or(0.0)
    }
}

/// Parses one tab-separated run line; `file` and `line` only name it in errors.
pub fn parse_run(text: &str, file: &str, line: usize) -> Result<Run, InputError> {
    let f: Vec<&str> = text.split('\t').collect();
    if !RUN_WIDTHS.contains(&f.len()) {
        return Err(err(
            file,
            line,
            format!(
                "{} tab-separated fields, expected {} ({}; older runs end after steal_load_pct or after sleeps)",
                f.len(),
                RUN_COLUMNS.len(),
                RUN_COLUMNS.join(" ")
            ),
        ));
    }
    let num = |i: usize| -> Result<f64, InputError> {
        f[i].parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| {
                err(
                    file,
                    line,
                    format!("{} is not a number: '{}'", RUN_COLUMNS[i], f[i]),
                )
            })
    };
    for i in [0, 1] {
        if f[i].is_empty() {
            return Err(err(file, line, format!("{} is empty", RUN_COLUMNS[i])));
        }
    }
    num(2)?;
    num(3)?;
    num(15)?;
    num(16)?;
    Ok(Run {
        set: f[0].to_string(),
        row: f[1].to_string(),
        conns: f[2].to_string(),
        round: f[3].to_string(),
        requests: num(4)?,
        duration_us: num(5)?,
        bytes: num(6)?,
        p50_us: num(7)?,
        p99_us: num(8)?,
        max_us: num(9)?,
        errors: num(10)?,
        cpu_proxy: num(11)?,
        cpu_load: num(12)?,
        rss_kib: num(13)?,
        proc_us: num(14)?,
        steal_proxy: f[15].to_string(),
        steal_load: f[16].to_string(),
        sleeps: if f.len() > 17 { Some(num(17)?) } else { None },
        p90_us: if f.len() > 18 { Some(num(18)?) } else { None },
        p999_us: if f.len() > 19 { Some(num(19)?) } else { None },
    })
}

/// All the runs of a file's text, one a line.
pub fn parse_runs(text: &str, file: &str) -> Result<Vec<Run>, InputError> {
    text.lines()
        .enumerate()
        .map(|(i, l)| parse_run(l, file, i + 1))
        .collect()
}

/// Counters read before and after one refresh round (a line of `refresh.tsv`).
#[derive(Clone, Debug, PartialEq)]
pub struct RefreshRound {
    /// tokenproxy's (1 h tokens) `tokenproxy_token_fetches_total` around its run.
    pub steady_before: i64,
    pub steady_after: i64,
    /// tokenproxy-refresh's fetches, all outcomes and `outcome="success"`, around its run.
    pub fetches_before: i64,
    pub fetches_after: i64,
    pub ok_before: i64,
    pub ok_after: i64,
    /// The 2 s issuer's `token_requests` around tokenproxy-refresh's run.
    pub issuer_before: i64,
    pub issuer_after: i64,
    /// Epoch seconds around tokenproxy-refresh's run (steal retries included).
    pub start: f64,
    pub end: f64,
}

const REFRESH_COLUMNS: [&str; 11] = [
    "round",
    "steady_before",
    "steady_after",
    "fetches_before",
    "fetches_after",
    "ok_before",
    "ok_after",
    "issuer_before",
    "issuer_after",
    "start",
    "end",
];

pub fn parse_refresh(text: &str, file: &str) -> Result<Vec<RefreshRound>, InputError> {
    let mut rounds = Vec::new();
    for (i, l) in text.lines().enumerate() {
        let f: Vec<&str> = l.split('\t').collect();
        if f.len() != REFRESH_COLUMNS.len() {
            return Err(err(
                file,
                i + 1,
                format!(
                    "{} tab-separated fields, expected {} ({})",
                    f.len(),
                    REFRESH_COLUMNS.len(),
                    REFRESH_COLUMNS.join(" ")
                ),
            ));
        }
        let int = |j: usize| {
            f[j].parse::<i64>().map_err(|_| {
                err(
                    file,
                    i + 1,
                    format!("{} is not a whole number: '{}'", REFRESH_COLUMNS[j], f[j]),
                )
            })
        };
        let secs = |j: usize| {
            f[j].parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| {
                    err(
                        file,
                        i + 1,
                        format!("{} is not a number: '{}'", REFRESH_COLUMNS[j], f[j]),
                    )
                })
        };
        int(0)?;
        rounds.push(RefreshRound {
            steady_before: int(1)?,
            steady_after: int(2)?,
            fetches_before: int(3)?,
            fetches_after: int(4)?,
            ok_before: int(5)?,
            ok_after: int(6)?,
            issuer_before: int(7)?,
            issuer_after: int(8)?,
            start: secs(9)?,
            end: secs(10)?,
        });
    }
    Ok(rounds)
}

/// Six counters from `/proc/stat`, as `cpu-ticks` prints them: total and idle ticks of the
/// proxy's core, then of the load core, then the steal ticks of each.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ticks {
    pub proxy_total: f64,
    pub proxy_idle: f64,
    pub load_total: f64,
    pub load_idle: f64,
    pub proxy_steal: f64,
    pub load_steal: f64,
}

impl Ticks {
    pub fn parse(s: &str) -> Option<Ticks> {
        let v: Vec<f64> = s
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?;
        match v[..] {
            [a, b, c, d, e, f] => Some(Ticks {
                proxy_total: a,
                proxy_idle: b,
                load_total: c,
                load_idle: d,
                proxy_steal: e,
                load_steal: f,
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = "small-64\tnginx\t64\t1\t63452\t1099007\t11294456\t770\t54995\t67261\t0\t94\t92\t6868\t700000\t0.0\t0.0";

    #[test]
    fn a_run_line_parses_into_its_columns() {
        let r = parse_run(LINE, "runs.tsv", 1).expect("valid line");
        assert_eq!(
            (r.set.as_str(), r.row.as_str(), r.round.as_str()),
            ("small-64", "nginx", "1")
        );
        assert_eq!(r.requests, 63452.0);
        assert_eq!(r.p99_us, 54995.0);
        assert_eq!(r.proc_us, 700_000.0);
        assert_eq!(r.steal_proxy, "0.0");
        // A line of an older run, without the sleeps column.
        assert_eq!(r.sleeps, None);
        let with = parse_run(&format!("{LINE}\t1234"), "runs.tsv", 1).expect("valid line");
        assert_eq!(with.sleeps, Some(1234.0));
        assert_eq!((with.p90_us, with.p999_us), (None, None));
        let bad = parse_run(&format!("{LINE}\tsome"), "runs.tsv", 3).unwrap_err();
        assert_eq!(
            bad.to_string(),
            "runs.tsv line 3: sleeps is not a number: 'some'"
        );
        // A line of today's script: the sleeps, then p90 and p99.9.
        let all = parse_run(&format!("{LINE}\t1234\t1700\t9800"), "runs.tsv", 1).expect("valid");
        assert_eq!((all.p90_us, all.p999_us), (Some(1700.0), Some(9800.0)));
        // Never one of the two percentiles alone.
        let e = parse_run(&format!("{LINE}\t1234\t1700"), "runs.tsv", 4).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("runs.tsv line 4: 19 tab-separated fields"),
            "{e}"
        );
    }

    #[test]
    fn a_short_run_line_names_the_file_and_line() {
        let e = parse_run("small-64\tnginx\t64", "runs.tsv", 7).unwrap_err();
        assert_eq!(e.line, 7);
        assert!(
            e.to_string()
                .starts_with("runs.tsv line 7: 3 tab-separated fields, expected 20"),
            "{e}"
        );
    }

    #[test]
    fn a_non_number_names_its_column() {
        let bad = LINE.replace("\t63452\t", "\tmany\t");
        let e = parse_run(&bad, "discarded.tsv", 2).unwrap_err();
        assert_eq!(
            e.to_string(),
            "discarded.tsv line 2: requests is not a number: 'many'"
        );
    }

    #[test]
    fn refresh_lines_parse_and_errors_name_the_column() {
        let ok = "1\t50\t50\t4\t6\t4\t6\t4\t6\t1796404123.554351917\t1796404126.636909075\n";
        let r = parse_refresh(ok, "refresh.tsv").expect("valid");
        assert_eq!(r[0].fetches_after - r[0].fetches_before, 2);
        let bad = ok.replace("\t50\t50\t", "\t50\tx\t");
        let e = parse_refresh(&bad, "refresh.tsv").unwrap_err();
        assert_eq!(
            e.to_string(),
            "refresh.tsv line 1: steady_after is not a whole number: 'x'"
        );
    }

    #[test]
    fn ticks_are_six_numbers() {
        let t = Ticks::parse("196350 96706 196443 88589 40 39").expect("six numbers");
        assert_eq!((t.proxy_total, t.load_steal), (196_350.0, 39.0));
        assert_eq!(Ticks::parse("1 2 3"), None);
        assert_eq!(Ticks::parse("1 2 3 4 5 x"), None);
    }
}
