//! Run configuration: the same keys on the command line (`--kebab-case`) and in TOML
//! (`snake_case`). [`ConfigArgs`] is the partial form both sources fill; [`Config`] is the
//! resolved form with every default applied, which is what outputs record.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum OperatorKind {
    /// Dense Gaussian ensemble, entries N(0, 1/m).
    Gaussian,
    /// 𝒜 = vec: plain matrix factorisation (m = n1·n2).
    Identity,
    /// Matrix completion: m distinct entries, scaled so that E‖𝒜(Z)‖² = ‖Z‖².
    Entries,
    /// The dense operator of a `--problem FILE.npz` (set by loading it; not a choice).
    #[value(skip)]
    File,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// σ_i geometrically spaced from 1 to 1/κ.
    Geometric,
    /// σ_i linearly spaced from 1 to 1/κ.
    Linear,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Tsitouras 5(4), explicit.
    Tsit45,
    /// Variable-order BDF, implicit.
    Bdf,
    /// TR-BDF2, implicit (SDIRK).
    TrBdf2,
    /// ESDIRK3(4), implicit.
    Esdirk34,
    /// Tsit45 while the flow is not stiff, BDF with the exact Jacobian while it is; the
    /// switches are reported with the solver statistics.
    Auto,
}

impl Method {
    /// Needs a dense Jacobian from the start. `auto` checks for itself whether one fits
    /// before it switches to BDF.
    pub fn is_implicit(self) -> bool {
        !matches!(self, Method::Tsit45 | Method::Auto)
    }
    pub fn name(self) -> &'static str {
        match self {
            Method::Tsit45 => "tsit45",
            Method::Bdf => "bdf",
            Method::TrBdf2 => "tr-bdf2",
            Method::Esdirk34 => "esdirk34",
            Method::Auto => "auto",
        }
    }
}

/// Which continuous-time dynamics GD is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum FlowVariant {
    /// The gradient flow x' = −∇f (GD's first-order limit).
    Plain,
    /// GD's modified flow x' = −∇f̃, f̃ = f + (η/4)‖∇f‖² (second-order accurate).
    Modified,
}

impl FlowVariant {
    pub fn name(self) -> &'static str {
        match self {
            FlowVariant::Plain => "plain",
            FlowVariant::Modified => "modified",
        }
    }
}

/// The E of the perturbed gradient flow −G = (X* − UVᵀ) + E (MATH §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum PerturbationModel {
    /// E = 0: plain matrix factorisation.
    None,
    /// E = (𝒜*𝒜 − I)(X* − UVᵀ): the sensing flow, spelled out.
    Sensing,
    /// The sensing E plus 𝒜*ξ, ξ the measurement noise (--noise s).
    Noise,
    /// E = ε‖X* − UVᵀ‖·W/‖W‖, W a fixed seeded Gaussian direction.
    Relative,
    /// E = ε·W/‖W‖ (constant forcing).
    Absolute,
}

impl PerturbationModel {
    pub fn name(self) -> &'static str {
        match self {
            PerturbationModel::None => "none",
            PerturbationModel::Sensing => "sensing",
            PerturbationModel::Noise => "noise",
            PerturbationModel::Relative => "relative",
            PerturbationModel::Absolute => "absolute",
        }
    }
}

/// Every run parameter, each optional: filled from `--config FILE.toml` and from flags, flags
/// winning. Unknown TOML keys are errors.
#[derive(Debug, Clone, Default, Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigArgs {
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
    pub sensing_precision: Option<crate::operator::Precision>,
    /// Standard deviation of the measurement noise ξ_i [default: 0]
    #[arg(long, allow_hyphen_values = true)]
    pub noise: Option<f64>,
    /// Seed of every random draw (operator, target, start, noise) [default: 0]
    #[arg(long)]
    pub seed: Option<u64>,
    /// GD step size η [default: 0.05]
    #[arg(long, allow_hyphen_values = true)]
    pub eta: Option<f64>,
    /// Number of GD steps; the flow runs to t = steps·η [default: 1000]
    #[arg(long)]
    pub steps: Option<usize>,
    /// Record every j-th GD iterate (and the flow at the same times) [default: 1]
    #[arg(long)]
    pub record_every: Option<usize>,
    /// Continuous dynamics GD is compared with: the gradient flow, or GD's modified flow
    /// for step η [default: plain]
    #[arg(long, value_enum)]
    pub flow: Option<FlowVariant>,
    /// Run the perturbed gradient flow U' = (X* − UVᵀ + E)V, V' = (X* − UVᵀ + E)ᵀU with this
    /// model of E (MATH §5), GD included, instead of the sensing dynamics
    #[arg(long, value_enum)]
    pub perturbation: Option<PerturbationModel>,
    /// ε of the `relative` and `absolute` perturbations [default: 0.1]
    #[arg(long, allow_hyphen_values = true)]
    pub perturbation_size: Option<f64>,
    /// The symmetric PSD case (MATH §3): X* = X*ᵀ ⪰ 0, symmetric A_i, U' = −GU with
    /// f = ¼‖𝒜(UUᵀ) − y‖² (needs n1 = n2)
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub symmetric: Option<bool>,
    /// ODE method for the gradient flow [default: tsit45]
    #[arg(long, value_enum)]
    pub method: Option<Method>,
    /// Relative tolerance of the flow solver [default: 1e-8]
    #[arg(long, allow_hyphen_values = true)]
    pub rtol: Option<f64>,
    /// Absolute tolerance of the flow solver [default: rtol·α/√k, below the start's entries]
    #[arg(long, allow_hyphen_values = true)]
    pub atol: Option<f64>,
    /// Load the problem (x_star, sensing, optional y, u0, v0) from a NumPy .npz file
    #[arg(long, value_name = "FILE.npz")]
    pub problem: Option<PathBuf>,
    /// Save the problem actually run to a NumPy .npz file
    #[arg(long, value_name = "FILE.npz")]
    pub save_problem: Option<PathBuf>,
    /// Write summary.json, trajectory.csv and config.toml into this directory
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// The `[sweep]` table of a configuration file (see [`parse_config_file`]).
    #[arg(skip)]
    #[serde(default, skip_serializing)]
    pub sweep: Option<SweepArgs>,
    /// The `[check]` table of a configuration file.
    #[arg(skip)]
    #[serde(default, skip_serializing)]
    pub check: Option<CheckArgs>,
}

macro_rules! overlay {
    ($base:expr, $top:expr, $($f:ident),*) => {
        $( if $top.$f.is_some() { $base.$f = $top.$f.clone(); } )*
    };
}

impl ConfigArgs {
    /// Parse a TOML document; unknown keys are errors that suggest the closest known key. A
    /// `[sweep]` table (written by `gdflow sweep`) is ignored here: see [`parse_config_file`].
    pub fn from_toml(text: &str) -> Result<Self> {
        parse_config_file(text).map(|(args, _)| args)
    }

    /// `self` overlaid by every field `top` sets.
    pub fn overlaid_by(mut self, top: &ConfigArgs) -> Self {
        overlay!(
            self,
            top,
            n1,
            n2,
            rank,
            width,
            measurements,
            alpha,
            kappa,
            profile,
            singular_values,
            operator,
            sensing_precision,
            noise,
            seed,
            eta,
            steps,
            record_every,
            flow,
            perturbation,
            perturbation_size,
            symmetric,
            method,
            rtol,
            atol,
            problem,
            save_problem,
            out
        );
        self
    }

    /// Apply defaults and check every value.
    pub fn resolve(&self) -> Result<Config> {
        let operator = self.operator.unwrap_or(OperatorKind::Gaussian);
        let n1 = self.n1.unwrap_or(30);
        let n2 = self.n2.unwrap_or(25);
        let rank = self.rank.unwrap_or(3);
        let width = self.width.unwrap_or(rank.saturating_mul(2));
        let measurements = match (operator, self.measurements) {
            (OperatorKind::Identity, None) => n1.saturating_mul(n2),
            (_, Some(m)) => m,
            (_, None) => 600,
        };
        let alpha = self.alpha.unwrap_or(1e-3);
        let rtol = self.rtol.unwrap_or(1e-8);
        let atol = self
            .atol
            .unwrap_or_else(|| rtol * alpha / (width.max(1) as f64).sqrt());
        let cfg = Config {
            n1,
            n2,
            rank,
            width,
            measurements,
            alpha,
            kappa: self.kappa.unwrap_or(2.0),
            profile: self.profile.unwrap_or(Profile::Geometric),
            singular_values: self.singular_values.clone(),
            operator,
            sensing_precision: self
                .sensing_precision
                .unwrap_or(crate::operator::Precision::F64),
            noise: self.noise.unwrap_or(0.0),
            seed: self.seed.unwrap_or(0),
            eta: self.eta.unwrap_or(0.05),
            steps: self.steps.unwrap_or(1000),
            record_every: self.record_every.unwrap_or(1),
            flow: self.flow.unwrap_or(FlowVariant::Plain),
            perturbation: self.perturbation,
            perturbation_size: self.perturbation_size.unwrap_or(0.1),
            symmetric: self.symmetric.unwrap_or(false),
            method: self.method.unwrap_or(Method::Tsit45),
            rtol,
            atol,
            problem: self.problem.clone(),
            save_problem: self.save_problem.clone(),
            out: self.out.clone(),
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

/// Parse a configuration file: the run keys at the top level and the optional `[sweep]` table.
/// Errors name the offending key (`sweep.horizon` for one in the table) and its line.
pub fn parse_config_file(text: &str) -> Result<(ConfigArgs, Option<SweepArgs>)> {
    parse_config_file_all(text).map(|(a, s, _)| (a, s))
}

/// [`parse_config_file`] with the `[check]` table as well.
pub fn parse_config_file_all(
    text: &str,
) -> Result<(ConfigArgs, Option<SweepArgs>, Option<CheckArgs>)> {
    let mut args: ConfigArgs = toml::from_str(text).map_err(|e| {
        let msg = e.message().to_string();
        let (key, line) = e
            .span()
            .map(|span| key_at(text, span.start))
            .unwrap_or((None, None));
        let keys = match key.as_deref() {
            Some(k) if k.starts_with("sweep.") => SWEEP_KEYS,
            Some(k) if k.starts_with("check.") => CHECK_KEYS,
            _ => KNOWN_KEYS,
        };
        let hint = unknown_key_hint(&msg, keys);
        let at = line.map_or(String::new(), |l| format!(" (line {l})"));
        Error::invalid(
            key.as_deref().unwrap_or("config"),
            format!("in the TOML file{at}"),
            format!("{msg}{hint}"),
        )
    })?;
    let sweep = args.sweep.take();
    let check = args.check.take();
    Ok((args, sweep, check))
}

/// The key (prefixed by its table, e.g. `sweep.etas`) on the line holding byte `pos`, and the
/// line number.
fn key_at(text: &str, pos: usize) -> (Option<String>, Option<usize>) {
    let pos = pos.min(text.len());
    let line_no = text[..pos].matches('\n').count();
    let mut table = None;
    for line in text.lines().take(line_no + 1) {
        let t = line.trim();
        if t.starts_with('[') {
            table = Some(t.trim_matches(|c| c == '[' || c == ']').trim().to_string());
        }
    }
    let line = text.lines().nth(line_no).unwrap_or("");
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"').to_string())
        .filter(|k| !k.is_empty())
        .or_else(|| table.clone().filter(|_| line.trim().starts_with('[')));
    let key = match (key, table) {
        (Some(k), Some(t)) if !line.trim().starts_with('[') => Some(format!("{t}.{k}")),
        (k, _) => k,
    };
    (key, Some(line_no + 1))
}

/// Options of `gdflow sweep` beyond the problem's; in a TOML file they sit in a `[sweep]` table.
#[derive(Debug, Clone, Default, Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepArgs {
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

/// Constants of the predictions `gdflow check` tests; in a TOML file they sit in a `[check]`
/// table.
#[derive(Debug, Clone, Default, Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckArgs {
    /// c in max_t ‖D(t) − D(0)‖ ≤ c·rtol·‖X*‖ for the flow [default: 1000]
    #[arg(long, allow_hyphen_values = true)]
    pub drift_c: Option<f64>,
    /// Relative tolerance of GD's drift identity [default: 1e-8]
    #[arg(long, allow_hyphen_values = true)]
    pub identity_tol: Option<f64>,
    /// Allowed |order − 1| of GD against the flow [default: 0.15]
    #[arg(long, allow_hyphen_values = true)]
    pub order_tol: Option<f64>,
    /// Allowed relative deviation of the slope of t_ε against ln(1/α) from 1/σ_r [default: 0.15]
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
}

impl CheckArgs {
    pub fn overlaid_by(mut self, top: &CheckArgs) -> Self {
        overlay!(
            self,
            top,
            drift_c,
            identity_tol,
            order_tol,
            slope_tol,
            incremental_tol,
            epsilon,
            rip_bound,
            rho_bound,
            alignment_tol
        );
        self
    }
}

const CHECK_KEYS: &[&str] = &[
    "drift_c",
    "identity_tol",
    "order_tol",
    "slope_tol",
    "incremental_tol",
    "epsilon",
    "rip_bound",
    "rho_bound",
    "alignment_tol",
];

const SWEEP_KEYS: &[&str] = &[
    "etas",
    "eta_range",
    "horizon",
    "epsilon",
    "stability_steps",
    "stability_tol",
    "max_rows",
    "shard",
];

impl SweepArgs {
    /// `self` overlaid by every field `top` sets.
    pub fn overlaid_by(mut self, top: &SweepArgs) -> Self {
        if top.etas.is_some() || top.eta_range.is_some() {
            self.etas = top.etas.clone();
            self.eta_range = top.eta_range.clone();
        }
        overlay!(
            self,
            top,
            horizon,
            epsilon,
            stability_steps,
            stability_tol,
            max_rows,
            shard
        );
        self
    }
}

/// "MIN:MAX:COUNT" → COUNT geometrically spaced values from MIN to MAX.
pub fn parse_eta_range(spec: &str) -> Result<Vec<f64>> {
    let bad = |why: &str| Error::invalid("eta_range", spec, why.to_string());
    let parts: Vec<&str> = spec.split(':').collect();
    let [lo, hi, count] = parts[..] else {
        return Err(bad("must be MIN:MAX:COUNT, e.g. 0.01:0.2:6"));
    };
    let lo: f64 = lo.trim().parse().map_err(|_| bad("MIN must be a number"))?;
    let hi: f64 = hi.trim().parse().map_err(|_| bad("MAX must be a number"))?;
    let count: usize = count
        .trim()
        .parse()
        .map_err(|_| bad("COUNT must be an integer >= 1"))?;
    if !(lo.is_finite() && lo > 0.0 && hi.is_finite() && hi >= lo) {
        return Err(bad("needs 0 < MIN <= MAX, both finite"));
    }
    if count == 0 || (count == 1 && hi != lo) {
        return Err(bad("COUNT must be >= 1, and >= 2 when MIN < MAX"));
    }
    if count == 1 {
        return Ok(vec![lo]);
    }
    let ratio = (hi / lo).ln() / (count - 1) as f64;
    Ok((0..count)
        .map(|i| {
            if i == count - 1 {
                hi
            } else {
                lo * (ratio * i as f64).exp()
            }
        })
        .collect())
}

/// Every top-level key of a configuration file.
pub const KNOWN_KEYS: &[&str] = &[
    "n1",
    "n2",
    "rank",
    "width",
    "measurements",
    "alpha",
    "kappa",
    "profile",
    "singular_values",
    "operator",
    "sensing_precision",
    "noise",
    "seed",
    "eta",
    "steps",
    "record_every",
    "flow",
    "perturbation",
    "perturbation_size",
    "symmetric",
    "method",
    "rtol",
    "atol",
    "problem",
    "save_problem",
    "out",
    "sweep",
    "check",
];

fn unknown_key_hint(msg: &str, known: &[&str]) -> String {
    let Some(start) = msg.find("unknown field `") else {
        return String::new();
    };
    let rest = &msg[start + "unknown field `".len()..];
    let key = rest.split('`').next().unwrap_or("");
    known
        .iter()
        .map(|k| (strsim_distance(key, k), *k))
        .filter(|(d, _)| *d <= 3)
        .min()
        .map(|(_, k)| format!("; did you mean `{k}`?"))
        .unwrap_or_default()
}

/// Levenshtein distance; the key list is tiny, so the quadratic table is fine.
fn strsim_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

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
    pub profile: Profile,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub singular_values: Option<Vec<f64>>,
    pub operator: OperatorKind,
    pub sensing_precision: crate::operator::Precision,
    pub noise: f64,
    pub seed: u64,
    pub eta: f64,
    pub steps: usize,
    pub record_every: usize,
    pub flow: FlowVariant,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub perturbation: Option<PerturbationModel>,
    pub perturbation_size: f64,
    pub symmetric: bool,
    pub method: Method,
    pub rtol: f64,
    pub atol: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub save_problem: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub out: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        ConfigArgs::default()
            .resolve()
            .expect("the built-in defaults are valid")
    }
}

fn positive_finite(field: &str, v: f64) -> Result<()> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(Error::invalid(field, v, "must be a finite number > 0"))
    }
}

/// Memory the system reports as available, if it says.
pub fn available_memory_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

impl Config {
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
            crate::operator::Precision::F64 => 1.0,
            crate::operator::Precision::F32 => 0.5,
        };
        let operator = match self.operator {
            OperatorKind::Gaussian | OperatorKind::File => bytes_per_entry * m * n1 * n2,
            OperatorKind::Identity => 0.0,
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
                match self.profile {
                    Profile::Geometric => self.kappa.powf(-s),
                    Profile::Linear => 1.0 - s * (1.0 - 1.0 / self.kappa),
                }
            })
            .collect()
    }

    /// Check every value; the error names the field, the value and the allowed range.
    pub fn validate(&self) -> Result<()> {
        for (field, v) in [
            ("n1", self.n1),
            ("n2", self.n2),
            ("rank", self.rank),
            ("width", self.width),
            ("measurements", self.measurements),
            ("record_every", self.record_every),
            ("steps", self.steps),
        ] {
            if v == 0 {
                return Err(Error::invalid(field, v, "must be an integer >= 1"));
            }
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
        if self.symmetric && self.n1 != self.n2 && self.problem.is_none() {
            return Err(Error::invalid(
                "symmetric",
                format!("n1 = {}, n2 = {}", self.n1, self.n2),
                "the symmetric case needs n1 = n2",
            ));
        }
        if self.sensing_precision == crate::operator::Precision::F32
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
        if self.operator == OperatorKind::File && self.problem.is_none() {
            return Err(Error::invalid(
                "operator",
                "file",
                "is set by loading --problem FILE.npz; choose gaussian, identity or entries",
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
        positive_finite("alpha", self.alpha)?;
        positive_finite("eta", self.eta)?;
        positive_finite("rtol", self.rtol)?;
        if !(self.atol.is_finite() && self.atol >= 0.0) {
            return Err(Error::invalid(
                "atol",
                self.atol,
                "must be a finite number >= 0",
            ));
        }
        if !(self.kappa.is_finite() && self.kappa >= 1.0) {
            return Err(Error::invalid(
                "kappa",
                self.kappa,
                "must be a finite number >= 1",
            ));
        }
        if !(self.perturbation_size.is_finite() && self.perturbation_size >= 0.0) {
            return Err(Error::invalid(
                "perturbation_size",
                self.perturbation_size,
                "must be a finite number >= 0",
            ));
        }
        if !(self.noise.is_finite() && self.noise >= 0.0) {
            return Err(Error::invalid(
                "noise",
                self.noise,
                "must be a finite number >= 0",
            ));
        }
        if let Some(sv) = &self.singular_values {
            if sv.len() != self.rank {
                return Err(Error::invalid(
                    "singular_values",
                    format!("{sv:?}"),
                    format!("must list exactly rank = {} values", self.rank),
                ));
            }
            if let Some(bad) = sv.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
                return Err(Error::invalid(
                    "singular_values",
                    bad,
                    "every value must be finite and > 0",
                ));
            }
        }
        self.check_memory()
    }

    fn check_memory(&self) -> Result<()> {
        let n12 = self.n1 as f64 * self.n2 as f64;
        let needed = self.memory_bytes();
        let available = available_memory_bytes().unwrap_or(16 << 30) as f64;
        if needed > 0.8 * available {
            let (field, value) = match self.operator {
                OperatorKind::Gaussian
                    if 8.0 * self.measurements as f64 * n12 > 0.4 * available =>
                {
                    ("measurements", self.measurements.to_string())
                }
                _ if self.steps / self.record_every.max(1) > 1_000_000 => {
                    ("record_every", self.record_every.to_string())
                }
                _ => ("n1", self.n1.to_string()),
            };
            return Err(Error::invalid(
                field,
                value,
                format!(
                    "the run would need about {:.1} GiB but about {:.1} GiB are available; use a \
                     smaller problem{}",
                    needed / f64::from(1u32 << 30),
                    available / f64::from(1u32 << 30),
                    if field == "record_every" {
                        " or record fewer steps"
                    } else {
                        ""
                    }
                ),
            ));
        }
        Ok(())
    }
}
