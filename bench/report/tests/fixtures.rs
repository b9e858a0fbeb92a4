//! Each fixture's raw inputs, through the real binary, must give the report the old script
//! printed for them, byte for byte (tests/fixtures/README.md says where each came from).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn check(name: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let out = Command::new(env!("CARGO_BIN_EXE_bench-report"))
        .arg("report")
        .arg(&dir)
        .output()
        .expect("run bench-report");
    assert!(
        out.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want = std::fs::read(dir.join("report.txt")).expect("expected report");
    if out.stdout != want {
        let got = String::from_utf8_lossy(&out.stdout);
        let want = String::from_utf8_lossy(&want);
        let first = got
            .lines()
            .zip(want.lines())
            .position(|(g, w)| g != w)
            .unwrap_or(got.lines().count().min(want.lines().count()));
        panic!(
            "{name}: the report differs from line {}:\n  got:  {:?}\n  want: {:?}",
            first + 1,
            got.lines().nth(first),
            want.lines().nth(first)
        );
    }
}

#[test]
fn quick_run_report_is_byte_for_byte_the_scripts() {
    check("quick");
}

#[test]
fn several_rounds_report_is_byte_for_byte_the_scripts() {
    check("rounds");
}

/// A temporary work directory with the quick fixture's inputs but its `runs.tsv`, for the test
/// to write; returns it and the fixture's directory.
fn quick_without_runs(name: &str) -> (PathBuf, PathBuf) {
    let tmp = std::env::temp_dir().join(format!("bench-report-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).expect("temp dir");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/quick");
    for f in ["facts.txt", "discarded.tsv", "refresh.tsv"] {
        std::fs::copy(src.join(f), tmp.join(f)).expect("copy fixture");
    }
    (tmp, src)
}

/// The binary's report of a temporary work directory, which it then removes.
fn report_of(tmp: &Path) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_bench-report"))
        .arg("report")
        .arg(tmp)
        .output()
        .expect("run bench-report");
    let _ = std::fs::remove_dir_all(tmp);
    out
}

#[test]
fn a_malformed_input_is_an_error_that_names_the_file_and_line() {
    let (tmp, _) = quick_without_runs("bad");
    std::fs::write(tmp.join("runs.tsv"), "small-64\tdirect\t64\n").expect("write runs");
    let out = report_of(&tmp);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("runs.tsv line 1: 3 tab-separated fields, expected 20"),
        "{err}"
    );
}

/// A work directory of a newer run: runs with their sleep counts, the wake-up histogram and the
/// kernel's idle settings.
#[test]
fn sleeps_and_wake_up_latency_are_reported_when_measured() {
    let (tmp, src) = quick_without_runs("wakeup");
    // Every run slept once per µs of its duration (field 6): 1,000,000 sleeps/s, except nginx's,
    // three times as often.
    let runs = std::fs::read_to_string(src.join("runs.tsv")).expect("runs");
    let with_sleeps: String = runs
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let us: u64 = f[5].parse().expect("duration_us");
            let times = if f[1] == "nginx" { 3 } else { 1 };
            format!("{l}\t{}\n", us * times)
        })
        .collect();
    std::fs::write(tmp.join("runs.tsv"), with_sleeps).expect("write runs");
    let mut hist = String::from("# Histogram\n");
    for (bucket, a, b) in [(20, 60, 10), (30, 39, 89), (400, 1, 1)] {
        hist.push_str(&format!("{bucket:06} {a:06}\t{b:06}\n"));
    }
    hist.push_str("# Total: 000000100 000000100\n# Min Latencies: 00020 00020\n");
    hist.push_str("# Avg Latencies: 00025 00029\n# Max Latencies: 00400 00401\n");
    hist.push_str("# Histogram Overflows: 00000 00000\n");
    std::fs::write(tmp.join("wakeup.txt"), hist).expect("write wakeup");
    let mut facts = std::fs::read_to_string(src.join("facts.txt")).expect("facts");
    facts.push_str("cpuidle=haltpoll haltpoll 0\n");
    std::fs::write(tmp.join("facts.txt"), facts).expect("write facts");
    let out = report_of(&tmp);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        report.contains(
            "wake-up:   cpu0 p50 20 p99 30 max 400 µs; cpu1 p50 30 p99 30 max 401 µs (an idle core woken by its timer: cyclictest, 100 sleeps of 1 ms per core)"
        ),
        "{report}"
    );
    assert!(
        report.contains(
            "cpuidle:   haltpoll driver, haltpoll governor; guest halt polling off: an idle core halts at once\n"
        ),
        "{report}"
    );
    let line = report
        .lines()
        .find(|l| l.starts_with("sleeps/s"))
        .expect("a sleeps/s line");
    assert!(
        line.contains("  nginx 3000000  tokenproxy 1000000  "),
        "{line}"
    );
}
