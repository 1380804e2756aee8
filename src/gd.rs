//! Gradient descent U ← U − ηGV, V ← V − ηGᵀU, both from the old iterate (MATH §2).

use serde::{Deserialize, Serialize};

use crate::field::VectorField;

/// How a trajectory ended. Divergence and solver failure are results, not errors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Status {
    Completed,
    /// GD's loss became non-finite or exceeded the bound at `step` (time `t`); `last_loss` is
    /// the last finite loss, at step − 1.
    Diverged {
        step: usize,
        t: f64,
        loss: f64,
        last_loss: f64,
    },
    /// The flow solver stopped at time `t` for `reason` (diffsol's message).
    Failed {
        t: f64,
        reason: String,
    },
}

impl Status {
    pub fn label(&self) -> &'static str {
        match self {
            Status::Completed => "completed",
            Status::Diverged { .. } => "diverged",
            Status::Failed { .. } => "failed",
        }
    }
}

/// States at output times; only finite states are kept.
#[derive(Debug, Clone)]
pub struct Trajectory {
    pub steps: Vec<usize>,
    pub times: Vec<f64>,
    pub states: Vec<Vec<f64>>,
    pub status: Status,
}

#[derive(Debug, Clone, Copy)]
pub struct GdOptions {
    pub eta: f64,
    pub steps: usize,
    /// Keep every j-th iterate (and always the last).
    pub record_every: usize,
    /// GD counts as diverged once the loss exceeds this multiple of max(f(x_0), 1).
    pub divergence_factor: f64,
}

impl GdOptions {
    pub fn new(eta: f64, steps: usize, record_every: usize) -> Self {
        Self {
            eta,
            steps,
            record_every: record_every.max(1),
            divergence_factor: 1e12,
        }
    }

    /// The steps GD records: 0, every, 2·every, …, and the last.
    pub fn recorded_steps(&self) -> Vec<usize> {
        let mut s: Vec<usize> = (0..=self.steps).step_by(self.record_every).collect();
        if *s.last().expect("step 0") != self.steps {
            s.push(self.steps);
        }
        s
    }
}

/// Run GD from `x0`; `on_step(j, loss, state)` sees every iterate (j = 0..=steps) and its
/// loss before it is stepped from, for callers that need more than the recorded states.
pub fn gradient_descent_with(
    field: &VectorField,
    x0: &[f64],
    opts: &GdOptions,
    mut on_step: impl FnMut(usize, f64, &[f64]),
) -> Trajectory {
    let mut ws = field.workspace();
    let mut x = x0.to_vec();
    let mut f = vec![0.0; x.len()];
    let mut traj = Trajectory {
        steps: vec![],
        times: vec![],
        states: vec![],
        status: Status::Completed,
    };
    let loss0 = field.loss(&x, &mut ws);
    let bound = opts.divergence_factor * loss0.max(1.0);
    let mut last_loss = loss0;
    for j in 0..=opts.steps {
        // The loss at x_j comes with the field at x_j, so divergence is caught before x_j is
        // recorded and non-finite values never reach an output.
        let loss = field.rhs(&x, &mut f, &mut ws);
        if !loss.is_finite() || loss > bound || x.iter().any(|v| !v.is_finite()) {
            traj.status = Status::Diverged {
                step: j,
                t: j as f64 * opts.eta,
                loss,
                last_loss,
            };
            break;
        }
        last_loss = loss;
        on_step(j, loss, &x);
        if j % opts.record_every == 0 || j == opts.steps {
            traj.steps.push(j);
            traj.times.push(j as f64 * opts.eta);
            traj.states.push(x.clone());
        }
        if j == opts.steps {
            break;
        }
        for (xi, fi) in x.iter_mut().zip(&f) {
            *xi += opts.eta * fi;
        }
    }
    traj
}

/// Run GD from `x0`, keeping the iterates [`GdOptions::recorded_steps`] names.
pub fn gradient_descent(field: &VectorField, x0: &[f64], opts: &GdOptions) -> Trajectory {
    gradient_descent_with(field, x0, opts, |_, _, _| {})
}

/// GD at several step sizes (or horizons) from one start, in lockstep: each step evaluates the
/// field of every unfinished run with one pass of 𝒜 and one of 𝒜* over the sensing matrix
/// ([`VectorField::rhs_batch`]; one pass per eight runs). Every trajectory equals
/// [`gradient_descent`]'s to rounding: the batched products sum in another order.
pub fn gradient_descent_batch(
    field: &VectorField,
    x0: &[f64],
    opts: &[GdOptions],
) -> Vec<Trajectory> {
    let starts = vec![x0; opts.len()];
    gradient_descent_batch_from(field, &starts, opts)
}

/// [`gradient_descent_batch`] with a start of its own for every run (several seeds or α
/// values on one operator): run b starts from `starts[b]` with `opts[b]`.
pub fn gradient_descent_batch_from(
    field: &VectorField,
    starts: &[&[f64]],
    opts: &[GdOptions],
) -> Vec<Trajectory> {
    assert_eq!(starts.len(), opts.len(), "one start per run");
    let mut ws = field.workspace();
    // Runs sharing a start (a step-size sweep) share its loss: one pass, not one per run.
    let mut loss0: Vec<f64> = Vec::with_capacity(starts.len());
    for (b, x) in starts.iter().enumerate() {
        let shared = starts[..b].iter().position(|y| std::ptr::eq(*x, *y));
        loss0.push(match shared {
            Some(a) => loss0[a],
            None => field.loss(x, &mut ws),
        });
    }
    let mut xs: Vec<Vec<f64>> = starts.iter().map(|x| x.to_vec()).collect();
    let mut fs: Vec<Vec<f64>> = starts.iter().map(|x| vec![0.0; x.len()]).collect();
    let mut last_loss = loss0.clone();
    let mut done = vec![false; opts.len()];
    let mut trajs: Vec<Trajectory> = opts
        .iter()
        .map(|_| Trajectory {
            steps: vec![],
            times: vec![],
            states: vec![],
            status: Status::Completed,
        })
        .collect();
    let mut j = 0;
    while done.iter().any(|d| !d) {
        let active: Vec<usize> = (0..opts.len()).filter(|&b| !done[b]).collect();
        let states: Vec<&[f64]> = active.iter().map(|&b| xs[b].as_slice()).collect();
        let mut outs: Vec<Vec<f64>> = active.iter().map(|&b| std::mem::take(&mut fs[b])).collect();
        let losses = field.rhs_batch(&states, &mut outs);
        for ((&b, loss), out) in active.iter().zip(losses).zip(outs) {
            fs[b] = out;
            let o = &opts[b];
            let bound = o.divergence_factor * loss0[b].max(1.0);
            let x = &mut xs[b];
            if !loss.is_finite() || loss > bound || x.iter().any(|v| !v.is_finite()) {
                trajs[b].status = Status::Diverged {
                    step: j,
                    t: j as f64 * o.eta,
                    loss,
                    last_loss: last_loss[b],
                };
                done[b] = true;
                continue;
            }
            last_loss[b] = loss;
            if j % o.record_every == 0 || j == o.steps {
                trajs[b].steps.push(j);
                trajs[b].times.push(j as f64 * o.eta);
                trajs[b].states.push(x.clone());
            }
            if j == o.steps {
                done[b] = true;
                continue;
            }
            for (xi, fi) in x.iter_mut().zip(&fs[b]) {
                *xi += o.eta * fi;
            }
        }
        j += 1;
    }
    trajs
}
