//! `gdflow sweep`: GD against the gradient flow and against GD's modified flow over a range of
//! step sizes (MATH §2, §6, §7).
//!
//! For each η, GD runs j = 0..J with Jη ≤ T and is compared at every step with
//! - the plain flow at t_j = jη, solved once for all η at the union of their output times, and
//! - the modified flow x' = F − (η/2)·J·F, solved per η,
//!
//! both on the field the configuration describes (the perturbed flow of `--perturbation`
//! included). Each flow is solved twice, at (rtol, atol) and 100× tighter; the tighter solve is
//! the reference and the distance between the two is reported beside every deviation as the
//! reference's error (an overestimate: it is essentially the looser solve's error). A deviation
//! not above it is flagged and kept out of the order fits.
//!
//! The third reference is the central flow (MATH §8), solved per η at the configured
//! tolerances: GD's two-step average x̄ = ½(x_{j−1} + x_j) is compared with it at (j − ½)η.
//! Below the stability limit it is the plain flow; past it, it is the only flow GD's
//! average still follows. It needs a gradient field: with a non-gradient perturbation its
//! columns stay empty.

use std::sync::Arc;
use std::time::Instant;

use nalgebra::DMatrix;
use rayon::prelude::*;

use super::Setup;
use crate::analysis::fit::{first_passage, fit_order, OrderFit};
use crate::analysis::record::balance;
use crate::config::{
    parse_eta_range, Config, FlowVariant, SweepArgs, MAX_HORIZON_TIMESCALES, MAX_STEPS,
};
use crate::dynamics::flow::{CentralReport, FlowOptions, SolverStats, Times};
use crate::dynamics::optimizer::{Dynamics, Kept, Limit, Optimizer, TimeScale};
use crate::dynamics::sharpness::{top_eigenpairs, EigenOptions};
use crate::dynamics::stability::{stability_limit, StabilityOptions};
use crate::dynamics::{Driver, Iterate, RunOptions, SaveAt, Status};
use crate::error::{Error, Result};
use crate::field::{Field, Workspace};
use crate::operator::beside_other_work;
use crate::problem::Problem;
use crate::results::run::ProblemInfo;
use crate::results::sweep::{
    CentralPoint, DeviationRow, Peak, ReferenceSolves, Shard, StabilityReport, SweepPoint,
    SweepResult, SweepSettings, SweepSummary, SweepTimings,
};
use crate::results::Provenance;

/// The stability bisection may stream at most this many operator entries.
const MAX_BISECTION_ENTRIES: f64 = 1e12;

/// The reference is solved again with tolerances divided by this to estimate its error.
pub const TIGHTENING: f64 = 100.0;

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

/// The sweep's settings: defaults depend on the problem, η up to 0.2/σ_1 and
/// T = 1.5·ln(σ_r/α²)/σ_r.
pub fn resolve_settings(
    args: &SweepArgs,
    cfg: &Config,
    problem: &Problem,
) -> Result<SweepSettings> {
    let s1 = problem.target_sv[0];
    let sr = *problem.target_sv.last().expect("rank >= 1");
    let etas = step_sizes(args, s1)?;
    let horizon = args
        .horizon
        .unwrap_or_else(|| 1.5 * (sr / (cfg.alpha * cfg.alpha)).ln().max(1.0) / sr);
    settings_check(
        "horizon",
        horizon.is_finite() && horizon > 0.0,
        horizon,
        "must be a finite number > 0",
    )?;
    settings_check(
        "horizon",
        horizon * s1 <= MAX_HORIZON_TIMESCALES,
        horizon,
        &format!(
            "must be at most {MAX_HORIZON_TIMESCALES:e}/σ_1 = {:e} (the flows would need \
             about T·σ_1 solver steps)",
            MAX_HORIZON_TIMESCALES / s1
        ),
    )?;
    for &eta in &etas {
        settings_check(
            "etas",
            eta <= horizon,
            eta,
            &format!("every step size must be <= the horizon T = {horizon} (at least one GD step)"),
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
    let max_rows = args.max_rows.unwrap_or(1000);
    settings_check(
        "max_rows",
        max_rows >= 1,
        max_rows,
        "must be an integer >= 1",
    )?;
    settings_check(
        "max_rows",
        max_rows as u64 <= i64::MAX as u64,
        max_rows,
        "must be < 2^63: config.toml records it as a TOML integer",
    )?;
    let shard = args
        .shard
        .as_deref()
        .map(|spec| Shard::resolve(spec, &|key| std::env::var(key).ok()))
        .transpose()?
        .map(|(shard, _)| shard);
    if let Some(s) = shard {
        settings_check(
            "shard",
            s.count <= etas.len(),
            format!("{}/{}", s.index, s.count),
            &format!(
                "N must be at most the number of step sizes ({}): a part would get none",
                etas.len()
            ),
        )?;
    }
    let (stability_steps, stability_tol) = stability_settings(args, problem)?;
    check_sweep_memory(&etas, horizon, problem)?;
    // every η's modified flow to T, from this start
    cfg.check_start_rate(horizon, etas.iter().copied().fold(0.0, f64::max))?;
    Ok(SweepSettings {
        etas,
        horizon,
        epsilon,
        stability_steps,
        stability_tol,
        max_rows,
        shard,
    })
}

/// The step sizes a sweep compares, sorted, each checked: `--etas`, `--eta-range`, or the
/// default range below 1/σ_1.
fn step_sizes(args: &SweepArgs, s1: f64) -> Result<Vec<f64>> {
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
    settings_check(
        "etas",
        etas.len() <= crate::config::MAX_STEP_SIZES,
        etas.len(),
        &format!(
            "must list at most {} step sizes (split a larger study with --shard)",
            crate::config::MAX_STEP_SIZES
        ),
    )?;
    etas.sort_by(f64::total_cmp);
    if let Some(w) = etas.windows(2).find(|w| w[0] == w[1]) {
        return Err(Error::invalid(
            "etas",
            w[0],
            "is listed twice: give each step size once",
        ));
    }
    Ok(etas)
}

/// The stability bisection's steps per trial and its convergence fraction, checked (and its
/// work bounded) before any run.
fn stability_settings(args: &SweepArgs, problem: &Problem) -> Result<(usize, f64)> {
    let stability_tol = args.stability_tol.unwrap_or(1e-4);
    settings_check(
        "stability_tol",
        stability_tol > 0.0 && stability_tol < 1.0,
        stability_tol,
        "must lie in (0, 1)",
    )?;
    let stability_steps = args.stability_steps.unwrap_or(1000);
    if let (Some(tol), 0) = (args.stability_tol, stability_steps) {
        return Err(Error::invalid(
            "stability_tol",
            tol,
            "tunes the stability bisection, which --stability-steps 0 skips: drop one",
        ));
    }
    settings_check(
        "stability_steps",
        stability_steps as f64 <= MAX_STEPS,
        stability_steps,
        &format!("must be <= {MAX_STEPS:e} GD steps per bisection trial"),
    )?;
    // the bisection runs about 20 trials of that many GD steps, a pass each
    let bisection = 20.0 * stability_steps as f64 * problem.op.entries_per_pass() as f64;
    settings_check(
        "stability_steps",
        bisection <= MAX_BISECTION_ENTRIES,
        stability_steps,
        &format!(
            "would stream about {bisection:.1e} operator entries in the bisection's ~20 GD runs \
             (at most {MAX_BISECTION_ENTRIES:e}, a quarter of an hour at ~1e9 a second): fewer \
             steps per trial, or 0 to skip the stability limit"
        ),
    )?;
    Ok((stability_steps, stability_tol))
}

/// A sweep keeps, for every step size, the states of its plain flow at two tolerances, its
/// modified flow at two and its central flow at every step: about 5·Σ_η (T/η + 1) states of N
/// numbers at once. Refused before any work when that passes 80% of the memory available.
fn check_sweep_memory(etas: &[f64], horizon: f64, problem: &Problem) -> Result<()> {
    let n = problem.n1() + if problem.symmetric { 0 } else { problem.n2() };
    let state_bytes = (n * problem.width()) as f64 * 8.0;
    let outputs: f64 = etas.iter().map(|&e| (horizon / e).floor() + 1.0).sum();
    let need = 5.0 * outputs * state_bytes;
    let available = 0.8 * crate::resources::available_or_default() as f64;
    let gib = |b: f64| b / (1u64 << 30) as f64;
    if need > available {
        return Err(Error::invalid(
            "etas",
            format!("{} step sizes to T = {horizon}", etas.len()),
            format!(
                "would keep about {:.1} GiB of flow states ({:.0} outputs of {} numbers, five \
                 solves each) where {:.1} GiB is 80% of what is available: fewer or larger step \
                 sizes (--etas, --eta-range), a shorter --horizon, or --shard i/N across runs",
                gib(need),
                outputs,
                n * problem.width(),
                gib(available)
            ),
        ));
    }
    Ok(())
}

/// The keys of the resolved configuration a sweep uses: everything but GD's own (η, steps,
/// recording, flow variant), the output paths, and what a problem file fixed.
pub(crate) fn sweep_config_table(setup: &Setup) -> Result<toml::Table> {
    let mut leave_out = vec![
        "eta",
        "steps",
        "record_every",
        "sharpness_every",
        "spectrum_every",
        "flow",
        "out",
        "save_problem",
    ];
    leave_out.extend(setup.from_file.iter().map(String::as_str));
    setup.config.table_without(&leave_out)
}

/// Resolve the sweep's settings against a set-up problem and run it.
pub fn sweep(setup: &Setup, args: &SweepArgs, show_progress: bool) -> Result<SweepResult> {
    let settings = resolve_settings(args, &setup.config, &setup.problem)?;
    let optimizer = setup.optimizer()?;
    if optimizer.time_scale() != TimeScale::Eta
        || !optimizer.limits().contains(&FlowVariant::Modified)
    {
        return Err(Error::invalid(
            "optimizer",
            optimizer.name(),
            "a sweep compares a method with its plain and modified limits at t = jη, and this \
             one runs in j√η with a second-order limit: compare it at each η with `gdflow run \
             --optimizer NAME`",
        ));
    }
    if !optimizer.is_gradient_descent() && args.stability_steps.is_some_and(|s| s > 0) {
        return Err(Error::invalid(
            "stability_steps",
            args.stability_steps.unwrap_or(0),
            format!(
                "the stability bisection runs GD, not {}: leave it unset (or 0)",
                optimizer.name()
            ),
        ));
    }
    if let Some(target) = args.target_deviation {
        if !(target.is_finite() && target > 0.0) {
            return Err(Error::invalid(
                "target_deviation",
                target,
                "must be a finite number > 0 (0.01: within 1% of ‖X*‖)",
            ));
        }
        if settings.shard.is_some() {
            return Err(Error::invalid(
                "target_deviation",
                target,
                "searches across every step size, which a --shard does not see: run it \
                 unsharded",
            ));
        }
    }
    let mut result = run_sweep(setup, &settings, show_progress)?;
    if setup.config.replicas > 1 {
        let start = std::time::Instant::now();
        let points = super::weak::weak_points(setup, &settings, show_progress)?;
        result.summary.weak = Some(crate::results::sweep::WeakSweep {
            replicas: setup.config.replicas,
            orders: super::weak::weak_orders(&points),
            points,
        });
        result.summary.timings.total_seconds += start.elapsed().as_secs_f64();
    }
    if let Some(target) = args.target_deviation {
        let t = super::target::target_deviation(setup, &settings, &result.summary.points, target)?;
        result.summary.timings.total_seconds += t.seconds;
        result.summary.target_deviation = Some(t);
    }
    Ok(result)
}

/// States of one flow solve, split per step size.
struct PerEta {
    states: Vec<Vec<Vec<f64>>>,
    status: Status,
    stats: SolverStats,
}

/// Solve the plain limit once at the union of every step size's output times.
fn plain_flow_all(
    limit: &Limit,
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
    let kept = limit.solve_kept(Times::List(&times), opts, &|_| true)?;
    let mut states: Vec<Vec<Vec<f64>>> = steps.iter().map(|&n| Vec::with_capacity(n + 1)).collect();
    // Within one step size the times ascend with j, so pushing in time order keeps j order.
    for (state, (_, i)) in kept.states.into_iter().zip(&outputs) {
        states[*i].push(state);
    }
    Ok(PerEta {
        states,
        status: kept.end.status,
        stats: kept.end.solver,
    })
}

struct Ctx<'a> {
    field: &'a dyn Field,
    field_arc: Arc<dyn Field>,
    optimizer: Arc<dyn Optimizer>,
    setup: &'a Setup,
    x0: Vec<f64>,
    x_star: &'a DMatrix<f64>,
    x_star_norm: f64,
    d0: DMatrix<f64>,
    settings: &'a SweepSettings,
    flow_opts: FlowOptions,
}

impl<'a> Ctx<'a> {
    fn new(
        setup: &'a Setup,
        settings: &'a SweepSettings,
        optimizer: Arc<dyn Optimizer>,
        field: &'a Arc<dyn Field>,
    ) -> Self {
        let x0 = setup.problem.start_state();
        Self {
            field: field.as_ref(),
            field_arc: field.clone(),
            optimizer,
            setup,
            d0: balance(field.as_ref(), &x0),
            x0,
            x_star: &setup.problem.x_star,
            x_star_norm: setup.problem.x_star.norm(),
            settings,
            flow_opts: setup.config.flow_options(),
        }
    }
}

fn split_diff(field: &dyn Field, a: &[f64], b: &[f64]) -> (f64, f64, f64) {
    let (ua, va) = field.factors().split(a);
    let (ub, vb) = field.factors().split(b);
    let dx = (field.product(a) - field.product(b)).norm();
    (dx, (ua - ub).norm(), (va - vb).norm())
}

/// The modified flow for one step size, at two tolerances.
struct ModifiedFlows {
    coarse: Kept,
    tight: Kept,
}

/// The method's `variant` limit of `field` for step `eta`.
fn limit(ctx: &Ctx, variant: FlowVariant, field: Arc<dyn Field>, eta: f64) -> Result<Limit> {
    ctx.optimizer
        .limit(variant, field, &ctx.x0, eta)
        .map_err(|why| Error::invalid("optimizer", ctx.optimizer.name(), why))
}

fn modified_flows(ctx: &Ctx, eta: f64) -> Result<ModifiedFlows> {
    let n = ctx.settings.steps_for(eta);
    let limit = limit(ctx, FlowVariant::Modified, ctx.field_arc.clone(), eta)?;
    let times = Times::Grid {
        dt: eta,
        count: n + 1,
    };
    let opts = ctx.flow_opts;
    let (coarse, tight) = join_beside(
        || limit.solve_kept(times, &opts, &|_| true),
        || limit.solve_kept(times, &opts.tightened(TIGHTENING), &|_| true),
    );
    Ok(ModifiedFlows {
        coarse: coarse?,
        tight: tight?,
    })
}

/// The central flow for one step size at (j + ½)η, j = 0..J − 1.
struct CentralRef {
    states: Vec<Vec<f64>>,
    active: Vec<usize>,
    status: Status,
    stats: SolverStats,
    report: CentralReport,
}

/// `None` when the field is not a gradient (the central flow is not defined) or the method
/// has no central flow (anything but GD).
fn central_flow(ctx: &Ctx, eta: f64) -> Result<Option<CentralRef>> {
    if !ctx.optimizer.limits().contains(&FlowVariant::Central)
        || ctx
            .setup
            .config
            .perturbation
            .is_some_and(|m| !m.is_gradient())
    {
        return Ok(None);
    }
    let n = ctx.settings.steps_for(eta);
    let field = ctx.setup.flow_field(FlowVariant::Central, eta);
    let limit = limit(ctx, FlowVariant::Central, field, eta)?.positions_only();
    let times = Times::Grid {
        dt: eta / 2.0,
        count: 2 * n + 1,
    };
    let kept = limit.solve_kept(times, &ctx.flow_opts, &|i| i % 2 == 1)?;
    let active = kept
        .columns
        .iter()
        .map(|cols| {
            cols.iter()
                .find(|(name, _)| *name == "active")
                .map_or(0, |(_, v)| *v as usize)
        })
        .collect();
    Ok(Some(CentralRef {
        states: kept.states,
        active,
        status: kept.end.status,
        stats: kept.end.solver,
        report: kept.end.central.unwrap_or_default(),
    }))
}

/// GD at one step size against the three flows, iterate by iterate.
struct Comparison<'a> {
    ctx: &'a Ctx<'a>,
    eta: f64,
    n: usize,
    plain: &'a [Vec<f64>],
    plain_tight: &'a [Vec<f64>],
    modified: &'a ModifiedFlows,
    central: Option<&'a CentralRef>,
    comparable: usize,
    stride: usize,
    ws: Workspace,
    rows: Vec<DeviationRow>,
    last_row: Option<DeviationRow>,
    max_dev: Peak,
    max_u: Peak,
    max_v: Peak,
    max_loss: Peak,
    max_mod: Peak,
    max_central: Peak,
    final_central: Option<f64>,
    final_dev: f64,
    final_dev_modified: f64,
    previous: Option<Vec<f64>>,
    ref_error: f64,
    ref_error_modified: f64,
    max_drift_gd: f64,
    t_eps_gd: Option<f64>,
    t_eps_flow: Option<f64>,
    prev_flow_err: Option<(f64, f64)>,
}

impl<'a> Comparison<'a> {
    fn new(
        ctx: &'a Ctx<'a>,
        eta: f64,
        plain: &'a [Vec<f64>],
        plain_tight: &'a [Vec<f64>],
        modified: &'a ModifiedFlows,
        central: Option<&'a CentralRef>,
    ) -> Self {
        let n = ctx.settings.steps_for(eta);
        let comparable = plain
            .len()
            .min(plain_tight.len())
            .min(modified.coarse.states.len())
            .min(modified.tight.states.len());
        Self {
            ctx,
            eta,
            n,
            plain,
            plain_tight,
            modified,
            central,
            comparable,
            stride: (n + 1).div_ceil(ctx.settings.max_rows).max(1),
            ws: ctx.field.workspace(),
            rows: Vec::new(),
            last_row: None,
            max_dev: Peak::new(),
            max_u: Peak::new(),
            max_v: Peak::new(),
            max_loss: Peak::new(),
            max_mod: Peak::new(),
            max_central: Peak::new(),
            final_central: None,
            final_dev: f64::NAN,
            final_dev_modified: f64::NAN,
            previous: None,
            ref_error: 0.0,
            ref_error_modified: 0.0,
            max_drift_gd: 0.0,
            t_eps_gd: None,
            t_eps_flow: None,
            prev_flow_err: None,
        }
    }

    fn observe(&mut self, it: &Iterate<'_>) {
        let (j, loss_gd, x) = (it.step, it.loss, it.state);
        if j >= self.comparable {
            return;
        }
        let (ctx, eta) = (self.ctx, self.eta);
        let field = ctx.field;
        let rel = |x: &[f64]| (field.product(x) - ctx.x_star).norm() / ctx.x_star_norm;
        let drift = |x: &[f64]| (balance(field, x) - &ctx.d0).norm();
        let (plain, plain_tight) = (&self.plain[j], &self.plain_tight[j]);
        let mod_state = &self.modified.coarse.states[j];
        let mod_tight = &self.modified.tight.states[j];
        let t = j as f64 * eta;
        let (dev, dev_u, dev_v) = split_diff(field, x, plain_tight);
        let ref_err = (field.product(plain) - field.product(plain_tight)).norm();
        let dev_mod = (field.product(x) - field.product(mod_tight)).norm();
        let ref_err_mod = (field.product(mod_state) - field.product(mod_tight)).norm();
        let loss_flow = field.loss(plain_tight, &mut self.ws);
        let rel_gd = rel(x);
        let rel_flow = rel(plain_tight);
        let drift_gd = drift(x);
        self.max_dev.update(dev, j, t);
        self.max_u.update(dev_u, j, t);
        self.max_v.update(dev_v, j, t);
        self.max_loss.update((loss_gd - loss_flow).abs(), j, t);
        self.max_mod.update(dev_mod, j, t);
        self.final_dev = dev;
        self.final_dev_modified = dev_mod;
        self.ref_error = self.ref_error.max(ref_err);
        self.ref_error_modified = self.ref_error_modified.max(ref_err_mod);
        self.max_drift_gd = self.max_drift_gd.max(drift_gd);
        let eps = ctx.settings.epsilon;
        if self.t_eps_gd.is_none() && rel_gd < eps {
            self.t_eps_gd = Some(t);
        }
        if self.t_eps_flow.is_none() {
            self.t_eps_flow = first_passage(self.prev_flow_err, t, rel_flow, eps);
        }
        self.prev_flow_err = Some((t, rel_flow));
        // GD's two-step average of steps j − 1 and j against the central flow at (j − ½)η
        let mut central = (None, None, None, None);
        if let (Some(prev), Some(c)) = (self.previous.as_ref(), self.central) {
            if let Some(y) = c.states.get(j - 1) {
                let xbar: Vec<f64> = prev.iter().zip(x).map(|(a, b)| 0.5 * (a + b)).collect();
                let d = (field.product(&xbar) - field.product(y)).norm();
                self.max_central.update(d, j, t - 0.5 * eta);
                self.final_central = Some(d);
                central = (
                    Some(d),
                    Some(rel(&xbar)),
                    Some(rel(y)),
                    Some(c.active[j - 1]),
                );
            }
        }
        if self.central.is_some() {
            self.previous = Some(x.to_vec());
        }
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
            rel_error_modified: rel(mod_tight),
            drift_gd,
            drift_flow: drift(plain_tight),
            dev_central: central.0,
            dev_central_rel: central.0.map(|d| d / ctx.x_star_norm),
            rel_error_gd_mean: central.1,
            rel_error_central: central.2,
            active_central: central.3,
        };
        if j % self.stride == 0 {
            self.rows.push(row);
        } else {
            self.last_row = Some(row);
        }
    }

    fn finish(mut self, gd_status: Status) -> (SweepPoint, Vec<DeviationRow>) {
        // The last compared step always closes the table.
        if let Some(row) = self.last_row.take() {
            if self.rows.last().is_none_or(|r| r.step < row.step) {
                self.rows.push(row);
            }
        }
        let norm = self.ctx.x_star_norm;
        let last = self.rows.last();
        let (coarse, tight) = (&self.modified.coarse, &self.modified.tight);
        let point = SweepPoint {
            eta: self.eta,
            steps: self.n,
            compared_steps: last.map_or(0, |r| r.step),
            gd_status,
            modified_flow_status: if tight.end.status != Status::Completed {
                tight.end.status.clone()
            } else {
                coarse.end.status.clone()
            },
            max_dev_rel: self.max_dev.value / norm,
            max_dev: self.max_dev,
            max_dev_u: self.max_u,
            max_dev_v: self.max_v,
            max_loss_diff: self.max_loss,
            ref_error: self.ref_error,
            below_ref: self.max_dev.value <= self.ref_error,
            max_dev_modified_rel: self.max_mod.value / norm,
            max_dev_modified: self.max_mod,
            ref_error_modified: self.ref_error_modified,
            below_ref_modified: self.max_mod.value <= self.ref_error_modified,
            final_rel_error_gd: last.map_or(f64::NAN, |r| r.rel_error_gd),
            final_rel_error_flow: last.map_or(f64::NAN, |r| r.rel_error_flow),
            final_rel_error_modified: last.map_or(f64::NAN, |r| r.rel_error_modified),
            t_eps_gd: self.t_eps_gd,
            t_eps_flow: self.t_eps_flow,
            final_drift_gd: last.map_or(f64::NAN, |r| r.drift_gd),
            final_drift_flow: last.map_or(f64::NAN, |r| r.drift_flow),
            max_drift_gd: self.max_drift_gd,
            modified_solver: coarse.end.solver.clone(),
            modified_solver_tight: tight.end.solver.clone(),
            central: self.central.map(|c| CentralPoint {
                status: c.status.clone(),
                max_dev: self.max_central,
                max_dev_rel: self.max_central.value / norm,
                final_dev: self.final_central,
                first_reached: c.report.first_reached,
                max_active: c.report.max_active,
                events: c.report.events.len(),
                solver: c.stats.clone(),
                work: c.report.work.clone(),
            }),
            final_dev: self.final_dev,
            final_dev_modified: self.final_dev_modified,
        };
        (point, self.rows)
    }
}

/// The plain limit solved once for all step sizes at two tolerances, and the state where the
/// sharpness is measured.
struct References {
    plain: PerEta,
    tight: PerEta,
    sharp_state: Option<(f64, Vec<f64>)>,
    seconds: f64,
}

fn reference_flows(
    plain_limit: &Limit,
    etas: &[f64],
    settings: &SweepSettings,
    flow_opts: &FlowOptions,
) -> Result<References> {
    // One more output, at the sharpness time: a pseudo step size of one step.
    let t_sharp = settings.sharpness_time();
    let mut out_etas = etas.to_vec();
    out_etas.push(t_sharp);
    let mut steps: Vec<usize> = etas.iter().map(|&e| settings.steps_for(e)).collect();
    steps.push(1);
    let t = Instant::now();
    let (plain, tight) = join_beside(
        || plain_flow_all(plain_limit, &out_etas, &steps, flow_opts),
        || {
            let tight = flow_opts.tightened(TIGHTENING);
            plain_flow_all(plain_limit, &out_etas, &steps, &tight)
        },
    );
    let (plain, mut tight) = (plain?, tight?);
    let sharp_state = tight
        .states
        .pop()
        .and_then(|mut s| s.pop().filter(|_| s.len() == 1))
        .map(|x| (t_sharp, x));
    Ok(References {
        plain,
        tight,
        sharp_state,
        seconds: t.elapsed().as_secs_f64(),
    })
}

/// The modified and central flows per step size in parallel; then the method at every step
/// size in one batched run (each pass over the sensing matrix serves eight step sizes),
/// compared with the flows iterate by iterate.
fn compare_all(
    ctx: &Ctx,
    etas: &[f64],
    refs: &References,
    bar: &super::progress::ProgressBar,
) -> Result<(Vec<SweepPoint>, Vec<DeviationRow>)> {
    let flows: Vec<(ModifiedFlows, Option<CentralRef>)> = etas
        .par_iter()
        .map(|&eta| {
            let (m, c) = join_beside(|| modified_flows(ctx, eta), || central_flow(ctx, eta));
            bar.inc(1);
            Ok((m?, c?))
        })
        .collect::<Result<_>>()?;
    let mut comparisons: Vec<Comparison> = etas
        .iter()
        .zip(&flows)
        .enumerate()
        .map(|(i, (&eta, (m, c)))| {
            let (plain, tight) = (&refs.plain.states[i], &refs.tight.states[i]);
            Comparison::new(ctx, eta, plain, tight, m, c.as_ref())
        })
        .collect();
    let runs = comparisons
        .iter()
        .map(|c| {
            let opts = RunOptions {
                save: SaveAt::Nothing,
                ..RunOptions::new(c.eta, c.n, 1)
            };
            (ctx.optimizer.stepper(c.eta), ctx.x0.clone(), opts)
        })
        .collect();
    let statuses: Vec<Status> = Driver::batch(ctx.field, runs)
        .run(&mut |it: &Iterate<'_>| comparisons[it.run].observe(it))
        .into_iter()
        .map(|traj| traj.status)
        .collect();
    let mut points = Vec::with_capacity(etas.len());
    let mut deviations = Vec::new();
    for (c, status) in comparisons.into_iter().zip(statuses) {
        let (p, rows) = c.finish(status);
        points.push(p);
        deviations.extend(rows);
    }
    Ok((points, deviations))
}

/// Run a sweep with resolved settings on a set-up problem.
/// The largest η whose GD converged, as the stability report's bisection found it.
pub(super) fn bisected_limit(stability: Option<&StabilityReport>) -> Option<f64> {
    stability
        .and_then(|s| s.bisection.as_ref())
        .and_then(|b| b.limit)
}

pub fn run_sweep(
    setup: &Setup,
    settings: &SweepSettings,
    show_progress: bool,
) -> Result<SweepResult> {
    let start = Instant::now();
    let (cfg, problem) = (&setup.config, &setup.problem);
    let field_arc = setup.field();
    let optimizer = setup.optimizer()?;
    let ctx = Ctx::new(setup, settings, optimizer.clone(), &field_arc);
    // the plain limits of the jη methods do not depend on η
    let plain_limit = optimizer
        .limit(FlowVariant::Plain, field_arc.clone(), &ctx.x0, cfg.eta)
        .map_err(|why| Error::invalid("optimizer", optimizer.name(), why))?;
    let etas = settings.active_etas();
    let total_steps: usize = etas.iter().map(|&e| settings.steps_for(e)).sum();
    let bar = super::progress::bar(
        show_progress,
        3.0 * problem.op.entries_per_pass() as f64 * total_steps as f64,
        etas.len() as u64 + 2,
        "stage",
    );
    bar.set_message("reference flow (two tolerances)");
    let refs = reference_flows(&plain_limit, &etas, settings, &ctx.flow_opts)?;
    bar.inc(1);
    bar.set_message("step sizes");
    let t = Instant::now();
    let (points, deviations) = compare_all(&ctx, &etas, &refs, &bar)?;
    let points_seconds = t.elapsed().as_secs_f64();
    let plain_status = match (&refs.plain.status, &refs.tight.status) {
        (Status::Completed, s) => s.clone(),
        (s, _) => s.clone(),
    };
    let (fit_plain, fit_modified) = fits(&points, &plain_status);
    bar.set_message("stability limit");
    let t = Instant::now();
    // the bisection and 2/λ_max are GD's stability limit
    let first_shard = settings.shard.is_none_or(|s| s.index == 1);
    let stability = (first_shard && optimizer.is_gradient_descent())
        .then(|| stability_report(&ctx, refs.sharp_state, settings, cfg.seed));
    let stability_seconds = t.elapsed().as_secs_f64();
    bar.inc(1);
    bar.finish_and_clear();
    let summary = SweepSummary {
        provenance: Provenance::new(
            cfg.seed,
            sweep_config_table(setup)?,
            setup.from_file.clone(),
        ),
        sweep: settings.clone(),
        warnings: [
            sweep_warnings(cfg, optimizer.as_ref()),
            setup.warnings.clone(),
        ]
        .concat(),
        problem: ProblemInfo::new(problem),
        order_plain: fit_plain.order,
        order_modified: fit_modified.order,
        stability_limit: bisected_limit(stability.as_ref()),
        two_over_lambda_max: stability
            .as_ref()
            .and_then(StabilityReport::two_over_lambda_max),
        fit_plain,
        fit_modified,
        stability,
        reference: ReferenceSolves {
            status: plain_status,
            solver: refs.plain.stats,
            solver_tight: refs.tight.stats,
        },
        points,
        target_deviation: None,
        weak: None,
        operator_counts: problem.op.counts(),
        timings: SweepTimings {
            problem_seconds: setup.seconds,
            reference_seconds: refs.seconds,
            points_seconds,
            stability_seconds,
            total_seconds: setup.seconds + start.elapsed().as_secs_f64(),
        },
    };
    Ok(SweepResult {
        summary,
        deviations,
    })
}

/// The problem's warnings, and that the stability limit is GD's alone.
fn sweep_warnings(cfg: &Config, optimizer: &dyn Optimizer) -> Vec<String> {
    let mut warnings = cfg.problem_warnings();
    if !optimizer.is_gradient_descent() {
        warnings.push(format!(
            "the stability limit (bisection, 2/λ_max) is GD's: not computed for {}",
            optimizer.name()
        ));
    }
    warnings
}

/// Both order fits from the points (the sweep's, or a merge's).
pub(crate) fn fits(points: &[SweepPoint], plain_status: &Status) -> (OrderFit, OrderFit) {
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

/// The sharpness (the algebraically largest eigenvalue of ∇²f, by block Lanczos) at the
/// reference state at [`SweepSettings::sharpness_time`] (the start if the reference failed
/// before it), and the bisection started from 2/λ_max, or from 1/σ_1 when λ_max did not
/// converge (an unconverged estimate is reported as such, never used).
fn stability_report(
    ctx: &Ctx,
    sharp_state: Option<(f64, Vec<f64>)>,
    settings: &SweepSettings,
    seed: u64,
) -> StabilityReport {
    let (t_end, state) = sharp_state.unwrap_or((0.0, ctx.x0.clone()));
    let state = &state;
    let sharp = top_eigenpairs(ctx.field, state, &[], &EigenOptions::default(), seed);
    let steps_per_trial = settings.stability_steps;
    let sigma1 = ctx.setup.problem.target_sv[0];
    let guess = match sharp.lambda_max() {
        Some(l) if l > 0.0 => 2.0 / l,
        _ => 1.0 / sigma1,
    };
    let bisection = (steps_per_trial > 0).then(|| {
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
        bisection_start: guess,
        bisection,
        steps_per_trial,
    }
}

/// `rayon::join` for flows solved side by side: their passes share rayon's pool
/// ([`beside_other_work`]) rather than each taking the operator's spinning helpers.
fn join_beside<A: Send, B: Send>(
    a: impl FnOnce() -> A + Send,
    b: impl FnOnce() -> B + Send,
) -> (A, B) {
    rayon::join(|| beside_other_work(a), || beside_other_work(b))
}
