//! The dense operator: every A_i stored, in f64 or f32.

use nalgebra::DMatrix;
use rand::Rng;
use rand_distr::{Distribution, Normal};

use super::kernels::{
    adjoint_any, adjoint_block_any, adjoint_selected, apply_any, apply_block_any, apply_selected,
    fused_any, FusedPlan, Planner,
};
use super::{Counter, OperatorCounts, Precision, SensingOperator};

enum Storage {
    F64(Lines<f64>),
    F32(Lines<f32>),
}

/// Entries whose first one starts a 64-byte cache line. The allocator returns a large block 16
/// bytes past a page boundary, so with rows a multiple of 64 bytes long half of the kernels'
/// 32-byte loads straddled two cache lines, and at other row lengths a varying share did.
struct Lines<T> {
    buf: Vec<T>,
    offset: usize,
    len: usize,
}

/// An empty block for `count` entries read to become an operator's matrix: huge pages asked
/// for before it is written, and room for the shift to a cache line that [`DenseOperator`]
/// makes within the block (without it the matrix would be moved to a new, unadvised one).
pub fn matrix_block(count: usize) -> Vec<f64> {
    let block = Vec::with_capacity(count + Lines::<f64>::PAD);
    super::pages::advise_huge_pages(&block);
    block
}

impl<T: Copy + Default> Lines<T> {
    const PAD: usize = 64 / std::mem::size_of::<T>();

    fn zeros(len: usize) -> Self {
        let buf = vec![T::default(); len + Self::PAD];
        super::pages::advise_huge_pages(&buf);
        let offset = buf.as_ptr().align_offset(64).min(Self::PAD);
        Self { buf, offset, len }
    }

    /// `v`'s entries, moved within its own block (grown by one cache line, so the peak
    /// memory stays one copy).
    fn from_vec(mut v: Vec<T>) -> Self {
        let len = v.len();
        v.reserve_exact(Self::PAD);
        let offset = v.as_ptr().align_offset(64).min(Self::PAD);
        v.resize(len + offset, T::default());
        v.copy_within(0..len, offset);
        Self {
            buf: v,
            offset,
            len,
        }
    }

    fn as_slice(&self) -> &[T] {
        &self.buf[self.offset..self.offset + self.len]
    }

    fn as_mut_slice(&mut self) -> &mut [T] {
        &mut self.buf[self.offset..self.offset + self.len]
    }
}

/// The stored entries, column i being vec(A_i).
pub enum StorageView<'a> {
    F64(&'a [f64]),
    F32(&'a [f32]),
}

/// Dense operator: column i of the stored (n1·n2) × m matrix is vec(A_i), so 𝒜 is `aᵀx` and
/// 𝒜* is `a z`, each a single streaming pass over contiguous memory.
pub struct DenseOperator {
    n1: usize,
    n2: usize,
    m: usize,
    a: Storage,
    counter: Counter,
    name: &'static str,
    /// How the fused pass runs, chosen by timing its calls (see [`Planner`]).
    planner: Planner,
}

impl DenseOperator {
    /// From an (n1·n2) × m matrix whose column i is vec(A_i).
    pub fn from_columns(n1: usize, n2: usize, a: DMatrix<f64>) -> Self {
        assert_eq!(a.nrows(), n1 * n2, "columns must have n1·n2 entries");
        Self {
            n1,
            n2,
            m: a.ncols(),
            a: Storage::F64(Lines::from_vec(a.data.into())),
            counter: Counter::default(),
            planner: Planner::default(),
            name: "dense",
        }
    }

    /// Gaussian ensemble, entries N(0, 1/m), drawn A_1, A_2, … each in row-major (C) order of
    /// its entries, so the draw order matches the `.npz` layout `sensing[i, a, b]`.
    pub fn gaussian(n1: usize, n2: usize, m: usize, rng: &mut impl Rng) -> Self {
        Self::gaussian_stored(n1, n2, m, rng, Precision::F64)
    }

    /// [`Self::gaussian`] stored at `precision`: the same draws, rounded to f32 as they are
    /// stored (no f64 copy is ever held, so f32 needs half the memory at its peak too).
    pub fn gaussian_stored(
        n1: usize,
        n2: usize,
        m: usize,
        rng: &mut impl Rng,
        precision: Precision,
    ) -> Self {
        let normal = Normal::new(0.0, 1.0 / (m as f64).sqrt()).expect("finite positive scale");
        let n = n1 * n2;
        let a = match precision {
            Precision::F64 => {
                let mut a = Lines::zeros(n * m);
                fill_gaussian(a.as_mut_slice(), n1, n2, &normal, rng, |v| v);
                Storage::F64(a)
            }
            Precision::F32 => {
                let mut a = Lines::zeros(n * m);
                fill_gaussian(a.as_mut_slice(), n1, n2, &normal, rng, |v| v as f32);
                Storage::F32(a)
            }
        };
        Self {
            n1,
            n2,
            m,
            a,
            counter: Counter::default(),
            planner: Planner::default(),
            name: "gaussian",
        }
    }

    /// The same operator with every entry rounded to f32: the rounded entries are the new
    /// operator.
    pub fn into_f32(self) -> Self {
        let a = match self.a {
            Storage::F64(a) => {
                let mut b = Lines::zeros(a.len);
                b.as_mut_slice()
                    .iter_mut()
                    .zip(a.as_slice())
                    .for_each(|(b, &v)| *b = v as f32);
                Storage::F32(b)
            }
            f32 => f32,
        };
        Self {
            a,
            planner: Planner::default(),
            ..self
        }
    }

    /// Run the fused pass always by `plan`, or (`None`, the default) by the fastest, chosen
    /// by timing its calls: every plan gives the same results bit for bit.
    pub fn set_fused_plan(&mut self, plan: Option<FusedPlan>) {
        self.planner = plan.map(Planner::forced).unwrap_or_default();
    }

    /// The fused pass's plan last chosen for one input (`None` before its first plans were
    /// timed, and at sizes below the one-thread size, where one block runs on one thread).
    pub fn fused_plan(&self) -> Option<FusedPlan> {
        self.planner.chosen()
    }

    pub fn precision(&self) -> Precision {
        match self.a {
            Storage::F64(_) => Precision::F64,
            Storage::F32(_) => Precision::F32,
        }
    }

    /// The stored entries, column-major (n1·n2) × m.
    pub fn storage(&self) -> StorageView<'_> {
        match &self.a {
            Storage::F64(a) => StorageView::F64(a.as_slice()),
            Storage::F32(a) => StorageView::F32(a.as_slice()),
        }
    }
}

/// Column i of `a` (n1·n2 entries) from the draws of A_i in row-major order.
fn fill_gaussian<T>(
    a: &mut [T],
    n1: usize,
    n2: usize,
    normal: &Normal<f64>,
    rng: &mut impl Rng,
    store: impl Fn(f64) -> T,
) {
    for col in a.chunks_exact_mut(n1 * n2) {
        for row in 0..n1 {
            for c in 0..n2 {
                col[row + c * n1] = store(normal.sample(rng));
            }
        }
    }
}

/// The first C inputs of a chunk as the fused pass takes them.
fn many<'a, const C: usize>(x: &[&'a [f64]]) -> [&'a [f64]; C] {
    std::array::from_fn(|c| x[c])
}

/// The first C residual buffers of a chunk, each its own mutable slice.
fn many_mut<const C: usize>(r: &mut [Vec<f64>]) -> [&mut [f64]; C] {
    let mut it = r.iter_mut();
    std::array::from_fn(|_| it.next().expect("C buffers").as_mut_slice())
}

/// The first C gradient slices of a chunk.
fn many_out<'a, const C: usize>(o: &'a mut [&mut [f64]]) -> [&'a mut [f64]; C] {
    let mut it = o.iter_mut();
    std::array::from_fn(|_| &mut **it.next().expect("C slices"))
}

impl DenseOperator {
    /// The fused residual–gradient pass for C inputs, the first G with their gradient (each
    /// counted as a fused pass; the caller counts the others' applications).
    fn fused<const C: usize, const G: usize>(
        &self,
        x: [&[f64]; C],
        y: &[f64],
        residual: [&mut [f64]; C],
        out: [&mut [f64]; G],
    ) {
        self.counter.pass();
        for _ in 0..G {
            self.counter.fused();
        }
        let n = self.n1 * self.n2;
        match &self.a {
            Storage::F64(a) => fused_any(a.as_slice(), n, x, y, residual, out, &self.planner),
            Storage::F32(a) => fused_any(a.as_slice(), n, x, y, residual, out, &self.planner),
        }
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
        self.m
    }
    fn apply(&self, x: &[f64], out: &mut [f64]) {
        self.counter.apply();
        self.counter.pass();
        let n = self.n1 * self.n2;
        match &self.a {
            Storage::F64(a) => apply_any(a.as_slice(), n, x, out),
            Storage::F32(a) => apply_any(a.as_slice(), n, x, out),
        }
    }
    fn adjoint(&self, z: &[f64], out: &mut [f64]) {
        self.counter.adjoint();
        self.counter.pass();
        let n = self.n1 * self.n2;
        match &self.a {
            Storage::F64(a) => adjoint_any(a.as_slice(), n, z, out),
            Storage::F32(a) => adjoint_any(a.as_slice(), n, z, out),
        }
    }
    fn apply_rows(&self, rows: &[usize], x: &[f64], out: &mut [f64]) {
        self.counter.rows(rows.len() as u64);
        let n = self.n1 * self.n2;
        match &self.a {
            Storage::F64(a) => apply_selected(a.as_slice(), n, rows, x, out),
            Storage::F32(a) => apply_selected(a.as_slice(), n, rows, x, out),
        }
    }
    fn adjoint_rows(&self, rows: &[usize], z: &[f64], out: &mut [f64]) {
        self.counter.rows(rows.len() as u64);
        let n = self.n1 * self.n2;
        match &self.a {
            Storage::F64(a) => adjoint_selected(a.as_slice(), n, rows, z, out),
            Storage::F32(a) => adjoint_selected(a.as_slice(), n, rows, z, out),
        }
    }
    fn residual_adjoint(&self, x: &[f64], y: &[f64], residual: &mut [f64], out: &mut [f64]) {
        self.fused([x], y, [residual], [out]);
    }
    fn residual_adjoint_pair(
        &self,
        x: [&[f64]; 2],
        y: &[f64],
        residual: [&mut [f64]; 2],
        out: [&mut [f64]; 2],
    ) {
        self.fused(x, y, residual, out);
    }
    fn residual_adjoint_beside_residual(
        &self,
        x: [&[f64]; 2],
        y: &[f64],
        residual: [&mut [f64]; 2],
        out: &mut [f64],
    ) {
        self.counter.apply();
        self.fused(x, y, residual, [out]);
    }
    fn residual_adjoint_pair_beside_residual(
        &self,
        x: [&[f64]; 3],
        y: &[f64],
        residual: [&mut [f64]; 3],
        out: [&mut [f64]; 2],
    ) {
        self.counter.apply();
        self.fused(x, y, residual, out);
    }
    fn residual_adjoint_many(
        &self,
        x: &[&[f64]],
        y: &[f64],
        residual: &mut [Vec<f64>],
        out: &mut [&mut [f64]],
    ) {
        assert!(
            x.len() == residual.len() && x.len() == out.len(),
            "one residual and one output per input"
        );
        for ((x, r), o) in x
            .chunks(2)
            .zip(residual.chunks_mut(2))
            .zip(out.chunks_mut(2))
        {
            match x.len() {
                1 => self.fused::<1, 1>(many(x), y, many_mut(r), many_out(o)),
                _ => self.fused::<2, 2>(many(x), y, many_mut(r), many_out(o)),
            }
        }
    }
    fn measurement_matrix(&self, i: usize, out: &mut [f64]) {
        let n = self.n1 * self.n2;
        match &self.a {
            Storage::F64(a) => out.copy_from_slice(&a.as_slice()[i * n..(i + 1) * n]),
            Storage::F32(a) => {
                for (o, v) in out.iter_mut().zip(&a.as_slice()[i * n..(i + 1) * n]) {
                    *o = *v as f64;
                }
            }
        }
    }
    fn counts(&self) -> OperatorCounts {
        OperatorCounts {
            passes: Some(self.counter.passes()),
            fused_plan: self.planner.chosen(),
            ..self.counter.counts()
        }
    }
    fn name(&self) -> &'static str {
        self.name
    }
    fn apply_block(&self, xs: &[&[f64]], outs: &mut [Vec<f64>]) {
        self.counter.add(xs.len() as u64, 0);
        self.counter.pass();
        let n = self.n1 * self.n2;
        match &self.a {
            Storage::F64(a) => apply_block_any(a.as_slice(), n, xs, outs),
            Storage::F32(a) => apply_block_any(a.as_slice(), n, xs, outs),
        }
    }
    fn adjoint_block(&self, zs: &[&[f64]], outs: &mut [Vec<f64>]) {
        self.counter.add(0, zs.len() as u64);
        self.counter.pass();
        let n = self.n1 * self.n2;
        match &self.a {
            Storage::F64(a) => adjoint_block_any(a.as_slice(), n, zs, outs),
            Storage::F32(a) => adjoint_block_any(a.as_slice(), n, zs, outs),
        }
    }
    /// The stored entries copied into a block that asks for huge pages before it is written,
    /// as [`SensingOperator::to_dense`]'s does.
    fn to_dense(&self) -> DMatrix<f64> {
        let mut entries = Vec::with_capacity(self.n1 * self.n2 * self.m);
        super::advise_huge_pages(&entries);
        match &self.a {
            Storage::F64(a) => entries.extend_from_slice(a.as_slice()),
            Storage::F32(a) => entries.extend(a.as_slice().iter().map(|&v| f64::from(v))),
        }
        DMatrix::from_vec(self.n1 * self.n2, self.m, entries)
    }
}
