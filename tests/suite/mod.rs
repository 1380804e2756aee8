mod answers;
mod auto;
mod central;
mod cli;
mod closed_form;
mod config;
mod convergence;
mod dop853;
mod field;
mod fuzz_props;
mod hostile;
mod invariants;
pub mod npz;
mod one_way_in;
mod optimizers;
mod plot;
mod stochastic;
mod sweep;
mod theory;
mod validation;

use gdflow::config::ConfigArgs;
use gdflow::problem::Problem;
use nalgebra::{DMatrix, DVector};

/// The problem's state split into U, V and the gradient of f by a dense 𝒜 (columns vec A_i):
/// the tests' independent computation of what the library computes with its kernels.
pub struct Plain {
    pub a: DMatrix<f64>,
    pub y: Vec<f64>,
    pub n1: usize,
    pub n2: usize,
    pub k: usize,
}

impl Plain {
    pub fn of(p: &Problem) -> Self {
        Self {
            a: p.op.to_dense(),
            y: p.y.clone(),
            n1: p.n1(),
            n2: p.n2(),
            k: p.width(),
        }
    }
    pub fn split(&self, x: &[f64]) -> (DMatrix<f64>, DMatrix<f64>) {
        let nu = self.n1 * self.k;
        (
            DMatrix::from_column_slice(self.n1, self.k, &x[..nu]),
            DMatrix::from_column_slice(self.n2, self.k, &x[nu..]),
        )
    }
    pub fn join(u: &DMatrix<f64>, v: &DMatrix<f64>) -> Vec<f64> {
        u.iter().chain(v.iter()).copied().collect()
    }
    /// r = 𝒜(UVᵀ) − y.
    pub fn residual(&self, u: &DMatrix<f64>, v: &DMatrix<f64>) -> DVector<f64> {
        let x = u * v.transpose();
        self.a.transpose() * DVector::from_column_slice(x.as_slice())
            - DVector::from_column_slice(&self.y)
    }
    /// 𝒜*(z) as an n1×n2 matrix.
    pub fn adjoint(&self, z: &DVector<f64>) -> DMatrix<f64> {
        DMatrix::from_column_slice(self.n1, self.n2, (&self.a * z).as_slice())
    }
    /// G = Σ_i (⟨A_i, UVᵀ⟩ − y_i) A_i.
    pub fn g(&self, u: &DMatrix<f64>, v: &DMatrix<f64>) -> DMatrix<f64> {
        self.adjoint(&self.residual(u, v))
    }
    /// ∇f = (GV, GᵀU) as one vector.
    pub fn grad(&self, x: &[f64]) -> Vec<f64> {
        let (u, v) = self.split(x);
        let g = self.g(&u, &v);
        Self::join(&(&g * &v), &(g.transpose() * &u))
    }
    /// ∇r_i = (A_iV, A_iᵀU) for every measurement, at `x`.
    pub fn residual_gradients(&self, x: &[f64]) -> Vec<DVector<f64>> {
        let (u, v) = self.split(x);
        (0..self.a.ncols())
            .map(|i| {
                let ai = DMatrix::from_column_slice(self.n1, self.n2, self.a.column(i).as_slice());
                DVector::from_vec(Self::join(&(&ai * &v), &(ai.transpose() * &u)))
            })
            .collect()
    }
}

/// MATH §8's and §9's small problem: 8×7, r = 2, k = 3, m = 60, seed 1, start of scale α.
pub fn math8_args(alpha: f64) -> ConfigArgs {
    ConfigArgs {
        n1: Some(8),
        n2: Some(7),
        rank: Some(2),
        width: Some(3),
        measurements: Some(60),
        alpha: Some(alpha),
        seed: Some(1),
        ..Default::default()
    }
}

/// `f` run on a rayon pool of `threads` threads (for results that must not depend on it).
pub fn on_threads<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("a thread pool")
        .install(f)
}

/// A small Gaussian problem with n1 ≠ n2 so that transposition mistakes show.
pub fn small_gaussian(seed: u64) -> Problem {
    let args = ConfigArgs {
        n1: Some(7),
        n2: Some(5),
        rank: Some(2),
        width: Some(3),
        measurements: Some(40),
        alpha: Some(0.3),
        seed: Some(seed),
        ..Default::default()
    };
    Problem::generate(&args.resolve().unwrap().problem_spec()).unwrap()
}

/// A small symmetric PSD problem (5 × 5, rank 2, k = 2, m = 30, symmetric A_i).
pub fn small_symmetric() -> Problem {
    let args = ConfigArgs {
        n1: Some(5),
        n2: Some(5),
        rank: Some(2),
        width: Some(2),
        measurements: Some(30),
        symmetric: Some(true),
        ..Default::default()
    };
    Problem::generate(&args.resolve().unwrap().problem_spec()).unwrap()
}

/// A random state of the problem's shape with entries of order `scale`.
pub fn random_state(p: &Problem, seed: u64, scale: f64) -> Vec<f64> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n = (p.n1() + p.n2()) * p.width();
    (0..n)
        .map(|_| scale * (rng.gen::<f64>() * 2.0 - 1.0))
        .collect()
}
