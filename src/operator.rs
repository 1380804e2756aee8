//! Measurement operators 𝒜: R^{n1×n2} → R^m, 𝒜(Z)_i = ⟨A_i, Z⟩ (MATH §1).
//!
//! Matrices enter and leave as column-major `vec` slices of length n1·n2: entry (a, b) of Z
//! is `z[a + b·n1]`, the layout nalgebra uses.
//!
//! | operator | storage | 𝒜 and 𝒜* |
//! |---|---|---|
//! | [`DenseOperator`] (Gaussian or loaded) | all A_i, m·n1·n2 values | one pass over the matrix each |
//! | [`IdentityOperator`] | nothing | copy |
//! | [`EntryOperator`] | m indices | gather / scatter |

use std::sync::atomic::{AtomicU64, Ordering};

use nalgebra::DMatrix;
use rand::Rng;
use rand_distr::{Distribution, Normal};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// How often an operator has been applied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorCounts {
    pub apply: u64,
    pub adjoint: u64,
}

#[derive(Debug, Default)]
struct Counter {
    apply: AtomicU64,
    adjoint: AtomicU64,
}

impl Counter {
    fn counts(&self) -> OperatorCounts {
        OperatorCounts {
            apply: self.apply.load(Ordering::Relaxed),
            adjoint: self.adjoint.load(Ordering::Relaxed),
        }
    }
    fn apply(&self) {
        self.apply.fetch_add(1, Ordering::Relaxed);
    }
    fn adjoint(&self) {
        self.adjoint.fetch_add(1, Ordering::Relaxed);
    }
}

/// A linear measurement operator with its adjoint.
pub trait SensingOperator: Send + Sync {
    fn n1(&self) -> usize;
    fn n2(&self) -> usize;
    /// Number of measurements.
    fn m(&self) -> usize;
    /// `out = 𝒜(x)`, x = vec(X) (length n1·n2), out of length m.
    fn apply(&self, x: &[f64], out: &mut [f64]);
    /// `out = 𝒜*(z) = Σ_i z_i vec(A_i)`.
    fn adjoint(&self, z: &[f64], out: &mut [f64]);
    /// Copy vec(A_i) into `out` (length n1·n2).
    fn measurement_matrix(&self, i: usize, out: &mut [f64]);
    fn counts(&self) -> OperatorCounts;
    /// Short name for summaries.
    fn name(&self) -> &'static str;
    /// Stored entries one application streams (for work estimates).
    fn entries_per_pass(&self) -> usize {
        self.m() * self.n1() * self.n2()
    }
    /// All A_i as columns of an (n1·n2) × m matrix.
    fn to_dense(&self) -> DMatrix<f64> {
        let n = self.n1() * self.n2();
        let mut out = DMatrix::zeros(n, self.m());
        for i in 0..self.m() {
            self.measurement_matrix(i, out.column_mut(i).as_mut_slice());
        }
        out
    }
}

/// Dense operator: column i of `a` is vec(A_i), so 𝒜 is `aᵀx` and 𝒜* is `a z`, each a single
/// streaming pass over contiguous memory.
pub struct DenseOperator {
    n1: usize,
    n2: usize,
    a: DMatrix<f64>,
    counter: Counter,
    name: &'static str,
}

impl DenseOperator {
    /// From an (n1·n2) × m matrix whose column i is vec(A_i).
    pub fn from_columns(n1: usize, n2: usize, a: DMatrix<f64>) -> Self {
        assert_eq!(a.nrows(), n1 * n2, "columns must have n1·n2 entries");
        Self {
            n1,
            n2,
            a,
            counter: Counter::default(),
            name: "dense",
        }
    }

    /// Gaussian ensemble, entries N(0, 1/m), drawn A_1, A_2, … each in row-major (C) order of
    /// its entries, so the draw order matches the `.npz` layout `sensing[i, a, b]`.
    pub fn gaussian(n1: usize, n2: usize, m: usize, rng: &mut impl Rng) -> Self {
        let normal = Normal::new(0.0, 1.0 / (m as f64).sqrt()).expect("finite positive scale");
        let mut a = DMatrix::zeros(n1 * n2, m);
        for i in 0..m {
            let col = a.column_mut(i);
            let col = col.data.into_slice_mut();
            for row in 0..n1 {
                for c in 0..n2 {
                    col[row + c * n1] = normal.sample(rng);
                }
            }
        }
        let mut op = Self::from_columns(n1, n2, a);
        op.name = "gaussian";
        op
    }

    /// The (n1·n2) × m matrix of all vec(A_i).
    pub fn columns(&self) -> &DMatrix<f64> {
        &self.a
    }
}

impl SensingOperator for DenseOperator {
    fn n1(&self) -> usize {
        self.n1
    }
    fn n2(&self) -> usize {
        self.n2
    }
    fn m(&self) -> usize {
        self.a.ncols()
    }
    fn apply(&self, x: &[f64], out: &mut [f64]) {
        self.counter.apply();
        let n = self.a.nrows();
        let data = self.a.as_slice();
        if data.len() < PARALLEL_MIN_ENTRIES {
            apply_rows(data, n, x, out);
            return;
        }
        // Each output entry is computed by exactly one task in a fixed order, so the result
        // does not depend on the number of threads.
        let rows_per_task = (out.len() / 8).max(4) / 4 * 4;
        out.par_chunks_mut(rows_per_task)
            .enumerate()
            .for_each(|(t, o)| {
                let start = t * rows_per_task * n;
                apply_rows(&data[start..start + o.len() * n], n, x, o);
            });
    }
    fn adjoint(&self, z: &[f64], out: &mut [f64]) {
        self.counter.adjoint();
        let n = self.a.nrows();
        let data = self.a.as_slice();
        if data.len() < PARALLEL_MIN_ENTRIES {
            adjoint_rows(data, n, 0, z, out);
            return;
        }
        // Tasks own disjoint ranges of the output and sum over all rows in the same order.
        let cols_per_task = n.div_ceil(rayon::current_num_threads().max(1)).max(64);
        out.par_chunks_mut(cols_per_task)
            .enumerate()
            .for_each(|(t, o)| adjoint_rows(data, n, t * cols_per_task, z, o));
    }
    fn measurement_matrix(&self, i: usize, out: &mut [f64]) {
        out.copy_from_slice(self.a.column(i).as_slice());
    }
    fn counts(&self) -> OperatorCounts {
        self.counter.counts()
    }
    fn name(&self) -> &'static str {
        self.name
    }
    fn to_dense(&self) -> DMatrix<f64> {
        self.a.clone()
    }
}

/// Four independent accumulators let the compiler vectorise the sum without `-ffast-math`.
#[inline]
pub(crate) fn dot(a: &[f64], b: &[f64]) -> f64 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0.0f64; 4];
    let (ac, ar) = a.split_at(a.len() / 4 * 4);
    let (bc, br) = b.split_at(ac.len());
    for (x, y) in ac.chunks_exact(4).zip(bc.chunks_exact(4)) {
        acc[0] += x[0] * y[0];
        acc[1] += x[1] * y[1];
        acc[2] += x[2] * y[2];
        acc[3] += x[3] * y[3];
    }
    let mut s = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    for (x, y) in ar.iter().zip(br) {
        s += x * y;
    }
    s
}

/// Below this many stored entries the operator runs on one thread: the hand-off costs more
/// than it saves.
const PARALLEL_MIN_ENTRIES: usize = 1 << 20;

/// `out[i] = ⟨row i, x⟩` for consecutive rows of length n.
fn apply_rows(data: &[f64], n: usize, x: &[f64], out: &mut [f64]) {
    // Four rows per sweep over x: x is read once per four rows, and the sixteen partial sums
    // keep the floating-point units busy while A streams from memory.
    let mut rows = data.chunks_exact(4 * n);
    let mut outs = out.chunks_exact_mut(4);
    for (block, o) in (&mut rows).zip(&mut outs) {
        let (a0, rest) = block.split_at(n);
        let (a1, rest) = rest.split_at(n);
        let (a2, a3) = rest.split_at(n);
        o.copy_from_slice(&dot4([a0, a1, a2, a3], x));
    }
    for (a, o) in rows.remainder().chunks_exact(n).zip(outs.into_remainder()) {
        *o = dot(a, x);
    }
}

/// `out = Σ_i z_i row_i[offset..offset + out.len()]`.
fn adjoint_rows(data: &[f64], n: usize, offset: usize, z: &[f64], out: &mut [f64]) {
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
            out[j] += (zc[0] * a0[j] + zc[1] * a1[j]) + (zc[2] * a2[j] + zc[3] * a3[j]);
        }
    }
    for (a, &zi) in rows.remainder().chunks_exact(n).zip(zs.remainder()) {
        axpy(zi, &a[offset..offset + w], out);
    }
}

/// Four dot products against one vector.
#[inline]
fn dot4(a: [&[f64]; 4], x: &[f64]) -> [f64; 4] {
    let n = x.len();
    let mut acc = [[0.0f64; 4]; 4];
    let full = n / 4 * 4;
    for j in (0..full).step_by(4) {
        let xs = &x[j..j + 4];
        for (r, ar) in a.iter().enumerate() {
            let ar = &ar[j..j + 4];
            for l in 0..4 {
                acc[r][l] += ar[l] * xs[l];
            }
        }
    }
    let mut out = [0.0; 4];
    for r in 0..4 {
        let mut s = (acc[r][0] + acc[r][1]) + (acc[r][2] + acc[r][3]);
        for j in full..n {
            s += a[r][j] * x[j];
        }
        out[r] = s;
    }
    out
}

#[inline]
pub(crate) fn axpy(alpha: f64, x: &[f64], y: &mut [f64]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += alpha * xi;
    }
}

/// 𝒜 = vec: plain matrix factorisation.
pub struct IdentityOperator {
    n1: usize,
    n2: usize,
    counter: Counter,
}

impl IdentityOperator {
    pub fn new(n1: usize, n2: usize) -> Self {
        Self {
            n1,
            n2,
            counter: Counter::default(),
        }
    }
}

impl SensingOperator for IdentityOperator {
    fn n1(&self) -> usize {
        self.n1
    }
    fn n2(&self) -> usize {
        self.n2
    }
    fn m(&self) -> usize {
        self.n1 * self.n2
    }
    fn apply(&self, x: &[f64], out: &mut [f64]) {
        self.counter.apply();
        out.copy_from_slice(x);
    }
    fn adjoint(&self, z: &[f64], out: &mut [f64]) {
        self.counter.adjoint();
        out.copy_from_slice(z);
    }
    fn measurement_matrix(&self, i: usize, out: &mut [f64]) {
        out.fill(0.0);
        out[i] = 1.0;
    }
    fn counts(&self) -> OperatorCounts {
        self.counter.counts()
    }
    fn name(&self) -> &'static str {
        "identity"
    }
    fn entries_per_pass(&self) -> usize {
        self.n1 * self.n2
    }
}

/// Matrix completion: A_i = s·e_a e_bᵀ for m distinct entries (a, b), with s = √(n1·n2/m) so
/// that 𝒜*𝒜 = (n1·n2/m)·P_Ω and E‖𝒜(Z)‖² = ‖Z‖².
pub struct EntryOperator {
    n1: usize,
    n2: usize,
    /// Column-major linear index a + b·n1 of each sampled entry.
    entries: Vec<usize>,
    scale: f64,
    counter: Counter,
}

impl EntryOperator {
    /// m distinct entries drawn uniformly (`rand::seq::index::sample`), kept in drawn order.
    pub fn sample(n1: usize, n2: usize, m: usize, rng: &mut impl Rng) -> Self {
        let entries = rand::seq::index::sample(rng, n1 * n2, m).into_vec();
        Self::new(n1, n2, entries)
    }

    pub fn new(n1: usize, n2: usize, entries: Vec<usize>) -> Self {
        let scale = ((n1 * n2) as f64 / entries.len() as f64).sqrt();
        Self {
            n1,
            n2,
            entries,
            scale,
            counter: Counter::default(),
        }
    }
}

impl SensingOperator for EntryOperator {
    fn n1(&self) -> usize {
        self.n1
    }
    fn n2(&self) -> usize {
        self.n2
    }
    fn m(&self) -> usize {
        self.entries.len()
    }
    fn apply(&self, x: &[f64], out: &mut [f64]) {
        self.counter.apply();
        for (o, &e) in out.iter_mut().zip(&self.entries) {
            *o = self.scale * x[e];
        }
    }
    fn adjoint(&self, z: &[f64], out: &mut [f64]) {
        self.counter.adjoint();
        out.fill(0.0);
        for (&zi, &e) in z.iter().zip(&self.entries) {
            out[e] += self.scale * zi;
        }
    }
    fn measurement_matrix(&self, i: usize, out: &mut [f64]) {
        out.fill(0.0);
        out[self.entries[i]] = self.scale;
    }
    fn counts(&self) -> OperatorCounts {
        self.counter.counts()
    }
    fn name(&self) -> &'static str {
        "entries"
    }
    fn entries_per_pass(&self) -> usize {
        // a pass also fills or reads the n1×n2 matrix
        self.entries.len() + self.n1 * self.n2
    }
}
