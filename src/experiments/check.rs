//! `gdflow check`: a battery of predictions from the theory (MATH §3, §4, §6), each measured
//! on the configured problem (or on the closed-form problem with the same spectrum and α),
//! with the measured value, the predicted value or bound, and pass/fail.

use std::time::Instant;

use nalgebra::DMatrix;

use super::run::{run, RunExtras};
use super::sweep::run_sweep;
use super::Setup;
use crate::analysis::fit::{first_passage, slope};
use crate::analysis::record::{balance, product_singular_values};
use crate::analysis::theory::{detect_phases, empirical_rip, Phases};
use crate::config::{CheckArgs, Config, FlowVariant, PerturbationModel};
use crate::dynamics::flow::{solve_flow, FlowOptions, Times};
use crate::dynamics::optimizer::{named, Optimizer, TimeScale};
use crate::dynamics::sharpness::{top_eigenpairs, EigenOptions};
use crate::dynamics::{Driver, Gd, Iterate, RunOptions, SaveAt, Status, Stepper};
use crate::error::{Error, Result};
use crate::field::{Field, Perturbation, Perturbed, SensingField};
use crate::problem::Problem;
use crate::results::check::{CheckResult, CheckRow, CheckSettings, CheckSummary, RobustnessPoint};
use crate::results::run::{ProblemInfo, RunResult};
use crate::results::sweep::SweepSettings;

/// ‖ΔD_observed − Σ_j η²(V_jᵀG_jᵀG_jV_j − U_jᵀG_jG_jᵀU_j)‖ / ‖ΔD_observed‖ over `steps` steps of
/// `stepper` (MATH §3): zero to rounding for GD, whatever the problem.
pub fn drift_identity_error(
    field: &dyn Field,
    x0: &[f64],
    eta: f64,
    steps: usize,
    stepper: Box<dyn Stepper>,
) -> f64 {
    let k = field.factors().k;
    let mut predicted = DMatrix::<f64>::zeros(k, k);
    let mut own = field.workspace();
    let mut add = |it: &Iterate<'_>| {
        if it.step == steps {
            return;
        }
        let ws = match it.workspace {
            Some(ws) if ws.g().nrows() > 0 => ws,
            _ => {
                field.evaluate(it.state, &mut own);
                &own
            }
        };
        let (u, v) = field.factors().split(it.state);
        let gv = ws.g() * v;
        let gtu = ws.g().transpose() * u;
        predicted += (gv.transpose() * &gv - gtu.transpose() * &gtu) * (eta * eta);
    };
    let run = RunOptions {
        save: SaveAt::Last,
        ..RunOptions::new(eta, steps, 1)
    };
    let traj = Driver::new(field, stepper, x0, run)
        .run(&mut add)
        .pop()
        .expect("one run");
    let Some(x) = traj
        .states
        .last()
        .filter(|_| traj.status == Status::Completed)
    else {
        return f64::INFINITY;
    };
    let observed = balance(field, x) - balance(field, x0);
    (&observed - &predicted).norm() / observed.norm().max(f64::MIN_POSITIVE)
}

fn flow_opts(cfg: &Config) -> FlowOptions {
    cfg.flow_options()
}

/// First time the flow's relative error drops below ε, on a grid of `dt`, up to `horizon`.
fn flow_t_eps(
    field: &dyn Field,
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

fn verdict(ok: bool) -> Option<bool> {
    Some(ok)
}

/// Run the battery on a set-up problem; `stepper` is the method whose drift identity is
/// checked (GD's, unless a test wants to see the check fail); progress bars on stderr for its
/// runs and sweep when `show_progress`.
pub fn check_with(
    setup: &Setup,
    check: &CheckArgs,
    stepper: Box<dyn Stepper>,
    show_progress: bool,
) -> Result<CheckResult> {
    let start = Instant::now();
    let settings = CheckSettings::resolve(check)?;
    let (cfg, problem) = (&setup.config, &setup.problem);
    // the order row's modified flows, before any work
    cfg.check_start_rate(cfg.eta * cfg.steps as f64, cfg.eta)?;
    let run = run(
        setup,
        &RunExtras {
            progress: show_progress,
            ..RunExtras::default()
        },
    )?;
    let sv = problem.target_sv.clone();
    let sr = *sv.last().expect("rank >= 1");
    let mut rows = vec![conservation_row(setup, &run, &settings)];
    // MATH §3: GD's drift is the sum of the per-step identity, to rounding.
    let field = setup.field();
    let err = drift_identity_error(field.as_ref(), &setup.start(), cfg.eta, cfg.steps, stepper);
    rows.push(CheckRow {
        name: "gd_drift_identity".into(),
        prediction: "GD's drift = Σ η²(VᵀGᵀGV − UᵀGGᵀU) (relative difference)".into(),
        measured: err,
        predicted: format!("≤ {:.1e}", settings.identity_tol),
        pass: verdict(err <= settings.identity_tol),
    });
    let stability = stability(setup)?;
    rows.push(order_row(setup, &settings, &stability, show_progress)?);
    rows.extend(convergence_time_rows(setup, &settings)?);
    // MATH §4: incremental learning on the closed-form problem with the same σ and α.
    rows.push(incremental_learning(cfg, &sv, &settings)?);
    // MATH §6: implicit regularisation.
    rows.extend(implicit_regularisation(setup, &sv)?);
    rows.extend(rip_and_rho_rows(setup, &run, &settings));
    let robustness = robustness(setup)?;
    rows.push(robustness_row(&robustness));
    let phases = detect_phases(&run.flow, sr, settings.alignment_tol);
    rows.extend(phase_rows(&phases, &settings));
    // MATH §8: past the stability limit.
    rows.extend(edge_of_stability(
        setup,
        stability,
        &settings,
        show_progress,
    )?);

    let passed = rows.iter().all(|r| r.pass != Some(false));
    let summary = CheckSummary {
        provenance: setup.provenance(),
        check: settings,
        problem: ProblemInfo::new(problem),
        rows,
        passed,
        phases,
        robustness,
        total_seconds: start.elapsed().as_secs_f64(),
    };
    Ok(CheckResult { summary, run })
}

/// MATH §3: the flow keeps D = UᵀU − VᵀV.
fn conservation_row(setup: &Setup, run: &RunResult, settings: &CheckSettings) -> CheckRow {
    let drift = run.summary.flow.max_balance_drift;
    let bound = settings.drift_c * setup.config.rtol * setup.problem.x_star.norm();
    CheckRow {
        name: "flow_conservation".into(),
        prediction: "the flow conserves UᵀU − VᵀV (drift is solver error)".into(),
        measured: drift,
        predicted: format!("≤ c·rtol·‖X*‖ = {bound:.3e}"),
        pass: verdict(run.summary.flow.status == Status::Completed && drift <= bound),
    }
}

/// MATH §2, §6: GD is forward Euler on the flow: max deviation ∝ η.
fn order_row(
    setup: &Setup,
    settings: &CheckSettings,
    stability: &Stability,
    show_progress: bool,
) -> Result<CheckRow> {
    let cfg = &setup.config;
    let sr = *setup.problem.target_sv.last().expect("rank >= 1");
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
    let order = run_sweep(setup, &sweep, show_progress)?.summary.order_plain;
    Ok(CheckRow {
        name: "gd_order".into(),
        prediction: format!(
            "GD tracks the flow with order 1 in η (η = {}, {}/2, {}/4); past the stability limit \
             GD follows no gradient flow (MATH §8) and the eos rows test it instead",
            cfg.eta, cfg.eta, cfg.eta
        ),
        measured: order.unwrap_or(f64::NAN),
        predicted: if stability.past() {
            format!("n/a past the limit (η·λ_max/2 = {:.3})", stability.ratio)
        } else {
            format!("1 ± {}", settings.order_tol)
        },
        pass: if stability.past() {
            None
        } else {
            verdict(order.is_some_and(|o| (o - 1.0).abs() <= settings.order_tol))
        },
    })
}

/// MATH §4, §6: t_ε grows like ln(1/α)/σ_r, with the rate of the early growth.
fn convergence_time_rows(setup: &Setup, settings: &CheckSettings) -> Result<Vec<CheckRow>> {
    let sv = &setup.problem.target_sv;
    let (s1, sr) = (sv[0], *sv.last().expect("rank >= 1"));
    let alphas = [1e-2, 1e-3, 1e-4, 1e-5, 1e-6];
    let mut logs = Vec::new();
    let mut times = Vec::new();
    for &a in &alphas {
        let s = setup.with_alpha(a)?;
        let f = s.field();
        let h = 3.0 * (sr / (a * a)).ln() / sr;
        let opts = flow_opts(&s.config);
        if let Some(t) = flow_t_eps(
            f.as_ref(),
            &s.problem,
            &opts,
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
    // From a small start the flow first grows along the top singular directions of
    // −G(0) (𝒜*y for sensing): the time to escape the origin is ln(1/α)/σ_r(−G(0)) to first
    // order (spectral learning), and σ_r(X*) is only its m → ∞ limit (MATH §6).
    let field = setup.field();
    let mut ws = field.workspace();
    field.evaluate(&vec![0.0; field.state_len()], &mut ws);
    let mut spectral: Vec<f64> = ws.g().singular_values().iter().copied().collect();
    spectral.sort_by(|a, b| b.total_cmp(a));
    let rate = spectral.get(sv.len() - 1).copied().unwrap_or(f64::NAN);
    let complete = times.len() == alphas.len();
    Ok(vec![
        CheckRow {
            name: "convergence_time".into(),
            prediction: format!(
                "t_ε (ε = {}) against ln(1/α), α = 1e-2…1e-6: slope 1/σ_r(−G(0)), the early growth rate (spectral: −G(0) = 𝒜*y for sensing)",
                settings.epsilon
            ),
            measured: fitted,
            predicted: format!("1/σ_r(𝒜*y) = {:.4} ± {}%", 1.0 / rate, 100.0 * settings.slope_tol),
            pass: verdict(complete && (fitted * rate - 1.0).abs() <= settings.slope_tol),
        },
        CheckRow {
            name: "convergence_time_asymptotic".into(),
            prediction: "the same slope against its m → ∞ limit 1/σ_r(X*) (reported: finite m moves the growth rate to σ_r(𝒜*y))".into(),
            measured: fitted,
            predicted: format!("1/σ_r = {:.4}", 1.0 / sr),
            pass: None,
        },
    ])
}

/// MATH §6: empirical RIP and max ρ along the path.
fn rip_and_rho_rows(setup: &Setup, run: &RunResult, settings: &CheckSettings) -> [CheckRow; 2] {
    let problem = &setup.problem;
    let rank = (2 * problem.target_sv.len()).min(problem.n1().min(problem.n2()));
    let delta = empirical_rip(problem.op.as_ref(), rank, 200, setup.config.seed);
    let rho = run.flow.iter().map(|r| r.rho()).fold(0.0, f64::max);
    [
        CheckRow {
            name: "empirical_rip".into(),
            prediction: format!(
                "δ̂ = max |‖𝒜Z‖² − 1| over 200 random unit Z of rank {rank} (a lower bound on δ_{rank})"
            ),
            measured: delta,
            predicted: settings
                .rip_bound
                .map_or("reported".into(), |b| format!("≤ {b}")),
            pass: settings.rip_bound.map(|b| delta <= b),
        },
        CheckRow {
            name: "max_rho".into(),
            prediction: "max_t ρ(t) = ‖E‖_op/‖X* − UVᵀ‖_op along the flow".into(),
            measured: rho,
            predicted: settings
                .rho_bound
                .map_or("reported".into(), |b| format!("≤ {b}")),
            pass: settings.rho_bound.map(|b| rho <= b),
        },
    ]
}

/// The largest relative perturbation the flow shrugs off, reported.
fn robustness_row(robustness: &[RobustnessPoint]) -> CheckRow {
    let largest = robustness
        .iter()
        .filter(|r| r.time.is_some())
        .map(|r| r.epsilon)
        .fold(f64::NAN, f64::max);
    CheckRow {
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
    }
}

/// The phases of the flow's path, reported.
fn phase_rows(phases: &Phases, settings: &CheckSettings) -> Vec<CheckRow> {
    [
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
    ]
    .into_iter()
    .map(|(name, t, what)| CheckRow {
        name: name.into(),
        prediction: what,
        measured: t.unwrap_or(f64::NAN),
        predicted: "reported".into(),
        pass: None,
    })
    .collect()
}

/// [`check_with`] GD.
pub fn check(setup: &Setup, check: &CheckArgs, show_progress: bool) -> Result<CheckResult> {
    let optimizer = setup.optimizer()?;
    if optimizer.is_gradient_descent() {
        check_with(setup, check, Box::new(Gd::new()), show_progress)
    } else {
        check_optimizer(setup, check, optimizer.as_ref(), show_progress)
    }
}

/// The predictions of MATH §9 for an optimiser other than GD: its orders against its plain
/// limit (1) and, where it has one, its modified limit (2), in the limit's time step h = η or
/// √η, from runs at h, h/2 and h/4 to the configured horizon T = steps·h; and its balance
/// drift, reported (it is conserved by neither it nor its limits). GD's own battery (its drift
/// identity, the gradient flow's theory, the edge of stability) is `check_with`'s.
fn check_optimizer(
    setup: &Setup,
    check: &CheckArgs,
    optimizer: &dyn Optimizer,
    show_progress: bool,
) -> Result<CheckResult> {
    let start = Instant::now();
    let settings = CheckSettings::resolve(check)?;
    let cfg = &setup.config;
    cfg.check_start_rate(cfg.eta * cfg.steps as f64, cfg.eta)?;
    let extras = RunExtras {
        progress: show_progress,
        ..RunExtras::default()
    };
    let run = run(setup, &extras)?;
    let warnings = optimizer.warnings(&setup.optimizer_context());
    let mut rows = Vec::new();
    for (variant, expected) in [(FlowVariant::Plain, 1.0), (FlowVariant::Modified, 2.0)] {
        if optimizer.limits().contains(&variant) {
            rows.push(order_against(
                setup, optimizer, variant, expected, &settings, &warnings,
            )?);
        }
    }
    rows.push(CheckRow {
        name: "balance_drift".into(),
        prediction: format!(
            "max ‖UᵀU − VᵀV − D₀‖ of {} (its {} limit: {:.3e}); conserved by neither (MATH §9)",
            optimizer.name(),
            cfg.flow.name(),
            run.summary.flow.max_balance_drift
        ),
        measured: run.summary.gd.max_balance_drift,
        predicted: "reported".into(),
        pass: None,
    });
    let sr = *setup.problem.target_sv.last().expect("rank >= 1");
    let phases = detect_phases(&run.flow, sr, settings.alignment_tol);
    let summary = CheckSummary {
        provenance: setup.provenance(),
        passed: rows.iter().all(|r| r.pass != Some(false)),
        check: settings,
        problem: ProblemInfo::new(&setup.problem),
        rows,
        phases,
        robustness: Vec::new(),
        total_seconds: start.elapsed().as_secs_f64(),
    };
    Ok(CheckResult { summary, run })
}

/// The fitted order of the distance at the horizon, ‖X_J − X(T)‖, against h over h, h/2, h/4
/// (the configured step and horizon; at a fixed time, where heavy ball's start-up transient,
/// decaying like β^j, has died out: MATH §9): a row expecting `expected` ± the order tolerance, or
/// reporting it where the optimiser warns that its limits do not describe it at this step.
fn order_against(
    setup: &Setup,
    optimizer: &dyn Optimizer,
    variant: FlowVariant,
    expected: f64,
    settings: &CheckSettings,
    warnings: &[String],
) -> Result<CheckRow> {
    let scale = optimizer.time_scale();
    let h0 = scale.per_step(setup.config.eta);
    let horizon = h0 * setup.config.steps as f64;
    let (mut logs, mut devs) = (Vec::new(), Vec::new());
    for h in [h0, h0 / 2.0, h0 / 4.0] {
        let mut s = setup.clone();
        s.config.eta = match scale {
            TimeScale::Eta => h,
            TimeScale::SqrtEta => h * h,
        };
        let steps = (horizon / h).round() as usize;
        if let Some(d) = final_distance(&s, &[&optimizer.name(), variant.name()], h, steps)? {
            logs.push(h.ln());
            devs.push(d.ln());
        }
    }
    let order = if devs.len() == 3 {
        slope(&logs, &devs)
    } else {
        f64::NAN
    };
    let applies = warnings.is_empty();
    Ok(CheckRow {
        name: format!("order_{}", variant.name()),
        prediction: format!(
            "{} tracks its {} limit with order {expected} in h = {} (‖X_J − X(T)‖ at h = {h0}, h/2, \
             h/4, T = {horizon}){}",
            optimizer.name(),
            variant.name(),
            match scale {
                TimeScale::Eta => "η",
                TimeScale::SqrtEta => "√η",
            },
            if applies {
                String::new()
            } else {
                format!("; reported only: {}", warnings.join("; "))
            }
        ),
        measured: order,
        predicted: format!("{expected} ± {}", settings.order_tol),
        pass: applies.then_some((order - expected).abs() <= settings.order_tol),
    })
}

/// ‖X_a(T) − X_b(T)‖ at T = steps·h between two named dynamics of the set-up's optimiser
/// (the method and one of its limits, or two limits), each solved on the grid of the method's
/// steps (what every kind of dynamics takes), or `None` when either did not complete.
fn final_distance(setup: &Setup, names: &[&str; 2], h: f64, steps: usize) -> Result<Option<f64>> {
    let optimizer = setup.optimizer()?;
    let (field, x0, eta) = (setup.field(), setup.start(), setup.config.eta);
    let grid = Times::Grid {
        dt: h,
        count: steps + 1,
    };
    let mut finals = Vec::new();
    for name in names {
        let dynamics = named(&optimizer, name, field.clone(), &x0, eta)
            .map_err(|why| Error::invalid("flow", name, why))?;
        let kept = dynamics.solve_kept(grid, &flow_opts(&setup.config), &|i| i == steps)?;
        if kept.end.status != Status::Completed {
            return Ok(None);
        }
        finals.push(field.product(&kept.states[0]));
    }
    Ok(Some((&finals[0] - &finals[1]).norm()))
}

/// Time for s_i to reach σ_i/2 on the closed form, against ln(σ_i/α² − 1)/(2σ_i).
fn incremental_learning(cfg: &Config, sv: &[f64], settings: &CheckSettings) -> Result<CheckRow> {
    let r = sv.len();
    let s0 = cfg.alpha * cfg.alpha;
    let p = Problem::aligned_factorisation(r, r, sv, &vec![s0; r]);
    let field = SensingField::from_problem(&p);
    let predicted: Vec<f64> = sv
        .iter()
        .map(|&s| (s / s0 - 1.0).ln() / (2.0 * s))
        .collect();
    let horizon = 1.2 * predicted.iter().copied().fold(0.0, f64::max);
    let dt = 0.002 / sv[0];
    let n = (horizon / dt).ceil() as usize;
    let steps: Vec<usize> = (0..=n).collect();
    let times: Vec<f64> = steps.iter().map(|&j| j as f64 * dt).collect();
    let opts = FlowOptions {
        atol: cfg.rtol * s0.sqrt() * 1e-2,
        ..cfg.flow_options()
    };
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
fn implicit_regularisation(setup: &Setup, sv: &[f64]) -> Result<Vec<CheckRow>> {
    let cfg = &setup.config;
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
        let s = setup.with_alpha(a)?;
        let (f, p) = (s.field(), &s.problem);
        let horizon = 2.0 * (sr / (a * a)).ln().max(1.0) / sr;
        let sol = solve_flow(
            f.as_ref(),
            &p.start_state(),
            &[0.0, horizon],
            &[0, 1],
            &flow_opts(&s.config),
        )?;
        let x = sol.trajectory.states.last().expect("start state");
        errors.push((f.product(x) - &p.x_star).norm() / p.x_star.norm());
        let s = product_singular_values(f.as_ref(), x);
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

/// MATH §5: the flow with E = ε‖X* − UVᵀ‖W/‖W‖ for ε in [`ROBUST_EPSILONS`], each run until
/// 3·ln(σ_r/α²)/σ_r.
pub fn robustness(setup: &Setup) -> Result<Vec<RobustnessPoint>> {
    let (cfg, problem) = (&setup.config, &setup.problem);
    let sr = *problem.target_sv.last().expect("rank >= 1");
    let budget = 3.0 * (sr / (cfg.alpha * cfg.alpha)).ln().max(1.0) / sr;
    let dt = budget / 2000.0;
    let norm = problem.x_star.norm();
    ROBUST_EPSILONS
        .iter()
        .map(|&eps| {
            let f = Perturbed::new(
                SensingField::from_problem(problem),
                Perturbation::new(PerturbationModel::Relative, eps, problem, cfg.seed),
            );
            let steps: Vec<usize> = (0..=2000).collect();
            let times: Vec<f64> = steps.iter().map(|&j| j as f64 * dt).collect();
            let sol = solve_flow(&f, &problem.start_state(), &times, &steps, &flow_opts(cfg))?;
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

/// MATH §8: where the gradient flow ends, is GD stable (η·λ_max ≤ 2)? When it is not, GD
/// cannot converge there: the central flow is run beside it, and the sharpness at GD's
/// two-step average and GD's time-averaged loss are compared with its predictions, over the
/// second half of the run (after the transient into the edge of stability).
fn stability(setup: &Setup) -> Result<Stability> {
    let cfg = &setup.config;
    let field = setup.field();
    let horizon = cfg.eta * cfg.steps as f64;
    let sol = solve_flow(
        field.as_ref(),
        &setup.start(),
        &[0.0, horizon],
        &[0, cfg.steps],
        &flow_opts(cfg),
    )?;
    let end = sol.trajectory.states.last().expect("the start at least");
    let top = top_eigenpairs(field.as_ref(), end, &[], &EigenOptions::default(), 0);
    let lambda = top.lambda_max().unwrap_or(f64::NAN);
    let ratio = cfg.eta * lambda / 2.0;
    let row = CheckRow {
        name: "stability_limit".into(),
        prediction: format!(
            "η·λ_max/2 where the gradient flow ends (t = {horizon}): above 1, GD cannot converge \
             there and the edge-of-stability rows follow (λ_max = {lambda:.6}, 2/η = {:.6})",
            2.0 / cfg.eta
        ),
        measured: ratio,
        predicted: "reported".into(),
        pass: None,
    };
    Ok(Stability { row, ratio })
}

/// Where the run stands against GD's stability limit: its row, and η·λ_max/2 (NaN unknown).
struct Stability {
    row: CheckRow,
    ratio: f64,
}

impl Stability {
    /// Past the limit: GD follows no gradient flow (MATH §8), and the rows that predict it
    /// does are not applicable.
    fn past(&self) -> bool {
        self.ratio > 1.0
    }
}

/// MATH §8: past the stability limit, the central flow's predictions (after the stability
/// row); before it, the stability row alone.
fn edge_of_stability(
    setup: &Setup,
    stability: Stability,
    settings: &CheckSettings,
    show_progress: bool,
) -> Result<Vec<CheckRow>> {
    let past = stability.past();
    let mut rows = vec![stability.row];
    if !past {
        return Ok(rows);
    }
    let Some(central) = setup.with_central_flow() else {
        rows.push(CheckRow {
            name: "eos_sharpness".into(),
            prediction: "the central flow needs a gradient field; this perturbation is not one"
                .into(),
            measured: f64::NAN,
            predicted: "not applicable".into(),
            pass: None,
        });
        return Ok(rows);
    };
    let r = run(
        &central,
        &RunExtras {
            progress: show_progress,
            ..RunExtras::default()
        },
    )?;
    rows.extend(central_rows(setup, &r, settings));
    Ok(rows)
}

/// The central flow's predictions against GD past the stability limit (MATH §8).
fn central_rows(setup: &Setup, r: &RunResult, settings: &CheckSettings) -> Vec<CheckRow> {
    let cfg = &setup.config;
    let horizon = cfg.eta * cfg.steps as f64;
    let mut rows = Vec::new();
    let late: Vec<f64> = r
        .gd_mean
        .iter()
        .filter(|rec| rec.t >= 0.5 * horizon)
        .filter_map(|rec| rec.sharpness())
        .collect();
    let mean_sharpness = late.iter().sum::<f64>() / late.len() as f64;
    let s = mean_sharpness * cfg.eta / 2.0;
    rows.push(CheckRow {
        name: "eos_sharpness".into(),
        prediction: format!(
            "the sharpness at GD's two-step average ½(x_j + x_(j+1)), over t ≥ {:.4}, settles at \
             2/η (measured: its mean·η/2, from {} records)",
            0.5 * horizon,
            late.len()
        ),
        measured: s,
        predicted: format!("1 ± {}", settings.eos_sharpness_tol),
        pass: verdict((s - 1.0).abs() <= settings.eos_sharpness_tol),
    });
    let summary = r.summary.central.as_ref();
    let eos = summary.and_then(|c| c.edge_of_stability.as_ref());
    let completed = r.summary.flow.status == Status::Completed;
    let loss_ratio = eos.map_or(f64::NAN, |e| e.predicted_loss / e.gd_mean_loss);
    rows.push(CheckRow {
        name: "eos_predicted_loss".into(),
        prediction: format!(
            "the central flow's f + tr Σ/η against GD's time-averaged loss over its last half \
             (measured: their ratio; central flow {})",
            match &r.summary.flow.status {
                Status::Failed { t, reason } => format!("failed at t = {t}: {reason}"),
                other => other.label().to_string(),
            }
        ),
        measured: loss_ratio,
        predicted: format!("1 ± {}", settings.eos_loss_tol),
        pass: verdict(completed && (loss_ratio - 1.0).abs() <= settings.eos_loss_tol),
    });
    let distance = summary.and_then(|c| c.distance_mean.as_ref());
    rows.push(CheckRow {
        name: "eos_distance_mean".into(),
        prediction: "‖X̄_j − X(t_j)‖/‖X*‖ between GD's two-step average and the central flow at \
                     the end (see gdflow run --flow central for the whole path)"
            .into(),
        measured: distance.map_or(f64::NAN, |d| d.final_distance / setup.problem.x_star.norm()),
        predicted: "reported".into(),
        pass: None,
    });
    rows
}
