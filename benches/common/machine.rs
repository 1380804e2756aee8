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
