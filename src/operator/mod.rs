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
use serde::{Deserialize, Serialize};

mod dense;
mod kernels;
mod pages;
mod sampled;
mod team;

pub use dense::{matrix_block, DenseOperator, StorageView};
pub use kernels::FusedPlan;
pub use pages::advise_huge_pages;
pub use sampled::{EntryOperator, IdentityOperator};
pub use team::beside_other_work;

/// How often an operator has been applied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorCounts {
    /// Applications of 𝒜 alone, a residual computed beside another input's fused pass
    /// ([`SensingOperator::residual_adjoint_beside_residual`]) among them.
    pub apply: u64,
    pub adjoint: u64,
    /// Residuals computed with their adjoint in one pass ([`SensingOperator::residual_adjoint`];
    /// two inputs sharing a pass, [`SensingOperator::residual_adjoint_pair`], count two).
    #[serde(default)]
    pub fused: u64,
    /// Single measurements taken by the row products ([`SensingOperator::apply_rows`],
    /// [`SensingOperator::adjoint_rows`]): a mini-batch's b rows each, m of them a pass.
    #[serde(default)]
    pub rows: u64,
    /// The dense operator's passes over its stored matrix, what a run's time goes to: one per
    /// call that reads the matrix — a fused pass however many inputs share it, an
    /// application, an adjoint, a block product — whether its plan reads the rows in one
    /// sweep or two. Absent for other operators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passes: Option<u64>,
    /// How the dense operator's fused pass ran (see [`FusedPlan`]; chosen at run time by
    /// timing, every plan giving the same results): absent for other operators, below the
    /// size where the pass splits its rows, and in merged parts that chose differently.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fused_plan: Option<FusedPlan>,
}

impl OperatorCounts {
    /// The work of two parts of one run, together.
    pub fn add(&mut self, other: &OperatorCounts) {
        self.apply += other.apply;
        self.adjoint += other.adjoint;
        self.fused += other.fused;
        self.rows += other.rows;
        self.passes = match (self.passes, other.passes) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
        };
        if self.fused_plan != other.fused_plan {
            self.fused_plan = None;
        }
    }
}

/// Application counts an operator keeps for its statistics (thread-safe; a custom operator
/// holds one and calls [`Counter::apply`] and [`Counter::adjoint`] as it works).
///
/// Each thread counts in a slot of its own cache line: replicas on every thread call a small
/// operator millions of times, and one shared counter made each call wait for the line to
/// come back from the other core (a quarter of an SME ensemble's time on two).
#[derive(Debug, Default)]
pub struct Counter {
    slots: [Slot; COUNTER_SLOTS],
}

const COUNTER_SLOTS: usize = 16;

#[derive(Debug, Default)]
#[repr(align(128))]
struct Slot {
    apply: AtomicU64,
    adjoint: AtomicU64,
    fused: AtomicU64,
    rows: AtomicU64,
    passes: AtomicU64,
}

/// The calling thread's slot, assigned in the order threads first count.
fn slot_index() -> usize {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    thread_local! {
        static SLOT: usize = (NEXT.fetch_add(1, Ordering::Relaxed) % COUNTER_SLOTS as u64) as usize;
    }
    SLOT.with(|s| *s)
}

impl Counter {
    fn slot(&self) -> &Slot {
        &self.slots[slot_index()]
    }
    pub fn counts(&self) -> OperatorCounts {
        let sum = |f: fn(&Slot) -> &AtomicU64| {
            self.slots
                .iter()
                .map(|s| f(s).load(Ordering::Relaxed))
                .sum()
        };
        OperatorCounts {
            apply: sum(|s| &s.apply),
            adjoint: sum(|s| &s.adjoint),
            fused: sum(|s| &s.fused),
            rows: sum(|s| &s.rows),
            passes: None,
            fused_plan: None,
        }
    }
    /// The sweeps over a stored matrix counted by [`Counter::pass`].
    pub fn passes(&self) -> u64 {
        self.slots
            .iter()
            .map(|s| s.passes.load(Ordering::Relaxed))
            .sum()
    }
    pub fn apply(&self) {
        self.slot().apply.fetch_add(1, Ordering::Relaxed);
    }
    pub fn adjoint(&self) {
        self.slot().adjoint.fetch_add(1, Ordering::Relaxed);
    }
    pub fn fused(&self) {
        self.slot().fused.fetch_add(1, Ordering::Relaxed);
    }
    /// One sweep over the operator's stored matrix, whatever it computed.
    pub fn pass(&self) {
        self.slot().passes.fetch_add(1, Ordering::Relaxed);
    }
    pub fn rows(&self, count: u64) {
        self.slot().rows.fetch_add(count, Ordering::Relaxed);
    }
    pub(crate) fn add(&self, apply: u64, adjoint: u64) {
        let slot = self.slot();
        slot.apply.fetch_add(apply, Ordering::Relaxed);
        slot.adjoint.fetch_add(adjoint, Ordering::Relaxed);
    }
}

/// r = 𝒜(x) − y by [`SensingOperator::apply`]: the residual as the trait's defaults compute it.
fn residual_by_apply<O: SensingOperator + ?Sized>(op: &O, x: &[f64], y: &[f64], r: &mut [f64]) {
    op.apply(x, r);
    for (ri, yi) in r.iter_mut().zip(y) {
        *ri -= yi;
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
    /// r = 𝒜(x) − y into `residual` and 𝒜*(r) into `out`: the residual and its gradient, what
    /// every evaluation of the field needs. The default applies the two products one after
    /// the other; [`DenseOperator`] does both in one pass over its matrix.
    fn residual_adjoint(&self, x: &[f64], y: &[f64], residual: &mut [f64], out: &mut [f64]) {
        residual_by_apply(self, x, y, residual);
        self.adjoint(residual, out);
    }
    /// [`Self::residual_adjoint`] for two inputs at once, each result bit-identical to its own
    /// call: the default makes the two calls; [`DenseOperator`] serves both from one pass over
    /// its matrix (two independent trajectories, such as GD and the flow, then share it).
    fn residual_adjoint_pair(
        &self,
        x: [&[f64]; 2],
        y: &[f64],
        residual: [&mut [f64]; 2],
        out: [&mut [f64]; 2],
    ) {
        for ((x, r), o) in x.into_iter().zip(residual).zip(out) {
            self.residual_adjoint(x, y, r, o);
        }
    }
    /// [`Self::residual_adjoint`] at `x[0]` and the residual alone at `x[1]` (a record that
    /// needs only the loss there), each bit-identical to its own call: the default makes the
    /// two calls; [`DenseOperator`] serves both from one pass, the second input costing its
    /// dot products only.
    fn residual_adjoint_beside_residual(
        &self,
        x: [&[f64]; 2],
        y: &[f64],
        residual: [&mut [f64]; 2],
        out: &mut [f64],
    ) {
        let [ra, rb] = residual;
        self.residual_adjoint(x[0], y, ra, out);
        residual_by_apply(self, x[1], y, rb);
    }
    /// [`Self::residual_adjoint_pair`] at `x[0]` and `x[1]` and the residual alone at `x[2]`,
    /// each bit-identical to its own call: a flow's right-hand side, GD's step and a record
    /// that needs only the loss, from one pass over [`DenseOperator`]'s matrix.
    fn residual_adjoint_pair_beside_residual(
        &self,
        x: [&[f64]; 3],
        y: &[f64],
        residual: [&mut [f64]; 3],
        out: [&mut [f64]; 2],
    ) {
        let [ra, rb, rc] = residual;
        self.residual_adjoint_pair([x[0], x[1]], y, [ra, rb], out);
        residual_by_apply(self, x[2], y, rc);
    }
    /// [`Self::residual_adjoint`] at every `x[c]`, each bit-identical to its own call: the
    /// default makes the calls one by one; [`DenseOperator`] serves two inputs per pass over
    /// its matrix (a block of Hessian–vector products; four a pass ran slower).
    fn residual_adjoint_many(
        &self,
        x: &[&[f64]],
        y: &[f64],
        residual: &mut [Vec<f64>],
        out: &mut [&mut [f64]],
    ) {
        for ((x, r), o) in x.iter().zip(residual.iter_mut()).zip(out.iter_mut()) {
            self.residual_adjoint(x, y, r, o);
        }
    }
    /// `out[k] = ⟨A_{rows[k]}, x⟩`: a few measurements (a mini-batch's) at the cost of their
    /// rows alone. The default copies each A_i out ([`Self::measurement_matrix`]).
    fn apply_rows(&self, rows: &[usize], x: &[f64], out: &mut [f64]) {
        let mut a = vec![0.0; x.len()];
        for (o, &i) in out.iter_mut().zip(rows) {
            self.measurement_matrix(i, &mut a);
            *o = a.iter().zip(x).map(|(a, x)| a * x).sum();
        }
    }
    /// `out = Σ_k z_k vec(A_{rows[k]})`, as [`Self::apply_rows`].
    fn adjoint_rows(&self, rows: &[usize], z: &[f64], out: &mut [f64]) {
        let mut a = vec![0.0; out.len()];
        out.fill(0.0);
        for (&i, &zk) in rows.iter().zip(z) {
            self.measurement_matrix(i, &mut a);
            for (o, a) in out.iter_mut().zip(&a) {
                *o += zk * a;
            }
        }
    }
    /// Copy vec(A_i) into `out` (length n1·n2).
    fn measurement_matrix(&self, i: usize, out: &mut [f64]);
    fn counts(&self) -> OperatorCounts;
    /// Short name for summaries.
    fn name(&self) -> &'static str;
    /// Stored entries one application streams (for work estimates).
    fn entries_per_pass(&self) -> usize {
        self.m() * self.n1() * self.n2()
    }
    /// `outs[b] = 𝒜(xs[b])` for a block of inputs. Dense operators stream their matrix once per
    /// eight inputs; their sums run in another order (fused where the CPU has FMA), so the
    /// results equal [`Self::apply`]'s to rounding.
    fn apply_block(&self, xs: &[&[f64]], outs: &mut [Vec<f64>]) {
        for (x, out) in xs.iter().zip(outs.iter_mut()) {
            self.apply(x, out);
        }
    }
    /// `outs[b] = 𝒜*(zs[b])`, as [`Self::apply_block`].
    fn adjoint_block(&self, zs: &[&[f64]], outs: &mut [Vec<f64>]) {
        for (z, out) in zs.iter().zip(outs.iter_mut()) {
            self.adjoint(z, out);
        }
    }
    /// All A_i as columns of an (n1·n2) × m matrix, in a block that asks for huge pages
    /// before it is written (a symmetric problem's operator is built from it).
    fn to_dense(&self) -> DMatrix<f64> {
        let n = self.n1() * self.n2();
        let entries = vec![0.0; n * self.m()];
        advise_huge_pages(&entries);
        let mut out = DMatrix::from_vec(n, self.m(), entries);
        for i in 0..self.m() {
            self.measurement_matrix(i, out.column_mut(i).as_mut_slice());
        }
        out
    }
}

/// A stored entry of the sensing matrix: f64, or f32 read into f64 (every product is
/// accumulated in f64 either way).
pub(crate) trait Entry: Copy + Send + Sync + 'static {
    fn get(self) -> f64;
    /// Four consecutive entries as f64 lanes.
    ///
    /// # Safety
    /// `p` points to four readable entries, and the CPU has AVX2.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load4(p: *const Self) -> std::arch::x86_64::__m256d;
}

impl Entry for f64 {
    #[inline(always)]
    fn get(self) -> f64 {
        self
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load4(p: *const Self) -> std::arch::x86_64::__m256d {
        // SAFETY: the caller's contract
        unsafe { std::arch::x86_64::_mm256_loadu_pd(p) }
    }
}

impl Entry for f32 {
    #[inline(always)]
    fn get(self) -> f64 {
        self as f64
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load4(p: *const Self) -> std::arch::x86_64::__m256d {
        use std::arch::x86_64::*;
        // SAFETY: the caller's contract
        unsafe { _mm256_cvtps_pd(_mm_loadu_ps(p)) }
    }
}

/// How the sensing matrix is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Precision {
    F64,
    /// Half the memory and half the bytes streamed per pass; products still accumulate in f64.
    F32,
}

impl Precision {
    pub const ALL: [Precision; 2] = [Precision::F64, Precision::F32];
    pub fn name(self) -> &'static str {
        match self {
            Precision::F64 => "f64",
            Precision::F32 => "f32",
        }
    }
    pub fn description(self) -> &'static str {
        match self {
            Precision::F64 => "every entry in f64",
            Precision::F32 => {
                "entries in f32: half the memory and bandwidth, products still accumulated in f64"
            }
        }
    }
}
