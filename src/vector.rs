//! Slice arithmetic the Krylov methods share (the sharpness, the central flow's
//! projections): the same sums in the same order everywhere.

/// ⟨a, b⟩, summed in index order.
pub(crate) fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// ‖a‖₂.
pub(crate) fn norm(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}

/// Remove from `v` its components along the orthonormal `basis`, twice (classical
/// Gram–Schmidt repeated: stable to rounding).
pub(crate) fn orthogonalise(basis: &[Vec<f64>], v: &mut [f64]) {
    for _ in 0..2 {
        for q in basis {
            let c = dot(q, v);
            v.iter_mut().zip(q).for_each(|(x, qi)| *x -= c * qi);
        }
    }
}
