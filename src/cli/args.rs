//! The command line's options (clap) and how they become the library's partial configuration
//! ([`ConfigArgs`], [`SweepArgs`], [`CheckArgs`]) — the same keys a TOML file fills.

use std::path::PathBuf;

use clap::builder::PossibleValue;
use clap::{Args, ValueEnum};

use crate::config::{
    CheckArgs, ConfigArgs, ErrorScale, FlowVariant, Method, OperatorKind, PerturbationModel,
    Precision, Profile, SweepArgs,
};

/// The library's choice enums as clap value enums: their names and descriptions are theirs.
macro_rules! value_enum {
    ($t:ty, $all:expr) => {
        impl ValueEnum for $t {
            fn value_variants<'a>() -> &'a [Self] {
                &$all
            }
            fn to_possible_value(&self) -> Option<PossibleValue> {
                Some(PossibleValue::new(self.name()).help(self.description()))
            }
        }
    };
}

value_enum!(OperatorKind, OperatorKind::CHOICES);
value_enum!(Profile, Profile::ALL);
value_enum!(Precision, Precision::ALL);
value_enum!(Method, Method::ALL);
value_enum!(ErrorScale, ErrorScale::ALL);
value_enum!(FlowVariant, FlowVariant::ALL);
value_enum!(PerturbationModel, PerturbationModel::ALL);

/// The problem: target, operator, observations, start, and the field's model.
#[derive(Debug, Clone, Default, Args)]
pub struct ProblemFlags {
    /// Rows of the target X* [default: 30]
    #[arg(long)]
    pub n1: Option<usize>,
    /// Columns of the target X* [default: 25]
    #[arg(long)]
    pub n2: Option<usize>,
    /// Rank r of the target [default: 3]
    #[arg(long)]
    pub rank: Option<usize>,
    /// Width k of the factors U (n1×k), V (n2×k) [default: 2·rank]
    #[arg(long)]
    pub width: Option<usize>,
    /// Number of measurements m [default: 600; n1·n2 for --operator identity]
    #[arg(long)]
    pub measurements: Option<usize>,
    /// Scale of the random start: entries of U0, V0 are N(0, α²/k) [default: 1e-3]
    #[arg(long, allow_hyphen_values = true)]
    pub alpha: Option<f64>,
    /// Condition number σ_1/σ_r of the target [default: 2]
    #[arg(long, allow_hyphen_values = true)]
    pub kappa: Option<f64>,
    /// Spacing of the target's singular values from 1 down to 1/κ [default: geometric]
    #[arg(long, value_enum)]
    pub profile: Option<Profile>,
    /// Explicit singular values of the target, comma-separated (overrides --kappa)
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
    pub singular_values: Option<Vec<f64>>,
    /// Measurement operator [default: gaussian]
    #[arg(long, value_enum)]
    pub operator: Option<OperatorKind>,
    /// Storage of the sensing matrix: f64, or f32 (half the memory and bandwidth, products
    /// accumulated in f64; for a generated problem the f32 entries are the operator, for an f64
    /// file the change of y is reported) [default: f64]
    #[arg(long, value_enum)]
    pub sensing_precision: Option<Precision>,
    /// Standard deviation of the measurement noise ξ_i [default: 0]
    #[arg(long, allow_hyphen_values = true)]
    pub noise: Option<f64>,
    /// Seed of every random draw (operator, target, start, noise, W) [default: 0]
    #[arg(long)]
    pub seed: Option<u64>,
    /// Run the perturbed gradient flow U' = (X* − UVᵀ + E)V, V' = (X* − UVᵀ + E)ᵀU with this
    /// model of E (MATH §5), GD and every flow included, instead of the sensing dynamics
    #[arg(long, value_enum)]
    pub perturbation: Option<PerturbationModel>,
    /// ε of the `relative` and `absolute` perturbations [default: 0.1]
    #[arg(long, allow_hyphen_values = true)]
    pub perturbation_size: Option<f64>,
    /// The symmetric PSD case (MATH §3): X* = X*ᵀ ⪰ 0, symmetric A_i, U' = −GU with
    /// f = ¼‖𝒜(UUᵀ) − y‖² (needs n1 = n2)
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub symmetric: Option<bool>,
    /// Load the problem (x_star, sensing, optional y, u0, v0, alpha) from a NumPy .npz file;
    /// options the file fixes are checked against it or refused
    #[arg(long, value_name = "FILE.npz")]
    pub problem: Option<PathBuf>,
    /// Save the problem actually run to a NumPy .npz file
    #[arg(long, value_name = "FILE.npz")]
    pub save_problem: Option<PathBuf>,
}

/// The flow solver.
#[derive(Debug, Clone, Default, Args)]
pub struct SolverFlags {
    /// ODE method for the flows [default: dop853]
    #[arg(long, value_enum)]
    pub method: Option<Method>,
    /// Relative tolerance of the flow solver [default: 1e-8]
    #[arg(long, allow_hyphen_values = true)]
    pub rtol: Option<f64>,
    /// Absolute tolerance of the flow solver [default: rtol·α/√k, below the start's entries]
    #[arg(long, allow_hyphen_values = true)]
    pub atol: Option<f64>,
    /// How DOP853 weighs a step's error (MATH §7): per component (Hairer's, SciPy's), or
    /// relative to the whole state [default: componentwise]
    #[arg(long, value_enum)]
    pub error_scale: Option<ErrorScale>,
}

/// GD's run: step size, length, recording.
#[derive(Debug, Clone, Default, Args)]
pub struct GdFlags {
    /// GD step size η [default: 0.05]
    #[arg(long, allow_hyphen_values = true)]
    pub eta: Option<f64>,
    /// Number of GD steps; the flow runs to t = steps·η [default: 1000]
    #[arg(long)]
    pub steps: Option<usize>,
    /// Record every j-th GD iterate and the flow at the same times (maxima and the GD–flow
    /// distance are still taken over every step) [default: 1]
    #[arg(long)]
    pub record_every: Option<usize>,
    /// Compute the sharpness λ_max(∇²f) (block Lanczos) at every j-th record of every
    /// dynamics; 0 never [default: 1 with --flow central, 0 otherwise]
    #[arg(long)]
    pub sharpness_every: Option<usize>,
    /// The discrete method compared with its limits (MATH §9) [default: gd]
    #[arg(long, value_name = "NAME", value_parser = optimizer_names())]
    pub optimizer: Option<String>,
    /// ScaledGD's λ in U ← U − ηGV(VᵀV + λI)⁻¹ [default: 0.01·σ_r(X*)]
    #[arg(long, value_name = "λ", allow_hyphen_values = true)]
    pub damping: Option<f64>,
    /// Heavy ball's fixed momentum β ∈ [0, 1), time t = jη (or give --friction)
    #[arg(
        long,
        value_name = "β",
        allow_hyphen_values = true,
        conflicts_with = "friction"
    )]
    pub momentum: Option<f64>,
    /// Heavy ball's friction γ > 0: β = 1 − γ√η, time t = j√η, limit Ẍ + γẊ + ∇f = 0
    #[arg(long, value_name = "γ", allow_hyphen_values = true)]
    pub friction: Option<f64>,
}

/// The registry's optimisers as clap's possible values, each with its line of help.
fn optimizer_names() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(
        crate::dynamics::optimizer::REGISTRY
            .iter()
            .map(|e| PossibleValue::new(e.name).help(e.description)),
    )
}

/// Where results go and how the command behaves.
#[derive(Debug, Clone, Default, Args)]
pub struct OutputFlags {
    /// Write the outputs into this directory
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Also draw the figures into OUT/figures (needs --out)
    #[arg(long)]
    pub figures: bool,
    /// TOML file with any of the options (snake_case keys); flags win over it
    #[arg(long, value_name = "FILE.toml")]
    pub config: Option<PathBuf>,
    /// No progress bars (they are never drawn when stderr is not a terminal)
    #[arg(long)]
    pub quiet: bool,
    /// Write into an --out directory that already holds files (the files gdflow writes are
    /// replaced; nothing else is touched)
    #[arg(long)]
    pub force: bool,
}

impl ProblemFlags {
    /// The keys these flags set, into `args`.
    pub fn fill(&self, args: &mut ConfigArgs) {
        let p = self.clone();
        args.n1 = p.n1;
        args.n2 = p.n2;
        args.rank = p.rank;
        args.width = p.width;
        args.measurements = p.measurements;
        args.alpha = p.alpha;
        args.kappa = p.kappa;
        args.profile = p.profile;
        args.singular_values = p.singular_values;
        args.operator = p.operator;
        args.sensing_precision = p.sensing_precision;
        args.noise = p.noise;
        args.seed = p.seed;
        args.perturbation = p.perturbation;
        args.perturbation_size = p.perturbation_size;
        args.symmetric = p.symmetric;
        args.problem = p.problem;
        args.save_problem = p.save_problem;
    }
}

impl SolverFlags {
    pub fn fill(&self, args: &mut ConfigArgs) {
        args.method = self.method;
        args.rtol = self.rtol;
        args.atol = self.atol;
        args.error_scale = self.error_scale;
    }
}

impl GdFlags {
    pub fn fill(&self, args: &mut ConfigArgs) {
        args.eta = self.eta;
        args.steps = self.steps;
        args.record_every = self.record_every;
        args.sharpness_every = self.sharpness_every;
        args.optimizer = self.optimizer.clone();
        args.damping = self.damping;
        args.momentum = self.momentum;
        args.friction = self.friction;
    }
}

/// Options of `gdflow sweep` beyond the problem's.
#[derive(Debug, Clone, Default, Args)]
pub struct SweepFlags {
    /// Step sizes, comma-separated [default: --eta-range 0.01/σ_1:0.2/σ_1:6]
    #[arg(
        long,
        value_delimiter = ',',
        conflicts_with = "eta_range",
        allow_hyphen_values = true
    )]
    pub etas: Option<Vec<f64>>,
    /// Geometric range of step sizes MIN:MAX:COUNT (both ends included)
    #[arg(long, value_name = "MIN:MAX:COUNT")]
    pub eta_range: Option<String>,
    /// Time horizon T: GD runs jη ≤ T [default: 1.5·ln(σ_r/α²)/σ_r, three times the time σ_r
    /// takes to be half learned from the start's scale (MATH §4)]
    #[arg(long, value_name = "T", allow_hyphen_values = true)]
    pub horizon: Option<f64>,
    /// Relative error ε whose first-passage time t_ε is reported [default: 1e-2]
    #[arg(long, allow_hyphen_values = true)]
    pub epsilon: Option<f64>,
    /// GD steps per trial of the stability-limit bisection; 0 skips it [default: 1000, or
    /// T/η if larger]
    #[arg(long)]
    pub stability_steps: Option<usize>,
    /// A trial converges when its final loss is ≤ this fraction of the initial loss
    /// [default: 1e-4]
    #[arg(long, allow_hyphen_values = true)]
    pub stability_tol: Option<f64>,
    /// Rows of deviation.csv per step size at most (evenly spaced steps, the last included);
    /// maxima are always taken over every step [default: 1000]
    #[arg(long)]
    pub max_rows: Option<usize>,
    /// Run part i of N disjoint parts of the sweep (η number i, i+N, … of the list);
    /// `gdflow merge` combines the parts' directories
    #[arg(long, value_name = "i/N")]
    pub shard: Option<String>,
}

impl From<&SweepFlags> for SweepArgs {
    fn from(f: &SweepFlags) -> Self {
        let f = f.clone();
        SweepArgs {
            etas: f.etas,
            eta_range: f.eta_range,
            horizon: f.horizon,
            epsilon: f.epsilon,
            stability_steps: f.stability_steps,
            stability_tol: f.stability_tol,
            max_rows: f.max_rows,
            shard: f.shard,
        }
    }
}

/// Constants of the predictions `gdflow check` tests.
#[derive(Debug, Clone, Default, Args)]
pub struct CheckFlags {
    /// c in max_t ‖D(t) − D(0)‖ ≤ c·rtol·‖X*‖ for the flow [default: 1000]
    #[arg(long, allow_hyphen_values = true)]
    pub drift_c: Option<f64>,
    /// Relative tolerance of GD's drift identity [default: 1e-8]
    #[arg(long, allow_hyphen_values = true)]
    pub identity_tol: Option<f64>,
    /// Allowed |order − 1| of GD against the flow [default: 0.15]
    #[arg(long, allow_hyphen_values = true)]
    pub order_tol: Option<f64>,
    /// Allowed relative deviation of the slope of t_ε against ln(1/α) from its spectral
    /// prediction 1/σ_r(𝒜*y) [default: 0.15]
    #[arg(long, allow_hyphen_values = true)]
    pub slope_tol: Option<f64>,
    /// Allowed relative deviation of each learning time from ln(σ_i/α² − 1)/(2σ_i)
    /// [default: 0.02]
    #[arg(long, allow_hyphen_values = true)]
    pub incremental_tol: Option<f64>,
    /// Relative error ε of the convergence times t_ε [default: 0.1]
    #[arg(long = "check-epsilon", allow_hyphen_values = true)]
    pub epsilon: Option<f64>,
    /// Bound on the empirical RIP constant δ̂ (reported only when not given)
    #[arg(long, allow_hyphen_values = true)]
    pub rip_bound: Option<f64>,
    /// Bound on max ρ(t) along the flow (reported only when not given)
    #[arg(long, allow_hyphen_values = true)]
    pub rho_bound: Option<f64>,
    /// ‖sin Θ‖ below which the alignment phase counts as over [default: 0.1]
    #[arg(long, allow_hyphen_values = true)]
    pub alignment_tol: Option<f64>,
    /// Past the stability limit (η·λ_max > 2 where the flow ends): allowed relative deviation
    /// of the sharpness at GD's two-step average from 2/η [default: 0.05]
    #[arg(long, allow_hyphen_values = true)]
    pub eos_sharpness_tol: Option<f64>,
    /// Past the stability limit: allowed relative deviation of the central flow's predicted
    /// loss f + tr Σ/η from GD's time-averaged loss [default: 0.2]
    #[arg(long, allow_hyphen_values = true)]
    pub eos_loss_tol: Option<f64>,
}

impl From<&CheckFlags> for CheckArgs {
    fn from(f: &CheckFlags) -> Self {
        CheckArgs {
            drift_c: f.drift_c,
            identity_tol: f.identity_tol,
            order_tol: f.order_tol,
            slope_tol: f.slope_tol,
            incremental_tol: f.incremental_tol,
            epsilon: f.epsilon,
            rip_bound: f.rip_bound,
            rho_bound: f.rho_bound,
            alignment_tol: f.alignment_tol,
            eos_sharpness_tol: f.eos_sharpness_tol,
            eos_loss_tol: f.eos_loss_tol,
        }
    }
}
