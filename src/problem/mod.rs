//! Problem instances (MATH §1): target, operator, observations and start, generated from one
//! seed or loaded from a NumPy `.npz` file.
//!
//! Seeds: every random object draws from its own ChaCha20 stream of the user seed
//! (`ChaCha20Rng::seed_from_u64(seed)` with stream 1 = operator, 2 = target, 3 = start,
//! 4 = noise), so changing e.g. α leaves the operator and the target as they were, and the
//! same inputs give bit-identical problems on every platform.

use std::path::PathBuf;
use std::sync::Arc;

use nalgebra::DMatrix;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rand_distr::{Distribution, Normal, StandardNormal};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::operator::{DenseOperator, EntryOperator, IdentityOperator, Precision, SensingOperator};

mod npz;
pub use npz::write_npz;

/// Which measurement operator a generated problem has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OperatorKind {
    /// Dense Gaussian ensemble, entries N(0, 1/m).
    Gaussian,
    /// 𝒜 = vec: plain matrix factorisation (m = n1·n2).
    Identity,
    /// Matrix completion: m distinct entries, scaled so that E‖𝒜(Z)‖² = ‖Z‖².
    Entries,
    /// The dense operator of a problem file (set by loading it; not a choice).
    File,
    /// An operator built in code and handed over with its problem
    /// (`experiments::Setup::from_problem`; not a choice).
    Custom,
}

impl OperatorKind {
    /// The kinds a user can choose (not `File`, which loading a file sets).
    pub const CHOICES: [OperatorKind; 3] = [
        OperatorKind::Gaussian,
        OperatorKind::Identity,
        OperatorKind::Entries,
    ];
    pub fn name(self) -> &'static str {
        match self {
            OperatorKind::Gaussian => "gaussian",
            OperatorKind::Identity => "identity",
            OperatorKind::Entries => "entries",
            OperatorKind::File => "file",
            OperatorKind::Custom => "custom",
        }
    }
    pub fn description(self) -> &'static str {
        match self {
            OperatorKind::Gaussian => "dense Gaussian ensemble, entries N(0, 1/m)",
            OperatorKind::Identity => "𝒜 = vec: plain matrix factorisation (m = n1·n2)",
            OperatorKind::Entries => {
                "matrix completion: m distinct entries, scaled so that E‖𝒜(Z)‖² = ‖Z‖²"
            }
            OperatorKind::File => "the dense operator of a --problem file",
            OperatorKind::Custom => "an operator built in code",
        }
    }
}

/// Everything that defines a generated instance; for a loaded one, what fills the arrays
/// the file leaves out (y from `noise` and `seed`, the start from `width`, `alpha`, `seed`).
#[derive(Debug, Clone, PartialEq)]
pub struct ProblemSpec {
    pub n1: usize,
    pub n2: usize,
    pub width: usize,
    pub measurements: usize,
    pub alpha: f64,
    /// The target's singular values, largest first.
    pub singular_values: Vec<f64>,
    pub operator: OperatorKind,
    pub precision: Precision,
    pub noise: f64,
    pub seed: u64,
    pub symmetric: bool,
}

/// Where an instance came from, and for a file which optional arrays it held (what the file
/// holds overrides the options that would have generated it).
#[derive(Debug, Clone, PartialEq)]
pub enum ProblemSource {
    Generated,
    File {
        path: PathBuf,
        has_y: bool,
        has_u0: bool,
        has_v0: bool,
    },
}

/// Stream numbers of the sub-seeds.
pub const STREAM_OPERATOR: u64 = 1;
pub const STREAM_TARGET: u64 = 2;
pub const STREAM_START: u64 = 3;
pub const STREAM_NOISE: u64 = 4;
/// The replicas' own starts (`--vary start`), keyed further by the replica.
pub const STREAM_REPLICA_START: u64 = 8;

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
    pub source: ProblemSource,
    /// The α the start was drawn with, where known (generated, or a file's `alpha` array).
    pub start_alpha: Option<f64>,
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

    /// Replica `replica`'s own start (`--vary start`) as a state vector: entries iid
    /// N(0, α²/k) with α = [`Problem::start_scale`], U_0 first, from a counter-based stream
    /// keyed by (seed, replica) alone, so that it depends on nothing else (thread count, shard,
    /// the other replicas). Replica 0 keeps the problem's start.
    pub fn replica_start_state(&self, seed: u64, replica: u64) -> Vec<f64> {
        if replica == 0 {
            return self.start_state();
        }
        use rand::Rng;
        let key: u64 = sub_rng(seed, STREAM_REPLICA_START).gen();
        let mut rng = ChaCha20Rng::seed_from_u64(key);
        rng.set_stream(replica);
        let k = self.width();
        let normal =
            Normal::new(0.0, self.start_scale() / (k as f64).sqrt()).expect("a finite scale");
        let len = if self.symmetric {
            self.n1() * k
        } else {
            (self.n1() + self.n2()) * k
        };
        (0..len).map(|_| normal.sample(&mut rng)).collect()
    }

    /// The scale α of the start: the α it was drawn with where known, otherwise measured as a
    /// generated start would have it, E‖U_0‖² + E‖V_0‖² = (n1 + n2)α² for entries N(0, α²/k).
    pub fn start_scale(&self) -> f64 {
        if let Some(a) = self.start_alpha {
            return a;
        }
        let n = if self.symmetric {
            self.n1()
        } else {
            self.n1() + self.n2()
        };
        let energy = self.u0.norm_squared()
            + if self.symmetric {
                0.0
            } else {
                self.v0.norm_squared()
            };
        (energy / n as f64).sqrt()
    }

    /// Generate the instance a specification describes.
    pub fn generate(cfg: &ProblemSpec) -> Result<Self> {
        let (n1, n2, m) = (cfg.n1, cfg.n2, cfg.measurements);
        let mut rng = sub_rng(cfg.seed, STREAM_OPERATOR);
        let op: Arc<dyn SensingOperator> =
            match cfg.operator {
                OperatorKind::Gaussian => {
                    // the rounded entries are the operator: y is computed from them below
                    Arc::new(DenseOperator::gaussian_stored(
                        n1,
                        n2,
                        m,
                        &mut rng,
                        cfg.precision,
                    ))
                }
                OperatorKind::Identity => Arc::new(IdentityOperator::new(n1, n2)),
                OperatorKind::Entries => Arc::new(EntryOperator::sample(n1, n2, m, &mut rng)),
                OperatorKind::File | OperatorKind::Custom => return Err(Error::invalid(
                    "operator",
                    cfg.operator.name(),
                    "is not generated: a file's operator is loaded with --problem, a custom one \
                     comes with its problem",
                )),
            };
        let target_sv = cfg.singular_values.clone();
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
            source: ProblemSource::Generated,
            start_alpha: Some(cfg.alpha),
        })
    }

    /// MATH §3: X* = L diag(σ) Lᵀ, every A_i replaced by (A_i + A_iᵀ)/2 (for symmetric Z,
    /// ⟨(A + Aᵀ)/2, Z⟩ = ⟨A, Z⟩, so E‖𝒜(Z)‖² = ‖Z‖² still holds), V_0 = U_0.
    fn symmetric_from(op: Arc<dyn SensingOperator>, cfg: &ProblemSpec) -> Self {
        let n = cfg.n1;
        let target_sv = cfg.singular_values.clone();
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
            match cfg.precision {
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
            source: ProblemSource::Generated,
            start_alpha: Some(cfg.alpha),
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
            source: ProblemSource::Generated,
            start_alpha: None,
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
