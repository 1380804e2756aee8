//! `gdflow run`: GD and a flow on one problem, compared at every t_j = jη.
//!
//! GD and the flow advance in lockstep: the flow is asked for its state at every jη (its
//! save-at hook), GD takes step j beside it, and the distance and balance drifts are measured
//! at every step, recorded or not. Only the recorded steps keep their quantities, and no state
//! is stored, so memory does not grow with the number of steps.

use std::sync::Arc;
use std::time::Instant;

use crate::analysis::{Quantity, Record, Recorder};
use crate::dynamics::flow::{solve_flow_with, Times};
use crate::dynamics::{Driver, Gd, Iterate, RunOptions, SaveAt, Status};
use crate::error::Result;
use crate::results::run::{Distance, DynamicsSummary, ProblemInfo, RunResult, RunSummary, Timings};
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

/// Run GD and the configured flow on a set-up problem.
pub fn run(setup: &Setup, extras: &RunExtras) -> Result<RunResult> {
    let start = Instant::now();
    let cfg = &setup.config;
    let problem = &setup.problem;
    let field = setup.field();
    let flow_field = setup.flow_field(cfg.flow, cfg.eta);
    let x0 = setup.start();
    let recorder =
        Recorder::new(field.as_ref(), &problem.x_star, &x0).with_quantities(&extras.quantities);
    let recorded = |j: usize| j % cfg.record_every == 0 || j == cfg.steps;
    let target_norm = problem.x_star.norm();

    let mut driver = Driver::new(
        field.as_ref(),
        Gd::new(),
        &x0,
        RunOptions {
            save: SaveAt::Nothing,
            ..RunOptions::new(cfg.eta, cfg.steps, cfg.record_every)
        },
    );
    let mut gd = Track::new();
    let mut flow = Track::new();
    let mut distance = Peak::new();
    let mut final_distance = None;
    let mut flow_state: Option<Vec<f64>> = None;
    let mut flow_ws = field.workspace();
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
            let ws = it.workspace.expect("GD keeps its workspace");
            gd.records
                .push(recorder.record_evaluated(it.step, it.t, it.state, ws));
        }
    };

    let times = Times::Grid {
        dt: cfg.eta,
        count: cfg.steps + 1,
    };
    let horizon = times.last();
    let pass = problem.op.entries_per_pass() as f64;
    // A Tsit45 step is 6 rhs evaluations; a few hundred steps is typical here.
    let bar = super::progress::bar(
        extras.progress,
        2.0 * pass * (6.0 * 300.0 + cfg.steps as f64),
        1000,
        "‰ of T",
    );
    bar.set_message(format!(
        "GD and the {} flow to T = {horizon}",
        cfg.flow.name()
    ));
    let flow_opts = cfg.flow_options();
    let solve_start = Instant::now();
    let (flow_status, solver) = solve_flow_with(
        flow_field.as_ref(),
        &x0,
        times,
        &flow_opts,
        &mut |j, t, y| {
            let t0 = Instant::now();
            flow.max_drift = flow.max_drift.max(recorder.balance_drift(y));
            if recorded(j) {
                flow.records.push(recorder.record(j, t, y, &mut flow_ws));
            }
            record_seconds += t0.elapsed().as_secs_f64();
            let t0 = Instant::now();
            flow_state = Some(y.to_vec());
            if driver.step() == j && !driver.is_done() {
                driver.advance(&mut |it: &Iterate<'_>| observe_gd(it, &flow_state));
            }
            gd_seconds += t0.elapsed().as_secs_f64();
        },
        &mut |t| {
            if horizon > 0.0 {
                bar.set_position((1000.0 * t / horizon).min(1000.0) as u64);
            }
        },
    )?;
    let solve_seconds = solve_start.elapsed().as_secs_f64();
    bar.finish_and_clear();
    // A flow that stopped early leaves GD to finish alone.
    let t0 = Instant::now();
    while driver.advance(&mut |it: &Iterate<'_>| observe_gd(it, &None)) {}
    gd_seconds += t0.elapsed().as_secs_f64();
    let gd_status = driver.finish().pop().expect("one run").status;

    let summary = RunSummary {
        provenance: setup.provenance(),
        warnings: cfg.warnings(),
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
        extra_columns: recorder.extra_columns(),
    })
}
