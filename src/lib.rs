//! # gdflow
//!
//! Gradient descent versus gradient flow in low-rank matrix sensing (the mathematics is in
//! [`math`], the repository's MATH.md): f(U, V) = ½‖𝒜(UVᵀ) − y‖², GD U ← U − ηGV,
//! V ← V − ηGᵀU, and the flow U' = −GV, V' = −GᵀU.
//!
//! The layers, from the bottom up (each uses only those below it):
//!
//! 1. [`operator`]: the measurement operator 𝒜 and its adjoint behind one trait,
//!    [`operator::SensingOperator`] (Gaussian, identity, entry sampling, or your own).
//! 2. [`problem`]: a target X*, an operator, observations y and a start (U_0, V_0), generated
//!    from one seed or loaded from `.npz`.
//! 3. [`field`]: the vector fields — [`field::SensingField`], the perturbed flows
//!    ([`field::Perturbed`]) and GD's modified field ([`field::Modified`]) as wrappers — all
//!    behind [`field::Field`].
//! 4. [`dynamics`]: discrete methods ([`dynamics::Stepper`], GD is [`dynamics::Gd`]) run by one
//!    [`dynamics::Driver`] with observers; the optimisers beside their continuous limits
//!    ([`dynamics::optimizer::Optimizer`], chosen by name from
//!    [`dynamics::optimizer::REGISTRY`]: GD, ScaledGD, alternating GD, heavy ball, Nesterov);
//!    flows solved by [`dynamics::flow::solve_flow`] (diffsol, confined there); the Hessian's
//!    top eigenpairs ([`dynamics::sharpness`]).
//! 5. [`analysis`]: quantities recorded along trajectories ([`analysis::Recorder`], and your
//!    own through [`analysis::Quantity`]), the theory's quantities and fits.
//! 6. [`config`] and [`results`]: the configuration (partial from flags and TOML, resolved
//!    with defaults) and the results as serde types with each file's writer and reader.
//! 7. [`experiments`]: `run`, `sweep`, `check`, `merge`, all entered through
//!    [`experiments::Setup`]; `plot` (feature `plot`) draws figures from results; the command
//!    line (feature `cli`) is the binary's, not part of the library's surface.
//!
//! The features `cli` and `plot` are on by default; `default-features = false` builds the
//! library alone, without clap, indicatif or plotters. The items a library user reaches for
//! first are re-exported here: [`Problem`], [`ConfigArgs`] and [`Setup`], [`run`], [`sweep`],
//! [`check`] and their results, [`Field`], [`Optimizer`].
//!
//! ```
//! use gdflow::dynamics::flow::{solve_flow, FlowOptions, Method};
//! use gdflow::dynamics::{gradient_descent, RunOptions};
//! use gdflow::field::{Field, SensingField};
//! use gdflow::problem::Problem;
//!
//! // MATH §4: plain factorisation, X* = diag(1, 0.5), aligned start s_j(0) = 1e-4.
//! let p = Problem::aligned_factorisation(3, 3, &[1.0, 0.5], &[1e-4, 1e-4]);
//! let field = SensingField::from_problem(&p);
//! let gd = gradient_descent(&field, &p.start_state(), &RunOptions::new(0.1, 300, 100));
//! let opts = FlowOptions::new(Method::Tsit45, 1e-9, 1e-14);
//! let flow = solve_flow(&field, &p.start_state(), &gd.times, &gd.steps, &opts).unwrap();
//! // at t = 30 both have learned X*
//! let x = field.product(flow.trajectory.states.last().unwrap());
//! assert!((x[(0, 0)] - 1.0).abs() < 1e-8 && (x[(1, 1)] - 0.5).abs() < 1e-5);
//! ```

pub mod analysis;
#[cfg(feature = "cli")]
#[doc(hidden)]
pub mod cli;
pub mod config;
pub mod dynamics;
pub mod error;
pub mod experiments;
pub mod field;
pub mod operator;
pub(crate) mod output;
#[cfg(feature = "plot")]
pub mod plot;
pub mod problem;
pub(crate) mod resources;
pub mod results;
mod vector;

pub use config::{CheckArgs, Config, ConfigArgs, SweepArgs};
pub use dynamics::optimizer::Optimizer;
pub use dynamics::{FlowVariant, Status};
pub use error::{Error, Result};
pub use experiments::{check, run, sweep, Command, RunExtras, Setup};
pub use field::{Field, SensingField};
pub use problem::Problem;
pub use results::{check::CheckResult, run::RunResult, sweep::SweepResult};

#[doc = include_str!("../MATH.md")]
#[allow(clippy::doc_overindented_list_items, clippy::doc_lazy_continuation)]
pub mod math {}
