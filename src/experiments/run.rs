//! `gdflow run`: GD and a flow on one problem, compared at every t_j = jη.
//!
//! GD and the flow advance in lockstep: the flow is asked for its state at every jη (its
//! save-at hook), GD takes step j beside it, and the distance and balance drifts are measured
//! at every step, recorded or not. Only the recorded steps keep their quantities, and no state
//! is stored beyond the outputs waiting below, so memory does not grow with the number of
//! steps.
//!
//! Beside an ODE of the method's own field (the gradient flow of GD, alternating GD or SGD) the
//! output at t_j waits for the
//! flow's next right-hand sides, whose passes over the sensing matrix carry the record's
//! evaluation at y(t_j) and GD's at x_j ([`Passenger`]); the output is then completed as it
//! would have been at once. At most [`WAITING_BYTES`] of them wait; the rest take passes of
//! their own.
//!
//! With the central flow (MATH §8) the flow is also asked for (j + ½)η, where GD's two-step
//! average x̄_j = ½(x_j + x_{j+1}) is compared with it: the average cancels the period-2
//! oscillation GD settles into at the edge of stability.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use crate::analysis::{Quantity, Record, Recorder};
use crate::config::{Config, FlowVariant};
use crate::dynamics::flow::{CentralReport, Passenger, Times};
use crate::dynamics::optimizer::{End, Limit, Optimizer, Output};
use crate::dynamics::sharpness::{Carry, EigenOptions, Trail};
use crate::dynamics::{Driver, Iterate, RunOptions, SaveAt, Status, Stepper};
use crate::error::{Error, Result};
use crate::field::{Field, Workspace};
use crate::results::run::{
    CentralSummary, Distance, DynamicsSummary, EdgeOfStability, OptimizerSummary, ProblemInfo,
    RunResult, RunSummary, SharpnessCost, States, Timings,
};
use crate::results::shard::Shard;
use crate::results::sweep::Peak;

use super::Setup;

/// What a run records beyond the built-in quantities, and whether it shows progress.
#[derive(Clone, Default)]
pub struct RunExtras {
    /// Progress bars on stderr (see [`super::progress`]).
    pub progress: bool,
    /// Quantities added to every record (columns after the built-in ones).
    pub quantities: Vec<Arc<dyn Quantity>>,
    /// Run only this part of the ensemble's replicas (`--replicas N --shard i/N`): the result
    /// holds its blocks' accumulators for `gdflow merge`, no statistics of its own.
    pub shard: Option<Shard>,
}

/// What one dynamics measured along the way.
struct Track {
    records: Vec<Record>,
    max_drift: f64,
    /// Its states at the recorded steps, when `save_states` asks for them.
    states: Option<States>,
    /// The state of its last record when that record was made without the spectral columns
    /// (`spectrum_every`): filled in if the track ends there (diverged, failed).
    unmeasured: Option<Vec<f64>>,
}

impl Track {
    fn new(keep_states: bool) -> Self {
        Self {
            records: Vec::new(),
            max_drift: 0.0,
            states: keep_states.then(States::default),
            unmeasured: None,
        }
    }
    fn push(&mut self, rec: Record, state: &[f64]) {
        if let Some(s) = &mut self.states {
            s.push(rec.step, rec.t, state);
        }
        self.unmeasured = rec.get("rho").is_none().then(|| state.to_vec());
        self.records.push(rec);
    }
    /// Every track's last record carries the spectral columns (unless `spectrum_every` is 0),
    /// wherever the track ended: measured here when the cadence left it without them.
    fn measure_last(&mut self, recorder: &Recorder<'_>, ws: &mut Workspace, every: usize) {
        if let (Some(x), Some(rec), true) =
            (self.unmeasured.take(), self.records.last_mut(), every > 0)
        {
            recorder.fill_spectrum(rec, &x, ws);
        }
    }
    fn summary(&self, status: &Status) -> DynamicsSummary {
        let last = self.records.last();
        DynamicsSummary {
            status: status.clone(),
            final_t: last.map_or(0.0, |r| r.t),
            final_loss: last.map_or(f64::NAN, |r| r.loss()),
            final_rel_error: last.map_or(f64::NAN, |r| r.rel_error()),
            final_balance_drift: last.map_or(f64::NAN, |r| r.balance_drift()),
            max_balance_drift: self.max_drift,
        }
    }
}

/// λ_max(∇²f) at records, warm-started from the last one (block Lanczos, MATH §2); an
/// estimate that misses its tolerance leaves the cell empty.
struct SharpnessTracker {
    trail: Trail,
    cost: SharpnessCost,
}

/// Ritz vectors beyond the top one kept as the next record's start: where the top one turns
/// to from step to step.
const SHARPNESS_WARM_EXTRA: usize = 1;
/// Each record's solve starts from the top vector predicted at its state by a model linear in the
/// state through at most this many records before it ([`Carry::Predicted`], as the central flow's
/// own solves do), beside the last record's next vector. Along a flow the records lie on a smooth
/// path; at the edge of stability GD's iterates alternate between two such paths, both of which the
/// model, a function of the state, fits. Against the last record's vectors and the top vectors of
/// the four before it (the record two back is nearer than the last there), with the same tolerance
/// and values within 1e-11: 16 155 → 12 358 products on the default run with `--sharpness-every 1`
/// (GD's and the flow's 2002 records), 9334 → 6373 for GD's iterates and averages in the default
/// problem's central-flow run at η = 1, 30 093 → 16 168 in the README's 8 × 7 one (2000 steps);
/// through 24 and 48 records 11 885 and 13 496, 6373 both, 16 435 and 15 980.
const SHARPNESS_PREDICTION_POINTS: usize = 32;

impl SharpnessTracker {
    fn new() -> Self {
        Self {
            trail: Trail::default(),
            cost: SharpnessCost::default(),
        }
    }
    fn at(&mut self, field: &dyn Field, x: &[f64]) -> Option<f64> {
        let start = Instant::now();
        let top = self.trail.solve(
            field,
            x,
            &EigenOptions {
                tol: 1e-8,
                warm_extra: SHARPNESS_WARM_EXTRA,
                ..EigenOptions::default()
            },
            Carry::Predicted(SHARPNESS_PREDICTION_POINTS),
            0,
        );
        self.cost.computations += 1;
        self.cost.hvps += top.hvps;
        self.cost.seconds += start.elapsed().as_secs_f64();
        if !top.converged {
            self.cost.unconverged += 1;
        }
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

/// The distance of one comparison: its largest value and its last.
#[derive(Default)]
struct Gap {
    peak: Option<Peak>,
    last: Option<f64>,
}

impl Gap {
    fn update(&mut self, d: f64, step: usize, t: f64) {
        self.peak.get_or_insert_with(Peak::new).update(d, step, t);
        self.last = Some(d);
    }
    fn summary(&self, target_norm: f64) -> Option<Distance> {
        let (peak, last) = (self.peak.as_ref()?, self.last?);
        Some(Distance {
            max: peak.value,
            max_relative: peak.value / target_norm,
            step: peak.step,
            t: peak.t,
            final_distance: last,
        })
    }
}

/// Everything measured along a run: fed by the method's observer at every step and by the
/// limit's outputs, in lockstep.
struct Comparison<'a> {
    cfg: &'a Config,
    field: &'a dyn Field,
    curvature: &'a dyn Field,
    recorder: Recorder<'a>,
    /// The method, its limit, and (central flow) GD's two-step average.
    method: Track,
    flow: Track,
    mean: Track,
    sharp_method: SharpnessTracker,
    sharp_flow: SharpnessTracker,
    sharp_mean: SharpnessTracker,
    distance: Gap,
    distance_mean: Gap,
    eos: EosAccumulator,
    /// The limit's position at the last t_j it reached.
    flow_state: Option<Vec<f64>>,
    /// x_j and f(x_j) of the last iterate seen (for x̄_j and the averaged loss).
    last: Option<(usize, Vec<f64>, f64)>,
    flow_ws: Workspace,
    method_ws: Workspace,
    method_seconds: f64,
    record_seconds: f64,
    /// ‖X*‖, the scale of `distance_rel`.
    target_norm: f64,
    /// The limit's outputs whose record and method step wait for a pass of the limit's solve
    /// to ride on ([`Comparison::ride`]), oldest first, and how many may wait.
    waiting: VecDeque<Waiting>,
    max_waiting: usize,
    /// The method's evaluations and the records' that rode on the limit's passes.
    riding: (usize, usize),
    /// GD's two-step average at (j + ½)η and the limit there, held until x_{j+1} has passed
    /// its divergence test (made when it is evaluated, after the limit reached (j + ½)η): an
    /// average with a diverged iterate is not a state before the divergence.
    pending_mean: Option<PendingMean>,
    /// Where the averages' records evaluate (`flow_ws` holds the limit's record at t_j when
    /// the average waiting for x_{j+1} is completed).
    mean_ws: Workspace,
}

/// GD's two-step average ½(x_j + x_{j+1}) and the limit's state at (j + ½)η.
struct PendingMean {
    j: usize,
    t: f64,
    xbar: Vec<f64>,
    y: Vec<f64>,
}

/// A limit's output at t_j, held until its record's evaluation and the method's at x_j have
/// ridden on the limit's own passes over the sensing matrix.
struct Waiting {
    j: usize,
    t: f64,
    state: Vec<f64>,
    columns: Vec<(&'static str, f64)>,
    /// Its record's evaluation is in `flow_ws`.
    measured: bool,
}

/// The memory the outputs waiting for passes to ride on may hold: beyond it the oldest is
/// completed with passes of its own (a solver's steps can span many of the method's while the
/// state is small, and shorter steps later have passes to spare).
const WAITING_BYTES: usize = 16 << 20;

impl<'a> Comparison<'a> {
    fn new(
        cfg: &'a Config,
        field: &'a dyn Field,
        curvature: &'a dyn Field,
        recorder: Recorder<'a>,
    ) -> Self {
        Self {
            cfg,
            field,
            curvature,
            target_norm: recorder.x_star().norm(),
            recorder,
            method: Track::new(cfg.save_states),
            // the ensemble's distances need the limit's positions at the recorded steps
            flow: Track::new(cfg.save_states || cfg.replicas > 1),
            mean: Track::new(cfg.save_states),
            sharp_method: SharpnessTracker::new(),
            sharp_flow: SharpnessTracker::new(),
            sharp_mean: SharpnessTracker::new(),
            distance: Gap::default(),
            distance_mean: Gap::default(),
            eos: EosAccumulator::default(),
            flow_state: None,
            last: None,
            flow_ws: field.workspace(),
            method_ws: field.workspace(),
            method_seconds: 0.0,
            record_seconds: 0.0,
            waiting: VecDeque::new(),
            max_waiting: (WAITING_BYTES / (8 * field.state_len().max(1))).max(1),
            riding: (0, 0),
            pending_mean: None,
            mean_ws: field.workspace(),
        }
    }

    fn recorded(&self, j: usize) -> bool {
        j % self.cfg.record_every == 0 || j == self.cfg.steps
    }
    fn sharp_due(&self, records: usize) -> bool {
        self.cfg.sharpness_every > 0 && records % self.cfg.sharpness_every == 0
    }
    /// Whether the record a track is about to make (its `records`-th) carries the spectral
    /// columns: every `spectrum_every`-th (the track's last gets them at the end, wherever it
    /// ended: [`Track::measure_last`]).
    fn spectrum_due(&self, records: usize) -> bool {
        let every = self.cfg.spectrum_every;
        every > 0 && records % every == 0
    }

    /// The method's iterate j: drift at every step, the distance to the limit where it has
    /// reached t_j (`beside_flow`), a record at the recorded steps from the method's own
    /// evaluation at x_j where it made one (Nesterov's is at y_j).
    fn observe(&mut self, it: &Iterate<'_>, beside_flow: bool) {
        // x_j passed its divergence test: the average ending at it stands
        if let Some(mean) = self.pending_mean.take() {
            if mean.j + 1 == it.step {
                let t0 = Instant::now();
                self.complete_mean(mean);
                self.record_seconds += t0.elapsed().as_secs_f64();
            }
        }
        let drift = self.recorder.balance_drift(it.state);
        self.method.max_drift = self.method.max_drift.max(drift);
        let mut distance = None;
        if let Some(y) = self.flow_state.as_ref().filter(|_| beside_flow) {
            let d = (self.field.product(it.state) - self.field.product(y)).norm();
            self.distance.update(d, it.step, it.t);
            distance = Some(d);
        }
        if self.recorded(it.step) {
            let spectrum = self.spectrum_due(self.method.records.len());
            let mut rec = match it.workspace {
                Some(ws) => self
                    .recorder
                    .record_evaluated_with(it.step, it.t, it.state, ws, spectrum),
                None => self.recorder.record_with(
                    it.step,
                    it.t,
                    it.state,
                    &mut self.method_ws,
                    spectrum,
                ),
            };
            if self.sharp_due(self.method.records.len()) {
                rec.set("sharpness", self.sharp_method.at(self.curvature, it.state));
            }
            rec.set("distance", distance);
            rec.set("distance_rel", distance.map(|d| d / self.target_norm));
            self.method.push(rec, it.state);
        }
        self.last = Some((it.step, it.state.to_vec(), it.loss));
    }

    /// The central flow at (j + ½)η against GD's two-step average ½(x_j + x_{j+1}), held until
    /// x_{j+1} has passed its divergence test ([`Comparison::complete_mean`]).
    fn average_output(&mut self, j: usize, t: f64, y: &[f64], driver: &Driver<'_, Method>) {
        let Some((jj, xj, _)) = self.last.as_ref().filter(|l| l.0 == j) else {
            return;
        };
        if driver.step() != j + 1 || j >= self.cfg.steps {
            return;
        }
        let xbar: Vec<f64> = xj
            .iter()
            .zip(driver.state(0))
            .map(|(a, b)| 0.5 * (a + b))
            .collect();
        self.pending_mean = Some(PendingMean {
            j: *jj,
            t,
            xbar,
            y: y.to_vec(),
        });
    }

    /// The average at (j + ½)η once x_{j+1} has passed its divergence test: its distance to the
    /// limit, and its record at the recorded steps.
    fn complete_mean(&mut self, mean: PendingMean) {
        let PendingMean { j, t, xbar, y } = mean;
        let d = (self.field.product(&xbar) - self.field.product(&y)).norm();
        self.distance_mean.update(d, j, t);
        if self.recorded(j) {
            let spectrum = self.spectrum_due(self.mean.records.len());
            let mut rec = self
                .recorder
                .record_with(j, t, &xbar, &mut self.mean_ws, spectrum);
            if self.sharp_due(self.mean.records.len()) {
                rec.set("sharpness", self.sharp_mean.at(self.field, &xbar));
            }
            rec.set("distance", Some(d));
            rec.set("distance_rel", Some(d / self.target_norm));
            self.mean.push(rec, &xbar);
        }
    }

    /// The limit at t_j: its drift, its record at the recorded steps (sharing a pass over the
    /// sensing matrix with the method's evaluation at x_j, unless a pass of the limit's
    /// carried it), then the method's step j.
    fn limit_output(
        &mut self,
        j: usize,
        t: f64,
        y: &[f64],
        columns: &[(&'static str, f64)],
        driver: &mut Driver<'_, Method>,
    ) {
        let t0 = Instant::now();
        self.flow.max_drift = self.flow.max_drift.max(self.recorder.balance_drift(y));
        if self.recorded(j) {
            let spectrum = self.spectrum_due(self.flow.records.len());
            let gradient = self.recorder.needs_gradient(spectrum);
            let held = match gradient {
                true => self.flow_ws.holds(y),
                false => self.flow_ws.holds_loss(y),
            };
            if driver.step() == j && !held {
                let t1 = Instant::now();
                if driver.evaluate_beside(y, &mut self.flow_ws, gradient) {
                    // the method's own evaluation, which the record's rode on: its time
                    let shared = t1.elapsed().as_secs_f64();
                    self.method_seconds += shared;
                    self.record_seconds -= shared;
                }
            }
            let mut rec = self
                .recorder
                .record_with(j, t, y, &mut self.flow_ws, spectrum);
            // the limit's own columns, its sharpness at the --sharpness-every cadence of every
            // dynamics; the sharpness by Lanczos where it brings none
            let sharp_due = self.sharp_due(self.flow.records.len());
            for (name, v) in columns {
                if *name != "sharpness" || sharp_due {
                    rec.set(name, Some(*v));
                }
            }
            if rec.sharpness().is_none() && sharp_due {
                rec.set("sharpness", self.sharp_flow.at(self.curvature, y));
            }
            self.flow.push(rec, y);
        }
        self.record_seconds += t0.elapsed().as_secs_f64();
        let t0 = Instant::now();
        self.flow_state = Some(y.to_vec());
        if driver.step() == j && !driver.is_done() {
            driver.advance(&mut |it: &Iterate<'_>| self.observe(it, true));
        }
        self.method_seconds += t0.elapsed().as_secs_f64();
    }

    /// One of the limit's passes over the sensing matrix, about to evaluate `field` at `x`
    /// into `ws`: the oldest waiting output's record evaluation and the method's at x_j ride
    /// on it together where the record needs only the loss and the method can share
    /// ([`Stepper::evaluate_beside_with_loss`]), or else the record's and, on the next pass,
    /// the method's; the output is then complete ([`Comparison::limit_output`] finds both
    /// done). Outputs that need neither are completed on the way. Results are those of
    /// separate passes bit for bit ([`Field::evaluate_pair_beside_loss`]).
    fn ride(
        &mut self,
        field: &dyn Field,
        x: &[f64],
        ws: &mut Workspace,
        driver: &mut Driver<'_, Method>,
    ) {
        // the records and the method evaluate `self.field`; the pass must be of that field
        if !std::ptr::addr_eq(field as *const dyn Field, self.field as *const dyn Field) {
            return;
        }
        while let Some(front) = self.waiting.front() {
            if self.recorded(front.j) && !front.measured {
                let spectrum = self.spectrum_due(self.flow.records.len());
                let y = &front.state;
                let gradient = self.recorder.needs_gradient(spectrum);
                // a record that needs only the loss and the method's step, both on this pass
                if !gradient
                    && driver.step() == front.j
                    && driver.evaluate_beside_with_loss((x, ws), (y, &mut self.flow_ws))
                {
                    self.riding.0 += 1;
                    self.riding.1 += 1;
                    let w = self.waiting.pop_front().expect("a front");
                    self.limit_output(w.j, w.t, &w.state, &w.columns, driver);
                    return;
                }
                crate::field::evaluate_beside(field, (x, ws), (y, &mut self.flow_ws), gradient);
                self.waiting[0].measured = true;
                self.riding.1 += 1;
                return;
            }
            let w = self.waiting.pop_front().expect("a front");
            let steps = driver.step() == w.j && !driver.is_done();
            if steps && driver.evaluate_beside(x, ws, true) {
                self.riding.0 += 1;
            }
            self.limit_output(w.j, w.t, &w.state, &w.columns, driver);
            if steps {
                return;
            }
        }
    }

    /// Hold the limit's output at t_j until passes of its solve can carry its evaluations
    /// ([`Comparison::ride`]), completing the oldest with passes of its own beyond
    /// [`WAITING_BYTES`].
    fn wait(&mut self, j: usize, t: f64, out: &Output<'_>, driver: &mut Driver<'_, Method>) {
        self.waiting.push_back(Waiting {
            j,
            t,
            state: out.state.to_vec(),
            columns: out.columns.clone(),
            measured: false,
        });
        if self.waiting.len() > self.max_waiting {
            self.complete_oldest(driver);
        }
    }

    /// Complete the oldest waiting output with passes of its own; false if none waits.
    fn complete_oldest(&mut self, driver: &mut Driver<'_, Method>) -> bool {
        let Some(w) = self.waiting.pop_front() else {
            return false;
        };
        self.limit_output(w.j, w.t, &w.state, &w.columns, driver);
        true
    }

    /// The edge-of-stability comparison over the second half of the run, while the limit
    /// holds directions: the method's oscillation along them against tr Σ, its loss against
    /// f + tr Σ/η (MATH §8).
    fn edge_of_stability(&mut self, j: usize, t: f64, out: &Output<'_>, horizon: f64) {
        let Some((jj, xj, fj)) = self.last.as_ref() else {
            return;
        };
        if *jj != j || t < 0.5 * horizon || out.directions.is_empty() {
            return;
        }
        let (y, sigma_trace) = (out.state, column(out, "sigma_trace"));
        let osc: f64 = out
            .directions
            .iter()
            .map(|q| {
                q.iter()
                    .zip(xj.iter().zip(y))
                    .map(|(qi, (a, b))| qi * (a - b))
                    .sum::<f64>()
                    .powi(2)
            })
            .sum();
        let fj = *fj;
        // held in `flow_ws` where t_j was recorded
        let f_flow = self.field.evaluate_loss(y, &mut self.flow_ws);
        let e = &mut self.eos;
        e.steps += 1;
        e.t_from.get_or_insert(t);
        e.t_to = t;
        e.oscillation += osc;
        e.sigma_trace += sigma_trace;
        e.loss_gd += fj;
        e.loss_predicted += f_flow + sigma_trace / self.cfg.eta;
    }

    /// The central flow's summary beside its solver's report.
    fn central_summary(&self, report: CentralReport, target_norm: f64) -> CentralSummary {
        let (e, n) = (&self.eos, self.eos.steps as f64);
        CentralSummary {
            report,
            distance_mean: self.distance_mean.summary(target_norm),
            distance_plain: None,
            edge_of_stability: (e.steps > 0).then(|| EdgeOfStability {
                t_from: e.t_from.unwrap_or(0.0),
                t_to: e.t_to,
                steps: e.steps,
                oscillation_second_moment: e.oscillation / n,
                sigma_trace: e.sigma_trace / n,
                gd_mean_loss: e.loss_gd / n,
                predicted_loss: e.loss_predicted / n,
            }),
        }
    }

    fn sharpness_cost(&self) -> SharpnessCost {
        let mut cost = self.sharp_method.cost.clone();
        cost.absorb(&self.sharp_flow.cost);
        cost.absorb(&self.sharp_mean.cost);
        cost
    }
}

/// The method a run steps: whichever optimiser the set-up names.
type Method = Box<dyn Stepper>;

/// The comparison and its method, shared by the limit's outputs and its passes' passenger.
type Lockstep<'c, 'a, 'f> = RefCell<(&'c mut Comparison<'a>, &'c mut Driver<'f, Method>)>;

/// The records and the method's steps as a [`Passenger`] on the limit's passes.
struct Riders<'l, 'c, 'a, 'f>(&'l Lockstep<'c, 'a, 'f>);

impl Passenger for Riders<'_, '_, '_, '_> {
    fn board(&self, field: &dyn Field, x: &[f64], ws: &mut Workspace) {
        // never re-entered: the outputs are handed over between passes
        if let Ok(mut shared) = self.0.try_borrow_mut() {
            let (cmp, driver) = &mut *shared;
            cmp.ride(field, x, ws, driver);
        }
    }
}

/// A named column of a limit's output (NaN where it brings none).
fn column(out: &Output<'_>, name: &str) -> f64 {
    out.columns
        .iter()
        .find(|c| c.0 == name)
        .map_or(f64::NAN, |c| c.1)
}

/// What the summary says of the optimiser and its limit.
fn optimizer_summary(
    optimizer: &dyn Optimizer,
    limit: &Limit,
    flow: FlowVariant,
) -> OptimizerSummary {
    let conserved = optimizer.plain_limit_conserves_balance() && flow == FlowVariant::Plain;
    OptimizerSummary {
        name: optimizer.name(),
        parameters: optimizer.parameters(),
        time_scale: optimizer.time_scale(),
        limit: limit.equation.clone(),
        balance: if conserved {
            "conserved by the flow (its drift measures the solver's error); GD's drift is O(η²) \
             a step (MATH §3)"
                .into()
        } else {
            "not conserved: both drifts are the dynamics' own".into()
        },
    }
}

/// Run the configured optimiser and its configured limit on a set-up problem, in lockstep.
pub fn run(setup: &Setup, extras: &RunExtras) -> Result<RunResult> {
    let start = Instant::now();
    let (cfg, problem) = (&setup.config, &setup.problem);
    let field = setup.field();
    let optimizer = setup.optimizer()?;
    let x0 = setup.start();
    let limit = optimizer
        .limit(cfg.flow, field.clone(), &x0, cfg.eta)
        .map_err(|why| Error::invalid("flow", cfg.flow.name(), why))?;
    let curvature = optimizer.curvature(field.clone());
    // the limit's time per step: η, or √η for momentum at the critical scaling
    let dt = optimizer.time_scale().per_step(cfg.eta);
    let mut driver = Driver::new(
        field.as_ref(),
        optimizer.stepper(cfg.eta),
        &x0,
        RunOptions {
            save: SaveAt::Nothing,
            ..RunOptions::new(cfg.eta, cfg.steps, cfg.record_every).with_dt(dt)
        },
    );
    let recorder =
        Recorder::new(field.as_ref(), &problem.x_star, &x0).with_quantities(&extras.quantities);
    let mut cmp = Comparison::new(cfg, field.as_ref(), curvature.as_ref(), recorder);
    let (end, solve_seconds) = solve_limit(
        setup,
        &limit,
        dt,
        extras,
        &optimizer.name(),
        &mut cmp,
        &mut driver,
    )?;
    // the solve's time less what was done at its outputs
    let flow_seconds = solve_seconds - cmp.method_seconds - cmp.record_seconds;
    // A limit that stopped early leaves the method to finish alone.
    let t0 = Instant::now();
    while driver.advance(&mut |it: &Iterate<'_>| cmp.observe(it, false)) {}
    cmp.method_seconds += t0.elapsed().as_secs_f64();
    let method_status = driver.finish().pop().expect("one run").status;
    let every = cfg.spectrum_every;
    for track in [&mut cmp.method, &mut cmp.flow, &mut cmp.mean] {
        track.measure_last(&cmp.recorder, &mut cmp.method_ws, every);
    }
    let target_norm = cmp.target_norm;
    // past the stability limit the central flow is judged against the gradient flow: the
    // same iterates compared with it, records at the ends only (the distance is over every
    // step anyway)
    let distance_plain = if limit.follows_average() {
        let mut plain = setup.with_plain_flow();
        plain.config.record_every = cfg.steps.max(1);
        plain.config.sharpness_every = 0;
        run(&plain, &RunExtras::default())?.summary.distance
    } else {
        None
    };
    let summary = RunSummary {
        provenance: setup.provenance(),
        warnings: [
            cfg.warnings(),
            setup.warnings.clone(),
            optimizer.warnings(&setup.optimizer_context()),
        ]
        .concat(),
        problem: ProblemInfo::new(problem),
        gd: cmp.method.summary(&method_status),
        flow: cmp.flow.summary(&end.status),
        distance: cmp.distance.summary(target_norm),
        two_over_eta: 2.0 / cfg.eta,
        optimizer: optimizer_summary(optimizer.as_ref(), &limit, cfg.flow),
        sharpness_cost: cmp.sharpness_cost(),
        central: end.central.map(|r| CentralSummary {
            distance_plain,
            ..cmp.central_summary(r, target_norm)
        }),
        ensemble: None,
        ensemble_part: None,
        solver: end.solver,
        operator_counts: problem.op.counts(),
        timings: Timings {
            problem_seconds: setup.seconds,
            gd_seconds: cmp.method_seconds,
            flow_seconds,
            record_seconds: cmp.record_seconds,
            method_evaluations_riding: cmp.riding.0,
            records_riding: cmp.riding.1,
            total_seconds: setup.seconds + start.elapsed().as_secs_f64(),
        },
    };
    finish(setup, optimizer.as_ref(), &limit, summary, cmp, extras)
}

/// The result: the tracks' records and kept states, and the ensemble when asked for.
fn finish(
    setup: &Setup,
    optimizer: &dyn Optimizer,
    limit: &Limit,
    mut summary: RunSummary,
    cmp: Comparison<'_>,
    extras: &RunExtras,
) -> Result<RunResult> {
    let cfg = &setup.config;
    let mut rows = Vec::new();
    let mut blocks = Vec::new();
    if cfg.replicas > 1 {
        let start = Instant::now();
        let ens = super::ensemble::ensemble(
            setup,
            optimizer,
            limit,
            &cmp.recorder,
            cmp.flow.states.as_ref(),
            cmp.flow.records.last(),
            extras.progress,
            extras.shard,
        )?;
        if let Some(shard) = extras.shard {
            let (b, part) = super::ensemble::shard_part(&ens, shard, cfg.replicas);
            blocks = b;
            summary.ensemble_part = Some(part);
        } else {
            let (r, s) = super::ensemble::summarise(
                &ens,
                &optimizer.name(),
                cfg.replicas,
                cfg.talay_tubaro,
            )?;
            rows = r;
            summary.warnings.extend(super::ensemble::warnings(&s));
            summary.ensemble = Some(s);
        }
        summary.timings.total_seconds += start.elapsed().as_secs_f64();
        summary.operator_counts = setup.problem.op.counts();
    }
    let keep = |s: Option<States>| s.filter(|s| cfg.save_states && !s.steps.is_empty());
    let states = [
        (summary.optimizer.name.clone(), keep(cmp.method.states)),
        ("flow".to_string(), keep(cmp.flow.states)),
        ("gd_mean".to_string(), keep(cmp.mean.states)),
    ]
    .into_iter()
    .filter_map(|(name, s)| s.map(|s| (name, s)))
    .collect();
    Ok(RunResult {
        summary,
        gd: cmp.method.records,
        flow: cmp.flow.records,
        gd_mean: cmp.mean.records,
        extra_columns: cmp.recorder.extra_columns(),
        states,
        ensemble: rows,
        ensemble_blocks: blocks,
    })
}

/// Solve the limit to T = steps·dt, handing every output to the comparison, which steps the
/// method beside it. A limit that the method's two-step average follows (the central flow,
/// MATH §8) is also asked for (j + ½)h, where the average is compared with it. Returns how the
/// limit ended and the seconds its solve took.
fn solve_limit(
    setup: &Setup,
    limit: &Limit,
    dt: f64,
    extras: &RunExtras,
    name: &str,
    cmp: &mut Comparison<'_>,
    driver: &mut Driver<'_, Method>,
) -> Result<(End, f64)> {
    let cfg = &setup.config;
    let half = if limit.follows_average() { 2 } else { 1 };
    // the half steps compare GD's two-step average with the state alone
    let limit = &limit
        .measured_every(half)
        .sharpness_while_unheld(cfg.sharpness_every > 0);
    let times = Times::Grid {
        dt: dt / half as f64,
        count: half * cfg.steps + 1,
    };
    let horizon = times.last();
    let pass = setup.problem.op.entries_per_pass() as f64;
    // A DOP853 step is about 16 rhs evaluations; a hundred steps is typical here.
    let work = pass * (16.0 * 100.0 + 2.0 * cfg.steps as f64);
    let bar = super::progress::bar(extras.progress, work, 1000, "‰ of T");
    bar.set_message(format!(
        "{name} and its {} limit to T = {horizon}",
        cfg.flow.name()
    ));
    let mut on_step = |t: f64| {
        if horizon > 0.0 {
            bar.set_position((1000.0 * t / horizon).min(1000.0) as u64);
        }
    };
    // the records and the method's steps ride on the passes of an ODE limit of the field itself
    // (where one pass over the sensing matrix serves two evaluations for much less than two)
    let riding = limit.carries_passengers_of(cmp.field) && !limit.follows_average();
    let lockstep: Lockstep<'_, '_, '_> = RefCell::new((cmp, driver));
    let mut on_output = |i: usize, t: f64, out: &Output<'_>| {
        let mut shared = lockstep.borrow_mut();
        let (cmp, driver) = &mut *shared;
        if i % half == 1 {
            let t0 = Instant::now();
            cmp.average_output(i / half, t, out.state, driver);
            cmp.record_seconds += t0.elapsed().as_secs_f64();
            return;
        }
        if riding {
            // an ODE limit holds no directions: nothing for the edge-of-stability comparison
            cmp.wait(i, t, out, driver);
            return;
        }
        cmp.limit_output(i / half, t, out.state, &out.columns, driver);
        cmp.edge_of_stability(i / half, t, out, horizon);
    };
    let riders = Riders(&lockstep);
    let passenger = riding.then_some(&riders as &dyn Passenger);
    let start = Instant::now();
    let end = limit.solve_sharing(
        times,
        &cfg.flow_options(),
        &mut on_output,
        &mut on_step,
        passenger,
    )?;
    // what still waits when the solve ends takes passes of its own
    let mut shared = lockstep.borrow_mut();
    let (cmp, driver) = &mut *shared;
    while cmp.complete_oldest(driver) {}
    bar.finish_and_clear();
    Ok((end, start.elapsed().as_secs_f64()))
}
