//! The operator's config file: `Config::from_toml_str`, the defaults overlaid by the file
//! and validated, exactly as `Config::load` reads a file.
//!
//! Properties: nothing panics; a configuration that loads prints (`ting --print-config`)
//! as TOML that loads back to the same configuration; the values the server derives from
//! it fit where they go (the ping interval travels to clients in milliseconds as a u32,
//! `Limits::ping_interval_ms`).

#![no_main]

use libfuzzer_sys::fuzz_target;
use ting_server::Config;

fuzz_target!(|data: &[u8]| {
    // A config file that is not UTF-8 fails to read before it is parsed.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = Config::from_toml_str(text) else {
        return;
    };
    let printed = config.to_toml();
    let again = Config::from_toml_str(&printed).expect("a printed configuration loads");
    assert_eq!(again, config, "{printed}");
    let _ = config.public_url("0.0.0.0:8080".parse().expect("an address"));
    let _ = config.participant_timeout();
    let ping_ms = config.limits.ping_interval_secs.checked_mul(1000);
    assert!(
        ping_ms.is_some_and(|ms| u32::try_from(ms).is_ok()),
        "ping_interval_secs = {}",
        config.limits.ping_interval_secs
    );
});
