//! The resolved configuration: every default applied, every value checked.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{
    ConfigArgs, ErrorScale, FlowVariant, Method, OperatorKind, PerturbationModel, Precision,
    Profile,
};
use std::sync::Arc;

use crate::dynamics::flow::FlowOptions;
use crate::dynamics::optimizer::{
    self, Context, Optimizer, Refusal, Settings as OptimizerSettings,
};
use crate::error::{Error, Result};
use crate::problem::ProblemSpec;

/// The flow's horizon T may be at most this many of the problem's time units 1/σ_1: an
/// explicit solver near a minimum needs about T·σ_1/1.75 steps, so beyond it a run would not
/// end in any useful time.
pub const MAX_HORIZON_TIMESCALES: f64 = 1e7;

/// A run takes at most this many steps (a sweep as many per step size).
pub const MAX_STEPS: f64 = 1e8;

/// The largest condition number a generated target may have.
pub const MAX_KAPPA: f64 = 1e12;

/// The resolved configuration of one run, as recorded in `summary.json` and `config.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    pub n1: usize,
    pub n2: usize,
    pub rank: usize,
    pub width: usize,
    pub measurements: usize,
    pub alpha: f64,
    pub kappa: f64,
    /// `None` for a problem file (whose target is its own).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<Profile>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub singular_values: Option<Vec<f64>>,
    pub operator: OperatorKind,
    pub sensing_precision: Precision,
    pub noise: f64,
    pub seed: u64,
    pub eta: f64,
    pub steps: usize,
    pub record_every: usize,
    /// The sharpness at every j-th record (0: never).
    #[serde(default)]
    pub sharpness_every: usize,
    /// The spectral columns at every j-th record (0: never); summaries written before the
    /// key existed computed them at every record.
    #[serde(default = "one")]
    pub spectrum_every: usize,
    pub flow: FlowVariant,
    /// The discrete method (a name of [`crate::dynamics::optimizer::REGISTRY`]).
    #[serde(default = "gd_name")]
    pub optimizer: String,
    /// ScaledGD's λ (resolved to 0.01·σ_r(X*) when the problem is set up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub damping: Option<f64>,
    /// Heavy ball's fixed β.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub momentum: Option<f64>,
    /// Heavy ball's γ (β = 1 − γ√η).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub friction: Option<f64>,
    /// SGD's batch size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<usize>,
    /// SGD's sampling with replacement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub with_replacement: Option<bool>,
    /// Euler–Maruyama substeps per step of SGD's SMEs (8 when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sde_substeps: Option<usize>,
    /// An SME's statistics by Talay–Tubaro extrapolation.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub talay_tubaro: bool,
    /// What each replica draws anew beside its noise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vary: Option<super::Vary>,
    /// Label-noise SGD's σ.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_noise: Option<f64>,
    /// Replicas of a stochastic method (1: its one path).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub replicas: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub perturbation: Option<PerturbationModel>,
    pub perturbation_size: f64,
    pub symmetric: bool,
    pub method: Method,
    pub rtol: f64,
    pub atol: f64,
    pub error_scale: ErrorScale,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub save_problem: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub out: Option<PathBuf>,
    /// Keep U and V at the recorded steps (`states.npz`, Python's `keep_states`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub save_states: bool,
}

impl Default for Config {
    fn default() -> Self {
        ConfigArgs::default()
            .resolve()
            .expect("the built-in defaults are valid")
    }
}

fn one() -> usize {
    1
}

fn is_one(n: &usize) -> bool {
    *n == 1
}

/// Replicas × steps at most: the ensemble's work bound (each a step of the method).
pub const MAX_REPLICA_STEPS: f64 = 1e9;

fn gd_name() -> String {
    "gd".into()
}

/// The most Euler–Maruyama substeps an SME ensemble (on h and h/2) may take.
pub const MAX_SDE_WORK: f64 = 1e10;

impl Config {
    /// The flow solver's settings.
    pub fn flow_options(&self) -> FlowOptions {
        FlowOptions {
            scale: self.error_scale,
            ..FlowOptions::new(self.method, self.rtol, self.atol)
        }
    }

    /// Whether the flow is solved (at least in part) by DOP853.
    pub fn uses_dop853(&self) -> bool {
        self.method == Method::Dop853
            || (self.method == Method::Auto && Method::explicit_for(self.rtol) == Method::Dop853)
    }

    /// Bytes a run of this configuration holds at its peak: the operator, the target and its
    /// copies, and the recorded states of GD and the flow.
    pub fn memory_bytes(&self) -> f64 {
        let (n1, n2, m, k) = (
            self.n1 as f64,
            self.n2 as f64,
            self.measurements as f64,
            self.width as f64,
        );
        let bytes_per_entry = match self.sensing_precision {
            Precision::F64 => 1.0,
            Precision::F32 => 0.5,
        };
        let operator = match self.operator {
            OperatorKind::Gaussian | OperatorKind::File => bytes_per_entry * m * n1 * n2,
            OperatorKind::Identity | OperatorKind::Custom => 0.0,
            OperatorKind::Entries => m,
        };
        let recorded = (self.steps / self.record_every.max(1)) as f64 + 2.0;
        let states = 2.0 * recorded * ((n1 + n2) * k + k + 6.0);
        8.0 * (operator + 6.0 * n1 * n2 + 4.0 * m + states)
    }

    /// Things that are allowed but probably not what the user meant.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = self.problem_warnings();
        let s1 = self
            .target_singular_values()
            .first()
            .copied()
            .unwrap_or(1.0);
        if self.eta > 1.0 / s1 {
            w.push(format!(
                "η = {} > 1/σ_1 = {}: beyond GD's usual stability limit near a balanced \
                 solution (MATH §2); expect oscillation or divergence",
                self.eta,
                1.0 / s1
            ));
        }
        w
    }

    /// [`Self::warnings`] about the problem alone (not GD's step size).
    pub fn problem_warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.width < self.rank {
            w.push(format!(
                "width k = {} < rank r = {}: UVᵀ has rank at most k, so X* cannot be reached \
                 (the error stays at least the norm of σ_{{k+1}}, …, σ_r)",
                self.width, self.rank
            ));
        }
        let dof = self
            .rank
            .saturating_mul(self.n1.saturating_add(self.n2).saturating_sub(self.rank));
        if self.measurements < dof {
            w.push(format!(
                "measurements m = {} < r(n1 + n2 − r) = {dof}, the target's degrees of freedom: \
                 X* is not identifiable from y",
                self.measurements
            ));
        }
        w
    }

    /// The target's singular values, largest first.
    pub fn target_singular_values(&self) -> Vec<f64> {
        if let Some(sv) = &self.singular_values {
            let mut sv = sv.clone();
            sv.sort_by(|a, b| b.total_cmp(a));
            return sv;
        }
        let r = self.rank;
        (0..r)
            .map(|i| {
                if r == 1 {
                    return 1.0;
                }
                let s = i as f64 / (r - 1) as f64;
                match self.profile.unwrap_or(Profile::Geometric) {
                    Profile::Geometric => self.kappa.powf(-s),
                    Profile::Linear => 1.0 - s * (1.0 - 1.0 / self.kappa),
                }
            })
            .collect()
    }

    /// Check every value; the error names the field, the value and the allowed range: each
    /// key's own range first (the check on its field, in the order of the fields), then how the
    /// keys relate. For a problem file the dimensions' relations (rank against n1, n2, memory,
    /// horizon) are checked once they are known ([`Self::validate_sizes`], called by
    /// `experiments::Setup` after loading).
    pub fn validate(&self) -> Result<()> {
        self.validate_values()?;
        if self.problem.is_none() {
            self.validate_sizes()?;
        }
        Ok(())
    }

    /// The optimiser's parameters as configured.
    pub fn optimizer_settings(&self) -> OptimizerSettings {
        OptimizerSettings {
            damping: self.damping,
            momentum: self.momentum,
            friction: self.friction,
            batch: self.batch,
            with_replacement: self.with_replacement,
            sde_substeps: self.sde_substeps,
            label_noise: self.label_noise,
        }
    }

    /// The configured optimiser, or why not, naming the key: a parameter it does not take, a
    /// value out of range, a limit it has not. Defaults that scale with the target (ScaledGD's
    /// λ) take σ_r(X*) = 1 here: see [`Config::optimizer_for`].
    pub fn optimizer(&self) -> Result<Arc<dyn Optimizer>> {
        self.optimizer_for(&Context {
            sigma_r: 1.0,
            sigma_1: 1.0,
            eta: self.eta,
            m: self.measurements,
            seed: self.seed,
            replicas: self.replicas,
        })
    }

    /// The configured optimiser on a problem described by `context`.
    pub fn optimizer_for(&self, context: &Context) -> Result<Arc<dyn Optimizer>> {
        let refused = |r: Refusal| Error::invalid(r.key, r.value, r.reason);
        let opt = optimizer::build(&self.optimizer, &self.optimizer_settings(), context)
            .map_err(refused)?;
        if !opt.limits().contains(&self.flow) {
            return Err(Error::invalid(
                "flow",
                self.flow.name(),
                format!(
                    "{}: choose --flow {}",
                    optimizer::no_limit(&opt.name(), self.flow, &opt.limits()),
                    optimizer::limit_names(&opt.limits(), " or ")
                ),
            ));
        }
        if self.vary.is_some() && self.replicas < 2 {
            return Err(Error::invalid(
                "vary",
                self.vary.map_or("", |v| v.name()),
                "draws something anew for every replica: add --replicas N (N >= 2)",
            ));
        }
        if self.replicas > 1 && !opt.is_stochastic() && self.vary.is_none() {
            return Err(Error::invalid(
                "replicas",
                self.replicas,
                format!(
                    "{} is deterministic: every replica would be the same path (replicas are \
                     for sgd with b < m or with replacement, or add --vary start)",
                    opt.name()
                ),
            ));
        }
        if self.flow == FlowVariant::Central && self.method != Method::Dop853 {
            return Err(Error::invalid(
                "method",
                self.method.name(),
                "with --flow central: the central flow is solved by DOP853 alone (its field \
                 makes an eigen-solve at every evaluation, which the other methods' Jacobians \
                 would differentiate); drop --method or give dop853",
            ));
        }
        if self.replicas > 1 && self.flow == FlowVariant::Central {
            return Err(Error::invalid(
                "replicas",
                self.replicas,
                "with --flow central: the central flow is compared with GD's two-step average, \
                 which the ensembles do not take; run one path (drop --replicas)",
            ));
        }
        if self.talay_tubaro && self.replicas < 2 {
            return Err(Error::invalid(
                "talay_tubaro",
                true,
                "extrapolates an SME's ensembles on h and h/2: it needs --replicas N (N >= 2) \
                 and an SME (run --flow sme1 or sme2; a sweep's SMEs)",
            ));
        }
        if opt.is_stochastic()
            && self
                .perturbation
                .is_some_and(|p| p != crate::field::PerturbationModel::None)
        {
            return Err(Error::invalid(
                "perturbation",
                self.perturbation.map_or("", |p| p.name()),
                format!(
                    "{} samples the sensing loss's terms; a perturbed field has no such terms: \
                     leave --perturbation out",
                    opt.name()
                ),
            ));
        }
        if self.symmetric && opt.needs_two_factors() {
            return Err(Error::invalid(
                "optimizer",
                &self.optimizer,
                "updates U and V apart, and the symmetric case has one factor: use gd, \
                 heavy-ball or nesterov",
            ));
        }
        Ok(opt)
    }

    /// Everything that does not depend on the problem's sizes.
    pub fn validate_values(&self) -> Result<()> {
        // each key's own range first (on its field, `keys!`), then how keys relate
        self.check_keys()?;
        if self.replicas == 0 || self.replicas as f64 * self.steps as f64 > MAX_REPLICA_STEPS {
            return Err(Error::invalid(
                "replicas",
                self.replicas,
                format!(
                    "must be >= 1, with replicas × steps <= {MAX_REPLICA_STEPS:e} (here {} steps)",
                    self.steps
                ),
            ));
        }

        if let Some(substeps) = self.sde_substeps {
            // an SME's ensembles on h and h/2: three substeps of work per substep on h
            let work = 3.0 * (self.replicas as f64) * (self.steps as f64) * substeps as f64;
            if self.replicas > 1 && work > MAX_SDE_WORK {
                return Err(Error::invalid(
                    "sde_substeps",
                    substeps,
                    format!(
                        "with {} replicas of {} steps makes {work:.1e} Euler–Maruyama substeps, \
                         more than {MAX_SDE_WORK:e} (hours of work): fewer substeps or replicas",
                        self.replicas, self.steps
                    ),
                ));
            }
        }
        if self.noise != 0.0 && !matches!(self.perturbation, None | Some(PerturbationModel::Noise))
        {
            return Err(Error::invalid(
                "noise",
                self.noise,
                format!(
                    "enters through y, which the `{}` perturbation does not use: drop --noise, \
                     or use --perturbation noise (or none at all)",
                    self.perturbation.map_or("", |m| m.name())
                ),
            ));
        }
        if self.problem.is_none() && self.singular_values.is_none() && self.kappa > MAX_KAPPA {
            return Err(Error::invalid(
                "kappa",
                self.kappa,
                format!(
                    "must be <= {MAX_KAPPA:e}: σ_r = 1/κ would be lost in the rounding of \
                     σ_1 = 1 in every product"
                ),
            ));
        }
        if self.sensing_precision == Precision::F32
            && matches!(
                self.operator,
                OperatorKind::Identity | OperatorKind::Entries
            )
        {
            return Err(Error::invalid(
                "sensing_precision",
                "f32",
                "applies to a stored sensing matrix: the gaussian operator or a --problem file",
            ));
        }
        if self.symmetric && self.operator == OperatorKind::Entries {
            return Err(Error::invalid(
                "operator",
                "entries",
                "the symmetric case needs symmetric A_i: use gaussian or identity",
            ));
        }
        if let (FlowVariant::Central, Some(model)) = (self.flow, self.perturbation) {
            if !model.is_gradient() {
                return Err(Error::invalid(
                    "flow",
                    "central",
                    format!(
                        "the central flow needs a gradient field (MATH §8), and the `{}` \
                         perturbation is not one: use none, sensing or noise",
                        model.name()
                    ),
                ));
            }
        }
        if let (true, Some(model)) = (self.symmetric, self.perturbation) {
            if !model.keeps_symmetry() {
                return Err(Error::invalid(
                    "perturbation",
                    model.name(),
                    "the symmetric case needs a symmetric E (MATH §5): use none, sensing or \
                     noise, whose E is symmetric with symmetric A_i; relative and absolute add \
                     the non-symmetric direction W",
                ));
            }
        }
        if (self.operator == OperatorKind::File && self.problem.is_none())
            || self.operator == OperatorKind::Custom
        {
            return Err(Error::invalid(
                "operator",
                self.operator.name(),
                "is set by loading --problem FILE.npz or by handing a problem over; choose \
                 gaussian, identity or entries",
            ));
        }
        // last: the optimiser's checks may use η, checked above
        self.optimizer()?;
        Ok(())
    }

    /// The sizes, the target's spectrum against the rank, what the run needs in memory, and
    /// the flow's horizon against the problem's time scale.
    pub fn validate_sizes(&self) -> Result<()> {
        // a problem file's sizes arrive after `validate_values`: those are checked again here
        // (what else the file brings is checked against it when it is loaded)
        for key in ["n1", "n2", "rank", "width", "measurements"] {
            self.check_key(key)?;
        }
        if self.rank > self.n1.min(self.n2) {
            return Err(Error::invalid(
                "rank",
                self.rank,
                format!("must be <= min(n1, n2) = {}", self.n1.min(self.n2)),
            ));
        }
        // Sizes come from users (and fuzzers): products must not overflow before the memory
        // check below can refuse them.
        let n12 = self.n1.checked_mul(self.n2).ok_or_else(|| {
            Error::invalid(
                "n1",
                self.n1,
                format!("n1·n2 overflows with n2 = {}", self.n2),
            )
        })?;
        if self.symmetric && self.n1 != self.n2 {
            return Err(Error::invalid(
                "symmetric",
                format!("n1 = {}, n2 = {}", self.n1, self.n2),
                "the symmetric case needs n1 = n2",
            ));
        }
        match self.operator {
            OperatorKind::Identity if self.measurements != n12 => {
                return Err(Error::invalid(
                    "measurements",
                    self.measurements,
                    format!("must equal n1·n2 = {n12} for the identity operator"),
                ));
            }
            OperatorKind::Entries if self.measurements > n12 => {
                return Err(Error::invalid(
                    "measurements",
                    self.measurements,
                    format!("must be <= n1·n2 = {n12} for entry sampling (distinct entries)"),
                ));
            }
            _ => {}
        }
        if let Some(sv) = &self.singular_values {
            if sv.len() != self.rank {
                return Err(Error::invalid(
                    "singular_values",
                    format!("{sv:?}"),
                    format!("must list exactly rank = {} values", self.rank),
                ));
            }
        }
        self.check_memory()?;
        let n = self.width.saturating_mul(if self.symmetric {
            self.n1
        } else {
            self.n1.saturating_add(self.n2)
        });
        crate::dynamics::flow::check_implicit_memory(self.method, n, self.measurements)?;
        self.check_horizon(self.target_singular_values()[0])
    }

    /// T = η·steps must be finite and at most [`MAX_HORIZON_TIMESCALES`]/σ_1.
    pub fn check_horizon(&self, sigma1: f64) -> Result<()> {
        let horizon = self.eta * self.steps as f64;
        let limit = MAX_HORIZON_TIMESCALES / sigma1;
        if !(horizon.is_finite() && horizon <= limit) {
            return Err(Error::invalid(
                "eta",
                self.eta,
                format!(
                    "the flow's horizon T = eta·steps = {horizon:e} must be finite and at most \
                     {MAX_HORIZON_TIMESCALES:e}/σ_1 = {limit:e} (the flow would need about \
                     T·σ_1 solver steps): lower --eta or --steps"
                ),
            ));
        }
        let modified = self.flow == FlowVariant::Modified;
        self.check_start_rate(horizon, if modified { self.eta } else { 0.0 })
    }

    /// A large start moves faster than the target's scale: entries N(0, α²/k) make
    /// ‖UVᵀ‖ ≈ α²·√(n1·n2), and an explicit solver's steps follow that rate r, or r + η·r² for
    /// a modified field of step `eta` (its correction is (η/2)J·F). Refused, naming --alpha,
    /// when the flow to `horizon` would need more than [`MAX_HORIZON_TIMESCALES`] steps.
    pub fn check_start_rate(&self, horizon: f64, eta: f64) -> Result<()> {
        let r = self.alpha * self.alpha * ((self.n1 as f64) * (self.n2 as f64)).sqrt();
        let start_rate = if eta > 0.0 { r + eta * r * r } else { r };
        // NaN or inf (an α whose square overflows) is refused with the rest
        if self.problem.is_none() && !(horizon * start_rate <= MAX_HORIZON_TIMESCALES) {
            return Err(Error::invalid(
                "alpha",
                self.alpha,
                format!(
                    "a start this large moves at a rate of about r = α²·√(n1·n2) (r + η·r² for a \
                     modified field) = {start_rate:.3e}: \
                     the flow to T = {horizon:e} would need about {:.1e} solver steps (at most \
                     {MAX_HORIZON_TIMESCALES:e}): lower --alpha (the small-start regime is α ≪ 1) \
                     or the horizon",
                    horizon * start_rate
                ),
            ));
        }
        Ok(())
    }

    /// The problem this configuration generates (or, for a file, what fills what it lacks).
    pub fn problem_spec(&self) -> ProblemSpec {
        ProblemSpec {
            n1: self.n1,
            n2: self.n2,
            width: self.width,
            measurements: self.measurements,
            alpha: self.alpha,
            singular_values: self.target_singular_values(),
            operator: self.operator,
            precision: self.sensing_precision,
            noise: self.noise,
            seed: self.seed,
            symmetric: self.symmetric,
        }
    }

    /// The resolved configuration as a TOML table without the keys in `leave_out` (e.g. what a
    /// problem file fixed, or the output paths).
    pub fn table_without(&self, leave_out: &[&str]) -> Result<toml::Table> {
        let mut table = toml::Table::try_from(self)
            .map_err(|e| Error::serialise("config.toml", e.to_string()))?;
        for key in leave_out {
            table.remove(*key);
        }
        // ε sizes a perturbation: without one it is not a setting (and would be refused)
        if self.perturbation.is_none() {
            table.remove("perturbation_size");
        }
        Ok(table)
    }

    fn check_memory(&self) -> Result<()> {
        let n12 = self.n1 as f64 * self.n2 as f64;
        let needed = self.memory_bytes();
        let available = crate::resources::available_or_default() as f64;
        if needed > 0.8 * available {
            // name the key behind the largest part of the estimate
            let recorded = (self.steps / self.record_every.max(1)) as f64;
            let states = 16.0 * recorded * ((self.n1 + self.n2) * self.width) as f64;
            let operator = 8.0 * self.measurements as f64 * n12;
            // every key lowers the estimate but --record-every, which raises it the other way
            let (field, value, what) = if operator >= states && operator >= 48.0 * n12 {
                let key = if self.measurements >= self.n1.max(self.n2) {
                    ("measurements", self.measurements.to_string())
                } else {
                    ("n1", self.n1.to_string())
                };
                (key.0, key.1, "the sensing matrix m·n1·n2")
            } else if states >= 48.0 * n12 && recorded > 1e5 {
                (
                    "record_every",
                    self.record_every.to_string(),
                    "the recorded states",
                )
            } else if states >= 48.0 * n12 {
                // the states are (n1 + n2)·k numbers: the larger of the three is the one to lower
                let largest = self.width.max(self.n1).max(self.n2);
                match largest {
                    w if w == self.width => {
                        ("width", self.width.to_string(), "the states of width k")
                    }
                    n if n == self.n1 => ("n1", self.n1.to_string(), "the states (n1 + n2)·k"),
                    _ => ("n2", self.n2.to_string(), "the states (n1 + n2)·k"),
                }
            } else {
                ("n1", self.n1.to_string(), "the n1×n2 matrices")
            };
            return Err(Error::invalid(
                field,
                value,
                format!(
                    "the run would need about {:.1} GiB, mostly {what}, and {:.1} GiB is 80% of \
                     the {:.1} GiB available (the rest is kept free): {} --{}",
                    needed / f64::from(1u32 << 30),
                    0.8 * available / f64::from(1u32 << 30),
                    available / f64::from(1u32 << 30),
                    if field == "record_every" {
                        "raise"
                    } else {
                        "lower"
                    },
                    field.replace('_', "-")
                ),
            ));
        }
        Ok(())
    }
}
