//! # gdflow
//!
//! Gradient descent versus gradient flow in low-rank matrix sensing (see `MATH.md`):
//! f(U, V) = ½‖𝒜(UVᵀ) − y‖², GD U ← U − ηGV, V ← V − ηGᵀU, and the flow U' = −GV, V' = −GᵀU.
//!
//! A tour, in the order a run uses the pieces:
//!
//! 1. [`config::ConfigArgs`] → [`config::Config`]: options from flags and TOML, validated.
//! 2. [`problem::Problem`]: target X*, operator, observations y and start (U_0, V_0), generated
//!    from one seed or loaded from `.npz`.
//! 3. [`operator::SensingOperator`]: 𝒜 and 𝒜* into caller buffers (Gaussian, identity, entry
//!    sampling).
//! 4. [`field::VectorField`]: the loss, G, the field F = (−GV, −GᵀU), its jvp and its exact
//!    Jacobian — shared by both dynamics.
//! 5. [`gd::gradient_descent`] and [`flow::solve_flow`] (diffsol), each giving a
//!    [`gd::Trajectory`] whose [`gd::Status`] says how it ended.
//! 6. [`record::Recorder`]: loss, relative error, balance drift and singular values at every
//!    output time; [`experiment`] ties it together for `gdflow run`.
//!
//! ```
//! use gdflow::config::Method;
//! use gdflow::field::VectorField;
//! use gdflow::flow::{solve_flow, FlowOptions};
//! use gdflow::gd::{gradient_descent, GdOptions};
//! use gdflow::problem::Problem;
//!
//! // MATH §4: plain factorisation, X* = diag(1, 0.5), aligned start s_j(0) = 1e-4.
//! let p = Problem::aligned_factorisation(3, 3, &[1.0, 0.5], &[1e-4, 1e-4]);
//! let field = VectorField::from_problem(&p);
//! let gd = gradient_descent(&field, &p.start_state(), &GdOptions::new(0.1, 300, 100));
//! let opts = FlowOptions::new(Method::Tsit45, 1e-9, 1e-14);
//! let flow = solve_flow(&field, &p.start_state(), &gd.times, &gd.steps, &opts).unwrap();
//! // at t = 30 both have learned X*
//! let x = field.product(flow.trajectory.states.last().unwrap());
//! assert!((x[(0, 0)] - 1.0).abs() < 1e-8 && (x[(1, 1)] - 0.5).abs() < 1e-5);
//! ```

pub mod check;
pub mod config;
pub mod error;
pub mod experiment;
pub mod field;
pub mod flow;
pub mod gd;
pub mod operator;
pub mod output;
pub mod plot;
pub mod problem;
pub mod progress;
pub mod record;
pub mod sharpness;
pub mod sweep;
pub mod theory;
