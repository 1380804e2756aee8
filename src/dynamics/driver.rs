//! The loop every discrete method runs in: evaluate, test for divergence, show the iterate to
//! the observers, keep what [`SaveAt`] asks for, step. Several runs on one field advance in
//! lockstep, so that a [`Stepper`] can share each pass over the sensing matrix between them.

use super::{Status, Stepper, Trajectory};
use crate::field::{Field, Workspace};

/// Which iterates a run keeps as states.
#[derive(Debug, Clone, PartialEq)]
pub enum SaveAt {
    /// Iterates 0, n, 2n, … and the last.
    Every(usize),
    /// Only the last iterate reached.
    Last,
    /// None (observers see every iterate anyway).
    Nothing,
}

impl SaveAt {
    fn keeps(&self, j: usize, steps: usize) -> bool {
        match self {
            SaveAt::Every(n) => j % n.max(&1) == 0 || j == steps,
            SaveAt::Last => j == steps,
            SaveAt::Nothing => false,
        }
    }
}

/// The one divergence rule: the loss is non-finite, a state entry is non-finite, or the loss
/// exceeds `factor`·max(f(x_0), 1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Divergence {
    pub factor: f64,
}

impl Default for Divergence {
    fn default() -> Self {
        Self { factor: 1e12 }
    }
}

impl Divergence {
    fn bound(&self, loss0: f64) -> f64 {
        self.factor * loss0.max(1.0)
    }
}

/// One run: step size, number of steps, what to keep.
#[derive(Debug, Clone, PartialEq)]
pub struct RunOptions {
    pub eta: f64,
    pub steps: usize,
    pub save: SaveAt,
    pub divergence: Divergence,
    /// The iterates whose loss must be the loss itself (those an observer records); at the
    /// others a mini-batch method may give its batch's estimate, for the divergence test
    /// ([`super::Stepper::evaluate_estimate`]). Every iterate by default.
    pub loss_at: SaveAt,
    /// The time t_j = j·dt of iterate j: η for GD, √η for momentum at the critical scaling
    /// (MATH §9).
    pub dt: f64,
}

impl RunOptions {
    /// `steps` steps of size `eta`, keeping every `record_every`-th iterate and the last.
    pub fn new(eta: f64, steps: usize, record_every: usize) -> Self {
        Self {
            eta,
            steps,
            save: SaveAt::Every(record_every.max(1)),
            divergence: Divergence::default(),
            loss_at: SaveAt::Every(1),
            dt: eta,
        }
    }

    /// The same with t_j = j·`dt`.
    pub fn with_dt(self, dt: f64) -> Self {
        Self { dt, ..self }
    }

    /// The steps [`SaveAt`] keeps when the run completes.
    pub fn saved_steps(&self) -> Vec<usize> {
        (0..=self.steps)
            .filter(|&j| self.save.keeps(j, self.steps))
            .collect()
    }
}

/// What an observer sees of one iterate.
pub struct Iterate<'a> {
    /// Which run of the driver (0 for a single run).
    pub run: usize,
    pub step: usize,
    pub t: f64,
    pub state: &'a [f64],
    /// The loss at x_j — at the iterates [`RunOptions::loss_at`] names; at the others a
    /// mini-batch method's may be its batch's unbiased estimate.
    pub loss: f64,
    /// The field's workspace at this iterate (G at x_j), when the stepper has one.
    pub workspace: Option<&'a Workspace>,
}

/// Sees every iterate of every run, in order, after its divergence test.
pub trait Observer {
    fn observe(&mut self, it: &Iterate<'_>);
}

impl<F: FnMut(&Iterate<'_>)> Observer for F {
    fn observe(&mut self, it: &Iterate<'_>) {
        self(it)
    }
}

struct Run<S> {
    stepper: S,
    x: Vec<f64>,
    opts: RunOptions,
    bound: f64,
    last_loss: f64,
    done: bool,
    traj: Trajectory,
}

/// Runs one or more trajectories of a stepper on a field, one iterate at a time.
pub struct Driver<'f, S: Stepper> {
    field: &'f dyn Field,
    runs: Vec<Run<S>>,
    step: usize,
    /// Made by [`Driver::batch`]: every evaluation goes through [`Stepper::evaluate_batch`].
    batched: bool,
}

impl<'f, S: Stepper> Driver<'f, S> {
    /// One run from `x0`.
    pub fn new(field: &'f dyn Field, stepper: S, x0: &[f64], opts: RunOptions) -> Self {
        Self {
            batched: false,
            ..Self::batch(field, vec![(stepper, x0.to_vec(), opts)])
        }
    }

    /// Several runs, each with its own stepper, start and options, evaluated together
    /// ([`Stepper::evaluate_batch`]) however many are left: a run's iterates do not depend on
    /// which others it is batched with, or on their number.
    pub fn batch(field: &'f dyn Field, runs: Vec<(S, Vec<f64>, RunOptions)>) -> Self {
        let runs = runs
            .into_iter()
            .map(|(stepper, x, opts)| {
                assert_eq!(x.len(), field.state_len(), "start of the field's shape");
                Run {
                    stepper,
                    x,
                    opts,
                    bound: f64::INFINITY,
                    last_loss: f64::NAN,
                    done: false,
                    traj: Trajectory::empty(),
                }
            })
            .collect();
        Self {
            field,
            runs,
            step: 0,
            batched: true,
        }
    }

    /// The index of the next iterate to be evaluated.
    pub fn step(&self) -> usize {
        self.step
    }

    /// Whether every run has ended.
    pub fn is_done(&self) -> bool {
        self.runs.iter().all(|r| r.done)
    }

    /// Evaluate iterate j of every unfinished run, test it for divergence, show it to
    /// `observer`, keep it if asked, and step from it. Returns whether a run is unfinished.
    pub fn advance(&mut self, observer: &mut dyn Observer) -> bool
    where
        S: Sized,
    {
        let j = self.step;
        let active: Vec<usize> = (0..self.runs.len())
            .filter(|&b| !self.runs[b].done)
            .collect();
        if active.is_empty() {
            return false;
        }
        if super::stop::requested() {
            for &b in &active {
                let r = &mut self.runs[b];
                r.traj.status = Status::Failed {
                    t: j as f64 * r.opts.dt,
                    reason: super::stop::REASON.into(),
                };
                r.done = true;
            }
            return false;
        }
        // a run that may estimate its loss here evaluates alone, cheaply (never at x_0, whose
        // loss sets the divergence bound)
        let estimate = |r: &Run<S>| {
            j > 0 && r.stepper.estimates_loss() && !r.opts.loss_at.keeps(j, r.opts.steps)
        };
        let losses = if !self.batched || active.iter().any(|&b| estimate(&self.runs[b])) {
            active
                .iter()
                .map(|&b| {
                    let e = estimate(&self.runs[b]);
                    let r = &mut self.runs[b];
                    if e {
                        r.stepper.evaluate_estimate(self.field, &r.x)
                    } else {
                        r.stepper.evaluate(self.field, &r.x)
                    }
                })
                .collect()
        } else {
            let (xs, mut steppers): (Vec<&[f64]>, Vec<&mut S>) = self
                .runs
                .iter_mut()
                .filter(|r| !r.done)
                .map(|r| {
                    let Run { x, stepper, .. } = r;
                    (x.as_slice(), stepper)
                })
                .unzip();
            S::evaluate_batch(&mut steppers, self.field, &xs)
        };
        for (&b, loss) in active.iter().zip(losses) {
            let r = &mut self.runs[b];
            if j == 0 {
                r.bound = r.opts.divergence.bound(loss);
            }
            let t = j as f64 * r.opts.dt;
            // The loss at x_j comes with the field at x_j, so divergence is caught before x_j
            // is kept and non-finite values never reach an output.
            if !loss.is_finite() || loss > r.bound || r.x.iter().any(|v| !v.is_finite()) {
                r.traj.status = Status::Diverged {
                    step: j,
                    t,
                    loss,
                    last_loss: r.last_loss,
                };
                r.done = true;
                continue;
            }
            r.last_loss = loss;
            observer.observe(&Iterate {
                run: b,
                step: j,
                t,
                state: &r.x,
                loss,
                workspace: r.stepper.workspace(),
            });
            if r.opts.save.keeps(j, r.opts.steps) {
                r.traj.steps.push(j);
                r.traj.times.push(t);
                r.traj.states.push(r.x.clone());
            }
            if j == r.opts.steps {
                r.done = true;
                continue;
            }
            r.stepper.advance(self.field, &mut r.x, r.opts.eta);
            if let Some(reason) = r.stepper.failure() {
                r.traj.status = Status::Failed {
                    t: (j + 1) as f64 * r.opts.dt,
                    reason,
                };
                r.done = true;
            }
        }
        self.step += 1;
        !self.is_done()
    }

    /// Evaluate the next iterate of a single unfinished run together with the field at
    /// `other` (into `other_ws`: G there if `gradient`, the loss alone otherwise), so that the
    /// next [`Driver::advance`] finds its evaluation done: GD and the flow then share one pass
    /// over the sensing matrix, where the stepper can share it (the return value says so).
    /// Does nothing for batched or finished drivers.
    pub fn evaluate_beside(
        &mut self,
        other: &[f64],
        other_ws: &mut Workspace,
        gradient: bool,
    ) -> bool {
        let field = self.field;
        self.lone_run().is_some_and(|r| {
            r.stepper
                .evaluate_beside(field, &r.x, other, other_ws, gradient)
        })
    }

    /// [`Driver::evaluate_beside`] with G at `other` and the loss alone at `loss_at`, all in
    /// one pass where the stepper can share it; false, having evaluated nothing, where it
    /// cannot ([`Stepper::evaluate_beside_with_loss`]).
    pub fn evaluate_beside_with_loss(
        &mut self,
        other: (&[f64], &mut Workspace),
        loss_at: (&[f64], &mut Workspace),
    ) -> bool {
        let field = self.field;
        self.lone_run().is_some_and(|r| {
            r.stepper
                .evaluate_beside_with_loss(field, &r.x, other, loss_at)
        })
    }

    /// The single unfinished run, for a pass shared with another trajectory's evaluation
    /// (none for batched or finished drivers).
    fn lone_run(&mut self) -> Option<&mut Run<S>> {
        (!self.batched && !self.is_done()).then(|| &mut self.runs[0])
    }

    /// Advance until every run has ended.
    pub fn run(mut self, observer: &mut dyn Observer) -> Vec<Trajectory> {
        while self.advance(observer) {}
        self.finish()
    }

    /// The trajectories (runs still unfinished end where they stand).
    pub fn finish(self) -> Vec<Trajectory> {
        self.runs.into_iter().map(|r| r.traj).collect()
    }

    /// The stepper of run `b` (with whatever it accumulated).
    pub fn stepper(&self, b: usize) -> &S {
        &self.runs[b].stepper
    }

    /// The current state of run `b`.
    pub fn state(&self, b: usize) -> &[f64] {
        &self.runs[b].x
    }
}

/// Run GD from `x0`, keeping the iterates `opts` asks for.
pub fn gradient_descent(field: &dyn Field, x0: &[f64], opts: &RunOptions) -> Trajectory {
    let mut none = |_: &Iterate<'_>| {};
    Driver::new(field, super::Gd::new(), x0, opts.clone())
        .run(&mut none)
        .pop()
        .expect("one run")
}

/// GD at several step sizes (or lengths) from one start, in lockstep: each step evaluates
/// every unfinished run with one pass of 𝒜 and one of 𝒜* over the sensing matrix per eight
/// runs ([`Field::rhs_batch`]). Every trajectory equals [`gradient_descent`]'s to rounding:
/// the batched products sum in another order.
pub fn gradient_descent_batch(
    field: &dyn Field,
    x0: &[f64],
    opts: &[RunOptions],
) -> Vec<Trajectory> {
    let starts = vec![x0; opts.len()];
    gradient_descent_batch_from(field, &starts, opts)
}

/// [`gradient_descent_batch`] with a start of its own for every run (several seeds or α
/// values on one operator): run b starts from `starts[b]` with `opts[b]`.
pub fn gradient_descent_batch_from(
    field: &dyn Field,
    starts: &[&[f64]],
    opts: &[RunOptions],
) -> Vec<Trajectory> {
    assert_eq!(starts.len(), opts.len(), "one start per run");
    let runs = starts
        .iter()
        .zip(opts)
        .map(|(x, o)| (super::Gd::new(), x.to_vec(), o.clone()))
        .collect();
    let mut none = |_: &Iterate<'_>| {};
    Driver::batch(field, runs).run(&mut none)
}
