//! One abstraction for everything that yields a trajectory: a discrete method ([`Discrete`])
//! and each of its limits ([`Limit`]: an ODE, a second-order ODE on (X, Ẋ, τ), GD's central
//! flow, a path of a stochastic modified equation). Each yields its positions at requested
//! times with named columns beside them and ends with a [`Status`]; an experiment that compares
//! a method with its limits takes a list of them by name ([`named`]) and never asks which is
//! which.
//!
//! The run and the sweep also drive methods directly ([`crate::dynamics::Driver`]): in lockstep
//! beside a limit, or batched over step sizes and replicas, so that one pass over the sensing
//! matrix serves several iterates. Those are the same iterates [`Discrete`] yields (a test holds
//! them equal); the lockstep is how they are made cheaply, not another kind of dynamics.

use std::sync::Arc;

use super::{FlowVariant, Limit, LimitSolver, Optimizer};
use crate::dynamics::flow::{
    solve_central_flow_with, solve_flow_sharing, CentralReport, FlowOptions, Passenger,
    SolverStats, Times,
};
use crate::dynamics::{Driver, Iterate, RunOptions, SaveAt, Status};
use crate::error::{Error, Result};
use crate::field::Field;

/// One output of a trajectory.
pub struct Output<'a> {
    /// Its position: a method's iterate, a limit's state at that time (for a second-order
    /// limit, its X).
    pub state: &'a [f64],
    /// Named values beside the state (a method's loss; the central flow's sharpness, tr Σ,
    /// held count).
    pub columns: Vec<(&'static str, f64)>,
    /// Directions the limit holds (the central flow's eigenvectors at 2/η), if any.
    pub directions: &'a [Vec<f64>],
}

/// A trajectory's kept outputs ([`Dynamics::solve_kept`]) and how it ended.
pub struct Kept {
    pub states: Vec<Vec<f64>>,
    /// The named columns beside each kept state.
    pub columns: Vec<Vec<(&'static str, f64)>>,
    pub end: End,
}

/// How a trajectory ended, and the work it took.
pub struct End {
    pub status: Status,
    pub solver: SolverStats,
    /// The central flow's report (events, work), for that limit.
    pub central: Option<CentralReport>,
}

/// Anything that yields a trajectory: states at requested times, named columns beside them,
/// and a [`Status`] at the end.
pub trait Dynamics {
    /// Its name in outputs: the optimiser's for a method (the `dynamics` column of
    /// trajectory.csv), `flow` for a limit.
    fn name(&self) -> String;

    /// Run to the last of `times` (ascending), handing every output (index, t, output) to
    /// `on_output` and every accepted step's time to `on_step`. `opts` sets a continuous
    /// solver's tolerances. A discrete method takes its own steps and needs `times` on its grid
    /// t = j·h; an SME path takes its substeps within the steps of a [`Times::Grid`] and ends
    /// as failed on a list. The grid of the method's steps serves every kind.
    fn solve(
        &self,
        times: Times<'_>,
        opts: &FlowOptions,
        on_output: &mut dyn FnMut(usize, f64, &Output<'_>),
        on_step: &mut dyn FnMut(f64),
    ) -> Result<End>;

    /// Solve at `times` and keep the positions of the outputs `keep` accepts, with their
    /// named columns: for an experiment that compares whole trajectories after the solve.
    fn solve_kept(
        &self,
        times: Times<'_>,
        opts: &FlowOptions,
        keep: &dyn Fn(usize) -> bool,
    ) -> Result<Kept> {
        let (mut states, mut columns) = (Vec::new(), Vec::new());
        let end = self.solve(
            times,
            opts,
            &mut |i, _, out| {
                if keep(i) {
                    states.push(out.state.to_vec());
                    columns.push(out.columns.clone());
                }
            },
            &mut |_| {},
        )?;
        Ok(Kept {
            states,
            columns,
            end,
        })
    }
}

impl Dynamics for Limit {
    fn name(&self) -> String {
        "flow".into()
    }

    fn solve(
        &self,
        times: Times<'_>,
        opts: &FlowOptions,
        on_output: &mut dyn FnMut(usize, f64, &Output<'_>),
        on_step: &mut dyn FnMut(f64),
    ) -> Result<End> {
        self.solve_sharing(times, opts, on_output, on_step, None)
    }
}

impl Limit {
    /// Whether a [`Passenger`] can ride on its solve's passes: an ODE of the field itself
    /// (not one built around it), whose right-hand sides are the field's own evaluations.
    pub fn carries_passengers_of(&self, field: &dyn Field) -> bool {
        matches!(self.solver, LimitSolver::Ode)
            && std::ptr::addr_eq(Arc::as_ptr(&self.field), field as *const dyn Field)
    }

    /// [`Dynamics::solve`] with `passenger` on the passes of an ODE limit's right-hand sides
    /// (the other limits take none).
    pub fn solve_sharing(
        &self,
        times: Times<'_>,
        opts: &FlowOptions,
        on_output: &mut dyn FnMut(usize, f64, &Output<'_>),
        on_step: &mut dyn FnMut(f64),
        passenger: Option<&dyn Passenger>,
    ) -> Result<End> {
        match &self.solver {
            LimitSolver::Sme(sme) => {
                let (status, solver) = crate::dynamics::sde::solve_sme(
                    self.field.as_ref(),
                    sme,
                    &self.start,
                    times,
                    &mut self.positions(on_output),
                    on_step,
                );
                Ok(End {
                    status,
                    solver,
                    central: None,
                })
            }
            LimitSolver::Ode => {
                let (status, solver) = solve_flow_sharing(
                    self.field.as_ref(),
                    &self.start,
                    times,
                    opts,
                    &mut self.positions(on_output),
                    on_step,
                    passenger,
                )?;
                Ok(End {
                    status,
                    solver,
                    central: None,
                })
            }
            LimitSolver::Central { eta, columns } => {
                let (status, solver, report) = solve_central_flow_with(
                    self.field.clone(),
                    *eta,
                    &self.start,
                    times,
                    opts,
                    *columns,
                    &mut |i, t, y, w| {
                        let out = Output {
                            state: self.position(y),
                            columns: vec![
                                ("sharpness", w.sharpness),
                                ("sigma_trace", w.sigma_trace),
                                ("active", w.active as f64),
                            ],
                            directions: &w.vectors,
                        };
                        on_output(i, t, &out)
                    },
                    on_step,
                );
                Ok(End {
                    status,
                    solver,
                    central: Some(report),
                })
            }
        }
    }
}

/// A discrete method as a trajectory: the optimiser's iterates x_j from `start` at step `eta`,
/// output at t_j = j·h (h = η, or √η for the methods of [`super::TimeScale::SqrtEta`]), each with
/// its loss as the column `loss`.
pub struct Discrete {
    pub optimizer: Arc<dyn Optimizer>,
    pub field: Arc<dyn Field>,
    pub start: Vec<f64>,
    pub eta: f64,
    /// The replica whose noise a stochastic method draws (0: the run's own path).
    pub replica: u64,
}

impl Discrete {
    /// The method of `optimizer` at step `eta` from `start` (replica 0).
    pub fn new(
        optimizer: Arc<dyn Optimizer>,
        field: Arc<dyn Field>,
        start: Vec<f64>,
        eta: f64,
    ) -> Self {
        Self {
            optimizer,
            field,
            start,
            eta,
            replica: 0,
        }
    }

    /// The step j of each output time, which must be a step's time j·h (to rounding), in
    /// ascending order.
    fn steps_of(&self, times: Times<'_>) -> Result<Vec<usize>> {
        let h = self.optimizer.time_scale().per_step(self.eta);
        let mut steps: Vec<usize> = Vec::with_capacity(times.len());
        for i in 0..times.len() {
            let t = times.at(i);
            let j = (t / h).round();
            let on_grid = j >= 0.0 && (t - j * h).abs() <= 1e-9 * t.max(h) && j < usize::MAX as f64;
            let why = if !on_grid {
                format!(
                    "is not a time of {}'s iterates t = j·h, h = {h}",
                    self.optimizer.name()
                )
            } else if steps.last().is_some_and(|&last| (j as usize) < last) {
                "comes before the time listed ahead of it: output times ascend".to_string()
            } else {
                steps.push(j as usize);
                continue;
            };
            return Err(Error::invalid("times", t, why));
        }
        Ok(steps)
    }
}

impl Dynamics for Discrete {
    fn name(&self) -> String {
        self.optimizer.name()
    }

    fn solve(
        &self,
        times: Times<'_>,
        _opts: &FlowOptions,
        on_output: &mut dyn FnMut(usize, f64, &Output<'_>),
        on_step: &mut dyn FnMut(f64),
    ) -> Result<End> {
        let steps = self.steps_of(times)?;
        let h = self.optimizer.time_scale().per_step(self.eta);
        let last = steps.last().copied().unwrap_or(0);
        let mut driver = Driver::new(
            self.field.as_ref(),
            self.optimizer.replica_stepper(self.eta, self.replica),
            &self.start,
            RunOptions {
                save: SaveAt::Nothing,
                ..RunOptions::new(self.eta, last, 1).with_dt(h)
            },
        );
        let mut next = 0;
        let mut observe = |it: &Iterate<'_>| {
            while next < steps.len() && steps[next] == it.step {
                let out = Output {
                    state: it.state,
                    columns: vec![("loss", it.loss)],
                    directions: &[],
                };
                on_output(next, times.at(next), &out);
                next += 1;
            }
            // as a limit reports its accepted steps: the time each step reached
            if it.step > 0 {
                on_step(it.t);
            }
        };
        while driver.advance(&mut observe) {}
        // iterates evaluated: x_0 … x_J, or up to the one that diverged
        let evaluations = driver.step();
        let status = driver.finish().pop().expect("one run").status;
        Ok(End {
            status,
            solver: SolverStats {
                method: self.optimizer.name(),
                steps: evaluations.saturating_sub(1),
                rhs_evals: evaluations,
                ..SolverStats::default()
            },
            central: None,
        })
    }
}

/// The dynamics called `name` of `optimizer` at step `eta` from `x0`: the method itself (its
/// own name, e.g. `gd`) or one of its limits (`plain`, `modified`, `central`, `sme1`, `sme2`).
/// `Err` says why there is none.
pub fn named(
    optimizer: &Arc<dyn Optimizer>,
    name: &str,
    field: Arc<dyn Field>,
    x0: &[f64],
    eta: f64,
) -> std::result::Result<Box<dyn Dynamics>, String> {
    if name == optimizer.name() {
        return Ok(Box::new(Discrete::new(
            optimizer.clone(),
            field,
            x0.to_vec(),
            eta,
        )));
    }
    let variant = FlowVariant::ALL
        .into_iter()
        .find(|v| v.name() == name)
        .ok_or_else(|| {
            format!(
                "`{name}` is neither {} nor one of its limits ({})",
                optimizer.name(),
                super::limit_names(&optimizer.limits(), ", ")
            )
        })?;
    Ok(Box::new(optimizer.limit(variant, field, x0, eta)?))
}
