//! `gdflow check`: a battery of predictions from the theory (MATH §3, §4, §6), each measured
//! on the configured problem (or on the closed-form problem with the same spectrum and α),
//! with the measured value, the predicted value or bound, and pass/fail.

use std::path::Path;
use std::time::Instant;

use nalgebra::DMatrix;
use serde::{Deserialize, Serialize};

use crate::config::{CheckArgs, Config, ConfigArgs};
use crate::error::{Error, Result};
use crate::experiment::{field_of, prepare, run_problem, ProblemInfo, RunResult};
use crate::field::VectorField;
use crate::flow::{solve_flow, FlowOptions};
use crate::gd::{gradient_descent, GdOptions, Status};
use crate::problem::Problem;
use crate::record::balance;
use crate::sweep::{first_passage, run_sweep, SweepSettings};
use crate::theory::{detect_phases, empirical_rip, Phases};

/// The resolved constants of the predictions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckSettings {
    pub drift_c: f64,
    pub identity_tol: f64,
    pub order_tol: f64,
    pub slope_tol: f64,
    pub incremental_tol: f64,
    pub epsilon: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rip_bound: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rho_bound: Option<f64>,
    pub alignment_tol: f64,
}

impl CheckSettings {
    pub fn resolve(a: &CheckArgs) -> Result<Self> {
        let s = Self {
            drift_c: a.drift_c.unwrap_or(1e3),
            identity_tol: a.identity_tol.unwrap_or(1e-8),
            order_tol: a.order_tol.unwrap_or(0.15),
            slope_tol: a.slope_tol.unwrap_or(0.15),
            incremental_tol: a.incremental_tol.unwrap_or(0.02),
            epsilon: a.epsilon.unwrap_or(0.1),
            rip_bound: a.rip_bound,
            rho_bound: a.rho_bound,
            alignment_tol: a.alignment_tol.unwrap_or(0.1),
        };
        for (field, v) in [
            ("drift_c", Some(s.drift_c)),
            ("identity_tol", Some(s.identity_tol)),
            ("order_tol", Some(s.order_tol)),
            ("slope_tol", Some(s.slope_tol)),
            ("incremental_tol", Some(s.incremental_tol)),
            ("rip_bound", s.rip_bound),
            ("rho_bound", s.rho_bound),
        ] {
            if let Some(v) = v {
                if !(v.is_finite() && v > 0.0) {
                    return Err(Error::invalid(field, v, "must be a finite number > 0"));
                }
            }
        }
        for (field, v) in [("epsilon", s.epsilon), ("alignment_tol", s.alignment_tol)] {
            if !(v > 0.0 && v < 1.0) {
                return Err(Error::invalid(field, v, "must lie in (0, 1)"));
            }
        }
        Ok(s)
    }
}

/// One prediction and its measurement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckRow {
    pub name: String,
    /// What the theory predicts, in words.
    pub prediction: String,
    pub measured: f64,
    /// The predicted value or bound, in words with its number.
    pub predicted: String,
    /// `None`: reported only (no bound given, or not applicable).
    pub pass: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckSummary {
    pub crate_name: String,
    pub crate_version: String,
    pub seed: u64,
    pub config: Config,
    pub check: CheckSettings,
    pub problem: ProblemInfo,
    pub rows: Vec<CheckRow>,
    /// Every row with a verdict passed.
    pub passed: bool,
    /// Phase boundaries of the flow on the configured problem.
    pub phases: Phases,
    /// Convergence time of the `relative`-perturbed flow against ε.
    pub robustness: Vec<RobustnessPoint>,
    pub total_seconds: f64,
}

pub struct CheckResult {
    pub summary: CheckSummary,
    /// GD and the flow on the configured problem (with the theory quantities).
    pub run: RunResult,
}

/// One GD step as the check of the drift identity sees it.
pub type Stepper = fn(&VectorField, &[f64], f64) -> Vec<f64>;

/// The library's GD, one step at a time.
pub fn library_gd_step(field: &VectorField, x: &[f64], eta: f64) -> Vec<f64> {
    let traj = gradient_descent(field, x, &GdOptions::new(eta, 1, 1));
    traj.states.last().expect("one step").clone()
}

/// ‖ΔD_observed − Σ_j η²(V_jᵀG_jᵀG_jV_j − U_jᵀG_jG_jᵀU_j)‖ / ‖ΔD_observed‖ over `steps` steps of
/// `stepper` (MATH §3).
pub fn drift_identity_error(
    field: &VectorField,
    x0: &[f64],
    eta: f64,
    steps: usize,
    stepper: Stepper,
) -> f64 {
    let mut ws = field.workspace();
    let mut x = x0.to_vec();
    let k = field.k();
    let mut predicted = DMatrix::<f64>::zeros(k, k);
    for _ in 0..steps {
        field.evaluate(&x, &mut ws);
        let (u, v) = field.split(&x);
        let gv = ws.g() * v;
        let gtu = ws.g().transpose() * u;
        predicted += (gv.transpose() * &gv - gtu.transpose() * &gtu) * (eta * eta);
        x = stepper(field, &x, eta);
        if x.iter().any(|v| !v.is_finite()) {
            return f64::INFINITY;
        }
    }
    let observed = balance(field, &x) - balance(field, x0);
    (&observed - &predicted).norm() / observed.norm().max(f64::MIN_POSITIVE)
}

fn flow_opts(cfg: &Config, alpha: f64, k: usize) -> FlowOptions {
    FlowOptions::new(cfg.method, cfg.rtol, cfg.rtol * alpha / (k as f64).sqrt())
}

/// First time the flow's relative error drops below ε, on a grid of `dt`, up to `horizon`.
fn flow_t_eps(
    field: &VectorField,
    problem: &Problem,
    opts: &FlowOptions,
    horizon: f64,
    dt: f64,
    eps: f64,
) -> Result<Option<f64>> {
    let n = (horizon / dt).ceil() as usize;
    let steps: Vec<usize> = (0..=n).collect();
    let times: Vec<f64> = steps.iter().map(|&j| j as f64 * dt).collect();
    let sol = solve_flow(field, &problem.start_state(), &times, &steps, opts)?;
    let norm = problem.x_star.norm();
    let mut prev = None;
    for (t, x) in sol.trajectory.times.iter().zip(&sol.trajectory.states) {
        let err = (field.product(x) - &problem.x_star).norm() / norm;
        if let Some(te) = first_passage(prev, *t, err, eps) {
            return Ok(Some(te));
        }
        prev = Some((*t, err));
    }
    Ok(None)
}

fn slope(xs: &[f64], ys: &[f64]) -> f64 {
    let n = xs.len() as f64;
    let mx = xs.iter().sum::<f64>() / n;
    let my = ys.iter().sum::<f64>() / n;
    let sxy: f64 = xs.iter().zip(ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let sxx: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
    sxy / sxx
}

/// The problem with its start rescaled to scale `alpha`: regenerated (same operator, target
/// and start direction: each has its own seed stream), or for a loaded problem its start scaled
/// by alpha/α.
fn with_alpha(cfg: &Config, problem: &Problem, alpha: f64) -> Result<(Config, Problem)> {
    let mut c = cfg.clone();
    c.alpha = alpha;
    c.atol = c.rtol * alpha / (c.width as f64).sqrt();
    let p = if cfg.problem.is_some() {
        let mut p = problem.clone();
        p.u0 *= alpha / cfg.alpha;
        p.v0 *= alpha / cfg.alpha;
        p
    } else {
        Problem::generate(&c)?
    };
    Ok((c, p))
}

fn verdict(ok: bool) -> Option<bool> {
    Some(ok)
}

/// Run the battery on the configured problem; `stepper` is the GD step the drift identity
/// is checked against (the library's, unless a test wants to see the check fail).
pub fn check_with(args: &ConfigArgs, check: &CheckArgs, stepper: Stepper) -> Result<CheckResult> {
    check_with_progress(args, check, stepper, false)
}

/// [`check_with`], with progress bars on stderr for its runs and sweep when `show_progress`.
pub fn check_with_progress(
    args: &ConfigArgs,
    check: &CheckArgs,
    stepper: Stepper,
    show_progress: bool,
) -> Result<CheckResult> {
    let start = Instant::now();
    let settings = CheckSettings::resolve(check)?;
    let (cfg, problem) = prepare(args)?;
    let run = run_problem(&cfg, &problem, 0.0, show_progress)?;
    let field = field_of(&cfg, &problem);
    let x0 = problem.start_state();
    let sv = problem.target_sv.clone();
    let (s1, sr) = (sv[0], *sv.last().expect("rank >= 1"));
    let norm = problem.x_star.norm();
    let mut rows = Vec::new();

    // MATH §3: the flow keeps D = UᵀU − VᵀV.
    let drift = run.summary.flow.max_balance_drift;
    let bound = settings.drift_c * cfg.rtol * norm;
    rows.push(CheckRow {
        name: "flow_conservation".into(),
        prediction: "the flow conserves UᵀU − VᵀV (drift is solver error)".into(),
        measured: drift,
        predicted: format!("≤ c·rtol·‖X*‖ = {bound:.3e}"),
        pass: verdict(run.summary.flow.status == Status::Completed && drift <= bound),
    });

    // MATH §3: GD's drift is the sum of the per-step identity, to rounding.
    let err = drift_identity_error(&field, &x0, cfg.eta, cfg.steps, stepper);
    rows.push(CheckRow {
        name: "gd_drift_identity".into(),
        prediction: "GD's drift = Σ η²(VᵀGᵀGV − UᵀGGᵀU) (relative difference)".into(),
        measured: err,
        predicted: format!("≤ {:.1e}", settings.identity_tol),
        pass: verdict(err <= settings.identity_tol),
    });

    // MATH §2, §6: GD is forward Euler on the flow: max deviation ∝ η.
    let horizon =
        (cfg.eta * cfg.steps as f64).min(1.5 * (sr / (cfg.alpha * cfg.alpha)).ln().max(1.0) / sr);
    let sweep = SweepSettings {
        etas: vec![cfg.eta / 4.0, cfg.eta / 2.0, cfg.eta],
        horizon,
        epsilon: settings.epsilon,
        stability_steps: 0,
        stability_tol: 1e-4,
        max_rows: 1,
        shard: None,
    };
    let order = run_sweep(&cfg, &problem, &sweep, show_progress, 0.0)?
        .summary
        .order_plain;
    rows.push(CheckRow {
        name: "gd_order".into(),
        prediction: format!(
            "GD tracks the flow with order 1 in η (η = {}, {}/2, {}/4)",
            cfg.eta, cfg.eta, cfg.eta
        ),
        measured: order.unwrap_or(f64::NAN),
        predicted: format!("1 ± {}", settings.order_tol),
        pass: verdict(order.is_some_and(|o| (o - 1.0).abs() <= settings.order_tol)),
    });

    // MATH §4, §6: t_ε grows like ln(1/α)/σ_r.
    let alphas = [1e-2, 1e-3, 1e-4, 1e-5, 1e-6];
    let mut logs = Vec::new();
    let mut times = Vec::new();
    for &a in &alphas {
        let (c, p) = with_alpha(&cfg, &problem, a)?;
        let f = field_of(&c, &p);
        let h = 3.0 * (sr / (a * a)).ln() / sr;
        if let Some(t) = flow_t_eps(
            &f,
            &p,
            &flow_opts(&c, a, c.width),
            h,
            0.02 / s1,
            settings.epsilon,
        )? {
            logs.push((1.0 / a).ln());
            times.push(t);
        }
    }
    let fitted = if times.len() >= 2 {
        slope(&logs, &times)
    } else {
        f64::NAN
    };
    // Near the origin the sensing flow grows along the top singular directions of −G(0) = 𝒜*y,
    // not of X*: with a large sensing error its σ_r sets the rate instead of σ_r(X*).
    let mut ws = field.workspace();
    field.evaluate(&vec![0.0; field.state_len()], &mut ws);
    let mut spectral: Vec<f64> = ws.g().singular_values().iter().copied().collect();
    spectral.sort_by(|a, b| b.total_cmp(a));
    let rate = spectral.get(sv.len() - 1).copied().unwrap_or(f64::NAN);
    rows.push(CheckRow {
        name: "convergence_time".into(),
        prediction: format!(
            "t_ε (ε = {}) against ln(1/α), α = 1e-2…1e-6: slope 1/σ_r (the early growth rate σ_r(𝒜*y) = {rate:.4} would give {:.4})",
            settings.epsilon,
            1.0 / rate
        ),
        measured: fitted,
        predicted: format!("1/σ_r = {:.4} ± {}%", 1.0 / sr, 100.0 * settings.slope_tol),
        pass: verdict(times.len() == alphas.len() && (fitted * sr - 1.0).abs() <= settings.slope_tol),
    });

    // MATH §4: incremental learning on the closed-form problem with the same σ and α.
    rows.push(incremental_learning(&cfg, &sv, &settings)?);

    // MATH §6: implicit regularisation.
    rows.extend(implicit_regularisation(&cfg, &problem, &sv)?);

    // MATH §6: empirical RIP and max ρ along the path.
    let rank = (2 * sv.len()).min(problem.n1().min(problem.n2()));
    let delta = empirical_rip(problem.op.as_ref(), rank, 200, cfg.seed);
    rows.push(CheckRow {
        name: "empirical_rip".into(),
        prediction: format!(
            "δ̂ = max |‖𝒜Z‖² − 1| over 200 random unit Z of rank {rank} (a lower bound on δ_{rank})"
        ),
        measured: delta,
        predicted: settings
            .rip_bound
            .map_or("reported".into(), |b| format!("≤ {b}")),
        pass: settings.rip_bound.map(|b| delta <= b),
    });
    let rho = run.flow.iter().map(|r| r.rho).fold(0.0, f64::max);
    rows.push(CheckRow {
        name: "max_rho".into(),
        prediction: "max_t ρ(t) = ‖E‖_op/‖X* − UVᵀ‖_op along the flow".into(),
        measured: rho,
        predicted: settings
            .rho_bound
            .map_or("reported".into(), |b| format!("≤ {b}")),
        pass: settings.rho_bound.map(|b| rho <= b),
    });

    let robustness = robustness(&cfg, &problem)?;
    let largest = robustness
        .iter()
        .filter(|r| r.time.is_some())
        .map(|r| r.epsilon)
        .fold(f64::NAN, f64::max);
    rows.push(CheckRow {
        name: "robustness_relative".into(),
        prediction: format!(
            "largest ε of E = ε‖X* − UVᵀ‖W/‖W‖ at which the flow reaches relative error {ROBUST_TOL:e} by T = {:.2} (times: {})",
            robustness.first().map_or(0.0, |r| r.budget),
            robustness
                .iter()
                .map(|r| format!("ε={}: {}", r.epsilon, r.time.map_or("—".into(), |t| format!("{t:.2}"))))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        measured: largest,
        predicted: "reported".into(),
        pass: None,
    });

    let phases = detect_phases(&run.flow, sr, settings.alignment_tol);
    for (name, t, what) in [
        (
            "end_of_alignment",
            phases.end_of_alignment,
            format!("first t with ‖sin Θ‖ ≤ {}", settings.alignment_tol),
        ),
        (
            "end_of_growth",
            phases.end_of_growth,
            "first t with σ_r(L*ᵀU)σ_r(R*ᵀV) ≥ σ_r/2".to_string(),
        ),
    ] {
        rows.push(CheckRow {
            name: name.into(),
            prediction: what,
            measured: t.unwrap_or(f64::NAN),
            predicted: "reported".into(),
            pass: None,
        });
    }

    let passed = rows.iter().all(|r| r.pass != Some(false));
    let summary = CheckSummary {
        crate_name: env!("CARGO_PKG_NAME").to_string(),
        crate_version: env!("CARGO_PKG_VERSION").to_string(),
        seed: cfg.seed,
        config: cfg.clone(),
        check: settings,
        problem: ProblemInfo::new(&cfg, &problem),
        rows,
        passed,
        phases,
        robustness,
        total_seconds: start.elapsed().as_secs_f64(),
    };
    Ok(CheckResult { summary, run })
}

/// [`check_with`] the library's GD.
pub fn check(args: &ConfigArgs, check: &CheckArgs) -> Result<CheckResult> {
    check_with(args, check, library_gd_step)
}

/// Time for s_i to reach σ_i/2 on the closed form, against ln(σ_i/α² − 1)/(2σ_i).
fn incremental_learning(cfg: &Config, sv: &[f64], settings: &CheckSettings) -> Result<CheckRow> {
    let r = sv.len();
    let s0 = cfg.alpha * cfg.alpha;
    let p = Problem::aligned_factorisation(r, r, sv, &vec![s0; r]);
    let field = VectorField::from_problem(&p);
    let predicted: Vec<f64> = sv
        .iter()
        .map(|&s| (s / s0 - 1.0).ln() / (2.0 * s))
        .collect();
    let horizon = 1.2 * predicted.iter().copied().fold(0.0, f64::max);
    let dt = 0.002 / sv[0];
    let n = (horizon / dt).ceil() as usize;
    let steps: Vec<usize> = (0..=n).collect();
    let times: Vec<f64> = steps.iter().map(|&j| j as f64 * dt).collect();
    let opts = FlowOptions::new(cfg.method, cfg.rtol, cfg.rtol * s0.sqrt() * 1e-2);
    let sol = solve_flow(&field, &p.start_state(), &times, &steps, &opts)?;
    let mut measured = vec![None; r];
    let mut prev: Option<(f64, Vec<f64>)> = None;
    for (t, x) in sol.trajectory.times.iter().zip(&sol.trajectory.states) {
        let d = field.product(x);
        for i in 0..r {
            let (s, half) = (d[(i, i)], 0.5 * sv[i]);
            if measured[i].is_none() && s >= half {
                // linear interpolation between the grid points around the crossing
                measured[i] = Some(match &prev {
                    Some((tp, sp)) if sp[i] < half => tp + (t - tp) * (half - sp[i]) / (s - sp[i]),
                    _ => *t,
                });
            }
        }
        prev = Some((*t, (0..r).map(|i| d[(i, i)]).collect()));
    }
    let worst = measured
        .iter()
        .zip(&predicted)
        .map(|(m, p)| m.map_or(f64::INFINITY, |m| (m - p).abs() / p))
        .fold(0.0, f64::max);
    let ordered = measured
        .windows(2)
        .all(|w| matches!(w, [Some(a), Some(b)] if a <= b));
    Ok(CheckRow {
        name: "incremental_learning".into(),
        prediction: format!(
            "closed form (σ = {sv:?}, s(0) = α²): σ_i learned in decreasing order, s_i = σ_i/2 at ln(σ_i/α² − 1)/(2σ_i) (largest relative difference)"
        ),
        measured: worst,
        predicted: format!("≤ {} and in order", settings.incremental_tol),
        pass: verdict(ordered && worst <= settings.incremental_tol),
    })
}

/// With m < n1·n2 and k > r: the end error and the spurious singular values shrink with α.
fn implicit_regularisation(cfg: &Config, problem: &Problem, sv: &[f64]) -> Result<Vec<CheckRow>> {
    let r = sv.len();
    if !(cfg.measurements < cfg.n1 * cfg.n2 && cfg.width > r) {
        return Ok(vec![CheckRow {
            name: "implicit_regularisation".into(),
            prediction: "needs m < n1·n2 and k > r".into(),
            measured: f64::NAN,
            predicted: "not applicable".into(),
            pass: None,
        }]);
    }
    let sr = sv[r - 1];
    let alphas = [1e-1, 1e-2, 1e-3];
    let (mut errors, mut spurious) = (Vec::new(), Vec::new());
    for &a in &alphas {
        let (c, p) = with_alpha(cfg, problem, a)?;
        let f = field_of(&c, &p);
        let horizon = 2.0 * (sr / (a * a)).ln().max(1.0) / sr;
        let sol = solve_flow(
            &f,
            &p.start_state(),
            &[0.0, horizon],
            &[0, 1],
            &flow_opts(&c, a, c.width),
        )?;
        let x = sol.trajectory.states.last().expect("start state");
        errors.push((f.product(x) - &p.x_star).norm() / p.x_star.norm());
        let s = crate::record::product_singular_values(&f, x);
        spurious.push(s[r..].iter().copied().fold(0.0, f64::max));
    }
    let exponent = slope(
        &alphas.map(f64::ln),
        &errors.iter().map(|e| e.ln()).collect::<Vec<_>>(),
    );
    let decreasing = |v: &[f64]| v.windows(2).all(|w| w[1] < w[0]);
    Ok(vec![
        CheckRow {
            name: "implicit_regularisation".into(),
            prediction: format!(
                "m < n1·n2, k > r: the flow's end error shrinks as α shrinks (α = 1e-1, 1e-2, 1e-3: {}); fitted exponent p in error ∝ α^p",
                errors.iter().map(|e| format!("{e:.2e}")).collect::<Vec<_>>().join(", ")
            ),
            measured: exponent,
            predicted: "p > 0, errors decreasing".into(),
            pass: verdict(decreasing(&errors) && exponent > 0.0),
        },
        CheckRow {
            name: "spurious_singular_values".into(),
            prediction: format!(
                "singular values of UVᵀ beyond r stay of the start's order (α = 1e-1, 1e-2, 1e-3: {})",
                spurious.iter().map(|e| format!("{e:.2e}")).collect::<Vec<_>>().join(", ")
            ),
            measured: spurious.last().copied().unwrap_or(f64::NAN),
            predicted: "decreasing with α".into(),
            pass: verdict(decreasing(&spurious)),
        },
    ])
}

/// Relative error the perturbed flow must reach in the robustness experiment.
pub const ROBUST_TOL: f64 = 1e-3;

/// The relative perturbation's sizes the robustness experiment tries.
pub const ROBUST_EPSILONS: [f64; 8] = [0.0, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2];

/// One size of the `relative` perturbation and the time the flow needed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RobustnessPoint {
    pub epsilon: f64,
    /// First t with relative error ≤ [`ROBUST_TOL`], if within the budget.
    pub time: Option<f64>,
    pub budget: f64,
    pub final_rel_error: f64,
}

/// MATH §5: the flow with E = ε‖X* − UVᵀ‖W/‖W‖ for ε in [`ROBUST_EPSILONS`], each run until
/// 3·ln(σ_r/α²)/σ_r.
pub fn robustness(cfg: &Config, problem: &Problem) -> Result<Vec<RobustnessPoint>> {
    let sr = *problem.target_sv.last().expect("rank >= 1");
    let budget = 3.0 * (sr / (cfg.alpha * cfg.alpha)).ln().max(1.0) / sr;
    let dt = budget / 2000.0;
    let norm = problem.x_star.norm();
    ROBUST_EPSILONS
        .iter()
        .map(|&eps| {
            let f = VectorField::from_problem(problem).perturbed(crate::field::Perturbation::new(
                crate::config::PerturbationModel::Relative,
                eps,
                problem,
                cfg.seed,
            ));
            let steps: Vec<usize> = (0..=2000).collect();
            let times: Vec<f64> = steps.iter().map(|&j| j as f64 * dt).collect();
            let sol = solve_flow(
                &f,
                &problem.start_state(),
                &times,
                &steps,
                &flow_opts(cfg, cfg.alpha, cfg.width),
            )?;
            let mut prev = None;
            let mut time = None;
            let mut last = f64::NAN;
            for (t, x) in sol.trajectory.times.iter().zip(&sol.trajectory.states) {
                let err = (f.product(x) - &problem.x_star).norm() / norm;
                if time.is_none() {
                    time = first_passage(prev, *t, err, ROBUST_TOL);
                }
                prev = Some((*t, err));
                last = err;
            }
            Ok(RobustnessPoint {
                epsilon: eps,
                time,
                budget,
                final_rel_error: last,
            })
        })
        .collect()
}

/// `checks.csv`: one row per prediction.
pub fn checks_csv(s: &CheckSummary) -> Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let err = |e: csv::Error| Error::invalid("checks.csv", "csv", e.to_string());
    w.write_record(["name", "prediction", "measured", "predicted", "pass"])
        .map_err(err)?;
    for r in &s.rows {
        let pass = match r.pass {
            Some(true) => "pass",
            Some(false) => "FAIL",
            None => "",
        };
        w.write_record([
            r.name.as_str(),
            &r.prediction,
            &crate::output::num(r.measured),
            &r.predicted,
            pass,
        ])
        .map_err(err)?;
    }
    w.into_inner()
        .map_err(|e| Error::invalid("checks.csv", "csv", e.to_string()))
}

/// Write summary.json, checks.csv, trajectory.csv (the configured run, theory columns
/// included) and config.toml (with a `[check]` table) into `dir`.
pub fn write_check_outputs(result: &CheckResult, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let s = &result.summary;
    let json = serde_json::to_vec_pretty(s)
        .map_err(|e| Error::invalid("summary.json", "json", e.to_string()))?;
    let mut cfg = s.config.clone();
    cfg.out = None;
    cfg.save_problem = None;
    let mut table = toml::Table::try_from(&cfg)
        .map_err(|e| Error::invalid("config.toml", "toml", e.to_string()))?;
    let check = toml::Table::try_from(&s.check)
        .map_err(|e| Error::invalid("config.toml", "toml", e.to_string()))?;
    table.insert("check".into(), toml::Value::Table(check));
    let toml = toml::to_string(&table)
        .map_err(|e| Error::invalid("config.toml", "toml", e.to_string()))?;
    crate::output::write_bytes(&dir.join("checks.csv"), &checks_csv(s)?)?;
    crate::output::write_bytes(
        &dir.join("trajectory.csv"),
        &crate::experiment::trajectory_csv(&result.run)?,
    )?;
    crate::output::write_bytes(&dir.join("config.toml"), toml.as_bytes())?;
    crate::output::write_bytes(&dir.join("summary.json"), &json)?;
    Ok(())
}

/// The table `gdflow check` prints.
pub fn format_checks(s: &CheckSummary) -> String {
    use std::fmt::Write;
    let p = &s.problem;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "gdflow {} check — {}, α={:e}, η={}, seed={}\n",
        s.crate_version,
        p.headline(),
        s.config.alpha,
        s.config.eta,
        s.seed
    );
    let _ = writeln!(
        out,
        "{:<26} {:>13}  {:<28} {:<6} prediction",
        "check", "measured", "predicted", "result"
    );
    for r in &s.rows {
        let verdict = match r.pass {
            Some(true) => "pass",
            Some(false) => "FAIL",
            None => "—",
        };
        let _ = writeln!(
            out,
            "{:<26} {:>13.5e}  {:<28} {:<6} {}",
            r.name, r.measured, r.predicted, verdict, r.prediction
        );
    }
    let failed = s.rows.iter().filter(|r| r.pass == Some(false)).count();
    let _ = writeln!(
        out,
        "\n{} — {} checks with a verdict, {} failed ({:.1} s)",
        if s.passed {
            "ALL PASSED"
        } else {
            "SOME CHECKS FAILED"
        },
        s.rows.iter().filter(|r| r.pass.is_some()).count(),
        failed,
        s.total_seconds
    );
    out
}
