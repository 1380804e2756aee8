//! Dormand–Prince 8(5,3) (Hairer's DOP853): an explicit Runge–Kutta pair of order 8 with
//! embedded 5th- and 3rd-order error estimates and a 7th-order dense output, for tight
//! tolerances, where a 5th-order method needs several times more steps.
//!
//! Written here, not taken from a crate: `differential-equations` bounds its states by `Copy`
//! (fixed-size vectors only; our states have (n1 + n2)·k entries chosen at run time), and
//! `ode_solvers` integrates a whole interval storing outputs at a fixed increment in memory,
//! with no interpolation at arbitrary times or step-by-step control (needed for GD's times jη,
//! the lockstep run and `--method auto`). diffsol 0.18's tableaus hold at most 8 stages. The
//! coefficients are Hairer's, as SciPy lists them (`scipy/integrate/_ivp/dop853_coefficients.py`);
//! the step control follows Hairer and SciPy (safety 0.9, factors in [0.2, 10], exponent −1/8).
//!
//! The error scale is a choice ([`ErrorScale`], MATH §7): per component, Hairer's
//! atol + rtol·max(|y_i|, |y_new,i|); or relative to the state as a whole,
//! atol + rtol·max(‖y‖, ‖y_new‖)_rms for every component, which does not reject steps for the
//! entries of U and V that pass through zero.

use serde::{Deserialize, Serialize};

use crate::field::{Field, Workspace};

/// How a step's local error is weighed (MATH §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorScale {
    /// sc_i = atol + rtol·max(|y_i|, |y_new,i|) (Hairer, SciPy).
    Componentwise,
    /// sc_i = atol + rtol·max(‖y‖_rms, ‖y_new‖_rms): the error relative to the state's size.
    State,
}

impl ErrorScale {
    pub const ALL: [ErrorScale; 2] = [ErrorScale::Componentwise, ErrorScale::State];
    pub fn name(self) -> &'static str {
        match self {
            ErrorScale::Componentwise => "componentwise",
            ErrorScale::State => "state",
        }
    }
    pub fn description(self) -> &'static str {
        match self {
            ErrorScale::Componentwise => {
                "atol + rtol·max(|y_i|, |y_new,i|) per component (Hairer, SciPy)"
            }
            ErrorScale::State => {
                "atol + rtol·max(‖y‖, ‖y_new‖)_rms: the error relative to the whole state"
            }
        }
    }
}

const SAFETY: f64 = 0.9;
const MIN_FACTOR: f64 = 0.2;
const MAX_FACTOR: f64 = 10.0;
/// −1/(error estimator order + 1).
const EXPONENT: f64 = -1.0 / 8.0;
/// The method's order.
pub const ORDER: usize = 8;
/// The largest h·ρ the dense output may see, ρ the field's stiffness along the step. At
/// h·λ = −6 (the edge of DOP853's stability interval) the 7th-order interpolant reaches 10×
/// a decaying mode's size inside the step, at −4 it stays within 5% of it: steps held by
/// stability, as in the slowly converging tail of overparameterised sensing, would otherwise
/// put rtol-sized noise ×10 into every interpolated output.
const DENSE_STABLE_H_RHO: f64 = 4.5;
/// A step whose h·ρ exceeds this is redone, however small its error: at h·λ ≈ −5 the
/// interpolant's error reaches the decaying mode's size, beyond it grows without bound.
const DENSE_REJECT_H_RHO: f64 = 5.5;
/// Per accepted step. The estimate sees the stiff direction on some attempts only, so it is
/// remembered; but not for good: one stiff moment (an event, a collapsing component) held
/// every later step at 4.5/ρ, 45 steps per unit time for the rest of a central solve. Faster
/// fading (0.98) lets the dense output amplify the persistent stiffness of the sensing flow's
/// tail: 6.7e-8 instead of 8.9e-9 at rtol 1e-8 on the work–precision problem.
const RHO_MEMORY: f64 = 0.995;

// The nodes c_i are not needed: every field here is autonomous.
pub(super) const A: [[f64; 16]; 16] = [
    [
        0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
    ],
    [
        0.05260015195876773,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
    ],
    [
        0.0197250569845379,
        0.0591751709536137,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
    ],
    [
        0.02958758547680685,
        0.0,
        0.08876275643042054,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
    ],
    [
        0.2413651341592667,
        0.0,
        -0.8845494793282861,
        0.924834003261792,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
    ],
    [
        0.037037037037037035,
        0.0,
        0.0,
        0.17082860872947386,
        0.12546768756682242,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
    ],
    [
        0.037109375,
        0.0,
        0.0,
        0.17025221101954405,
        0.06021653898045596,
        -0.017578125,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
    ],
    [
        0.03709200011850479,
        0.0,
        0.0,
        0.17038392571223998,
        0.10726203044637328,
        -0.015319437748624402,
        0.008273789163814023,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
    ],
    [
        0.6241109587160757,
        0.0,
        0.0,
        -3.3608926294469414,
        -0.868219346841726,
        27.59209969944671,
        20.154067550477894,
        -43.48988418106996,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
    ],
    [
        0.47766253643826434,
        0.0,
        0.0,
        -2.4881146199716677,
        -0.590290826836843,
        21.230051448181193,
        15.279233632882423,
        -33.28821096898486,
        -0.020331201708508627,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
    ],
    [
        -0.9371424300859873,
        0.0,
        0.0,
        5.186372428844064,
        1.0914373489967295,
        -8.149787010746927,
        -18.52006565999696,
        22.739487099350505,
        2.4936055526796523,
        -3.0467644718982196,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
    ],
    [
        2.273310147516538,
        0.0,
        0.0,
        -10.53449546673725,
        -2.0008720582248625,
        -17.9589318631188,
        27.94888452941996,
        -2.8589982771350235,
        -8.87285693353063,
        12.360567175794303,
        0.6433927460157636,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
    ],
    [
        0.054293734116568765,
        0.0,
        0.0,
        0.0,
        0.0,
        4.450312892752409,
        1.8915178993145003,
        -5.801203960010585,
        0.3111643669578199,
        -0.1521609496625161,
        0.20136540080403034,
        0.04471061572777259,
        0.0,
        0.0,
        0.0,
        0.0,
    ],
    [
        0.056167502283047954,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.25350021021662483,
        -0.2462390374708025,
        -0.12419142326381637,
        0.15329179827876568,
        0.00820105229563469,
        0.007567897660545699,
        -0.008298,
        0.0,
        0.0,
        0.0,
    ],
    [
        0.03183464816350214,
        0.0,
        0.0,
        0.0,
        0.0,
        0.028300909672366776,
        0.053541988307438566,
        -0.05492374857139099,
        0.0,
        0.0,
        -0.00010834732869724932,
        0.0003825710908356584,
        -0.00034046500868740456,
        0.1413124436746325,
        0.0,
        0.0,
    ],
    [
        -0.42889630158379194,
        0.0,
        0.0,
        0.0,
        0.0,
        -4.697621415361164,
        7.683421196062599,
        4.06898981839711,
        0.3567271874552811,
        0.0,
        0.0,
        0.0,
        -0.0013990241651590145,
        2.9475147891527724,
        -9.15095847217987,
        0.0,
    ],
];
pub(super) const B: [f64; 12] = [
    0.054293734116568765,
    0.0,
    0.0,
    0.0,
    0.0,
    4.450312892752409,
    1.8915178993145003,
    -5.801203960010585,
    0.3111643669578199,
    -0.1521609496625161,
    0.20136540080403034,
    0.04471061572777259,
];
pub(super) const E3: [f64; 13] = [
    -0.18980075407240762,
    0.0,
    0.0,
    0.0,
    0.0,
    4.450312892752409,
    1.8915178993145003,
    -5.801203960010585,
    -0.4226823213237919,
    -0.1521609496625161,
    0.20136540080403034,
    0.02265179219836082,
    0.0,
];
pub(super) const E5: [f64; 13] = [
    0.01312004499419488,
    0.0,
    0.0,
    0.0,
    0.0,
    -1.2251564463762044,
    -0.4957589496572502,
    1.6643771824549864,
    -0.35032884874997366,
    0.3341791187130175,
    0.08192320648511571,
    -0.022355307863886294,
    0.0,
];
pub(super) const D: [[f64; 16]; 4] = [
    [
        -8.428938276109013,
        0.0,
        0.0,
        0.0,
        0.0,
        0.5667149535193777,
        -3.0689499459498917,
        2.38466765651207,
        2.117034582445028,
        -0.871391583777973,
        2.2404374302607883,
        0.6315787787694688,
        -0.08899033645133331,
        18.148505520854727,
        -9.194632392478356,
        -4.436036387594894,
    ],
    [
        10.427508642579134,
        0.0,
        0.0,
        0.0,
        0.0,
        242.28349177525817,
        165.20045171727028,
        -374.5467547226902,
        -22.113666853125306,
        7.733432668472264,
        -30.674084731089398,
        -9.332130526430229,
        15.697238121770845,
        -31.139403219565178,
        -9.35292435884448,
        35.81684148639408,
    ],
    [
        19.985053242002433,
        0.0,
        0.0,
        0.0,
        0.0,
        -387.0373087493518,
        -189.17813819516758,
        527.8081592054236,
        -11.57390253995963,
        6.8812326946963,
        -1.0006050966910838,
        0.7777137798053443,
        -2.778205752353508,
        -60.19669523126412,
        84.32040550667716,
        11.99229113618279,
    ],
    [
        -25.69393346270375,
        0.0,
        0.0,
        0.0,
        0.0,
        -154.18974869023643,
        -231.5293791760455,
        357.6391179106141,
        93.40532418362432,
        -37.45832313645163,
        104.0996495089623,
        29.8402934266605,
        -43.53345659001114,
        96.32455395918828,
        -39.17726167561544,
        -149.72683625798564,
    ],
];

fn rms(v: &[f64]) -> f64 {
    (v.iter().map(|x| x * x).sum::<f64>() / v.len().max(1) as f64).sqrt()
}

/// The DOP853 integrator on a field: one accepted step at a time, with the dense output of
/// the last step.
pub struct Dop853<'f> {
    field: &'f dyn Field,
    passenger: Option<&'f dyn super::Passenger>,
    ws: Workspace,
    rtol: f64,
    atol: f64,
    scale: ErrorScale,
    t: f64,
    y: Vec<f64>,
    h_abs: f64,
    /// Stages 0..12 of the last step (0: f(y_old), 12: f(y)), 13..15 for the dense output.
    k: Vec<Vec<f64>>,
    t_old: f64,
    y_old: Vec<f64>,
    h_prev: f64,
    /// The interpolant's coefficients for the last step, once computed.
    dense: Option<Vec<Vec<f64>>>,
    tmp: Vec<f64>,
    /// Right-hand sides evaluated, accepted steps, rejected steps.
    pub rhs_evals: usize,
    pub steps: usize,
    pub rejected: usize,
    /// Of the rejected steps, those redone for the dense output's stability alone.
    pub stiff_rejected: usize,
    /// The recent largest stiffness estimate ρ.
    rho: f64,
}

impl<'f> Dop853<'f> {
    /// Start at (t0, y0); the first step is chosen as Hairer's (SciPy's `select_initial_step`),
    /// bounded by the remaining interval `t_end − t0`.
    pub fn new(
        field: &'f dyn Field,
        t0: f64,
        y0: &[f64],
        rtol: f64,
        atol: f64,
        scale: ErrorScale,
        t_end: f64,
    ) -> Self {
        let n = y0.len();
        let mut s = Self {
            field,
            passenger: None,
            ws: field.workspace(),
            rtol,
            atol,
            scale,
            t: t0,
            y: y0.to_vec(),
            h_abs: 0.0,
            k: vec![vec![0.0; n]; 16],
            t_old: t0,
            y_old: y0.to_vec(),
            h_prev: 0.0,
            dense: None,
            tmp: vec![0.0; n],
            rhs_evals: 0,
            steps: 0,
            rejected: 0,
            stiff_rejected: 0,
            rho: 0.0,
        };
        let mut f0 = vec![0.0; n];
        s.eval_into(y0, &mut f0);
        s.k[12] = f0;
        s.h_abs = s.initial_step(t_end - t0);
        s
    }

    /// The same integrator with `passenger` on the passes of its right-hand sides after the
    /// two [`Dop853::new`] takes (at the start, and the initial step's probe).
    pub fn with_passenger(self, passenger: Option<&'f dyn super::Passenger>) -> Self {
        Self { passenger, ..self }
    }

    pub fn t(&self) -> f64 {
        self.t
    }
    pub fn y(&self) -> &[f64] {
        &self.y
    }
    /// The step size the next step will try.
    pub fn h(&self) -> f64 {
        self.h_abs
    }

    fn eval_into(&mut self, y: &[f64], out: &mut [f64]) {
        self.rhs_evals += 1;
        if let Some(p) = self.passenger {
            p.board(self.field, y, &mut self.ws);
        }
        self.field.rhs(y, out, &mut self.ws);
    }

    /// Evaluate stage `s` at y + h·Σ_{j<s} a_sj k_j into k[s].
    fn stage(&mut self, base: &[f64], h: f64, s: usize) {
        let mut tmp = std::mem::take(&mut self.tmp);
        tmp.copy_from_slice(base);
        for (j, a) in A[s][..s].iter().enumerate() {
            if *a != 0.0 {
                let c = h * a;
                tmp.iter_mut()
                    .zip(&self.k[j])
                    .for_each(|(t, k)| *t += c * k);
            }
        }
        let mut out = std::mem::take(&mut self.k[s]);
        self.eval_into(&tmp, &mut out);
        self.k[s] = out;
        self.tmp = tmp;
    }

    fn scale_of(&self, y: &[f64], y_new: &[f64], i: usize, state: f64) -> f64 {
        match self.scale {
            ErrorScale::Componentwise => self.atol + self.rtol * y[i].abs().max(y_new[i].abs()),
            ErrorScale::State => self.atol + self.rtol * state,
        }
    }

    fn initial_step(&mut self, interval: f64) -> f64 {
        if interval <= 0.0 {
            return 0.0;
        }
        let y0 = self.y.clone();
        let f0 = self.k[12].clone();
        let state = rms(&y0);
        let sc: Vec<f64> = (0..y0.len())
            .map(|i| match self.scale {
                ErrorScale::Componentwise => self.atol + self.rtol * y0[i].abs(),
                ErrorScale::State => self.atol + self.rtol * state,
            })
            .collect();
        let weighted = |v: &[f64]| -> f64 {
            let q: Vec<f64> = v.iter().zip(&sc).map(|(a, s)| a / s).collect();
            rms(&q)
        };
        let (d0, d1) = (weighted(&y0), weighted(&f0));
        let h0 = if d0 < 1e-5 || d1 < 1e-5 {
            1e-6
        } else {
            0.01 * d0 / d1
        }
        .min(interval);
        let y1: Vec<f64> = y0.iter().zip(&f0).map(|(y, f)| y + h0 * f).collect();
        let mut f1 = vec![0.0; y0.len()];
        self.eval_into(&y1, &mut f1);
        let diff: Vec<f64> = f1.iter().zip(&f0).map(|(a, b)| a - b).collect();
        let d2 = weighted(&diff) / h0;
        let h1 = if d1 <= 1e-15 && d2 <= 1e-15 {
            (h0 * 1e-3).max(1e-6)
        } else {
            (0.01 / d1.max(d2)).powf(1.0 / (ORDER as f64 + 1.0))
        };
        (100.0 * h0).min(h1).min(interval)
    }

    /// One accepted step towards `t_end` (never past it). Err with the reason when the step
    /// size underflows.
    pub fn step(&mut self, t_end: f64) -> Result<(), String> {
        let n = self.y.len();
        let min_step = 10.0 * (next_up(self.t) - self.t);
        let mut h_abs = self.h_abs.max(min_step);
        let mut rejected = false;
        // k[12] holds f at the current state (first-same-as-last)
        let f = std::mem::take(&mut self.k[12]);
        self.k[0].copy_from_slice(&f);
        self.k[12] = f;
        let y = self.y.clone();
        let mut y_new = vec![0.0; n];
        loop {
            if h_abs < min_step {
                return Err(format!(
                    "step size {h_abs:e} too small at t = {} (below 10 ulp of t)",
                    self.t
                ));
            }
            let t_new = (self.t + h_abs).min(t_end);
            let h = t_new - self.t;
            for s in 1..12 {
                self.stage(&y, h, s);
            }
            y_new.copy_from_slice(&y);
            for (j, b) in B.iter().enumerate() {
                if *b != 0.0 {
                    let c = h * b;
                    y_new
                        .iter_mut()
                        .zip(&self.k[j])
                        .for_each(|(t, k)| *t += c * k);
                }
            }
            let mut f_new = std::mem::take(&mut self.k[12]);
            self.eval_into(&y_new, &mut f_new);
            self.k[12] = f_new;
            let err = self.error_norm(&y, &y_new, h);
            // Hairer's free stiffness estimate: stage 11 and the new state are both at t + h,
            // ρ ≈ ‖f(y_new) − f(y_11)‖/‖y_new − y_11‖ (`tmp` still holds y_11).
            let (mut num, mut den) = (0.0, 0.0);
            for (i, y_i) in y_new.iter().enumerate() {
                num += (self.k[12][i] - self.k[11][i]).powi(2);
                den += (y_i - self.tmp[i]).powi(2);
            }
            let rho = if den > 0.0 { (num / den).sqrt() } else { 0.0 };
            // one direction per attempt sees the stiffness or not: keep the largest seen
            // lately, rejected attempts included
            self.rho = self.rho.max(rho);
            if err < 1.0 && h * rho > DENSE_REJECT_H_RHO && h > min_step {
                // accurate at its end, but its dense output would amplify the stiff modes
                h_abs = DENSE_STABLE_H_RHO / rho;
                rejected = true;
                self.rejected += 1;
                self.stiff_rejected += 1;
                continue;
            }
            if err < 1.0 {
                let mut factor = if err == 0.0 {
                    MAX_FACTOR
                } else {
                    MAX_FACTOR.min(SAFETY * err.powf(EXPONENT))
                };
                if rejected {
                    factor = factor.min(1.0);
                }
                self.h_abs = h_abs * factor;
                if self.rho > 0.0 {
                    self.h_abs = self.h_abs.min(DENSE_STABLE_H_RHO / self.rho);
                }
                // the memory fades over some two hundred steps: stiffness that went away lets
                // steps grow again
                self.rho *= RHO_MEMORY;
                self.t_old = self.t;
                self.y_old = y;
                self.h_prev = h;
                self.t = t_new;
                self.y = y_new;
                self.dense = None;
                self.steps += 1;
                return Ok(());
            }
            if !err.is_finite() {
                h_abs *= MIN_FACTOR;
            } else {
                h_abs *= MIN_FACTOR.max(SAFETY * err.powf(EXPONENT));
            }
            rejected = true;
            self.rejected += 1;
        }
    }

    /// One step of exactly `h`, without error control (for convergence-order tests).
    pub fn step_fixed(&mut self, h: f64) {
        let n = self.y.len();
        let f = std::mem::take(&mut self.k[12]);
        self.k[0].copy_from_slice(&f);
        self.k[12] = f;
        let y = self.y.clone();
        for s in 1..12 {
            self.stage(&y, h, s);
        }
        let mut y_new = y.clone();
        for (j, b) in B.iter().enumerate() {
            let c = h * b;
            y_new
                .iter_mut()
                .zip(&self.k[j])
                .for_each(|(t, k)| *t += c * k);
        }
        let mut f_new = vec![0.0; n];
        self.eval_into(&y_new, &mut f_new);
        self.k[12] = f_new;
        self.t_old = self.t;
        self.y_old = y;
        self.h_prev = h;
        self.t += h;
        self.y = y_new;
        self.dense = None;
        self.steps += 1;
    }

    /// Hairer's combined 5th/3rd-order error norm of the step just computed.
    fn error_norm(&self, y: &[f64], y_new: &[f64], h: f64) -> f64 {
        let n = y.len();
        let state = match self.scale {
            ErrorScale::State => rms(y).max(rms(y_new)),
            ErrorScale::Componentwise => 0.0,
        };
        let (mut e5, mut e3) = (0.0, 0.0);
        for i in 0..n {
            let sc = self.scale_of(y, y_new, i, state);
            let (mut a, mut b) = (0.0, 0.0);
            for j in 0..13 {
                let kj = self.k[j][i];
                a += E5[j] * kj;
                b += E3[j] * kj;
            }
            e5 += (a / sc).powi(2);
            e3 += (b / sc).powi(2);
        }
        if e5 == 0.0 && e3 == 0.0 {
            return 0.0;
        }
        let denom = e5 + 0.01 * e3;
        h.abs() * e5 / (denom * n as f64).sqrt()
    }

    /// The state at `t` in the last step [t_old, t], from the 7th-order dense output (three
    /// more right-hand sides the first time it is asked for in a step).
    pub fn interpolate(&mut self, t: f64, out: &mut [f64]) {
        if self.dense.is_none() {
            let (y_old, h) = (self.y_old.clone(), self.h_prev);
            for s in 13..16 {
                self.stage(&y_old, h, s);
            }
            let n = self.y.len();
            let mut f = vec![vec![0.0; n]; 7];
            for i in 0..n {
                let dy = self.y[i] - y_old[i];
                let (f_old, f_new) = (self.k[0][i], self.k[12][i]);
                f[0][i] = dy;
                f[1][i] = h * f_old - dy;
                f[2][i] = 2.0 * dy - h * (f_new + f_old);
                for (r, d) in D.iter().enumerate() {
                    let mut acc = 0.0;
                    for (j, dj) in d.iter().enumerate() {
                        acc += dj * self.k[j][i];
                    }
                    f[3 + r][i] = h * acc;
                }
            }
            self.dense = Some(f);
        }
        let f = self.dense.as_ref().expect("computed above");
        let x = if self.h_prev == 0.0 {
            1.0
        } else {
            (t - self.t_old) / self.h_prev
        };
        out.fill(0.0);
        for (i, fi) in f.iter().rev().enumerate() {
            let w = if i % 2 == 0 { x } else { 1.0 - x };
            out.iter_mut().zip(fi).for_each(|(o, c)| *o = (*o + c) * w);
        }
        out.iter_mut().zip(&self.y_old).for_each(|(o, y)| *o += y);
    }
}

/// The next representable f64 above `t` (for the smallest step at t).
fn next_up(t: f64) -> f64 {
    if t.is_nan() || t == f64::INFINITY {
        return t;
    }
    let bits = t.to_bits();
    if t == 0.0 {
        return f64::from_bits(1);
    }
    if t > 0.0 {
        f64::from_bits(bits + 1)
    } else {
        f64::from_bits(bits - 1)
    }
}

/// Where the stability region of DOP853 meets the negative real axis.
pub fn stability_bound() -> f64 {
    static BOUND: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *BOUND
        .get_or_init(|| super::stability_region::real_stability_bound(12, |i, j| A[i][j], |i| B[i]))
}

#[cfg(test)]
mod tests {
    #[test]
    fn stability_interval_is_dop853s() {
        // Hairer's DOP853 detects stiffness at h·λ > 6.1, near the end of its real interval
        let b = super::stability_bound();
        assert!((5.5..6.5).contains(&b), "{b}");
    }
}
