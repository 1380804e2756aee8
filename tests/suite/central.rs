//! The pieces of the central flow (MATH §8): the third derivative g_ab against finite
//! differences of Hessian–vector products, the eigen-solver against dense eigendecompositions,
//! the semidefinite problem against its optimality conditions and the p = 1 closed form.

use gdflow::config::ConfigArgs;
use gdflow::dynamics::central::{project_psd, solve_sdp, KMap};
use gdflow::dynamics::sharpness::{top_eigenpairs, Carry, EigenOptions, TopEigen, Trail};
use gdflow::field::{Field, Perturbation, PerturbationModel, Perturbed, SensingField};
use gdflow::problem::Problem;
use nalgebra::{DMatrix, SymmetricEigen};

use super::{random_state, small_gaussian, small_symmetric};

fn hvp(field: &dyn Field, x: &[f64], v: &[f64]) -> Vec<f64> {
    let mut out = vec![0.0; x.len()];
    field.hvp(x, v, &mut out, &mut field.workspace());
    out
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// g_uw = D³f[u, w, ·] = ∇_x(uᵀ∇²f(x) w), with g_uw = −D²F[u, w]: every component against a
/// central difference of uᵀH(x ± h e_j)w, for the sensing field, the symmetric one and a
/// perturbed (gradient) one.
#[test]
fn third_derivative_matches_finite_differences_of_hessian_vector_products() {
    let p = small_gaussian(41);
    let sym = small_symmetric();
    let fields: Vec<(Box<dyn Field>, Vec<f64>)> = vec![
        (
            Box::new(SensingField::from_problem(&p)),
            random_state(&p, 1, 0.5),
        ),
        (
            Box::new(Perturbed::new(
                SensingField::from_problem(&p),
                Perturbation::new(PerturbationModel::Sensing, 0.0, &p, 3),
            )),
            random_state(&p, 2, 0.5),
        ),
        (
            Box::new(SensingField::from_problem(&sym)),
            random_state(&sym, 3, 0.5)[..sym.n1() * sym.width()].to_vec(),
        ),
    ];
    for (field, x) in &fields {
        let n = x.len();
        let u: Vec<f64> = (0..n).map(|i| ((i * 7 % 5) as f64 - 2.0) / 3.0).collect();
        let w: Vec<f64> = (0..n).map(|i| ((i * 3 % 7) as f64 - 3.0) / 4.0).collect();
        let mut d2 = vec![0.0; n];
        field.second_derivative(x, &u, &w, &mut d2, &mut field.workspace());
        let g: Vec<f64> = d2.iter().map(|v| -v).collect();
        let h = 1e-5;
        let mut worst: f64 = 0.0;
        let mut scale: f64 = 0.0;
        for j in 0..n {
            let (mut xp, mut xm) = (x.clone(), x.clone());
            xp[j] += h;
            xm[j] -= h;
            let fd = (dot(&u, &hvp(field.as_ref(), &xp, &w))
                - dot(&u, &hvp(field.as_ref(), &xm, &w)))
                / (2.0 * h);
            worst = worst.max((fd - g[j]).abs());
            scale = scale.max(g[j].abs());
        }
        assert!(
            worst <= 1e-7 * scale.max(1.0),
            "{}: g against central differences {worst:e} (scale {scale:e})",
            field.describe()
        );
        // and it is symmetric in u, w
        let mut d2t = vec![0.0; n];
        field.second_derivative(x, &w, &u, &mut d2t, &mut field.workspace());
        let asym = d2
            .iter()
            .zip(&d2t)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(asym <= 1e-12 * scale.max(1.0), "{asym:e}");
    }
}

fn dense_hessian(field: &dyn Field, x: &[f64]) -> DMatrix<f64> {
    let n = x.len();
    let mut h = DMatrix::zeros(n, n);
    let mut e = vec![0.0; n];
    for j in 0..n {
        e[j] = 1.0;
        h.column_mut(j).copy_from_slice(&hvp(field, x, &e));
        e[j] = 0.0;
    }
    0.5 * (&h + h.transpose())
}

fn sorted_eigenvalues(h: DMatrix<f64>) -> Vec<f64> {
    let mut l: Vec<f64> = SymmetricEigen::new(h).eigenvalues.iter().copied().collect();
    l.sort_by(|a, b| b.total_cmp(a));
    l
}

/// The top three eigenvalues against a dense eigendecomposition: at a balanced minimum of
/// plain factorisation with σ_1 = σ_2 (a repeated top eigenvalue), and on a Gaussian problem
/// near the saddle at the origin (negative eigenvalues larger in magnitude).
#[test]
fn eigen_solver_matches_dense_eigendecompositions() {
    // X* = diag(1, 1, 0.5) on 4×3, U = V = √X* on the first three coordinates, k = 3
    let sv = [1.0, 1.0, 0.5];
    let p = Problem::aligned_factorisation(4, 3, &sv, &sv);
    let field = SensingField::from_problem(&p);
    let x = p.start_state();
    let dense = sorted_eigenvalues(dense_hessian(&field, &x));
    assert!((dense[0] - dense[1]).abs() < 1e-12, "repeated: {dense:?}");
    let g = small_gaussian(43);
    let gfield = SensingField::from_problem(&g);
    let near_saddle = random_state(&g, 4, 1e-3);
    let gdense = sorted_eigenvalues(dense_hessian(&gfield, &near_saddle));
    assert!(gdense.last().unwrap().abs() > gdense[0] * 0.9, "{gdense:?}");
    for (f, x, want) in [
        (&field as &dyn Field, &x, &dense),
        (&gfield as &dyn Field, &near_saddle, &gdense),
    ] {
        let top = top_eigenpairs(
            f,
            x,
            &[],
            &EigenOptions {
                count: 3,
                block: 3,
                tol: 1e-10,
                ..EigenOptions::default()
            },
            7,
        );
        assert!(top.converged);
        for (a, b) in top.values.iter().zip(want.iter()) {
            assert!((a - b).abs() <= 1e-8 * want[0].abs(), "{a} vs {b}");
        }
        // and the vectors are eigenvectors
        for (l, v) in top.values.iter().zip(&top.vectors) {
            let hv = hvp(f, x, v);
            let r: f64 = hv
                .iter()
                .zip(v)
                .map(|(h, q)| (h - l * q).powi(2))
                .sum::<f64>()
                .sqrt();
            assert!(r <= 1e-9 * want[0].abs(), "residual {r:e}");
        }
    }
}

/// One top pair to 1e-10, warm-started with the next Ritz vector and `history` earlier ones.
fn warm_options(history: usize) -> EigenOptions {
    EigenOptions {
        count: 1,
        block: 2,
        tol: 1e-10,
        max_hvps: 800,
        max_basis: 24,
        warm_extra: 1,
        history,
        ..EigenOptions::default()
    }
}

/// `solved` converged to the top eigenpair of `hessian` (λ_max `lambda`): its value and its
/// residual ‖Hv − θv‖ within 1e-9 of λ_max.
fn assert_top_pair(hessian: &DMatrix<f64>, lambda: f64, solved: &TopEigen, what: &str) {
    assert!(solved.converged, "{what}");
    assert!(
        (solved.values[0] - lambda).abs() <= 1e-9 * lambda.abs(),
        "{what}: {} vs {lambda}",
        solved.values[0]
    );
    let v = &solved.vectors[0];
    let hv = DMatrix::from_column_slice(v.len(), 1, v);
    let r = (hessian * &hv - &hv * solved.values[0]).norm();
    assert!(r <= 1e-9 * lambda.abs(), "{what}: residual {r:e}");
}

/// Along a trajectory (GD steps), an eigen-solve started from the last call's Ritz vectors
/// and the top vectors of earlier calls (as the central flow starts its own) returns the dense
/// top eigenpair to its tolerance at every state, also when those earlier vectors are
/// misleading (the bottom eigenvector, repeated); and the earlier vectors save products.
#[test]
fn eigen_solves_started_from_earlier_vectors_meet_their_tolerance() {
    let g = small_gaussian(44);
    let field = SensingField::from_problem(&g);
    let mut x = random_state(&g, 5, 0.7);
    let opts = warm_options;
    let (mut warm, mut warm_plain) = (Vec::new(), Vec::new());
    let mut earlier: Vec<Vec<f64>> = Vec::new();
    let (mut with_history, mut without) = (0, 0);
    let mut out = vec![0.0; x.len()];
    for step in 0..30 {
        let hessian = dense_hessian(&field, &x);
        let eig = SymmetricEigen::new(hessian.clone());
        let (top, bottom) = (eig.eigenvalues.imax(), eig.eigenvalues.imin());
        let lambda = eig.eigenvalues[top];
        // every fifth state, the earlier vectors are the bottom eigenvector four times
        let history: Vec<Vec<f64>> = if step % 5 == 4 {
            vec![eig.eigenvectors.column(bottom).iter().copied().collect(); 4]
        } else {
            earlier.clone()
        };
        let start: Vec<Vec<f64>> = warm.iter().chain(&history).cloned().collect();
        let h = if warm.len() >= 2 { history.len() } else { 0 };
        let solved = top_eigenpairs(&field, &x, &start, &opts(h), 3);
        assert_top_pair(&hessian, lambda, &solved, &format!("step {step}"));
        with_history += solved.hvps;
        if let Some(q) = warm.first() {
            earlier.insert(0, q.clone());
            earlier.truncate(4);
        }
        warm = solved.warm;
        let plain = top_eigenpairs(&field, &x, &warm_plain, &opts(0), 3);
        assert!(plain.converged);
        without += plain.hvps;
        warm_plain = plain.warm;
        // the next state: a GD step
        field.rhs(&x, &mut out, &mut field.workspace());
        x.iter_mut().zip(&out).for_each(|(xi, fi)| *xi += 0.02 * fi);
    }
    assert!(
        with_history < without,
        "{with_history} products with earlier vectors, {without} without"
    );
}

/// Along a smooth path (the gradient flow by classical Runge–Kutta steps, an eigen-solve at
/// each stage), eigen-solves started from the vectors a model linear in the state predicts
/// meet their tolerance at every state, also after a jump off the path, which the model must
/// not extrapolate to.
#[test]
fn eigen_solves_started_from_predicted_vectors_meet_their_tolerance() {
    let g = small_gaussian(44);
    let field = SensingField::from_problem(&g);
    let mut x = random_state(&g, 5, 0.7);
    let opts = warm_options(0);
    let (mut predicted, mut earlier) = (Trail::default(), Trail::default());
    let check = |predicted: &mut Trail, earlier: &mut Trail, at: &[f64], what: &str| {
        let hessian = dense_hessian(&field, at);
        let lambda = SymmetricEigen::new(hessian.clone()).eigenvalues.max();
        for (trail, carry) in [
            (predicted, Carry::Predicted(24)),
            (earlier, Carry::History(4)),
        ] {
            let solved = trail.solve(&field, at, &opts, carry, 3);
            assert_top_pair(&hessian, lambda, &solved, &format!("{what}, {carry:?}"));
        }
    };
    let h = 0.01;
    let f = |y: &[f64]| {
        let mut out = vec![0.0; y.len()];
        field.rhs(y, &mut out, &mut field.workspace());
        out
    };
    let along = |y: &[f64], k: &[f64], c: f64| -> Vec<f64> {
        y.iter().zip(k).map(|(a, b)| a + c * h * b).collect()
    };
    for step in 0..30 {
        if step == 20 {
            // off the path: every entry moved, in no direction the last states span
            x.iter_mut()
                .enumerate()
                .for_each(|(i, xi)| *xi += 0.05 * if i % 3 == 0 { 1.0 } else { -0.5 });
        }
        let k1 = f(&x);
        let x2 = along(&x, &k1, 0.5);
        let k2 = f(&x2);
        let x3 = along(&x, &k2, 0.5);
        let k3 = f(&x3);
        let x4 = along(&x, &k3, 1.0);
        let k4 = f(&x4);
        for (s, at) in [&x, &x2, &x3, &x4].into_iter().enumerate() {
            check(
                &mut predicted,
                &mut earlier,
                at,
                &format!("step {step}, stage {s}"),
            );
        }
        // between the steps, a solve for one pair more on the same trail (the central flow's
        // event test), which must neither use nor break the prediction
        let hessian = dense_hessian(&field, &x4);
        let mut top: Vec<f64> = SymmetricEigen::new(hessian)
            .eigenvalues
            .iter()
            .copied()
            .collect();
        top.sort_by(|a, b| b.total_cmp(a));
        let two = EigenOptions { count: 2, ..opts };
        let solved = predicted.solve(&field, &x4, &two, Carry::History(4), 3);
        assert!(solved.converged, "step {step}: two pairs");
        for (got, want) in solved.values.iter().zip(&top) {
            assert!(
                (got - want).abs() <= 1e-9 * top[0].abs(),
                "step {step}: {got} vs {want}"
            );
        }
        for i in 0..x.len() {
            x[i] += h / 6.0 * (k1[i] + 2.0 * k2[i] + 2.0 * k3[i] + k4[i]);
        }
    }
}

fn check_kkt(k: &KMap, a: &DMatrix<f64>, m: &DMatrix<f64>) {
    let z = k.apply(m) - a;
    let scale = a.norm().max(1.0);
    let min_eig = |x: &DMatrix<f64>| {
        SymmetricEigen::new(0.5 * (x + x.transpose()))
            .eigenvalues
            .min()
    };
    assert!(min_eig(m) >= -1e-12 * scale, "M ⪰ 0: {}", min_eig(m));
    assert!(
        min_eig(&z) >= -1e-7 * scale,
        "𝒦(M) − a ⪰ 0: {}",
        min_eig(&z)
    );
    assert!(
        m.dot(&z).abs() <= 1e-7 * scale * scale,
        "⟨M, Z⟩ = {}",
        m.dot(&z)
    );
    assert!((m - project_psd(m)).norm() <= 1e-12 * scale);
}

/// The semidefinite problem's solution meets its optimality conditions (M ⪰ 0, the active
/// eigenvalues do not grow: a − 𝒦(M) ⪯ 0, complementarity ⟨M, a − 𝒦(M)⟩ = 0), for p = 2, 3
/// and right-hand sides that make M full rank, rank-deficient and zero; and p = 1 is the
/// closed-form projection max(0, −2⟨∇S, ∇f⟩/‖∇S‖²).
#[test]
fn semidefinite_problem_meets_its_optimality_conditions() {
    let n = 9;
    let vec_of = |seed: usize| -> Vec<f64> {
        (0..n)
            .map(|i| (((i + 1) * (seed * 7 + 3)) % 11) as f64 / 5.0 - 1.0)
            .collect()
    };
    for p in [2usize, 3] {
        let g: Vec<Vec<f64>> = (0..p * (p + 1) / 2).map(|s| vec_of(s + p)).collect();
        let k = KMap::new(p, &g);
        for (label, a) in [
            (
                "full",
                DMatrix::from_fn(p, p, |i, j| if i == j { 2.0 } else { 0.3 }),
            ),
            (
                "mixed",
                DMatrix::from_fn(p, p, |i, j| {
                    if i == j {
                        if i == 0 {
                            1.5
                        } else {
                            -1.0
                        }
                    } else {
                        0.2
                    }
                }),
            ),
            (
                "zero",
                DMatrix::from_fn(p, p, |i, j| if i == j { -1.0 } else { 0.0 }),
            ),
        ] {
            let sol = solve_sdp(&k, &a, 1e-9, 100_000);
            assert!(sol.residual <= 1e-8, "{label}: residual {:e}", sol.residual);
            check_kkt(&k, &a, &sol.m);
            if label == "zero" {
                assert!(sol.m.norm() < 1e-12, "no active direction needs M");
            }
        }
    }
    // p = 1: with g = ∇S and ∇f given, a = −⟨g, ∇f⟩ and 𝒦(1) = ½‖g‖²
    let grad_s = vec_of(1);
    for grad_f in [vec_of(2), vec_of(3).iter().map(|v| -v).collect()] {
        let k = KMap::new(1, std::slice::from_ref(&grad_s));
        let a = DMatrix::from_element(1, 1, -dot(&grad_s, &grad_f));
        let sol = solve_sdp(&k, &a, 1e-14, 10);
        let closed = (-2.0 * dot(&grad_s, &grad_f) / dot(&grad_s, &grad_s)).max(0.0);
        assert!((sol.m[(0, 0)] - closed).abs() <= 1e-14 * closed.max(1.0));
    }
}

use gdflow::config::{FlowVariant, Method};
use gdflow::dynamics::central::{CentralField, DRIFT_RATE};
use gdflow::dynamics::flow::{
    solve_central_flow_with, solve_flow_with, CentralColumns, FlowOptions, Times,
};
use gdflow::experiments::{run, Command, RunExtras, Setup};

/// The edge-of-stability problem of MATH §8's kind: 8×7, r = 2, k = 3, m = 60.
fn eos_args(eta: f64, steps: usize) -> ConfigArgs {
    ConfigArgs {
        eta: Some(eta),
        steps: Some(steps),
        ..super::math8_args(1e-2)
    }
}

/// The problem of [`eos_args`] set up for a run beside its central flow.
fn central_run(eta: f64, steps: usize) -> Setup {
    Setup::new(
        &ConfigArgs {
            flow: Some(FlowVariant::Central),
            ..eos_args(eta, steps)
        },
        Command::Run,
        false,
    )
    .unwrap()
}

/// Below the stability limit no eigenvalue reaches 2/η: the central flow is the gradient
/// flow, to the solver's tolerance (here: the same steps, bit for bit).
#[test]
fn below_the_limit_the_central_flow_is_the_gradient_flow() {
    let setup = Setup::new(&eos_args(0.1, 300), Command::Run, false).unwrap();
    let field = setup.field();
    let x0 = setup.start();
    let times = Times::Grid {
        dt: 0.1,
        count: 301,
    };
    let opts = FlowOptions::new(Method::Dop853, 1e-8, 1e-12);
    let mut plain = Vec::new();
    solve_flow_with(
        field.as_ref(),
        &x0,
        times,
        &opts,
        &mut |_, _, y| plain.push(y.to_vec()),
        &mut |_| {},
    )
    .unwrap();
    let mut central = Vec::new();
    let (status, _, report) = solve_central_flow_with(
        field.clone(),
        0.1,
        &x0,
        times,
        &opts,
        CentralColumns::ALL,
        &mut |_, _, y, w| {
            assert_eq!(w.active, 0);
            assert!(w.sharpness < 20.0);
            central.push(y.to_vec());
        },
        &mut |_| {},
    );
    assert_eq!(status, gdflow::dynamics::Status::Completed);
    assert!(report.first_reached.is_none() && report.events.is_empty());
    let norm = setup.problem.x_star.norm();
    let worst = plain
        .iter()
        .zip(&central)
        .map(|(a, b)| (field.product(a) - field.product(b)).norm())
        .fold(0.0, f64::max);
    assert!(worst <= 10.0 * 1e-8 * norm, "{worst:e}");
}

/// p = 1 at a state where λ_1 = 2/η exactly (no drift correction): the central field is the
/// gradient flow projected onto the tangent space of {S = 2/η}, −∇f + (⟨∇S, ∇f⟩/‖∇S‖²)∇S
/// when the flow would raise S (⟨∇S, ∇f⟩ < 0), with ∇S by central differences of the
/// dense Hessian's top eigenvalue.
#[test]
fn one_active_eigenvalue_is_the_closed_form_projection() {
    let p = small_gaussian(45);
    let field = std::sync::Arc::new(SensingField::from_problem(&p));
    let sharpness = |x: &[f64]| sorted_eigenvalues(dense_hessian(field.as_ref(), x))[0];
    // a state where the gradient flow raises the sharpness: along the flow from a small
    // start (the sharpness first falls as the start's imbalance decays, then rises as UVᵀ
    // grows towards X*)
    let mut x = random_state(&p, 100, 0.01);
    let n = x.len();
    let mut f = vec![0.0; n];
    let mut found = None;
    for _ in 0..400 {
        field.rhs(&x, &mut f, &mut field.workspace());
        let h = 1e-6;
        let grad_s: Vec<f64> = (0..n)
            .map(|j| {
                let (mut a, mut b) = (x.clone(), x.clone());
                a[j] += h;
                b[j] -= h;
                (sharpness(&a) - sharpness(&b)) / (2.0 * h)
            })
            .collect();
        // F = −∇f: ⟨∇S, F⟩ > 0 means S grows along the flow
        if dot(&grad_s, &f) > 0.1 * dot(&grad_s, &grad_s).sqrt() * dot(&f, &f).sqrt() {
            found = Some((x.clone(), grad_s, f.clone()));
            break;
        }
        for (xi, fi) in x.iter_mut().zip(&f) {
            *xi += 0.1 * fi;
        }
    }
    let (x, grad_s, f) = found.expect("a state where the flow sharpens");
    let eta = 2.0 / sharpness(&x);
    let central = CentralField::new(field.clone(), eta, 1, 1e-12);
    let mut out = vec![0.0; x.len()];
    central.rhs(&x, &mut out, &mut field.workspace());
    let gg = dot(&grad_s, &grad_s);
    let coef = dot(&grad_s, &f) / gg; // ⟨∇S, −∇f⟩/‖∇S‖²
    let expected: Vec<f64> = f
        .iter()
        .zip(&grad_s)
        .map(|(fi, gi)| fi - coef * gi)
        .collect();
    let err = out
        .iter()
        .zip(&expected)
        .map(|(a, b)| (a - b).powi(2))
        .sum::<f64>()
        .sqrt();
    let scale = dot(&expected, &expected).sqrt();
    assert!(
        err <= 1e-5 * scale,
        "central field vs projection: {err:e} of {scale:e}"
    );
    // and it is tangent: S does not change along it
    assert!(dot(&out, &grad_s).abs() <= 1e-5 * scale * gg.sqrt());

    // Off the constraint, Baumgarte's term pulls S back: with S 1% above 2/η the field moves S
    // at the rate −β(S − 2/η), β = DRIFT_RATE/η, by a central difference of S along the field.
    let s0 = sharpness(&x);
    let eta = 2.0 * 1.01 / s0;
    let central = CentralField::new(field.clone(), eta, 1, 1e-12);
    central.rhs(&x, &mut out, &mut field.workspace());
    let h = 1e-5 / dot(&out, &out).sqrt();
    let along =
        |sign: f64| -> Vec<f64> { x.iter().zip(&out).map(|(a, b)| a + sign * h * b).collect() };
    let rate = (sharpness(&along(1.0)) - sharpness(&along(-1.0))) / (2.0 * h);
    let expected = -DRIFT_RATE / eta * (s0 - 2.0 / eta);
    assert!(expected < 0.0);
    assert!(
        (rate - expected).abs() <= 1e-3 * expected.abs(),
        "dS/dt {rate:e} against −β(S − 2/η) = {expected:e}"
    );
}

/// The sharpness where the gradient flow of the problem of [`eos_args`] is at time `t`, from a
/// dense eigendecomposition of the Hessian.
fn flow_sharpness_at(t: f64) -> f64 {
    let setup = Setup::new(&eos_args(0.1, 1), Command::Run, false).unwrap();
    let field = setup.field();
    let mut end = Vec::new();
    solve_flow_with(
        field.as_ref(),
        &setup.start(),
        Times::Grid { dt: t, count: 2 },
        &FlowOptions::new(Method::Dop853, 1e-10, 1e-14),
        &mut |_, _, y| end = y.to_vec(),
        &mut |_| {},
    )
    .unwrap();
    sorted_eigenvalues(dense_hessian(field.as_ref(), &end))[0]
}

/// η with 2/η at 0.9× the sharpness S* of the minimum the gradient flow reaches (by t = 270).
fn eta_past_the_limit() -> f64 {
    2.0 / (0.9 * flow_sharpness_at(270.0))
}

/// With 2/η at 0.9× the sharpness S* of the flattest minimum the gradient flow
/// reaches on this problem (MATH §8), GD cannot converge there: it settles into a 2-cycle
/// around a point the central flow predicts. GD's two-step average and the central flow end
/// within a few percent of each other in ‖UVᵀ − X*‖/‖X*‖ while the gradient flow ends an order
/// of magnitude closer to X*; GD's averaged loss is near f + tr Σ/η, far above the gradient
/// flow's; and the central flow holds the sharpness at 2/η from the moment it reaches it.
#[test]
fn past_the_limit_gds_average_follows_the_central_flow_not_the_gradient_flow() {
    let eta = eta_past_the_limit();
    let steps = 300;
    let setup = central_run(eta, steps);
    let r = run(&setup, &RunExtras::default()).unwrap();
    let central = r.summary.central.as_ref().unwrap();
    let reached = central
        .report
        .first_reached
        .expect("the sharpness reaches 2/η");
    let plain = run(
        &Setup::new(&eos_args(eta, steps), Command::Run, false).unwrap(),
        &RunExtras::default(),
    )
    .unwrap();

    let mean_err = r.gd_mean.last().unwrap().rel_error();
    let central_err = r.flow.last().unwrap().rel_error();
    let plain_err = plain.flow.last().unwrap().rel_error();
    assert!(
        (mean_err - central_err).abs() <= 0.05 * mean_err,
        "GD's average {mean_err:.4} against the central flow {central_err:.4}"
    );
    assert!(
        plain_err < 0.25 * mean_err,
        "the gradient flow ends at {plain_err:.4}"
    );

    let eos = central.edge_of_stability.as_ref().unwrap();
    let plain_loss = plain.flow.last().unwrap().loss();
    assert!(
        (eos.predicted_loss - eos.gd_mean_loss).abs() <= 0.2 * eos.gd_mean_loss,
        "predicted {} against GD's averaged loss {}",
        eos.predicted_loss,
        eos.gd_mean_loss
    );
    assert!(plain_loss < 0.01 * eos.gd_mean_loss, "{plain_loss}");
    assert!(
        (eos.sigma_trace - eos.oscillation_second_moment).abs()
            <= 0.2 * eos.oscillation_second_moment,
        "tr Σ {} against GD's oscillation {}",
        eos.sigma_trace,
        eos.oscillation_second_moment
    );

    // the constraint is held: drift off 2/η is pulled back, not amplified
    let threshold = 2.0 / eta;
    for rec in r.flow.iter().filter(|rec| rec.t > reached) {
        let s = rec.sharpness().unwrap();
        assert!(
            (s / threshold - 1.0).abs() < 1e-6,
            "sharpness {s} at t = {}",
            rec.t
        );
    }
}

/// A run compares GD's two-step average with the central flow's state alone at the half
/// steps between its records: measured at every second output only, the solve leaves the
/// others' columns empty (no evaluation of the central field there) and measures the rest as
/// a solve measured everywhere does, its states the same to the solver's tolerance.
#[test]
fn measuring_every_second_output_leaves_the_others_state_only() {
    let eta = eta_past_the_limit();
    let setup = Setup::new(&eos_args(eta, 100), Command::Run, false).unwrap();
    let field = setup.field();
    let times = Times::Grid {
        dt: eta / 2.0,
        count: 201,
    };
    let rtol = 1e-8;
    let opts = FlowOptions::new(Method::Dop853, rtol, 1e-12);
    let solve = |times, every| {
        let mut outputs = Vec::new();
        let (status, _, report) = solve_central_flow_with(
            field.clone(),
            eta,
            &setup.start(),
            times,
            &opts,
            CentralColumns {
                every,
                ..CentralColumns::ALL
            },
            &mut |i, _, y, w| outputs.push((i, y.to_vec(), w.clone())),
            &mut |_| {},
        );
        assert_eq!(status, gdflow::dynamics::Status::Completed);
        (outputs, report)
    };
    let (all, all_report) = solve(times, 1);
    let (every, report) = solve(times, 2);
    assert_eq!(all.len(), 201);
    assert_eq!(every.len(), 201);
    let reached = report.first_reached.expect("the sharpness reaches 2/η");
    assert!(reached < 0.8 * times.last(), "reached at {reached}");
    assert!((reached - all_report.first_reached.unwrap()).abs() <= 1e-3 * reached);
    let norm = setup.problem.x_star.norm();
    for ((i, x, measured), (_, y, reference)) in every.iter().zip(&all) {
        let gap = (field.product(x) - field.product(y)).norm() / norm;
        assert!(gap <= 10.0 * rtol, "output {i}: states {gap:e} apart");
        assert_eq!(measured.active, reference.active, "output {i}");
        if i % 2 == 1 {
            assert!(measured.sharpness.is_nan() && measured.sigma_trace.is_nan());
            assert!(measured.vectors.is_empty(), "output {i}");
            continue;
        }
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-6 * b.abs().max(1e-3);
        assert!(
            close(measured.sharpness, reference.sharpness),
            "output {i}: sharpness {} against {}",
            measured.sharpness,
            reference.sharpness
        );
        assert!(
            close(measured.sigma_trace, reference.sigma_trace),
            "output {i}: tr Σ {} against {}",
            measured.sigma_trace,
            reference.sigma_trace
        );
        assert_eq!(measured.vectors.len(), measured.active, "output {i}");
    }

    // Where outputs are dense, each one measured is an evaluation of the central field: 401
    // outputs over a few steps while an eigenvalue is held, all of them measured, one in two,
    // none. Until the first of them the three solves are the same; after it their steps may
    // differ by one or two (the eigen-solves' starts differ), some 16 evaluations each.
    let from = 0.9 * times.last();
    let dense: Vec<f64> = std::iter::once(0.0)
        .chain((0..=400).map(|i| from + i as f64 * eta / 100.0))
        .collect();
    let evaluations = |every| {
        let (outputs, report) = solve(Times::List(&dense), every);
        let held = outputs[1..].iter().map(|(_, _, w)| w.active).min();
        assert!(held >= Some(1), "an eigenvalue held at every dense output");
        report.work.evaluations
    };
    let (all, one_in_two, none) = (evaluations(1), evaluations(2), evaluations(0));
    // 201 odd outputs, then the 200 even ones after t = 0
    assert!(all >= one_in_two + 160, "{all} against {one_in_two}");
    assert!(one_in_two >= none + 160, "{one_in_two} against {none}");
}

/// A run measures the central flow at its whole steps t_j only, not at the half steps where
/// GD's two-step average is compared with its state: the run's solve is, product for product,
/// the solve measured at every second output of its grid, and not the one measured at all.
#[test]
fn a_run_measures_the_central_flow_at_its_whole_steps_only() {
    let eta = eta_past_the_limit();
    let steps = 100;
    let setup = central_run(eta, steps);
    let r = run(&setup, &RunExtras::default()).unwrap();
    let ran = &r.summary.central.as_ref().unwrap().report.work;
    let solve = |every| {
        let (_, _, report) = solve_central_flow_with(
            setup.flow_field(FlowVariant::Central, eta),
            eta,
            &setup.start(),
            Times::Grid {
                dt: eta / 2.0,
                count: 2 * steps + 1,
            },
            &setup.config.flow_options(),
            CentralColumns {
                every,
                ..CentralColumns::ALL
            },
            &mut |_, _, _, _| {},
            &mut |_| {},
        );
        report.work
    };
    let (one_in_two, all) = (solve(2), solve(1));
    assert!(ran.evaluations > 0);
    assert_eq!(
        (ran.evaluations, ran.hvps),
        (one_in_two.evaluations, one_in_two.hvps)
    );
    assert!(all.evaluations > one_in_two.evaluations);
}

/// `gdflow check` past the limit adds the edge-of-stability rows and they pass; below it (the
/// same problem at a small η) only the stability row is there, below 1.
#[test]
fn check_reports_the_edge_of_stability_only_past_the_limit() {
    use gdflow::config::CheckArgs;
    use gdflow::experiments::check;
    let row = |rows: &[gdflow::results::check::CheckRow], name: &str| {
        rows.iter().find(|r| r.name == name).cloned()
    };
    let eta = eta_past_the_limit();
    let past = Setup::new(&eos_args(eta, 300), Command::Check, false).unwrap();
    let rows = check(&past, &CheckArgs::default(), false)
        .unwrap()
        .summary
        .rows;
    let limit = row(&rows, "stability_limit").unwrap();
    let expected = eta * flow_sharpness_at(300.0 * eta) / 2.0;
    assert!(
        (limit.measured / expected - 1.0).abs() < 1e-6,
        "{} against {expected}",
        limit.measured
    );
    for name in ["eos_sharpness", "eos_predicted_loss"] {
        let r = row(&rows, name).unwrap();
        assert_eq!(r.pass, Some(true), "{name}: {}", r.measured);
    }
    assert!(row(&rows, "eos_distance_mean").unwrap().measured < 0.05);

    let below = Setup::new(&eos_args(0.2, 300), Command::Check, false).unwrap();
    let rows = check(&below, &CheckArgs::default(), false)
        .unwrap()
        .summary
        .rows;
    assert!(row(&rows, "stability_limit").unwrap().measured < 1.0);
    assert!(row(&rows, "eos_sharpness").is_none());
}

/// The sweep's third reference: below the limit the central flow never holds an eigenvalue;
/// past it, the event that starts the central part is where the gradient flow's sharpness
/// (dense Hessian) crosses 2/η, and GD's two-step average ends near the central flow while
/// GD itself ends far from the gradient flow.
#[test]
fn sweep_compares_gds_average_with_the_central_flow() {
    use gdflow::config::SweepArgs;
    use gdflow::experiments::sweep::{resolve_settings, run_sweep};
    let eta = eta_past_the_limit();
    let problem_only = ConfigArgs {
        eta: None,
        steps: None,
        ..eos_args(0.1, 1)
    };
    let setup = Setup::new(&problem_only, Command::Sweep, false).unwrap();
    let args = SweepArgs {
        etas: Some(vec![0.3, eta]),
        horizon: Some(270.0),
        stability_steps: Some(0),
        ..Default::default()
    };
    let settings = resolve_settings(&args, &setup.config, &setup.problem).unwrap();
    let r = run_sweep(&setup, &settings, false).unwrap();
    let below = r.summary.points[0].central.as_ref().unwrap();
    assert!(below.first_reached.is_none() && below.max_active == 0);
    let past = &r.summary.points[1];
    let c = past.central.as_ref().unwrap();
    assert_eq!(c.status, gdflow::dynamics::Status::Completed);
    let reached = c.first_reached.expect("2/η is reached");
    let s = flow_sharpness_at(reached);
    assert!(
        (s * eta / 2.0 - 1.0).abs() < 1e-6,
        "sharpness {s} at the event, 2/η = {}",
        2.0 / eta
    );
    assert!(flow_sharpness_at(0.99 * reached) < 2.0 / eta);
    let final_central = c.final_dev.unwrap() / setup.problem.x_star.norm();
    let last = r.deviations.iter().rfind(|d| d.eta == eta).unwrap();
    assert!(final_central < 0.02, "{final_central}");
    assert!(
        last.dev_rel > 5.0 * final_central,
        "GD against the gradient flow: {}",
        last.dev_rel
    );
}

/// The solver's count of held eigenvalues against an independent count: the dense
/// Hessian's eigenvalues at 2/η (none may exceed it), at every output along the flow, with
/// 2/η at 0.9 and 0.7 of the flattest minimum's sharpness (one eigenvalue held), and on the
/// same problem with equal target singular values (κ = 1), where the top of the spectrum is
/// a near-multiple cluster and two, then three eigenvalues are held (M of rank ≥ 2).
#[test]
fn the_held_eigenvalues_are_those_of_the_dense_hessian_at_two_over_eta() {
    let s_star = flow_sharpness_at(270.0);
    for fraction in [0.9, 0.7] {
        let eta = 2.0 / (fraction * s_star);
        let held = held_eigenvalues_match_the_dense_hessian(&eos_args(eta, 300), 27);
        assert_eq!(held, 1);
    }
    let equal = ConfigArgs {
        kappa: Some(1.0),
        ..eos_args(0.9, 100)
    };
    let held = held_eigenvalues_match_the_dense_hessian(&equal, 9);
    assert!(held >= 2, "at most {held} held");
}

/// Checks at t = 0, 10, …, 10·`tens`; returns the most eigenvalues held at a check.
fn held_eigenvalues_match_the_dense_hessian(args: &ConfigArgs, tens: usize) -> usize {
    let eta = args.eta.unwrap();
    let setup = Setup::new(args, Command::Run, false).unwrap();
    let field = setup.field();
    let times: Vec<f64> = (0..=tens).map(|i| i as f64 * 10.0).collect();
    let mut states = Vec::new();
    let (status, _, _) = solve_central_flow_with(
        field.clone(),
        eta,
        &setup.start(),
        Times::List(&times),
        &FlowOptions::new(Method::Dop853, 1e-8, 1e-12),
        CentralColumns::ALL,
        &mut |_, t, y, w| states.push((t, y.to_vec(), w.active)),
        &mut |_| {},
    );
    assert!(
        matches!(status, gdflow::dynamics::Status::Completed),
        "{status:?}"
    );
    assert_eq!(states.len(), times.len());
    let limit = 2.0 / eta;
    let mut most = 0;
    for (t, y, active) in states {
        let eigenvalues = sorted_eigenvalues(dense_hessian(field.as_ref(), &y));
        assert!(
            eigenvalues[0] <= limit * (1.0 + 1e-6),
            "t = {t}: λ₁ = {} above 2/η = {limit}",
            eigenvalues[0]
        );
        let at_limit = eigenvalues
            .iter()
            .filter(|&&l| l > limit * (1.0 - 1e-5))
            .count();
        assert_eq!(
            at_limit,
            active,
            "t = {t}: eigenvalues {:?}",
            &eigenvalues[..3]
        );
        most = most.max(active);
    }
    assert!(
        most > 0,
        "the flow never reached 2/η: the test proves nothing"
    );
    most
}

/// GD's sharpness column (each record's eigen-solve started from the last records' vectors)
/// against a dense eigendecomposition of the Hessian at GD's own iterates, recomputed here:
/// past the stability limit, where the iterates alternate and the top vector swings between
/// them, and at every step.
#[test]
fn gds_sharpness_column_is_the_dense_hessians_top_eigenvalue() {
    use gdflow::dynamics::{gradient_descent, RunOptions};
    let eta = eta_past_the_limit();
    let steps = 120;
    let setup = Setup::new(
        &ConfigArgs {
            sharpness_every: Some(1),
            ..eos_args(eta, steps)
        },
        Command::Run,
        false,
    )
    .unwrap();
    let r = run(&setup, &RunExtras::default()).unwrap();
    let field = setup.field();
    let gd = gradient_descent(
        field.as_ref(),
        &setup.start(),
        &RunOptions::new(eta, steps, 1),
    );
    assert_eq!(gd.states.len(), r.gd.len());
    let mut above = 0;
    for (rec, x) in r.gd.iter().zip(&gd.states) {
        let want = sorted_eigenvalues(dense_hessian(field.as_ref(), x))[0];
        let got = rec.sharpness().expect("computed at every record");
        assert!(
            (got - want).abs() <= 1e-7 * want.abs(),
            "t = {}: {got} against {want}",
            rec.t
        );
        above += usize::from(want > 2.0 / eta);
    }
    assert!(above > 10, "GD never passed 2/η: the test proves little");
}
