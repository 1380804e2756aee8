//! The flow of any [`Field`] — the gradient flow, GD's modified flow, the perturbed flows —
//! solved with diffsol at requested output times. This is the only module that talks to
//! diffsol.
//!
//! The equations implement diffsol's traits directly so that the implicit methods get the
//! field's Jacobian from [`Field::jacobian_into`] (one GEMM for the sensing field) instead of
//! diffsol's default of one jvp per state; [`JacobianMode::Assembled`] keeps that default for
//! comparison.

use std::cell::{Cell, RefCell};

use diffsol::{
    ConstantOp, DiffsolError, NalgebraContext, NalgebraMat, NalgebraVec, NonLinearOp,
    NonLinearOpJacobian, OdeBuilder, OdeEquations, OdeEquationsRef, OdeSolverMethod, Op,
    ParameterisedOp, UnitCallable, Vector, VectorCommon,
};
use serde::{Deserialize, Serialize};

use super::{Status, Trajectory};
use crate::error::{Error, Result};
use crate::field::{Field, Workspace};

mod auto;
mod central_solve;
pub mod dop853;
mod lu;
mod stability_region;

pub use auto::{tsit45_stability_bound, AutoReport, MethodSwitch};
pub use central_solve::{
    solve_central_flow_with, CentralColumns, CentralEvent, CentralOutput, CentralReport,
};
pub use dop853::ErrorScale;
pub use lu::BlockedLu;
pub use stability_region::real_stability_bound;

type M = NalgebraMat<f64>;
type V = NalgebraVec<f64>;

/// The ODE method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Dormand–Prince 8(5,3), explicit, with a 7th-order dense output (tight tolerances).
    Dop853,
    /// Tsitouras 5(4), explicit.
    Tsit45,
    /// Variable-order BDF, implicit.
    Bdf,
    /// TR-BDF2, implicit (SDIRK).
    TrBdf2,
    /// ESDIRK3(4), implicit.
    Esdirk34,
    /// DOP853 or Tsit45 (by tolerance) while the flow is not stiff, BDF with the exact
    /// Jacobian while it is.
    Auto,
}

impl Method {
    pub const ALL: [Method; 6] = [
        Method::Dop853,
        Method::Tsit45,
        Method::Bdf,
        Method::TrBdf2,
        Method::Esdirk34,
        Method::Auto,
    ];
    /// The explicit method for a relative tolerance: DOP853 below 1e-6, where its order pays
    /// for its 12 stages, Tsit45 above.
    pub fn explicit_for(rtol: f64) -> Method {
        if rtol < 1e-6 {
            Method::Dop853
        } else {
            Method::Tsit45
        }
    }

    /// Needs a dense Jacobian from the start. `auto` checks for itself whether one fits
    /// before it switches to BDF.
    pub fn is_implicit(self) -> bool {
        !matches!(self, Method::Dop853 | Method::Tsit45 | Method::Auto)
    }
    pub fn name(self) -> &'static str {
        match self {
            Method::Dop853 => "dop853",
            Method::Tsit45 => "tsit45",
            Method::Bdf => "bdf",
            Method::TrBdf2 => "tr-bdf2",
            Method::Esdirk34 => "esdirk34",
            Method::Auto => "auto",
        }
    }
    pub fn description(self) -> &'static str {
        match self {
            Method::Dop853 => {
                "Dormand–Prince 8(5,3), explicit, order 8 with a 7th-order dense output: for \
                 tight tolerances"
            }
            Method::Tsit45 => "Tsitouras 5(4), explicit",
            Method::Bdf => "variable-order BDF, implicit",
            Method::TrBdf2 => "TR-BDF2, implicit (SDIRK)",
            Method::Esdirk34 => "ESDIRK3(4), implicit",
            Method::Auto => {
                "DOP853 (rtol < 1e-6) or Tsit45 while the flow is not stiff, BDF with the exact \
                 Jacobian while it is; the switches are reported with the solver statistics"
            }
        }
    }
}

/// How implicit methods obtain their dense Jacobian.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JacobianMode {
    /// [`Field::jacobian_into`] (one GEMM for the sensing field).
    Exact,
    /// diffsol's default: N jacobian–vector products.
    Assembled,
}

/// Accepted solver steps after which a solve stops as failed: a horizon far beyond the
/// problem's time scale never hangs the program.
pub const DEFAULT_MAX_STEPS: usize = 5_000_000;

/// A flow whose state grows past this factor times its start's size (or 1) has diverged.
pub const DIVERGED_FACTOR: f64 = 1e6;

#[derive(Debug, Clone, Copy)]
pub struct FlowOptions {
    pub method: Method,
    pub rtol: f64,
    pub atol: f64,
    pub jacobian: JacobianMode,
    /// Budget of accepted steps ([`DEFAULT_MAX_STEPS`]).
    pub max_steps: usize,
    /// How DOP853 weighs a step's error (diffsol's methods use their own, componentwise).
    pub scale: ErrorScale,
}

impl FlowOptions {
    pub fn new(method: Method, rtol: f64, atol: f64) -> Self {
        Self {
            method,
            rtol,
            atol,
            jacobian: JacobianMode::Exact,
            max_steps: DEFAULT_MAX_STEPS,
            scale: ErrorScale::Componentwise,
        }
    }

    /// Both tolerances divided by `factor`.
    pub fn tightened(self, factor: f64) -> Self {
        Self {
            rtol: self.rtol / factor,
            atol: self.atol / factor,
            ..self
        }
    }
}

/// Work done by one flow solve.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SolverStats {
    pub method: String,
    pub steps: usize,
    pub rejected_steps: usize,
    pub rhs_evals: usize,
    pub jvp_evals: usize,
    pub jacobian_evals: usize,
    pub lu_factorisations: usize,
    pub nonlinear_iterations: usize,
    pub nonlinear_failures: usize,
    /// What `--method auto` measured and where it switched (absent for the fixed methods).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto: Option<AutoReport>,
}

impl SolverStats {
    /// Add the work of a later segment of the same solve.
    fn absorb(&mut self, other: &SolverStats) {
        self.steps += other.steps;
        self.rejected_steps += other.rejected_steps;
        self.rhs_evals += other.rhs_evals;
        self.jvp_evals += other.jvp_evals;
        self.jacobian_evals += other.jacobian_evals;
        self.lu_factorisations += other.lu_factorisations;
        self.nonlinear_iterations += other.nonlinear_iterations;
        self.nonlinear_failures += other.nonlinear_failures;
    }
}

/// A flow trajectory with its solver statistics.
#[derive(Debug, Clone)]
pub struct FlowSolution {
    pub trajectory: Trajectory,
    pub stats: SolverStats,
}

/// Bytes an implicit solve needs beyond the operator: diffsol's Jacobian, Newton matrix and
/// LU factors (N×N each), our Cᵀ (N×m) and the GEMM result (N×N).
pub fn implicit_memory_bytes(n: usize, m: usize) -> u64 {
    8 * (4 * (n as u64) * (n as u64) + (n as u64) * (m as u64))
}

/// Refuse an implicit method whose dense matrices would not fit in 80% of available memory.
pub fn check_implicit_memory(method: Method, n: usize, m: usize) -> Result<()> {
    if !method.is_implicit() {
        return Ok(());
    }
    let needed = implicit_memory_bytes(n, m);
    let available = crate::resources::available_or_default();
    if needed as f64 > 0.8 * available as f64 {
        return Err(Error::TooLargeForImplicit {
            method: method.name().to_string(),
            n,
            needed_mib: needed >> 20,
            available_mib: available >> 20,
        });
    }
    Ok(())
}

struct FlowEqn<'f> {
    field: &'f dyn Field,
    passenger: Option<&'f dyn Passenger>,
    ws: RefCell<Workspace>,
    x0: V,
    p: V,
    ctx: NalgebraContext,
    mode: JacobianMode,
    rhs_evals: Cell<usize>,
    jvp_evals: Cell<usize>,
    jacobian_evals: Cell<usize>,
}

struct FlowRhs<'b, 'f> {
    eqn: &'b FlowEqn<'f>,
}

struct FlowInit<'b, 'f> {
    eqn: &'b FlowEqn<'f>,
}

macro_rules! flow_op {
    ($t:ty, $eqn:ident) => {
        impl Op for $t {
            type T = f64;
            type V = V;
            type M = M;
            type C = NalgebraContext;
            fn context(&self) -> &NalgebraContext {
                &self.$eqn().ctx
            }
            fn nstates(&self) -> usize {
                self.$eqn().field.state_len()
            }
            fn nout(&self) -> usize {
                self.$eqn().field.state_len()
            }
            fn nparams(&self) -> usize {
                0
            }
        }
    };
}

impl<'f> FlowEqn<'f> {
    fn me(&self) -> &Self {
        self
    }
}
impl<'f> FlowRhs<'_, 'f> {
    fn me(&self) -> &FlowEqn<'f> {
        self.eqn
    }
}
impl<'f> FlowInit<'_, 'f> {
    fn me(&self) -> &FlowEqn<'f> {
        self.eqn
    }
}

flow_op!(FlowEqn<'_>, me);
flow_op!(FlowRhs<'_, '_>, me);
flow_op!(FlowInit<'_, '_>, me);

pub(super) fn slice(v: &V) -> &[f64] {
    v.inner().as_slice()
}

impl NonLinearOp for FlowRhs<'_, '_> {
    fn call_inplace(&self, x: &V, _t: f64, y: &mut V) {
        let e = self.eqn;
        e.rhs_evals.set(e.rhs_evals.get() + 1);
        let mut ws = e.ws.borrow_mut();
        if let Some(p) = e.passenger {
            p.board(e.field, slice(x), &mut ws);
        }
        e.field.rhs(slice(x), y.inner_mut().as_mut_slice(), &mut ws);
    }
}

impl NonLinearOpJacobian for FlowRhs<'_, '_> {
    fn jac_mul_inplace(&self, x: &V, _t: f64, v: &V, y: &mut V) {
        let e = self.eqn;
        e.jvp_evals.set(e.jvp_evals.get() + 1);
        e.field.jvp(
            slice(x),
            slice(v),
            y.inner_mut().as_mut_slice(),
            &mut e.ws.borrow_mut(),
        );
    }
    fn jacobian_inplace(&self, x: &V, t: f64, y: &mut M) {
        let e = self.eqn;
        e.jacobian_evals.set(e.jacobian_evals.get() + 1);
        match e.mode {
            JacobianMode::Exact => {
                let jac = diffsol::Matrix::inner_mut(y);
                e.field.jacobian_into(slice(x), jac, &mut e.ws.borrow_mut());
            }
            JacobianMode::Assembled => self._default_jacobian_inplace(x, t, y),
        }
    }
}

impl ConstantOp for FlowInit<'_, '_> {
    fn call_inplace(&self, _t: f64, y: &mut V) {
        y.copy_from(&self.eqn.x0);
    }
}

impl<'b, 'f> OdeEquationsRef<'b> for FlowEqn<'f> {
    type Rhs = FlowRhs<'b, 'f>;
    type Init = FlowInit<'b, 'f>;
    type Mass = ParameterisedOp<'b, UnitCallable<M>>;
    type Root = ParameterisedOp<'b, UnitCallable<M>>;
    type Out = ParameterisedOp<'b, UnitCallable<M>>;
    type Reset = ParameterisedOp<'b, UnitCallable<M>>;
}

impl<'f> OdeEquations for FlowEqn<'f> {
    fn rhs(&self) -> FlowRhs<'_, 'f> {
        FlowRhs { eqn: self }
    }
    fn init(&self) -> FlowInit<'_, 'f> {
        FlowInit { eqn: self }
    }
    fn mass(&self) -> Option<<Self as OdeEquationsRef<'_>>::Mass> {
        None
    }
    fn set_params(&mut self, p: &V) {
        self.p.copy_from(p);
    }
    fn get_params(&self, p: &mut V) {
        p.copy_from(&self.p);
    }
}

/// Output times of a flow solve, ascending and ≥ 0.
#[derive(Debug, Clone, Copy)]
pub enum Times<'a> {
    /// These times.
    List(&'a [f64]),
    /// j·dt for j = 0..count, never stored (GD's times jη over millions of steps).
    Grid { dt: f64, count: usize },
}

impl Times<'_> {
    pub fn len(&self) -> usize {
        match self {
            Times::List(t) => t.len(),
            Times::Grid { count, .. } => *count,
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The i-th time.
    pub fn at(&self, i: usize) -> f64 {
        match self {
            Times::List(t) => t[i],
            Times::Grid { dt, .. } => i as f64 * dt,
        }
    }
    /// The last time (0 when there is none).
    pub fn last(&self) -> f64 {
        self.len().checked_sub(1).map_or(0.0, |i| self.at(i))
    }
}

/// Solve the flow of `field` from `x0` and keep its state at each of `times` (ascending,
/// ≥ 0); `steps` labels each output (GD's step numbers when compared with GD).
///
/// A solver failure ends the trajectory with [`Status::Failed`] and the states before it;
/// only set-up problems (memory, bad tolerances) are errors.
pub fn solve_flow(
    field: &dyn Field,
    x0: &[f64],
    times: &[f64],
    steps: &[usize],
    opts: &FlowOptions,
) -> Result<FlowSolution> {
    assert_eq!(times.len(), steps.len(), "one step label per output time");
    let mut trajectory = Trajectory::empty();
    let (status, stats) = solve_flow_with(
        field,
        x0,
        Times::List(times),
        opts,
        &mut |i, t, y| {
            trajectory.steps.push(steps[i]);
            trajectory.times.push(t);
            trajectory.states.push(y.to_vec());
        },
        &mut |_| {},
    )?;
    trajectory.status = status;
    Ok(FlowSolution { trajectory, stats })
}

/// Work that can share the flow's passes over the sensing matrix (in a run, GD's evaluations
/// and the records made beside it): shown the state of every right-hand side before the
/// field is evaluated there, with the workspace the right-hand side then reads. It may
/// evaluate `field` at `x` into `ws` together with evaluations of its own, in one pass
/// ([`Field::evaluate_pair`], bit-identical to the field's own evaluation, which then finds it
/// done), or leave `ws` alone.
pub trait Passenger {
    fn board(&self, field: &dyn Field, x: &[f64], ws: &mut Workspace);
}

/// The save-at hook of a flow solve: `on_output(i, times.at(i), state)` for every output time
/// reached, in order (nothing is stored unless the hook stores it), and `on_step(t)` after
/// every accepted solver step. Returns how the solve ended and its statistics.
pub fn solve_flow_with(
    field: &dyn Field,
    x0: &[f64],
    times: Times<'_>,
    opts: &FlowOptions,
    on_output: &mut dyn FnMut(usize, f64, &[f64]),
    on_step: &mut dyn FnMut(f64),
) -> Result<(Status, SolverStats)> {
    solve_flow_sharing(field, x0, times, opts, on_output, on_step, None)
}

/// [`solve_flow_with`] with a [`Passenger`] on every right-hand side's pass.
pub fn solve_flow_sharing(
    field: &dyn Field,
    x0: &[f64],
    times: Times<'_>,
    opts: &FlowOptions,
    on_output: &mut dyn FnMut(usize, f64, &[f64]),
    on_step: &mut dyn FnMut(f64),
    passenger: Option<&dyn Passenger>,
) -> Result<(Status, SolverStats)> {
    let n = field.state_len();
    check_implicit_memory(opts.method, n, field.operator().m())?;
    let mut out = Outputs {
        times,
        next: 0,
        on_output,
        status: Status::Completed,
        steps_taken: 0,
    };
    if opts.method != Method::Auto {
        let (_, stats) = segment(
            field,
            opts.method,
            opts,
            x0,
            0.0,
            &mut out,
            on_step,
            None,
            passenger,
        )?;
        return Ok((out.status, stats));
    }

    let t_end = times.last();
    let explicit = Method::explicit_for(opts.rtol);
    let mut monitor = auto::StiffnessMonitor::new(field, t_end, explicit);
    if let Err(e) = check_implicit_memory(Method::Bdf, n, field.operator().m()) {
        monitor.report.note = Some(format!("stayed explicit: {e}"));
        monitor.implicit_allowed = false;
    }
    let mut stats = SolverStats {
        method: Method::Auto.name().to_string(),
        ..SolverStats::default()
    };
    let (mut method, mut t0, mut y0) = (explicit, 0.0, x0.to_vec());
    loop {
        let (handover, seg) = segment(
            field,
            method,
            opts,
            &y0,
            t0,
            &mut out,
            on_step,
            Some(&mut monitor),
            passenger,
        )?;
        stats.absorb(&seg);
        let reached = handover
            .as_ref()
            .map(|h| h.t)
            .unwrap_or_else(|| out.last_time(t0));
        match method {
            Method::Bdf => monitor.report.time_implicit += reached - t0,
            _ => monitor.report.time_explicit += reached - t0,
        }
        match handover {
            None => break,
            Some(h) => {
                method = h.to;
                t0 = h.t;
                y0 = h.y;
            }
        }
    }
    stats.auto = Some(monitor.report);
    Ok((out.status, stats))
}

/// The requested output times, how many are reached, and where they go.
struct Outputs<'a> {
    times: Times<'a>,
    next: usize,
    on_output: &'a mut dyn FnMut(usize, f64, &[f64]),
    status: Status,
    /// Accepted steps over every segment, against the budget.
    steps_taken: usize,
}

impl Outputs<'_> {
    fn emit(&mut self, y: &[f64]) {
        (self.on_output)(self.next, self.times.at(self.next), y);
        self.next += 1;
    }
    fn done(&self) -> bool {
        self.next == self.times.len()
    }
    fn last_time(&self, t0: f64) -> f64 {
        self.next.checked_sub(1).map_or(t0, |i| self.times.at(i))
    }
}

/// Where `--method auto` leaves one method for the other.
struct Handover {
    t: f64,
    y: Vec<f64>,
    to: Method,
}

/// Solve with one method from (`t0`, `y0`) until every output is reached, the solver fails,
/// or `monitor` asks for the other method.
#[allow(clippy::too_many_arguments)]
fn segment(
    field: &dyn Field,
    method: Method,
    opts: &FlowOptions,
    y0: &[f64],
    t0: f64,
    out: &mut Outputs,
    on_step: &mut dyn FnMut(f64),
    monitor: Option<&mut auto::StiffnessMonitor<'_>>,
    passenger: Option<&dyn Passenger>,
) -> Result<(Option<Handover>, SolverStats)> {
    if method == Method::Dop853 {
        return Ok(dop853_segment(
            field, opts, y0, t0, out, on_step, monitor, passenger,
        ));
    }
    let ctx = NalgebraContext::default();
    let eqn = FlowEqn {
        field,
        passenger,
        ws: RefCell::new(field.workspace()),
        x0: V::from_slice(y0, ctx),
        p: V::zeros(0, ctx),
        ctx,
        mode: opts.jacobian,
        rhs_evals: Cell::new(0),
        jvp_evals: Cell::new(0),
        jacobian_evals: Cell::new(0),
    };
    let problem = OdeBuilder::<M>::new()
        .t0(t0)
        .rtol(opts.rtol)
        .atol([opts.atol])
        .build_from_eqn(eqn)
        .map_err(|e| {
            Error::invalid(
                "rtol/atol",
                format!("{}/{}", opts.rtol, opts.atol),
                e.to_string(),
            )
        })?;
    let mut run = Segment {
        y0,
        out,
        on_step,
        monitor,
        method,
        max_steps: opts.max_steps,
    };
    let (handover, st) = match method {
        Method::Tsit45 | Method::Auto | Method::Dop853 => run.start(problem.tsit45()),
        Method::Bdf => run.start(problem.bdf::<BlockedLu>()),
        Method::TrBdf2 => run.start(problem.tr_bdf2::<BlockedLu>()),
        Method::Esdirk34 => run.start(problem.esdirk34::<BlockedLu>()),
    };
    let e = &problem.eqn;
    let stats = SolverStats {
        method: method.name().to_string(),
        steps: st.number_of_steps,
        rejected_steps: st.number_of_error_test_failures,
        rhs_evals: e.rhs_evals.get(),
        jvp_evals: e.jvp_evals.get(),
        jacobian_evals: e.jacobian_evals.get(),
        lu_factorisations: st.number_of_linear_solver_setups,
        nonlinear_iterations: st.number_of_nonlinear_solver_iterations,
        nonlinear_failures: st.number_of_nonlinear_solver_fails,
        auto: None,
    };
    Ok((handover, stats))
}

/// [`segment`] for DOP853, ours rather than diffsol's.
#[allow(clippy::too_many_arguments)]
fn dop853_segment(
    field: &dyn Field,
    opts: &FlowOptions,
    y0: &[f64],
    t0: f64,
    out: &mut Outputs,
    on_step: &mut dyn FnMut(f64),
    mut monitor: Option<&mut auto::StiffnessMonitor<'_>>,
    passenger: Option<&dyn Passenger>,
) -> (Option<Handover>, SolverStats) {
    while !out.done() && out.times.at(out.next) <= t0 {
        out.emit(y0);
    }
    let mut stats = SolverStats {
        method: Method::Dop853.name().to_string(),
        ..SolverStats::default()
    };
    if out.done() {
        return (None, stats);
    }
    let t_end = out.times.last();
    let mut s = dop853::Dop853::new(field, t0, y0, opts.rtol, opts.atol, opts.scale, t_end)
        .with_passenger(passenger);
    let mut buf = vec![0.0; y0.len()];
    let mut handover = None;
    // the divergence rule GD's driver applies to the loss, applied to the state's size: a
    // flow that blows up (a modified field far past its η) is a result, not a hang
    let bound = DIVERGED_FACTOR * crate::vector::norm(y0).max(1.0);
    while !out.done() {
        if crate::dynamics::stop::requested() {
            out.status = Status::Failed {
                t: s.t(),
                reason: crate::dynamics::stop::REASON.into(),
            };
            break;
        }
        if out.steps_taken >= opts.max_steps {
            out.status = Status::Failed {
                t: s.t(),
                reason: format!(
                    "step budget of {} accepted steps exhausted before t = {t_end}",
                    opts.max_steps
                ),
            };
            break;
        }
        if let Err(reason) = s.step(t_end) {
            out.status = Status::Failed { t: s.t(), reason };
            break;
        }
        out.steps_taken += 1;
        let t = s.t();
        on_step(t);
        if s.y().iter().any(|v| !v.is_finite()) {
            out.status = Status::Failed {
                t,
                reason: "non-finite state".to_string(),
            };
            break;
        }
        if crate::vector::norm(s.y()) > bound {
            out.status = Status::Failed {
                t,
                reason: format!(
                    "diverged: the state grew past {DIVERGED_FACTOR:e} times its start's size"
                ),
            };
            break;
        }
        while !out.done() && out.times.at(out.next) <= t {
            let at = out.times.at(out.next);
            if at == t {
                out.emit(s.y());
            } else {
                s.interpolate(at, &mut buf);
                out.emit(&buf);
            }
        }
        if out.done() {
            break;
        }
        if let Some(monitor) = monitor.as_deref_mut() {
            if let Some(to) = monitor.after_step(Method::Dop853, s.y(), t, s.h()) {
                handover = Some(Handover {
                    t,
                    y: s.y().to_vec(),
                    to,
                });
                break;
            }
        }
    }
    stats.steps = s.steps;
    stats.rejected_steps = s.rejected;
    stats.rhs_evals = s.rhs_evals;
    (handover, stats)
}

type Stats = diffsol::ode_solver::OdeSolverStatistics;

/// One method's part of a solve: where it starts, what it must produce, and who may stop it.
struct Segment<'a, 'o, 'm, 'f> {
    y0: &'a [f64],
    out: &'a mut Outputs<'o>,
    on_step: &'a mut dyn FnMut(f64),
    monitor: Option<&'m mut auto::StiffnessMonitor<'f>>,
    method: Method,
    max_steps: usize,
}

impl Segment<'_, '_, '_, '_> {
    /// A solver that could not even be set up (e.g. its first step failed) ends the
    /// trajectory as failed at its start time.
    fn start<'p, 'f, S: OdeSolverMethod<'p, FlowEqn<'f>>>(
        &mut self,
        solver: std::result::Result<S, DiffsolError>,
    ) -> (Option<Handover>, Stats)
    where
        'f: 'p,
    {
        match solver {
            Ok(solver) => self.drive(solver),
            Err(e) => {
                self.out.status = Status::Failed {
                    t: self.out.last_time(0.0),
                    reason: e.to_string(),
                };
                (None, Stats::default())
            }
        }
    }

    /// Step until each output time lies inside the last step and interpolate there (diffsol's
    /// RK and SDIRK solvers interpolate only within the last step).
    fn drive<'p, 'f, S: OdeSolverMethod<'p, FlowEqn<'f>>>(
        &mut self,
        mut solver: S,
    ) -> (Option<Handover>, Stats)
    where
        'f: 'p,
    {
        let t0 = solver.state().t;
        while !self.out.done() && self.out.times.at(self.out.next) <= t0 {
            self.out.emit(self.y0);
        }
        let mut handover = None;
        while !self.out.done() {
            if crate::dynamics::stop::requested() {
                self.out.status = Status::Failed {
                    t: solver.state().t,
                    reason: crate::dynamics::stop::REASON.into(),
                };
                break;
            }
            if self.out.steps_taken >= self.max_steps {
                self.out.status = Status::Failed {
                    t: solver.state().t,
                    reason: format!(
                        "step budget of {} accepted steps exhausted before t = {}",
                        self.max_steps,
                        self.out.times.last()
                    ),
                };
                break;
            }
            if let Err(e) = solver.step() {
                self.out.status = Status::Failed {
                    t: solver.state().t,
                    reason: e.to_string(),
                };
                break;
            }
            self.out.steps_taken += 1;
            let (t, h) = (solver.state().t, solver.state().h);
            (self.on_step)(t);
            if slice(solver.state().y).iter().any(|v| !v.is_finite()) {
                self.out.status = Status::Failed {
                    t,
                    reason: "non-finite state".to_string(),
                };
                break;
            }
            while !self.out.done() && self.out.times.at(self.out.next) <= t {
                match solver.interpolate(self.out.times.at(self.out.next)) {
                    Ok(y) => self.out.emit(slice(&y)),
                    Err(e) => {
                        self.out.status = Status::Failed {
                            t: self.out.times.at(self.out.next),
                            reason: format!("interpolation failed: {e}"),
                        };
                        return (None, solver.get_statistics().clone());
                    }
                }
            }
            if self.out.done() {
                break;
            }
            if let Some(monitor) = self.monitor.as_deref_mut() {
                let y = slice(solver.state().y);
                if let Some(to) = monitor.after_step(self.method, y, t, h) {
                    handover = Some(Handover {
                        t,
                        y: y.to_vec(),
                        to,
                    });
                    break;
                }
            }
        }
        (handover, solver.get_statistics().clone())
    }
}
