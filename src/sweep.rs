//! `gdflow sweep`: GD against the gradient flow and against GD's modified flow over a range of
//! step sizes (MATH §2, §6, §7).
//!
//! For each η, GD runs j = 0..J with Jη ≤ T and is compared at every step with
//! - the plain flow at t_j = jη, solved once for all η at the union of their output times, and
//! - the modified flow x' = −∇f̃, f̃ = f + (η/4)‖∇f‖², solved per η.
//!
//! Each flow is solved twice, at (rtol, atol) and 100× tighter; the tighter solve is the
//! reference and the distance between the two is reported beside every deviation as the
//! reference's error (an overestimate: it is essentially the looser solve's error). A
//! deviation not above it is flagged and kept out of the order fits.

use std::path::Path;
use std::time::Instant;

use nalgebra::DMatrix;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::config::{parse_eta_range, Config, ConfigArgs, SweepArgs};
use crate::error::{Error, Result};
use crate::experiment::{prepare, ProblemInfo};
use crate::field::VectorField;
use crate::flow::{solve_flow, FlowOptions, SolverStats};
use crate::gd::{gradient_descent_with, GdOptions, Status};
use crate::operator::OperatorCounts;
use crate::output::num;
use crate::problem::Problem;
use crate::record::balance;
use crate::sharpness::{sharpness, stability_limit, Sharpness, StabilityLimit, StabilityOptions};

/// The reference is solved again with tolerances divided by this to estimate its error.
pub const TIGHTENING: f64 = 100.0;

/// GD runs at most this many steps per step size.
const MAX_STEPS: f64 = 1e8;

/// The resolved sweep options, as recorded in the outputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepSettings {
    /// Ascending, distinct.
    pub etas: Vec<f64>,
    pub horizon: f64,
    pub epsilon: f64,
    /// 0: the stability limit was not searched.
    pub stability_steps: usize,
    pub stability_tol: f64,
    pub max_rows: usize,
    /// Run only part `index` (1-based) of `count` disjoint parts: the η whose position in
    /// `etas` is ≡ index − 1 (mod count). `gdflow merge` combines the parts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<Shard>,
}

/// Written "i/N", as `--shard` takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl From<Shard> for String {
    fn from(s: Shard) -> String {
        format!("{}/{}", s.index, s.count)
    }
}

impl TryFrom<String> for Shard {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        Shard::parse(&s)
    }
}

impl Shard {
    /// "i/N" with 1 ≤ i ≤ N.
    pub fn parse(spec: &str) -> Result<Self> {
        let bad = || Error::invalid("shard", spec, "must be i/N with 1 <= i <= N, e.g. 2/4");
        let (i, n) = spec.split_once('/').ok_or_else(bad)?;
        let index: usize = i.trim().parse().map_err(|_| bad())?;
        let count: usize = n.trim().parse().map_err(|_| bad())?;
        if index == 0 || index > count {
            return Err(bad());
        }
        Ok(Self { index, count })
    }

    /// Whether the η at `position` of the full list belongs to this part.
    pub fn owns(&self, position: usize) -> bool {
        position % self.count == self.index - 1
    }
}

fn settings_check(
    field: &str,
    ok: bool,
    value: impl std::fmt::Display,
    allowed: &str,
) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(field, value, allowed.to_string()))
    }
}

impl SweepSettings {
    /// Defaults depend on the problem: η up to 0.2/σ_1, and T = 1.5·ln(σ_r/α²)/σ_r.
    pub fn resolve(args: &SweepArgs, cfg: &Config, problem: &Problem) -> Result<Self> {
        let s1 = problem.target_sv[0];
        let sr = *problem.target_sv.last().expect("rank >= 1");
        let mut etas = match (&args.etas, &args.eta_range) {
            (Some(_), Some(_)) => {
                return Err(Error::invalid(
                    "etas",
                    "both --etas and --eta-range",
                    "give one of them",
                ))
            }
            (Some(list), None) => list.clone(),
            (None, Some(spec)) => parse_eta_range(spec)?,
            (None, None) => parse_eta_range(&format!("{}:{}:6", 0.01 / s1, 0.2 / s1))?,
        };
        settings_check(
            "etas",
            !etas.is_empty(),
            "[]",
            "must list at least one step size",
        )?;
        for &eta in &etas {
            settings_check(
                "etas",
                eta.is_finite() && eta > 0.0,
                eta,
                "every step size must be finite and > 0",
            )?;
        }
        etas.sort_by(f64::total_cmp);
        etas.dedup();
        let horizon = args
            .horizon
            .unwrap_or_else(|| 1.5 * (sr / (cfg.alpha * cfg.alpha)).ln().max(1.0) / sr);
        settings_check(
            "horizon",
            horizon.is_finite() && horizon > 0.0,
            horizon,
            "must be a finite number > 0",
        )?;
        for &eta in &etas {
            settings_check(
                "etas",
                eta <= horizon,
                eta,
                &format!(
                    "every step size must be <= the horizon T = {horizon} (at least one GD step)"
                ),
            )?;
            settings_check(
                "etas",
                horizon / eta <= MAX_STEPS,
                eta,
                &format!("T/η must be <= {MAX_STEPS:e} GD steps (T = {horizon})"),
            )?;
        }
        let epsilon = args.epsilon.unwrap_or(1e-2);
        settings_check(
            "epsilon",
            epsilon.is_finite() && epsilon > 0.0,
            epsilon,
            "must be a finite number > 0",
        )?;
        let stability_tol = args.stability_tol.unwrap_or(1e-4);
        settings_check(
            "stability_tol",
            stability_tol > 0.0 && stability_tol < 1.0,
            stability_tol,
            "must lie in (0, 1)",
        )?;
        let max_rows = args.max_rows.unwrap_or(1000);
        settings_check(
            "max_rows",
            max_rows >= 1,
            max_rows,
            "must be an integer >= 1",
        )?;
        let shard = args.shard.as_deref().map(Shard::parse).transpose()?;
        Ok(Self {
            etas,
            horizon,
            epsilon,
            stability_steps: args.stability_steps.unwrap_or(1000),
            stability_tol,
            max_rows,
            shard,
        })
    }

    /// The step sizes this run compares: all, or its shard's.
    pub fn active_etas(&self) -> Vec<f64> {
        self.etas
            .iter()
            .enumerate()
            .filter(|(i, _)| self.shard.is_none_or(|s| s.owns(*i)))
            .map(|(_, &e)| e)
            .collect()
    }

    /// Where the sharpness is measured: the latest time any step size of the full list
    /// reaches, so that every shard measures it at the same state.
    pub fn sharpness_time(&self) -> f64 {
        self.etas
            .iter()
            .map(|&e| self.steps_for(e) as f64 * e)
            .fold(0.0, f64::max)
    }

    /// J: the last GD step with Jη ≤ T (rounding forgiven when T is a multiple of η).
    pub fn steps_for(&self, eta: f64) -> usize {
        ((self.horizon / eta) * (1.0 + 1e-12)).floor() as usize
    }
}

/// One row of `deviation.csv`: GD iterate j against both flows at t_j = jη.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviationRow {
    pub eta: f64,
    pub step: usize,
    pub t: f64,
    /// ‖X_j − X(t_j)‖_F, X = UVᵀ, against the plain flow.
    pub dev: f64,
    pub dev_rel: f64,
    pub dev_u: f64,
    pub dev_v: f64,
    pub loss_gd: f64,
    pub loss_flow: f64,
    /// f(GD) − f(flow).
    pub loss_diff: f64,
    /// The plain reference's error at t_j.
    pub ref_error: f64,
    /// dev ≤ ref_error: the deviation is not resolved by the reference.
    pub below_ref: bool,
    pub dev_modified: f64,
    pub dev_modified_rel: f64,
    pub ref_error_modified: f64,
    pub below_ref_modified: bool,
    pub rel_error_gd: f64,
    pub rel_error_flow: f64,
    pub rel_error_modified: f64,
    /// ‖D_j − D_0‖_F with D = UᵀU − VᵀV.
    pub drift_gd: f64,
    pub drift_flow: f64,
}

/// A maximum over time and where it occurs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Peak {
    pub value: f64,
    pub step: usize,
    pub t: f64,
}

impl Peak {
    fn new() -> Self {
        Self {
            value: 0.0,
            step: 0,
            t: 0.0,
        }
    }
    fn update(&mut self, value: f64, step: usize, t: f64) {
        if value > self.value {
            *self = Self { value, step, t };
        }
    }
}

/// One step size: maxima over every step both dynamics reached, final values, t_ε.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepPoint {
    pub eta: f64,
    /// J, the last GD step.
    pub steps: usize,
    /// The last step compared (J unless GD diverged or a flow failed).
    pub compared_steps: usize,
    pub gd_status: Status,
    pub modified_flow_status: Status,
    pub max_dev: Peak,
    pub max_dev_rel: f64,
    pub max_dev_u: Peak,
    pub max_dev_v: Peak,
    /// Largest |f(GD) − f(flow)|.
    pub max_loss_diff: Peak,
    /// The plain reference's largest error over the compared times.
    pub ref_error: f64,
    pub below_ref: bool,
    pub max_dev_modified: Peak,
    pub max_dev_modified_rel: f64,
    pub ref_error_modified: f64,
    pub below_ref_modified: bool,
    pub final_rel_error_gd: f64,
    pub final_rel_error_flow: f64,
    pub final_rel_error_modified: f64,
    /// First jη with ‖X_j − X*‖/‖X*‖ < ε.
    pub t_eps_gd: Option<f64>,
    /// First t with relative error < ε along the plain flow, interpolated log-linearly between
    /// the output times jη.
    pub t_eps_flow: Option<f64>,
    pub final_drift_gd: f64,
    pub final_drift_flow: f64,
    pub max_drift_gd: f64,
    pub modified_solver: SolverStats,
    pub modified_solver_tight: SolverStats,
}

/// A least-squares line through (ln η, ln dev).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderFit {
    /// The slope: the observed order.
    pub order: Option<f64>,
    pub intercept: Option<f64>,
    /// Standard error of the slope (needs ≥ 3 points).
    pub order_stderr: Option<f64>,
    /// Root-mean-square residual of ln dev about the line (needs ≥ 3 points).
    pub residual_std: Option<f64>,
    /// Largest |residual| of ln dev.
    pub max_residual: Option<f64>,
    pub etas_used: Vec<f64>,
    pub excluded: Vec<Exclusion>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exclusion {
    pub eta: f64,
    pub reason: String,
}

/// Fit ln dev = order·ln η + c over the points with dev above its reference error and GD
/// completed.
pub fn fit_order(points: &[(f64, f64, f64, bool)]) -> OrderFit {
    let mut excluded = Vec::new();
    let mut used = Vec::new();
    for &(eta, dev, ref_error, completed) in points {
        if !completed {
            excluded.push(Exclusion {
                eta,
                reason: "GD diverged or a flow failed".into(),
            });
        } else if dev.partial_cmp(&ref_error) != Some(std::cmp::Ordering::Greater) || dev <= 0.0 {
            excluded.push(Exclusion {
                eta,
                reason: format!("deviation {dev:e} not above the reference error {ref_error:e}"),
            });
        } else {
            used.push((eta, dev));
        }
    }
    let n = used.len();
    let mut fit = OrderFit {
        order: None,
        intercept: None,
        order_stderr: None,
        residual_std: None,
        max_residual: None,
        etas_used: used.iter().map(|p| p.0).collect(),
        excluded,
    };
    if n < 2 {
        return fit;
    }
    let xs: Vec<f64> = used.iter().map(|p| p.0.ln()).collect();
    let ys: Vec<f64> = used.iter().map(|p| p.1.ln()).collect();
    let mx = xs.iter().sum::<f64>() / n as f64;
    let my = ys.iter().sum::<f64>() / n as f64;
    let sxx: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
    if sxx <= 0.0 {
        return fit;
    }
    let sxy: f64 = xs.iter().zip(&ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let slope = sxy / sxx;
    let c = my - slope * mx;
    let residuals: Vec<f64> = xs
        .iter()
        .zip(&ys)
        .map(|(x, y)| y - (slope * x + c))
        .collect();
    fit.order = Some(slope);
    fit.intercept = Some(c);
    fit.max_residual = Some(residuals.iter().fold(0.0, |m, r| m.max(r.abs())));
    if n >= 3 {
        let s2 = residuals.iter().map(|r| r * r).sum::<f64>() / (n - 2) as f64;
        fit.residual_std = Some(s2.sqrt());
        fit.order_stderr = Some((s2 / sxx).sqrt());
    }
    fit
}

/// λ_max at the end of the reference flow and the GD stability limit beside 2/λ_max.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StabilityReport {
    /// The time of the reference state where the sharpness was measured, and its relative
    /// error (it should be near a solution).
    pub sharpness_t: f64,
    pub sharpness_rel_error: f64,
    pub sharpness: Sharpness,
    pub bisection: Option<StabilityLimit>,
    pub steps_per_trial: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReferenceSolves {
    pub status: Status,
    pub solver: SolverStats,
    pub solver_tight: SolverStats,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SweepTimings {
    pub problem_seconds: f64,
    pub reference_seconds: f64,
    pub points_seconds: f64,
    pub stability_seconds: f64,
    pub total_seconds: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SweepSummary {
    pub crate_name: String,
    pub crate_version: String,
    pub seed: u64,
    /// The problem and solver keys of the resolved configuration (what `config.toml` holds
    /// at its top level).
    pub config: toml::Table,
    pub sweep: SweepSettings,
    /// Allowed but suspicious settings (also printed on stderr).
    pub warnings: Vec<String>,
    pub problem: ProblemInfo,
    /// Observed order of max_j ‖X_j − X(jη)‖ in η against the plain flow (expect ≈ 1).
    pub order_plain: Option<f64>,
    /// The same against GD's modified flow (expect ≈ 2).
    pub order_modified: Option<f64>,
    /// The largest η at which GD converged on this problem (bisection).
    pub stability_limit: Option<f64>,
    /// 2/λ_max with λ_max the sharpness at the end of the reference flow.
    pub two_over_lambda_max: Option<f64>,
    pub fit_plain: OrderFit,
    pub fit_modified: OrderFit,
    /// `None` in shards other than the first.
    pub stability: Option<StabilityReport>,
    pub reference: ReferenceSolves,
    pub points: Vec<SweepPoint>,
    pub operator_counts: OperatorCounts,
    pub timings: SweepTimings,
}

pub struct SweepResult {
    pub summary: SweepSummary,
    pub deviations: Vec<DeviationRow>,
}

/// The keys of the resolved configuration a sweep uses: everything but GD's own (η, steps,
/// recording, flow variant) and the output paths.
pub fn sweep_config_table(cfg: &Config) -> Result<toml::Table> {
    let mut table =
        toml::Table::try_from(cfg).map_err(|e| Error::invalid("config", "toml", e.to_string()))?;
    for key in [
        "eta",
        "steps",
        "record_every",
        "flow",
        "out",
        "save_problem",
    ] {
        table.remove(key);
    }
    Ok(table)
}

/// Refuse run-only keys: they would silently do nothing.
pub fn reject_run_only(args: &ConfigArgs) -> Result<()> {
    let given = [
        ("eta", args.eta.is_some(), "use --etas or --eta-range"),
        ("steps", args.steps.is_some(), "use --horizon"),
        (
            "record_every",
            args.record_every.is_some(),
            "use --max-rows",
        ),
        (
            "flow",
            args.flow.is_some(),
            "a sweep compares with both flows",
        ),
    ];
    for (field, set, instead) in given {
        if set {
            return Err(Error::invalid(
                field,
                "given",
                format!("is not a sweep option: {instead}"),
            ));
        }
    }
    Ok(())
}

/// Resolve the configuration, build the problem and run the sweep.
pub fn sweep(
    args: &ConfigArgs,
    sweep_args: &SweepArgs,
    show_progress: bool,
) -> Result<SweepResult> {
    let t = Instant::now();
    reject_run_only(args)?;
    let (cfg, problem) = prepare(args)?;
    let settings = SweepSettings::resolve(sweep_args, &cfg, &problem)?;
    if let Some(path) = &cfg.save_problem {
        problem.save_npz(path)?;
    }
    run_sweep(
        &cfg,
        &problem,
        &settings,
        show_progress,
        t.elapsed().as_secs_f64(),
    )
}

/// States of one flow solve, split per step size.
struct PerEta {
    states: Vec<Vec<Vec<f64>>>,
    status: Status,
    stats: SolverStats,
}

/// Solve the plain flow once at the union of every step size's output times.
fn plain_flow_all(
    field: &VectorField,
    x0: &[f64],
    etas: &[f64],
    steps: &[usize],
    opts: &FlowOptions,
) -> Result<PerEta> {
    let mut outputs: Vec<(f64, usize)> = etas
        .iter()
        .zip(steps)
        .enumerate()
        .flat_map(|(i, (&eta, &n))| (0..=n).map(move |j| (j as f64 * eta, i)))
        .collect();
    outputs.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let times: Vec<f64> = outputs.iter().map(|o| o.0).collect();
    let labels: Vec<usize> = (0..times.len()).collect();
    let sol = solve_flow(field, x0, &times, &labels, opts)?;
    let mut states: Vec<Vec<Vec<f64>>> = steps.iter().map(|&n| Vec::with_capacity(n + 1)).collect();
    // Within one step size the times ascend with j, so pushing in time order keeps j order.
    for (state, (_, i)) in sol.trajectory.states.into_iter().zip(&outputs) {
        states[*i].push(state);
    }
    Ok(PerEta {
        states,
        status: sol.trajectory.status,
        stats: sol.stats,
    })
}

/// First time the relative error drops below ε, interpolated in log error between samples.
pub fn first_passage(prev: Option<(f64, f64)>, t: f64, err: f64, eps: f64) -> Option<f64> {
    if err >= eps {
        return None;
    }
    match prev {
        Some((tp, ep)) if ep > eps && err > 0.0 => {
            let w = (ep.ln() - eps.ln()) / (ep.ln() - err.ln());
            Some(tp + w * (t - tp))
        }
        _ => Some(t),
    }
}

struct Ctx<'a> {
    field: &'a VectorField,
    x0: Vec<f64>,
    x_star: &'a DMatrix<f64>,
    x_star_norm: f64,
    d0: DMatrix<f64>,
    settings: &'a SweepSettings,
    flow_opts: FlowOptions,
}

fn split_diff(field: &VectorField, a: &[f64], b: &[f64]) -> (f64, f64, f64) {
    let (ua, va) = field.split(a);
    let (ub, vb) = field.split(b);
    let dx = (field.product(a) - field.product(b)).norm();
    (dx, (ua - ub).norm(), (va - vb).norm())
}

fn compare_point(
    ctx: &Ctx,
    eta: f64,
    plain: &[Vec<f64>],
    plain_tight: &[Vec<f64>],
) -> Result<(SweepPoint, Vec<DeviationRow>)> {
    let field = ctx.field;
    let n = ctx.settings.steps_for(eta);
    let steps: Vec<usize> = (0..=n).collect();
    let times: Vec<f64> = steps.iter().map(|&j| j as f64 * eta).collect();
    let mod_opts = ctx.flow_opts.modified(eta);
    let (modified, modified_tight) = rayon::join(
        || solve_flow(field, &ctx.x0, &times, &steps, &mod_opts),
        || {
            solve_flow(
                field,
                &ctx.x0,
                &times,
                &steps,
                &mod_opts.tightened(TIGHTENING),
            )
        },
    );
    let (modified, modified_tight) = (modified?, modified_tight?);
    let mod_states = &modified.trajectory.states;
    let mod_tight_states = &modified_tight.trajectory.states;
    let comparable = plain
        .len()
        .min(plain_tight.len())
        .min(mod_states.len())
        .min(mod_tight_states.len());

    let stride = (n + 1).div_ceil(ctx.settings.max_rows).max(1);
    let mut rows = Vec::new();
    let mut ws = field.workspace();
    let zero = Peak::new();
    let (mut max_dev, mut max_u, mut max_v, mut max_loss, mut max_mod) =
        (zero, zero, zero, zero, zero);
    let (mut ref_error, mut ref_error_modified, mut max_drift_gd) = (0.0f64, 0.0f64, 0.0f64);
    let (mut t_eps_gd, mut t_eps_flow) = (None, None);
    let mut prev_flow_err: Option<(f64, f64)> = None;
    let mut last_row: Option<DeviationRow> = None;
    let eps = ctx.settings.epsilon;
    let rel = |x: &[f64]| (field.product(x) - ctx.x_star).norm() / ctx.x_star_norm;
    let drift = |x: &[f64]| (balance(field, x) - &ctx.d0).norm();

    let gd_opts = GdOptions::new(eta, n, n.max(1));
    let gd = gradient_descent_with(field, &ctx.x0, &gd_opts, |j, loss_gd, x| {
        if j >= comparable {
            return;
        }
        let t = j as f64 * eta;
        let (dev, dev_u, dev_v) = split_diff(field, x, &plain_tight[j]);
        let ref_err = (field.product(&plain[j]) - field.product(&plain_tight[j])).norm();
        let dev_mod = (field.product(x) - field.product(&mod_tight_states[j])).norm();
        let ref_err_mod =
            (field.product(&mod_states[j]) - field.product(&mod_tight_states[j])).norm();
        let loss_flow = field.loss(&plain_tight[j], &mut ws);
        let rel_gd = rel(x);
        let rel_flow = rel(&plain_tight[j]);
        let drift_gd = drift(x);
        max_dev.update(dev, j, t);
        max_u.update(dev_u, j, t);
        max_v.update(dev_v, j, t);
        max_loss.update((loss_gd - loss_flow).abs(), j, t);
        max_mod.update(dev_mod, j, t);
        ref_error = ref_error.max(ref_err);
        ref_error_modified = ref_error_modified.max(ref_err_mod);
        max_drift_gd = max_drift_gd.max(drift_gd);
        if t_eps_gd.is_none() && rel_gd < eps {
            t_eps_gd = Some(t);
        }
        if t_eps_flow.is_none() {
            t_eps_flow = first_passage(prev_flow_err, t, rel_flow, eps);
        }
        prev_flow_err = Some((t, rel_flow));
        let row = DeviationRow {
            eta,
            step: j,
            t,
            dev,
            dev_rel: dev / ctx.x_star_norm,
            dev_u,
            dev_v,
            loss_gd,
            loss_flow,
            loss_diff: loss_gd - loss_flow,
            ref_error: ref_err,
            below_ref: dev <= ref_err,
            dev_modified: dev_mod,
            dev_modified_rel: dev_mod / ctx.x_star_norm,
            ref_error_modified: ref_err_mod,
            below_ref_modified: dev_mod <= ref_err_mod,
            rel_error_gd: rel_gd,
            rel_error_flow: rel_flow,
            rel_error_modified: rel(&mod_tight_states[j]),
            drift_gd,
            drift_flow: drift(&plain_tight[j]),
        };
        if j % stride == 0 {
            rows.push(row);
        } else {
            last_row = Some(row);
        }
    });
    // The last compared step always closes the table.
    if let Some(row) = last_row {
        if rows.last().is_none_or(|r| r.step < row.step) {
            rows.push(row);
        }
    }
    let last = rows.last();
    let point = SweepPoint {
        eta,
        steps: n,
        compared_steps: last.map_or(0, |r| r.step),
        gd_status: gd.status,
        modified_flow_status: if modified_tight.trajectory.status != Status::Completed {
            modified_tight.trajectory.status.clone()
        } else {
            modified.trajectory.status.clone()
        },
        max_dev_rel: max_dev.value / ctx.x_star_norm,
        max_dev,
        max_dev_u: max_u,
        max_dev_v: max_v,
        max_loss_diff: max_loss,
        ref_error,
        below_ref: max_dev.value <= ref_error,
        max_dev_modified_rel: max_mod.value / ctx.x_star_norm,
        max_dev_modified: max_mod,
        ref_error_modified,
        below_ref_modified: max_mod.value <= ref_error_modified,
        final_rel_error_gd: last.map_or(f64::NAN, |r| r.rel_error_gd),
        final_rel_error_flow: last.map_or(f64::NAN, |r| r.rel_error_flow),
        final_rel_error_modified: last.map_or(f64::NAN, |r| r.rel_error_modified),
        t_eps_gd,
        t_eps_flow,
        final_drift_gd: last.map_or(f64::NAN, |r| r.drift_gd),
        final_drift_flow: last.map_or(f64::NAN, |r| r.drift_flow),
        max_drift_gd,
        modified_solver: modified.stats,
        modified_solver_tight: modified_tight.stats,
    };
    Ok((point, rows))
}

/// Run a sweep on a prepared problem.
pub fn run_sweep(
    cfg: &Config,
    problem: &Problem,
    settings: &SweepSettings,
    show_progress: bool,
    problem_seconds: f64,
) -> Result<SweepResult> {
    let start = Instant::now();
    let field = VectorField::from_problem(problem);
    let x0 = problem.start_state();
    let flow_opts = FlowOptions::new(cfg.method, cfg.rtol, cfg.atol);
    let etas = settings.active_etas();
    let total_steps: usize = etas.iter().map(|&e| settings.steps_for(e)).sum();
    let bar = crate::progress::bar(
        show_progress,
        3.0 * problem.op.entries_per_pass() as f64 * total_steps as f64,
        etas.len() as u64 + 2,
        "stage",
    );
    bar.set_message("reference flow (two tolerances)");

    // One more output, at the sharpness time: a pseudo step size of one step.
    let t_sharp = settings.sharpness_time();
    let mut out_etas = etas.clone();
    out_etas.push(t_sharp);
    let mut steps: Vec<usize> = etas.iter().map(|&e| settings.steps_for(e)).collect();
    steps.push(1);
    let t = Instant::now();
    let (plain, plain_tight) = rayon::join(
        || plain_flow_all(&field, &x0, &out_etas, &steps, &flow_opts),
        || {
            let tight = flow_opts.tightened(TIGHTENING);
            plain_flow_all(&field, &x0, &out_etas, &steps, &tight)
        },
    );
    let (plain, mut plain_tight) = (plain?, plain_tight?);
    let sharp_state = plain_tight
        .states
        .pop()
        .and_then(|mut s| s.pop().filter(|_| s.len() == 1))
        .map(|x| (t_sharp, x));
    let reference_seconds = t.elapsed().as_secs_f64();
    bar.inc(1);
    bar.set_message("step sizes");

    let ctx = Ctx {
        field: &field,
        x0: x0.clone(),
        x_star: &problem.x_star,
        x_star_norm: problem.x_star.norm(),
        d0: balance(&field, &x0),
        settings,
        flow_opts,
    };
    let t = Instant::now();
    let results: Vec<Result<(SweepPoint, Vec<DeviationRow>)>> = etas
        .par_iter()
        .enumerate()
        .map(|(i, &eta)| {
            let r = compare_point(&ctx, eta, &plain.states[i], &plain_tight.states[i]);
            bar.inc(1);
            r
        })
        .collect();
    let points_seconds = t.elapsed().as_secs_f64();
    let mut points = Vec::with_capacity(results.len());
    let mut deviations = Vec::new();
    for r in results {
        let (p, rows) = r?;
        points.push(p);
        deviations.extend(rows);
    }

    let plain_status = match (&plain.status, &plain_tight.status) {
        (Status::Completed, s) => s.clone(),
        (s, _) => s.clone(),
    };
    let (fit_plain, fit_modified) = fits(&points, &plain_status);

    bar.set_message("stability limit");
    let t = Instant::now();
    let stability = if settings.shard.is_none_or(|s| s.index == 1) {
        Some(stability_report(&ctx, sharp_state, settings, cfg.seed))
    } else {
        None
    };
    let stability_seconds = t.elapsed().as_secs_f64();
    bar.inc(1);
    bar.finish_and_clear();

    let two_over_lambda_max = stability
        .as_ref()
        .filter(|s| s.sharpness.lambda_max > 0.0)
        .map(|s| 2.0 / s.sharpness.lambda_max);
    let summary = SweepSummary {
        crate_name: env!("CARGO_PKG_NAME").to_string(),
        crate_version: env!("CARGO_PKG_VERSION").to_string(),
        seed: cfg.seed,
        config: sweep_config_table(cfg)?,
        sweep: settings.clone(),
        warnings: cfg.problem_warnings(),
        problem: ProblemInfo::new(cfg, problem),
        order_plain: fit_plain.order,
        order_modified: fit_modified.order,
        stability_limit: stability
            .as_ref()
            .and_then(|s| s.bisection.as_ref())
            .and_then(|b| b.limit),
        two_over_lambda_max,
        fit_plain,
        fit_modified,
        stability,
        reference: ReferenceSolves {
            status: plain_status,
            solver: plain.stats,
            solver_tight: plain_tight.stats,
        },
        points,
        operator_counts: problem.op.counts(),
        timings: SweepTimings {
            problem_seconds,
            reference_seconds,
            points_seconds,
            stability_seconds,
            total_seconds: problem_seconds + start.elapsed().as_secs_f64(),
        },
    };
    Ok(SweepResult {
        summary,
        deviations,
    })
}

/// Both order fits from the points (the sweep's, or a merge's).
pub fn fits(points: &[SweepPoint], plain_status: &Status) -> (OrderFit, OrderFit) {
    let completed = |p: &SweepPoint| {
        p.gd_status == Status::Completed
            && *plain_status == Status::Completed
            && p.compared_steps == p.steps
    };
    let fit_plain = fit_order(
        &points
            .iter()
            .map(|p| (p.eta, p.max_dev.value, p.ref_error, completed(p)))
            .collect::<Vec<_>>(),
    );
    let fit_modified = fit_order(
        &points
            .iter()
            .map(|p| {
                let ok = completed(p) && p.modified_flow_status == Status::Completed;
                (p.eta, p.max_dev_modified.value, p.ref_error_modified, ok)
            })
            .collect::<Vec<_>>(),
    );
    (fit_plain, fit_modified)
}

/// Sharpness at the reference state at [`SweepSettings::sharpness_time`] (the start if the
/// reference failed before it), and the bisection started from 2/λ_max.
fn stability_report(
    ctx: &Ctx,
    sharp_state: Option<(f64, Vec<f64>)>,
    settings: &SweepSettings,
    seed: u64,
) -> StabilityReport {
    let (t_end, state) = sharp_state.unwrap_or((0.0, ctx.x0.clone()));
    let state = &state;
    let sharp = sharpness(ctx.field, state, seed, 1e-6, 20_000);
    let steps_per_trial = settings.stability_steps;
    let bisection = (steps_per_trial > 0 && sharp.lambda_max > 0.0).then(|| {
        let guess = 2.0 / sharp.lambda_max;
        let opts = StabilityOptions {
            steps: steps_per_trial.max(settings.steps_for(guess.min(settings.horizon))),
            tol: settings.stability_tol,
            rel_width: 5e-3,
        };
        stability_limit(ctx.field, &ctx.x0, guess, &opts)
    });
    StabilityReport {
        sharpness_t: t_end,
        sharpness_rel_error: (ctx.field.product(state) - ctx.x_star).norm() / ctx.x_star_norm,
        sharpness: sharp,
        bisection,
        steps_per_trial,
    }
}

fn cell(v: Option<f64>) -> String {
    v.map_or_else(String::new, num)
}

fn csv_error(name: &str) -> impl Fn(csv::Error) -> Error + '_ {
    move |e| Error::invalid(name, "csv", e.to_string())
}

/// `sweep.csv`: one row per step size.
pub fn sweep_csv(summary: &SweepSummary) -> Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let err = csv_error("sweep.csv");
    w.write_record([
        "eta",
        "steps",
        "gd_status",
        "max_dev",
        "max_dev_rel",
        "t_max_dev",
        "ref_error",
        "below_ref",
        "max_dev_modified",
        "max_dev_modified_rel",
        "t_max_dev_modified",
        "ref_error_modified",
        "below_ref_modified",
        "max_dev_u",
        "max_dev_v",
        "max_loss_diff",
        "final_rel_error_gd",
        "final_rel_error_flow",
        "final_rel_error_modified",
        "t_eps_gd",
        "t_eps_flow",
        "final_drift_gd",
        "final_drift_flow",
        "max_drift_gd",
    ])
    .map_err(&err)?;
    for p in &summary.points {
        w.write_record([
            num(p.eta),
            p.steps.to_string(),
            p.gd_status.label().to_string(),
            num(p.max_dev.value),
            num(p.max_dev_rel),
            num(p.max_dev.t),
            num(p.ref_error),
            p.below_ref.to_string(),
            num(p.max_dev_modified.value),
            num(p.max_dev_modified_rel),
            num(p.max_dev_modified.t),
            num(p.ref_error_modified),
            p.below_ref_modified.to_string(),
            num(p.max_dev_u.value),
            num(p.max_dev_v.value),
            num(p.max_loss_diff.value),
            num(p.final_rel_error_gd),
            num(p.final_rel_error_flow),
            num(p.final_rel_error_modified),
            cell(p.t_eps_gd),
            cell(p.t_eps_flow),
            num(p.final_drift_gd),
            num(p.final_drift_flow),
            num(p.max_drift_gd),
        ])
        .map_err(&err)?;
    }
    w.into_inner()
        .map_err(|e| Error::invalid("sweep.csv", "csv", e.to_string()))
}

/// `deviation.csv`: one row per step size and compared time.
pub fn deviation_csv(rows: &[DeviationRow]) -> Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    for r in rows {
        w.serialize(r).map_err(csv_error("deviation.csv"))?;
    }
    if rows.is_empty() {
        w.write_record(["eta", "step", "t"])
            .map_err(csv_error("deviation.csv"))?;
    }
    w.into_inner()
        .map_err(|e| Error::invalid("deviation.csv", "csv", e.to_string()))
}

/// Write `summary.json`, `sweep.csv`, `deviation.csv` and `config.toml` (problem keys at the
/// top level, the resolved sweep in a `[sweep]` table) into `dir`.
pub fn write_sweep_outputs(result: &SweepResult, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let s = &result.summary;
    let json = serde_json::to_vec_pretty(s)
        .map_err(|e| Error::invalid("summary.json", "json", e.to_string()))?;
    let mut table = s.config.clone();
    let sweep = toml::Table::try_from(&s.sweep)
        .map_err(|e| Error::invalid("config.toml", "toml", e.to_string()))?;
    table.insert("sweep".into(), toml::Value::Table(sweep));
    let toml = toml::to_string(&table)
        .map_err(|e| Error::invalid("config.toml", "toml", e.to_string()))?;
    crate::output::write_bytes(&dir.join("sweep.csv"), &sweep_csv(s)?)?;
    crate::output::write_bytes(
        &dir.join("deviation.csv"),
        &deviation_csv(&result.deviations)?,
    )?;
    crate::output::write_bytes(&dir.join("config.toml"), toml.as_bytes())?;
    crate::output::write_bytes(&dir.join("summary.json"), &json)?;
    Ok(())
}

fn opt(v: Option<f64>, prec: usize) -> String {
    v.map_or_else(|| "—".to_string(), |x| format!("{x:.prec$}"))
}

fn describe_fit(name: &str, f: &OrderFit) -> String {
    let mut s = format!("order vs {name}: {}", opt(f.order, 3));
    if let Some(se) = f.order_stderr {
        s += &format!(" ± {se:.3} (std. error)");
    }
    if let Some(r) = f.residual_std {
        s += &format!(", residual spread {r:.3} in ln dev");
    }
    s += &format!(", {} points", f.etas_used.len());
    for e in &f.excluded {
        s += &format!("\n    left out η = {}: {}", e.eta, e.reason);
    }
    s
}

/// The table `gdflow sweep` prints.
pub fn format_sweep(s: &SweepSummary) -> String {
    use std::fmt::Write;
    let p = &s.problem;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "gdflow {} sweep — {}, seed={}, T={:.4}",
        s.crate_version,
        p.headline(),
        s.seed,
        s.sweep.horizon
    );
    let rs = &s.reference.solver;
    let _ = writeln!(
        out,
        "reference flow: {} at rtol {} and {}× tighter ({} and {} steps); ‖X*‖ = {:.4}",
        rs.method,
        s.config
            .get("rtol")
            .and_then(|v| v.as_float())
            .map_or("?".into(), |v| format!("{v:e}")),
        TIGHTENING,
        rs.steps,
        s.reference.solver_tight.steps,
        p.target_norm
    );
    if s.reference.status != Status::Completed {
        let _ = writeln!(out, "REFERENCE FLOW {:?}", s.reference.status);
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:>10} {:>7} {:>11} {:>9} {:>11} {:>11} {:>9} {:>10} {:>10} {:>9} {:>9}  status",
        "η",
        "steps",
        "dev plain",
        "at t",
        "dev modif.",
        "ref error",
        "rel dev",
        "err GD",
        "err flow",
        "t_ε GD",
        "t_ε flow"
    );
    for q in &s.points {
        let flag = |below: bool| if below { "*" } else { " " };
        let _ = writeln!(
            out,
            "{:>10.4e} {:>7} {:>10.3e}{} {:>9.3} {:>10.3e}{} {:>11.2e} {:>9.2e} {:>10.2e} {:>10.2e} {:>9} {:>9}  {}",
            q.eta,
            q.steps,
            q.max_dev.value,
            flag(q.below_ref),
            q.max_dev.t,
            q.max_dev_modified.value,
            flag(q.below_ref_modified),
            q.ref_error.max(q.ref_error_modified),
            q.max_dev_rel,
            q.final_rel_error_gd,
            q.final_rel_error_flow,
            opt(q.t_eps_gd, 3),
            opt(q.t_eps_flow, 3),
            q.gd_status.label()
        );
    }
    if s.points.iter().any(|q| q.below_ref || q.below_ref_modified) {
        let _ = writeln!(
            out,
            "  * deviation not above the reference's own error: not resolved"
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{}",
        describe_fit("plain flow (expect 1)", &s.fit_plain)
    );
    let _ = writeln!(
        out,
        "{}",
        describe_fit("modified flow (expect 2)", &s.fit_modified)
    );
    match &s.stability {
        Some(st) => {
            let _ = writeln!(
                out,
                "sharpness λ_max = {:.6} at t = {:.3} (rel. error there {:.2e}; {} power iterations, residual {:.1e}) → 2/λ_max = {}",
                st.sharpness.lambda_max,
                st.sharpness_t,
                st.sharpness_rel_error,
                st.sharpness.iterations,
                st.sharpness.residual,
                opt(s.two_over_lambda_max, 6)
            );
            match &st.bisection {
                Some(b) => {
                    let _ = writeln!(
                        out,
                        "stability limit: GD converges at η = {} and not at η = {} ({} GD runs of ≥ {} steps)",
                        opt(b.limit, 6),
                        opt(b.upper, 6),
                        b.trials.len(),
                        st.steps_per_trial
                    );
                }
                None => {
                    let _ = writeln!(out, "stability limit: not searched");
                }
            }
        }
        None => {
            let _ = writeln!(
                out,
                "sharpness and stability limit: in shard 1 of this sweep"
            );
        }
    }
    let tm = &s.timings;
    let _ = writeln!(
        out,
        "wall time: {:.3} s (reference {:.3} s, step sizes {:.3} s, stability {:.3} s)",
        tm.total_seconds, tm.reference_seconds, tm.points_seconds, tm.stability_seconds
    );
    out
}

/// Combine the output directories of the parts `--shard 1/N` … `--shard N/N` of one sweep into
/// the result the unsharded sweep gives: the same points and deviation rows (so the same CSVs,
/// byte for byte), the fits recomputed over all step sizes, the stability report of part 1.
pub fn merge(dirs: &[std::path::PathBuf]) -> Result<SweepResult> {
    let parts = dirs
        .iter()
        .map(|d| crate::plot::figures::load_sweep(d).map(|r| (d, r)))
        .collect::<Result<Vec<_>>>()?;
    let bad = |d: &std::path::Path, why: String| Error::invalid("merge", d.display(), why);
    let (first_dir, first) = parts
        .first()
        .ok_or_else(|| Error::invalid("merge", "[]", "needs the parts' directories"))?;
    let count = first
        .summary
        .sweep
        .shard
        .ok_or_else(|| {
            bad(
                first_dir,
                "is not a part of a sharded sweep (no `shard`)".into(),
            )
        })?
        .count;
    let mut seen = vec![false; count];
    let unsharded = |s: &SweepSettings| SweepSettings {
        shard: None,
        ..s.clone()
    };
    for (d, p) in &parts {
        let shard = p
            .summary
            .sweep
            .shard
            .ok_or_else(|| bad(d, "is not a part of a sharded sweep".into()))?;
        if shard.count != count
            || p.summary.config != first.summary.config
            || unsharded(&p.summary.sweep) != unsharded(&first.summary.sweep)
        {
            return Err(bad(
                d,
                format!("belongs to a different sweep than {}", first_dir.display()),
            ));
        }
        if std::mem::replace(&mut seen[shard.index - 1], true) {
            return Err(bad(d, format!("repeats part {}/{count}", shard.index)));
        }
    }
    if let Some(missing) = seen.iter().position(|s| !s) {
        return Err(Error::invalid(
            "merge",
            format!("{} parts", parts.len()),
            format!("part {}/{count} is missing", missing + 1),
        ));
    }
    let settings = unsharded(&first.summary.sweep);
    let mut points = Vec::new();
    let mut deviations = Vec::new();
    for &eta in &settings.etas {
        for (_, p) in &parts {
            if let Some(q) = p.summary.points.iter().find(|q| q.eta == eta) {
                points.push(q.clone());
                deviations.extend(p.deviations.iter().filter(|r| r.eta == eta).cloned());
            }
        }
    }
    let status = parts
        .iter()
        .map(|(_, p)| p.summary.reference.status.clone())
        .find(|s| *s != Status::Completed)
        .unwrap_or(Status::Completed);
    let (fit_plain, fit_modified) = fits(&points, &status);
    let stability = parts.iter().find_map(|(_, p)| p.summary.stability.clone());
    let mut counts = first.summary.operator_counts;
    let mut timings = SweepTimings::default();
    for (i, (_, p)) in parts.iter().enumerate() {
        if i > 0 {
            counts.apply += p.summary.operator_counts.apply;
            counts.adjoint += p.summary.operator_counts.adjoint;
        }
        let t = &p.summary.timings;
        timings.problem_seconds += t.problem_seconds;
        timings.reference_seconds += t.reference_seconds;
        timings.points_seconds += t.points_seconds;
        timings.stability_seconds += t.stability_seconds;
        timings.total_seconds += t.total_seconds;
    }
    let s = &first.summary;
    let summary = SweepSummary {
        crate_name: s.crate_name.clone(),
        crate_version: s.crate_version.clone(),
        seed: s.seed,
        config: s.config.clone(),
        sweep: settings,
        warnings: s.warnings.clone(),
        problem: s.problem.clone(),
        order_plain: fit_plain.order,
        order_modified: fit_modified.order,
        stability_limit: stability
            .as_ref()
            .and_then(|st| st.bisection.as_ref())
            .and_then(|b| b.limit),
        two_over_lambda_max: stability
            .as_ref()
            .filter(|st| st.sharpness.lambda_max > 0.0)
            .map(|st| 2.0 / st.sharpness.lambda_max),
        fit_plain,
        fit_modified,
        stability,
        reference: ReferenceSolves {
            status,
            ..s.reference.clone()
        },
        points,
        operator_counts: counts,
        timings,
    };
    Ok(SweepResult {
        summary,
        deviations,
    })
}
