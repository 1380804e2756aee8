//! The real stability interval of an explicit Runge–Kutta tableau, shared by DOP853's
//! dense-output guard and `--method auto`'s stiffness test.

/// Where the stability region of an explicit Runge–Kutta method with `s` stages (its
/// tableau `a(i, j)`, `b(i)`) meets the negative real axis: the first x > 0 with
/// |R(−x)| > 1, R(z) = 1 + z·bᵀ(I − zA)⁻¹𝟙 its stability polynomial. The flow's Jacobian
/// −∇²f is symmetric, so its eigenvalues are real and this is the bound that binds.
pub fn real_stability_bound(
    s: usize,
    a: impl Fn(usize, usize) -> f64,
    b: impl Fn(usize) -> f64,
) -> f64 {
    let r = |z: f64| {
        let mut stages = vec![0.0; s];
        for i in 0..s {
            stages[i] = 1.0 + z * (0..i).map(|j| a(i, j) * stages[j]).sum::<f64>();
        }
        1.0 + z * (0..s).map(|i| b(i) * stages[i]).sum::<f64>()
    };
    let unstable = |x: f64| r(-x).abs() > 1.0;
    let mut hi = 1e-3;
    while !unstable(hi) {
        hi += 1e-3;
    }
    let mut lo = hi - 1e-3;
    for _ in 0..60 {
        let mid = 0.5 * (lo + hi);
        if unstable(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    lo
}
