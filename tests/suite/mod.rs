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
