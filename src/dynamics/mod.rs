//! Dynamics on a [`crate::field::Field`]: discrete methods stepped by one [`Driver`], and
//! flows integrated by one adapter ([`flow`], the only user of diffsol).
//!
//! In the spirit of argmin's problem/solver/executor and diffrax's term/solver/SaveAt:
//!
//! | piece | role |
//! |---|---|
//! | [`Dynamics`] | anything that yields a trajectory: a method ([`optimizer::Discrete`]) or a limit ([`optimizer::Limit`]), named by [`optimizer::named`] |
//! | [`Stepper`] | one discrete method: evaluate at x_j, then step to x_{j+1} ([`Gd`] is GD) |
//! | [`Driver`] | the loop: one divergence rule, [`Observer`]s of every iterate, [`SaveAt`] |
//! | [`flow::solve_flow`] | a field's flow at requested times, with a hook at each output |
//! | [`sharpness`] | the top eigenvalues of ∇²f from Hessian–vector products |
//! | [`stability`] | the largest step size at which GD converges, by bisection |

use serde::{Deserialize, Serialize};

pub mod central;
mod driver;
pub mod flow;
pub mod optimizer;
pub mod sde;
pub mod sharpness;
pub mod stability;
mod stepper;
pub mod stop;

pub use driver::{
    gradient_descent, gradient_descent_batch, gradient_descent_batch_from, Divergence, Driver,
    Iterate, Observer, RunOptions, SaveAt,
};
pub use optimizer::Dynamics;
pub(crate) use stepper::steps_from_its_evaluation;
pub use stepper::{Evaluation, Gd, Stepper};

/// How a trajectory ended. Divergence and solver failure are results, not errors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Status {
    Completed,
    /// The loss became non-finite or exceeded the divergence bound at `step` (time `t`);
    /// `last_loss` is the last finite loss, at step − 1.
    Diverged {
        step: usize,
        t: f64,
        loss: f64,
        last_loss: f64,
    },
    /// The flow solver, or a method's step (ScaledGD's singular preconditioner), stopped at
    /// time `t` for `reason`.
    Failed {
        t: f64,
        reason: String,
    },
}

impl Status {
    pub fn label(&self) -> &'static str {
        match self {
            Status::Completed => "completed",
            Status::Diverged { .. } => "diverged",
            Status::Failed { .. } => "failed",
        }
    }
}

/// States at output times; only finite states are kept.
#[derive(Debug, Clone)]
pub struct Trajectory {
    pub steps: Vec<usize>,
    pub times: Vec<f64>,
    pub states: Vec<Vec<f64>>,
    pub status: Status,
}

impl Trajectory {
    pub fn empty() -> Self {
        Self {
            steps: vec![],
            times: vec![],
            states: vec![],
            status: Status::Completed,
        }
    }
}

/// Which continuous-time dynamics GD is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FlowVariant {
    /// The gradient flow x' = −∇f (GD's first-order limit).
    Plain,
    /// GD's modified flow x' = −∇f̃, f̃ = f + (η/4)‖∇f‖² (second-order accurate).
    Modified,
    /// The central flow (MATH §8): the gradient flow until the sharpness reaches 2/η, then
    /// the flow of GD's time average at the edge of stability.
    Central,
    /// SGD's first-order stochastic modified equation dX = −∇f dt + √(ηc_b)D dW (MATH §10).
    Sme1,
    /// SGD's second-order stochastic modified equation, the modified drift (MATH §10).
    Sme2,
}

impl FlowVariant {
    pub const ALL: [FlowVariant; 5] = [
        FlowVariant::Plain,
        FlowVariant::Modified,
        FlowVariant::Central,
        FlowVariant::Sme1,
        FlowVariant::Sme2,
    ];
    pub fn name(self) -> &'static str {
        match self {
            FlowVariant::Plain => "plain",
            FlowVariant::Modified => "modified",
            FlowVariant::Central => "central",
            FlowVariant::Sme1 => "sme1",
            FlowVariant::Sme2 => "sme2",
        }
    }
    pub fn description(self) -> &'static str {
        match self {
            FlowVariant::Plain => "the gradient flow x' = −∇f (GD's first-order limit)",
            FlowVariant::Modified => {
                "GD's modified flow x' = −∇f̃, f̃ = f + (η/4)‖∇f‖² (second-order accurate)"
            }
            FlowVariant::Central => {
                "the central flow: GD's time average past the stability limit, where the \
                 sharpness sits at 2/η (MATH §8)"
            }
            FlowVariant::Sme1 => {
                "SGD's stochastic modified equation of order 1, dX = −∇f dt + √(ηc_b)D dW \
                 (MATH §10; sgd only)"
            }
            FlowVariant::Sme2 => {
                "SGD's stochastic modified equation of order 2, the modified drift with \
                 √(ηc_b)D dW (MATH §10; sgd only)"
            }
        }
    }
}
