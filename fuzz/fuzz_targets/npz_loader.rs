//! Any bytes given as `--problem FILE.npz` must load, or fail with an error naming what is
//! wrong: never panic, never allocate what a header merely claims.
#![no_main]

use std::path::Path;

use gdflow::config::Config;
use gdflow::problem::Problem;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let cfg = Config::default().problem_spec();
    let _ = Problem::load_npz_from(std::io::Cursor::new(data), Path::new("fuzz.npz"), &cfg);
});
