//! Discrete methods: what one step does, apart from the loop that runs it ([`super::Driver`]).

use crate::field::{Field, Workspace};

/// One discrete method. The driver calls [`Stepper::evaluate`] at every iterate x_j (its loss
/// decides divergence and goes to the observers), then [`Stepper::advance`] to x_{j+1}.
pub trait Stepper {
    /// Short name for reports.
    fn name(&self) -> String;
    /// Evaluate at the iterate `x` about to be stepped from; returns the loss there.
    fn evaluate(&mut self, field: &dyn Field, x: &[f64]) -> f64;
    /// Replace `x` by the next iterate, step size `eta`; the last call was `evaluate(x)`.
    fn advance(&mut self, field: &dyn Field, x: &mut [f64], eta: f64);
    /// Whether [`Stepper::evaluate_estimate`] is cheaper than [`Stepper::evaluate`]: a
    /// mini-batch method's step reads its batch's rows, its loss the whole matrix.
    fn estimates_loss(&self) -> bool {
        false
    }
    /// Evaluate at `x` for the same step as [`Stepper::evaluate`], returning an unbiased
    /// estimate of the loss (the batch's) where the loss itself would cost a pass: for the
    /// divergence test at iterates no observer records ([`super::RunOptions::loss_at`]).
    fn evaluate_estimate(&mut self, field: &dyn Field, x: &[f64]) -> f64 {
        self.evaluate(field, x)
    }
    /// The field at `other` (another trajectory's state) into `other_ws` — G and the loss if
    /// `gradient`, the loss alone otherwise ([`Field::evaluate_loss`]) — and, where the
    /// method can share that pass, at `x` for its next [`Stepper::evaluate`] (which then finds
    /// it done); results as if separate. Returns whether the two shared a pass. The default
    /// evaluates `other` alone.
    fn evaluate_beside(
        &mut self,
        field: &dyn Field,
        x: &[f64],
        other: &[f64],
        other_ws: &mut Workspace,
        gradient: bool,
    ) -> bool {
        let _ = x;
        if gradient {
            field.evaluate(other, other_ws);
        } else {
            field.evaluate_loss(other, other_ws);
        }
        false
    }
    /// [`Stepper::evaluate_beside`] with G at `other` and, beside it, the loss alone at
    /// `loss_at` (into `loss_ws`), all three in one pass over the sensing matrix where the
    /// method can share it (a flow's right-hand side and a record carrying the method's
    /// evaluation). Returns false, having evaluated nothing, where it cannot: the default.
    fn evaluate_beside_with_loss(
        &mut self,
        field: &dyn Field,
        x: &[f64],
        other: (&[f64], &mut Workspace),
        loss_at: (&[f64], &mut Workspace),
    ) -> bool {
        let _ = (field, x, other, loss_at);
        false
    }
    /// The field's workspace at the last evaluation (G at x_j), where the method has one.
    fn workspace(&self) -> Option<&Workspace> {
        None
    }
    /// Why the last [`Stepper::advance`] could not take its step (ScaledGD's preconditioner
    /// singular, say): the run then ends as failed there, never with NaN.
    fn failure(&self) -> Option<String> {
        None
    }
    /// For methods whose evaluation is exactly F(x) into a buffer of their own: that buffer,
    /// resized to `len`, with the cached workspace dropped (a batched evaluation does not
    /// fill it). Batched drivers then evaluate many runs of such steppers in one pass over
    /// the sensing matrix ([`Field::rhs_batch`]), boxed or not. `None` (the default): the
    /// method evaluates in its own way (Nesterov's look-ahead).
    fn batch_buffer(&mut self, len: usize) -> Option<&mut Vec<f64>> {
        let _ = len;
        None
    }
    /// Evaluate several runs, one per stepper, at once. The default evaluates them one by
    /// one; [`Gd`] shares each pass over the sensing matrix between them.
    fn evaluate_batch(steppers: &mut [&mut Self], field: &dyn Field, xs: &[&[f64]]) -> Vec<f64>
    where
        Self: Sized,
    {
        steppers
            .iter_mut()
            .zip(xs)
            .map(|(s, x)| s.evaluate(field, x))
            .collect()
    }
}

/// The evaluation most methods make at the point they step from: F there into a buffer of
/// their own, with the field's workspace (G there) kept for the records.
#[derive(Clone, Debug, Default)]
pub struct Evaluation {
    /// F at the last point evaluated.
    pub f: Vec<f64>,
    ws: Option<Workspace>,
}

impl Evaluation {
    /// F(x) into [`Evaluation::f`]; returns the loss at x.
    pub fn at(&mut self, field: &dyn Field, x: &[f64]) -> f64 {
        self.f.resize(x.len(), 0.0);
        let ws = self.ws.get_or_insert_with(|| field.workspace());
        field.rhs(x, &mut self.f, ws)
    }
    /// [`Stepper::evaluate_beside`] for a method that evaluates at the point it steps from:
    /// the field at `x` (for the next [`Evaluation::at`], which then finds it done) and at
    /// `other` in one pass over the sensing matrix ([`Field::evaluate_pair`], or
    /// [`Field::evaluate_beside_loss`] where `other` needs no G). Returns true: shared.
    pub fn beside(
        &mut self,
        field: &dyn Field,
        x: &[f64],
        other: &[f64],
        other_ws: &mut Workspace,
        gradient: bool,
    ) -> bool {
        let ws = self.ws.get_or_insert_with(|| field.workspace());
        crate::field::evaluate_beside(field, (x, ws), (other, other_ws), gradient);
        true
    }
    /// [`Stepper::evaluate_beside_with_loss`] for a method that evaluates at the point it
    /// steps from ([`Field::evaluate_pair_beside_loss`]). Returns true: shared.
    pub fn beside_with_loss(
        &mut self,
        field: &dyn Field,
        x: &[f64],
        (other, other_ws): (&[f64], &mut Workspace),
        (loss_at, loss_ws): (&[f64], &mut Workspace),
    ) -> bool {
        let ws = self.ws.get_or_insert_with(|| field.workspace());
        field.evaluate_pair_beside_loss(x, ws, other, other_ws, loss_at, loss_ws);
        true
    }
    /// The workspace of the last evaluation.
    pub fn workspace(&self) -> Option<&Workspace> {
        self.ws.as_ref()
    }
    /// The workspace, made if there is none yet (for a second evaluation within a step).
    pub fn workspace_mut(&mut self, field: &dyn Field) -> &mut Workspace {
        self.ws.get_or_insert_with(|| field.workspace())
    }
    /// [`Stepper::batch_buffer`] for a method whose evaluation this is.
    pub fn batch_buffer(&mut self, len: usize) -> &mut Vec<f64> {
        self.ws = None;
        self.f.resize(len, 0.0);
        &mut self.f
    }
}

/// The [`Stepper`] methods of a method that evaluates F at the point it steps from into its
/// [`Evaluation`] (the field `$eval`): that evaluation, the same sharing its pass with another
/// trajectory's ([`Evaluation::beside`]), its workspace for the records, and the batch buffer.
macro_rules! steps_from_its_evaluation {
    ($eval:ident) => {
        fn evaluate(&mut self, field: &dyn $crate::field::Field, x: &[f64]) -> f64 {
            self.$eval.at(field, x)
        }
        fn evaluate_beside(
            &mut self,
            field: &dyn $crate::field::Field,
            x: &[f64],
            other: &[f64],
            other_ws: &mut $crate::field::Workspace,
            gradient: bool,
        ) -> bool {
            self.$eval.beside(field, x, other, other_ws, gradient)
        }
        fn evaluate_beside_with_loss(
            &mut self,
            field: &dyn $crate::field::Field,
            x: &[f64],
            other: (&[f64], &mut $crate::field::Workspace),
            loss_at: (&[f64], &mut $crate::field::Workspace),
        ) -> bool {
            self.$eval.beside_with_loss(field, x, other, loss_at)
        }
        fn workspace(&self) -> Option<&$crate::field::Workspace> {
            self.$eval.workspace()
        }
        fn batch_buffer(&mut self, len: usize) -> Option<&mut Vec<f64>> {
            Some(self.$eval.batch_buffer(len))
        }
    };
}
pub(crate) use steps_from_its_evaluation;

/// Gradient descent U ← U − ηGV, V ← V − ηGᵀU, both from the old iterate (MATH §2):
/// x ← x + η F(x).
#[derive(Clone, Debug, Default)]
pub struct Gd {
    eval: Evaluation,
}

impl Gd {
    pub fn new() -> Self {
        Self::default()
    }
    /// F(x_j) of the last evaluation.
    pub fn direction(&self) -> &[f64] {
        &self.eval.f
    }
}

impl Stepper for Gd {
    fn name(&self) -> String {
        "gd".into()
    }
    steps_from_its_evaluation!(eval);
    fn advance(&mut self, _field: &dyn Field, x: &mut [f64], eta: f64) {
        for (xi, fi) in x.iter_mut().zip(&self.eval.f) {
            *xi += eta * fi;
        }
    }
    /// 𝒜 and 𝒜* applied to every run in one pass over the sensing matrix per eight runs
    /// ([`Field::rhs_batch`]); the steppers' workspaces are not updated.
    fn evaluate_batch(steppers: &mut [&mut Self], field: &dyn Field, xs: &[&[f64]]) -> Vec<f64> {
        let mut outs: Vec<Vec<f64>> = steppers
            .iter_mut()
            .zip(xs)
            .map(|(s, x)| std::mem::take(s.eval.batch_buffer(x.len())))
            .collect();
        let losses = field.rhs_batch(xs, &mut outs);
        for (s, f) in steppers.iter_mut().zip(outs) {
            s.eval.f = f;
        }
        losses
    }
}

impl<S: Stepper + ?Sized> Stepper for Box<S> {
    fn name(&self) -> String {
        (**self).name()
    }
    fn evaluate(&mut self, field: &dyn Field, x: &[f64]) -> f64 {
        (**self).evaluate(field, x)
    }
    fn advance(&mut self, field: &dyn Field, x: &mut [f64], eta: f64) {
        (**self).advance(field, x, eta)
    }
    fn estimates_loss(&self) -> bool {
        (**self).estimates_loss()
    }
    fn evaluate_estimate(&mut self, field: &dyn Field, x: &[f64]) -> f64 {
        (**self).evaluate_estimate(field, x)
    }
    fn evaluate_beside(
        &mut self,
        field: &dyn Field,
        x: &[f64],
        other: &[f64],
        other_ws: &mut Workspace,
        gradient: bool,
    ) -> bool {
        (**self).evaluate_beside(field, x, other, other_ws, gradient)
    }
    fn evaluate_beside_with_loss(
        &mut self,
        field: &dyn Field,
        x: &[f64],
        other: (&[f64], &mut Workspace),
        loss_at: (&[f64], &mut Workspace),
    ) -> bool {
        (**self).evaluate_beside_with_loss(field, x, other, loss_at)
    }
    fn workspace(&self) -> Option<&Workspace> {
        (**self).workspace()
    }
    fn failure(&self) -> Option<String> {
        (**self).failure()
    }
    fn batch_buffer(&mut self, len: usize) -> Option<&mut Vec<f64>> {
        (**self).batch_buffer(len)
    }
    /// One pass over the sensing matrix for all runs when every stepper has a
    /// [`Stepper::batch_buffer`] (as [`Gd`]'s own batch does, with the same results), one by
    /// one otherwise.
    ///
    /// Steppers that all estimate their loss ([`Stepper::estimates_loss`]: mini-batch
    /// methods) take their steps' directions one by one and their losses together
    /// ([`Field::loss_batch`]: one pass of 𝒜 per eight).
    fn evaluate_batch(steppers: &mut [&mut Self], field: &dyn Field, xs: &[&[f64]]) -> Vec<f64> {
        if steppers.iter().all(|s| s.estimates_loss()) {
            for (s, x) in steppers.iter_mut().zip(xs) {
                s.evaluate_estimate(field, x);
            }
            return field.loss_batch(xs);
        }
        let mut outs = Vec::with_capacity(steppers.len());
        for (s, x) in steppers.iter_mut().zip(xs) {
            match s.batch_buffer(x.len()) {
                Some(b) => outs.push(std::mem::take(b)),
                None => {
                    // put back what was taken, then evaluate one by one
                    for (s, o) in steppers.iter_mut().zip(outs) {
                        let n = o.len();
                        *s.batch_buffer(n).expect("had one") = o;
                    }
                    return steppers
                        .iter_mut()
                        .zip(xs)
                        .map(|(s, x)| s.evaluate(field, x))
                        .collect();
                }
            }
        }
        let losses = field.rhs_batch(xs, &mut outs);
        for (s, o) in steppers.iter_mut().zip(outs) {
            let n = o.len();
            *s.batch_buffer(n).expect("had one") = o;
        }
        losses
    }
}
