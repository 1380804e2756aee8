//! The one way into every experiment: resolve the configuration, refuse what the command
//! cannot use, check the output paths, build or load the problem (checking every option a
//! loaded file overrides against the file), check memory and horizon, save the problem if
//! asked — all before any expensive work — and build the field the configuration describes.

use std::sync::Arc;
use std::time::Instant;

use crate::config::{Config, ConfigArgs, FlowVariant, OperatorKind};
use crate::dynamics::optimizer::{Context, Optimizer};
use crate::error::{Error, Result};
use crate::field::{Field, Modified, Perturbation, Perturbed, SensingField};
use crate::problem::{Problem, ProblemSource};
use crate::results::Provenance;

/// The command a configuration is set up for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Run,
    Sweep,
    Check,
}

impl Command {
    pub fn name(self) -> &'static str {
        match self {
            Command::Run => "run",
            Command::Sweep => "sweep",
            Command::Check => "check",
        }
    }

    /// The configuration keys the command has no use for, each with what to do instead:
    /// hidden from its help, and refused when given — never recorded as if they had acted.
    fn refusals(self) -> &'static [(&'static str, &'static str)] {
        const STATES: &str = "states are kept by `gdflow run`";
        match self {
            Command::Run => &[],
            Command::Sweep => &[
                ("eta", "use --etas or --eta-range"),
                ("steps", "use --horizon"),
                ("record_every", "use --max-rows"),
                (
                    "flow",
                    "a sweep compares with the plain, modified and central flows",
                ),
                (
                    "sharpness_every",
                    "a sweep measures the sharpness at the end of its reference flow",
                ),
                ("save_states", STATES),
                (
                    "spectrum_every",
                    "a sweep records no spectral columns (deviation.csv holds distances)",
                ),
            ],
            Command::Check => &[
                (
                    "flow",
                    "the checks are predictions about the plain gradient flow (its conservation \
                     law, GD's order against it)",
                ),
                ("save_states", STATES),
                ("replicas", "the checks are GD's, which is deterministic"),
                ("talay_tubaro", "the checks are GD's, which has no SME"),
                (
                    "vary",
                    "the checks are of one start (give --seed to change it)",
                ),
                (
                    "spectrum_every",
                    "the checks read the phases and the bound on ρ from every record",
                ),
            ],
        }
    }

    /// The configuration keys the command refuses (hidden from its help).
    pub fn refused_keys(self) -> Vec<&'static str> {
        self.refusals().iter().map(|(key, _)| *key).collect()
    }

    /// The first key `args` sets that the command refuses, with what to do instead.
    fn refused(self, args: &ConfigArgs) -> Option<(&'static str, &'static str)> {
        self.refusals()
            .iter()
            .find(|(key, _)| args.is_set(key))
            .copied()
    }
}

/// The files the commands write into `--out`.
pub const OUTPUT_FILES: [&str; 10] = [
    "summary.json",
    "weak_error.csv",
    "trajectory.csv",
    "ensemble.csv",
    "ensemble_blocks.csv",
    "states.npz",
    "config.toml",
    "sweep.csv",
    "deviation.csv",
    "checks.csv",
];

/// Whether `path` is a file the commands would write into `dir` (one of [`OUTPUT_FILES`]
/// there): what an input or another output must never be.
pub fn is_output_in(path: &std::path::Path, dir: &std::path::Path) -> bool {
    path.parent()
        .is_some_and(|d| d == dir || crate::output::same_file(d, dir))
        && OUTPUT_FILES
            .iter()
            .any(|f| path.file_name() == Some(f.as_ref()))
}

/// A resolved configuration and its problem, ready for an experiment.
#[derive(Clone)]
pub struct Setup {
    pub config: Config,
    pub problem: Problem,
    /// Configuration keys whose values came from the problem file.
    pub from_file: Vec<String>,
    /// Wall-clock seconds spent building or loading (and saving) the problem.
    pub seconds: f64,
    /// What the user should know about the set-up (printed, and kept in every summary's
    /// `warnings`): options that are legal but act on nothing here.
    pub warnings: Vec<String>,
    /// Whether atol was given (it then scales with α in [`Setup::with_alpha`]; otherwise it is
    /// the default rtol·α/√k there too).
    atol_given: bool,
    /// An optimiser from outside the registry ([`Setup::with_optimizer`]).
    custom_optimizer: Option<Arc<dyn Optimizer>>,
    /// The claim on `--out` while this set-up lives.
    out_lock: Option<Arc<crate::output::OutLock>>,
}

/// Relative agreement asked of a given value with the file's.
const FILE_TOL: f64 = 1e-9;

fn agrees(a: f64, b: f64) -> bool {
    (a - b).abs() <= FILE_TOL * a.abs().max(b.abs())
}

impl Setup {
    /// Everything before the experiment proper: see the module documentation. `force` lets
    /// `--out` name a directory that already holds files.
    pub fn new(args: &ConfigArgs, command: Command, force: bool) -> Result<Self> {
        Self::new_from(args, command, force, None)
    }

    /// [`Setup::new`] with the problem file's bytes in memory (`label` names it in errors and
    /// provenance): read exactly as `--problem FILE` would read that file.
    pub fn with_problem_bytes(
        args: &ConfigArgs,
        command: Command,
        npz: &[u8],
        label: &str,
    ) -> Result<Self> {
        if args.problem.is_some() {
            return Err(Error::invalid(
                "problem",
                "given",
                "and a problem in memory: give one of them",
            ));
        }
        Self::new_from(args, command, false, Some((npz, label)))
    }

    fn new_from(
        args: &ConfigArgs,
        command: Command,
        force: bool,
        npz: Option<(&[u8], &str)>,
    ) -> Result<Self> {
        let start = Instant::now();
        if let Some((field, why)) = command.refused(args) {
            return Err(Error::invalid(
                field,
                given_value(args, field),
                format!("is not an option of `gdflow {}`: {why}", command.name()),
            ));
        }
        let mut cfg = args.resolve()?;
        // a field that reads no sensing operator: its keys would act on nothing (`check`'s
        // RIP row still measures 𝒜)
        if let Some(model) = args.perturbation.filter(|m| !m.uses_sensing()) {
            let sensing = ["measurements", "operator", "sensing_precision", "noise"];
            if let Some(key) = sensing.iter().find(|k| args.is_set(k)) {
                if command != Command::Check {
                    return Err(Error::invalid(
                        key,
                        given_value(args, key),
                        format!(
                            "acts on the sensing operator 𝒜 and y, which the `{}` perturbation \
                             ({}) does not read: drop --{}, or use --perturbation sensing or \
                             noise",
                            model.name(),
                            model.description(),
                            key.replace('_', "-")
                        ),
                    ));
                }
            }
        }
        if command != Command::Run {
            // refused above: a check reads ρ's maximum and the phases from every record, a
            // sweep records no spectral columns
            cfg.spectrum_every = 1;
        }
        if let Some(dir) = &cfg.out {
            crate::output::check_out_dir(dir, force)?;
        }
        // from here until the outputs are written no other gdflow writes into --out
        let out_lock = cfg
            .out
            .as_deref()
            .map(crate::output::OutLock::take)
            .transpose()?
            .map(Arc::new);
        check_paths(&cfg, force)?;
        let (problem, from_file) = match cfg.problem.clone() {
            None if npz.is_some() => {
                let (bytes, label) = npz.expect("matched");
                let problem = Problem::load_npz_from(
                    std::io::Cursor::new(bytes),
                    std::path::Path::new(label),
                    &cfg.problem_spec(),
                )?;
                let from_file = adopt_file(args, &mut cfg, &problem)?;
                cfg.validate_sizes()?;
                (problem, from_file)
            }
            None => (Problem::generate(&cfg.problem_spec())?, Vec::new()),
            Some(path) => {
                let problem = Problem::load_npz(&path, &cfg.problem_spec())?;
                // recorded as an absolute path, so that config.toml re-runs from anywhere
                if let Ok(abs) = std::fs::canonicalize(&path) {
                    cfg.problem = Some(abs);
                }
                let from_file = adopt_file(args, &mut cfg, &problem)?;
                cfg.validate_sizes()?;
                (problem, from_file)
            }
        };
        if let Some(path) = &cfg.save_problem {
            problem.save_npz(path)?;
        }
        let mut setup = Self {
            warnings: Vec::new(),
            config: cfg,
            problem,
            from_file,
            seconds: start.elapsed().as_secs_f64(),
            atol_given: args.atol.is_some(),
            custom_optimizer: None,
            out_lock,
        };
        // the seed also draws a stochastic method's noise and the starts of --vary start
        let draws =
            setup.config.vary.is_some() || setup.optimizer().map_or(true, |o| o.is_stochastic());
        if !draws {
            let warning = seed_warning(args, &setup.config, &setup.problem, &setup.from_file);
            setup.warnings.extend(warning);
        }
        Ok(setup)
    }

    /// A set-up for a problem built in code (a custom operator, a closed form): `config`
    /// supplies what the problem does not (η, steps, solver, perturbation, seed…); the sizes,
    /// the target and α come from the problem.
    pub fn from_problem(mut config: Config, problem: Problem) -> Result<Self> {
        let sv = problem.target_sv.clone();
        if sv.is_empty() {
            return Err(Error::invalid(
                "problem",
                "x_star = 0",
                "the target must have rank >= 1",
            ));
        }
        config.n1 = problem.n1();
        config.n2 = problem.n2();
        config.measurements = problem.m();
        config.width = problem.width();
        config.rank = sv.len();
        config.kappa = sv[0] / sv[sv.len() - 1];
        config.singular_values = Some(sv);
        config.profile = None;
        config.symmetric = problem.symmetric;
        config.alpha = problem.start_scale();
        config.problem = None;
        config.operator = OperatorKind::Gaussian;
        config.validate_values()?;
        config.validate_sizes()?;
        config.operator = OperatorKind::Custom;
        Ok(Self {
            config,
            problem,
            from_file: Vec::new(),
            warnings: Vec::new(),
            seconds: 0.0,
            atol_given: true,
            custom_optimizer: None,
            out_lock: None,
        })
    }

    /// The optimiser the experiments compare with its limits: the configured one, or the
    /// one given to [`Setup::with_optimizer`].
    pub fn optimizer(&self) -> Result<Arc<dyn Optimizer>> {
        match &self.custom_optimizer {
            Some(o) => Ok(o.clone()),
            None => self.config.optimizer_for(&self.optimizer_context()),
        }
    }

    /// What the optimiser's defaults and warnings depend on: the target's scale and η.
    pub fn optimizer_context(&self) -> Context {
        let sv = &self.problem.target_sv;
        Context {
            sigma_r: sv.last().copied().unwrap_or(1.0),
            sigma_1: sv.first().copied().unwrap_or(1.0),
            eta: self.config.eta,
            m: self.problem.m(),
            seed: self.config.seed,
            replicas: self.config.replicas,
        }
    }

    /// The same set-up with an optimiser of your own (one the registry does not know): its
    /// name is recorded as the configuration's `optimizer`, its parameters in the summary.
    pub fn with_optimizer(mut self, optimizer: Arc<dyn Optimizer>) -> Result<Self> {
        if !optimizer.limits().contains(&self.config.flow) {
            return Err(Error::invalid(
                "flow",
                self.config.flow.name(),
                format!("{} has no such limit", optimizer.name()),
            ));
        }
        self.config.optimizer = optimizer.name();
        self.custom_optimizer = Some(optimizer);
        Ok(self)
    }

    /// The start (vec U_0, vec V_0).
    pub fn start(&self) -> Vec<f64> {
        self.problem.start_state()
    }

    /// The field the configuration describes: the sensing field (symmetric when asked), or
    /// the perturbed flow of `--perturbation` around it. GD and every flow run on it.
    pub fn field(&self) -> Arc<dyn Field> {
        let plain = SensingField::from_problem(&self.problem);
        match self.config.perturbation {
            None => Arc::new(plain),
            Some(model) => Arc::new(Perturbed::new(
                plain,
                Perturbation::new(
                    model,
                    self.config.perturbation_size,
                    &self.problem,
                    self.config.seed,
                ),
            )),
        }
    }

    /// The field of the flow GD at step `eta` is compared with.
    pub fn flow_field(&self, variant: FlowVariant, eta: f64) -> Arc<dyn Field> {
        match variant {
            FlowVariant::Plain => self.field(),
            FlowVariant::Modified | FlowVariant::Sme2 => Arc::new(Modified::new(self.field(), eta)),
            // the central flow is solved by its own driver around the plain field, and the
            // SME-1's drift is the plain field
            FlowVariant::Central | FlowVariant::Sme1 => self.field(),
        }
    }

    /// The provenance every summary starts with.
    pub fn provenance(&self) -> Provenance<Config> {
        Provenance::new(
            self.config.seed,
            self.config.clone(),
            self.from_file.clone(),
        )
    }

    /// The same problem and settings with the central flow as the flow, the sharpness at every
    /// record; `None` when the field is not a gradient (the central flow is not defined).
    pub fn with_central_flow(&self) -> Option<Setup> {
        if self.config.perturbation.is_some_and(|m| !m.is_gradient()) {
            return None;
        }
        let mut s = self.clone();
        s.config.flow = FlowVariant::Central;
        s.config.sharpness_every = s.config.sharpness_every.max(1);
        s.seconds = 0.0;
        Some(s)
    }

    /// The same set-up compared with the plain flow: the reference a central-flow run is
    /// judged against.
    pub fn with_plain_flow(&self) -> Setup {
        let mut s = self.clone();
        s.config.flow = FlowVariant::Plain;
        s.config.save_states = false;
        s.seconds = 0.0;
        s
    }

    /// The same problem with its start at scale `alpha`: regenerated (the operator, target and
    /// start direction have seed streams of their own, so only the scale changes), or for a
    /// loaded problem its start scaled by alpha/α. The default atol follows the new scale.
    pub fn with_alpha(&self, alpha: f64) -> Result<Setup> {
        let mut c = self.config.clone();
        let old = c.alpha;
        c.alpha = alpha;
        c.atol = if self.atol_given {
            c.atol * alpha / old
        } else {
            c.rtol * alpha / (c.width as f64).sqrt()
        };
        let problem = match &self.problem.source {
            ProblemSource::File { .. } => {
                let mut p = self.problem.clone();
                p.u0 *= alpha / old;
                p.v0 *= alpha / old;
                p
            }
            ProblemSource::Generated => Problem::generate(&c.problem_spec())?,
        };
        Ok(Setup {
            config: c,
            problem,
            from_file: self.from_file.clone(),
            warnings: self.warnings.clone(),
            seconds: 0.0,
            atol_given: self.atol_given,
            custom_optimizer: self.custom_optimizer.clone(),
            out_lock: self.out_lock.clone(),
        })
    }
}

/// The problem file is readable; `--save-problem` is neither the problem file nor one of the
/// outputs, and is not written over without `--force`; `--out` does not hold the problem file.
fn check_paths(cfg: &Config, force: bool) -> Result<()> {
    if let Some(path) = &cfg.problem {
        crate::output::check_input_file("problem", path)?;
    }
    if let Some(path) = &cfg.save_problem {
        if cfg
            .problem
            .as_ref()
            .is_some_and(|p| crate::output::same_file(p, path))
        {
            return Err(Error::invalid(
                "save_problem",
                path.display(),
                "is the --problem file this run reads: never written over, even with --force",
            ));
        }
        if cfg.out.as_ref().is_some_and(|dir| is_output_in(path, dir)) {
            return Err(Error::invalid(
                "save_problem",
                path.display(),
                "is one of the files written into --out: choose another name",
            ));
        }
        crate::output::check_file_target("save_problem", path, force)?;
    }
    if let (Some(dir), Some(input)) = (&cfg.out, &cfg.problem) {
        if is_output_in(input, dir) {
            return Err(Error::invalid(
                "out",
                dir.display(),
                format!(
                    "holds the --problem file {}, which the outputs would replace",
                    input.display()
                ),
            ));
        }
    }
    Ok(())
}

/// The value `args` gives `key`, in its TOML form (for a message that names it).
fn given_value(args: &ConfigArgs, key: &str) -> String {
    toml::Table::try_from(args)
        .ok()
        .and_then(|t| t.get(key).map(|v| v.to_string()))
        .unwrap_or_else(|| "given".into())
}

/// `--seed` given where nothing is drawn: the problem file holds y and the start (and no
/// seeded perturbation is asked for; the caller knows whether the method draws).
fn seed_warning(
    args: &ConfigArgs,
    cfg: &Config,
    problem: &Problem,
    from_file: &[String],
) -> Option<String> {
    if let ProblemSource::File {
        has_y: true,
        has_u0: true,
        ..
    } = &problem.source
    {
        let seeded = cfg.perturbation.is_some_and(|m| {
            matches!(
                m,
                crate::field::PerturbationModel::Relative
                    | crate::field::PerturbationModel::Absolute
            )
        });
        if args.seed.is_some() && !seeded && from_file.iter().any(|k| k == "alpha") {
            return Some(format!(
                "--seed {} acts on nothing here: the problem file holds y and the start, so \
                 nothing is drawn at random",
                cfg.seed
            ));
        }
    }
    None
}

/// Check every given option a problem file fixes against the file, refuse those it makes
/// meaningless, and fill the configuration from it. Returns the keys that came from it.
fn adopt_file(args: &ConfigArgs, cfg: &mut Config, problem: &Problem) -> Result<Vec<String>> {
    let ProblemSource::File {
        path,
        has_y,
        has_u0,
        has_v0,
    } = &problem.source
    else {
        unreachable!("loaded from a file")
    };
    let start_in_file = *has_u0 && (*has_v0 || problem.symmetric);
    check_against_file(args, problem, path, *has_u0 || *has_v0)?;
    refuse_what_the_file_fixes(args, path, *has_y, start_in_file)?;
    let sv = &problem.target_sv;
    let kappa = sv[0] / sv[sv.len() - 1];
    let mut from_file: Vec<String> = [
        "n1",
        "n2",
        "rank",
        "measurements",
        "singular_values",
        "kappa",
        "operator",
        "profile",
    ]
    .map(String::from)
    .to_vec();
    cfg.n1 = problem.n1();
    cfg.n2 = problem.n2();
    cfg.measurements = problem.m();
    cfg.width = problem.width();
    cfg.rank = sv.len();
    cfg.singular_values = Some(sv.clone());
    cfg.kappa = kappa;
    cfg.profile = None;
    cfg.operator = OperatorKind::File;
    if *has_y {
        from_file.push("noise".into());
    }
    if *has_u0 || *has_v0 {
        from_file.push("width".into());
    }
    if start_in_file {
        // α is the file's (its `alpha` array, or what its start measures)
        cfg.alpha = problem.start_scale();
        from_file.push("alpha".into());
    }
    if args.atol.is_none() {
        // below the smallest start scale in play, whatever the file holds (MATH §7)
        let scale = cfg.alpha.min(problem.start_scale());
        cfg.atol = cfg.rtol * scale / (cfg.width as f64).sqrt();
    }
    Ok(from_file)
}

/// Every given size and target option against the file's: one that agrees is accepted (so a
/// re-run from config.toml works), one that does not is an error naming the file's value.
fn check_against_file(
    args: &ConfigArgs,
    problem: &Problem,
    path: &std::path::Path,
    has_start: bool,
) -> Result<()> {
    let shown = path.display();
    let file_has = |what: &str| format!("the problem file {shown} has {what}");
    if problem.target_sv.is_empty() {
        return Err(Error::npz(
            path,
            "`x_star` is zero: the target must have rank >= 1",
        ));
    }
    let sv = &problem.target_sv;
    let kappa = sv[0] / sv[sv.len() - 1];
    let sizes = [
        ("n1", args.n1, problem.n1()),
        ("n2", args.n2, problem.n2()),
        ("measurements", args.measurements, problem.m()),
        ("rank", args.rank, sv.len()),
    ];
    for (field, given, actual) in sizes {
        if let Some(g) = given.filter(|&g| g != actual) {
            return Err(Error::invalid(
                field,
                g,
                file_has(&format!("{field} = {actual}")),
            ));
        }
    }
    if let Some(g) = args.width.filter(|&g| g != problem.width() && has_start) {
        return Err(Error::invalid(
            "width",
            g,
            file_has(&format!("start factors of width k = {}", problem.width())),
        ));
    }
    if let Some(given) = &args.singular_values {
        let mut given = given.clone();
        given.sort_by(|a, b| b.total_cmp(a));
        if given.len() != sv.len() || given.iter().zip(sv).any(|(a, b)| !agrees(*a, *b)) {
            return Err(Error::invalid(
                "singular_values",
                format!("{given:?}"),
                file_has(&format!("a target with singular values {sv:?}")),
            ));
        }
    }
    if let Some(g) = args.kappa.filter(|&g| !agrees(g, kappa)) {
        return Err(Error::invalid(
            "kappa",
            g,
            file_has(&format!("a target with κ = σ_1/σ_r = {kappa}")),
        ));
    }
    Ok(())
}

/// Options the file makes meaningless, refused rather than silently ignored.
fn refuse_what_the_file_fixes(
    args: &ConfigArgs,
    path: &std::path::Path,
    has_y: bool,
    start_in_file: bool,
) -> Result<()> {
    let shown = path.display();
    let file_has = |what: &str| format!("the problem file {shown} has {what}");
    let refuse = |field: &str, value: String, why: String| Err(Error::invalid(field, value, why));
    if let Some(p) = args.profile {
        return refuse(
            "profile",
            p.name().into(),
            format!("has no effect: {}", file_has("its own target `x_star`")),
        );
    }
    if let Some(op) = args.operator.filter(|&o| o != OperatorKind::File) {
        return refuse(
            "operator",
            op.name().into(),
            format!("has no effect: {}", file_has("its own operator `sensing`")),
        );
    }
    if let (Some(s), true) = (args.noise, has_y) {
        return refuse(
            "noise",
            s.to_string(),
            format!(
                "has no effect: {}; noise is added only when y is generated",
                file_has("its own observations `y`")
            ),
        );
    }
    if let (Some(a), true) = (args.alpha, start_in_file) {
        return refuse(
            "alpha",
            a.to_string(),
            format!(
                "has no effect: {}; α sets the scale of a generated start",
                file_has("its own start `u0`, `v0`")
            ),
        );
    }
    Ok(())
}
