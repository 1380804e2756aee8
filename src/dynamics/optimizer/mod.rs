//! Optimisers beside their continuous limits (MATH §9): each is a discrete method (a
//! [`Stepper`]) together with the limits it has, chosen by name from one [`REGISTRY`].
//!
//! Write a one-step method as x⁺ = x + ηΦ(x; η), Φ = F + ηΦ₁ + O(η²). Its **plain limit**
//! x' = F is tracked to O(η), its **modified limit** x' = F + η(Φ₁ − ½ DF·F) to O(η²). Momentum
//! methods at the critical scaling have second-order limits in time t = j√η ([`SecondOrder`]).
//!
//! | name | update | limits | time |
//! |---|---|---|---|
//! | `gd` | x⁺ = x + ηF | plain, modified, central | jη |
//! | `scaled-gd` | U⁺ = U − ηGV(VᵀV + λI)⁻¹, V⁺ = V − ηGᵀU(UᵀU + λI)⁻¹ | plain, modified | jη |
//! | `alternating-gd` | U first, then V with the new U | plain, modified | jη |
//! | `heavy-ball` | x⁺ = x + ηF + β(x − x₋), fixed β | plain, modified (shifted start) | jη |
//! | `heavy-ball` | the same with β = 1 − γ√η | second order Ẍ + γẊ = F | j√η |
//! | `nesterov` | Su–Boyd–Candès | second order Ẍ + (3/t)Ẋ = F | j√η |
//!
//! A new optimiser is one file here and one [`Entry`] in [`REGISTRY`]; the experiments see
//! only [`Optimizer`]. One from outside the crate is passed to
//! [`crate::experiments::Setup::with_optimizer`] (see `examples/custom_optimizer.rs`).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{FlowVariant, Stepper};
use crate::field::Field;

mod alternating_gd;
mod dynamics;
mod gd;
mod heavy_ball;
mod nesterov;
mod scaled_gd;
mod second_order;
mod sgd;

pub use alternating_gd::AlternatingGd;
pub use dynamics::{named, Discrete, Dynamics, End, Kept, Output};
pub use gd::GdMethod;
pub use heavy_ball::HeavyBall;
pub use nesterov::Nesterov;
pub use scaled_gd::{Preconditioned, ScaledGd, DEFAULT_DAMPING};
pub use second_order::{Friction, SecondOrder};
pub use sgd::Sgd;

/// How the iteration count maps to the limit's time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TimeScale {
    /// t = jη.
    Eta,
    /// t = j√η (momentum at the critical scaling, Nesterov).
    SqrtEta,
}

impl TimeScale {
    /// The limit's time per step of size `eta`.
    pub fn per_step(self, eta: f64) -> f64 {
        match self {
            TimeScale::Eta => eta,
            TimeScale::SqrtEta => eta.sqrt(),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            TimeScale::Eta => "jη",
            TimeScale::SqrtEta => "j√η",
        }
    }
}

/// How a limit is solved.
#[derive(Debug, Clone)]
pub enum LimitSolver {
    /// An ODE x' = F(x) by the flow solver ([`crate::dynamics::flow`]).
    Ode,
    /// The central flow for GD's step `eta` (MATH §8): the gradient flow of `field` until
    /// the sharpness reaches 2/η, then its event-driven solve. Its outputs carry the columns
    /// `sharpness`, `sigma_trace` and `active`, and the eigenvectors held at 2/η, as
    /// `columns` says: a sweep, which compares positions only, measures none of them, and a
    /// run measures only at its whole steps t_j, not at the half steps between them.
    Central {
        eta: f64,
        columns: crate::dynamics::flow::CentralColumns,
    },
    /// A stochastic modified equation (MATH §10): `field` is its drift, the noise is the
    /// SME's, one path per replica ([`Limit::replica`]).
    Sme(super::sde::Sme),
}

/// A continuous limit, ready to solve: it yields its state at requested times with named
/// extra columns at each output, and ends with a [`Status`].
#[derive(Clone)]
pub struct Limit {
    /// Its vector field. Second-order limits run on (X, Ẋ, τ): the position comes first.
    pub field: Arc<dyn Field>,
    /// Its state at t = 0 (a first-order limit may start off x_0, as heavy ball's modified
    /// limit does; see MATH §9).
    pub start: Vec<f64>,
    /// What it is, for reports: "x' = −∇f/(1−β)".
    pub equation: String,
    pub solver: LimitSolver,
}

impl Limit {
    /// An ODE limit x' = F(x) of `field` from `start`.
    pub fn ode(field: Arc<dyn Field>, start: Vec<f64>, equation: impl Into<String>) -> Self {
        Self {
            field,
            start,
            equation: equation.into(),
            solver: LimitSolver::Ode,
        }
    }

    /// The position part of one of this limit's states: what is compared with x_j.
    pub fn position<'s>(&self, state: &'s [f64]) -> &'s [f64] {
        &state[..self.field.factors().state_len()]
    }

    /// Whether the method's two-step average ½(x_j + x_{j+1}) is what follows it, compared at
    /// half steps (the central flow: GD oscillates about it with period 2).
    pub fn follows_average(&self) -> bool {
        matches!(self.solver, LimitSolver::Central { .. })
    }

    /// Whether its paths are random (an SME): then replicas differ, and it is compared with
    /// the method in distribution, not path by path.
    pub fn is_stochastic(&self) -> bool {
        matches!(self.solver, LimitSolver::Sme(_))
    }

    /// Replica `replica` of a stochastic limit (its own Brownian path); the limit itself for a
    /// deterministic one.
    pub fn replica(&self, replica: u64) -> Limit {
        let mut l = self.clone();
        if let LimitSolver::Sme(s) = &mut l.solver {
            s.replica = replica;
        }
        l
    }

    /// A stochastic limit's substeps per step (`None` for a deterministic one).
    pub fn substeps(&self) -> Option<usize> {
        match &self.solver {
            LimitSolver::Sme(s) => Some(s.substeps),
            _ => None,
        }
    }

    /// The same stochastic limit on twice as many substeps (h/2): what its scheme's own weak
    /// error is measured against. A deterministic limit is returned as it is.
    pub fn refined(&self) -> Limit {
        let mut l = self.clone();
        if let LimitSolver::Sme(s) = &mut l.solver {
            s.substeps *= 2;
        }
        l
    }

    /// The same limit without the measurements beside its positions that cost solves of their
    /// own (the central flow's sharpness, tr Σ and held directions: an eigen-solve or an
    /// evaluation of the central field at each output; the held count stays).
    pub fn positions_only(&self) -> Limit {
        self.with_central_columns(|c| {
            *c = crate::dynamics::flow::CentralColumns {
                sharpness_unheld: false,
                every: 0,
            }
        })
    }

    /// The same limit with or without the central flow's sharpness while no eigenvalue is held
    /// (an eigen-solve of its own at each measured output; see
    /// [`crate::dynamics::flow::CentralColumns::sharpness_unheld`]).
    pub fn sharpness_while_unheld(&self, on: bool) -> Limit {
        self.with_central_columns(|c| c.sharpness_unheld = on)
    }

    /// The same limit measuring its columns only at every `every`-th output (the others
    /// carry their position and the held count alone; see
    /// [`crate::dynamics::flow::CentralColumns::every`]).
    pub fn measured_every(&self, every: usize) -> Limit {
        self.with_central_columns(|c| c.every = every)
    }

    /// The same limit with the central flow's columns changed by `set` (other limits measure
    /// no columns of their own: unchanged).
    fn with_central_columns(
        &self,
        set: impl FnOnce(&mut crate::dynamics::flow::CentralColumns),
    ) -> Limit {
        let mut l = self.clone();
        if let LimitSolver::Central { columns, .. } = &mut l.solver {
            set(columns);
        }
        l
    }

    /// A solver's output hook for a limit with no columns of its own: its position, nothing
    /// beside it.
    fn positions<'h>(
        &'h self,
        on_output: &'h mut dyn FnMut(usize, f64, &Output<'_>),
    ) -> impl FnMut(usize, f64, &[f64]) + 'h {
        move |i, t, y| {
            let out = Output {
                state: self.position(y),
                columns: Vec::new(),
                directions: &[],
            };
            on_output(i, t, &out)
        }
    }
}

/// The named parameters of an optimiser, as `summary.json` records them.
pub type Parameters = BTreeMap<String, f64>;

/// One optimiser: its discrete method and its continuous limits.
pub trait Optimizer: Send + Sync {
    /// Its name: the `dynamics` of its rows in trajectory.csv.
    fn name(&self) -> String;
    /// Its parameters (damping, momentum, …), without η.
    fn parameters(&self) -> Parameters {
        Parameters::new()
    }
    /// The time its limits run in.
    fn time_scale(&self) -> TimeScale {
        TimeScale::Eta
    }
    /// A fresh stepper for one run of step size `eta`.
    fn stepper(&self, eta: f64) -> Box<dyn Stepper>;
    /// The stepper of replica `replica` of a stochastic method (its own noise stream);
    /// deterministic methods have one path, [`Optimizer::stepper`]'s.
    fn replica_stepper(&self, eta: f64, replica: u64) -> Box<dyn Stepper> {
        let _ = replica;
        self.stepper(eta)
    }
    /// Whether its path depends on random draws (then replicas differ).
    fn is_stochastic(&self) -> bool {
        false
    }
    /// Its limit of kind `variant` for step `eta` on `field`, started from the method's start
    /// `x0`; `Err` says why it has none (the caller names the flag). The central flow is GD's
    /// alone and is solved by its own driver: every optimiser refuses it here.
    fn limit(
        &self,
        variant: FlowVariant,
        field: Arc<dyn Field>,
        x0: &[f64],
        eta: f64,
    ) -> Result<Limit, String>;
    /// The limits it has, for help and errors.
    fn limits(&self) -> Vec<FlowVariant>;
    /// Whether UᵀU − VᵀV is conserved by its plain limit (gradient flows of f only): then the
    /// drift is reported as a conservation error, otherwise as drift.
    fn plain_limit_conserves_balance(&self) -> bool {
        false
    }
    /// Whether it is plain gradient descent: GD's stability analysis (the bisection for the
    /// largest convergent η, 2/λ_max) applies to it alone.
    fn is_gradient_descent(&self) -> bool {
        false
    }
    /// Whether it updates U and V apart (and so has no symmetric case, where V = U).
    fn needs_two_factors(&self) -> bool {
        false
    }
    /// The field whose Hessian–vector products give its sharpness: the loss's for most; the
    /// preconditioned P^½∇²fP^½ for ScaledGD, whose step is stable while η·λ_max of it < 2.
    fn curvature(&self, field: Arc<dyn Field>) -> Arc<dyn Field> {
        field
    }
    /// What a user should know before trusting the comparison at this step size (printed and
    /// kept in summary.json): regimes where the limits cannot describe the method.
    fn warnings(&self, context: &Context) -> Vec<String> {
        let _ = context;
        Vec::new()
    }
}

/// The parameters a user may give an optimiser; each optimiser takes its own and refuses the
/// others, naming the flag.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// ScaledGD's λ.
    pub damping: Option<f64>,
    /// Heavy ball's fixed β.
    pub momentum: Option<f64>,
    /// Heavy ball's γ in β = 1 − γ√η.
    pub friction: Option<f64>,
    /// SGD's batch size b.
    pub batch: Option<usize>,
    /// SGD's sampling: with replacement (default without).
    pub with_replacement: Option<bool>,
    /// Euler–Maruyama substeps per step of SGD's SMEs.
    pub sde_substeps: Option<usize>,
    /// Label-noise SGD's σ.
    pub label_noise: Option<f64>,
}

impl Settings {
    /// `Err((flag, value, why))` for the first parameter set that `name` does not take.
    fn only(&self, name: &str, takes: &[&str]) -> Result<(), (&'static str, String, String)> {
        let text = |v: Option<f64>| v.map(|v| v.to_string());
        for (flag, value) in [
            ("damping", text(self.damping)),
            ("momentum", text(self.momentum)),
            ("friction", text(self.friction)),
            ("batch", self.batch.map(|b| b.to_string())),
            (
                "with_replacement",
                self.with_replacement.map(|b| b.to_string()),
            ),
            ("sde_substeps", self.sde_substeps.map(|b| b.to_string())),
            ("label_noise", text(self.label_noise)),
        ] {
            if let Some(v) = value {
                if !takes.contains(&flag) {
                    let who = REGISTRY
                        .iter()
                        .filter(|e| e.parameters.contains(&flag))
                        .map(|e| e.name)
                        .collect::<Vec<_>>()
                        .join(", ");
                    return Err((
                        flag,
                        v,
                        format!("is a parameter of {who}, not of optimizer {name}"),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// What an optimiser's defaults and checks may depend on: the problem's scale and the step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Context {
    /// σ_r(X*), the smallest singular value of the target.
    pub sigma_r: f64,
    /// The step size η.
    pub eta: f64,
    /// σ_1(X*), the largest singular value of the target.
    pub sigma_1: f64,
    /// The number of measurements m.
    pub m: usize,
    /// The configuration's seed (stochastic methods draw their noise from its sub-streams).
    pub seed: u64,
    /// Replicas of the run (a stochastic method's single path warrants a warning, an
    /// ensemble does not).
    pub replicas: usize,
}

/// Why an optimiser cannot be built: the configuration key, its value, and what to do.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub key: &'static str,
    pub value: String,
    pub reason: String,
}

impl From<(&'static str, String, String)> for Refusal {
    fn from((key, value, reason): (&'static str, String, String)) -> Self {
        Self { key, value, reason }
    }
}

/// One optimiser of the registry: its name, a line of help, the parameters it takes, and how
/// to build it from them (validating them, before any work).
pub struct Entry {
    pub name: &'static str,
    pub description: &'static str,
    pub parameters: &'static [&'static str],
    pub build: fn(&Settings, &Context) -> Result<Arc<dyn Optimizer>, Refusal>,
}

/// Every optimiser the command line and TOML files can name.
pub static REGISTRY: &[Entry] = &[
    Entry {
        name: "gd",
        description: "gradient descent x⁺ = x − η∇f (limits: plain, modified, central)",
        parameters: &[],
        build: |s, _| {
            s.only("gd", &[])?;
            Ok(Arc::new(GdMethod))
        },
    },
    Entry {
        name: "scaled-gd",
        description: "ScaledGD(λ): U⁺ = U − ηGV(VᵀV + λI)⁻¹, V⁺ likewise (--damping λ; limits: \
                      plain, modified)",
        parameters: &["damping"],
        build: scaled_gd::build,
    },
    Entry {
        name: "alternating-gd",
        description: "alternating (Gauss–Seidel) GD: U first, then V with the new U (limits: \
                      plain, modified)",
        parameters: &[],
        build: |s, _| {
            s.only("alternating-gd", &[])?;
            Ok(Arc::new(AlternatingGd))
        },
    },
    Entry {
        name: "heavy-ball",
        description: "heavy ball x⁺ = x − η∇f + β(x − x₋): --momentum β (time jη; limits plain, \
                      modified) or --friction γ (β = 1 − γ√η, time j√η; limit Ẍ + γẊ + ∇f = 0)",
        parameters: &["momentum", "friction"],
        build: heavy_ball::build,
    },
    Entry {
        name: "sgd",
        description: "mini-batch SGD x⁺ = x − η g_B, g_B = (m/b)Σ_{i∈B} r_i∇r_i: --batch b, \
                      --with-replacement (limits: plain, modified, and the SMEs sme1, sme2 with \
                      --sde-substeps)",
        parameters: &["batch", "with_replacement", "sde_substeps"],
        build: sgd::build,
    },
    Entry {
        name: "label-noise",
        description: "label-noise SGD: fresh noise σε on the labels every step, full batch \
                      unless --batch (--label-noise σ; limits: plain, modified, sme1, sme2)",
        parameters: &["label_noise", "batch", "with_replacement", "sde_substeps"],
        build: sgd::build_label_noise,
    },
    Entry {
        name: "nesterov",
        description: "Nesterov (Su–Boyd–Candès form), time j√η; limit Ẍ + (3/t)Ẋ + ∇f = 0",
        parameters: &[],
        build: |s, _| {
            s.only("nesterov", &[])?;
            Ok(Arc::new(Nesterov))
        },
    },
];

/// The registry's entry called `name`.
pub fn entry(name: &str) -> Option<&'static Entry> {
    REGISTRY.iter().find(|e| e.name == name)
}

/// The registry's names, comma-separated (for errors and help).
pub fn names() -> String {
    REGISTRY
        .iter()
        .map(|e| e.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Build the optimiser `name` from `settings` for a problem described by `context`.
pub fn build(
    name: &str,
    settings: &Settings,
    context: &Context,
) -> Result<Arc<dyn Optimizer>, Refusal> {
    let e = entry(name).ok_or_else(|| Refusal {
        key: "optimizer",
        value: name.to_string(),
        reason: format!("is not an optimizer; choose one of {}", names()),
    })?;
    (e.build)(settings, context)
}

/// The names of the limits `has`, joined by `sep` (for errors and help).
pub fn limit_names(has: &[FlowVariant], sep: &str) -> String {
    has.iter().map(|v| v.name()).collect::<Vec<_>>().join(sep)
}

/// `Err` for a limit an optimiser does not have, naming the ones it has.
pub fn no_limit(name: &str, variant: FlowVariant, has: &[FlowVariant]) -> String {
    format!(
        "{name} has no {} limit (it has: {})",
        variant.name(),
        limit_names(has, ", ")
    )
}
