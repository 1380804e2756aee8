//! The pieces of the central flow (MATH §8): the third derivative g_ab against finite
//! differences of Hessian–vector products, the eigen-solver against dense eigendecompositions,
//! the semidefinite problem against its optimality conditions and the p = 1 closed form.

use gdflow::config::ConfigArgs;
use gdflow::dynamics::central::{project_psd, solve_sdp, KMap};
use gdflow::dynamics::sharpness::{top_eigenpairs, EigenOptions};
use gdflow::field::{Field, Perturbation, PerturbationModel, Perturbed, SensingField};
use gdflow::problem::Problem;
use nalgebra::{DMatrix, SymmetricEigen};

use super::{random_state, small_gaussian};

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
    let sym_args = ConfigArgs {
        n1: Some(5),
        n2: Some(5),
        rank: Some(2),
        width: Some(2),
        measurements: Some(30),
        symmetric: Some(true),
        ..Default::default()
    };
    let sym = Problem::generate(&sym_args.resolve().unwrap().problem_spec()).unwrap();
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
