//! `facts.txt`, the report's inputs besides the run files (`key=value`, one a line): the
//! machine, the settings, the CPU tick samples, issuer counts, handoffs and memory. Every key
//! must be there once, except the optional ones that newer runs add; an unknown one is an error.

use std::collections::HashMap;

use crate::inputs::{err, InputError, Ticks};

/// `facts.txt`: what the report needs besides the run files.
#[derive(Clone, Debug, PartialEq)]
pub struct Facts {
    pub mode: String,
    pub date: String,
    pub command: String,
    pub cpus: String,
    pub cpu_model: String,
    pub kernel: String,
    pub commit: String,
    pub profile: String,
    pub nginx_version: String,
    pub wrk_version: String,
    pub rustc_version: String,
    pub proxy_cpu: String,
    pub load_cpu: String,
    pub duration: String,
    pub warmup: String,
    pub rounds: String,
    pub main_rounds: String,
    pub refresh_rounds: String,
    pub refresh_secs: String,
    pub max_steal: String,
    pub steal_retries: String,
    pub conns: String,
    pub routes: String,
    pub small_body: String,
    pub refresh_lifetime: i64,
    pub limit_quota_us: i64,
    pub limit_period_us: i64,
    pub limited: bool,
    pub idle_ticks_before: Ticks,
    pub idle_ticks_after: Ticks,
    pub load_ticks_before: Ticks,
    pub load_ticks_after: Ticks,
    pub issuer_long_before: i64,
    pub issuer_long_after: i64,
    pub tp_handoffs: String,
    pub tpp_handoffs: String,
    pub tp_idle_kib: i64,
    pub tp_load_hwm_kib: i64,
    pub tp_body_hwm_kib: i64,
    pub tp_after_kib: i64,
    pub bare_idle_kib: i64,
    pub bare_load_hwm_kib: i64,
    /// How the machine idles its cores (optional: older runs did not record it).
    pub cpuidle: Option<CpuIdle>,
}

/// The kernel's idle settings, which decide how long an idle core takes to wake up:
/// `cpuidle=DRIVER GOVERNOR HALT_POLL_NS`, the last `-` where the kernel has no guest halt polling
/// (`/sys/module/haltpoll/parameters/guest_halt_poll_ns`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuIdle {
    pub driver: String,
    pub governor: String,
    /// How long an idle core of a guest polls for work before it halts, ns.
    pub halt_poll_ns: Option<u64>,
}

impl CpuIdle {
    fn parse(v: &str) -> Option<CpuIdle> {
        let mut f = v.split(' ');
        let (driver, governor, poll) = (f.next()?, f.next()?, f.next()?);
        if f.next().is_some() || driver.is_empty() || governor.is_empty() {
            return None;
        }
        let halt_poll_ns = match poll {
            "-" => None,
            n => Some(n.parse().ok()?),
        };
        Some(CpuIdle {
            driver: driver.to_string(),
            governor: governor.to_string(),
            halt_poll_ns,
        })
    }
}

/// Keys a run may leave out.
const OPTIONAL_KEYS: [&str; 1] = ["cpuidle"];

const FACT_KEYS: [&str; 42] = [
    "mode",
    "date",
    "command",
    "cpus",
    "cpu_model",
    "kernel",
    "commit",
    "profile",
    "nginx_version",
    "wrk_version",
    "rustc_version",
    "proxy_cpu",
    "load_cpu",
    "duration",
    "warmup",
    "rounds",
    "main_rounds",
    "refresh_rounds",
    "refresh_secs",
    "max_steal",
    "steal_retries",
    "conns",
    "routes",
    "small_body",
    "refresh_lifetime",
    "limit_quota_us",
    "limit_period_us",
    "limited",
    "idle_ticks_before",
    "idle_ticks_after",
    "load_ticks_before",
    "load_ticks_after",
    "issuer_long_before",
    "issuer_long_after",
    "tp_handoffs",
    "tpp_handoffs",
    "tp_idle_kib",
    "tp_load_hwm_kib",
    "tp_body_hwm_kib",
    "tp_after_kib",
    "bare_idle_kib",
    "bare_load_hwm_kib",
];

pub fn parse_facts(text: &str, file: &str) -> Result<Facts, InputError> {
    let mut map: HashMap<&str, (usize, &str)> = HashMap::new();
    for (i, l) in text.lines().enumerate() {
        let Some((k, v)) = l.split_once('=') else {
            return Err(err(file, i + 1, format!("'{l}' is not key=value")));
        };
        if !FACT_KEYS.contains(&k) && !OPTIONAL_KEYS.contains(&k) {
            return Err(err(file, i + 1, format!("unknown key '{k}'")));
        }
        if map.insert(k, (i + 1, v)).is_some() {
            return Err(err(file, i + 1, format!("'{k}' given twice")));
        }
    }
    if let Some(k) = FACT_KEYS.iter().find(|k| !map.contains_key(*k)) {
        return Err(err(file, 0, format!("missing key '{k}'")));
    }
    let s = |k: &str| -> Result<String, InputError> {
        map.get(k)
            .map(|(_, v)| (*v).to_string())
            .ok_or_else(|| err(file, 0, format!("missing key '{k}'")))
    };
    let int = |k: &str| -> Result<i64, InputError> {
        let v = s(k)?;
        v.parse()
            .map_err(|_| err(file, map[k].0, format!("{k} is not a whole number: '{v}'")))
    };
    let ticks = |k: &str| -> Result<Ticks, InputError> {
        let v = s(k)?;
        Ticks::parse(&v).ok_or_else(|| {
            err(
                file,
                map[k].0,
                format!("{k} is not six whole numbers (cpu-ticks): '{v}'"),
            )
        })
    };
    let limited = match s("limited")?.as_str() {
        "0" => false,
        "1" => true,
        other => {
            return Err(err(
                file,
                map["limited"].0,
                format!("limited is 0 or 1, not '{other}'"),
            ))
        }
    };
    Ok(Facts {
        mode: s("mode")?,
        date: s("date")?,
        command: s("command")?,
        cpus: s("cpus")?,
        cpu_model: s("cpu_model")?,
        kernel: s("kernel")?,
        commit: s("commit")?,
        profile: s("profile")?,
        nginx_version: s("nginx_version")?,
        wrk_version: s("wrk_version")?,
        rustc_version: s("rustc_version")?,
        proxy_cpu: s("proxy_cpu")?,
        load_cpu: s("load_cpu")?,
        duration: s("duration")?,
        warmup: s("warmup")?,
        rounds: s("rounds")?,
        main_rounds: s("main_rounds")?,
        refresh_rounds: s("refresh_rounds")?,
        refresh_secs: s("refresh_secs")?,
        max_steal: s("max_steal")?,
        steal_retries: s("steal_retries")?,
        conns: s("conns")?,
        routes: s("routes")?,
        small_body: s("small_body")?,
        refresh_lifetime: int("refresh_lifetime")?,
        limit_quota_us: int("limit_quota_us")?,
        limit_period_us: int("limit_period_us")?,
        limited,
        idle_ticks_before: ticks("idle_ticks_before")?,
        idle_ticks_after: ticks("idle_ticks_after")?,
        load_ticks_before: ticks("load_ticks_before")?,
        load_ticks_after: ticks("load_ticks_after")?,
        issuer_long_before: int("issuer_long_before")?,
        issuer_long_after: int("issuer_long_after")?,
        tp_handoffs: s("tp_handoffs")?,
        tpp_handoffs: s("tpp_handoffs")?,
        tp_idle_kib: int("tp_idle_kib")?,
        tp_load_hwm_kib: int("tp_load_hwm_kib")?,
        tp_body_hwm_kib: int("tp_body_hwm_kib")?,
        tp_after_kib: int("tp_after_kib")?,
        bare_idle_kib: int("bare_idle_kib")?,
        bare_load_hwm_kib: int("bare_load_hwm_kib")?,
        cpuidle: map
            .get("cpuidle")
            .map(|&(line, v)| {
                CpuIdle::parse(v).ok_or_else(|| {
                    let what = format!("cpuidle is 'DRIVER GOVERNOR HALT_POLL_NS|-', not '{v}'");
                    err(file, line, what)
                })
            })
            .transpose()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_reject_unknown_and_missing_keys() {
        let e = parse_facts("colour=blue\n", "facts.txt").unwrap_err();
        assert_eq!(e.to_string(), "facts.txt line 1: unknown key 'colour'");
        let e = parse_facts("mode=quick\n", "facts.txt").unwrap_err();
        assert_eq!(e.to_string(), "facts.txt: missing key 'date'");
    }

    #[test]
    fn cpuidle_names_driver_governor_and_halt_polling() {
        assert_eq!(
            CpuIdle::parse("haltpoll haltpoll 200000"),
            Some(CpuIdle {
                driver: "haltpoll".into(),
                governor: "haltpoll".into(),
                halt_poll_ns: Some(200_000)
            })
        );
        let none = CpuIdle::parse("acpi_idle menu -").expect("no halt polling");
        assert_eq!(none.halt_poll_ns, None);
        for bad in ["haltpoll haltpoll", "a b c d", "a b x", " b 0"] {
            assert_eq!(CpuIdle::parse(bad), None, "{bad}");
        }
    }
}
