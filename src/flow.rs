//! The gradient flow U' = −GV, V' = −GᵀU, and GD's modified flow x' = −∇f̃ with
//! f̃ = f + (η/4)‖∇f‖², solved with diffsol. This is the only module that talks to diffsol.
//!
//! The equations implement diffsol's traits directly so that the implicit methods get the
//! exact Jacobian from [`VectorField::jacobian_into`] (one GEMM) instead of diffsol's default
//! of one jvp per state; [`JacobianMode::Assembled`] keeps that default for comparison.

use std::cell::{Cell, RefCell};

use diffsol::{
    ConstantOp, DiffsolError, NalgebraContext, NalgebraLU, NalgebraMat, NalgebraVec, NonLinearOp,
    NonLinearOpJacobian, OdeBuilder, OdeEquations, OdeEquationsRef, OdeSolverMethod, Op,
    ParameterisedOp, UnitCallable, Vector, VectorCommon,
};
use serde::{Deserialize, Serialize};

use crate::config::Method;
use crate::error::{Error, Result};
use crate::field::{VectorField, Workspace};
use crate::gd::{Status, Trajectory};

type M = NalgebraMat<f64>;
type V = NalgebraVec<f64>;

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
    let ctx = NalgebraContext::default();
    let eqn = FlowEqn {
        field,
        ws: RefCell::new(field.workspace()),
        x0: V::from_slice(x0, ctx),
        p: V::zeros(0, ctx),
        ctx,
        mode: opts.jacobian,
        modified_eta: opts.modified_eta,
        rhs_evals: Cell::new(0),
        jvp_evals: Cell::new(0),
        jacobian_evals: Cell::new(0),
    };
    let problem = OdeBuilder::<M>::new()
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
    let (trajectory, st) = match opts.method {
        Method::Tsit45 => start(problem.tsit45(), x0, times, steps, on_step),
        Method::Bdf => start(problem.bdf::<NalgebraLU<f64>>(), x0, times, steps, on_step),
        Method::TrBdf2 => start(
            problem.tr_bdf2::<NalgebraLU<f64>>(),
            x0,
            times,
            steps,
            on_step,
        ),
        Method::Esdirk34 => start(
            problem.esdirk34::<NalgebraLU<f64>>(),
            x0,
            times,
            steps,
            on_step,
        ),
    };
    let e = &problem.eqn;
    let stats = SolverStats {
        method: opts.method.name().to_string(),
        steps: st.number_of_steps,
        rejected_steps: st.number_of_error_test_failures,
        rhs_evals: e.rhs_evals.get(),
        jvp_evals: e.jvp_evals.get(),
        jacobian_evals: e.jacobian_evals.get(),
        lu_factorisations: st.number_of_linear_solver_setups,
        nonlinear_iterations: st.number_of_nonlinear_solver_iterations,
        nonlinear_failures: st.number_of_nonlinear_solver_fails,
    };
    Ok(FlowSolution { trajectory, stats })
}

type Stats = diffsol::ode_solver::OdeSolverStatistics;

/// A solver that could not even be set up (e.g. its first step failed) is a failed
/// trajectory at t = 0.
fn start<'p, 'f, S: OdeSolverMethod<'p, FlowEqn<'f>>>(
    solver: std::result::Result<S, DiffsolError>,
    x0: &[f64],
    times: &[f64],
    steps: &[usize],
    on_step: &mut dyn FnMut(f64),
) -> (Trajectory, Stats)
where
    'f: 'p,
{
    match solver {
        Ok(solver) => drive(solver, x0, times, steps, on_step),
        Err(e) => (
            Trajectory {
                steps: vec![],
                times: vec![],
                states: vec![],
                status: Status::Failed {
                    t: 0.0,
                    reason: e.to_string(),
                },
            },
            Stats::default(),
        ),
    }
}

/// Step until each output time lies inside the last step and interpolate there (diffsol's
/// RK and SDIRK solvers interpolate only within the last step).
fn drive<'p, 'f, S: OdeSolverMethod<'p, FlowEqn<'f>>>(
    mut solver: S,
    x0: &[f64],
    times: &[f64],
    steps: &[usize],
    on_step: &mut dyn FnMut(f64),
) -> (Trajectory, Stats)
where
    'f: 'p,
{
    let mut traj = Trajectory {
        steps: Vec::with_capacity(times.len()),
        times: Vec::with_capacity(times.len()),
        states: Vec::with_capacity(times.len()),
        status: Status::Completed,
    };
    let t0 = solver.state().t;
    'outer: for (&t, &step) in times.iter().zip(steps) {
        let state = if t <= t0 {
            x0.to_vec()
        } else {
            while solver.state().t < t {
                if let Err(e) = solver.step() {
                    traj.status = Status::Failed {
                        t: solver.state().t,
                        reason: e.to_string(),
                    };
                    break 'outer;
                }
                on_step(solver.state().t);
                if slice(solver.state().y).iter().any(|v| !v.is_finite()) {
                    traj.status = Status::Failed {
                        t: solver.state().t,
                        reason: "non-finite state".to_string(),
                    };
                    break 'outer;
                }
            }
            match solver.interpolate(t) {
                Ok(y) => slice(&y).to_vec(),
                Err(e) => {
                    traj.status = Status::Failed {
                        t,
                        reason: format!("interpolation failed: {e}"),
                    };
                    break 'outer;
                }
            }
        };
        traj.steps.push(step);
        traj.times.push(t);
        traj.states.push(state);
    }
    let stats = solver.get_statistics().clone();
    (traj, stats)
}
