//! The arithmetic and the report of `bench/run.sh`, which keeps to starting processes and
//! collecting raw measurements. Modules:
//!
//! - `num`: numbers as awk read and C printf printed them, so the report keeps its bytes.
//! - `stats`: medians, ratios, busy and steal shares, capacity, MiB, the refresh schedule.
//! - `inputs`: the raw measurements kept in the work directory (runs, discarded runs, refresh
//!   counters, CPU tick samples), parsed strictly.
//! - `facts`: `facts.txt`, the rest of the report's inputs (machine, settings, memory...).
//! - `aggregate`: per set and row, the figures of the tables; paired per-round ratios.
//! - `targets`: the PASS/FAIL rules of bench/README.md.
//! - `notes`: the notes on rows that measured more than the proxy.
//! - `https`: the https section and its targets (rows to an `https://` upstream, TLS counters).
//! - `wakeup`: how long an idle core takes to wake up (`cyclictest`'s histogram).
//! - `report`: the report, rendered from the inputs.
//! - `live`: what the script needs while it runs (counters, a run's line, its steal).
//! - `cli`: the subcommands `bench/run.sh` calls.

pub mod aggregate;
pub mod cli;
pub mod facts;
pub mod https;
pub mod inputs;
pub mod live;
pub mod notes;
pub mod num;
pub mod report;
pub mod stats;
pub mod targets;
pub mod wakeup;
