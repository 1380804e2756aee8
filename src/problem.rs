//! Problem instances (MATH §1): target, operator, observations and start, generated from one
//! seed or loaded from a NumPy `.npz` file.
//!
//! Seeds: every random object draws from its own ChaCha20 stream of the user seed
//! (`ChaCha20Rng::seed_from_u64(seed)` with stream 1 = operator, 2 = target, 3 = start,
//! 4 = noise), so changing e.g. α leaves the operator and the target as they were, and the
//! same inputs give bit-identical problems on every platform.

use std::path::Path;
use std::sync::Arc;

use nalgebra::DMatrix;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rand_distr::{Distribution, Normal, StandardNormal};

use crate::config::{Config, OperatorKind};
use crate::error::{Error, Result};
use crate::operator::{DenseOperator, EntryOperator, IdentityOperator, Precision, SensingOperator};

/// Stream numbers of the sub-seeds.
pub const STREAM_OPERATOR: u64 = 1;
pub const STREAM_TARGET: u64 = 2;
pub const STREAM_START: u64 = 3;
pub const STREAM_NOISE: u64 = 4;

/// The generator of one random object of a run.
pub fn sub_rng(seed: u64, stream: u64) -> ChaCha20Rng {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

/// One instance: y = 𝒜(X*) + ξ, start (U_0, V_0).
#[derive(Clone)]
pub struct Problem {
    pub op: Arc<dyn SensingOperator>,
    pub x_star: DMatrix<f64>,
    /// The target's nonzero singular values, largest first.
    pub target_sv: Vec<f64>,
    pub y: Vec<f64>,
    pub u0: DMatrix<f64>,
    pub v0: DMatrix<f64>,
    /// The symmetric PSD case (MATH §3): X* = X*ᵀ ⪰ 0, symmetric A_i, V_0 = U_0, and the
    /// dynamics run on U alone.
    pub symmetric: bool,
    /// For an f64 problem file stored in f32: ‖𝒜₃₂(X*) − 𝒜₆₄(X*)‖/‖𝒜₆₄(X*)‖, how much rounding
    /// the entries changed the operator.
    pub f32_change_of_y: Option<f64>,
}

impl Problem {
    pub fn n1(&self) -> usize {
        self.x_star.nrows()
    }
    pub fn n2(&self) -> usize {
        self.x_star.ncols()
    }
    pub fn width(&self) -> usize {
        self.u0.ncols()
    }
    pub fn m(&self) -> usize {
        self.y.len()
    }

    /// The start as one state vector (vec U_0, vec V_0), or vec U_0 in the symmetric case.
    pub fn start_state(&self) -> Vec<f64> {
        let mut x = self.u0.as_slice().to_vec();
        if !self.symmetric {
            x.extend_from_slice(self.v0.as_slice());
        }
        x
    }

    /// Generate the instance a configuration describes.
    pub fn generate(cfg: &Config) -> Result<Self> {
        cfg.validate()?;
        let (n1, n2, m) = (cfg.n1, cfg.n2, cfg.measurements);
        let mut rng = sub_rng(cfg.seed, STREAM_OPERATOR);
        let op: Arc<dyn SensingOperator> = match cfg.operator {
            OperatorKind::Gaussian => {
                // the rounded entries are the operator: y is computed from them below
                Arc::new(DenseOperator::gaussian_stored(
                    n1,
                    n2,
                    m,
                    &mut rng,
                    cfg.sensing_precision,
                ))
            }
            OperatorKind::Identity => Arc::new(IdentityOperator::new(n1, n2)),
            OperatorKind::Entries => Arc::new(EntryOperator::sample(n1, n2, m, &mut rng)),
            OperatorKind::File => {
                return Err(Error::invalid(
                    "operator",
                    "file",
                    "a file's operator is loaded with --problem, not generated",
                ))
            }
        };
        let target_sv = cfg.target_singular_values();
        if cfg.symmetric {
            return Ok(Self::symmetric_from(op, cfg));
        }
        let x_star = random_target(n1, n2, &target_sv, cfg.seed);
        let y = observe(op.as_ref(), &x_star, cfg.noise, cfg.seed);
        let (u0, v0) = random_start(n1, n2, cfg.width, cfg.alpha, cfg.seed);
        Ok(Self {
            op,
            x_star,
            target_sv,
            y,
            u0,
            v0,
            symmetric: false,
            f32_change_of_y: None,
        })
    }

    /// MATH §3: X* = L diag(σ) Lᵀ, every A_i replaced by (A_i + A_iᵀ)/2 (for symmetric Z,
    /// ⟨(A + Aᵀ)/2, Z⟩ = ⟨A, Z⟩, so E‖𝒜(Z)‖² = ‖Z‖² still holds), V_0 = U_0.
    fn symmetric_from(op: Arc<dyn SensingOperator>, cfg: &Config) -> Self {
        let n = cfg.n1;
        let target_sv = cfg.target_singular_values();
        let mut dense = op.to_dense();
        if cfg.operator == OperatorKind::Gaussian {
            let mut a = vec![0.0; n * n];
            for i in 0..dense.ncols() {
                a.copy_from_slice(dense.column(i).as_slice());
                let mut col = dense.column_mut(i);
                for p in 0..n {
                    for q in 0..n {
                        col[p + q * n] = 0.5 * (a[p + q * n] + a[q + p * n]);
                    }
                }
            }
        }
        let op: Arc<dyn SensingOperator> = if cfg.operator == OperatorKind::Gaussian {
            let op = DenseOperator::from_columns(n, n, dense);
            match cfg.sensing_precision {
                Precision::F64 => Arc::new(op),
                Precision::F32 => Arc::new(op.into_f32()),
            }
        } else {
            op
        };
        let half = random_target(n, n, &target_sv, cfg.seed);
        // the left factor of the random target: X* = L diag(σ) Lᵀ
        let l = half.clone().svd(true, false).u.expect("asked for U");
        let mut order: Vec<usize> = (0..n).collect();
        let svals = half.singular_values();
        order.sort_by(|&a, &b| svals[b].total_cmp(&svals[a]));
        let mut x_star = DMatrix::zeros(n, n);
        for (j, s) in target_sv.iter().enumerate() {
            let c = l.column(order[j]);
            x_star += c * c.transpose() * *s;
        }
        let x_star = 0.5 * (&x_star + x_star.transpose());
        let y = observe(op.as_ref(), &x_star, cfg.noise, cfg.seed);
        let (u0, _) = random_start(n, n, cfg.width, cfg.alpha, cfg.seed);
        Self {
            op,
            x_star,
            target_sv,
            y,
            v0: u0.clone(),
            u0,
            symmetric: true,
            f32_change_of_y: None,
        }
    }
}

impl Problem {
    /// The closed-form case of MATH §4: 𝒜 = identity, X* = diag(σ_1..σ_r, 0, …) (n1×n2), and
    /// the aligned balanced start U_0 = V_0 restricted to the first k coordinates, column j
    /// equal to √(s_j(0))·e_j. `sigma` may hold zeros (σ_j = 0 for j ≥ r); k = `s0.len()`.
    pub fn aligned_factorisation(n1: usize, n2: usize, sigma: &[f64], s0: &[f64]) -> Self {
        let k = s0.len();
        assert!(
            k <= n1.min(n2) && sigma.len() <= k,
            "σ and s0 must fit the dimensions"
        );
        let mut x_star = DMatrix::zeros(n1, n2);
        for (j, s) in sigma.iter().enumerate() {
            x_star[(j, j)] = *s;
        }
        let mut u0 = DMatrix::zeros(n1, k);
        let mut v0 = DMatrix::zeros(n2, k);
        for (j, s) in s0.iter().enumerate() {
            u0[(j, j)] = s.sqrt();
            v0[(j, j)] = s.sqrt();
        }
        let op: Arc<dyn SensingOperator> = Arc::new(IdentityOperator::new(n1, n2));
        let y = observe(op.as_ref(), &x_star, 0.0, 0);
        Self {
            op,
            target_sv: nonzero_singular_values(&x_star),
            x_star,
            y,
            u0,
            v0,
            symmetric: false,
            f32_change_of_y: None,
        }
    }
}

/// X* = L diag(σ) Rᵀ with L, R the Q factors of Gaussian matrices.
pub fn random_target(n1: usize, n2: usize, sv: &[f64], seed: u64) -> DMatrix<f64> {
    let mut rng = sub_rng(seed, STREAM_TARGET);
    let r = sv.len();
    let mut gauss = |rows: usize| {
        let g = DMatrix::<f64>::from_fn(rows, r, |_, _| StandardNormal.sample(&mut rng));
        g.qr().q()
    };
    let l = gauss(n1);
    let rr = gauss(n2);
    let mut ls = l.clone();
    for (j, s) in sv.iter().enumerate() {
        ls.column_mut(j).scale_mut(*s);
    }
    ls * rr.transpose()
}

/// U_0, V_0 with iid N(0, α²/k) entries, U_0 drawn first.
pub fn random_start(
    n1: usize,
    n2: usize,
    k: usize,
    alpha: f64,
    seed: u64,
) -> (DMatrix<f64>, DMatrix<f64>) {
    let mut rng = sub_rng(seed, STREAM_START);
    let normal = Normal::new(0.0, alpha / (k as f64).sqrt()).expect("alpha validated");
    let u0 = DMatrix::from_fn(n1, k, |_, _| normal.sample(&mut rng));
    let v0 = DMatrix::from_fn(n2, k, |_, _| normal.sample(&mut rng));
    (u0, v0)
}

/// y = 𝒜(X*) + ξ, ξ_i ~ N(0, noise²).
pub fn observe(op: &dyn SensingOperator, x_star: &DMatrix<f64>, noise: f64, seed: u64) -> Vec<f64> {
    let mut y = vec![0.0; op.m()];
    op.apply(x_star.as_slice(), &mut y);
    if noise > 0.0 {
        let mut rng = sub_rng(seed, STREAM_NOISE);
        let normal = Normal::new(0.0, noise).expect("noise validated");
        for yi in &mut y {
            *yi += normal.sample(&mut rng);
        }
    }
    y
}

/// Nonzero singular values of a matrix (relative threshold max(n1, n2)·ε·σ_1).
pub fn nonzero_singular_values(x: &DMatrix<f64>) -> Vec<f64> {
    let mut sv: Vec<f64> = x.singular_values().iter().copied().collect();
    sv.sort_by(|a, b| b.total_cmp(a));
    let top = sv.first().copied().unwrap_or(0.0);
    let tol = top * f64::EPSILON * x.nrows().max(x.ncols()) as f64;
    sv.retain(|s| *s > tol);
    sv
}

// ---------------------------------------------------------------------------------------------
// NumPy interop

/// An array read from the archive: its shape and its values in C (row-major) order.
struct Array {
    shape: Vec<usize>,
    data: Vec<f64>,
}

fn read_array<R: std::io::Read + std::io::Seek>(
    archive: &mut npyz::npz::NpzArchive<R>,
    path: &Path,
    name: &str,
) -> Result<Option<Array>> {
    let file = archive
        .by_name(name)
        .map_err(|e| Error::npz(path, format!("cannot read array `{name}`: {e}")))?;
    let Some(file) = file else { return Ok(None) };
    let shape: Vec<usize> = file.shape().iter().map(|&s| s as usize).collect();
    // A header may claim any shape: refuse sizes that overflow or cannot fit in memory before
    // anything is allocated for them.
    let count = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    let limit = crate::config::available_memory_bytes().unwrap_or(16 << 30) / 2 / 8;
    match count {
        Some(c) if (c as u64) <= limit => {}
        _ => {
            return Err(Error::npz(
                path,
                format!("array `{name}` claims shape {shape:?}, too large to load"),
            ))
        }
    }
    let fortran = file.order() == npyz::Order::Fortran;
    let dtype = file.dtype().descr();
    let raw: Vec<f64> = match file.into_vec::<f64>() {
        Ok(v) => v,
        Err(e) => {
            return Err(Error::npz(
                path,
                format!("array `{name}` must be float64 (dtype '<f8'), found {dtype}: {e}"),
            ))
        }
    };
    if let Some(bad) = raw.iter().position(|v| !v.is_finite()) {
        return Err(Error::npz(
            path,
            format!(
                "array `{name}` holds a non-finite value ({}) at flat index {bad}",
                raw[bad]
            ),
        ));
    }
    let data = if fortran {
        fortran_to_c(&raw, &shape)
    } else {
        raw
    };
    Ok(Some(Array { shape, data }))
}

fn fortran_to_c(raw: &[f64], shape: &[usize]) -> Vec<f64> {
    let n = raw.len();
    let mut out = vec![0.0; n];
    let mut idx = vec![0usize; shape.len()];
    for o in out.iter_mut() {
        let mut f = 0;
        let mut stride = 1;
        for (d, &i) in idx.iter().enumerate() {
            f += i * stride;
            stride *= shape[d];
        }
        *o = raw[f];
        for d in (0..shape.len()).rev() {
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    out
}

fn expect_shape(path: &Path, name: &str, arr: &Array, want: &[usize], what: &str) -> Result<()> {
    if arr.shape != want {
        return Err(Error::npz(
            path,
            format!(
                "array `{name}` has shape {:?}, expected {want:?} ({what})",
                arr.shape
            ),
        ));
    }
    Ok(())
}

fn matrix_from_c(rows: usize, cols: usize, data: &[f64]) -> DMatrix<f64> {
    DMatrix::from_row_slice(rows, cols, data)
}

impl Problem {
    /// Load `x_star` (n1×n2) and `sensing` (m×n1×n2, `sensing[i, a, b]` = entry (a, b) of A_i);
    /// `y`, `u0`, `v0` are taken from the file when present and generated from `cfg` (its
    /// noise, width, α and seed) when not.
    pub fn load_npz(path: &Path, cfg: &Config) -> Result<Self> {
        let file = std::fs::File::open(path)
            .map_err(|e| Error::npz(path, format!("cannot be opened: {e}")))?;
        Self::load_npz_from(std::io::BufReader::new(file), path, cfg)
    }

    /// [`Problem::load_npz`] from any seekable reader; `path` only labels errors.
    pub fn load_npz_from<R: std::io::Read + std::io::Seek>(
        reader: R,
        path: &Path,
        cfg: &Config,
    ) -> Result<Self> {
        let mut archive = npyz::npz::NpzArchive::new(reader)
            .map_err(|e| Error::npz(path, format!("not a readable .npz archive: {e}")))?;
        let x = read_array(&mut archive, path, "x_star")?
            .ok_or_else(|| Error::npz(path, "required array `x_star` (n1×n2) is missing"))?;
        if x.shape.len() != 2 || x.shape.contains(&0) {
            return Err(Error::npz(
                path,
                format!(
                    "array `x_star` must be a non-empty 2-d array n1×n2, found shape {:?}",
                    x.shape
                ),
            ));
        }
        let (n1, n2) = (x.shape[0], x.shape[1]);
        let s = read_array(&mut archive, path, "sensing")?
            .ok_or_else(|| Error::npz(path, "required array `sensing` (m×n1×n2) is missing"))?;
        if s.shape.len() != 3 || s.shape[0] == 0 || s.shape[1..] != [n1, n2] {
            return Err(Error::npz(
                path,
                format!(
                    "array `sensing` has shape {:?}, expected (m, {n1}, {n2}) with m >= 1 \
                     (x_star is {n1}×{n2})",
                    s.shape
                ),
            ));
        }
        let m = s.shape[0];
        let n12 = n1 * n2;
        // C order holds A_i row-major; our columns hold vec(A_i) column-major.
        let mut cols = DMatrix::zeros(n12, m);
        for i in 0..m {
            let src = &s.data[i * n12..(i + 1) * n12];
            let col = cols.column_mut(i);
            let col = col.data.into_slice_mut();
            for a in 0..n1 {
                for b in 0..n2 {
                    col[a + b * n1] = src[a * n2 + b];
                }
            }
        }
        let x_star = matrix_from_c(n1, n2, &x.data);
        let op64 = DenseOperator::from_columns(n1, n2, cols);
        let (op, f32_change_of_y): (Arc<dyn SensingOperator>, _) = match cfg.sensing_precision {
            Precision::F64 => (Arc::new(op64), None),
            Precision::F32 => {
                let y64 = observe(&op64, &x_star, 0.0, 0);
                let op32 = op64.into_f32();
                let y32 = observe(&op32, &x_star, 0.0, 0);
                let diff: f64 = y64
                    .iter()
                    .zip(&y32)
                    .map(|(a, b)| (a - b).powi(2))
                    .sum::<f64>()
                    .sqrt();
                let norm: f64 = y64.iter().map(|a| a * a).sum::<f64>().sqrt();
                (Arc::new(op32), Some(diff / norm.max(f64::MIN_POSITIVE)))
            }
        };
        let target_sv = nonzero_singular_values(&x_star);
        let y = match read_array(&mut archive, path, "y")? {
            Some(arr) => {
                expect_shape(path, "y", &arr, &[m], "one value per measurement")?;
                arr.data
            }
            None => observe(op.as_ref(), &x_star, cfg.noise, cfg.seed),
        };
        let u0 = read_array(&mut archive, path, "u0")?;
        let v0 = read_array(&mut archive, path, "v0")?;
        let k = match (&u0, &v0) {
            (Some(a), _) | (None, Some(a)) if a.shape.len() == 2 => a.shape[1],
            (Some(a), _) | (None, Some(a)) => {
                return Err(Error::npz(
                    path,
                    format!("start factors must be 2-d, found shape {:?}", a.shape),
                ))
            }
            (None, None) => cfg.width,
        };
        if k == 0 {
            return Err(Error::npz(
                path,
                "start factors have zero columns (width k must be >= 1)",
            ));
        }
        let (gen_u, mut gen_v) = random_start(n1, n2, k, cfg.alpha, cfg.seed);
        if cfg.symmetric && n1 == n2 {
            gen_v = gen_u.clone();
        }
        let u0 = match u0 {
            Some(arr) => {
                expect_shape(path, "u0", &arr, &[n1, k], "n1×k")?;
                matrix_from_c(n1, k, &arr.data)
            }
            None => gen_u,
        };
        let v0 = match v0 {
            Some(arr) => {
                expect_shape(path, "v0", &arr, &[n2, k], "n2×k, k = columns of u0")?;
                matrix_from_c(n2, k, &arr.data)
            }
            None => gen_v,
        };
        let mut problem = Self {
            op,
            x_star,
            target_sv,
            y,
            u0,
            v0,
            symmetric: false,
            f32_change_of_y,
        };
        if cfg.symmetric {
            problem.make_symmetric(path)?;
        }
        Ok(problem)
    }

    /// Check that a loaded problem is the symmetric PSD case and mark it so.
    fn make_symmetric(&mut self, path: &Path) -> Result<()> {
        let n = self.n1();
        let asym = |m: &DMatrix<f64>| (m - m.transpose()).norm() / m.norm().max(f64::MIN_POSITIVE);
        if self.n2() != n {
            return Err(Error::npz(path, "--symmetric needs a square `x_star`"));
        }
        if asym(&self.x_star) > 1e-12 {
            return Err(Error::npz(path, "--symmetric needs a symmetric `x_star`"));
        }
        let mut a = vec![0.0; n * n];
        for i in 0..self.m() {
            self.op.measurement_matrix(i, &mut a);
            if asym(&DMatrix::from_column_slice(n, n, &a)) > 1e-12 {
                return Err(Error::npz(
                    path,
                    format!("--symmetric needs symmetric matrices: `sensing[{i}]` is not"),
                ));
            }
        }
        if self.u0 != self.v0 {
            return Err(Error::npz(
                path,
                "--symmetric needs `v0` equal to `u0` (or neither given)",
            ));
        }
        self.symmetric = true;
        Ok(())
    }

    /// Write the instance in the format [`Problem::load_npz`] reads (all arrays float64, C
    /// order). The file appears only once complete.
    pub fn save_npz(&self, path: &Path) -> Result<()> {
        let (n1, n2, m) = (self.n1(), self.n2(), self.m());
        let dense = self.op.to_dense();
        let mut sensing = Vec::with_capacity(m * n1 * n2);
        for i in 0..m {
            let col = dense.column(i);
            for a in 0..n1 {
                for b in 0..n2 {
                    sensing.push(col[a + b * n1]);
                }
            }
        }
        let c_order = |mat: &DMatrix<f64>| -> Vec<f64> { mat.transpose().as_slice().to_vec() };
        let arrays: [(&str, Vec<u64>, Vec<f64>); 5] = [
            ("x_star", vec![n1 as u64, n2 as u64], c_order(&self.x_star)),
            ("sensing", vec![m as u64, n1 as u64, n2 as u64], sensing),
            ("y", vec![m as u64], self.y.clone()),
            (
                "u0",
                vec![n1 as u64, self.width() as u64],
                c_order(&self.u0),
            ),
            (
                "v0",
                vec![n2 as u64, self.width() as u64],
                c_order(&self.v0),
            ),
        ];
        crate::output::write_atomically(path, |file| {
            let mut npz = npyz::npz::NpzWriter::new(std::io::BufWriter::new(file));
            for (name, shape, data) in &arrays {
                use npyz::WriterBuilder;
                let mut w = npz
                    .array::<f64>(name, Default::default())?
                    .default_dtype()
                    .shape(shape)
                    .begin_nd()?;
                w.extend(data.iter().copied())?;
                w.finish()?;
            }
            npz.zip_writer().finish()?;
            Ok(())
        })
    }
}
