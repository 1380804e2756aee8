//! The vector field against finite differences, the operators' adjoint identity, and the
//! one-GEMM Jacobian against the jvp-assembled one.

use std::sync::Arc;

use gdflow::field::{Field, SensingField};
use gdflow::operator::{DenseOperator, EntryOperator, IdentityOperator, SensingOperator};
use rand::{Rng, SeedableRng};

use super::{random_state, small_gaussian};

fn rel_diff(a: &[f64], b: &[f64]) -> f64 {
    let num: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).powi(2))
        .sum::<f64>()
        .sqrt();
    let den: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    num / den
}

#[test]
fn field_is_minus_the_gradient_by_central_differences() {
    let p = small_gaussian(1);
    let field = SensingField::from_problem(&p);
    let mut ws = field.workspace();
    let x = random_state(&p, 2, 0.5);
    let mut f = vec![0.0; x.len()];
    field.rhs(&x, &mut f, &mut ws);
    let h = 1e-6;
    let fd: Vec<f64> = (0..x.len())
        .map(|i| {
            let (mut xp, mut xm) = (x.clone(), x.clone());
            xp[i] += h;
            xm[i] -= h;
            -(field.loss(&xp, &mut ws) - field.loss(&xm, &mut ws)) / (2.0 * h)
        })
        .collect();
    let err = rel_diff(&f, &fd);
    assert!(
        err < 1e-7,
        "field vs −∇f by central differences: relative error {err:e}"
    );
}

#[test]
fn modified_field_is_minus_the_gradient_of_the_modified_loss() {
    let p = small_gaussian(4);
    let field = SensingField::from_problem(&p);
    let mut ws = field.workspace();
    let x = random_state(&p, 5, 0.5);
    let eta = 0.3;
    let mut f = vec![0.0; x.len()];
    let mut plain = vec![0.0; x.len()];
    let modified = gdflow::field::Modified::new(std::sync::Arc::new(field.clone()), eta);
    modified.rhs(&x, &mut f, &mut ws);
    field.rhs(&x, &mut plain, &mut ws);
    let h = 1e-5;
    let fd: Vec<f64> = (0..x.len())
        .map(|i| {
            let (mut xp, mut xm) = (x.clone(), x.clone());
            xp[i] += h;
            xm[i] -= h;
            -(modified.modified_loss(&xp, &mut ws) - modified.modified_loss(&xm, &mut ws))
                / (2.0 * h)
        })
        .collect();
    let err = rel_diff(&f, &fd);
    assert!(err < 1e-7, "modified field vs −∇f̃: relative error {err:e}");
    // and the correction is not negligible here, so the check has teeth
    assert!(rel_diff(&plain, &fd) > 1e-3);
}

#[test]
fn jvp_matches_central_differences_of_the_field() {
    let p = small_gaussian(3);
    let field = SensingField::from_problem(&p);
    let mut ws = field.workspace();
    let x = random_state(&p, 4, 0.5);
    let d = random_state(&p, 5, 1.0);
    let mut jv = vec![0.0; x.len()];
    field.jvp(&x, &d, &mut jv, &mut ws);
    let h = 1e-6;
    let shifted = |s: f64, ws: &mut _| {
        let xs: Vec<f64> = x.iter().zip(&d).map(|(a, b)| a + s * b).collect();
        let mut out = vec![0.0; x.len()];
        field.rhs(&xs, &mut out, ws);
        out
    };
    let fp = shifted(h, &mut ws);
    let fm = shifted(-h, &mut ws);
    let fd: Vec<f64> = fp
        .iter()
        .zip(&fm)
        .map(|(a, b)| (a - b) / (2.0 * h))
        .collect();
    let err = rel_diff(&jv, &fd);
    assert!(
        err < 1e-7,
        "jvp vs central differences: relative error {err:e}"
    );
}

#[test]
fn jvp_after_a_different_state_does_not_reuse_stale_residual() {
    let p = small_gaussian(6);
    let field = SensingField::from_problem(&p);
    let x = random_state(&p, 7, 0.5);
    let y = random_state(&p, 8, 0.5);
    let d = random_state(&p, 9, 1.0);
    let mut ws = field.workspace();
    let mut out = vec![0.0; x.len()];
    field.rhs(&y, &mut out, &mut ws);
    let mut a = vec![0.0; x.len()];
    field.jvp(&x, &d, &mut a, &mut ws);
    let mut fresh = field.workspace();
    let mut b = vec![0.0; x.len()];
    field.jvp(&x, &d, &mut b, &mut fresh);
    assert_eq!(a, b);
}

fn check_adjoint(op: &dyn SensingOperator, seed: u64) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n = op.n1() * op.n2();
    for _ in 0..5 {
        let x: Vec<f64> = (0..n).map(|_| rng.gen::<f64>() - 0.5).collect();
        let z: Vec<f64> = (0..op.m()).map(|_| rng.gen::<f64>() - 0.5).collect();
        let mut ax = vec![0.0; op.m()];
        let mut atz = vec![0.0; n];
        op.apply(&x, &mut ax);
        op.adjoint(&z, &mut atz);
        let lhs: f64 = ax.iter().zip(&z).map(|(a, b)| a * b).sum();
        let rhs: f64 = x.iter().zip(&atz).map(|(a, b)| a * b).sum();
        let scale = lhs.abs().max(rhs.abs()).max(1.0);
        assert!(
            (lhs - rhs).abs() < 1e-13 * scale,
            "{}: ⟨𝒜x, z⟩ = {lhs} but ⟨x, 𝒜*z⟩ = {rhs}",
            op.name()
        );
        // apply agrees with the definition ⟨A_i, X⟩ through measurement_matrix
        let mut ai = vec![0.0; n];
        for (i, axi) in ax.iter().enumerate() {
            op.measurement_matrix(i, &mut ai);
            let direct: f64 = ai.iter().zip(&x).map(|(a, b)| a * b).sum();
            assert!((direct - axi).abs() < 1e-13 * scale);
        }
    }
}

#[test]
fn every_operator_satisfies_the_adjoint_identity() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    check_adjoint(&DenseOperator::gaussian(6, 4, 30, &mut rng), 1);
    check_adjoint(&IdentityOperator::new(6, 4), 2);
    check_adjoint(&EntryOperator::sample(6, 4, 15, &mut rng), 3);
}

#[test]
fn gaussian_operator_is_normalised() {
    // E‖𝒜(Z)‖² = ‖Z‖²: averaged over many unit Z the ratio is 1 within sampling error.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(12);
    let op = DenseOperator::gaussian(10, 8, 2000, &mut rng);
    let mut total = 0.0;
    let trials = 50;
    for _ in 0..trials {
        let z: Vec<f64> = (0..80).map(|_| rng.gen::<f64>() - 0.5).collect();
        let nz: f64 = z.iter().map(|v| v * v).sum();
        let mut az = vec![0.0; 2000];
        op.apply(&z, &mut az);
        total += az.iter().map(|v| v * v).sum::<f64>() / nz;
    }
    let mean = total / trials as f64;
    // each ratio is χ²_m/m: standard deviation √(2/m) ≈ 0.032, of the mean ≈ 0.0045
    assert!((mean - 1.0).abs() < 0.03, "mean ‖𝒜Z‖²/‖Z‖² = {mean}");
}

#[test]
fn entry_operator_gram_is_scaled_projection() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(13);
    let op = EntryOperator::sample(5, 4, 8, &mut rng);
    let mut z = vec![0.0; 20];
    let x: Vec<f64> = (0..20).map(|i| i as f64 + 1.0).collect();
    let mut ax = vec![0.0; 8];
    op.apply(&x, &mut ax);
    op.adjoint(&ax, &mut z);
    // 𝒜*𝒜 = (n1·n2/m)·P_Ω: each entry is either 0 or 2.5·x
    let mut sampled = 0;
    for (zi, xi) in z.iter().zip(&x) {
        if *zi != 0.0 {
            sampled += 1;
            assert!((zi - 2.5 * xi).abs() < 1e-12);
        }
    }
    assert_eq!(sampled, 8, "m distinct entries");
}

fn assembled_jacobian(field: &SensingField, x: &[f64]) -> nalgebra::DMatrix<f64> {
    let n = x.len();
    let mut ws = field.workspace();
    let mut jac = nalgebra::DMatrix::zeros(n, n);
    let mut e = vec![0.0; n];
    let mut col = vec![0.0; n];
    for j in 0..n {
        e[j] = 1.0;
        field.jvp(x, &e, &mut col, &mut ws);
        jac.column_mut(j).copy_from_slice(&col);
        e[j] = 0.0;
    }
    jac
}

#[test]
fn one_gemm_jacobian_equals_jvp_assembled_jacobian() {
    let p = small_gaussian(14);
    let field = SensingField::from_problem(&p);
    let x = random_state(&p, 15, 0.7);
    let exact = field.jacobian(&x, &mut field.workspace());
    let assembled = assembled_jacobian(&field, &x);
    let err = (&exact - &assembled).norm() / assembled.norm();
    assert!(err < 1e-13, "relative difference {err:e}");
    // and it is symmetric (−Hessian of f)
    assert!((&exact - exact.transpose()).norm() < 1e-13 * exact.norm());
}

#[test]
fn one_gemm_jacobian_for_identity_and_entry_operators() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(16);
    for op in [
        Arc::new(IdentityOperator::new(4, 3)) as Arc<dyn SensingOperator>,
        Arc::new(EntryOperator::sample(4, 3, 7, &mut rng)),
    ] {
        let y: Vec<f64> = (0..op.m()).map(|_| rng.gen::<f64>()).collect();
        let field = SensingField::new(op, y, 2);
        let x: Vec<f64> = (0..field.state_len())
            .map(|_| rng.gen::<f64>() - 0.5)
            .collect();
        let exact = field.jacobian(&x, &mut field.workspace());
        let assembled = assembled_jacobian(&field, &x);
        assert!((&exact - &assembled).norm() < 1e-13 * assembled.norm());
    }
}

#[test]
fn parallel_operator_is_bit_identical_with_one_and_two_threads() {
    // large enough (40·40·700 > 2^20 entries) to take the parallel path
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(17);
    let op = DenseOperator::gaussian(40, 40, 701, &mut rng);
    let x: Vec<f64> = (0..1600).map(|_| rng.gen::<f64>() - 0.5).collect();
    let z: Vec<f64> = (0..701).map(|_| rng.gen::<f64>() - 0.5).collect();
    let run = |threads: usize| {
        super::on_threads(threads, || {
            let mut ax = vec![0.0; 701];
            let mut atz = vec![0.0; 1600];
            op.apply(&x, &mut ax);
            op.adjoint(&z, &mut atz);
            (ax, atz)
        })
    };
    let one = run(1);
    assert_eq!(one, run(2));
    assert_eq!(one, run(3));
    check_adjoint(&op, 18);
}

#[test]
fn f32_storage_satisfies_the_adjoint_identity_to_f64_rounding() {
    use gdflow::operator::Precision;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(41);
    let op64 = DenseOperator::gaussian(9, 7, 50, &mut rng);
    let dense64 = op64.to_dense();
    let op32 = op64.into_f32();
    assert_eq!(op32.precision(), Precision::F32);
    // the stored entries are f32 values, and to_dense gives them exactly
    let dense32 = op32.to_dense();
    for (a, b) in dense32.iter().zip(dense64.iter()) {
        assert_eq!(*a, (*b as f32) as f64);
    }
    let x: Vec<f64> = (0..63).map(|_| rng.gen::<f64>() - 0.5).collect();
    let z: Vec<f64> = (0..50).map(|_| rng.gen::<f64>() - 0.5).collect();
    let (mut ax, mut atz) = (vec![0.0; 50], vec![0.0; 63]);
    op32.apply(&x, &mut ax);
    op32.adjoint(&z, &mut atz);
    let lhs: f64 = ax.iter().zip(&z).map(|(a, b)| a * b).sum();
    let rhs: f64 = x.iter().zip(&atz).map(|(a, b)| a * b).sum();
    assert!(
        (lhs - rhs).abs() < 1e-14 * lhs.abs().max(1.0),
        "{lhs} vs {rhs}"
    );
    // and it is the f64 operator of the rounded entries, applied in f64
    let exact = dense32.transpose() * nalgebra::DVector::from_column_slice(&x);
    for (a, b) in ax.iter().zip(exact.iter()) {
        assert!((a - b).abs() < 1e-14 * b.abs().max(1.0));
    }
}

#[test]
fn generated_f32_problem_observes_through_its_rounded_entries() {
    use gdflow::config::ConfigArgs;
    use gdflow::operator::Precision;
    let args = ConfigArgs {
        n1: Some(8),
        n2: Some(6),
        rank: Some(2),
        measurements: Some(40),
        sensing_precision: Some(Precision::F32),
        ..Default::default()
    };
    let p = gdflow::problem::Problem::generate(&args.resolve().unwrap().problem_spec()).unwrap();
    let a = p.op.to_dense();
    assert!(
        a.iter().all(|v| (*v as f32) as f64 == *v),
        "entries are f32 values"
    );
    let y = a.transpose() * nalgebra::DVector::from_column_slice(p.x_star.as_slice());
    for (yi, ei) in p.y.iter().zip(y.iter()) {
        assert!((yi - ei).abs() < 1e-14, "y is 𝒜₃₂(X*)");
    }
}

#[test]
fn f32_gaussian_is_the_f64_gaussian_rounded() {
    use gdflow::operator::Precision;
    let draw = |p| {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        DenseOperator::gaussian_stored(5, 4, 30, &mut rng, p).to_dense()
    };
    let (a64, a32) = (draw(Precision::F64), draw(Precision::F32));
    for (a, b) in a64.iter().zip(a32.iter()) {
        assert_eq!((*a as f32) as f64, *b);
    }
}
