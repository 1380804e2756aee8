//! Singular values and vectors of the matrices a record needs, without n1×n2 SVDs: UVᵀ and
//! X* − UVᵀ through the small cores of their factors, and the largest singular value of a
//! dense matrix by Lanczos on its Gram matrix.

use nalgebra::{DMatrix, DMatrixView};

use crate::vector::{dot, norm, orthogonalise};

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

/// ‖E‖_op, the largest singular value of a dense matrix: Lanczos with full
/// reorthogonalisation on the smaller of EᵀE and EEᵀ, from a fixed start (so the result is
/// deterministic), stopped when the Ritz residual β_{d+1}|s_d| is below 1e-13 of the Ritz
/// value or the Krylov space is exhausted. The Ritz value and the last entry of its vector
/// come from the tridiagonal T_d (bisection and inverse iteration, O(d) each), not from a
/// dense eigendecomposition of T_d at every check, which had cost more than the matrix
/// products (0.34 ms of a 0.48 ms record at n = 50).
pub fn op_norm(e: &DMatrix<f64>) -> f64 {
    let (rows, cols) = e.shape();
    if rows == 0 || cols == 0 {
        return 0.0;
    }
    let n = rows.min(cols);
    let gram = |v: &[f64]| -> Vec<f64> {
        let v = nalgebra::DVector::from_column_slice(v);
        if cols <= rows {
            e.tr_mul(&(e * v)).as_slice().to_vec()
        } else {
            (e * e.tr_mul(&v)).as_slice().to_vec()
        }
    };
    let mut q: Vec<Vec<f64>> = Vec::with_capacity(n);
    let (mut alpha, mut beta) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let mut v: Vec<f64> = (0..n)
        .map(|i| 1.0 + 0.5 * ((i as f64) * 0.618_033_988_749_895).fract())
        .collect();
    let length = norm(&v);
    v.iter_mut().for_each(|x| *x /= length);
    const CHECK_EVERY: usize = 8;
    let mut theta = f64::NEG_INFINITY;
    loop {
        let mut w = gram(&v);
        alpha.push(dot(&v, &w));
        q.push(v);
        orthogonalise(&q, &mut w);
        let next = norm(&w);
        let scale = alpha
            .iter()
            .fold(0.0f64, |m, a| m.max(a.abs()))
            .max(f64::MIN_POSITIVE);
        let exhausted = q.len() == n || !next.is_finite() || next <= 1e-15 * scale;
        // the bisection is a chain of divisions, dearer than an iteration: every eighth only
        if exhausted || q.len() % CHECK_EVERY == 0 {
            theta = largest_tridiagonal_eigenvalue(&alpha, &beta, theta);
            let residual = next * last_eigenvector_entry(&alpha, &beta, theta);
            if exhausted || residual <= 1e-13 * theta.abs() {
                return theta.max(0.0).sqrt();
            }
        }
        beta.push(next);
        v = w.into_iter().map(|x| x / next).collect();
    }
}

/// λ_max of the symmetric tridiagonal matrix with diagonal `alpha` and off-diagonal `beta`,
/// by bisection on Sturm counts from `below` (a lower bound, e.g. the previous Ritz value)
/// up to the Gershgorin bound, to the last bits.
fn largest_tridiagonal_eigenvalue(alpha: &[f64], beta: &[f64], below: f64) -> f64 {
    let d = alpha.len();
    let off = |j: usize| -> f64 {
        let left = if j > 0 { beta[j - 1].abs() } else { 0.0 };
        let right = if j + 1 < d { beta[j].abs() } else { 0.0 };
        left + right
    };
    let mut hi = (0..d)
        .map(|j| alpha[j] + off(j))
        .fold(f64::NEG_INFINITY, f64::max);
    let gersh_lo = (0..d)
        .map(|j| alpha[j] - off(j))
        .fold(f64::INFINITY, f64::min);
    let mut lo = if below.is_finite() {
        below.max(gersh_lo).min(hi)
    } else {
        gersh_lo
    };
    // eigenvalues below x: negative pivots of the LDLᵀ factorisation of T − xI
    let below_count = |x: f64| -> usize {
        let (mut count, mut p) = (0, 1.0);
        for j in 0..d {
            p = alpha[j]
                - x
                - if j > 0 {
                    beta[j - 1] * beta[j - 1] / p
                } else {
                    0.0
                };
            if p == 0.0 {
                p = -f64::EPSILON * (x.abs() + f64::MIN_POSITIVE);
            }
            count += usize::from(p < 0.0);
        }
        count
    };
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if mid <= lo || mid >= hi {
            break;
        }
        if below_count(mid) == d {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    hi
}

/// |s_d|, the last entry of the unit eigenvector of the tridiagonal (`alpha`, `beta`) for its
/// largest eigenvalue `theta`, by two steps of inverse iteration: θ'I − T with θ' just above θ
/// is positive definite, so its LDLᵀ needs no pivoting.
fn last_eigenvector_entry(alpha: &[f64], beta: &[f64], theta: f64) -> f64 {
    let d = alpha.len();
    let shift = theta + 1e-10 * theta.abs().max(f64::MIN_POSITIVE);
    // M = shift·I − T = L D Lᵀ, L unit lower bidiagonal with entries l_j
    let mut diag = vec![0.0; d];
    let mut l = vec![0.0; d];
    for j in 0..d {
        diag[j] = shift - alpha[j];
        if j > 0 {
            l[j] = -beta[j - 1] / diag[j - 1];
            diag[j] -= l[j] * l[j] * diag[j - 1];
        }
        if diag[j] <= 0.0 {
            diag[j] = f64::MIN_POSITIVE.max(1e-300);
        }
    }
    let mut s = vec![1.0; d];
    for _ in 0..2 {
        for j in 1..d {
            s[j] -= l[j] * s[j - 1];
        }
        for j in 0..d {
            s[j] /= diag[j];
        }
        for j in (0..d - 1).rev() {
            s[j] -= l[j + 1] * s[j + 1];
        }
        let norm = s.iter().map(|x| x * x).sum::<f64>().sqrt();
        if !(norm.is_finite() && norm > 0.0) {
            return 1.0;
        }
        s.iter_mut().for_each(|x| *x /= norm);
    }
    s[d - 1].abs()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ‖E‖_op against nalgebra's SVD: square, tall, wide, low-rank, a repeated top singular
    /// value, and zero.
    #[test]
    fn op_norm_equals_the_largest_singular_value() {
        let noise = |r: usize, c: usize, s: usize| {
            DMatrix::from_fn(r, c, |i, j| {
                (((i * 7919 + j * 104_729 + s * 31) % 1009) as f64 / 1009.0 - 0.5) * 2.0
            })
        };
        let low_rank = &noise(60, 3, 1) * noise(3, 45, 2);
        let mut repeated = DMatrix::<f64>::zeros(30, 30);
        for i in 0..30 {
            repeated[(i, i)] = if i < 3 { 2.0 } else { 1.0 / (1.0 + i as f64) };
        }
        for e in [
            noise(50, 50, 0),
            noise(80, 20, 3),
            noise(20, 80, 4),
            low_rank,
            repeated,
            DMatrix::zeros(7, 5),
        ] {
            let exact = e.singular_values().max();
            let got = op_norm(&e);
            assert!(
                (got - exact).abs() <= 1e-12 * exact.max(f64::MIN_POSITIVE),
                "{got} vs {exact} for a {:?} matrix",
                e.shape()
            );
        }
    }
}
