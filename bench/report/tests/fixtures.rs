//! Each fixture's raw inputs, through the real binary, must give the report the old script
//! printed for them, byte for byte (tests/fixtures/README.md says where each came from).

use std::path::Path;
use std::process::Command;

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

#[test]
fn a_malformed_input_is_an_error_that_names_the_file_and_line() {
    let tmp = std::env::temp_dir().join(format!("bench-report-bad-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).expect("temp dir");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/quick");
    for f in ["facts.txt", "discarded.tsv", "refresh.tsv"] {
        std::fs::copy(src.join(f), tmp.join(f)).expect("copy fixture");
    }
    std::fs::write(tmp.join("runs.tsv"), "small-64\tdirect\t64\n").expect("write runs");
    let out = Command::new(env!("CARGO_BIN_EXE_bench-report"))
        .arg("report")
        .arg(&tmp)
        .output()
        .expect("run bench-report");
    let _ = std::fs::remove_dir_all(&tmp);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("runs.tsv line 1: 3 tab-separated fields, expected 17"),
        "{err}"
    );
}
