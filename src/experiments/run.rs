//! `gdflow run`: GD and a flow on one problem, compared at every t_j = jη.
//!
//! GD and the flow advance in lockstep: the flow is asked for its state at every jη (its
//! save-at hook), GD takes step j beside it, and the distance and balance drifts are measured
//! at every step, recorded or not. Only the recorded steps keep their quantities, and no state
//! is stored, so memory does not grow with the number of steps.
//!
//! With the central flow (MATH §8) the flow is also asked for (j + ½)η, where GD's two-step
//! average x̄_j = ½(x_j + x_{j+1}) is compared with it: the average cancels the period-2
//! oscillation GD settles into at the edge of stability.

use std::sync::Arc;
use std::time::Instant;

use crate::analysis::{Quantity, Record, Recorder};
use crate::config::FlowVariant;
use crate::dynamics::flow::{solve_central_flow_with, solve_flow_with, CentralOutput, Times};
use crate::dynamics::sharpness::{top_eigenpairs, EigenOptions};
use crate::dynamics::{Driver, Iterate, RunOptions, SaveAt, Status};
use crate::error::{Error, Result};
use crate::field::Field;
use crate::results::run::{
    CentralSummary, Distance, DynamicsSummary, EdgeOfStability, OptimizerSummary, ProblemInfo,
    RunResult, RunSummary, SharpnessCost, Timings,
};
use crate::results::sweep::Peak;

use super::Setup;

/// What a run records beyond the built-in quantities, and whether it shows progress.
#[derive(Clone, Default)]
pub struct RunExtras {
    /// Progress bars on stderr (see [`super::progress`]).
    pub progress: bool,
    /// Quantities added to every record (columns after the built-in ones).
    pub quantities: Vec<Arc<dyn Quantity>>,
}

/// What one dynamics measured along the way.
struct Track {
    records: Vec<Record>,
    max_drift: f64,
}

impl Track {
    fn new() -> Self {
        Self {
            records: Vec::new(),
            max_drift: 0.0,
        }
    }
    fn summary(&self, status: &Status) -> DynamicsSummary {
        let last = self.records.last();
        DynamicsSummary {
            status: status.clone(),
            final_t: last.map_or(0.0, |r| r.t),
            final_loss: last.map_or(f64::NAN, |r| r.loss),
            final_rel_error: last.map_or(f64::NAN, |r| r.rel_error),
            final_balance_drift: last.map_or(f64::NAN, |r| r.balance_drift),
            max_balance_drift: self.max_drift,
        }
    }
}

/// λ_max(∇²f) at records, warm-started from the last one (block Lanczos, MATH §2); an
/// estimate that misses its tolerance leaves the cell empty.
struct SharpnessTracker {
    vectors: Vec<Vec<f64>>,
    cost: SharpnessCost,
}

impl SharpnessTracker {
    fn new() -> Self {
        Self {
            vectors: Vec::new(),
            cost: SharpnessCost::default(),
        }
    }
    fn at(&mut self, field: &dyn Field, x: &[f64]) -> Option<f64> {
        let start = Instant::now();
        let top = top_eigenpairs(
            field,
            x,
            &self.vectors,
            &EigenOptions {
                tol: 1e-8,
                ..EigenOptions::default()
            },
            0,
        );
        self.cost.computations += 1;
        self.cost.hvps += top.hvps;
        self.cost.seconds += start.elapsed().as_secs_f64();
        if !top.converged {
            self.cost.unconverged += 1;
        }
        self.vectors = top.vectors.clone();
        top.lambda_max()
    }
}

/// Running means of the edge-of-stability comparison over a window of steps.
#[derive(Default)]
struct EosAccumulator {
    steps: usize,
    t_from: Option<f64>,
    t_to: f64,
    oscillation: f64,
    sigma_trace: f64,
    loss_gd: f64,
    loss_predicted: f64,
}

/// Run GD and the configured flow on a set-up problem.
pub fn run(setup: &Setup, extras: &RunExtras) -> Result<RunResult> {
    let start = Instant::now();
    let cfg = &setup.config;
    let problem = &setup.problem;
    let field = setup.field();
    let optimizer = setup.optimizer()?;
    let x0 = setup.start();
    let limit = optimizer
        .limit(cfg.flow, field.clone(), &x0, cfg.eta)
        .map_err(|why| Error::invalid("flow", cfg.flow.name(), why))?;
    let flow_field = limit.field.clone();
    let curvature = optimizer.curvature(field.clone());
    let central = cfg.flow == FlowVariant::Central;
    // the limit's time per step: η, or √η for momentum at the critical scaling
    let dt = optimizer.time_scale().per_step(cfg.eta);
    let recorder =
        Recorder::new(field.as_ref(), &problem.x_star, &x0).with_quantities(&extras.quantities);
    let recorded = |j: usize| j % cfg.record_every == 0 || j == cfg.steps;
    let sharp_due = |record: usize| cfg.sharpness_every > 0 && record % cfg.sharpness_every == 0;
    let target_norm = problem.x_star.norm();

    let mut driver = Driver::new(
        field.as_ref(),
        optimizer.stepper(cfg.eta),
        &x0,
        RunOptions {
            save: SaveAt::Nothing,
            ..RunOptions::new(cfg.eta, cfg.steps, cfg.record_every).with_dt(dt)
        },
    );
    let (mut gd, mut flow, mut mean) = (Track::new(), Track::new(), Track::new());
    let (mut sharp_gd, mut sharp_flow, mut sharp_mean) = (
        SharpnessTracker::new(),
        SharpnessTracker::new(),
        SharpnessTracker::new(),
    );
    let mut distance = Peak::new();
    let mut final_distance = None;
    let mut distance_mean = Peak::new();
    let mut final_distance_mean = None;
    let mut eos = EosAccumulator::default();
    let mut flow_state: Option<Vec<f64>> = None;
    // x_j and f(x_j) of the last GD iterate seen (for x̄_j and the averaged loss)
    let last_gd: std::cell::RefCell<Option<(usize, Vec<f64>, f64)>> = Default::default();
    let mut flow_ws = field.workspace();
    let mut method_ws = field.workspace();
    let (mut gd_seconds, mut record_seconds) = (0.0, 0.0);

    // GD's observer: drift at every step, the distance to the flow where it has reached t_j,
    // records at the recorded steps from the evaluation GD made anyway.
    let mut observe_gd = |it: &Iterate<'_>, flow_state: &Option<Vec<f64>>| {
        gd.max_drift = gd.max_drift.max(recorder.balance_drift(it.state));
        if let Some(y) = flow_state {
            let d = (field.product(it.state) - field.product(y)).norm();
            distance.update(d, it.step, it.t);
            final_distance = Some(d);
        }
        if recorded(it.step) {
            // the method's own evaluation at x_j where it made one (Nesterov's is at y_j)
            let mut rec = match it.workspace {
                Some(ws) => recorder.record_evaluated(it.step, it.t, it.state, ws),
                None => recorder.record(it.step, it.t, it.state, &mut method_ws),
            };
            if sharp_due(gd.records.len()) {
                rec.sharpness = sharp_gd.at(curvature.as_ref(), it.state);
            }
            gd.records.push(rec);
        }
        *last_gd.borrow_mut() = Some((it.step, it.state.to_vec(), it.loss));
    };

    let half = if central { 2 } else { 1 };
    let times = Times::Grid {
        dt: dt / half as f64,
        count: half * cfg.steps + 1,
    };
    let horizon = times.last();
    let pass = problem.op.entries_per_pass() as f64;
    // A DOP853 step is about 16 rhs evaluations; a hundred steps is typical here.
    let bar = super::progress::bar(
        extras.progress,
        pass * (16.0 * 100.0 + 2.0 * cfg.steps as f64),
        1000,
        "‰ of T",
    );
    bar.set_message(format!(
        "{} and its {} limit to T = {horizon}",
        optimizer.name(),
        cfg.flow.name()
    ));
    let flow_opts = cfg.flow_options();
    let solve_start = Instant::now();
    let mut on_step = |t: f64| {
        if horizon > 0.0 {
            bar.set_position((1000.0 * t / horizon).min(1000.0) as u64);
        }
    };
    // One output of the flow: at t_j = jη (i = half·j) a flow record and GD's step j; with
    // the central flow, at (j + ½)η GD's average.
    let mut on_output = |i: usize, t: f64, y: &[f64], what: Option<&CentralOutput>| {
        let y = limit.position(y);
        let t0 = Instant::now();
        if i % half == 1 {
            let j = i / half;
            if let Some((jj, xj, _)) = last_gd.borrow().as_ref().filter(|l| l.0 == j) {
                if driver.step() == j + 1 && (j < cfg.steps) {
                    let xbar: Vec<f64> = xj
                        .iter()
                        .zip(driver.state(0))
                        .map(|(a, b)| 0.5 * (a + b))
                        .collect();
                    let d = (field.product(&xbar) - field.product(y)).norm();
                    distance_mean.update(d, *jj, t);
                    final_distance_mean = Some(d);
                    if recorded(j) {
                        let mut rec = recorder.record(j, t, &xbar, &mut flow_ws);
                        if sharp_due(mean.records.len()) {
                            rec.sharpness = sharp_mean.at(field.as_ref(), &xbar);
                        }
                        mean.records.push(rec);
                    }
                }
            }
            record_seconds += t0.elapsed().as_secs_f64();
            return;
        }
        let j = i / half;
        flow.max_drift = flow.max_drift.max(recorder.balance_drift(y));
        if recorded(j) {
            // GD's step j below and this record both need the field, at x_j and at y(t_j):
            // one pass over the sensing matrix serves both
            if driver.step() == j {
                driver.evaluate_beside(y, &mut flow_ws);
            }
            let mut rec = recorder.record(j, t, y, &mut flow_ws);
            match what {
                Some(w) => {
                    rec.sharpness = Some(w.sharpness);
                    rec.sigma_trace = Some(w.sigma_trace);
                    rec.active = Some(w.active);
                }
                None => {
                    if sharp_due(flow.records.len()) {
                        rec.sharpness = sharp_flow.at(curvature.as_ref(), y);
                    }
                }
            }
            flow.records.push(rec);
        }
        record_seconds += t0.elapsed().as_secs_f64();
        let t0 = Instant::now();
        flow_state = Some(y.to_vec());
        if driver.step() == j && !driver.is_done() {
            driver.advance(&mut |it: &Iterate<'_>| observe_gd(it, &flow_state));
        }
        gd_seconds += t0.elapsed().as_secs_f64();
        // the edge-of-stability comparison over the second half of the run, once active
        if let (Some(w), Some((jj, xj, fj))) = (what, last_gd.borrow().as_ref()) {
            if *jj == j && t >= 0.5 * horizon && w.active > 0 {
                let osc: f64 = w
                    .vectors
                    .iter()
                    .map(|q| {
                        q.iter()
                            .zip(xj.iter().zip(y))
                            .map(|(qi, (a, b))| qi * (a - b))
                            .sum::<f64>()
                            .powi(2)
                    })
                    .sum();
                let f_flow = field.loss(y, &mut flow_ws);
                eos.steps += 1;
                eos.t_from.get_or_insert(t);
                eos.t_to = t;
                eos.oscillation += osc;
                eos.sigma_trace += w.sigma_trace;
                eos.loss_gd += fj;
                eos.loss_predicted += f_flow + w.sigma_trace / cfg.eta;
            }
        }
    };
    let (flow_status, solver, central_report) = if central {
        let (status, stats, report) = solve_central_flow_with(
            flow_field.clone(),
            cfg.eta,
            &x0,
            times,
            &flow_opts,
            true,
            &mut |i, t, y, w| on_output(i, t, y, Some(w)),
            &mut on_step,
        );
        (status, stats, Some(report))
    } else {
        let (status, stats) = solve_flow_with(
            flow_field.as_ref(),
            &limit.start,
            times,
            &flow_opts,
            &mut |i, t, y| on_output(i, t, y, None),
            &mut on_step,
        )?;
        (status, stats, None)
    };
    let solve_seconds = solve_start.elapsed().as_secs_f64();
    bar.finish_and_clear();
    // A flow that stopped early leaves GD to finish alone.
    let t0 = Instant::now();
    while driver.advance(&mut |it: &Iterate<'_>| observe_gd(it, &None)) {}
    gd_seconds += t0.elapsed().as_secs_f64();
    let gd_status = driver.finish().pop().expect("one run").status;

    let central = central_report.map(|report| {
        let n = eos.steps as f64;
        CentralSummary {
            report,
            distance_mean: final_distance_mean.map(|final_distance| Distance {
                max: distance_mean.value,
                max_relative: distance_mean.value / target_norm,
                step: distance_mean.step,
                t: distance_mean.t,
                final_distance,
            }),
            edge_of_stability: (eos.steps > 0).then(|| EdgeOfStability {
                t_from: eos.t_from.unwrap_or(0.0),
                t_to: eos.t_to,
                steps: eos.steps,
                oscillation_second_moment: eos.oscillation / n,
                sigma_trace: eos.sigma_trace / n,
                gd_mean_loss: eos.loss_gd / n,
                predicted_loss: eos.loss_predicted / n,
            }),
        }
    });
    let mut sharpness_cost = sharp_gd.cost;
    sharpness_cost.absorb(&sharp_flow.cost);
    sharpness_cost.absorb(&sharp_mean.cost);
    let summary = RunSummary {
        provenance: setup.provenance(),
        warnings: [
            cfg.warnings(),
            optimizer.warnings(&setup.optimizer_context()),
        ]
        .concat(),
        problem: ProblemInfo::new(problem),
        gd: gd.summary(&gd_status),
        flow: flow.summary(&flow_status),
        distance: final_distance.map(|final_distance| Distance {
            max: distance.value,
            max_relative: distance.value / target_norm,
            step: distance.step,
            t: distance.t,
            final_distance,
        }),
        two_over_eta: 2.0 / cfg.eta,
        optimizer: OptimizerSummary {
            name: optimizer.name(),
            parameters: optimizer.parameters(),
            time_scale: optimizer.time_scale(),
            limit: limit.equation.clone(),
            balance: if optimizer.plain_limit_conserves_balance() && cfg.flow == FlowVariant::Plain
            {
                "conserved by the flow (its drift measures the solver's error); GD's drift is O(η²) a step (MATH §3)".into()
            } else {
                "not conserved: both drifts are the dynamics' own".into()
            },
        },
        sharpness_cost,
        central,
        solver,
        operator_counts: problem.op.counts(),
        timings: Timings {
            problem_seconds: setup.seconds,
            gd_seconds,
            flow_seconds: solve_seconds - gd_seconds - record_seconds,
            record_seconds,
            total_seconds: setup.seconds + start.elapsed().as_secs_f64(),
        },
    };
    Ok(RunResult {
        summary,
        gd: gd.records,
        flow: flow.records,
        gd_mean: mean.records,
        extra_columns: recorder.extra_columns(),
    })
}
