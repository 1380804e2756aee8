//! Transparent huge pages for the sensing matrix.
//!
//! Every pass streams the whole matrix. In 4 KB pages a 30 MB matrix spans 7 300 pages, more
//! than a core's second-level TLB holds (3 072 entries on Zen 4), so the stream also walks
//! page tables, and loading or generating the matrix takes a page fault per 4 KB. Linux
//! backs memory with 2 MB pages where a program asks (`madvise`; many systems, like the
//! AMD EPYC VM of issue 24, give them only on request); NumPy asks for every array from
//! 4 MB, so the SciPy script it is compared with already had them. On that VM, criterion
//! medians without → with: (50, 10, 1500) `gradient_fused` 0.86 → 0.76 ms, two inputs
//! 1.01 → 0.76 ms; (100, 20, 5000) 16.9 → 12.0 ms, two inputs 15.7 → 13.2 ms; the streaming
//! floor 0.93 → 0.80 ms and 24.8 → 19.8 ms.

/// Blocks at least this large ask for huge pages (NumPy's threshold for the same request).
const HUGE_PAGES_FROM: usize = 1 << 22;

/// Asks the kernel to back `v`'s allocation (its whole capacity) with 2 MB pages where it
/// can, before anything is written to it; nothing happens for small blocks or where the
/// system has no such pages. Changes no value.
pub fn advise_huge_pages<T>(v: &Vec<T>) {
    let bytes = v.capacity() * std::mem::size_of::<T>();
    if bytes < HUGE_PAGES_FROM {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        const PAGE: usize = 4096;
        let start = v.as_ptr() as usize;
        let first = start.next_multiple_of(PAGE);
        let end = (start + bytes) / PAGE * PAGE;
        if end > first {
            // SAFETY: the range lies within v's allocation; MADV_HUGEPAGE changes how pages are
            // backed, never their contents, and a refusal (no THP) is ignored
            unsafe {
                libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_HUGEPAGE);
            }
        }
    }
}
