//! Any text given as `--config FILE.toml` must parse, or fail with an error: never panic,
//! and a parsed configuration must resolve or fail with an error.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok((args, sweep)) = gdflow::config::parse_config_file(text) {
            if let Ok(cfg) = args.resolve() {
                let _ = cfg.warnings();
            }
            if let Some(spec) = sweep.and_then(|s| s.eta_range) {
                let _ = gdflow::config::parse_eta_range(&spec);
            }
        }
    }
});
