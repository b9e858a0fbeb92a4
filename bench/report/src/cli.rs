//! The subcommands `bench/run.sh` calls; each prints its answer on stdout, or an error naming
//! what is wrong on stderr with exit status 2.

use std::io::Read as _;
use std::path::Path;

use crate::inputs::Ticks;
use crate::live;
use crate::report::{render, Inputs};
use crate::stats::busy;

const USAGE: &str = "usage: bench-report SUBCOMMAND ...
  report WORK_DIR           the report, from WORK_DIR's facts.txt, runs.tsv, discarded.tsv, refresh.tsv
  cpu-ticks PROXY LOAD      (/proc/stat on stdin) total, idle ticks of both cores, then their steal ticks
  proc-ticks STAT_FILE...   user + system ticks of the processes (unreadable files count 0)
  sleeps STATUS_FILE...     voluntary context switches of the threads (unreadable files count 0)
  metric-sum NAME [L=V]     (Prometheus text on stdin) the sum of NAME's samples [with label L=\"V\"]
  busy T0 I0 T1 I1          % of the ticks between two samples that were not idle
  run-line SET ROW CONNS ROUND WRK_OUTPUT CLK_TCK RSS_KIB PROC0 PROC1 TICKS0 TICKS1 SLEEPS0 SLEEPS1
                            the runs.tsv line of one wrk run
  progress LINE PROXY_CPU LOAD_CPU   the progress line of a runs.tsv line
  steal LINE                the larger steal share of a runs.tsv line
  less A B                  exit status 0 when the number A is below B, 1 otherwise";

/// Runs one subcommand; returns the exit status.
pub fn run(args: &[String]) -> i32 {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    match dispatch(&a) {
        Ok(Answer::Print(s)) => {
            print!("{s}");
            0
        }
        Ok(Answer::Status(code)) => code,
        Err(e) => {
            eprintln!("bench-report: {e}");
            2
        }
    }
}

enum Answer {
    Print(String),
    Status(i32),
}

fn stdin() -> Result<String, String> {
    let mut s = String::new();
    std::io::stdin()
        .read_to_string(&mut s)
        .map_err(|e| format!("reading stdin: {e}"))?;
    Ok(s)
}

fn number(what: &str, s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| format!("{what} is not a number: '{s}'"))
}

fn whole(what: &str, s: &str) -> Result<u64, String> {
    s.parse()
        .map_err(|_| format!("{what} is not a whole number: '{s}'"))
}

fn ticks(what: &str, s: &str) -> Result<Ticks, String> {
    Ticks::parse(s).ok_or_else(|| format!("{what} is not six whole numbers (cpu-ticks): '{s}'"))
}

/// The texts of `/proc` files; processes and threads come and go between listing and reading,
/// so a file that is gone reads as empty (and counts 0).
fn read_all(files: &[&str]) -> Vec<String> {
    files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap_or_default())
        .collect()
}

fn dispatch(a: &[&str]) -> Result<Answer, String> {
    let print = |s: String| Ok(Answer::Print(s));
    match a {
        ["report", dir] => {
            let inputs = Inputs::load(Path::new(dir)).map_err(|e| format!("{dir}: {e}"))?;
            print(render(&inputs))
        }
        ["cpu-ticks", proxy, load] => {
            print(format!("{}\n", live::cpu_ticks(&stdin()?, proxy, load)?))
        }
        ["proc-ticks", files @ ..] => {
            let texts = read_all(files);
            print(format!(
                "{}\n",
                live::proc_ticks(texts.iter().map(String::as_str))
            ))
        }
        ["sleeps", files @ ..] => {
            let texts = read_all(files);
            print(format!(
                "{}\n",
                live::sleeps(texts.iter().map(String::as_str))
            ))
        }
        ["metric-sum", name] => print(live::metric_sum(&stdin()?, name, None)),
        ["metric-sum", name, label] => print(live::metric_sum(&stdin()?, name, Some(label))),
        ["busy", t0, i0, t1, i1] => print(busy(
            number("T0", t0)?,
            number("I0", i0)?,
            number("T1", t1)?,
            number("I1", i1)?,
        )),
        ["run-line", set, row, conns, round, wrk, clk_tck, rss, proc0, proc1, ticks0, ticks1, sleeps0, sleeps1] =>
        {
            let wrk_output = std::fs::read_to_string(wrk).map_err(|e| format!("{wrk}: {e}"))?;
            let s = live::Sample {
                set,
                row,
                conns,
                round,
                wrk_output: &wrk_output,
                clk_tck: whole("CLK_TCK", clk_tck)?,
                rss_kib: rss,
                proc_ticks: (whole("PROC0", proc0)?, whole("PROC1", proc1)?),
                ticks: (ticks("TICKS0", ticks0)?, ticks("TICKS1", ticks1)?),
                sleeps: (whole("SLEEPS0", sleeps0)?, whole("SLEEPS1", sleeps1)?),
            };
            let line = live::run_line(&s).map_err(|e| format!("{wrk}: {e}"))?;
            // Checked like every line the report reads.
            live::parse_line(&line)?;
            print(format!("{line}\n"))
        }
        ["progress", line, proxy, load] => print(format!(
            "{}\n",
            live::progress(&live::parse_line(line)?, proxy, load)
        )),
        ["steal", line] => print(format!("{}\n", live::steal(&live::parse_line(line)?))),
        ["less", x, y] => Ok(Answer::Status(i32::from(
            number("A", x)? >= number("B", y)?,
        ))),
        _ => Err(USAGE.to_string()),
    }
}
