//! DOP853: its order on the closed form (MATH §4) from fixed steps, its dense output's order,
//! and what its tolerance promises on the issue-13 protocol problem against a far tighter
//! solve.

use gdflow::analysis::fit::slope;
use gdflow::config::{ConfigArgs, ErrorScale, Method};
use gdflow::dynamics::flow::dop853::{Dop853, ORDER};
use gdflow::dynamics::flow::{solve_flow_with, FlowOptions, Times};
use gdflow::experiments::{Command, Setup};
use gdflow::field::{Field, SensingField};
use gdflow::problem::Problem;

const SIGMA: [f64; 3] = [2.0, 0.5, 0.0];
const S0: [f64; 3] = [0.05, 0.1, 0.3];

fn exact(sigma: f64, s0: f64, t: f64) -> f64 {
    if sigma == 0.0 {
        s0 / (1.0 + 2.0 * s0 * t)
    } else {
        sigma / (1.0 + (sigma / s0 - 1.0) * (-2.0 * sigma * t).exp())
    }
}

/// Largest |s_j − exact| at the step ends (`dense = false`) or at the midpoints of the steps
/// from the dense output, after `n` fixed steps to t = 2.
fn fixed_step_error(n: usize, dense: bool) -> f64 {
    let p = Problem::aligned_factorisation(4, 3, &SIGMA, &S0);
    let field = SensingField::from_problem(&p);
    let h = 2.0 / n as f64;
    let mut s = Dop853::new(
        &field,
        0.0,
        &p.start_state(),
        1.0,
        1.0,
        ErrorScale::Componentwise,
        2.0,
    );
    let mut worst: f64 = 0.0;
    let mut y = vec![0.0; field.state_len()];
    for _ in 0..n {
        s.step_fixed(h);
        let t = if dense {
            s.interpolate(s.t() - 0.5 * h, &mut y);
            s.t() - 0.5 * h
        } else {
            y.copy_from_slice(s.y());
            s.t()
        };
        let x = field.product(&y);
        for j in 0..3 {
            worst = worst.max((x[(j, j)] - exact(SIGMA[j], S0[j], t)).abs());
        }
    }
    worst
}

/// The fitted slope of log error against log h is the declared order 8 (±0.3), at the step
/// ends; the dense output between them converges at its own order 7 or better.
#[test]
fn dop853_converges_at_its_declared_order_on_the_closed_form() {
    // in the asymptotic range: errors from 3e-10 down to 1e-13, above rounding
    let ns = [12, 16, 22, 32];
    let hs: Vec<f64> = ns.iter().map(|&n| (2.0 / n as f64).ln()).collect();
    let ends: Vec<f64> = ns
        .iter()
        .map(|&n| fixed_step_error(n, false).ln())
        .collect();
    let order = slope(&hs, &ends);
    assert!(
        (order - ORDER as f64).abs() <= 0.3,
        "observed order {order:.3} (errors {:?})",
        ends.iter().map(|e| e.exp()).collect::<Vec<_>>()
    );
    let mids: Vec<f64> = ns.iter().map(|&n| fixed_step_error(n, true).ln()).collect();
    let dense = slope(&hs, &mids);
    assert!(dense >= 7.0 - 0.3, "dense output order {dense:.3}");
}

/// The issue-13 protocol problem (n1 = n2 = 50, r = 3, k = 10, m = 1500, α = 1e-8, flow to
/// t = 100, outputs every 0.25, pure relative tolerance): at rtol 1e-8 DOP853 needs at most
/// 1700 right-hand sides and stays within 10·rtol·‖X*‖ of a 10⁴× tighter solve at every
/// output time.
#[test]
fn dop853_keeps_its_tolerance_at_every_output_of_the_protocol_problem() {
    let args = ConfigArgs {
        n1: Some(50),
        n2: Some(50),
        rank: Some(3),
        width: Some(10),
        measurements: Some(1500),
        alpha: Some(1e-8),
        ..Default::default()
    };
    let setup = Setup::new(&args, Command::Run, false).unwrap();
    let field = setup.field();
    let x0 = setup.start();
    let times = Times::Grid {
        dt: 0.25,
        count: 401,
    };
    let solve = |rtol: f64| {
        let mut xs = Vec::new();
        let (status, stats) = solve_flow_with(
            field.as_ref(),
            &x0,
            times,
            &FlowOptions::new(Method::Dop853, rtol, 1e-20),
            &mut |_, _, y| xs.push(field.product(y)),
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(status, gdflow::dynamics::Status::Completed);
        (xs, stats)
    };
    let rtol = 1e-8;
    let (xs, stats) = solve(rtol);
    let (reference, _) = solve(rtol * 1e-4);
    let norm = setup.problem.x_star.norm();
    let worst = xs
        .iter()
        .zip(&reference)
        .map(|(a, b)| (a - b).norm())
        .fold(0.0, f64::max);
    assert!(
        worst <= 10.0 * rtol * norm,
        "{worst:e} from the reference against 10·rtol·‖X*‖ = {:e}",
        10.0 * rtol * norm
    );
    assert!(stats.rhs_evals <= 1700, "{} rhs", stats.rhs_evals);
}

/// Stiffness that passes must let the steps grow again. A collapsing component
/// (σ = 0, s' = −2s², s(0) = 1000) makes the problem stiff at the start (ρ ≈ 4s = 4000) and
/// not at all from t ≈ 1 on (ρ ≈ 2/t); capped by the start's stiffness for good, the steps
/// to t = 50 would number 4000·50/4.5 ≈ 44 000.
#[test]
fn dop853_steps_grow_back_when_a_transient_stiffness_has_passed() {
    let p = Problem::aligned_factorisation(4, 3, &[2.0, 0.5, 0.0], &[0.05, 0.1, 1000.0]);
    let field = SensingField::from_problem(&p);
    let t_end = 50.0;
    let mut s = Dop853::new(
        &field,
        0.0,
        &p.start_state(),
        1e-8,
        1e-12,
        ErrorScale::Componentwise,
        t_end,
    );
    let mut steps_late = 0;
    while s.t() < t_end {
        s.step(t_end).unwrap();
        if s.t() > 10.0 {
            steps_late += 1;
        }
    }
    let x = field.product(s.y());
    assert!((x[(2, 2)] - exact(0.0, 1000.0, t_end)).abs() < 1e-6 * exact(0.0, 1000.0, t_end));
    // from t = 10 the stiffness is at most 4 (the σ = 2 component's rate), so h ≈ 1 is
    // stable; the memory fades over a few hundred steps, so a few hundred steps are expected
    // here, against the ~20 000 of a memory that never fades
    assert!(
        steps_late < 1000,
        "{steps_late} steps over [10, 50]; {} in all",
        s.steps
    );
}
