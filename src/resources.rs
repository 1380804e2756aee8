//! What the machine has: memory, so that work that cannot fit is refused before it starts.

/// Memory the system reports as available, if it says.
pub fn available_memory_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// [`available_memory_bytes`], or 16 GiB where the system does not say.
pub fn available_or_default() -> u64 {
    available_memory_bytes().unwrap_or(16 << 30)
}
