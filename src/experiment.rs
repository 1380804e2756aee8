//! `gdflow run`: GD and the gradient flow on one problem, compared point by point at t = jη.

use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::config::{Config, ConfigArgs, FlowVariant};
use crate::error::{Error, Result};
use crate::field::VectorField;
use crate::flow::{solve_flow_with, FlowOptions, SolverStats};
use crate::gd::{gradient_descent_with, GdOptions, Status, Trajectory};
use crate::operator::OperatorCounts;
use crate::output::num;
use crate::problem::Problem;
use crate::record::{Record, Recorder};

/// Where a problem came from and what it is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProblemInfo {
    /// "generated" or the path of the `.npz` file.
    pub source: String,
    pub operator: String,
    pub n1: usize,
    pub n2: usize,
    pub rank: usize,
    pub width: usize,
    pub measurements: usize,
    pub target_singular_values: Vec<f64>,
    pub target_norm: f64,
    /// For an f64 problem file run with `--sensing-precision f32`: the relative change of
    /// 𝒜(X*) that rounding the entries made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub f32_change_of_y: Option<f64>,
}

impl ProblemInfo {
    /// "gaussian operator, n1=30 n2=25 r=3 k=6 m=600": the first line of every report.
    pub fn headline(&self) -> String {
        format!(
            "{} operator, n1={} n2={} r={} k={} m={}",
            self.operator, self.n1, self.n2, self.rank, self.width, self.measurements
        )
    }

    pub fn new(cfg: &Config, problem: &Problem) -> Self {
        Self {
            source: cfg
                .problem
                .as_ref()
                .map_or("generated".to_string(), |p| p.display().to_string()),
            operator: problem.op.name().to_string(),
            n1: problem.n1(),
            n2: problem.n2(),
            rank: problem.target_sv.len(),
            width: problem.width(),
            measurements: problem.m(),
            target_singular_values: problem.target_sv.clone(),
            target_norm: problem.x_star.norm(),
            f32_change_of_y: problem.f32_change_of_y,
        }
    }
}

/// The end of one dynamics.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DynamicsSummary {
    #[serde(flatten)]
    pub status: Status,
    /// The last recorded time and its quantities.
    pub final_t: f64,
    pub final_loss: f64,
    pub final_rel_error: f64,
    pub final_balance_drift: f64,
    pub max_balance_drift: f64,
}

/// max_j ‖U_jV_jᵀ − U(jη)V(jη)ᵀ‖_F over the recorded steps both dynamics reached.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Distance {
    pub max: f64,
    /// `max` divided by ‖X*‖_F.
    pub max_relative: f64,
    pub step: usize,
    pub t: f64,
    pub final_distance: f64,
}

/// Wall-clock seconds, kept apart from the results so that those are reproducible byte for byte.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Timings {
    pub problem_seconds: f64,
    pub gd_seconds: f64,
    pub flow_seconds: f64,
    pub total_seconds: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunSummary {
    pub crate_name: String,
    pub crate_version: String,
    pub seed: u64,
    pub config: Config,
    /// Allowed but suspicious settings (also printed on stderr).
    pub warnings: Vec<String>,
    pub problem: ProblemInfo,
    pub gd: DynamicsSummary,
    pub flow: DynamicsSummary,
    pub distance: Option<Distance>,
    pub solver: SolverStats,
    /// Operator applications over the whole run (GD, flow, recording).
    pub operator_counts: OperatorCounts,
    pub timings: Timings,
}

/// Everything a run produces.
#[derive(Debug, Clone)]
pub struct RunResult {
    pub summary: RunSummary,
    pub gd: Vec<Record>,
    pub flow: Vec<Record>,
}

/// Resolve the configuration and build (or load) its problem. Dimensions come from the file
/// when one is given; an explicitly set dimension that disagrees with it is an error.
pub fn prepare(args: &ConfigArgs) -> Result<(Config, Problem)> {
    let mut cfg = args.resolve()?;
    let Some(path) = cfg.problem.clone() else {
        let problem = Problem::generate(&cfg)?;
        return Ok((cfg, problem));
    };
    let problem = Problem::load_npz(&path, &cfg)?;
    let from_file = [
        ("n1", args.n1, problem.n1()),
        ("n2", args.n2, problem.n2()),
        ("measurements", args.measurements, problem.m()),
        ("width", args.width, problem.width()),
        ("rank", args.rank, problem.target_sv.len()),
    ];
    for (field, given, actual) in from_file {
        if let Some(g) = given {
            if g != actual {
                return Err(Error::invalid(
                    field,
                    g,
                    format!("the problem file {} has {field} = {actual}", path.display()),
                ));
            }
        }
    }
    cfg.n1 = problem.n1();
    cfg.n2 = problem.n2();
    cfg.measurements = problem.m();
    cfg.width = problem.width();
    cfg.rank = problem.target_sv.len();
    if cfg.rank == 0 {
        return Err(Error::npz(
            &path,
            "`x_star` is zero: the target must have rank >= 1",
        ));
    }
    cfg.singular_values = Some(problem.target_sv.clone());
    cfg.kappa = problem.target_sv[0] / problem.target_sv[cfg.rank - 1];
    if args.atol.is_none() {
        cfg.atol = cfg.rtol * cfg.alpha / (cfg.width as f64).sqrt();
    }
    cfg.operator = crate::config::OperatorKind::File;
    Ok((cfg, problem))
}

fn summarise(records: &[Record], status: &Status) -> DynamicsSummary {
    let last = records.last();
    DynamicsSummary {
        status: status.clone(),
        final_t: last.map_or(0.0, |r| r.t),
        final_loss: last.map_or(f64::NAN, |r| r.loss),
        final_rel_error: last.map_or(f64::NAN, |r| r.rel_error),
        final_balance_drift: last.map_or(f64::NAN, |r| r.balance_drift),
        max_balance_drift: records.iter().map(|r| r.balance_drift).fold(0.0, f64::max),
    }
}

fn records_of(recorder: &Recorder, field: &VectorField, traj: &Trajectory) -> Vec<Record> {
    let mut ws = field.workspace();
    traj.states
        .iter()
        .zip(traj.steps.iter().zip(&traj.times))
        .map(|(x, (&s, &t))| recorder.record(s, t, x, &mut ws))
        .collect()
}

/// ‖U_jV_jᵀ − U(t_j)V(t_j)ᵀ‖_F at every step both trajectories recorded.
pub fn distances(field: &VectorField, a: &Trajectory, b: &Trajectory) -> Vec<(usize, f64, f64)> {
    a.steps
        .iter()
        .zip(&a.times)
        .zip(&a.states)
        .zip(b.steps.iter().zip(&b.states))
        .filter(|(((sa, _), _), (sb, _))| sa == sb)
        .map(|(((s, t), xa), (_, xb))| (*s, *t, (field.product(xa) - field.product(xb)).norm()))
        .collect()
}

/// The dynamics a configuration asks for: the sensing field, or a perturbed flow.
pub fn field_of(cfg: &Config, problem: &Problem) -> VectorField {
    let field = VectorField::from_problem(problem);
    match cfg.perturbation {
        None => field,
        Some(model) => field.perturbed(crate::field::Perturbation::new(
            model,
            cfg.perturbation_size,
            problem,
            cfg.seed,
        )),
    }
}

/// Run GD and the flow on a prepared problem; progress bars on stderr when `show_progress`
/// (see [`crate::progress`]).
pub fn run_problem(
    cfg: &Config,
    problem: &Problem,
    problem_seconds: f64,
    show_progress: bool,
) -> Result<RunResult> {
    let start = Instant::now();
    let field = field_of(cfg, problem);
    let x0 = problem.start_state();
    let gd_opts = GdOptions::new(cfg.eta, cfg.steps, cfg.record_every);

    let pass = problem.op.entries_per_pass() as f64;
    let bar = crate::progress::bar(
        show_progress,
        2.0 * pass * cfg.steps as f64,
        cfg.steps as u64,
        "step",
    );
    bar.set_message("GD");
    let t = Instant::now();
    let gd = gradient_descent_with(&field, &x0, &gd_opts, |j, _, _| {
        if j % 64 == 0 {
            bar.set_position(j as u64);
        }
    });
    bar.finish_and_clear();
    let gd_seconds = t.elapsed().as_secs_f64();

    let steps = gd_opts.recorded_steps();
    let times: Vec<f64> = steps.iter().map(|&j| j as f64 * cfg.eta).collect();
    let mut flow_opts = FlowOptions::new(cfg.method, cfg.rtol, cfg.atol);
    if cfg.flow == FlowVariant::Modified {
        flow_opts = flow_opts.modified(cfg.eta);
    }
    let horizon = times.last().copied().unwrap_or(0.0);
    // A Tsit45 step is 6 rhs evaluations; a few hundred steps is typical here.
    let bar = crate::progress::bar(show_progress, 2.0 * pass * 6.0 * 300.0, 1000, "‰ of T");
    bar.set_message(format!("{} flow to T = {horizon}", cfg.method.name()));
    let t = Instant::now();
    let flow = solve_flow_with(&field, &x0, &times, &steps, &flow_opts, &mut |t| {
        if horizon > 0.0 {
            bar.set_position((1000.0 * t / horizon).min(1000.0) as u64);
        }
    });
    bar.finish_and_clear();
    let flow = flow?;
    let flow_seconds = t.elapsed().as_secs_f64();

    let recorder = Recorder::new(&field, &problem.x_star, &x0);
    let gd_records = records_of(&recorder, &field, &gd);
    let flow_records = records_of(&recorder, &field, &flow.trajectory);
    let target_norm = problem.x_star.norm();
    let dist = distances(&field, &gd, &flow.trajectory);
    let distance = dist
        .iter()
        .copied()
        .max_by(|a, b| a.2.total_cmp(&b.2))
        .map(|(step, t, max)| Distance {
            max,
            max_relative: max / target_norm,
            step,
            t,
            final_distance: dist.last().map_or(f64::NAN, |d| d.2),
        });

    let summary = RunSummary {
        crate_name: env!("CARGO_PKG_NAME").to_string(),
        crate_version: env!("CARGO_PKG_VERSION").to_string(),
        seed: cfg.seed,
        config: cfg.clone(),
        warnings: cfg.warnings(),
        problem: ProblemInfo::new(cfg, problem),
        gd: summarise(&gd_records, &gd.status),
        flow: summarise(&flow_records, &flow.trajectory.status),
        distance,
        solver: flow.stats,
        operator_counts: problem.op.counts(),
        timings: Timings {
            problem_seconds,
            gd_seconds,
            flow_seconds,
            total_seconds: problem_seconds + start.elapsed().as_secs_f64(),
        },
    };
    Ok(RunResult {
        summary,
        gd: gd_records,
        flow: flow_records,
    })
}

/// Resolve, prepare, save the problem if asked, and run (no progress bars).
pub fn run(args: &ConfigArgs) -> Result<RunResult> {
    run_with_progress(args, false)
}

/// [`run`] with progress bars on stderr when `show_progress`.
pub fn run_with_progress(args: &ConfigArgs, show_progress: bool) -> Result<RunResult> {
    let t = Instant::now();
    let (cfg, problem) = prepare(args)?;
    if let Some(path) = &cfg.save_problem {
        problem.save_npz(path)?;
    }
    run_problem(&cfg, &problem, t.elapsed().as_secs_f64(), show_progress)
}

/// The columns of `trajectory.csv` after `sv_1..sv_k` (see [`Record`]).
pub const THEORY_COLUMNS: [&str; 7] = [
    "rho",
    "signal_u",
    "signal_v",
    "sin_theta_u",
    "sin_theta_v",
    "spurious_u",
    "spurious_v",
];

/// `trajectory.csv`: one row per output time and dynamics.
pub fn trajectory_csv(result: &RunResult) -> Result<Vec<u8>> {
    let k = result.summary.problem.width;
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut header: Vec<String> = [
        "dynamics",
        "step",
        "t",
        "loss",
        "rel_error",
        "balance_drift",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    header.extend((1..=k).map(|i| format!("sv_{i}")));
    header.extend(THEORY_COLUMNS.iter().map(|s| s.to_string()));
    let csv_err = |e: csv::Error| Error::invalid("trajectory.csv", "csv", e.to_string());
    w.write_record(&header).map_err(csv_err)?;
    for (name, records) in [("gd", &result.gd), ("flow", &result.flow)] {
        for r in records {
            let mut row = vec![
                name.to_string(),
                r.step.to_string(),
                num(r.t),
                num(r.loss),
                num(r.rel_error),
                num(r.balance_drift),
            ];
            row.extend(r.sv.iter().map(|s| num(*s)));
            row.extend(
                [
                    r.rho,
                    r.signal_u,
                    r.signal_v,
                    r.sin_theta_u,
                    r.sin_theta_v,
                    r.spurious_u,
                    r.spurious_v,
                ]
                .map(num),
            );
            w.write_record(&row).map_err(csv_err)?;
        }
    }
    w.into_inner()
        .map_err(|e| Error::invalid("trajectory.csv", "csv", e.to_string()))
}

/// Write `summary.json`, `trajectory.csv` and the resolved `config.toml` into `dir`.
pub fn write_outputs(result: &RunResult, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let csv = trajectory_csv(result)?;
    let json = serde_json::to_vec_pretty(&result.summary)
        .map_err(|e| Error::invalid("summary.json", "json", e.to_string()))?;
    let mut cfg = result.summary.config.clone();
    // A re-run from this file should not overwrite these outputs or the saved problem.
    cfg.out = None;
    cfg.save_problem = None;
    let toml =
        toml::to_string(&cfg).map_err(|e| Error::invalid("config.toml", "toml", e.to_string()))?;
    crate::output::write_bytes(&dir.join("trajectory.csv"), &csv)?;
    crate::output::write_bytes(&dir.join("config.toml"), toml.as_bytes())?;
    crate::output::write_bytes(&dir.join("summary.json"), &json)?;
    Ok(())
}

fn status_line(d: &DynamicsSummary) -> String {
    match &d.status {
        Status::Completed => "completed".to_string(),
        Status::Diverged {
            step,
            t,
            loss,
            last_loss,
        } => format!(
            "DIVERGED at step {step} (t = {t}): loss {loss:e}, last finite loss {last_loss:e}"
        ),
        Status::Failed { t, reason } => format!("FAILED at t = {t}: {reason}"),
    }
}

/// The short readable summary `gdflow run` prints.
pub fn format_summary(s: &RunSummary) -> String {
    let c = &s.config;
    let p = &s.problem;
    let mut out = String::new();
    use std::fmt::Write;
    let _ = writeln!(
        out,
        "gdflow {} — {}, α={:e}, seed={}",
        s.crate_version,
        p.headline(),
        c.alpha,
        s.seed
    );
    let sv: Vec<String> = p
        .target_singular_values
        .iter()
        .map(|v| format!("{v:.4}"))
        .collect();
    let _ = writeln!(out, "target σ: [{}]   problem: {}", sv.join(", "), p.source);
    if c.sensing_precision == crate::operator::Precision::F32 {
        let _ = writeln!(
            out,
            "sensing matrix stored in f32 (products accumulated in f64){}",
            p.f32_change_of_y.map_or(String::new(), |d| format!(
                "; rounding the file's f64 entries changed 𝒜(X*) by {d:.2e} (relative)"
            ))
        );
    }
    if c.symmetric {
        let _ = writeln!(
            out,
            "symmetric PSD case: U' = −GU, f = ¼‖𝒜(UUᵀ) − y‖² (MATH §3)"
        );
    }
    if let Some(model) = c.perturbation {
        let _ = writeln!(
            out,
            "perturbed flow (MATH §5): E = {} (size {}); GD is Euler on it",
            model.name(),
            c.perturbation_size
        );
    }
    let _ = writeln!(
        out,
        "GD: η={} for {} steps (T={});  {} flow: {} rtol={:e} atol={:.3e}",
        c.eta,
        c.steps,
        c.eta * c.steps as f64,
        c.flow.name(),
        c.method.name(),
        c.rtol,
        c.atol
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<6} {:>12} {:>14} {:>14} {:>16}  status",
        "", "t_final", "rel_error", "loss", "balance_drift"
    );
    for (name, d) in [("GD", &s.gd), ("flow", &s.flow)] {
        let _ = writeln!(
            out,
            "{:<6} {:>12.6} {:>14.3e} {:>14.3e} {:>16.3e}  {}",
            name,
            d.final_t,
            d.final_rel_error,
            d.final_loss,
            d.final_balance_drift,
            status_line(d)
        );
    }
    let _ = writeln!(out);
    match &s.distance {
        Some(d) => {
            let _ = writeln!(
                out,
                "max_j ‖U_jV_jᵀ − U(jη)V(jη)ᵀ‖ = {:.4e} ({:.3e} of ‖X*‖) at step {} (t = {:.6}); at the end {:.3e}",
                d.max, d.max_relative, d.step, d.t, d.final_distance
            );
        }
        None => {
            let _ = writeln!(out, "GD-vs-flow distance: no common output times");
        }
    }
    let st = &s.solver;
    let _ = writeln!(
        out,
        "solver {}: {} steps ({} rejected), {} rhs, {} jvp, {} Jacobians, {} LU factorisations",
        st.method,
        st.steps,
        st.rejected_steps,
        st.rhs_evals,
        st.jvp_evals,
        st.jacobian_evals,
        st.lu_factorisations
    );
    if let Some(a) = &st.auto {
        let _ = writeln!(out, "{}", crate::flow::describe_auto(a));
    }
    let tm = &s.timings;
    let _ = writeln!(
        out,
        "wall time: {:.3} s (problem {:.3} s, GD {:.3} s, flow {:.3} s)",
        tm.total_seconds, tm.problem_seconds, tm.gd_seconds, tm.flow_seconds
    );
    out
}
