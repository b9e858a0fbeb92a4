//! Arbitrary request heads through the request policy, rendered the lean path's way and
//! pingora's way; fails when the two would send a different request upstream.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../render_check.rs"]
mod render_check;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, data)) = data.split_first() else {
        return;
    };
    render_check::check(data, flags & 1 == 1);
});
