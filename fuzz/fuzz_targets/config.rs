//! The config loader on arbitrary text: it must return a config or an error, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        // Every ${VAR} resolves, so that substitution is exercised rather than failing at once.
        let _ = tokenproxy::config::Config::from_yaml(text, &|name| {
            (name.len() < 8).then(|| format!("v-{name}"))
        });
    }
});
