//! The gradient flow U' = −GV, V' = −GᵀU, and GD's modified flow x' = −∇f̃ with
//! f̃ = f + (η/4)‖∇f‖², solved with diffsol. This is the only module that talks to diffsol.
//!
//! The equations implement diffsol's traits directly so that the implicit methods get the
//! exact Jacobian from [`VectorField::jacobian_into`] (one GEMM) instead of diffsol's default
//! of one jvp per state; [`JacobianMode::Assembled`] keeps that default for comparison.

use std::cell::{Cell, RefCell};

use diffsol::{
    ConstantOp, Context, DiffsolError, LaError, LaLinearOp, Matrix as _, NalgebraContext,
    NalgebraMat, NalgebraVec, NonLinearOp, NonLinearOpJacobian, OdeBuilder, OdeEquations,
    OdeEquationsRef, OdeSolverMethod, Op, ParameterisedOp, UnitCallable, Vector, VectorCommon,
};
use serde::{Deserialize, Serialize};

use crate::config::Method;
use crate::error::{Error, Result};
use crate::field::{VectorField, Workspace};
use crate::gd::{Status, Trajectory};

type M = NalgebraMat<f64>;
type V = NalgebraVec<f64>;

/// diffsol's linear solver for its nalgebra matrices, factorising with faer's blocked LU with
/// partial pivoting (LAPACK's getrf). diffsol's own nalgebra LU is unblocked: at N = 1000 it
/// took 88 ms per factorisation against faer's 15 ms, and BDF refactorises at every change of
/// step or order. diffsol's faer backend uses full pivoting, which is no faster (50–85 ms).
/// Sequential, so that results do not depend on the number of threads.
#[derive(Default)]
pub struct BlockedLu {
    a: Option<M>,
    perm: Vec<usize>,
    perm_inv: Vec<usize>,
    factorised: bool,
}

impl BlockedLu {
    fn solve(&self, b: &mut V, transpose: bool) -> std::result::Result<(), LaError> {
        use faer::linalg::lu::partial_pivoting::solve;
        use faer::{dyn_stack::MemBuffer, dyn_stack::MemStack, Conj, Par};
        let Some(a) = self.a.as_ref().filter(|_| self.factorised) else {
            return Err(LaError::Other("LU used before factorisation".into()));
        };
        let lu = diffsol::MatrixCommon::inner(a);
        let n = lu.nrows();
        if (0..n).any(|i| lu[(i, i)] == 0.0) {
            return Err(LaError::Other("singular Newton matrix".into()));
        }
        let lu = faer::MatRef::from_column_major_slice(lu.as_slice(), n, n);
        let perm = faer::perm::PermRef::new_checked(&self.perm, &self.perm_inv, n);
        let rhs = faer::MatMut::from_column_major_slice_mut(b.inner_mut().as_mut_slice(), n, 1);
        if transpose {
            let scratch = solve::solve_transpose_in_place_scratch::<usize, f64>(n, 1, Par::Seq);
            solve::solve_transpose_in_place_with_conj(
                lu,
                lu,
                perm,
                Conj::No,
                rhs,
                Par::Seq,
                MemStack::new(&mut MemBuffer::new(scratch)),
            );
        } else {
            let scratch = solve::solve_in_place_scratch::<usize, f64>(n, 1, Par::Seq);
            solve::solve_in_place_with_conj(
                lu,
                lu,
                perm,
                Conj::No,
                rhs,
                Par::Seq,
                MemStack::new(&mut MemBuffer::new(scratch)),
            );
        }
        Ok(())
    }
}

impl diffsol_la::LinearSolver<M> for BlockedLu {
    fn set_sparsity<C: LaLinearOp<V = V, T = f64, M = M, C = NalgebraContext>>(&mut self, op: &C) {
        assert_eq!(op.context().nbatch(), 1, "one system at a time");
        self.a = Some(M::new_from_sparsity(
            op.nrows(),
            op.ncols(),
            op.sparsity(),
            *op.context(),
        ));
    }

    fn set_linearisation<C: LaLinearOp<V = V, T = f64, M = M, C = NalgebraContext>>(
        &mut self,
        op: &C,
    ) {
        use faer::linalg::lu::partial_pivoting::factor;
        use faer::{dyn_stack::MemBuffer, dyn_stack::MemStack, Par};
        let a = self
            .a
            .as_mut()
            .expect("set_sparsity before set_linearisation");
        op.matrix_inplace(a);
        let a = diffsol::Matrix::inner_mut(a);
        let n = a.nrows();
        self.perm.resize(n, 0);
        self.perm_inv.resize(n, 0);
        let scratch = factor::lu_in_place_scratch::<usize, f64>(n, n, Par::Seq, Default::default());
        factor::lu_in_place(
            faer::MatMut::from_column_major_slice_mut(a.as_mut_slice(), n, n),
            &mut self.perm,
            &mut self.perm_inv,
            Par::Seq,
            MemStack::new(&mut MemBuffer::new(scratch)),
            Default::default(),
        );
        self.factorised = true;
    }

    fn solve_in_place(&self, b: &mut V) -> std::result::Result<(), LaError> {
        self.solve(b, false)
    }

    fn solve_transpose_in_place(&self, b: &mut V) -> std::result::Result<(), LaError> {
        self.solve(b, true)
    }
}

/// How implicit methods obtain their dense Jacobian.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JacobianMode {
    /// J = −(CᵀC + S(G)) in one GEMM.
    Exact,
    /// diffsol's default: N jacobian–vector products.
    Assembled,
}

#[derive(Debug, Clone, Copy)]
pub struct FlowOptions {
    pub method: Method,
    pub rtol: f64,
    pub atol: f64,
    pub jacobian: JacobianMode,
    /// `Some(η)`: solve GD's modified flow for step η instead of the plain flow. Implicit
    /// methods then get the plain flow's Jacobian, which differs from the modified field's by
    /// O(η): it steers Newton's iteration only, so it costs iterations, never accuracy.
    pub modified_eta: Option<f64>,
}

impl FlowOptions {
    /// The plain flow with the exact Jacobian.
    pub fn new(method: Method, rtol: f64, atol: f64) -> Self {
        Self {
            method,
            rtol,
            atol,
            jacobian: JacobianMode::Exact,
            modified_eta: None,
        }
    }

    /// The same solver settings for GD's modified flow at step `eta`.
    pub fn modified(self, eta: f64) -> Self {
        Self {
            modified_eta: Some(eta),
            ..self
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

/// The stiffness monitor of `--method auto`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AutoReport {
    /// Where Tsit45's stability region meets the negative real axis: h·λ beyond it diverges.
    pub stability_bound: f64,
    /// Tsit45 hands over to BDF when h·ρ(∇²f) ≥ this fraction of the bound at two checks in
    /// a row (its step is pinned by stability, not accuracy) ...
    pub to_implicit_fraction: f64,
    /// ... and BDF hands back when h·ρ ≤ this fraction at two checks in a row.
    pub to_explicit_fraction: f64,
    pub checks: usize,
    /// Hessian–vector products spent on the checks (each costs one jvp).
    pub hvp_evals: usize,
    pub switches: Vec<MethodSwitch>,
    /// Time spent in each method (flow time, not wall time).
    pub time_explicit: f64,
    pub time_implicit: f64,
    /// One Jacobian and one LU factorisation, in units of one rhs evaluation (estimated from
    /// the sizes). Tsit45 keeps a stiff stretch when the rhs evaluations it still needs to
    /// reach the end, at its pinned step, are fewer than `payback` times this.
    pub switch_cost_rhs: f64,
    pub payback: f64,
    /// Stiff verdicts that did not switch because the rest of the horizon was too short.
    pub declined: usize,
    /// Why no switch to BDF was possible, when that was the case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The auto report in a few lines for the terminal.
pub fn describe_auto(a: &AutoReport) -> String {
    let mut text = format!(
        "auto: flow time {:.4} in tsit45, {:.4} in bdf; {} stiffness checks ({} Hessian–vector products); tsit45 stability bound h·ρ = {:.4}",
        a.time_explicit, a.time_implicit, a.checks, a.hvp_evals, a.stability_bound
    );
    for s in &a.switches {
        text.push_str(&format!(
            "\n  t = {:.6}: {} → {} (h = {:.4e}, ρ(∇²f) = {:.4e}, h·ρ = {:.4})",
            s.t, s.from, s.to, s.step_size, s.spectral_radius, s.h_rho
        ));
    }
    if a.declined > 0 {
        text.push_str(&format!(
            "\n  stayed on tsit45 through a stiff stretch: the rest of the horizon needs fewer than {} × {:.0} rhs (one Jacobian + LU)",
            a.payback, a.switch_cost_rhs
        ));
    }
    if let Some(note) = &a.note {
        text.push_str(&format!("\n  {note}"));
    }
    text
}

/// One change of method by `--method auto`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodSwitch {
    pub t: f64,
    pub from: String,
    pub to: String,
    /// The step size the solver was taking.
    pub step_size: f64,
    /// ρ(∇²f) at the switch, from warm-started power iteration.
    pub spectral_radius: f64,
    pub h_rho: f64,
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
    let available = crate::config::available_memory_bytes().unwrap_or(16 << 30);
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
    field: &'f VectorField,
    ws: RefCell<Workspace>,
    x0: V,
    p: V,
    ctx: NalgebraContext,
    mode: JacobianMode,
    modified_eta: Option<f64>,
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
impl<'b, 'f> FlowRhs<'b, 'f> {
    fn me(&self) -> &FlowEqn<'f> {
        self.eqn
    }
}
impl<'b, 'f> FlowInit<'b, 'f> {
    fn me(&self) -> &FlowEqn<'f> {
        self.eqn
    }
}

flow_op!(FlowEqn<'_>, me);
flow_op!(FlowRhs<'_, '_>, me);
flow_op!(FlowInit<'_, '_>, me);

fn slice(v: &V) -> &[f64] {
    v.inner().as_slice()
}

impl NonLinearOp for FlowRhs<'_, '_> {
    fn call_inplace(&self, x: &V, _t: f64, y: &mut V) {
        let e = self.eqn;
        e.rhs_evals.set(e.rhs_evals.get() + 1);
        let (x, y, ws) = (
            slice(x),
            y.inner_mut().as_mut_slice(),
            &mut *e.ws.borrow_mut(),
        );
        match e.modified_eta {
            None => e.field.rhs(x, y, ws),
            Some(eta) => e.field.modified_rhs(x, eta, y, ws),
        };
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

/// Solve the flow from `x0` and return its state at each of `times` (ascending, ≥ 0).
/// `steps` labels each output (GD's step numbers when compared with GD).
///
/// A solver failure ends the trajectory with [`Status::Failed`] and the states before it;
/// only set-up problems (memory, bad tolerances) are errors.
pub fn solve_flow(
    field: &VectorField,
    x0: &[f64],
    times: &[f64],
    steps: &[usize],
    opts: &FlowOptions,
) -> Result<FlowSolution> {
    solve_flow_with(field, x0, times, steps, opts, &mut |_| {})
}

/// [`solve_flow`], telling `on_step` the time reached after every accepted solver step.
pub fn solve_flow_with(
    field: &VectorField,
    x0: &[f64],
    times: &[f64],
    steps: &[usize],
    opts: &FlowOptions,
    on_step: &mut dyn FnMut(f64),
) -> Result<FlowSolution> {
    assert_eq!(times.len(), steps.len(), "one step label per output time");
    let n = field.state_len();
    check_implicit_memory(opts.method, n, field.operator().m())?;
    let mut trajectory = Trajectory {
        steps: Vec::with_capacity(times.len()),
        times: Vec::with_capacity(times.len()),
        states: Vec::with_capacity(times.len()),
        status: Status::Completed,
    };
    let out = Outputs { times, steps };
    if opts.method != Method::Auto {
        let (_, stats) = segment(
            field,
            opts.method,
            opts,
            x0,
            0.0,
            &out,
            &mut trajectory,
            on_step,
            None,
        )?;
        return Ok(FlowSolution { trajectory, stats });
    }

    let t_end = times.last().copied().unwrap_or(0.0);
    let mut monitor = StiffnessMonitor::new(field, t_end);
    if let Err(e) = check_implicit_memory(Method::Bdf, n, field.operator().m()) {
        monitor.report.note = Some(format!("stayed explicit: {e}"));
        monitor.implicit_allowed = false;
    }
    let mut stats = SolverStats {
        method: Method::Auto.name().to_string(),
        ..SolverStats::default()
    };
    let (mut method, mut t0, mut y0) = (Method::Tsit45, 0.0, x0.to_vec());
    loop {
        let (handover, seg) = segment(
            field,
            method,
            opts,
            &y0,
            t0,
            &out,
            &mut trajectory,
            on_step,
            Some(&mut monitor),
        )?;
        stats.absorb(&seg);
        let reached = handover
            .as_ref()
            .map(|h| h.t)
            .unwrap_or_else(|| trajectory.times.last().copied().unwrap_or(t0));
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
    Ok(FlowSolution { trajectory, stats })
}

/// The requested output times with their labels; the trajectory records how many are reached.
struct Outputs<'a> {
    times: &'a [f64],
    steps: &'a [usize],
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
    field: &VectorField,
    method: Method,
    opts: &FlowOptions,
    y0: &[f64],
    t0: f64,
    out: &Outputs,
    traj: &mut Trajectory,
    on_step: &mut dyn FnMut(f64),
    monitor: Option<&mut StiffnessMonitor<'_>>,
) -> Result<(Option<Handover>, SolverStats)> {
    let ctx = NalgebraContext::default();
    let eqn = FlowEqn {
        field,
        ws: RefCell::new(field.workspace()),
        x0: V::from_slice(y0, ctx),
        p: V::zeros(0, ctx),
        ctx,
        mode: opts.jacobian,
        modified_eta: opts.modified_eta,
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
        traj,
        on_step,
        monitor,
        method,
    };
    let (handover, st) = match method {
        Method::Tsit45 | Method::Auto => run.start(problem.tsit45()),
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

type Stats = diffsol::ode_solver::OdeSolverStatistics;

/// One method's part of a solve: where it starts, what it must produce, and who may stop it.
struct Segment<'a, 'm, 'f> {
    y0: &'a [f64],
    out: &'a Outputs<'a>,
    traj: &'a mut Trajectory,
    on_step: &'a mut dyn FnMut(f64),
    monitor: Option<&'m mut StiffnessMonitor<'f>>,
    method: Method,
}

impl Segment<'_, '_, '_> {
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
                self.traj.status = Status::Failed {
                    t: self.traj.times.last().copied().unwrap_or(0.0),
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
        let (times, steps) = (self.out.times, self.out.steps);
        let traj = &mut *self.traj;
        let t0 = solver.state().t;
        let mut next = traj.times.len();
        while next < times.len() && times[next] <= t0 {
            traj.steps.push(steps[next]);
            traj.times.push(times[next]);
            traj.states.push(self.y0.to_vec());
            next += 1;
        }
        let mut handover = None;
        while next < times.len() {
            if let Err(e) = solver.step() {
                traj.status = Status::Failed {
                    t: solver.state().t,
                    reason: e.to_string(),
                };
                break;
            }
            let (t, h) = (solver.state().t, solver.state().h);
            (self.on_step)(t);
            if slice(solver.state().y).iter().any(|v| !v.is_finite()) {
                traj.status = Status::Failed {
                    t,
                    reason: "non-finite state".to_string(),
                };
                break;
            }
            while next < times.len() && times[next] <= t {
                match solver.interpolate(times[next]) {
                    Ok(y) => {
                        traj.steps.push(steps[next]);
                        traj.times.push(times[next]);
                        traj.states.push(slice(&y).to_vec());
                        next += 1;
                    }
                    Err(e) => {
                        traj.status = Status::Failed {
                            t: times[next],
                            reason: format!("interpolation failed: {e}"),
                        };
                        return (None, solver.get_statistics().clone());
                    }
                }
            }
            if next == times.len() {
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

/// Where the stability region of diffsol's Tsit45 meets the negative real axis: the first
/// x > 0 with |R(−x)| > 1, R(z) = 1 + z·bᵀ(I − zA)⁻¹𝟙 its stability polynomial. The flow's
/// Jacobian −∇²f is symmetric, so its eigenvalues are real and this is the bound that binds.
pub fn tsit45_stability_bound() -> f64 {
    static BOUND: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *BOUND.get_or_init(|| {
        let tab = diffsol::Tableau::<f64>::tsit45();
        let s = tab.s();
        let r = |z: f64| {
            let mut stages = vec![0.0; s];
            for i in 0..s {
                stages[i] = 1.0 + z * (0..i).map(|j| tab.a(i, j) * stages[j]).sum::<f64>();
            }
            1.0 + z * (0..s).map(|i| tab.b()[i] * stages[i]).sum::<f64>()
        };
        let unstable = |x: f64| r(-x).abs() > 1.0;
        let mut hi = 1e-3;
        while !unstable(hi) {
            hi += 1e-3;
        }
        let mut lo = hi - 1e-3;
        for _ in 0..60 {
            let mid = 0.5 * (lo + hi);
            if unstable(mid) {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        lo
    })
}

/// Decides, every few accepted steps, whether the flow is stiff at the current step size:
/// h·ρ(∇²f) against Tsit45's stability bound, ρ from a few power iterations on
/// Hessian–vector products warm-started from the last check's vector.
struct StiffnessMonitor<'f> {
    field: &'f VectorField,
    ws: Workspace,
    v: Vec<f64>,
    hv: Vec<f64>,
    steps_since_check: usize,
    interval: usize,
    /// Consecutive checks that voted to switch.
    votes: usize,
    /// The step size at the last check: BDF restarts at order 1 with a small step after a
    /// switch, and must not be sent back while its step is still growing.
    last_h: f64,
    t_end: f64,
    implicit_allowed: bool,
    report: AutoReport,
}

impl<'f> StiffnessMonitor<'f> {
    const TO_IMPLICIT: f64 = 0.7;
    const TO_EXPLICIT: f64 = 0.25;
    const MIN_INTERVAL: usize = 10;
    const MAX_INTERVAL: usize = 80;
    const POWER_ITERATIONS: usize = 3;
    const FIRST_POWER_ITERATIONS: usize = 10;
    /// Beyond this many switches the problem is left to the method it is on: a flow that
    /// keeps crossing the thresholds gains nothing from more set-up costs.
    const MAX_SWITCHES: usize = 20;
    const PAYBACK: f64 = 10.0;
    /// New rhs evaluations per accepted Tsit45 step (7 stages, the last reused).
    const EXPLICIT_RHS_PER_STEP: f64 = 6.0;

    fn new(field: &'f VectorField, t_end: f64) -> Self {
        let n = field.state_len();
        let lu_macs = (n as f64).powi(3) / 3.0;
        // A fixed, dense start vector: deterministic, and not orthogonal to any eigenvector
        // in practice (the warm start carries the estimate from there on).
        let v: Vec<f64> = (0..n)
            .map(|i| 1.0 + 0.5 * ((i as f64) * 0.618_033_988_749_895).fract())
            .collect();
        Self {
            field,
            ws: field.workspace(),
            v,
            hv: vec![0.0; n],
            steps_since_check: 0,
            interval: Self::MIN_INTERVAL,
            votes: 0,
            last_h: f64::INFINITY,
            t_end,
            implicit_allowed: true,
            report: AutoReport {
                stability_bound: tsit45_stability_bound(),
                to_implicit_fraction: Self::TO_IMPLICIT,
                to_explicit_fraction: Self::TO_EXPLICIT,
                switch_cost_rhs: (field.jacobian_cost_macs() + lu_macs) / field.rhs_cost_macs(),
                payback: Self::PAYBACK,
                ..AutoReport::default()
            },
        }
    }

    /// ρ(∇²f) at `y`, estimated as ‖Hv‖ for the unit power-iteration vector v (a lower bound
    /// that converges from below).
    fn spectral_radius(&mut self, y: &[f64]) -> f64 {
        let iterations = if self.report.checks == 0 {
            Self::FIRST_POWER_ITERATIONS
        } else {
            Self::POWER_ITERATIONS
        };
        self.report.checks += 1;
        let mut rho = 0.0;
        for _ in 0..iterations {
            normalise(&mut self.v);
            self.field.hvp(y, &self.v, &mut self.hv, &mut self.ws);
            self.report.hvp_evals += 1;
            rho = self.hv.iter().map(|x| x * x).sum::<f64>().sqrt();
            if rho == 0.0 || !rho.is_finite() {
                break;
            }
            self.v.copy_from_slice(&self.hv);
        }
        if !rho.is_finite() || rho == 0.0 {
            // Keep a usable start vector for the next check.
            self.v.iter_mut().for_each(|x| *x = 1.0);
        }
        rho
    }

    /// The method to switch to after an accepted step of `method` ending at (`t`, `y`) with
    /// step size `h`, if any.
    fn after_step(&mut self, method: Method, y: &[f64], t: f64, h: f64) -> Option<Method> {
        self.steps_since_check += 1;
        if self.steps_since_check < self.interval
            || self.report.switches.len() >= Self::MAX_SWITCHES
            || (method != Method::Bdf && !self.implicit_allowed)
        {
            return None;
        }
        self.steps_since_check = 0;
        let rho = self.spectral_radius(y);
        let h_rho = h.abs() * rho;
        let bound = self.report.stability_bound;
        let growing = h.abs() > self.last_h;
        self.last_h = h.abs();
        let (vote, to) = match method {
            Method::Bdf => (
                h_rho <= Self::TO_EXPLICIT * bound && !growing,
                Method::Tsit45,
            ),
            _ => (h_rho >= Self::TO_IMPLICIT * bound, Method::Bdf),
        };
        if !vote {
            self.votes = 0;
            self.interval = (2 * self.interval).min(Self::MAX_INTERVAL);
            return None;
        }
        self.votes += 1;
        self.interval = Self::MIN_INTERVAL;
        if self.votes < 2 {
            return None;
        }
        self.votes = 0;
        if to == Method::Bdf {
            let remaining = Self::EXPLICIT_RHS_PER_STEP * (self.t_end - t) / h.abs();
            if remaining < self.report.payback * self.report.switch_cost_rhs {
                // The rest of the horizon only gets shorter: stop checking.
                self.report.declined += 1;
                self.implicit_allowed = false;
                return None;
            }
        }
        self.last_h = f64::INFINITY;
        self.report.switches.push(MethodSwitch {
            t,
            from: method.name().to_string(),
            to: to.name().to_string(),
            step_size: h,
            spectral_radius: rho,
            h_rho,
        });
        Some(to)
    }
}

fn normalise(v: &mut [f64]) {
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use diffsol_la::LinearSolver as _;
    use nalgebra::DMatrix;

    struct Dense(M);

    impl LaLinearOp for Dense {
        type T = f64;
        type V = V;
        type M = M;
        type C = NalgebraContext;
        fn nrows(&self) -> usize {
            diffsol::MatrixCommon::nrows(&self.0)
        }
        fn ncols(&self) -> usize {
            diffsol::MatrixCommon::ncols(&self.0)
        }
        fn context(&self) -> &NalgebraContext {
            diffsol::Matrix::context(&self.0)
        }
        fn matrix_inplace(&self, y: &mut M) {
            diffsol::Matrix::copy_from(y, &self.0);
        }
    }

    fn factorised(a: &DMatrix<f64>) -> BlockedLu {
        let n = a.nrows();
        let data = a.as_slice().to_vec();
        let op = Dense(<M as diffsol::DenseMatrix>::from_vec(
            n,
            n,
            data,
            NalgebraContext::default(),
        ));
        let mut lu = BlockedLu::default();
        lu.set_sparsity(&op);
        lu.set_linearisation(&op);
        lu
    }

    /// A x = b and Aᵀ x = b to rounding, on a matrix that needs row exchanges (zero (0, 0))
    /// and is large enough for faer's blocked path.
    #[test]
    fn blocked_lu_solves_and_transposed_solves() {
        let n = 300;
        let a = DMatrix::from_fn(n, n, |i, j| {
            if i == 0 && j == 0 {
                0.0
            } else {
                ((i * 31 + j * 17) % 23) as f64 / 23.0 - 0.5 + if i == j { 2.0 } else { 0.0 }
            }
        });
        let x_true: Vec<f64> = (0..n).map(|i| (i as f64 * 0.37).sin()).collect();
        let lu = factorised(&a);
        for transpose in [false, true] {
            let op = if transpose { a.transpose() } else { a.clone() };
            let b = &op * nalgebra::DVector::from_column_slice(&x_true);
            let mut x = V::from_slice(b.as_slice(), NalgebraContext::default());
            if transpose {
                lu.solve_transpose_in_place(&mut x).unwrap();
            } else {
                lu.solve_in_place(&mut x).unwrap();
            }
            let err = slice(&x)
                .iter()
                .zip(&x_true)
                .map(|(p, q)| (p - q).abs())
                .fold(0.0, f64::max);
            assert!(err < 1e-12, "transpose = {transpose}: error {err:e}");
        }
    }

    #[test]
    fn blocked_lu_reports_a_singular_matrix() {
        let mut a = DMatrix::<f64>::identity(4, 4);
        a[(2, 2)] = 0.0;
        let lu = factorised(&a);
        let mut x = V::from_slice(&[1.0; 4], NalgebraContext::default());
        let e = lu.solve_in_place(&mut x).unwrap_err();
        assert!(e.to_string().contains("singular"), "{e}");
        assert!(BlockedLu::default().solve_in_place(&mut x).is_err());
    }
}
