//! MATH §3: the flow conserves D = UᵀU − VᵀV; GD changes it by exactly
//! η²(VᵀGᵀGV − UᵀGGᵀU) per step.

use gdflow::config::Method;
use gdflow::field::VectorField;
use gdflow::flow::{solve_flow, FlowOptions};
use gdflow::gd::{gradient_descent_with, GdOptions, Status};
use gdflow::record::balance;
use nalgebra::DMatrix;

use super::small_gaussian;

#[test]
fn flow_conserves_the_balance_to_solver_tolerance() {
    let p = small_gaussian(21);
    let field = VectorField::from_problem(&p);
    let x0 = p.start_state();
    let d0 = balance(&field, &x0);
    let steps: Vec<usize> = (0..=100).collect();
    let times: Vec<f64> = steps.iter().map(|&j| j as f64 * 0.2).collect();
    for (method, rtol) in [
        (Method::Tsit45, 1e-10),
        (Method::Bdf, 1e-10),
        (Method::Esdirk34, 1e-8),
    ] {
        let opts = FlowOptions::new(method, rtol, rtol * 1e-3);
        let sol = solve_flow(&field, &x0, &times, &steps, &opts).unwrap();
        assert_eq!(sol.trajectory.status, Status::Completed);
        let scale = p.x_star.norm();
        let worst = sol
            .trajectory
            .states
            .iter()
            .map(|x| (balance(&field, x) - &d0).norm())
            .fold(0.0, f64::max);
        // D changes only through solver error: of the order of rtol times the state size
        assert!(
            worst < 1e3 * rtol * scale,
            "{method:?}: balance drift {worst:e} at rtol {rtol:e}"
        );
    }
}

#[test]
fn gd_drift_equals_the_sum_of_the_per_step_identity() {
    let p = small_gaussian(22);
    let field = VectorField::from_problem(&p);
    let x0 = p.start_state();
    let eta = 0.05;
    let opts = GdOptions::new(eta, 300, 1);
    let mut ws = field.workspace();
    let mut predicted = balance(&field, &x0);
    let k = p.width();
    let mut f = vec![0.0; x0.len()];
    let traj = gradient_descent_with(&field, &x0, &opts, |j, _, x| {
        if j == opts.steps {
            return;
        }
        field.rhs(x, &mut f, &mut ws);
        let g: &DMatrix<f64> = ws.g();
        let (u, v) = field.split(x);
        let gv = g * v;
        let gtu = g.transpose() * u;
        let step: DMatrix<f64> = eta * eta * (gv.tr_mul(&gv) - gtu.tr_mul(&gtu));
        assert_eq!(step.shape(), (k, k));
        predicted += step;
    });
    assert_eq!(traj.status, Status::Completed);
    let observed = balance(&field, traj.states.last().unwrap());
    let d0 = balance(&field, &x0);
    let drift = (&observed - &d0).norm();
    let err = (&observed - &predicted).norm();
    assert!(drift > 1e-6, "GD should drift measurably: {drift:e}");
    assert!(
        err < 1e-12 * observed.norm().max(1.0),
        "observed D differs from the summed identity by {err:e} (drift {drift:e})"
    );
}

/// Batched GD streams the sensing matrix once per step for all step sizes; its trajectories
/// are the unbatched ones bit for bit (same sums in the same order), on a small problem and on
/// one large enough for the operator to split its work across threads.
#[test]
fn batched_gd_equals_separate_runs_bit_for_bit() {
    use gdflow::config::ConfigArgs;
    use gdflow::gd::{gradient_descent, gradient_descent_batch};
    use gdflow::problem::Problem;
    for (n, m) in [(7, 40), (40, 700)] {
        let args = ConfigArgs {
            n1: Some(n),
            n2: Some(n - 1),
            rank: Some(2),
            width: Some(3),
            measurements: Some(m),
            alpha: Some(0.1),
            ..Default::default()
        };
        let p = Problem::generate(&args.resolve().unwrap()).unwrap();
        let field = VectorField::from_problem(&p);
        let x0 = p.start_state();
        // different step counts (runs leave the block as they finish) and one diverging run
        let opts = [
            GdOptions::new(0.05, 60, 7),
            GdOptions::new(0.1, 30, 1),
            GdOptions::new(0.2, 45, 5),
            GdOptions::new(40.0, 50, 1),
        ];
        let batched = gradient_descent_batch(&field, &x0, &opts);
        for (o, b) in opts.iter().zip(&batched) {
            let single = gradient_descent(&field, &x0, o);
            assert_eq!(single.status, b.status, "η = {}", o.eta);
            assert_eq!(single.steps, b.steps);
            assert_eq!(single.states, b.states, "η = {}: states differ", o.eta);
        }
        assert!(matches!(batched[3].status, Status::Diverged { .. }));
    }
}
