//! The threads that run a pass's row blocks beside the caller.
//!
//! Rayon's idle workers yield about thirty times and then sleep, and a sleeping worker is
//! woken by a system call (a futex, and on a virtual machine an interrupt to another vCPU).
//! The central flow's eigen-solves make a pass of ~80 µs every ~110 µs on the default
//! problem, so every pass woke a sleeping worker: a fifth of the run's time went to waking
//! and sleeping (`perf`: `futex_wake`, `sched_yield`), and two threads ran the flow only
//! 1.24× faster than one. Rayon cannot be told to wait longer (rayon-rs/rayon#684 was closed
//! without a setting). micropool's workers spin for a set time before they sleep and the
//! caller works beside them, so passes that follow one another closely never sleep between
//! them. Rayon stays for the work that runs beside other work: a sweep's flows, an
//! ensemble's replicas ([`beside_other_work`]).

use std::any::Any;
use std::cell::Cell;
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Mutex, OnceLock};

use paralight::prelude::*;

/// How long an idle helper waits for the next pass before it sleeps, in `spin_loop` hints
/// (a few ns to ~50 ns each, by CPU: at most ~1.5 ms), longer than the gaps between an
/// eigen-solve's passes. On the central flow of the default problem 3000 gave 9.2 s, 10 000
/// 8.6 s, 30 000 8.2 s, 100 000 8.4 s (12.7 s on rayon).
const IDLE_SPIN: usize = 30_000;

thread_local! {
    static BESIDE_OTHER_WORK: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with its passes on rayon's pool instead of the spinning helpers: for work that
/// runs beside other work on the pool (a sweep's flows, an ensemble's replicas), where every
/// core is already busy and a helper spinning between passes would take a core from them,
/// while rayon lets an idle worker take a pass's blocks. Results are the same either way.
pub fn beside_other_work<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            BESIDE_OTHER_WORK.set(self.0);
        }
    }
    let _restore = Restore(BESIDE_OTHER_WORK.replace(true));
    f()
}

/// `f(0)`, …, `f(count − 1)` on the calling thread and `threads − 1` helpers, where
/// `threads` is the size of the rayon pool the caller runs in (so `RAYON_NUM_THREADS` and a
/// binding's own pool set it); inside [`beside_other_work`], on that pool. Each index runs
/// once; in which thread is not defined, so `f` must write each index's result where it
/// alone writes. One thread, or one index: in turn, on the caller.
pub(super) fn for_each(count: usize, f: impl Fn(usize) + Sync) {
    let helpers = rayon::current_num_threads().saturating_sub(1);
    if helpers == 0 || count < 2 {
        (0..count).for_each(f);
        return;
    }
    if BESIDE_OTHER_WORK.get() {
        rayon::iter::ParallelIterator::for_each(
            rayon::iter::IntoParallelIterator::into_par_iter(0..count),
            &f,
        );
        return;
    }
    // micropool aborts the process when a job panics: catch the first panic here and raise
    // it again on the caller, as rayon would (a Python exception, not a dead interpreter)
    let panic: Mutex<Option<Box<dyn Any + Send>>> = Mutex::new(None);
    let f = |i: usize| {
        if let Err(payload) = std::panic::catch_unwind(AssertUnwindSafe(|| f(i))) {
            let mut first = panic.lock().unwrap_or_else(|e| e.into_inner());
            first.get_or_insert(payload);
        }
    };
    IntoExactParallelSource::into_par_iter(0..count)
        // one run of consecutive indices per thread, the caller's the last: from one pass to
        // the next each thread mostly gets the same blocks, whose rows are still in its core's
        // cache (one index per unit, taken by whichever thread came first, was 10% slower on
        // the default problem's pass); a thread that finds no unit left takes none
        .with_thread_pool(team(helpers).split_by(helpers + 1))
        .for_each(f);
    if let Some(payload) = panic.into_inner().unwrap_or_else(|e| e.into_inner()) {
        std::panic::resume_unwind(payload);
    }
}

/// `[f(0), …, f(count − 1)]`, run as [`for_each`] runs indices.
pub(super) fn map<T: Send + Sync>(count: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let slots: Vec<OnceLock<T>> = (0..count).map(|_| OnceLock::new()).collect();
    for_each(count, |i| {
        let _ = slots[i].set(f(i));
    });
    slots
        .into_iter()
        .map(|s| s.into_inner().expect("every index ran"))
        .collect()
}

/// `f(t, chunk_t)` for the chunks of `out` of `width` entries (the last shorter), as
/// [`for_each`] runs indices: each chunk written by one call.
pub(super) fn for_each_chunk<T: Send>(
    out: &mut [T],
    width: usize,
    f: impl Fn(usize, &mut [T]) + Sync,
) {
    // a lock per chunk only to hand each index its own chunk: never contended
    let chunks: Vec<Mutex<&mut [T]>> = out.chunks_mut(width.max(1)).map(Mutex::new).collect();
    for_each(chunks.len(), |t| {
        f(t, &mut chunks[t].lock().expect("one call per chunk"))
    });
}

/// One team per helper count, made at its first use and kept for the process (a process
/// normally sees one pool size; tests and bindings that build others get a team each). A
/// process forked from one that had teams (Python's multiprocessing) has none of their
/// threads: it makes its own.
fn team(helpers: usize) -> &'static micropool::ThreadPool {
    type Teams = (u32, HashMap<usize, &'static micropool::ThreadPool>);
    static TEAMS: OnceLock<Mutex<Teams>> = OnceLock::new();
    let mut guard = TEAMS
        .get_or_init(|| Mutex::new((std::process::id(), HashMap::new())))
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let (pid, teams) = &mut *guard;
    let this_process = std::process::id();
    if *pid != this_process {
        // the parent's teams stay leaked: dropping one would join threads this process lacks
        *pid = this_process;
        teams.clear();
    }
    teams.entry(helpers).or_insert_with(|| {
        Box::leak(Box::new(
            micropool::ThreadPoolBuilder::default()
                .num_threads(helpers)
                .idle_spin_cycles(IDLE_SPIN)
                .build(),
        ))
    })
}
