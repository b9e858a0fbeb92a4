//! How long an idle core of this machine takes to wake up: `cyclictest`'s histogram, read from
//! `wakeup.txt` when the run measured it (one thread per core, each sleeping 1 ms at a time with
//! the cores otherwise idle, idle states allowed). On a virtual machine whose idle core halts,
//! each wake-up waits for the hypervisor to run the core again, and a proxy that sleeps between
//! requests pays that on the requests it wakes up for.

/// One core's wake-up latencies, µs.
#[derive(Debug, PartialEq)]
pub struct Core {
    pub samples: u64,
    pub p50: Latency,
    pub p99: Latency,
    pub max: u64,
}

/// A percentile from the histogram: a bucket, or past its last bucket.
#[derive(Debug, PartialEq)]
pub enum Latency {
    Us(u64),
    Over(u64),
}

impl std::fmt::Display for Latency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Latency::Us(v) => write!(f, "{v}"),
            Latency::Over(v) => write!(f, ">{v}"),
        }
    }
}

/// The cores of a `cyclictest -q -h N` output, in thread order.
pub fn parse(text: &str) -> Result<Vec<Core>, String> {
    let mut buckets: Vec<(u64, Vec<u64>)> = Vec::new();
    let mut max: Option<Vec<u64>> = None;
    let mut overflows: Option<Vec<u64>> = None;
    let numbers = |s: &str, what: &str| -> Result<Vec<u64>, String> {
        s.split_whitespace()
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| format!("{what}: '{v}' is not a whole number"))
            })
            .collect()
    };
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# Max Latencies:") {
            max = Some(numbers(rest, "Max Latencies")?);
        } else if let Some(rest) = line.strip_prefix("# Histogram Overflows:") {
            overflows = Some(numbers(rest, "Histogram Overflows")?);
        } else if line.starts_with(|c: char| c.is_ascii_digit()) {
            let mut v = numbers(line, "histogram")?;
            if v.len() < 2 {
                return Err(format!("histogram line '{line}' has no counts"));
            }
            let bucket = v.remove(0);
            buckets.push((bucket, v));
        }
    }
    let max = max.ok_or("no '# Max Latencies' line (cyclictest -q -h N)")?;
    let overflows = overflows.ok_or("no '# Histogram Overflows' line")?;
    let cores = max.len();
    if cores == 0 || overflows.len() != cores || buckets.iter().any(|(_, c)| c.len() != cores) {
        return Err(format!(
            "the histogram, maxima and overflows disagree on the number of cores ({cores})"
        ));
    }
    let last = buckets.last().map_or(0, |(b, _)| *b);
    Ok((0..cores)
        .map(|i| {
            let counts: Vec<(u64, u64)> = buckets.iter().map(|(b, c)| (*b, c[i])).collect();
            let samples = counts.iter().map(|(_, n)| n).sum::<u64>() + overflows[i];
            Core {
                samples,
                p50: percentile(&counts, samples, 50, last),
                p99: percentile(&counts, samples, 99, last),
                max: max[i],
            }
        })
        .collect())
}

/// The smallest bucket at or below which `pct` % of the samples fall.
fn percentile(counts: &[(u64, u64)], samples: u64, pct: u64, last: u64) -> Latency {
    // The rank of the sample, rounded up: the 99th percentile of 100 samples is the 99th.
    let rank = (samples * pct).div_ceil(100).max(1);
    let mut seen = 0;
    for (bucket, n) in counts {
        seen += n;
        if seen >= rank {
            return Latency::Us(*bucket);
        }
    }
    Latency::Over(last)
}

/// The figures of the report's `wake-up:` line, one core after the other.
pub fn line(cores: &[Core], cpus: &[&str]) -> String {
    let parts: Vec<String> = cores
        .iter()
        .zip(cpus)
        .map(|(c, cpu)| format!("cpu{cpu} p50 {} p99 {} max {} µs", c.p50, c.p99, c.max))
        .collect();
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn histogram(rows: &[(u64, u64, u64)], max: &str, over: &str) -> String {
        let mut s = String::from("# Histogram\n");
        for (b, a, c) in rows {
            s.push_str(&format!("{b:06} {a:06}\t{c:06}\n"));
        }
        s.push_str("# Total: 000000100 000000100\n# Min Latencies: 00010 00011\n");
        s.push_str(&format!(
            "# Max Latencies: {max}\n# Histogram Overflows: {over}\n# Thread 0:\n"
        ));
        s
    }

    #[test]
    fn percentiles_and_maxima_per_core() {
        // cpu a: 50 at 10 µs, 49 at 20, 1 at 900; cpu b: 99 at 11, 1 past the histogram.
        let text = histogram(
            &[(10, 50, 0), (11, 0, 99), (20, 49, 0), (900, 1, 0)],
            "00900 07000",
            "00000 00001",
        );
        let cores = parse(&text).expect("valid");
        assert_eq!(
            cores[0],
            Core {
                samples: 100,
                p50: Latency::Us(10),
                p99: Latency::Us(20),
                max: 900
            }
        );
        assert_eq!(
            cores[1],
            Core {
                samples: 100,
                p50: Latency::Us(11),
                p99: Latency::Us(11),
                max: 7000
            }
        );
        assert_eq!(
            line(&cores, &["0", "1"]),
            "cpu0 p50 10 p99 20 max 900 µs; cpu1 p50 11 p99 11 max 7000 µs"
        );
    }

    #[test]
    fn a_percentile_past_the_histogram_says_so() {
        let text = histogram(&[(10, 90, 90), (20, 0, 0)], "09000 00010", "00010 00010");
        let cores = parse(&text).expect("valid");
        assert_eq!(cores[0].p50, Latency::Us(10));
        assert_eq!(cores[0].p99, Latency::Over(20));
        assert_eq!(cores[0].p99.to_string(), ">20");
    }

    #[test]
    fn malformed_output_is_an_error_naming_the_file() {
        assert!(parse("nothing here\n")
            .unwrap_err()
            .contains("Max Latencies"));
        let uneven = histogram(&[(10, 1, 1)], "00010", "00000 00000");
        assert!(parse(&uneven).unwrap_err().contains("disagree"));
        let bad = histogram(&[(10, 1, 1)], "00010 0x", "00000 00000");
        assert!(parse(&bad).unwrap_err().starts_with("Max Latencies"));
    }
}
