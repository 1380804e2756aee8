//! The parsers under random input with a fixed budget (the long runs are cargo-fuzz targets
//! in fuzz/): nothing a user can put in a config file or an `.npz` may panic.

use std::path::Path;

use gdflow::config::{parse_config_file, Config, KNOWN_KEYS};
use gdflow::problem::Problem;
use proptest::prelude::*;

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|v| v.to_string()),
        any::<u64>().prop_map(|v| v.to_string()),
        any::<f64>().prop_map(|v| format!("{v:?}")),
        Just("nan".to_string()),
        Just("-inf".to_string()),
        "[a-z\\-]{0,10}".prop_map(|s| format!("\"{s}\"")),
        prop::collection::vec(any::<f64>(), 0..4).prop_map(|v| format!("{v:?}")),
    ]
}

/// A refusal of the configuration names one of its keys (or a file or table it came from).
fn assert_names_a_key(e: &gdflow::error::Error) {
    match e {
        gdflow::error::Error::InvalidConfig { field, .. } => {
            let key = field.rsplit('.').next().unwrap_or(field);
            assert!(
                KNOWN_KEYS.contains(&key) || ["config", "sweep", "check"].contains(&key),
                "the refusal names `{field}`, which is no key: {e}"
            );
        }
        other => panic!("a configuration refused with {other}"),
    }
}

fn small_npz() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.npz");
    super::small_gaussian(2).save_npz(&path).unwrap();
    std::fs::read(path).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
        let _ = parse_config_file(&text).map(|(a, _)| a.resolve());
    }

    #[test]
    fn known_keys_with_arbitrary_values_parse_or_fail_cleanly(
        entries in prop::collection::vec((prop::sample::select(KNOWN_KEYS), value()), 0..8)
    ) {
        let mut seen = std::collections::HashSet::new();
        let text: String = entries
            .iter()
            .filter(|(k, _)| seen.insert(*k))
            .map(|(k, v)| format!("{k} = {v}\n"))
            .collect();
        if let Ok((args, _)) = parse_config_file(&text) {
            match args.resolve() {
                Ok(cfg) => {
                    let _ = cfg.warnings();
                }
                Err(e) => assert_names_a_key(&e),
            }
        }
    }

    /// The same keys as flags: clap's parse, then the resolution, in bounded time, and every
    /// refusal names a configuration key.
    #[test]
    fn flags_with_arbitrary_values_parse_or_fail_naming_a_key(
        entries in prop::collection::vec((prop::sample::select(KNOWN_KEYS), value()), 0..8)
    ) {
        use clap::Parser;
        #[derive(Parser)]
        struct Flags {
            #[command(flatten)]
            config: gdflow::config::ConfigArgs,
        }
        let mut argv = vec!["gdflow".to_string()];
        let mut seen = std::collections::HashSet::new();
        for (k, v) in entries.iter().filter(|(k, _)| seen.insert(*k)) {
            argv.push(format!("--{}", k.replace('_', "-")));
            argv.push(v.trim_matches(|c| c == '"' || c == '[' || c == ']').replace(' ', ""));
        }
        let start = std::time::Instant::now();
        if let Ok(flags) = Flags::try_parse_from(&argv) {
            if let Err(e) = flags.config.resolve() {
                assert_names_a_key(&e);
            }
        }
        prop_assert!(start.elapsed().as_secs_f64() < 1.0, "{argv:?}");
    }

    #[test]
    fn mutated_npz_never_panics(
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut bytes = small_npz();
        for (at, b) in flips {
            let i = at.index(bytes.len());
            bytes[i] = b;
        }
        if truncate {
            bytes.truncate(cut.index(bytes.len()));
        }
        let _ = Problem::load_npz_from(std::io::Cursor::new(bytes), Path::new("m.npz"), &Config::default().problem_spec());
    }
}
