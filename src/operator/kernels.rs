//! The streaming kernels behind [`super::DenseOperator`]: single products (four rows per
//! sweep, bit-identical for any thread count), the fused residual–gradient pass for one or
//! more inputs (each input's results those of its own pass), and block products over eight
//! interleaved inputs, each compiled for AVX2 (and FMA) when the CPU has it, chosen at run
//! time.

use super::{team, Entry};

/// Inputs per group of the batch kernels: eight f64 lanes, two AVX2 registers.
const GROUP: usize = 8;

/// The batch `xs` as groups of [`GROUP`] inputs, each stored interleaved (entry j of input b
/// of a group at `j·GROUP + b`), the last group padded with zero inputs.
fn interleave(xs: &[&[f64]], len: usize) -> Vec<Vec<f64>> {
    xs.chunks(GROUP)
        .map(|group| {
            let mut inter = vec![0.0; len * GROUP];
            for (b, x) in group.iter().enumerate() {
                for (j, v) in x.iter().enumerate() {
                    inter[j * GROUP + b] = *v;
                }
            }
            inter
        })
        .collect()
}

/// `a·b + c`, fused (one rounding) when the kernel is compiled for FMA.
#[inline(always)]
fn madd<const FMA: bool>(a: f64, b: f64, c: f64) -> f64 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// Rows `first..first + len` of 𝒜 against one interleaved group of inputs (see
/// [`interleave`]); the result is interleaved the same way. Four rows stream side by side;
/// each of their entries is broadcast against the group's eight values at that position, so
/// every loaded entry feeds eight products and every loaded input vector four, in eight
/// register accumulators. Each output is one running sum over j, in a different order from
/// [`SensingOperator::apply`]'s four-lane sum: the two agree to rounding.
#[inline(always)]
fn apply_group_kernel<E: Entry, const FMA: bool>(
    data: &[E],
    n: usize,
    first: usize,
    len: usize,
    xi: &[f64],
) -> Vec<f64> {
    let row = |r: usize| &data[(first + r) * n..(first + r + 1) * n];
    let mut out = vec![0.0; len * GROUP];
    let mut r = 0;
    while r + 4 <= len {
        let (a0, a1, a2, a3) = (row(r), row(r + 1), row(r + 2), row(r + 3));
        let mut acc = [[0.0f64; GROUP]; 4];
        for ((((x, e0), e1), e2), e3) in xi.chunks_exact(GROUP).zip(a0).zip(a1).zip(a2).zip(a3) {
            let d = [e0.get(), e1.get(), e2.get(), e3.get()];
            for q in 0..4 {
                for b in 0..GROUP {
                    acc[q][b] = madd::<FMA>(d[q], x[b], acc[q][b]);
                }
            }
        }
        for q in 0..4 {
            out[(r + q) * GROUP..(r + q + 1) * GROUP].copy_from_slice(&acc[q]);
        }
        r += 4;
    }
    for r in r..len {
        let mut acc = [0.0f64; GROUP];
        for (x, e) in xi.chunks_exact(GROUP).zip(row(r)) {
            let d = e.get();
            for b in 0..GROUP {
                acc[b] = madd::<FMA>(d, x[b], acc[b]);
            }
        }
        out[r * GROUP..(r + 1) * GROUP].copy_from_slice(&acc);
    }
    out
}

pub(super) fn apply_block_any<E: Entry>(
    data: &[E],
    n: usize,
    xs: &[&[f64]],
    outs: &mut [Vec<f64>],
) {
    let m = data.len() / n;
    // Eight row ranges, for balance when a core is busy elsewhere. Every output is summed
    // whole by one task, in the same order whatever the partition.
    let rows_per_task = if data.len() < PARALLEL_MIN_ENTRIES {
        m.max(1)
    } else {
        (m / 8).max(4)
    };
    let starts: Vec<usize> = (0..m).step_by(rows_per_task).collect();
    by_groups(&starts, xs, n, outs, |s, xi| {
        apply_group_rows(data, n, s, rows_per_task.min(m - s), xi)
    });
}

/// Run `piece(start, group)` for every start in parallel and every interleaved group of
/// `inputs` (each `len` long), and write the interleaved pieces, `GROUP` values per index
/// from `start` on, back into `outs`.
fn by_groups<F>(starts: &[usize], inputs: &[&[f64]], len: usize, outs: &mut [Vec<f64>], piece: F)
where
    F: Fn(usize, &[f64]) -> Vec<f64> + Sync,
{
    for (group, inter) in outs.chunks_mut(GROUP).zip(interleave(inputs, len)) {
        let parts: Vec<Vec<f64>> = team::map(starts.len(), |t| piece(starts[t], &inter));
        for (&s, part) in starts.iter().zip(&parts) {
            for (i, vals) in part.chunks_exact(GROUP).enumerate() {
                for (out, v) in group.iter_mut().zip(vals) {
                    out[s + i] = *v;
                }
            }
        }
    }
}

/// Columns `offset..offset + width` of 𝒜* applied to one interleaved group (see
/// [`interleave`]); the result is interleaved the same way. Four rows at a time: their
/// group values sit in eight registers while the rows stream, and each output vector is
/// loaded and stored once per four rows.
#[inline(always)]
fn adjoint_group_kernel<E: Entry, const FMA: bool>(
    data: &[E],
    n: usize,
    offset: usize,
    width: usize,
    zi: &[f64],
) -> Vec<f64> {
    let m = data.len() / n;
    let row = |i: usize| &data[i * n + offset..i * n + offset + width];
    let mut out = vec![0.0; width * GROUP];
    let full = m / 4 * 4;
    for i in (0..full).step_by(4) {
        let z: [&[f64]; 4] = std::array::from_fn(|q| &zi[(i + q) * GROUP..(i + q + 1) * GROUP]);
        let z: [[f64; GROUP]; 4] = std::array::from_fn(|q| std::array::from_fn(|b| z[q][b]));
        let (a0, a1, a2, a3) = (row(i), row(i + 1), row(i + 2), row(i + 3));
        for ((((o, e0), e1), e2), e3) in out.chunks_exact_mut(GROUP).zip(a0).zip(a1).zip(a2).zip(a3)
        {
            let d = [e0.get(), e1.get(), e2.get(), e3.get()];
            for b in 0..GROUP {
                let mut s = o[b];
                for q in 0..4 {
                    s = madd::<FMA>(z[q][b], d[q], s);
                }
                o[b] = s;
            }
        }
    }
    for i in full..m {
        let z = &zi[i * GROUP..(i + 1) * GROUP];
        for (o, e) in out.chunks_exact_mut(GROUP).zip(row(i)) {
            let d = e.get();
            for b in 0..GROUP {
                o[b] = madd::<FMA>(z[b], d, o[b]);
            }
        }
    }
    out
}

pub(super) fn adjoint_block_any<E: Entry>(
    data: &[E],
    n: usize,
    zs: &[&[f64]],
    outs: &mut [Vec<f64>],
) {
    let m = data.len() / n;
    // One column range per thread: each streams the longest contiguous pieces of four rows.
    // Every output is summed whole by one task, in the same order whatever the partition.
    let width = if data.len() < PARALLEL_MIN_ENTRIES {
        n
    } else {
        n.div_ceil(rayon::current_num_threads()).max(64)
    };
    let offsets: Vec<usize> = (0..n).step_by(width).collect();
    by_groups(&offsets, zs, m, outs, |o, zi| {
        adjoint_group_cols(data, n, o, width.min(n - o), zi)
    });
}

pub(super) fn apply_any<E: Entry>(data: &[E], n: usize, x: &[f64], out: &mut [f64]) {
    if data.len() < PARALLEL_MIN_ENTRIES {
        apply_rows(data, n, x, out);
        return;
    }
    // Each output entry is computed by exactly one task in a fixed order, so the result does
    // not depend on the number of threads.
    let rows_per_task = (out.len() / 8).max(4) / 4 * 4;
    team::for_each_chunk(out, rows_per_task, |t, o| {
        let start = t * rows_per_task * n;
        apply_rows(&data[start..start + o.len() * n], n, x, o);
    });
}

pub(super) fn adjoint_any<E: Entry>(data: &[E], n: usize, z: &[f64], out: &mut [f64]) {
    if data.len() < PARALLEL_MIN_ENTRIES {
        adjoint_rows(data, n, 0, z, out);
        return;
    }
    // Tasks own disjoint ranges of the output and sum over all rows in the same order.
    let cols_per_task = n.div_ceil(rayon::current_num_threads().max(1)).max(64);
    team::for_each_chunk(out, cols_per_task, |t, o| {
        adjoint_rows(data, n, t * cols_per_task, z, o)
    });
}

/// `out[k] = ⟨A_{rows[k]}, x⟩` from the stored columns (n entries each): a mini-batch's
/// measurements, at the cost of their rows alone.
/// Four rows at a time in AVX2 where the CPU has it: each row's sum runs in [`dot`]'s order
/// either way, so the results are bit-identical.
pub(super) fn apply_selected<E: Entry>(
    data: &[E],
    n: usize,
    rows: &[usize],
    x: &[f64],
    out: &mut [f64],
) {
    let row = |i: usize| &data[i * n..(i + 1) * n];
    let mut k = 0;
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        while k + 4 <= rows.len() {
            let four = [
                row(rows[k]),
                row(rows[k + 1]),
                row(rows[k + 2]),
                row(rows[k + 3]),
            ];
            // SAFETY: the CPU has AVX2 (checked at run time).
            let d = unsafe { dot4_avx2(four, x) };
            out[k..k + 4].copy_from_slice(&d);
            k += 4;
        }
    }
    for (o, &i) in out[k..rows.len()].iter_mut().zip(&rows[k..]) {
        *o = dot(row(i), x);
    }
}

/// `out = Σ_k z_k vec(A_{rows[k]})`, rows in the order given.
pub(super) fn adjoint_selected<E: Entry>(
    data: &[E],
    n: usize,
    rows: &[usize],
    z: &[f64],
    out: &mut [f64],
) {
    out.fill(0.0);
    let row = |i: usize| &data[i * n..(i + 1) * n];
    // four rows a sweep: a quarter of the loads and stores of `out`
    let mut quads = rows.chunks_exact(4).zip(z.chunks_exact(4));
    for (r, zq) in &mut quads {
        let (a0, a1, a2, a3) = (row(r[0]), row(r[1]), row(r[2]), row(r[3]));
        for (j, o) in out.iter_mut().enumerate() {
            *o += (zq[0] * a0[j].get() + zq[1] * a1[j].get())
                + (zq[2] * a2[j].get() + zq[3] * a3[j].get());
        }
    }
    let done = rows.len() / 4 * 4;
    for (&i, &zk) in rows[done..].iter().zip(&z[done..]) {
        for (o, a) in out.iter_mut().zip(row(i)) {
            *o += zk * a.get();
        }
    }
}

/// Four independent accumulators let the compiler vectorise the sum without `-ffast-math`.
#[inline(always)]
fn dot<E: Entry>(a: &[E], b: &[f64]) -> f64 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0.0f64; 4];
    let (ac, ar) = a.split_at(a.len() / 4 * 4);
    let (bc, br) = b.split_at(ac.len());
    for (x, y) in ac.chunks_exact(4).zip(bc.chunks_exact(4)) {
        acc[0] += x[0].get() * y[0];
        acc[1] += x[1].get() * y[1];
        acc[2] += x[2].get() * y[2];
        acc[3] += x[3].get() * y[3];
    }
    let mut s = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    for (x, y) in ar.iter().zip(br) {
        s += x.get() * y;
    }
    s
}

/// Below this many stored entries the operator runs on one thread: the hand-off costs more
/// than it saves.
const PARALLEL_MIN_ENTRIES: usize = 1 << 20;

/// Whether the CPU has AVX2, asked once: the kernels are then run as compiled for it (the
/// default target has no AVX; users need not build with target-cpu=native). Only the vector
/// width changes, not the order of any sum (no FMA), so results are bit-identical either way.
fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static AVX2: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AVX2.get_or_init(|| std::is_x86_feature_detected!("avx2"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the CPU has AVX2 and AVX-512VL (with AVX-512F, FMA and F16C, and the system
/// saving their registers), asked once: see [`fused_rows`].
fn has_avx512vl() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static VL: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        // the AVX-512 build's target features imply FMA and F16C too (unused, but promised)
        *VL.get_or_init(|| {
            has_fma()
                && std::is_x86_feature_detected!("f16c")
                && std::is_x86_feature_detected!("avx512f")
                && std::is_x86_feature_detected!("avx512vl")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the CPU has AVX2 and FMA, asked once (see [`has_avx2`]).
fn has_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static FMA: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *FMA.get_or_init(|| has_avx2() && std::is_x86_feature_detected!("fma"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `fn $name(args) -> ret` runs `$fast(args)` as compiled for the target features `$features`
/// when `$has()` says the CPU has them, and `$slow(args)` as compiled for the default target
/// otherwise (the default target has no AVX; users need not build with target-cpu=native).
macro_rules! runtime_dispatch {
    ($features:literal if $has:ident: $name:ident => $fast:expr, $slow:expr;
     ($($arg:ident: $ty:ty),*) -> $ret:ty) => {
        fn $name<E: Entry>($($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = $features)]
                unsafe fn fast<E: Entry>($($arg: $ty),*) -> $ret {
                    $fast($($arg),*)
                }
                if $has() {
                    // SAFETY: the CPU has the features (checked at run time).
                    return unsafe { fast($($arg),*) };
                }
            }
            $slow($($arg),*)
        }
    };
}

/// The single-product kernels, as compiled for AVX2 when the CPU has it. Only the vector
/// width changes, not the order of any sum, so the results are bit-identical either way.
macro_rules! avx2_dispatch {
    ($name:ident => $kernel:ident ($($arg:ident: $ty:ty),*) -> $ret:ty) => {
        runtime_dispatch!("avx2" if has_avx2: $name => $kernel::<E>, $kernel::<E>;
            ($($arg: $ty),*) -> $ret);
    };
}

/// The batch kernels, which do eight products per loaded entry and are limited by arithmetic:
/// with AVX2 and FMA the kernel is compiled for both and fuses its multiply–adds
/// (`FMA = true`); otherwise it runs unfused for the default target. The two differ by
/// rounding only.
macro_rules! fma_dispatch {
    ($name:ident => $kernel:ident ($($arg:ident: $ty:ty),*) -> $ret:ty) => {
        runtime_dispatch!("avx2,fma" if has_fma: $name => $kernel::<E, true>, $kernel::<E, false>;
            ($($arg: $ty),*) -> $ret);
    };
}

/// [`apply_rows_kernel`], in AVX2 intrinsics when the CPU has it (left to itself the compiler
/// vectorises the four dot products across rows, with shuffles): the same operations in the
/// same order, so the results are bit-identical either way.
fn apply_rows<E: Entry>(data: &[E], n: usize, x: &[f64], out: &mut [f64]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU has AVX2 (checked at run time).
        return unsafe { apply_rows_avx2(data, n, x, out) };
    }
    apply_rows_kernel(data, n, x, out)
}

/// [`fused_rows_kernel`] for C inputs x_c against the same rows, in AVX2 intrinsics when the
/// CPU has it: one pass over the rows serves all C. The first G inputs get their gradient,
/// the others their residual alone (a record that needs only the loss). Each input's sums
/// run in the generic single kernel's order whatever C and G are, so every (r_c, g_c) is
/// bit-identical to `fused_rows_kernel(x_c)`, and every residual to [`apply_rows`]'.
///
/// Two inputs or more keep 4C dot-product accumulators, the update's 4G broadcast residuals
/// and four rows live at once, more than AVX2's 16 vector registers: the compiler spills them
/// to the stack inside the loop. Where the CPU has AVX-512VL the same kernel is compiled with
/// it, which gives the same 256-bit instructions 32 registers — the same operations in the
/// same order, so the same bits (the lane sums and the tail rows, which the compiler would
/// turn into 512-bit arithmetic there, are AVX2 functions of their own) — and a pass of two or
/// three inputs takes 10–28% less time ((20, 5, 400) to (50, 10, 1500), Intel Xeon with
/// AVX-512); one input, which does not spill, takes the AVX2 build. With `prefetch` each
/// sweep asks for the next rows [`PREFETCH_AHEAD`] bytes ahead ([`FusedPlan::PoolPrefetch`]).
fn fused_rows<E: Entry, const C: usize, const G: usize>(
    prefetch: bool,
    data: &[E],
    n: usize,
    x: [&[f64]; C],
    y: &[f64],
    r: [&mut [f64]; C],
    g: [&mut [f64]; G],
) {
    fused_rows_built(C > 1, prefetch, data, n, x, y, r, g)
}

/// [`fused_rows`], taking the AVX-512VL build where the CPU has it only if `wide` (the unit
/// test holds the AVX2 build to the same bits on a CPU that has both).
#[allow(clippy::too_many_arguments)]
fn fused_rows_built<E: Entry, const C: usize, const G: usize>(
    wide: bool,
    prefetch: bool,
    data: &[E],
    n: usize,
    x: [&[f64]; C],
    y: &[f64],
    r: [&mut [f64]; C],
    g: [&mut [f64]; G],
) {
    #[cfg(target_arch = "x86_64")]
    if wide && has_avx512vl() {
        // SAFETY: the CPU has AVX2, FMA, F16C, AVX-512F and AVX-512VL (checked at run time).
        return unsafe { fused_rows_avx512vl(prefetch, data, n, x, y, r, g) };
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU has AVX2 (checked at run time).
        return unsafe { fused_rows_avx2(prefetch, data, n, x, y, r, g) };
    }
    fused_rows_generic(data, n, x, y, r, g)
}

/// [`fused_rows`] for the default target: one input after another.
fn fused_rows_generic<E: Entry, const C: usize, const G: usize>(
    data: &[E],
    n: usize,
    x: [&[f64]; C],
    y: &[f64],
    r: [&mut [f64]; C],
    g: [&mut [f64]; G],
) {
    let mut g = g.into_iter();
    for (x, r) in x.into_iter().zip(r) {
        match g.next() {
            Some(g) => fused_rows_kernel(data, n, x, y, r, g),
            None => residual_rows(data, n, x, y, r),
        }
    }
}

/// r_i = ⟨row_i, x⟩ − y_i for consecutive rows: [`apply_rows`]' products.
fn residual_rows<E: Entry>(data: &[E], n: usize, x: &[f64], y: &[f64], r: &mut [f64]) {
    apply_rows(data, n, x, r);
    r.iter_mut().zip(y).for_each(|(ri, yi)| *ri -= yi);
}

/// [`dot4`] in AVX2: lane l of row q's accumulator sums a_q[j]·x[j] over j ≡ l (mod 4),
/// products rounded before they are added (no FMA), the lanes added as (l0 + l1) + (l2 + l3),
/// then the tail in order.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn dot4_avx2<E: Entry>(a: [&[E]; 4], x: &[f64]) -> [f64; 4] {
    use std::arch::x86_64::*;
    let n = x.len();
    let full = n / 4 * 4;
    let mut acc = [_mm256_setzero_pd(); 4];
    let mut j = 0;
    while j < full {
        // SAFETY: j + 4 <= full <= n, the length of x and of every row.
        unsafe {
            let xv = _mm256_loadu_pd(x.as_ptr().add(j));
            for q in 0..4 {
                let av = E::load4(a[q].as_ptr().add(j));
                acc[q] = _mm256_add_pd(acc[q], _mm256_mul_pd(av, xv));
            }
        }
        j += 4;
    }
    finish_dot4(acc, a, x)
}

/// The four dot products from their lane accumulators: lanes added as (l0 + l1) + (l2 + l3),
/// then the tail past the last whole vector in order. One function for every AVX2 kernel, so
/// that their residuals agree bit for bit. Never inlined: in the AVX-512 build of the fused
/// kernel the compiler vectorised these scalar sums into 512-bit instructions (which lower
/// some CPUs' clock); written with 256-bit intrinsics instead, inlined, the pass of three
/// inputs at (100, 20, 5000) took 21–24 ms against 17.5 ms, and out of line 18.8 ms.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline(never)]
fn finish_dot4<E: Entry>(
    acc: [std::arch::x86_64::__m256d; 4],
    a: [&[E]; 4],
    x: &[f64],
) -> [f64; 4] {
    let (n, full) = (x.len(), x.len() / 4 * 4);
    std::array::from_fn(|q| {
        let mut lanes = [0.0f64; 4];
        // SAFETY: `lanes` holds four f64.
        unsafe { std::arch::x86_64::_mm256_storeu_pd(lanes.as_mut_ptr(), acc[q]) };
        let mut s = (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
        for j in full..n {
            s += a[q][j].get() * x[j];
        }
        s
    })
}

/// g[j] += (r0·a0[j] + r1·a1[j]) + (r2·a2[j] + r3·a3[j]) for j ≥ `from`, the four-row update
/// in the order every fused kernel uses (the vector kernels for their tails).
#[inline(always)]
fn add_four_rows<E: Entry>(g: &mut [f64], a: [&[E]; 4], r: [f64; 4], from: usize) {
    let [r0, r1, r2, r3] = r;
    for j in from..g.len() {
        g[j] +=
            (r0 * a[0][j].get() + r1 * a[1][j].get()) + (r2 * a[2][j].get() + r3 * a[3][j].get());
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn apply_rows_avx2<E: Entry>(data: &[E], n: usize, x: &[f64], out: &mut [f64]) {
    let mut rows = data.chunks_exact(4 * n);
    let mut outs = out.chunks_exact_mut(4);
    for (block, o) in (&mut rows).zip(&mut outs) {
        o.copy_from_slice(&dot4_avx2(four_rows(block, n), x));
    }
    for (a, o) in rows.remainder().chunks_exact(n).zip(outs.into_remainder()) {
        *o = dot(a, x);
    }
}

/// g[j..j + 4] += (r0·a0 + r1·a1) + (r2·a2 + r3·a3) on four lanes: [`add_four_rows`]'s update,
/// for every AVX2 kernel that adds a group of four rows to a gradient.
///
/// # Safety
/// `g` points to four writable f64, and the CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn add_four_lanes(
    g: *mut f64,
    a: [std::arch::x86_64::__m256d; 4],
    r: [std::arch::x86_64::__m256d; 4],
) {
    use std::arch::x86_64::*;
    let t01 = _mm256_add_pd(_mm256_mul_pd(r[0], a[0]), _mm256_mul_pd(r[1], a[1]));
    let t23 = _mm256_add_pd(_mm256_mul_pd(r[2], a[2]), _mm256_mul_pd(r[3], a[3]));
    // SAFETY: the caller's contract
    unsafe {
        _mm256_storeu_pd(
            g,
            _mm256_add_pd(_mm256_loadu_pd(g), _mm256_add_pd(t01, t23)),
        )
    };
}

/// `fn $name`: [`fused_rows_kernel`] in AVX2 for C inputs, software-pipelined: one sweep
/// over j computes the dot products of group q + 1 (streaming its rows from memory) and adds
/// group q's r_i·a_i into g (re-reading its rows from cache). Alternating a memory phase and
/// a cache phase, as the generic kernel does, left memory idle half the time (1.22 ms against
/// 0.67 ms a pass at (50, 10, 1500) on two threads). Each entry loaded serves all C inputs;
/// each input's sums run in the generic kernel's order, so the results are bit-identical.
/// Compiled once per set of target `$features` (see [`fused_rows`]): the same 256-bit
/// instructions in the same order whichever, only the registers they may use differ.
macro_rules! fused_rows_simd {
    ($name:ident, $features:literal) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)]
        fn $name<E: Entry, const C: usize, const G: usize>(
            prefetch: bool,
            data: &[E],
            n: usize,
            x: [&[f64]; C],
            y: &[f64],
            mut r: [&mut [f64]; C],
            g: [&mut [f64]; G],
        ) {
            use std::arch::x86_64::*;
            let ahead = if prefetch {
                PREFETCH_AHEAD / std::mem::size_of::<E>()
            } else {
                0
            };
            let per_line = 64 / std::mem::size_of::<E>();
            // The prefetching sweep's requests for one line of a row of the next group (the
            // one whose dot products the sweep computes), at column j: that row `ahead`
            // entries on, into L1, and the same row of the group after it (4n entries on) at
            // j, into L2, a whole group's sweep before its dot products read it. The near
            // request alone left a group's rows arriving from L3 or memory while the sweep
            // waited; the far one brings the group after next into L2 while the sweep
            // computes (three groups of four rows: 240 KB at n = 2500, a quarter of a 1 MB
            // L2). On the AMD EPYC VM of issue 24, criterion medians in turn, near only →
            // both: (50, 10, 1500) 517/579/571 → 473/488/485 µs, (100, 20, 5000)
            // 13.2/12.7/12.6 → 11.6/12.4/12.2 ms, two inputs 14.7/14.2/13.0 → 11.3/13.8/11.3
            // ms; (20, 5, 400) and (27, 6, 600), in cache, unchanged; the far one alone took
            // 0.90× the medium protocol's time but was slower with two inputs at (100, 20,
            // 5000). Hints only: an address past the row or the matrix is never read.
            let ask_ahead = |row: *const E, j: usize| {
                _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(j + ahead) as *const i8);
                _mm_prefetch::<_MM_HINT_T1>(row.wrapping_add(4 * n + j) as *const i8);
            };
            let full = n / 4 * 4;
            let groups = data.len() / (4 * n);
            let group = |q: usize| four_rows(&data[q * 4 * n..(q + 1) * 4 * n], n);
            let residuals =
                |r: &mut [&mut [f64]; C], q: usize, d: [[f64; 4]; C]| -> [[f64; 4]; C] {
                    std::array::from_fn(|c| {
                        let rq: [f64; 4] = std::array::from_fn(|l| d[c][l] - y[4 * q + l]);
                        r[c][4 * q..4 * q + 4].copy_from_slice(&rq);
                        rq
                    })
                };
            if groups > 0 {
                let first = std::array::from_fn(|c| dot4_avx2(group(0), x[c]));
                let mut current = residuals(&mut r, 0, first);
                for q in 0..groups {
                    let a = group(q);
                    let next = (q + 1 < groups).then(|| group(q + 1));
                    let rv: [[__m256d; 4]; C] = current.map(|rc| rc.map(|v| _mm256_set1_pd(v)));
                    let mut acc = [[_mm256_setzero_pd(); 4]; C];
                    // raw row pointers, and no test inside the loop but the bound: with the
                    // slices and the per-chunk tests of whether there is a next group and
                    // whether to prefetch, the compiler kept three row pointers on the stack
                    // and reloaded them in every chunk
                    let ap: [*const E; 4] = a.map(|row| row.as_ptr());
                    let xp: [*const f64; C] = x.map(|xc| xc.as_ptr());
                    let gp: [*mut f64; G] = std::array::from_fn(|c| g[c].as_mut_ptr());
                    // SAFETY (both closures): j + 4 <= full <= n, the length of every x, g
                    // and row
                    let update = |j: usize| unsafe {
                        let av: [__m256d; 4] = std::array::from_fn(|l| E::load4(ap[l].add(j)));
                        for c in 0..G {
                            add_four_lanes(gp[c].add(j), av, rv[c]);
                        }
                    };
                    match next {
                        Some(b) => {
                            let bp: [*const E; 4] = b.map(|row| row.as_ptr());
                            let mut chunk = |j: usize| unsafe {
                                let bv: [__m256d; 4] =
                                    std::array::from_fn(|l| E::load4(bp[l].add(j)));
                                for c in 0..C {
                                    let xv = _mm256_loadu_pd(xp[c].add(j));
                                    for l in 0..4 {
                                        acc[c][l] =
                                            _mm256_add_pd(acc[c][l], _mm256_mul_pd(bv[l], xv));
                                    }
                                }
                                update(j);
                            };
                            let mut j = 0;
                            if ahead > 0 {
                                // a line of each next row asked for, then the line's chunks
                                let lines = full / per_line * per_line;
                                while j < lines {
                                    for row in bp {
                                        ask_ahead(row, j);
                                    }
                                    for _ in 0..per_line / 4 {
                                        chunk(j);
                                        j += 4;
                                    }
                                }
                            }
                            if ahead > 0 && j < full {
                                // the last, partial line's requests, as in every other line
                                for row in bp {
                                    ask_ahead(row, j);
                                }
                            }
                            while j < full {
                                chunk(j);
                                j += 4;
                            }
                        }
                        None => {
                            let mut j = 0;
                            while j < full {
                                update(j);
                                j += 4;
                            }
                        }
                    }
                    for c in 0..G {
                        add_four_rows(g[c], a, current[c], full);
                    }
                    if let Some(b) = next {
                        let d = std::array::from_fn(|c| finish_dot4(acc[c], b, x[c]));
                        current = residuals(&mut r, q + 1, d);
                    }
                }
            }
            fused_rows_tail(
                &data[4 * groups * n..],
                n,
                x,
                &y[4 * groups..],
                r,
                g,
                4 * groups,
            );
        }
    };
}

/// The rows past the last whole group of four, one at a time, for both builds of the fused
/// kernel: a function of its own so that the AVX-512 build does not compile (and run) these
/// loops with 512-bit instructions. With it and [`finish_dot4`] out of line, the AVX-512
/// build's only 512-bit instructions zero its accumulators' stack copies (stores, which
/// lower no clock below what AVX2's arithmetic does).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline(never)]
fn fused_rows_tail<E: Entry, const C: usize, const G: usize>(
    rows: &[E],
    n: usize,
    x: [&[f64]; C],
    y: &[f64],
    r: [&mut [f64]; C],
    g: [&mut [f64]; G],
    done: usize,
) {
    let mut g = g.into_iter();
    for (xc, rc) in x.into_iter().zip(r) {
        let rc = &mut rc[done..];
        match g.next() {
            Some(gc) => fused_single_rows(rows, n, xc, y, rc, gc),
            None => residual_rows(rows, n, xc, y, rc),
        }
    }
}
fused_rows_simd!(fused_rows_avx2, "avx2");
fused_rows_simd!(fused_rows_avx512vl, "avx2,avx512f,avx512vl");
avx2_dispatch!(adjoint_rows => adjoint_rows_kernel(
    data: &[E], n: usize, offset: usize, z: &[f64], out: &mut [f64]
) -> ());
fma_dispatch!(apply_group_rows => apply_group_kernel(
    data: &[E], n: usize, first: usize, len: usize, xi: &[f64]
) -> Vec<f64>);
/// [`adjoint_group_kernel`] for AVX2 with FMA when the CPU has both, written with
/// intrinsics: left to itself the compiler vectorises across columns (gathering and
/// shuffling) instead of across the group, and keeps the group values on the stack. Same
/// operations in the same order as the generic kernel with `FMA = true`.
fn adjoint_group_cols<E: Entry>(
    data: &[E],
    n: usize,
    offset: usize,
    width: usize,
    zi: &[f64],
) -> Vec<f64> {
    #[cfg(target_arch = "x86_64")]
    if has_fma() {
        // SAFETY: the CPU supports AVX2 and FMA (checked at run time).
        return unsafe { adjoint_group_avx2_fma(data, n, offset, width, zi) };
    }
    adjoint_group_kernel::<E, false>(data, n, offset, width, zi)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn adjoint_group_avx2_fma<E: Entry>(
    data: &[E],
    n: usize,
    offset: usize,
    width: usize,
    zi: &[f64],
) -> Vec<f64> {
    use std::arch::x86_64::*;
    const _: () = assert!(GROUP == 8, "two 4-lane registers per group");
    let m = data.len() / n;
    let row = |i: usize| &data[i * n + offset..i * n + offset + width];
    let mut out = vec![0.0; width * GROUP];
    let full = m / 4 * 4;
    let load = |v: &[f64]| -> (__m256d, __m256d) {
        let v: &[f64; 8] = v.try_into().expect("one group");
        // SAFETY: `v` holds 8 f64, so both unaligned 4-lane loads are in bounds.
        unsafe {
            (
                _mm256_loadu_pd(v.as_ptr()),
                _mm256_loadu_pd(v.as_ptr().add(4)),
            )
        }
    };
    let store = |o: &mut [f64], lo: __m256d, hi: __m256d| {
        let o: &mut [f64; 8] = o.try_into().expect("one group");
        // SAFETY: `o` holds 8 f64, so both unaligned 4-lane stores are in bounds.
        unsafe {
            _mm256_storeu_pd(o.as_mut_ptr(), lo);
            _mm256_storeu_pd(o.as_mut_ptr().add(4), hi);
        }
    };
    for i in (0..full).step_by(4) {
        let z: [(__m256d, __m256d); 4] =
            std::array::from_fn(|q| load(&zi[(i + q) * GROUP..(i + q + 1) * GROUP]));
        let (a0, a1, a2, a3) = (row(i), row(i + 1), row(i + 2), row(i + 3));
        for ((((o, e0), e1), e2), e3) in out.chunks_exact_mut(GROUP).zip(a0).zip(a1).zip(a2).zip(a3)
        {
            let (mut lo, mut hi) = load(o);
            for (zq, e) in z.iter().zip([e0, e1, e2, e3]) {
                let d = _mm256_set1_pd(e.get());
                lo = _mm256_fmadd_pd(zq.0, d, lo);
                hi = _mm256_fmadd_pd(zq.1, d, hi);
            }
            store(o, lo, hi);
        }
    }
    for i in full..m {
        let (zlo, zhi) = load(&zi[i * GROUP..(i + 1) * GROUP]);
        for (o, e) in out.chunks_exact_mut(GROUP).zip(row(i)) {
            let d = _mm256_set1_pd(e.get());
            let (lo, hi) = load(o);
            store(o, _mm256_fmadd_pd(zlo, d, lo), _mm256_fmadd_pd(zhi, d, hi));
        }
    }
    out
}

/// Row blocks of the fused kernel above the one-thread size: a fixed number, whatever the
/// thread count and the plan, so that every sum runs in the same order on any machine (each
/// block's partial gradient is summed in row order, and the partials in block order).
const FUSED_BLOCKS: usize = 16;

/// The fused pass splits its rows into [`FUSED_BLOCKS`] blocks from this many stored entries
/// (512 KB in f64, 256 KB in f32) on, and [`Planner`] times the ways of running them, on the
/// pool or on one thread: which wins depends on the machine. Each thread's share may then
/// stay in its own core's L2 from one pass to the next where the whole matrix does not fit
/// one core's: at (20, 5, 400) (1.3 MB) on a 2-core AMD EPYC VM with 1 MB of L2 per core,
/// the small protocol's whole run took 0.87× its time on one thread (`farm-bench`, 40 pairs);
/// on an Intel VM the two were even there (23.6 against 23.3 µs a pass), where the planner
/// keeps the pool. Below this size a pass is a few µs, about what handing half of it to the
/// second thread costs, and runs as one block on the calling thread (results differ from the
/// blocks' by rounding): on the AMD VM a whole run at 10 × 10 × 400 (40 000 entries) took
/// 1.06–1.09× with the blocks, at 20 × 20 × 200 (80 000) 0.97× (`farm-bench` medians).
const FUSED_PARALLEL_MIN_ENTRIES: usize = 1 << 16;

/// Below this size, where the matrix stays in each core's cache and a pass is bound by
/// arithmetic, a pass of several inputs may also split its inputs ([`FusedPlan::Inputs`]).
const FUSED_INPUTS_MAX_ENTRIES: usize = 1 << 18;

/// How the fused pass runs: its row blocks above [`FUSED_PARALLEL_MIN_ENTRIES`], its inputs
/// below [`FUSED_INPUTS_MAX_ENTRIES`] ([`FusedPlan::Inputs`]). Every plan sums in the same
/// order (each block's rows in order, the blocks' partial gradients in block order; each
/// input's sums its own), so every plan's residuals and gradients are bit-identical: only
/// their speed
/// differs, and which is fastest depends on the CPU, its caches and the size (on a 2-core
/// Intel VM one sweep per block beat two; on a 2-core AMD EPYC VM two sweeps over the matrix
/// once beat one by 1.4×, and the one sweep now gains from prefetching its rows; at small
/// sizes waking the second thread for each pass costs a quarter of the run). [`Planner`]
/// times them on the operator's first calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FusedPlan {
    /// As [`FusedPlan::Pool`], each sweep asking for its next rows' entries [`PREFETCH_AHEAD`]
    /// ahead of their use, and for the rows of the group after them a group ahead, into L2
    /// (software prefetches, which change no result; see `ask_ahead` in the kernel). On a
    /// 2-core AMD EPYC (Zen 4) VM with a 32 MB L3 the hardware prefetcher left the pass's
    /// four row streams short: criterion medians of the near requests alone, without → with,
    /// (50, 10, 1500) 0.90/0.56 → 0.52/0.53 ms one gradient, 1.01/0.91 → 0.80/0.77 ms two;
    /// (100, 20, 5000) 15.0/14.3 → 12.1/11.8 ms and 18.4 → 13.3/14.3 ms (two runs each, in
    /// turn).
    PoolPrefetch,
    /// One sweep per block (its rows' dot products, then from cache their gradient), the
    /// blocks over the thread pool.
    Pool,
    /// One sweep per block, the blocks in turn on the calling thread (no hand-off).
    Serial,
    /// Two sweeps per block (the residuals, then the gradient), the blocks over the pool.
    SplitPool,
    /// Two sweeps per block, the blocks in turn on the calling thread.
    SplitSerial,
    /// A pass of several inputs as two passes side by side: the first input on one thread,
    /// the others on another, each over every row as [`FusedPlan::Serial`] runs them. Where
    /// the matrix stays in each core's cache (below [`FUSED_INPUTS_MAX_ENTRIES`]) a pass is
    /// bound by arithmetic, which grows with the inputs while the rows' blocks do not split
    /// it well (the second thread's hand-off and the partial gradients cost about what it
    /// saves); the inputs do split it. One input: as [`FusedPlan::Serial`].
    Inputs,
}

impl FusedPlan {
    /// Every plan, [`FusedPlan::PoolPrefetch`] first.
    pub const ALL: [FusedPlan; 6] = [
        FusedPlan::PoolPrefetch,
        FusedPlan::Pool,
        FusedPlan::Serial,
        FusedPlan::SplitPool,
        FusedPlan::SplitSerial,
        FusedPlan::Inputs,
    ];

    /// The plans timed above [`FUSED_PARALLEL_MIN_ENTRIES`], where the rows' blocks split
    /// the pass ([`FusedPlan::ALL`] instead for several inputs below
    /// [`FUSED_INPUTS_MAX_ENTRIES`]); [`FusedPlan::PoolPrefetch`], the default, first.
    pub const ROWS: [FusedPlan; 5] = [
        FusedPlan::PoolPrefetch,
        FusedPlan::Pool,
        FusedPlan::Serial,
        FusedPlan::SplitPool,
        FusedPlan::SplitSerial,
    ];

    /// The plans timed below it for a pass of several inputs on two threads or more;
    /// [`FusedPlan::Serial`], the default, first.
    const SMALL: [FusedPlan; 2] = [FusedPlan::Serial, FusedPlan::Inputs];

    pub fn name(self) -> &'static str {
        match self {
            FusedPlan::PoolPrefetch => "pool_prefetch",
            FusedPlan::Pool => "pool",
            FusedPlan::Serial => "serial",
            FusedPlan::SplitPool => "split_pool",
            FusedPlan::SplitSerial => "split_serial",
            FusedPlan::Inputs => "inputs",
        }
    }

    /// Which threads run the plan's sweeps (the planner times plans on the same threads on
    /// equal terms): the pool's, the caller's alone, or one per group of inputs.
    fn threads(self) -> u8 {
        match self {
            FusedPlan::PoolPrefetch | FusedPlan::Pool | FusedPlan::SplitPool => 0,
            FusedPlan::Serial | FusedPlan::SplitSerial => 1,
            FusedPlan::Inputs => 2,
        }
    }

    fn sweep(self) -> Sweep {
        match self {
            FusedPlan::PoolPrefetch => Sweep::Prefetched,
            FusedPlan::SplitPool | FusedPlan::SplitSerial => Sweep::Two,
            FusedPlan::Pool | FusedPlan::Serial | FusedPlan::Inputs => Sweep::One,
        }
    }
}

/// How a block's rows are swept: once ([`fused_rows`]), once asking for the next rows ahead,
/// or twice ([`split_rows`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sweep {
    One,
    Prefetched,
    Two,
}

/// How far ahead of its use, in bytes, a prefetching sweep asks for the next rows (128 f64
/// entries): 64, 256 and 512 entries were no faster on the AMD VM of
/// [`FusedPlan::PoolPrefetch`]. One request per 64-byte line.
const PREFETCH_AHEAD: usize = 1024;

/// Consecutive calls each plan runs before one is chosen; the fastest of all but the first
/// counts. Consecutive, because a plan's cost depends on what came before: a pool's second
/// thread, left idle by a one-thread plan, has gone to sleep and must be woken; and the first
/// call of a plan may meet page faults or a busy moment.
const PLAN_TRIALS: usize = 6;

/// A plan whose first counted trial takes this multiple of the default's best is not tried
/// further: one sample that slow marks it as no contender (the pool's plans differ by a few
/// percent to a fifth, one thread by 2.5× at large sizes). On a 2-core AMD EPYC VM a one-thread
/// plan's pass took 2.5–3× the pool's at (50, 10, 1500), and its trials had cost the medium
/// run 4% of its time.
const GIVE_UP: f64 = 1.5;

/// Calls run with the default plan before any is timed: the first ones meet page faults,
/// threads still starting and a clock still rising, none of which the plans' costs later have.
const PLAN_WARMUP: usize = 16;

/// Calls after which the plans are timed again (their trials then cost about 1% of the
/// calls in between).
const PLAN_AGAIN_AFTER: usize = 2000;

/// A plan on other threads than the default's ([`FusedPlan::PoolPrefetch`]; below the
/// parallel size, [`FusedPlan::Serial`]) replaces it only when its best time is below this
/// fraction of the default's (plans on the same threads compete as timed: at the default
/// problem's size on the AMD VM the pool's sweeps with and without prefetching were within
/// 3% of each other, inside this margin, and either may be the faster there). On the 2-core
/// Intel VM of the sessions before the default run took 0.48 s with the pool, 0.55 s with
/// two sweeps and 0.56 s on one thread, yet one run in five timed one thread up to 10% below
/// the pool (whose second thread had to be woken in the trials); on issue 24's AMD VM
/// streaming twice once took 0.71 of one sweep's time.
const CLEARLY_FASTER: f64 = 0.85;

/// Chooses one operator's [`FusedPlan`] at run time: after a warm-up, its calls above the
/// one-thread size (below it, its passes of several inputs where there are two threads) run
/// the plans in turn (results are the same whichever runs), each timed, and then the fastest
/// serves for [`PLAN_AGAIN_AFTER`] calls before the plans are timed again; separately for
/// each kind of pass ([`plan_key`]: inputs, and how many want a gradient).
#[derive(Debug, Default)]
pub struct Planner {
    forced: Option<FusedPlan>,
    /// Per kind of pass (index [`plan_key`] − 1): the fastest time met per plan, calls timed.
    trials: std::sync::Mutex<Vec<PlanTrials>>,
}

#[derive(Debug, Clone, Default)]
struct PlanTrials {
    /// Calls run before the trials.
    warmup: usize,
    /// Calls since the plan was chosen.
    since_chosen: usize,
    /// The last plan chosen (still reported while the plans are timed again).
    last: Option<FusedPlan>,
    best: [f64; FusedPlan::ALL.len()],
    calls: usize,
    chosen: Option<FusedPlan>,
}

impl Planner {
    /// Always `plan` (benchmarks and the test that every plan agrees).
    pub fn forced(plan: FusedPlan) -> Self {
        Self {
            forced: Some(plan),
            ..Self::default()
        }
    }

    /// The plan for the next pass of kind `key` ([`plan_key`]) among `plans` (the default
    /// first; the same for every call of one operator), and whether to time it.
    fn next(&self, key: usize, plans: &[FusedPlan]) -> (FusedPlan, bool) {
        if let Some(plan) = self.forced {
            return (plan, false);
        }
        let mut trials = self.trials.lock().expect("not poisoned");
        if trials.len() < key {
            trials.resize(key, PlanTrials::default());
        }
        let t = &mut trials[key - 1];
        match t.chosen {
            Some(_) if t.since_chosen >= PLAN_AGAIN_AFTER => {
                // timed again now and then: a choice made in a noisy moment, or for a phase of
                // the run that has passed, does not stand for the whole run
                t.since_chosen = 0;
                t.calls = 0;
                t.chosen = None;
                (plans[0], true)
            }
            Some(plan) => {
                t.since_chosen += 1;
                (plan, false)
            }
            None if t.warmup < PLAN_WARMUP => {
                t.warmup += 1;
                (plans[0], false)
            }
            None => (plans[t.calls / PLAN_TRIALS], true),
        }
    }

    fn record(&self, key: usize, plans: &[FusedPlan], plan: FusedPlan, seconds: f64) {
        let mut trials = self.trials.lock().expect("not poisoned");
        let t = &mut trials[key - 1];
        // another thread's call may have finished the trials, or moved them to the next plan
        if t.chosen.is_some() || plans[t.calls / PLAN_TRIALS] != plan {
            return;
        }
        let i = t.calls / PLAN_TRIALS;
        t.best[i] = match t.calls % PLAN_TRIALS {
            0 => f64::INFINITY,
            _ => t.best[i].min(seconds),
        };
        t.calls += 1;
        if i > 0 && t.calls % PLAN_TRIALS == 2 && t.best[i] > GIVE_UP * t.best[0] {
            // the rest of this plan's trials skipped (see GIVE_UP)
            t.calls = (i + 1) * PLAN_TRIALS;
        }
        if t.calls == PLAN_TRIALS * plans.len() {
            // the fastest, but a plan on other threads than the default's (the pool; below the
            // parallel size, one thread) must be clearly faster: near-ties between them are
            // decided by noise, and the pool's own timing suffers most from it (its second
            // thread may be woken late); plans on the same threads compete as timed
            let handicap = |p: usize| {
                if plans[p].threads() == plans[0].threads() {
                    1.0
                } else {
                    1.0 / CLEARLY_FASTER
                }
            };
            let fastest = (0..plans.len())
                .min_by(|&a, &b| (t.best[a] * handicap(a)).total_cmp(&(t.best[b] * handicap(b))))
                .expect("plans");
            t.chosen = Some(plans[fastest]);
            t.last = t.chosen;
        }
    }

    /// The plan last chosen for one input per pass (or forced).
    pub fn chosen(&self) -> Option<FusedPlan> {
        self.forced.or_else(|| {
            let trials = self.trials.lock().expect("not poisoned");
            trials.first().and_then(|t| t.last)
        })
    }
}

/// r_c = 𝒜(x_c) − y and g_c = 𝒜*(r_c) for C inputs in one pass over the stored rows: each
/// group of four rows is read from memory once for their residuals r_i = ⟨a_i, x_c⟩ − y_i,
/// and again from cache, while it is still there, for g_c += Σ r_i a_i (or, in a split
/// plan, each block swept twice). The residuals equal [`apply_any`]'s bit for bit (same
/// four-row dot products); g differs from the two-pass adjoint's by rounding (its rows are
/// summed per block, then the blocks). Each input's results do not depend on C, on the
/// thread count, nor on the plan `planner` picks. The first G inputs get their gradient, the
/// others their residual alone (it costs their dot products only).
pub(super) fn fused_any<E: Entry, const C: usize, const G: usize>(
    data: &[E],
    n: usize,
    x: [&[f64]; C],
    y: &[f64],
    r: [&mut [f64]; C],
    g: [&mut [f64]; G],
    planner: &Planner,
) {
    const {
        assert!(
            1 <= G && G <= C,
            "gradients for some of the inputs, the first"
        )
    };
    let m = y.len();
    // the kernels read and write through unchecked pointers, and the pooled sums leave their
    // partial gradients zero only over n entries: every vector must be whole
    assert!(
        x.iter().all(|xc| xc.len() == n)
            && g.iter().all(|gc| gc.len() == n)
            && r.iter().all(|rc| rc.len() == m)
            && data.len() == m * n,
        "inputs and gradients of n = {n} entries, residuals of m = {m}"
    );
    let small = data.len() < FUSED_PARALLEL_MIN_ENTRIES;
    // below the parallel size one block of every row; above, whole groups of four rows per
    // block, so that the blocks' dot products are apply's
    let every_row = [(0, m)];
    let row_blocks: Vec<(usize, usize)>;
    let blocks: &[(usize, usize)] = if small {
        &every_row
    } else {
        let rows = (m.div_ceil(FUSED_BLOCKS)).div_ceil(4) * 4;
        row_blocks = (0..m)
            .step_by(rows.max(4))
            .map(|s| (s, (s + rows).min(m)))
            .collect();
        &row_blocks
    };
    // the planner indexes its trials by position in `plans`: above the parallel size the list
    // depends on nothing but the operator and the kind of pass, whichever pool calls
    let plans: &[FusedPlan] = if !small {
        if C > 1 && data.len() < FUSED_INPUTS_MAX_ENTRIES {
            &FusedPlan::ALL
        } else {
            &FusedPlan::ROWS
        }
    } else if C > 1 && rayon::current_num_threads() > 1 {
        &FusedPlan::SMALL
    } else {
        &[]
    };
    let (plan, timed) = match plans {
        // one input on one thread: one block on the caller, whatever is forced
        [] => (FusedPlan::Serial, false),
        _ => planner.next(plan_key(C, G), plans),
    };
    // below the parallel size the forced plans that split rows run as one block on the caller
    let plan = match plan {
        FusedPlan::Inputs if C > 1 => FusedPlan::Inputs,
        FusedPlan::Inputs => FusedPlan::Serial,
        _ if small => FusedPlan::Serial,
        other => other,
    };
    let start = timed.then(std::time::Instant::now);
    match plan {
        FusedPlan::PoolPrefetch | FusedPlan::Pool | FusedPlan::SplitPool => {
            fused_pooled(data, n, x, y, r, g, blocks, plan.sweep())
        }
        FusedPlan::Serial | FusedPlan::SplitSerial => {
            fused_serial(data, n, x, y, r, g, blocks, plan.sweep())
        }
        FusedPlan::Inputs => fused_inputs(data, n, &x, y, r, g, blocks),
    }
    if let Some(start) = start {
        planner.record(plan_key(C, G), plans, plan, start.elapsed().as_secs_f64());
    }
}

/// One block's rows in one sweep, or two ([`split_rows`]).
fn sweep<E: Entry, const C: usize, const G: usize>(
    way: Sweep,
    a: &[E],
    n: usize,
    x: [&[f64]; C],
    y: &[f64],
    r: [&mut [f64]; C],
    g: [&mut [f64]; G],
) {
    match way {
        Sweep::One => fused_rows(false, a, n, x, y, r, g),
        Sweep::Prefetched => fused_rows(true, a, n, x, y, r, g),
        Sweep::Two => split_rows(a, n, x, y, r, g),
    }
}

/// [`fused_any`]'s blocks over the thread pool, each into a partial gradient of its own; g is
/// their sum in block order.
#[allow(clippy::too_many_arguments)]
fn fused_pooled<E: Entry, const C: usize, const G: usize>(
    data: &[E],
    n: usize,
    x: [&[f64]; C],
    y: &[f64],
    r: [&mut [f64]; C],
    g: [&mut [f64]; G],
    blocks: &[(usize, usize)],
    way: Sweep,
) {
    // each block's partial gradients in a buffer kept on the calling thread from one pass to
    // the next (allocating and zeroing them anew for every pass took a tenth of the default
    // run's time, in malloc, free and memset), left zero by the sums that read them, ready
    // for the next pass; grown, never shrunk (resizing down and up again zeroed it anew
    // whenever a pass of two gradients followed one of one, every few passes with riders)
    let mut parts = POOLED_PARTS.take();
    let parts_len = blocks.len() * G * n;
    if parts.len() < parts_len {
        parts.resize(parts_len, 0.0);
    }
    {
        // each block's residuals straight into its rows of r (the blocks tile the rows in
        // order); a lock per block only to hand each its own slices: never contended
        let mut rest = r;
        let chunks: Vec<_> = blocks
            .iter()
            .zip(parts[..parts_len].chunks_mut((G * n).max(1)))
            .map(|(&(s, e), part)| {
                let rows: [&mut [f64]; C] = std::array::from_fn(|c| {
                    let (block, tail) = std::mem::take(&mut rest[c]).split_at_mut(e - s);
                    rest[c] = tail;
                    block
                });
                std::sync::Mutex::new((rows, part))
            })
            .collect();
        team::for_each(blocks.len(), |b| {
            let (s, e) = blocks[b];
            let mut chunk = chunks[b].lock().expect("one call per block");
            let (rows, part) = &mut *chunk;
            let mut part = part.chunks_exact_mut(n);
            sweep::<E, C, G>(
                way,
                &data[s * n..e * n],
                n,
                x,
                &y[s..e],
                rows.each_mut().map(|rc| &mut **rc),
                std::array::from_fn(|_| part.next().expect("G gradients")),
            );
        });
    }
    let width = n.div_ceil(rayon::current_num_threads().max(1)).max(1024);
    let shared = SharedParts(parts.as_mut_ptr(), parts_len);
    for (c, gc) in g.into_iter().enumerate() {
        // g = Σ_b part_b, in block order for every entry (column ranges may run in parallel)
        let reduce = |(offset, out): (usize, &mut [f64])| {
            out.fill(0.0);
            for b in 0..blocks.len() {
                // SAFETY: within `parts` (b < blocks, c < G, offset + len <= n); each column
                // range is one call's, and nothing else touches `parts` meanwhile
                let part = unsafe { shared.slice((b * G + c) * n + offset, out.len()) };
                add_and_zero(out, part);
            }
        };
        team::for_each_chunk(gc, width, |t, out| reduce((t * width, out)));
    }
    POOLED_PARTS.set(parts);
}

/// [`fused_pooled`]'s partial gradients, shared by the column ranges of its sums, each of
/// which reads and zeroes entries no other range touches.
struct SharedParts(*mut f64, usize);
// SAFETY: its users touch disjoint entries
unsafe impl Sync for SharedParts {}
impl SharedParts {
    /// # Safety
    /// `start + len` within the buffer, and no other reference to those entries while the
    /// slice lives.
    #[allow(clippy::mut_from_ref)]
    unsafe fn slice(&self, start: usize, len: usize) -> &mut [f64] {
        assert!(start + len <= self.1, "within the partial gradients");
        // SAFETY: in bounds (checked); no other reference to them, by the caller's contract
        unsafe { std::slice::from_raw_parts_mut(self.0.add(start), len) }
    }
}

/// out += part, leaving part zero: how the partial gradients are summed and kept ready for
/// the next pass ([`POOLED_PARTS`]).
fn add_and_zero(out: &mut [f64], part: &mut [f64]) {
    for (o, p) in out.iter_mut().zip(part) {
        *o += *p;
        *p = 0.0;
    }
}

thread_local! {
    /// [`fused_pooled`]'s and [`fused_serial`]'s partial gradients, zero between passes (a
    /// nested call on the same thread finds the buffer empty and makes its own).
    static POOLED_PARTS: std::cell::Cell<Vec<f64>> = const { std::cell::Cell::new(Vec::new()) };
}

/// [`fused_any`]'s blocks in turn on the calling thread, with the pool's sums in the pool's
/// order: g = ((0 + part_0) + part_1) + …; one block goes straight into g.
#[allow(clippy::too_many_arguments)]
fn fused_serial<E: Entry, const C: usize, const G: usize>(
    data: &[E],
    n: usize,
    x: [&[f64]; C],
    y: &[f64],
    mut r: [&mut [f64]; C],
    mut g: [&mut [f64]; G],
    blocks: &[(usize, usize)],
    way: Sweep,
) {
    for gc in g.iter_mut() {
        gc.fill(0.0);
    }
    if let [_every_row] = blocks {
        return sweep(way, data, n, x, y, r, g);
    }
    // the first block straight into g (0 + p₀ is p₀), the others into the pool's zeroed
    // buffer, each added to g and left zero (not a fresh buffer per call, zeroed per block:
    // from 2¹⁶ entries this plan competes with the pool's at a few µs a pass)
    let Some((&(s, e), rest)) = blocks.split_first() else {
        return;
    };
    sweep(
        way,
        &data[s * n..e * n],
        n,
        x,
        &y[s..e],
        r.each_mut().map(|rc| &mut rc[s..e]),
        g.each_mut().map(|gc| &mut gc[..]),
    );
    let mut parts = POOLED_PARTS.take();
    if parts.len() < G * n {
        parts.resize(G * n, 0.0);
    }
    // several blocks only above the parallel size: n > 0
    for &(s, e) in rest {
        let mut chunks = parts[..G * n].chunks_mut(n);
        sweep::<E, C, G>(
            way,
            &data[s * n..e * n],
            n,
            x,
            &y[s..e],
            r.each_mut().map(|rc| &mut rc[s..e]),
            std::array::from_fn(|_| chunks.next().expect("G chunks of n")),
        );
        for (gc, p) in g.iter_mut().zip(parts[..G * n].chunks_mut(n)) {
            add_and_zero(gc, p);
        }
    }
    POOLED_PARTS.set(parts);
}

/// [`FusedPlan::Inputs`]: the first input on one thread, the others on another, each as
/// [`fused_serial`] runs them (every input's sums are its own, whichever inputs share its
/// sweep, so the bits are the one-sweep pass's).
fn fused_inputs<E: Entry, const C: usize, const G: usize>(
    data: &[E],
    n: usize,
    x: &[&[f64]; C],
    y: &[f64],
    r: [&mut [f64]; C],
    g: [&mut [f64]; G],
    blocks: &[(usize, usize)],
) {
    let (mut r, mut g): (Vec<&mut [f64]>, Vec<&mut [f64]>) = (r.into(), g.into());
    let (r_rest, g_rest) = (r.split_off(1), g.split_off(1));
    // one lock per group only to hand each thread its own outputs: never contended
    let groups = [
        std::sync::Mutex::new((&x[..1], r, g)),
        std::sync::Mutex::new((&x[1..], r_rest, g_rest)),
    ];
    team::for_each(groups.len(), |i| {
        let mut group = groups[i].lock().expect("one call per group");
        let (xs, rs, gs) = &mut *group;
        fused_serial_any(
            data,
            n,
            xs,
            y,
            std::mem::take(rs),
            std::mem::take(gs),
            blocks,
        );
    });
}

/// [`fused_serial`] (one sweep per block) for inputs counted at run time: a group of
/// [`fused_inputs`] of two inputs with one gradient (the rest of a pass of three) in one
/// sweep, any other input by input.
fn fused_serial_any<E: Entry>(
    data: &[E],
    n: usize,
    x: &[&[f64]],
    y: &[f64],
    r: Vec<&mut [f64]>,
    g: Vec<&mut [f64]>,
    blocks: &[(usize, usize)],
) {
    fn pieces<T, const K: usize>(v: Vec<T>) -> [T; K] {
        v.try_into()
            .unwrap_or_else(|_| unreachable!("{K} pieces matched"))
    }
    match (x.len(), g.len()) {
        // GD's step and a record's loss beside the flow's right-hand side: one sweep
        (2, 1) => fused_serial::<E, 2, 1>(
            data,
            n,
            [x[0], x[1]],
            y,
            pieces(r),
            pieces(g),
            blocks,
            Sweep::One,
        ),
        _ => {
            let mut g = g.into_iter();
            for (xc, rc) in x.iter().zip(r) {
                match g.next() {
                    Some(gc) => {
                        fused_serial::<E, 1, 1>(data, n, [xc], y, [rc], [gc], blocks, Sweep::One)
                    }
                    // the residual alone: apply's products, which every kernel's equal
                    None => residual_rows(data, n, xc, y, rc),
                }
            }
        }
    }
}

/// The planner's key for passes of C inputs of which G want a gradient: 1 for one input,
/// then (2, 1), (2, 2), … — each kind of pass is timed apart, as their costs differ.
const fn plan_key(c: usize, g: usize) -> usize {
    c * (c - 1) / 2 + g
}

/// [`fused_rows`] in two sweeps: every row's residual first (as [`apply_rows`]), then the
/// gradient four rows at a time in the fused kernels' order, so the results are theirs bit
/// for bit. Reading the rows twice can beat reading them once where the one-sweep kernel's
/// two streams contend (the AMD VM of issue 24).
fn split_rows<E: Entry, const C: usize, const G: usize>(
    data: &[E],
    n: usize,
    x: [&[f64]; C],
    y: &[f64],
    mut r: [&mut [f64]; C],
    g: [&mut [f64]; G],
) {
    for (xc, rc) in x.into_iter().zip(r.iter_mut()) {
        residual_rows(data, n, xc, y, rc);
    }
    let r: [&[f64]; G] = std::array::from_fn(|c| &*r[c]);
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU has AVX2 (checked at run time).
        return unsafe { add_rows_avx2(data, n, r, g) };
    }
    add_rows_kernel(data, n, r, g);
}

/// g_c += Σ_i r_c,i·row_i, four rows at a time as [`add_four_rows`], the rows past the last
/// whole four one at a time (as [`fused_single_rows`]).
#[inline(always)]
fn add_rows_kernel<E: Entry, const C: usize>(
    data: &[E],
    n: usize,
    r: [&[f64]; C],
    g: [&mut [f64]; C],
) {
    let groups = data.len() / (4 * n);
    for (rc, gc) in r.into_iter().zip(g) {
        for q in 0..groups {
            let a = four_rows(&data[q * 4 * n..(q + 1) * 4 * n], n);
            let rq = [rc[4 * q], rc[4 * q + 1], rc[4 * q + 2], rc[4 * q + 3]];
            add_four_rows(gc, a, rq, 0);
        }
        add_single_rows(&data[groups * 4 * n..], n, &rc[4 * groups..], gc);
    }
}

/// g += r_i·row_i for consecutive rows, one at a time.
#[inline(always)]
fn add_single_rows<E: Entry>(rows: &[E], n: usize, r: &[f64], g: &mut [f64]) {
    for (a, rv) in rows.chunks_exact(n).zip(r) {
        for (o, v) in g.iter_mut().zip(a) {
            *o += rv * v.get();
        }
    }
}

/// [`add_rows_kernel`] in AVX2: each group's entries loaded once for all C inputs, the
/// update (r0·a0 + r1·a1) + (r2·a2 + r3·a3) added to g as in [`fused_rows_avx2`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn add_rows_avx2<E: Entry, const C: usize>(
    data: &[E],
    n: usize,
    r: [&[f64]; C],
    g: [&mut [f64]; C],
) {
    use std::arch::x86_64::*;
    let full = n / 4 * 4;
    let groups = data.len() / (4 * n);
    for q in 0..groups {
        let a = four_rows(&data[q * 4 * n..(q + 1) * 4 * n], n);
        let rq: [[f64; 4]; C] = std::array::from_fn(|c| {
            [
                r[c][4 * q],
                r[c][4 * q + 1],
                r[c][4 * q + 2],
                r[c][4 * q + 3],
            ]
        });
        let rv: [[__m256d; 4]; C] = rq.map(|rc| rc.map(|v| _mm256_set1_pd(v)));
        let mut j = 0;
        while j < full {
            // SAFETY: j + 4 <= full <= n, the length of every g and row.
            unsafe {
                let av: [__m256d; 4] = std::array::from_fn(|l| E::load4(a[l].as_ptr().add(j)));
                for c in 0..C {
                    add_four_lanes(g[c].as_mut_ptr().add(j), av, rv[c]);
                }
            }
            j += 4;
        }
        for c in 0..C {
            add_four_rows(g[c], a, rq[c], full);
        }
    }
    for c in 0..C {
        add_single_rows(&data[groups * 4 * n..], n, &r[c][4 * groups..], g[c]);
    }
}

/// [`fused_any`] over consecutive rows: residuals into `r`, their gradient added into `g`.
#[inline(always)]
fn fused_rows_kernel<E: Entry>(
    data: &[E],
    n: usize,
    x: &[f64],
    y: &[f64],
    r: &mut [f64],
    g: &mut [f64],
) {
    let mut rows = data.chunks_exact(4 * n);
    let mut rs = r.chunks_exact_mut(4);
    let mut ys = y.chunks_exact(4);
    for ((block, rc), yc) in (&mut rows).zip(&mut rs).zip(&mut ys) {
        let a = four_rows(block, n);
        let d = dot4(a, x);
        for q in 0..4 {
            rc[q] = d[q] - yc[q];
        }
        add_four_rows(g, a, [rc[0], rc[1], rc[2], rc[3]], 0);
    }
    fused_single_rows(
        rows.remainder(),
        n,
        x,
        ys.remainder(),
        rs.into_remainder(),
        g,
    );
}

/// `out[i] = ⟨row i, x⟩` for consecutive rows of length n.
#[inline(always)]
fn apply_rows_kernel<E: Entry>(data: &[E], n: usize, x: &[f64], out: &mut [f64]) {
    // Four rows per sweep over x: x is read once per four rows, and the sixteen partial sums
    // keep the floating-point units busy while A streams from memory.
    let mut rows = data.chunks_exact(4 * n);
    let mut outs = out.chunks_exact_mut(4);
    for (block, o) in (&mut rows).zip(&mut outs) {
        o.copy_from_slice(&dot4(four_rows(block, n), x));
    }
    for (a, o) in rows.remainder().chunks_exact(n).zip(outs.into_remainder()) {
        *o = dot(a, x);
    }
}

/// `out = Σ_i z_i row_i[offset..offset + out.len()]`.
#[inline(always)]
fn adjoint_rows_kernel<E: Entry>(data: &[E], n: usize, offset: usize, z: &[f64], out: &mut [f64]) {
    out.fill(0.0);
    let w = out.len();
    // Four rows per sweep over `out`: it is read and written once per four rows, not per row.
    let mut rows = data.chunks_exact(4 * n);
    let mut zs = z.chunks_exact(4);
    for (block, zc) in (&mut rows).zip(&mut zs) {
        let a0 = &block[offset..offset + w];
        let a1 = &block[n + offset..n + offset + w];
        let a2 = &block[2 * n + offset..2 * n + offset + w];
        let a3 = &block[3 * n + offset..3 * n + offset + w];
        for j in 0..w {
            out[j] += (zc[0] * a0[j].get() + zc[1] * a1[j].get())
                + (zc[2] * a2[j].get() + zc[3] * a3[j].get());
        }
    }
    for (a, &zi) in rows.remainder().chunks_exact(n).zip(zs.remainder()) {
        for (o, v) in out.iter_mut().zip(&a[offset..offset + w]) {
            *o += zi * v.get();
        }
    }
}

/// The four rows of a block of 4n entries.
#[inline(always)]
fn four_rows<E>(block: &[E], n: usize) -> [&[E]; 4] {
    let (a0, rest) = block.split_at(n);
    let (a1, rest) = rest.split_at(n);
    let (a2, a3) = rest.split_at(n);
    [a0, a1, a2, a3]
}

/// The rows left after the blocks of four, one at a time: r_i = ⟨row_i, x⟩ − y_i and
/// g += r_i·row_i.
#[inline(always)]
fn fused_single_rows<E: Entry>(
    rows: &[E],
    n: usize,
    x: &[f64],
    y: &[f64],
    r: &mut [f64],
    g: &mut [f64],
) {
    for ((a, ri), yi) in rows.chunks_exact(n).zip(r).zip(y) {
        *ri = dot(a, x) - yi;
        let rv = *ri;
        for (o, v) in g.iter_mut().zip(a) {
            *o += rv * v.get();
        }
    }
}

/// Four dot products against one vector.
#[inline(always)]
fn dot4<E: Entry>(a: [&[E]; 4], x: &[f64]) -> [f64; 4] {
    let n = x.len();
    let mut acc = [[0.0f64; 4]; 4];
    let full = n / 4 * 4;
    for j in (0..full).step_by(4) {
        let xs = &x[j..j + 4];
        for (r, ar) in a.iter().enumerate() {
            let ar = &ar[j..j + 4];
            for l in 0..4 {
                acc[r][l] += ar[l].get() * xs[l];
            }
        }
    }
    let mut out = [0.0; 4];
    for r in 0..4 {
        let mut s = (acc[r][0] + acc[r][1]) + (acc[r][2] + acc[r][3]);
        for j in full..n {
            s += a[r][j].get() * x[j];
        }
        out[r] = s;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The intrinsics single-product and fused kernels do the generic kernels' operations in
    /// the same order: bit for bit, f64 and f32 entries, with row and column tails, and rows
    /// long enough that a prefetching sweep asks for entries of the rows it reads.
    #[test]
    fn intrinsics_kernels_equal_the_generic_ones() {
        // several inputs take the AVX-512VL build of the one-sweep kernel where the CPU has
        // it (`fused_rows`): the AVX2 build is held to the same bits beside it
        const WAYS: [&str; 5] = [
            "one sweep",
            "one sweep, prefetched",
            "one sweep, AVX2's registers",
            "two sweeps",
            "default target",
        ];
        fn both<E: Entry>(data: &[E], n: usize, x: &[f64], y: &[f64]) {
            let m = y.len();
            let (mut a1, mut a2) = (vec![0.0; m], vec![0.0; m]);
            apply_rows_kernel(data, n, x, &mut a1);
            apply_rows(data, n, x, &mut a2);
            assert_eq!(a1, a2);
            let (mut r1, mut g1) = (vec![0.0; m], vec![0.0; n]);
            let (mut r2, mut g2) = (vec![0.0; m], vec![0.0; n]);
            fused_rows_kernel(data, n, x, y, &mut r1, &mut g1);
            fused_rows(false, data, n, [x], y, [&mut r2], [&mut g2]);
            assert_eq!((&r1, &g1), (&r2, &g2));
            let (mut r2, mut g2) = (vec![0.0; m], vec![0.0; n]);
            fused_rows(true, data, n, [x], y, [&mut r2], [&mut g2]);
            assert_eq!((&r1, &g1), (&r2, &g2), "one input, prefetched");
            // the two-sweep plans' kernels: dispatched, and generic (residuals, then gradient)
            let (mut r3, mut g3) = (vec![0.0; m], vec![0.0; n]);
            split_rows(data, n, [x], y, [&mut r3], [&mut g3]);
            assert_eq!((&r1, &g1), (&r3, &g3));
            let (mut r4, mut g4) = (vec![0.0; m], vec![0.0; n]);
            apply_rows_kernel(data, n, x, &mut r4);
            r4.iter_mut().zip(y).for_each(|(ri, yi)| *ri -= yi);
            add_rows_kernel(data, n, [&r4], [&mut g4]);
            assert_eq!((&r1, &g1), (&r4, &g4));
            // a second input's residual alone beside the first's gradient, one sweep or two
            let x2: Vec<f64> = x.iter().map(|v| 0.5 - v).collect();
            let mut r5 = vec![0.0; m];
            apply_rows_kernel(data, n, &x2, &mut r5);
            r5.iter_mut().zip(y).for_each(|(ri, yi)| *ri -= yi);
            assert_ne!(r5, r1);
            for way in WAYS {
                let (mut ra, mut rb, mut ga) = (vec![0.0; m], vec![0.0; m], vec![0.0; n]);
                let (xs, rs) = ([x, &x2[..]], [&mut ra[..], &mut rb[..]]);
                match way {
                    "one sweep" => fused_rows(false, data, n, xs, y, rs, [&mut ga]),
                    "one sweep, prefetched" => fused_rows(true, data, n, xs, y, rs, [&mut ga]),
                    "one sweep, AVX2's registers" => {
                        fused_rows_built(false, false, data, n, xs, y, rs, [&mut ga])
                    }
                    "two sweeps" => split_rows(data, n, xs, y, rs, [&mut ga]),
                    _ => fused_rows_generic(data, n, xs, y, rs, [&mut ga]),
                }
                assert_eq!((&ra, &ga, &rb), (&r1, &g1, &r5), "{way}");
            }
            // two gradients and a third input's residual alone (a flow's right-hand side,
            // GD's step and a record): each as its own pass
            let x3: Vec<f64> = x.iter().map(|v| 0.25 * v - 1.0).collect();
            let (mut r6, mut g6) = (vec![0.0; m], vec![0.0; n]);
            fused_rows_kernel(data, n, &x3, y, &mut r6, &mut g6);
            for way in WAYS {
                let (mut ra, mut rb, mut rc) = (vec![0.0; m], vec![0.0; m], vec![0.0; m]);
                let (mut ga, mut gb) = (vec![0.0; n], vec![0.0; n]);
                let xs = [&x3[..], x, &x2[..]];
                let rs = [&mut ra[..], &mut rb[..], &mut rc[..]];
                let gs = [&mut ga[..], &mut gb[..]];
                match way {
                    "one sweep" => fused_rows(false, data, n, xs, y, rs, gs),
                    "one sweep, prefetched" => fused_rows(true, data, n, xs, y, rs, gs),
                    "one sweep, AVX2's registers" => {
                        fused_rows_built(false, false, data, n, xs, y, rs, gs)
                    }
                    "two sweeps" => split_rows(data, n, xs, y, rs, gs),
                    _ => fused_rows_generic(data, n, xs, y, rs, gs),
                }
                let got = (&ra, &ga, &rb, &gb, &rc);
                assert_eq!(got, (&r6, &g6, &r1, &g1, &r5), "{way}, three inputs");
            }
        }
        for (n, m) in [(37, 23), (301, 9)] {
            let data: Vec<f64> = (0..n * m)
                .map(|i| ((i * 13 % 29) as f64 - 14.0) / 7.0)
                .collect();
            let data32: Vec<f32> = data.iter().map(|&v| v as f32).collect();
            let x: Vec<f64> = (0..n).map(|j| ((j * 5 % 17) as f64 - 8.0) / 3.0).collect();
            let y: Vec<f64> = (0..m).map(|i| (i % 7) as f64 * 0.1).collect();
            both(&data, n, &x, &y);
            both(&data32, n, &x, &y);
        }
    }

    /// The planner's rules on made-up timings: after the warm-up each plan runs six timed
    /// calls, but one whose first counted call takes 1.5× the default's best is given up after
    /// it; a plan on the default's threads wins when faster at all, one on other threads only
    /// when 15% faster; the choice then stands without timing.
    #[test]
    fn the_planner_gives_up_slow_plans_and_handicaps_other_threads() {
        use FusedPlan::*;
        let run = |seconds: fn(FusedPlan) -> f64| {
            let planner = Planner::default();
            let plans = FusedPlan::ROWS;
            for _ in 0..PLAN_WARMUP {
                assert_eq!(planner.next(1, &plans), (plans[0], false));
            }
            let mut calls = std::collections::HashMap::new();
            loop {
                let (plan, timed) = planner.next(1, &plans);
                if !timed {
                    assert_eq!(planner.chosen(), Some(plan));
                    return (plan, calls);
                }
                *calls.entry(plan).or_insert(0) += 1;
                planner.record(1, &plans, plan, seconds(plan));
            }
        };
        // one thread at 3× is given up after two calls; two sweeps on one thread (0.88) is
        // faster than the plain pool (0.95) but not 15% faster than the default: the pool
        let (chosen, calls) = run(|plan| match plan {
            PoolPrefetch => 1.0,
            Pool => 0.95,
            Serial => 3.0,
            SplitPool => 1.2,
            _ => 0.88,
        });
        assert_eq!(chosen, Pool);
        let expected = [
            (PoolPrefetch, 6),
            (Pool, 6),
            (Serial, 2),
            (SplitPool, 6),
            (SplitSerial, 6),
        ];
        assert_eq!(calls, expected.into_iter().collect());
        // the last plan given up still ends the trials; one thread 20% faster wins; a tie
        // goes to the default
        let (chosen, calls) = run(|plan| match plan {
            Serial => 0.8,
            SplitSerial => 2.0,
            _ => 1.0,
        });
        assert_eq!((chosen, calls[&SplitSerial]), (Serial, 2));
        let (chosen, _) = run(|_| 1.0);
        assert_eq!(chosen, PoolPrefetch);
    }

    /// The intrinsics kernel performs the generic FMA kernel's operations in the same order,
    /// so the two agree bit for bit; the unfused kernel (CPUs without FMA) agrees to rounding.
    #[test]
    fn adjoint_kernels_agree() {
        let (n, m) = (37, 23);
        let data: Vec<f64> = (0..n * m)
            .map(|i| ((i * 13 % 29) as f64 - 14.0) / 7.0)
            .collect();
        let zi: Vec<f64> = (0..m * GROUP)
            .map(|i| ((i * 5 % 17) as f64 - 8.0) / 3.0)
            .collect();
        let fused = adjoint_group_kernel::<f64, true>(&data, n, 3, 30, &zi);
        let unfused = adjoint_group_kernel::<f64, false>(&data, n, 3, 30, &zi);
        let dispatched = adjoint_group_cols(&data, n, 3, 30, &zi);
        if has_fma() {
            assert_eq!(dispatched, fused);
        } else {
            assert_eq!(dispatched, unfused);
        }
        for (a, b) in fused.iter().zip(&unfused) {
            assert!((a - b).abs() <= 1e-13 * a.abs().max(1.0));
        }
    }
}
