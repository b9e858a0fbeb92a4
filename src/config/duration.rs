//! Parsing of duration strings such as `500ms`, `10s`, `5m`, `1h`.

use std::time::Duration;

/// Parses `<integer><unit>` with unit `ms`, `s`, `m` or `h`. Returns a description of what is
/// wrong on failure, for the caller to attach to the key.
pub fn parse(input: &str) -> Result<Duration, String> {
    let s = input.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("invalid duration \"{input}\": missing unit (ms, s, m or h)"))?;
    let (digits, unit) = s.split_at(split);
    if digits.is_empty() {
        return Err(format!(
            "invalid duration \"{input}\": expected a whole number and a unit, e.g. 10s"
        ));
    }
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("invalid duration \"{input}\": number too large"))?;
    let d = match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => n.checked_mul(60).map(Duration::from_secs),
        "h" => n.checked_mul(3600).map(Duration::from_secs),
        _ => {
            return Err(format!(
                "invalid duration \"{input}\": unknown unit \"{unit}\" (use ms, s, m or h)"
            ))
        }
    };
    d.ok_or_else(|| format!("invalid duration \"{input}\": too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse("0s").unwrap(), Duration::ZERO);
    }

    #[test]
    fn rejects_bad_input() {
        for bad in [
            "",
            "10",
            "s",
            "1.5s",
            "10 s",
            "10d",
            "-1s",
            "99999999999999999999s",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
