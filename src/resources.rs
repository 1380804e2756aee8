//! What the machine has: memory, so that work that cannot fit is refused before it starts.

/// Memory the system reports as available, if it says.
pub fn available_memory_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The address-space limit of this process (`ulimit -v`), where one is set.
pub fn address_space_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max address space"))?;
    let soft = line.split_whitespace().nth(3)?;
    soft.parse().ok()
}

/// [`available_memory_bytes`], or 16 GiB where the system does not say, and never more than
/// the process may map (`ulimit -v`): refusing up front beats an allocation failing late.
pub fn available_or_default() -> u64 {
    let available = available_memory_bytes().unwrap_or(16 << 30);
    address_space_limit().map_or(available, |limit| available.min(limit))
}
