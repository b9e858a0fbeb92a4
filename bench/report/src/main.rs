//! `bench-report`: see `cli` for the subcommands.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(bench_report::cli::run(&args));
}
