//! The optimisers of MATH §9: their iterates against plain loops written here (dense 𝒜, no
//! library field), their fitted orders against their plain and modified limits, and their
//! parameters refused before any work.

use std::sync::Arc;

use gdflow::config::{ConfigArgs, SweepArgs};
use gdflow::dynamics::flow::{FlowOptions, Method, Times};
use gdflow::dynamics::optimizer::{self, Context, Optimizer, Settings};
use gdflow::dynamics::{Driver, FlowVariant, RunOptions, Status};
use gdflow::error::Error;
use gdflow::experiments::{check_config, run_config, sweep_config};
use gdflow::field::{Field, SensingField};
use gdflow::problem::Problem;
use nalgebra::DMatrix;

use super::{small_gaussian, Plain};

/// The library's iterates of `opt` at step `eta` for `steps` steps, from the driver the
/// experiments step methods with; the same method as a trajectory of its own
/// ([`optimizer::Discrete`], through the `Dynamics` trait its limits share) must yield them
/// exactly.
fn library_iterates(
    p: &Problem,
    opt: &Arc<dyn Optimizer>,
    eta: f64,
    steps: usize,
) -> Vec<Vec<f64>> {
    let field = SensingField::from_problem(p);
    let traj = Driver::new(
        &field,
        opt.stepper(eta),
        &p.start_state(),
        RunOptions::new(eta, steps, 1),
    )
    .run(&mut |_: &gdflow::dynamics::Iterate<'_>| {})
    .pop()
    .unwrap();
    assert_eq!(traj.status, Status::Completed);
    let h = opt.time_scale().per_step(eta);
    let times: Vec<f64> = (0..=steps).map(|j| j as f64 * h).collect();
    let method =
        optimizer::named(opt, &opt.name(), Arc::new(field), &p.start_state(), eta).unwrap();
    assert_eq!(method.name(), opt.name());
    let kept = method
        .solve_kept(
            Times::List(&times),
            &FlowOptions::new(Method::Dop853, 1e-8, 1e-12),
            &|_| true,
        )
        .unwrap();
    assert_eq!(kept.end.status, Status::Completed);
    assert_eq!(
        kept.states,
        traj.states,
        "{}: Discrete against the driver",
        opt.name()
    );
    traj.states
}

fn assert_same(name: &str, lib: &[Vec<f64>], plain: &[Vec<f64>]) {
    assert_eq!(lib.len(), plain.len(), "{name}: number of iterates");
    for (j, (a, b)) in lib.iter().zip(plain).enumerate() {
        let scale = b.iter().fold(1.0f64, |m, v| m.max(v.abs()));
        let diff = a
            .iter()
            .zip(b)
            .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()));
        assert!(
            diff <= 1e-12 * scale,
            "{name}: iterate {j} differs by {diff:e} from the plain loop"
        );
    }
}

fn build(name: &str, settings: Settings) -> Arc<dyn Optimizer> {
    let ctx = Context {
        sigma_r: 1.0,
        sigma_1: 1.0,
        eta: 0.05,
        m: 0,
        seed: 0,
        replicas: 1,
    };
    optimizer::build(name, &settings, &ctx).unwrap()
}

const STEPS: usize = 60;
const ETA: f64 = 0.05;

#[test]
fn scaled_gd_iterates_equal_a_plain_loop() {
    let p = small_gaussian(3);
    let lambda = 0.02;
    let opt = build(
        "scaled-gd",
        Settings {
            damping: Some(lambda),
            ..Default::default()
        },
    );
    let pl = Plain::of(&p);
    let mut x = p.start_state();
    let mut plain = vec![x.clone()];
    let eye = DMatrix::<f64>::identity(pl.k, pl.k);
    for _ in 0..STEPS {
        let (u, v) = pl.split(&x);
        let g = pl.g(&u, &v);
        let pv = (v.transpose() * &v + &eye * lambda).try_inverse().unwrap();
        let pu = (u.transpose() * &u + &eye * lambda).try_inverse().unwrap();
        let u2 = &u - (&g * &v * pv) * ETA;
        let v2 = &v - (g.transpose() * &u * pu) * ETA;
        x = Plain::join(&u2, &v2);
        plain.push(x.clone());
    }
    assert_same("scaled-gd", &library_iterates(&p, &opt, ETA, STEPS), &plain);
}

#[test]
fn alternating_gd_iterates_equal_a_plain_loop() {
    let p = small_gaussian(4);
    let opt = build("alternating-gd", Settings::default());
    let pl = Plain::of(&p);
    let mut x = p.start_state();
    let mut plain = vec![x.clone()];
    for _ in 0..STEPS {
        let (u, v) = pl.split(&x);
        let u2 = &u - pl.g(&u, &v) * &v * ETA;
        let v2 = &v - pl.g(&u2, &v).transpose() * &u2 * ETA;
        x = Plain::join(&u2, &v2);
        plain.push(x.clone());
    }
    assert_same(
        "alternating-gd",
        &library_iterates(&p, &opt, ETA, STEPS),
        &plain,
    );
}

/// x_{j+1} = x_j − η∇f(x_j) + β(x_j − x_{j−1}), x_{−1} = x_0.
fn heavy_ball_loop(pl: &Plain, x0: &[f64], eta: f64, beta: f64) -> Vec<Vec<f64>> {
    let (mut prev, mut x) = (x0.to_vec(), x0.to_vec());
    let mut out = vec![x.clone()];
    for _ in 0..STEPS {
        let g = pl.grad(&x);
        let next: Vec<f64> = (0..x.len())
            .map(|i| x[i] - eta * g[i] + beta * (x[i] - prev[i]))
            .collect();
        prev = std::mem::replace(&mut x, next);
        out.push(x.clone());
    }
    out
}

#[test]
fn heavy_ball_iterates_equal_a_plain_loop() {
    let p = small_gaussian(5);
    let pl = Plain::of(&p);
    let beta = 0.6;
    let opt = build(
        "heavy-ball",
        Settings {
            momentum: Some(beta),
            ..Default::default()
        },
    );
    assert_same(
        "heavy-ball (β)",
        &library_iterates(&p, &opt, ETA, STEPS),
        &heavy_ball_loop(&pl, &p.start_state(), ETA, beta),
    );
    let gamma = 2.0;
    let opt = build(
        "heavy-ball",
        Settings {
            friction: Some(gamma),
            ..Default::default()
        },
    );
    assert_same(
        "heavy-ball (γ)",
        &library_iterates(&p, &opt, ETA, STEPS),
        &heavy_ball_loop(&pl, &p.start_state(), ETA, 1.0 - gamma * ETA.sqrt()),
    );
}

#[test]
fn nesterov_iterates_equal_a_plain_loop() {
    let p = small_gaussian(6);
    let pl = Plain::of(&p);
    let opt = build("nesterov", Settings::default());
    let mut x = p.start_state();
    let mut y = x.clone();
    let mut plain = vec![x.clone()];
    for j in 0..STEPS {
        let g = pl.grad(&y);
        let next: Vec<f64> = (0..x.len()).map(|i| y[i] - ETA * g[i]).collect();
        let c = j as f64 / (j as f64 + 3.0);
        y = (0..x.len())
            .map(|i| next[i] + c * (next[i] - x[i]))
            .collect();
        x = next;
        plain.push(x.clone());
    }
    assert_same("nesterov", &library_iterates(&p, &opt, ETA, STEPS), &plain);
}

#[test]
fn heavy_ball_at_zero_momentum_is_gd() {
    let p = small_gaussian(7);
    let hb = build(
        "heavy-ball",
        Settings {
            momentum: Some(0.0),
            ..Default::default()
        },
    );
    let gd = build("gd", Settings::default());
    let a = library_iterates(&p, &hb, ETA, STEPS);
    let b = library_iterates(&p, &gd, ETA, STEPS);
    assert_eq!(a, b, "β = 0 steps x + ηF + 0·(x − x₋), GD's step exactly");
}

/// The problem of MATH §9's check: 8×7, r 2, k 3, m 60, α 0.3, T 6.
fn order_args(optimizer: &str, flow: FlowVariant, eta: f64, steps: usize) -> ConfigArgs {
    ConfigArgs {
        eta: Some(eta),
        steps: Some(steps),
        record_every: Some(steps),
        flow: Some(flow),
        optimizer: Some(optimizer.into()),
        rtol: Some(1e-11),
        atol: Some(1e-14),
        ..super::math8_args(0.3)
    }
}

/// Least-squares slope of ln dev against ln h.
fn fitted_order(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    let (xs, ys): (Vec<f64>, Vec<f64>) = points.iter().map(|(h, d)| (h.ln(), d.ln())).unzip();
    let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
    let sxy: f64 = xs.iter().zip(&ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let sxx: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
    sxy / sxx
}

const HORIZON: f64 = 6.0;

/// ‖X_J − X(t_J)‖ at t_J = T for each step size, against h = η (or √η), and the fitted order.
fn order(
    optimizer: &str,
    flow: FlowVariant,
    hs: &[f64],
    sqrt_time: bool,
    set: impl Fn(&mut ConfigArgs),
) -> f64 {
    let points: Vec<(f64, f64)> = hs
        .iter()
        .map(|&h| {
            let eta = if sqrt_time { h * h } else { h };
            let steps = (HORIZON / h).round() as usize;
            let mut args = order_args(optimizer, flow, eta, steps);
            set(&mut args);
            let r = run_config(&args).unwrap();
            assert_eq!(
                r.summary.gd.status,
                Status::Completed,
                "{optimizer} at η = {eta}"
            );
            assert_eq!(
                r.summary.flow.status,
                Status::Completed,
                "{optimizer}'s limit"
            );
            let d = r.summary.distance.expect("common times").final_distance;
            (h, d)
        })
        .collect();
    let p = fitted_order(&points);
    eprintln!("{optimizer} {} order {p:.3}: {points:?}", flow.name());
    p
}

const ETAS: [f64; 4] = [0.04, 0.02, 0.01, 0.005];
const ROOTS: [f64; 4] = [0.2, 0.1, 0.05, 0.025];

fn assert_within(what: &str, got: f64, want: f64, tol: f64) {
    assert!(
        (got - want).abs() <= tol,
        "{what}: fitted order {got:.3}, expected {want} ± {tol}"
    );
}

#[test]
fn scaled_gd_orders_one_and_two() {
    let none = |_: &mut ConfigArgs| {};
    let p = order("scaled-gd", FlowVariant::Plain, &ETAS, false, none);
    assert_within("scaled-gd, plain", p, 1.0, 0.15);
    let m = order("scaled-gd", FlowVariant::Modified, &ETAS, false, none);
    assert_within("scaled-gd, modified", m, 2.0, 0.2);
}

#[test]
fn alternating_gd_orders_one_and_two() {
    let none = |_: &mut ConfigArgs| {};
    let p = order("alternating-gd", FlowVariant::Plain, &ETAS, false, none);
    assert_within("alternating-gd, plain", p, 1.0, 0.15);
    let m = order("alternating-gd", FlowVariant::Modified, &ETAS, false, none);
    assert_within("alternating-gd, modified", m, 2.0, 0.2);
}

#[test]
fn heavy_ball_orders_one_and_two_at_fixed_momentum() {
    let beta = |a: &mut ConfigArgs| a.momentum = Some(0.5);
    let p = order("heavy-ball", FlowVariant::Plain, &ETAS, false, beta);
    assert_within("heavy-ball β = 0.5, plain", p, 1.0, 0.15);
    let m = order("heavy-ball", FlowVariant::Modified, &ETAS, false, beta);
    assert_within("heavy-ball β = 0.5, modified", m, 2.0, 0.2);
}

#[test]
fn heavy_ball_at_critical_friction_order_one_in_root_eta() {
    let gamma = |a: &mut ConfigArgs| a.friction = Some(1.0);
    let p = order("heavy-ball", FlowVariant::Plain, &ROOTS, true, gamma);
    assert_within("heavy-ball γ = 1, second-order limit", p, 1.0, 0.15);
}

#[test]
fn nesterov_order_one_in_root_eta() {
    let p = order("nesterov", FlowVariant::Plain, &ROOTS, true, |_| {});
    assert_within("nesterov, second-order limit", p, 1.0, 0.15);
}

#[test]
fn the_limits_time_is_the_optimizers() {
    let mut args = order_args("heavy-ball", FlowVariant::Plain, 0.01, 20);
    args.friction = Some(1.0);
    args.record_every = Some(5);
    let r = run_config(&args).unwrap();
    for rec in r.gd.iter().chain(&r.flow) {
        let t = rec.step as f64 * 0.1;
        assert!(
            (rec.t - t).abs() < 1e-12,
            "t = j√η: {} at step {}",
            rec.t,
            rec.step
        );
    }
    let csv = String::from_utf8(gdflow::results::run::trajectory_csv(&r).unwrap()).unwrap();
    let names: std::collections::BTreeSet<&str> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert_eq!(names, ["flow", "heavy-ball"].into_iter().collect());
    assert_eq!(r.summary.optimizer.name, "heavy-ball");
    assert_eq!(r.summary.optimizer.parameters["friction"], 1.0);
}

fn refused_key(args: ConfigArgs) -> String {
    match args.resolve() {
        Err(Error::InvalidConfig { field, .. }) => field,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn bad_parameters_are_refused_naming_the_key() {
    let with = |name: &str, set: fn(&mut ConfigArgs)| {
        let mut a = ConfigArgs {
            optimizer: Some(name.into()),
            ..Default::default()
        };
        set(&mut a);
        refused_key(a)
    };
    assert_eq!(with("heavy-ball", |a| a.momentum = Some(1.0)), "momentum");
    assert_eq!(with("heavy-ball", |a| a.momentum = Some(-0.1)), "momentum");
    assert_eq!(with("heavy-ball", |a| a.friction = Some(0.0)), "friction");
    assert_eq!(with("heavy-ball", |a| a.friction = Some(-1.0)), "friction");
    // γ√η ≥ 1 would make β negative
    assert_eq!(
        with("heavy-ball", |a| {
            a.friction = Some(10.0);
            a.eta = Some(0.05)
        }),
        "friction"
    );
    assert_eq!(with("heavy-ball", |_| {}), "momentum");
    assert_eq!(with("scaled-gd", |a| a.damping = Some(-1e-3)), "damping");
    assert_eq!(with("gd", |a| a.momentum = Some(0.5)), "momentum");
    assert_eq!(with("scaled-gd", |a| a.friction = Some(1.0)), "friction");
    assert_eq!(with("nesterov", |a| a.damping = Some(0.1)), "damping");
    assert_eq!(with("adam", |_| {}), "optimizer");
    // limits an optimiser does not have
    assert_eq!(
        with("nesterov", |a| a.flow = Some(FlowVariant::Modified)),
        "flow"
    );
    assert_eq!(
        with("heavy-ball", |a| {
            a.friction = Some(1.0);
            a.flow = Some(FlowVariant::Modified)
        }),
        "flow"
    );
    assert_eq!(
        with("scaled-gd", |a| a.flow = Some(FlowVariant::Central)),
        "flow"
    );
    assert_eq!(
        with("alternating-gd", |a| a.symmetric = Some(true)),
        "optimizer"
    );
    // a sweep compares with plain and modified limits at t = jη: not Nesterov's
    let args = ConfigArgs {
        optimizer: Some("nesterov".into()),
        ..Default::default()
    };
    match sweep_config(&args, &Default::default()) {
        Err(Error::InvalidConfig { field, .. }) => assert_eq!(field, "optimizer"),
        other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
    }
    // the stability bisection is GD's
    let args = ConfigArgs {
        optimizer: Some("scaled-gd".into()),
        ..Default::default()
    };
    let sweep = SweepArgs {
        stability_steps: Some(100),
        ..Default::default()
    };
    match sweep_config(&args, &sweep) {
        Err(Error::InvalidConfig { field, .. }) => assert_eq!(field, "stability_steps"),
        other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn check_tests_an_optimizers_orders() {
    for (name, set) in [
        (
            "heavy-ball",
            (|a: &mut ConfigArgs| a.momentum = Some(0.5)) as fn(&mut ConfigArgs),
        ),
        ("alternating-gd", |_: &mut ConfigArgs| {}),
        ("nesterov", |_: &mut ConfigArgs| {}),
    ] {
        let mut args = order_args(name, FlowVariant::Plain, 0.02, 300);
        args.flow = None;
        args.record_every = None;
        args.rtol = None;
        args.atol = None;
        set(&mut args);
        if name == "nesterov" {
            args.eta = Some(0.01);
            args.steps = Some(60);
        }
        let c = check_config(&args, &Default::default()).unwrap();
        let rows: Vec<&str> = c.summary.rows.iter().map(|r| r.name.as_str()).collect();
        let want: &[&str] = if name == "nesterov" {
            &["order_plain", "balance_drift"]
        } else {
            &["order_plain", "order_modified", "balance_drift"]
        };
        assert_eq!(rows, want, "{name}");
        assert!(c.summary.passed, "{name}: {:#?}", c.summary.rows);
    }
}

#[test]
fn a_sweep_of_heavy_ball_shows_its_orders_at_the_final_time() {
    let mut args = order_args("heavy-ball", FlowVariant::Plain, 0.01, 1);
    args.eta = None;
    args.steps = None;
    args.record_every = None;
    args.flow = None;
    args.momentum = Some(0.5);
    let sweep = SweepArgs {
        etas: Some(ETAS.to_vec()),
        horizon: Some(HORIZON),
        ..Default::default()
    };
    let s = sweep_config(&args, &sweep).unwrap();
    let at = |f: fn(&gdflow::results::sweep::SweepPoint) -> f64| -> Vec<(f64, f64)> {
        s.summary.points.iter().map(|p| (p.eta, f(p))).collect()
    };
    let plain = fitted_order(&at(|p| p.final_dev));
    let modified = fitted_order(&at(|p| p.final_dev_modified));
    assert_within("sweep, heavy ball β = 0.5, final_dev", plain, 1.0, 0.15);
    assert_within("sweep, heavy ball, final_dev_modified", modified, 2.0, 0.2);
    // the same distances as `run` measures at T
    for p in &s.summary.points {
        let mut a = order_args("heavy-ball", FlowVariant::Modified, p.eta, p.steps);
        a.momentum = Some(0.5);
        let r = run_config(&a).unwrap();
        let d = r.summary.distance.unwrap().final_distance;
        assert!(
            (d - p.final_dev_modified).abs() <= 1e-3 * d,
            "η = {}: run {d:e}, sweep {:e}",
            p.eta,
            p.final_dev_modified
        );
    }
    let csv = String::from_utf8(gdflow::results::sweep::sweep_csv(&s.summary).unwrap()).unwrap();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    assert!(header.contains(&"final_dev") && header.contains(&"final_dev_modified"));
    assert!(
        s.summary.stability.is_none(),
        "GD's stability limit is not heavy ball's"
    );
}

#[test]
fn a_singular_preconditioner_fails_the_run_without_nan() {
    let mut p = small_gaussian(8);
    // a zero column in V makes VᵀV singular, and λ = 0 leaves it so
    p.v0.column_mut(0).fill(0.0);
    let opt = build(
        "scaled-gd",
        Settings {
            damping: Some(0.0),
            ..Default::default()
        },
    );
    let field = SensingField::from_problem(&p);
    let traj = Driver::new(
        &field,
        opt.stepper(0.1),
        &p.start_state(),
        RunOptions::new(0.1, 10, 1),
    )
    .run(&mut |_: &gdflow::dynamics::Iterate<'_>| {})
    .pop()
    .unwrap();
    match &traj.status {
        Status::Failed { reason, .. } => assert!(reason.contains("damping"), "{reason}"),
        other => panic!("expected a failure, got {other:?}"),
    }
    assert!(traj.states.iter().flatten().all(|v| v.is_finite()));
    let _ = field.state_len();
}

/// Every dynamics is named from one place: the optimiser's own name gives its method, a limit's
/// name its limit; a limit it has not, or a time its iterates never reach, is refused.
#[test]
fn dynamics_are_named_and_refused_by_name() {
    let p = small_gaussian(1);
    let field: Arc<dyn Field> = Arc::new(SensingField::from_problem(&p));
    let x0 = p.start_state();
    let nesterov = build("nesterov", Settings::default());
    let flow = optimizer::named(&nesterov, "plain", field.clone(), &x0, ETA).unwrap();
    assert_eq!(flow.name(), "flow");
    let why = optimizer::named(&nesterov, "modified", field.clone(), &x0, ETA)
        .err()
        .unwrap();
    assert!(why.contains("no modified limit"), "{why}");
    let why = optimizer::named(&nesterov, "gd", field.clone(), &x0, ETA)
        .err()
        .unwrap();
    assert!(
        why.contains("neither nesterov nor one of its limits"),
        "{why}"
    );
    // Nesterov's iterates sit at t = j√η: a time between two of them is no output of it
    let method = optimizer::named(&nesterov, "nesterov", field, &x0, ETA).unwrap();
    let opts = FlowOptions::new(Method::Dop853, 1e-8, 1e-12);
    let h = ETA.sqrt();
    let kept = method
        .solve_kept(Times::List(&[0.0, 3.0 * h]), &opts, &|_| true)
        .unwrap();
    assert_eq!(kept.states.len(), 2);
    let err = method
        .solve_kept(Times::List(&[0.5 * h]), &opts, &|_| true)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("times") && err.contains("j·h"), "{err}");
    let err = method
        .solve_kept(Times::List(&[2.0 * h, h]), &opts, &|_| true)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("ascend"), "{err}");
}
