//! What the benches print first: the machine a ratio was measured on (kernels and caches
//! differ between CPUs, and a ratio means something only with its machine).

/// The CPU model, as /proc/cpuinfo names it.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// "CPU: <model> (<threads> threads)", on stderr.
pub fn print_machine() {
    eprintln!(
        "CPU: {} ({} threads)",
        cpu_model(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
}

/// One run of a peer's script (`python script problem args…`): the computation's own time,
/// as the script prints it on a line `compute_seconds S` (after its imports and its problem
/// load).
pub fn script_seconds(
    python: &std::ffi::OsStr,
    script: &std::path::Path,
    problem: &std::path::Path,
    args: &[String],
) -> std::time::Duration {
    let out = std::process::Command::new(python)
        .arg(script)
        .arg(problem)
        .args(args)
        .output()
        .expect("the script starts");
    assert!(out.status.success(), "{} failed", script.display());
    let text = String::from_utf8_lossy(&out.stdout);
    let seconds: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("compute_seconds "))
        .and_then(|s| s.trim().parse().ok())
        .expect("the script prints compute_seconds");
    std::time::Duration::from_secs_f64(seconds)
}
