//! Mini-batch SGD, MATH §10: at step j a batch B_j ⊂ {1..m} of size b, drawn uniformly
//! without replacement (or with, `--with-replacement`), and x⁺ = x − η g_B with
//! g_B = (m/b) Σ_{i∈B} r_i ∇r_i, an unbiased estimate of ∇f. With b = m without replacement
//! every weight is 1 and g_B is ∇f: the step is GD's, computed by GD's own evaluation.
//!
//! The batch of step j of replica ρ comes from a counter-based stream keyed by (seed, ρ, j):
//! ChaCha20 keyed by the seed's SGD sub-seed, stream ρ, block position j·2³²; so a path does
//! not depend on the thread count, on sharding, or on which other replicas run beside it.
//!
//! **Label-noise SGD** (`--optimizer label-noise --label-noise σ`, MATH §10) is the same step
//! with fresh noise on the labels, y_i + σε_ij: g = (m/b)Σ_{i∈B}(r_i − σε_i)∇r_i, full batch by
//! default (`--batch` for both noises); ε of step j of replica ρ from its own stream.
//!
//! Its deterministic limits are GD's plain and modified flows; both follow SGD's mean to O(η)
//! only (weak order 1), and neither has SGD's spread, which the stochastic modified equations
//! describe (MATH §10).

use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use rand_distr::StandardNormal;

use super::{no_limit, Context, Limit, LimitSolver, Optimizer, Parameters, Refusal, Settings};
use crate::dynamics::{Evaluation, FlowVariant, Stepper};
use crate::field::{batch_rhs, Field, Modified, Workspace};

/// The sub-seed stream of SGD's batches (beside the problem's operator, target, start, noise).
pub const STREAM_BATCHES: u64 = 5;
/// The sub-seed stream of label-noise SGD's label noise.
pub const STREAM_LABELS: u64 = 7;

/// Mini-batch SGD with batch size `batch`.
#[derive(Debug, Clone, Copy)]
pub struct Sgd {
    pub batch: usize,
    pub with_replacement: bool,
    pub m: usize,
    pub seed: u64,
    /// Euler–Maruyama substeps per step of its SMEs.
    pub substeps: usize,
    /// σ of label-noise SGD (0: plain mini-batch SGD).
    pub label_noise: f64,
}

/// The SMEs' substeps per step when `--sde-substeps` is not given: h = η/8, as MATH §10's
/// measurements used.
pub const DEFAULT_SDE_SUBSTEPS: usize = 8;

/// `--optimizer sgd`: `--batch b` (1 ≤ b ≤ m, required), `--with-replacement`.
pub fn build(s: &Settings, c: &Context) -> Result<Arc<dyn Optimizer>, Refusal> {
    s.only("sgd", &["batch", "with_replacement", "sde_substeps"])?;
    let batch = s.batch.ok_or_else(|| Refusal {
        key: "batch",
        value: "missing".into(),
        reason: format!(
            "sgd needs its batch size: give --batch b with 1 <= b <= m = {} (b = m without \
             replacement is GD)",
            c.m
        ),
    })?;
    build_with(s, c, batch, 0.0)
}

/// `--optimizer label-noise --label-noise σ` (σ > 0), full batch unless `--batch b`.
pub fn build_label_noise(s: &Settings, c: &Context) -> Result<Arc<dyn Optimizer>, Refusal> {
    s.only(
        "label-noise",
        &["label_noise", "batch", "with_replacement", "sde_substeps"],
    )?;
    let sigma = s.label_noise.ok_or_else(|| Refusal {
        key: "label_noise",
        value: "missing".into(),
        reason: "label-noise needs its σ: give --label-noise σ > 0".into(),
    })?;
    if !(sigma.is_finite() && sigma > 0.0 && sigma <= 1e6) {
        return Err(Refusal {
            key: "label_noise",
            value: sigma.to_string(),
            reason: "must be a finite number in (0, 1e6]".into(),
        });
    }
    build_with(s, c, s.batch.unwrap_or(c.m), sigma)
}

fn build_with(
    s: &Settings,
    c: &Context,
    batch: usize,
    label_noise: f64,
) -> Result<Arc<dyn Optimizer>, Refusal> {
    let substeps = s.sde_substeps.unwrap_or(DEFAULT_SDE_SUBSTEPS);
    if !(1..=1000).contains(&substeps) {
        return Err(Refusal {
            key: "sde_substeps",
            value: substeps.to_string(),
            reason: "must be between 1 and 1000".into(),
        });
    }
    if batch == 0 || batch > c.m {
        return Err(Refusal {
            key: "batch",
            value: batch.to_string(),
            reason: format!("must be between 1 and m = {} (the measurements)", c.m),
        });
    }
    Ok(Arc::new(Sgd {
        batch,
        with_replacement: s.with_replacement.unwrap_or(false),
        m: c.m,
        seed: c.seed,
        substeps,
        label_noise,
    }))
}

impl Sgd {
    /// The label noise σε of step `step` of replica `replica` (ε standard normal).
    pub fn label_draw(&self, replica: u64, step: usize, out: &mut Vec<f64>) {
        out.clear();
        let key: u64 = crate::problem::sub_rng(self.seed, STREAM_LABELS).gen();
        let mut rng = ChaCha20Rng::seed_from_u64(key);
        rng.set_stream(replica);
        rng.set_word_pos((step as u128) << 32);
        out.extend((0..self.m).map(|_| self.label_noise * rng.sample::<f64, _>(StandardNormal)));
    }

    /// Whether every step uses every measurement once (no batch noise).
    fn full_batch(&self) -> bool {
        self.batch == self.m && !self.with_replacement
    }

    /// c_b, the batch's share of one draw's gradient covariance: 1/b with replacement,
    /// (m − b)/(b(m − 1)) without (0 for the full batch).
    pub fn c_b(&self) -> f64 {
        let (m, b) = (self.m as f64, self.batch as f64);
        if self.with_replacement {
            1.0 / b
        } else if self.m > 1 {
            (m - b) / (b * (m - 1.0))
        } else {
            0.0
        }
    }

    /// The weights w_i = (m/b)·(times i is drawn) of step `step` of replica `replica`.
    pub fn weights(&self, replica: u64, step: usize, out: &mut Vec<f64>) {
        let (m, b) = (self.m, self.batch);
        out.clear();
        out.resize(m, 0.0);
        let scale = m as f64 / b as f64;
        if self.full_batch() {
            out.iter_mut().for_each(|w| *w = 1.0);
            return;
        }
        let mut rng =
            ChaCha20Rng::seed_from_u64(crate::problem::sub_rng(self.seed, STREAM_BATCHES).gen());
        rng.set_stream(replica);
        rng.set_word_pos((step as u128) << 32);
        if self.with_replacement {
            for _ in 0..b {
                out[rng.gen_range(0..m)] += scale;
            }
        } else {
            // the first b of a partial Fisher–Yates shuffle
            let mut index: Vec<usize> = (0..m).collect();
            for i in 0..b {
                let j = rng.gen_range(i..m);
                index.swap(i, j);
                out[index[i]] = scale;
            }
        }
    }
}

impl Optimizer for Sgd {
    fn name(&self) -> String {
        if self.label_noise > 0.0 {
            "label-noise".into()
        } else {
            "sgd".into()
        }
    }
    fn parameters(&self) -> Parameters {
        let mut p = Parameters::from([
            ("batch".to_string(), self.batch as f64),
            (
                "with_replacement".to_string(),
                f64::from(u8::from(self.with_replacement)),
            ),
        ]);
        if self.label_noise > 0.0 {
            p.insert("label_noise".into(), self.label_noise);
        }
        p
    }
    fn stepper(&self, eta: f64) -> Box<dyn Stepper> {
        self.replica_stepper(eta, 0)
    }
    fn replica_stepper(&self, _eta: f64, replica: u64) -> Box<dyn Stepper> {
        Box::new(SgdStepper {
            sgd: *self,
            replica,
            step: 0,
            weights: Vec::new(),
            labels: Vec::new(),
            eval: Evaluation::default(),
            ws: None,
        })
    }
    fn is_stochastic(&self) -> bool {
        !self.full_batch() || self.label_noise > 0.0
    }
    fn needs_two_factors(&self) -> bool {
        true
    }
    fn limits(&self) -> Vec<FlowVariant> {
        vec![
            FlowVariant::Plain,
            FlowVariant::Modified,
            FlowVariant::Sme1,
            FlowVariant::Sme2,
        ]
    }
    fn limit(
        &self,
        variant: FlowVariant,
        field: Arc<dyn Field>,
        x0: &[f64],
        eta: f64,
    ) -> Result<Limit, String> {
        let start = x0.to_vec();
        match variant {
            FlowVariant::Plain => Ok(Limit::ode(field, start, "x' = −∇f (SGD's mean to O(η))")),
            FlowVariant::Modified => Ok(Limit::ode(
                Arc::new(Modified::new(field, eta)),
                start,
                "x' = −∇f − (η/4)∇‖∇f‖² (SGD's mean to O(η): the noise enters at O(η))",
            )),
            FlowVariant::Sme1 | FlowVariant::Sme2 => {
                let sme = crate::dynamics::sde::Sme {
                    noise: field.clone(),
                    eta,
                    c_b: self.c_b(),
                    // the labels' share of the step's covariance: σ²(m/b)JJᵀ
                    label_scale: self.label_noise * (self.m as f64 / self.batch as f64).sqrt(),
                    substeps: self.substeps,
                    seed: self.seed,
                    replica: 0,
                };
                let noise = match (self.label_noise > 0.0, self.full_batch()) {
                    (true, true) => "√η σ J dW'",
                    (true, false) => "√(ηc_b) D dW + √(ηm/b) σ J dW'",
                    (false, _) => "√(ηc_b) D dW",
                };
                let (drift, equation): (Arc<dyn Field>, _) = if variant == FlowVariant::Sme1 {
                    (
                        field,
                        format!("dX = −∇f dt + {noise} (SME-1, weak order 1)"),
                    )
                } else {
                    (
                        Arc::new(Modified::new(field, eta)),
                        format!("dX = −(∇f + (η/4)∇‖∇f‖²) dt + {noise} (SME-2, weak order 2)"),
                    )
                };
                Ok(Limit {
                    solver: LimitSolver::Sme(sme),
                    ..Limit::ode(drift, start, equation)
                })
            }
            FlowVariant::Central => Err(no_limit(&self.name(), variant, &self.limits())),
        }
    }
    fn warnings(&self, context: &Context) -> Vec<String> {
        if !self.is_stochastic() || context.replicas > 1 {
            return Vec::new();
        }
        vec![format!(
            "{} (batch {} of m = {}): one path is compared with its limit, so its distance \
             includes the noise, O(√η); --replicas N gives means with 95% intervals",
            self.name(),
            self.batch,
            self.m
        )]
    }
}

struct SgdStepper {
    sgd: Sgd,
    replica: u64,
    step: usize,
    weights: Vec<f64>,
    /// σε of this step (label noise).
    labels: Vec<f64>,
    /// GD's evaluation, for b = m without replacement.
    eval: Evaluation,
    ws: Option<Workspace>,
}

impl SgdStepper {
    /// This step's direction from its batch (and label noise) into `eval.f`: the batch's loss
    /// estimate, and the loss when the batch is large enough to read the whole matrix.
    fn batch(&mut self, field: &dyn Field, x: &[f64]) -> (f64, Option<f64>) {
        self.sgd.weights(self.replica, self.step, &mut self.weights);
        let shift = if self.sgd.label_noise > 0.0 {
            self.sgd
                .label_draw(self.replica, self.step, &mut self.labels);
            Some(self.labels.as_slice())
        } else {
            None
        };
        self.eval.f.resize(x.len(), 0.0);
        let ws = self.ws.get_or_insert_with(|| field.workspace());
        batch_rhs(field, x, &self.weights, shift, &mut self.eval.f, ws)
    }
}

impl Stepper for SgdStepper {
    fn name(&self) -> String {
        self.sgd.name()
    }
    fn evaluate(&mut self, field: &dyn Field, x: &[f64]) -> f64 {
        if !self.sgd.is_stochastic() {
            return self.eval.at(field, x);
        }
        let (_, loss) = self.batch(field, x);
        let ws = self.ws.as_mut().expect("made by batch");
        loss.unwrap_or_else(|| field.loss(x, ws))
    }
    fn estimates_loss(&self) -> bool {
        // a batch of a quarter of the measurements or more takes two passes, loss included
        self.sgd.is_stochastic() && self.sgd.batch * 4 < self.sgd.m
    }
    fn evaluate_estimate(&mut self, field: &dyn Field, x: &[f64]) -> f64 {
        if !self.sgd.is_stochastic() {
            return self.eval.at(field, x);
        }
        self.batch(field, x).0
    }
    fn advance(&mut self, _field: &dyn Field, x: &mut [f64], eta: f64) {
        for (xi, fi) in x.iter_mut().zip(&self.eval.f) {
            *xi += eta * fi;
        }
        self.step += 1;
    }
    fn workspace(&self) -> Option<&Workspace> {
        // GD's evaluation holds G at x_j; a batch's G is not the field's
        if self.sgd.is_stochastic() {
            None
        } else {
            self.eval.workspace()
        }
    }
}
