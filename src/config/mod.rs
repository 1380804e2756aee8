//! Run configuration: the same keys on the command line (`--kebab-case`) and in TOML
//! (`snake_case`), each defined once here: its doc comment is its help, its `arg` attribute
//! (with the `cli` feature) its flag. [`ConfigArgs`] is the partial form both sources fill;
//! [`Config`] is the resolved form with every default applied, which is what outputs record.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

mod checks;
mod resolved;

pub use crate::dynamics::flow::{ErrorScale, Method};
pub use crate::dynamics::FlowVariant;
pub use crate::field::PerturbationModel;
pub use crate::operator::Precision;
pub use crate::problem::OperatorKind;
pub use resolved::{Config, MAX_HORIZON_TIMESCALES, MAX_KAPPA, MAX_STEPS};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// σ_i geometrically spaced from 1 to 1/κ.
    Geometric,
    /// σ_i linearly spaced from 1 to 1/κ.
    Linear,
}

impl Profile {
    pub const ALL: [Profile; 2] = [Profile::Geometric, Profile::Linear];
    pub fn name(self) -> &'static str {
        match self {
            Profile::Geometric => "geometric",
            Profile::Linear => "linear",
        }
    }
    pub fn description(self) -> &'static str {
        match self {
            Profile::Geometric => "σ_i geometrically spaced from 1 to 1/κ",
            Profile::Linear => "σ_i linearly spaced from 1 to 1/κ",
        }
    }
}

/// What each replica of an ensemble draws anew beside its noise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Vary {
    /// The start U_0, V_0: replica ρ ≥ 1 draws its own from a stream keyed by (seed, ρ);
    /// replica 0 keeps the problem's.
    Start,
}

impl Vary {
    pub const ALL: [Vary; 1] = [Vary::Start];
    pub fn name(self) -> &'static str {
        match self {
            Vary::Start => "start",
        }
    }
    pub fn description(self) -> &'static str {
        match self {
            Vary::Start => "each replica ρ ≥ 1 draws its own start U_0, V_0 ~ N(0, α²/k)",
        }
    }
}

/// A struct of optional keys, each written once: its field (its type; its doc comment, the
/// help; its `arg` attribute, the flag; its name, the TOML key), then its default
/// (`= |args| value`, from the keys before it where it depends on them) and its own check
/// (`; check f`, with `f(key, &value)` from [`checks`]). The macro adds the list of the keys,
/// the overlay of one value on another key by key, whether a key is set, a method per key with
/// a default giving its value or that default, and `check_keys` on the form named after `=>`
/// (the resolved [`Config`], whose values a run uses; or the struct itself, whose given values
/// are checked and whose defaults are valid by construction; `gdflow sweep`'s keys have no check
/// of their own here, their ranges depend on the problem and are the sweep's), so that no list
/// of the keys is written out by hand beside the struct. Checks that relate keys are
/// [`Config::validate`]'s.
macro_rules! keys {
    (
        $(#[$sm:meta])*
        pub struct $name:ident / $keys:ident => $resolved:ty {
            $( $(#[$fm:meta])* pub $f:ident : Option<$t:ty> $(= $default:expr)? $(; check $check:expr)? , )*
        }
    ) => {
        $(#[$sm])*
        pub struct $name {
            $( $(#[$fm])* pub $f: Option<$t>, )*
        }

        #[doc = concat!("Every key of [`", stringify!($name), "`]: its TOML keys (the flags are their kebab-case).")]
        pub const $keys: &[&str] = &[$(stringify!($f)),*];

        impl $name {
            /// `self` with every key `top` sets replaced by `top`'s value.
            fn overlay_keys(mut self, top: &Self) -> Self {
                $( if top.$f.is_some() { self.$f = top.$f.clone(); } )*
                self
            }

            /// Whether the key named `key` is set.
            pub fn is_set(&self, key: &str) -> bool {
                match key {
                    $( stringify!($f) => self.$f.is_some(), )*
                    _ => false,
                }
            }

            $( $(
                #[doc = concat!("`", stringify!($f), "` as given, or its default.")]
                pub fn $f(&self) -> $t {
                    let default: fn(&Self) -> $t = $default;
                    self.$f.clone().unwrap_or_else(|| default(self))
                }
            )? )*
        }

        impl $resolved {
            #[doc = concat!("Each key's own check (of [`", stringify!($name), "`]'s fields), in their order.")]
            pub fn check_keys(&self) -> Result<()> {
                $( self.check_key(stringify!($f))?; )*
                Ok(())
            }

            /// The check of the key named `key` (none for a key without one).
            pub fn check_key(&self, key: &str) -> Result<()> {
                match key {
                    $( $(
                        stringify!($f) => match checks::Given::<$t>::given(&self.$f) {
                            Some(v) => {
                                let check: fn(&str, &$t) -> Result<()> = $check;
                                check(key, v)
                            }
                            None => Ok(()),
                        },
                    )? )*
                    _ => Ok(()),
                }
            }
        }
    };
}

keys! {
    /// Every run parameter, each optional: filled from `--config FILE.toml` and from flags, flags
    /// winning. Unknown TOML keys are errors.
    #[derive(Debug, Clone, Default, Serialize, Deserialize)]
    #[cfg_attr(feature = "cli", derive(clap::Args))]
    #[serde(deny_unknown_fields)]
    pub struct ConfigArgs / KNOWN_KEYS => Config {
        /// Rows of the target X* [default: 30]
        #[cfg_attr(feature = "cli", arg(long, help_heading = "Problem"))]
        pub n1: Option<usize> = |_| 30; check checks::at_least_one,
        /// Columns of the target X* [default: 25]
        #[cfg_attr(feature = "cli", arg(long, help_heading = "Problem"))]
        pub n2: Option<usize> = |_| 25; check checks::at_least_one,
        /// Rank r of the target [default: 3]
        #[cfg_attr(feature = "cli", arg(long, help_heading = "Problem"))]
        pub rank: Option<usize> = |_| 3; check checks::at_least_one,
        /// Width k of the factors U (n1×k), V (n2×k) [default: 2·rank]
        #[cfg_attr(feature = "cli", arg(long, help_heading = "Problem"))]
        pub width: Option<usize> = |a| a.rank().saturating_mul(2); check checks::at_least_one,
        /// Number of measurements m [default: 600; n1·n2 for --operator identity]
        #[cfg_attr(feature = "cli", arg(long, help_heading = "Problem"))]
        pub measurements: Option<usize> = |a| match a.operator() {
            OperatorKind::Identity => a.n1().saturating_mul(a.n2()),
            _ => 600,
        }; check checks::at_least_one,
        /// Scale of the random start: entries of U0, V0 are N(0, α²/k) [default: 1e-3]
        #[cfg_attr(
            feature = "cli",
            arg(long, allow_hyphen_values = true, help_heading = "Problem")
        )]
        pub alpha: Option<f64> = |_| 1e-3; check |k, v| checks::representable(k, v, "α² would underflow in the start's variance"),
        /// Condition number σ_1/σ_r of the target [default: 2]
        #[cfg_attr(
            feature = "cli",
            arg(long, allow_hyphen_values = true, help_heading = "Problem")
        )]
        pub kappa: Option<f64> = |_| 2.0; check |k, v| {
            if v.is_finite() && *v >= 1.0 { Ok(()) } else { Err(Error::invalid(k, v, "must be a finite number >= 1")) }
        },
        /// Spacing of the target's singular values from 1 down to 1/κ [default: geometric]
        #[cfg_attr(feature = "cli", arg(long, value_enum, help_heading = "Problem"))]
        pub profile: Option<Profile> = |_| Profile::Geometric,
        /// Explicit singular values of the target, comma-separated (overrides --kappa)
        #[cfg_attr(
            feature = "cli",
            arg(
                long,
                value_delimiter = ',',
                allow_hyphen_values = true,
                help_heading = "Problem"
            )
        )]
        pub singular_values: Option<Vec<f64>>; check checks::spectrum,
        /// Measurement operator [default: gaussian]
        #[cfg_attr(feature = "cli", arg(long, value_enum, help_heading = "Problem"))]
        pub operator: Option<OperatorKind> = |_| OperatorKind::Gaussian,
        /// Storage of the sensing matrix: f64, or f32 (half the memory and bandwidth, products
        /// accumulated in f64; for a generated problem the f32 entries are the operator, for an f64
        /// file the change of y is reported) [default: f64]
        #[cfg_attr(feature = "cli", arg(long, value_enum, help_heading = "Problem"))]
        pub sensing_precision: Option<Precision> = |_| Precision::F64,
        /// Standard deviation of the measurement noise ξ_i [default: 0]
        #[cfg_attr(
            feature = "cli",
            arg(long, allow_hyphen_values = true, help_heading = "Problem")
        )]
        pub noise: Option<f64> = |_| 0.0; check checks::non_negative,
        /// Seed of every random draw (operator, target, start, noise, W) [default: 0]
        #[cfg_attr(feature = "cli", arg(long, help_heading = "Problem"))]
        pub seed: Option<u64> = |_| 0; check checks::toml_integer,
        /// GD step size η [default: 0.05]
        #[cfg_attr(
            feature = "cli",
            arg(long, allow_hyphen_values = true, help_heading = "Method")
        )]
        pub eta: Option<f64> = |_| 0.05; check |k, v| checks::representable(k, v, "a step this small moves nothing in double precision"),
        /// Number of GD steps; the flow runs to t = steps·η [default: 1000]
        #[cfg_attr(feature = "cli", arg(long, help_heading = "Method"))]
        pub steps: Option<usize> = |_| 1000; check |k, v| {
            checks::at_least_one(k, v)?;
            if *v as f64 > MAX_STEPS {
                return Err(Error::invalid(k, v, format!("must be <= {MAX_STEPS:e} (split a longer run, or take a larger --eta)")));
            }
            Ok(())
        },
        /// Record every j-th GD iterate and the flow at the same times (maxima and the GD–flow
        /// distance are still taken over every step) [default: 1]
        #[cfg_attr(feature = "cli", arg(long, help_heading = "Method"))]
        pub record_every: Option<usize> = |_| 1; check checks::count,
        /// Continuous dynamics GD is compared with: the gradient flow, GD's modified flow
        /// for step η, or the central flow (past the stability limit; adds the rows gd_mean,
        /// GD's two-step average) [default: plain]
        #[cfg_attr(feature = "cli", arg(long, value_enum, help_heading = "Method"))]
        pub flow: Option<FlowVariant> = |_| FlowVariant::Plain,
        /// The discrete method compared with its limits (MATH §9) [default: gd]
        #[cfg_attr(feature = "cli", arg(long, value_name = "NAME", value_parser = optimizer_names(), help_heading = "Method"))]
        pub optimizer: Option<String> = |_| "gd".into(),
        /// ScaledGD's λ in U ← U − ηGV(VᵀV + λI)⁻¹ [default: 0.01·σ_r(X*)]
        #[cfg_attr(
            feature = "cli",
            arg(
                long,
                value_name = "λ",
                allow_hyphen_values = true,
                help_heading = "Method"
            )
        )]
        pub damping: Option<f64>,
        /// Heavy ball's fixed momentum β ∈ [0, 1), time t = jη (or give --friction)
        #[cfg_attr(
            feature = "cli",
            arg(
                long,
                value_name = "β",
                allow_hyphen_values = true,
                help_heading = "Method"
            )
        )]
        pub momentum: Option<f64>,
        /// Heavy ball's friction γ > 0: β = 1 − γ√η, time t = j√η, limit Ẍ + γẊ + ∇f = 0
        #[cfg_attr(
            feature = "cli",
            arg(
                long,
                value_name = "γ",
                allow_hyphen_values = true,
                help_heading = "Method"
            )
        )]
        pub friction: Option<f64>,
        /// SGD's batch size b, 1 ≤ b ≤ m (b = m without replacement is GD)
        #[cfg_attr(feature = "cli", arg(long, value_name = "b", help_heading = "Method"))]
        pub batch: Option<usize>,
        /// SGD draws its batches with replacement (default: without)
        #[cfg_attr(feature = "cli", arg(long, num_args = 0..=1, default_missing_value = "true", help_heading = "Method"))]
        pub with_replacement: Option<bool>,
        /// Euler–Maruyama substeps per step of SGD's SMEs (--flow sme1, sme2) [default: 8, doubled
        /// with --replicas while the scheme's own weak error is resolved and not below half the
        /// weak error being measured, up to 128]
        #[cfg_attr(feature = "cli", arg(long, value_name = "s", help_heading = "Method"))]
        pub sde_substeps: Option<usize>,
        /// Draw this anew for every replica beside its noise: `start` makes an ensemble over
        /// starts (of any optimiser, GD included), each replica's limit from its own start
        #[cfg_attr(feature = "cli", arg(long, value_enum, help_heading = "Method"))]
        pub vary: Option<Vary>,
        /// Report an SME's statistics by Talay–Tubaro extrapolation, 2E_{h/2} − E_h, from its
        /// ensembles on h and h/2: the Euler–Maruyama scheme's first-order error removed
        /// (--flow sme1, sme2 with --replicas)
        #[cfg_attr(feature = "cli", arg(long, num_args = 0..=1, default_missing_value = "true", help_heading = "Method"))]
        pub talay_tubaro: Option<bool> = |_| false,
        /// Label-noise SGD's σ: labels y_i + σε_i, fresh every step (--optimizer label-noise)
        #[cfg_attr(
            feature = "cli",
            arg(
                long,
                value_name = "σ",
                allow_hyphen_values = true,
                help_heading = "Method"
            )
        )]
        pub label_noise: Option<f64>,
        /// Independent replicas of a stochastic method (their own noise streams): ensemble.csv
        /// holds the mean, std and 95% interval of each recorded quantity over them [default: 1]
        #[cfg_attr(feature = "cli", arg(long, value_name = "N", help_heading = "Method"))]
        pub replicas: Option<usize> = |_| 1,
        /// Run the perturbed gradient flow U' = (X* − UVᵀ + E)V, V' = (X* − UVᵀ + E)ᵀU with this
        /// model of E (MATH §5), GD and every flow included, instead of the sensing dynamics
        #[cfg_attr(feature = "cli", arg(long, value_enum, help_heading = "Problem"))]
        pub perturbation: Option<PerturbationModel>,
        /// ε of the `relative` and `absolute` perturbations [default: 0.1]
        #[cfg_attr(
            feature = "cli",
            arg(long, allow_hyphen_values = true, help_heading = "Problem")
        )]
        pub perturbation_size: Option<f64> = |_| 0.1; check checks::non_negative,
        /// The symmetric PSD case (MATH §3): X* = X*ᵀ ⪰ 0, symmetric A_i, U' = −GU with
        /// f = ¼‖𝒜(UUᵀ) − y‖² (needs n1 = n2)
        #[cfg_attr(feature = "cli", arg(long, num_args = 0..=1, default_missing_value = "true", help_heading = "Problem"))]
        pub symmetric: Option<bool> = |_| false,
        /// ODE method for the flows [default: dop853]
        #[cfg_attr(feature = "cli", arg(long, value_enum, help_heading = "Solver"))]
        pub method: Option<Method> = |_| Method::Dop853,
        /// Relative tolerance of the flow solver [default: 1e-8]
        #[cfg_attr(
            feature = "cli",
            arg(long, allow_hyphen_values = true, help_heading = "Solver")
        )]
        pub rtol: Option<f64> = |_| 1e-8; check |k, v| {
            if v.is_finite() && (1e-15..1.0).contains(v) { return Ok(()); }
            Err(Error::invalid(k, v, "must be a number in [1e-15, 1): below, no double-precision step meets it; at 1 or above any step does"))
        },
        /// Absolute tolerance of the flow solver [default: rtol·α/√k, below the start's entries]
        #[cfg_attr(
            feature = "cli",
            arg(long, allow_hyphen_values = true, help_heading = "Solver")
        )]
        pub atol: Option<f64> = |a| a.rtol() * a.alpha() / (a.width().max(1) as f64).sqrt(); check checks::non_negative,
        /// Compute the sharpness λ_max(∇²f) (block Lanczos) at every j-th record of every
        /// dynamics; 0 never [default: 1 with --flow central, 0 otherwise]
        #[cfg_attr(feature = "cli", arg(long, help_heading = "Method"))]
        pub sharpness_every: Option<usize> = |a| usize::from(a.flow() == FlowVariant::Central); check checks::toml_count,
        /// Compute the spectral columns — sv_i, rho and the theory's signal, sin Θ and spurious
        /// columns — at every j-th record of every dynamics (the last record too), leaving their
        /// cells empty in the others; 1 at every record, 0 never. Every other column, and every
        /// maximum, is still taken at every record and step. A record's spectral work (an
        /// operator norm from its Gram matrix, factored SVDs) costs about three quarters of a
        /// pass over the sensing matrix at small sizes [default: records ÷ 100 rounded down,
        /// at least 1: 100 to 200 spectral rows per dynamics (every record of a run with fewer
        /// than 200), 10 for the default 1000 steps]
        #[cfg_attr(feature = "cli", arg(long, value_name = "j", help_heading = "Method"))]
        pub spectrum_every: Option<usize> = |a| (a.steps() / a.record_every().max(1) / SPECTRAL_ROWS).max(1); check checks::toml_count,
        /// How DOP853 weighs a step's error (MATH §7): per component (Hairer's, SciPy's), or
        /// relative to the whole state [default: componentwise]
        #[cfg_attr(feature = "cli", arg(long, value_enum, help_heading = "Solver"))]
        pub error_scale: Option<ErrorScale> = |_| ErrorScale::Componentwise,
        /// Load the problem (x_star, sensing, optional y, u0, v0, alpha) from a NumPy .npz file;
        /// options the file fixes are checked against it or refused
        #[cfg_attr(
            feature = "cli",
            arg(long, value_name = "FILE.npz", help_heading = "Problem")
        )]
        pub problem: Option<PathBuf>,
        /// Save the problem actually run to a NumPy .npz file
        #[cfg_attr(
            feature = "cli",
            arg(long, value_name = "FILE.npz", help_heading = "Problem")
        )]
        pub save_problem: Option<PathBuf>,
        /// Write the outputs (summary.json, CSV tables, config.toml) into this directory
        #[cfg_attr(
            feature = "cli",
            arg(long, value_name = "DIR", help_heading = "Output")
        )]
        pub out: Option<PathBuf>,
        /// Also write states.npz: U and V at every recorded step of every dynamics, arrays
        /// `<dynamics>_U`, `<dynamics>_V`, `<dynamics>_step`, `<dynamics>_t` (needs --out)
        #[cfg_attr(feature = "cli", arg(long, num_args = 0..=1, default_missing_value = "true", help_heading = "Output"))]
        pub save_states: Option<bool> = |_| false,
        /// The `[sweep]` table of a configuration file (see [`parse_config_file`]).
        #[serde(default, skip_serializing)]
        #[cfg_attr(feature = "cli", arg(skip))]
        pub sweep: Option<SweepArgs>,
        /// The `[check]` table of a configuration file.
        #[serde(default, skip_serializing)]
        #[cfg_attr(feature = "cli", arg(skip))]
        pub check: Option<CheckArgs>,
    }
}

/// The registry's optimisers as clap's possible values, each with its line of help.
#[cfg(feature = "cli")]
fn optimizer_names() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(
        crate::dynamics::optimizer::REGISTRY
            .iter()
            .map(|e| clap::builder::PossibleValue::new(e.name).help(e.description)),
    )
}

impl ConfigArgs {
    /// Parse a TOML document; unknown keys are errors that suggest the closest known key. A
    /// `[sweep]` table (written by `gdflow sweep`) is ignored here: see [`parse_config_file`].
    pub fn from_toml(text: &str) -> Result<Self> {
        parse_config_file(text).map(|(args, _)| args)
    }

    /// `self` overlaid by every key `top` sets.
    pub fn overlaid_by(self, top: &ConfigArgs) -> Self {
        self.overlay_keys(top)
    }

    /// Apply defaults and check every value: each key's own range (given or default), then how
    /// the keys relate. With a problem file the dimensions, the target and possibly y and the
    /// start come from the file: how they relate to each other and to the keys is checked when
    /// it is loaded (`experiments::Setup`), not here.
    pub fn resolve(&self) -> Result<Config> {
        let cfg = Config {
            n1: self.n1(),
            n2: self.n2(),
            rank: self.rank(),
            width: self.width(),
            measurements: self.measurements(),
            alpha: self.alpha(),
            kappa: self.kappa(),
            profile: Some(self.profile()),
            singular_values: self.singular_values.clone(),
            operator: self.operator(),
            sensing_precision: self.sensing_precision(),
            noise: self.noise(),
            seed: self.seed(),
            eta: self.eta(),
            steps: self.steps(),
            record_every: self.record_every(),
            sharpness_every: self.sharpness_every(),
            spectrum_every: self.spectrum_every(),
            flow: self.flow(),
            optimizer: self.optimizer(),
            damping: self.damping,
            momentum: self.momentum,
            friction: self.friction,
            batch: self.batch,
            with_replacement: self.with_replacement,
            sde_substeps: self.sde_substeps,
            talay_tubaro: self.talay_tubaro(),
            vary: self.vary,
            label_noise: self.label_noise,
            replicas: self.replicas(),
            perturbation: self.perturbation,
            perturbation_size: self.perturbation_size(),
            symmetric: self.symmetric(),
            method: self.method(),
            rtol: self.rtol(),
            atol: self.atol(),
            error_scale: self.error_scale(),
            problem: self.problem.clone(),
            save_problem: self.save_problem.clone(),
            out: self.out.clone(),
            save_states: self.save_states(),
        };
        if let (Some(_), Some(_)) = (&self.singular_values, self.kappa) {
            return Err(Error::invalid(
                "kappa",
                self.kappa.unwrap_or(0.0),
                "and --singular-values both set the target's spectrum: give one",
            ));
        }
        if let (Some(size), Some(model)) = (self.perturbation_size, self.perturbation) {
            if !matches!(
                model,
                PerturbationModel::Relative | PerturbationModel::Absolute
            ) {
                return Err(Error::invalid(
                    "perturbation_size",
                    size,
                    format!(
                        "sizes the `relative` and `absolute` perturbations; `{}` has no size",
                        model.name()
                    ),
                ));
            }
        }
        if let (Some(size), None) = (self.perturbation_size, self.perturbation) {
            return Err(Error::invalid(
                "perturbation_size",
                size,
                "sizes the perturbation E of --perturbation, which is not given: add \
                 --perturbation relative (or absolute), or drop --perturbation-size",
            ));
        }
        if let Some(scale) = self.error_scale {
            if !cfg.uses_dop853() {
                return Err(Error::invalid(
                    "error_scale",
                    scale.name(),
                    format!(
                        "weighs DOP853's errors, and method {} at rtol {:e} does not use DOP853 \
                         (dop853 does, and auto below rtol 1e-6)",
                        cfg.method.name(),
                        cfg.rtol
                    ),
                ));
            }
        }
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
        let top_level_table_key = |table: &str, keys: &[&str]| {
            let k = key.as_deref()?;
            keys.contains(&k).then(|| {
                format!("; `{k}` is a key of the [{table}] table: put it under a line `[{table}]`")
            })
        };
        let hint = match keys {
            KNOWN_KEYS => top_level_table_key("sweep", SWEEP_KEYS)
                .or_else(|| top_level_table_key("check", CHECK_KEYS))
                .unwrap_or_else(|| unknown_key_hint(&msg, keys)),
            _ => unknown_key_hint(&msg, keys),
        };
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

keys! {
    /// Options of `gdflow sweep` beyond the problem's; in a TOML file they sit in a `[sweep]` table.
    #[derive(Debug, Clone, Default, Serialize, Deserialize)]
    #[cfg_attr(feature = "cli", derive(clap::Args))]
    #[serde(deny_unknown_fields)]
    pub struct SweepArgs / SWEEP_KEYS => SweepArgs {
        /// Step sizes, comma-separated [default: --eta-range 0.01/σ_1:0.2/σ_1:6]
        #[cfg_attr(
            feature = "cli",
            arg(
                long,
                value_delimiter = ',',
                conflicts_with = "eta_range",
                allow_hyphen_values = true
            )
        )]
        pub etas: Option<Vec<f64>>,
        /// Geometric range of step sizes MIN:MAX:COUNT (both ends included)
        #[cfg_attr(
            feature = "cli",
            arg(long, value_name = "MIN:MAX:COUNT", allow_hyphen_values = true)
        )]
        pub eta_range: Option<String>,
        /// Time horizon T: GD runs jη ≤ T [default: 1.5·ln(σ_r/α²)/σ_r, three times the time σ_r
        /// takes to be half learned from the start's scale (MATH §4)]
        #[cfg_attr(
            feature = "cli",
            arg(long, value_name = "T", allow_hyphen_values = true)
        )]
        pub horizon: Option<f64>,
        /// Relative error ε whose first-passage time t_ε is reported [default: 1e-2]
        #[cfg_attr(feature = "cli", arg(long, allow_hyphen_values = true))]
        pub epsilon: Option<f64>,
        /// GD steps per trial of the stability-limit bisection; 0 skips it [default: 1000, or
        /// T/η if larger]
        #[cfg_attr(feature = "cli", arg(long))]
        pub stability_steps: Option<usize>,
        /// A trial converges when its final loss is ≤ this fraction of the initial loss
        /// [default: 1e-4]
        #[cfg_attr(feature = "cli", arg(long, allow_hyphen_values = true))]
        pub stability_tol: Option<f64>,
        /// Rows of deviation.csv per step size at most (evenly spaced steps, the last included);
        /// maxima are always taken over every step [default: 1000]
        #[cfg_attr(feature = "cli", arg(long))]
        pub max_rows: Option<usize>,
        /// Run part i of N disjoint parts of the sweep (η number i, i+N, … of the list);
        /// `gdflow merge` combines the parts' directories. `auto` reads i and N from a SLURM or
        /// SGE array job; `auto/N` takes the index of a PBS or Kubernetes indexed job (mod N)
        #[cfg_attr(feature = "cli", arg(long, value_name = "i/N|auto|auto/N"))]
        pub shard: Option<String>,
        /// Also find the largest η whose max_j ‖X_j − X(jη)‖/‖X*‖ against the plain flow stays
        /// ≤ this (0.01: within 1% of ‖X*‖), by bisection in log η to 1% from the sweep's bracket
        #[cfg_attr(
            feature = "cli",
            arg(long, value_name = "δ", allow_hyphen_values = true)
        )]
        pub target_deviation: Option<f64>,
    }
}

keys! {
    /// Constants of the predictions `gdflow check` tests; in a TOML file they sit in a `[check]`
    /// table.
    #[derive(Debug, Clone, Default, Serialize, Deserialize)]
    #[cfg_attr(feature = "cli", derive(clap::Args))]
    #[serde(deny_unknown_fields)]
    pub struct CheckArgs / CHECK_KEYS => CheckArgs {
        /// c in max_t ‖D(t) − D(0)‖ ≤ c·rtol·‖X*‖ for the flow [default: 1000]
        #[cfg_attr(feature = "cli", arg(long, allow_hyphen_values = true))]
        pub drift_c: Option<f64> = |_| 1e3; check checks::positive_finite,
        /// Relative tolerance of GD's drift identity [default: 1e-8]
        #[cfg_attr(feature = "cli", arg(long, allow_hyphen_values = true))]
        pub identity_tol: Option<f64> = |_| 1e-8; check checks::positive_finite,
        /// Allowed |order − 1| of GD against the flow [default: 0.15]
        #[cfg_attr(feature = "cli", arg(long, allow_hyphen_values = true))]
        pub order_tol: Option<f64> = |_| 0.15; check checks::positive_finite,
        /// Allowed relative deviation of the slope of t_ε against ln(1/α) from its spectral
        /// prediction 1/σ_r(𝒜*y) [default: 0.15]
        #[cfg_attr(feature = "cli", arg(long, allow_hyphen_values = true))]
        pub slope_tol: Option<f64> = |_| 0.15; check checks::positive_finite,
        /// Allowed relative deviation of each learning time from ln(σ_i/α² − 1)/(2σ_i)
        /// [default: 0.02]
        #[cfg_attr(feature = "cli", arg(long, allow_hyphen_values = true))]
        pub incremental_tol: Option<f64> = |_| 0.02; check checks::positive_finite,
        /// Relative error ε of the convergence times t_ε [default: 0.1]
        #[cfg_attr(
            feature = "cli",
            arg(long = "check-epsilon", allow_hyphen_values = true)
        )]
        pub epsilon: Option<f64> = |_| 0.1; check |_, v| checks::in_unit_interval("check_epsilon", v),
        /// Bound on the empirical RIP constant δ̂ (reported only when not given)
        #[cfg_attr(feature = "cli", arg(long, allow_hyphen_values = true))]
        pub rip_bound: Option<f64>; check checks::positive_finite,
        /// Bound on max ρ(t) along the flow (reported only when not given)
        #[cfg_attr(feature = "cli", arg(long, allow_hyphen_values = true))]
        pub rho_bound: Option<f64>; check checks::positive_finite,
        /// ‖sin Θ‖ below which the alignment phase counts as over [default: 0.1]
        #[cfg_attr(feature = "cli", arg(long, allow_hyphen_values = true))]
        pub alignment_tol: Option<f64> = |_| 0.1; check checks::in_unit_interval,
        /// Past the stability limit (η·λ_max > 2 where the flow ends): allowed relative deviation
        /// of the sharpness at GD's two-step average from 2/η [default: 0.05]
        #[cfg_attr(feature = "cli", arg(long, allow_hyphen_values = true))]
        pub eos_sharpness_tol: Option<f64> = |_| 0.05; check checks::positive_finite,
        /// Past the stability limit: allowed relative deviation of the central flow's predicted
        /// loss f + tr Σ/η from GD's time-averaged loss [default: 0.2]
        #[cfg_attr(feature = "cli", arg(long, allow_hyphen_values = true))]
        pub eos_loss_tol: Option<f64> = |_| 0.2; check checks::positive_finite,
    }
}

impl CheckArgs {
    pub fn overlaid_by(self, top: &CheckArgs) -> Self {
        self.overlay_keys(top)
    }
}

impl SweepArgs {
    /// `self` overlaid by every key `top` sets; the step sizes as one key (`etas` or
    /// `eta_range`, whichever `top` gives, replaces both).
    pub fn overlaid_by(self, top: &SweepArgs) -> Self {
        let mut out = self.overlay_keys(top);
        if top.etas.is_some() || top.eta_range.is_some() {
            out.etas = top.etas.clone();
            out.eta_range = top.eta_range.clone();
        }
        out
    }
}

/// At least this many records of each dynamics (fewer than twice as many) carry the spectral
/// columns by default, every record of a shorter run: a figure's worth of points, while the
/// spectral work (on the default problem ~55 µs a record against ~65 µs for a pass over the
/// sensing matrix) stays a small part of a run.
pub const SPECTRAL_ROWS: usize = 100;

/// "MIN:MAX:COUNT" → COUNT geometrically spaced values from MIN to MAX.
/// A sweep takes at most this many step sizes (each is a GD run and a modified flow).
pub const MAX_STEP_SIZES: usize = 10_000;

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
    if count > MAX_STEP_SIZES {
        return Err(bad(&format!(
            "COUNT must be <= {MAX_STEP_SIZES} step sizes (split a larger study with --shard)"
        )));
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

fn unknown_key_hint(msg: &str, known: &[&str]) -> String {
    let Some(start) = msg.find("unknown field `") else {
        return String::new();
    };
    let rest = &msg[start + "unknown field `".len()..];
    let key = rest.split('`').next().unwrap_or("");
    closest_key(key, known)
        .map(|k| format!("; did you mean `{k}`?"))
        .unwrap_or_default()
}

/// The key of `known` closest to a misspelt `key` (at most three edits away).
pub fn closest_key<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (strsim_distance(key, k), *k))
        .filter(|(d, _)| *d <= 3)
        .min()
        .map(|(_, k)| k)
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
