//! Singular values and vectors of the matrices a record needs, without n1×n2 SVDs: UVᵀ and
//! X* − UVᵀ through the small cores of their factors, and the largest singular value of a
//! dense matrix by Lanczos on its Gram matrix.

use nalgebra::{DMatrix, DMatrixView, SymmetricEigen};

/// A thin SVD of A·Bᵀ (A: n1×q, B: n2×q) from QR factors: A = Q_a R_a, B = Q_b R_b, and the
/// SVD of the q×q core R_a R_bᵀ = P S Qᵀ; then A Bᵀ = (Q_a P) S (Q_b Q)ᵀ. O((n1 + n2)q²).
pub struct FactoredSvd {
    /// Singular values, largest first (q of them).
    pub values: Vec<f64>,
    /// Left and right singular vectors, columns in the order of `values`.
    pub left: DMatrix<f64>,
    pub right: DMatrix<f64>,
}

impl FactoredSvd {
    pub fn of(a: DMatrixView<f64>, b: DMatrixView<f64>) -> Self {
        let qa = a.clone_owned().qr();
        let qb = b.clone_owned().qr();
        let core = qa.r() * qb.r().transpose();
        let svd = core.svd(true, true);
        let mut order: Vec<usize> = (0..svd.singular_values.len()).collect();
        order.sort_by(|&i, &j| svd.singular_values[j].total_cmp(&svd.singular_values[i]));
        let p = svd.u.expect("asked for U");
        let qt = svd.v_t.expect("asked for Vᵀ");
        let (q_a, q_b) = (qa.q(), qb.q());
        let q = order.len();
        let left = &q_a * DMatrix::from_fn(p.nrows(), q, |i, j| p[(i, order[j])]);
        let right = &q_b * DMatrix::from_fn(qt.ncols(), q, |i, j| qt[(order[j], i)]);
        Self {
            values: order.iter().map(|&i| svd.singular_values[i]).collect(),
            left,
            right,
        }
    }
}

/// ‖E‖_op, the largest singular value of a dense matrix, from Lanczos with full
/// reorthogonalisation on EᵀE (a fixed start, so the result is deterministic), checked every
/// few steps and stopped when the Ritz residual is below 1e-13 of the Ritz value or the space
/// is all of R^{n2}.
pub fn op_norm(e: &DMatrix<f64>) -> f64 {
    let n = e.ncols();
    if n == 0 || e.nrows() == 0 {
        return 0.0;
    }
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let gram = |v: &[f64]| -> Vec<f64> {
        let ev = e * nalgebra::DVector::from_column_slice(v);
        e.tr_mul(&ev).as_slice().to_vec()
    };
    const CHECK_EVERY: usize = 6;
    let max_dim = n.min(120);
    let mut q: Vec<Vec<f64>> = Vec::with_capacity(max_dim);
    let mut hq: Vec<Vec<f64>> = Vec::with_capacity(max_dim);
    let mut t = DMatrix::<f64>::zeros(max_dim, max_dim);
    let mut v: Vec<f64> = (0..n)
        .map(|i| 1.0 + 0.5 * ((i as f64) * 0.618_033_988_749_895).fract())
        .collect();
    loop {
        // v ⟂ the basis (twice: stable to rounding), then the next Krylov direction
        for _ in 0..2 {
            for b in &q {
                let c = dot(b, &v);
                v.iter_mut().zip(b).for_each(|(x, bi)| *x -= c * bi);
            }
        }
        let norm = dot(&v, &v).sqrt();
        let exhausted = norm == 0.0 || !norm.is_finite();
        if !exhausted {
            v.iter_mut().for_each(|x| *x /= norm);
            let w = gram(&v);
            let d = q.len();
            for (j, (qj, hj)) in q.iter().zip(&hq).enumerate() {
                let tij = 0.5 * (dot(&v, hj) + dot(qj, &w));
                t[(d, j)] = tij;
                t[(j, d)] = tij;
            }
            t[(d, d)] = dot(&v, &w);
            q.push(std::mem::take(&mut v));
            hq.push(w);
        }
        let d = q.len();
        let done = exhausted || d == max_dim;
        if d == 0 {
            return 0.0;
        }
        if !done && d % CHECK_EVERY != 0 {
            // the next direction: H q_last (orthogonalised above)
            v = hq[d - 1].clone();
            continue;
        }
        let eig = SymmetricEigen::new(t.view((0, 0), (d, d)).clone_owned());
        let (imax, theta) =
            eig.eigenvalues
                .iter()
                .enumerate()
                .fold(
                    (0, f64::NEG_INFINITY),
                    |m, (i, &l)| if l > m.1 { (i, l) } else { m },
                );
        let s = eig.eigenvectors.column(imax);
        let mut r = vec![0.0; n];
        for (c, (qj, hj)) in s.iter().zip(q.iter().zip(&hq)) {
            r.iter_mut()
                .zip(qj.iter().zip(hj))
                .for_each(|(ri, (qi, hi))| *ri += c * (hi - theta * qi));
        }
        if done || dot(&r, &r).sqrt() <= 1e-13 * theta.abs() {
            return theta.max(0.0).sqrt();
        }
        v = r;
    }
}
