//! The top eigenvectors at a new state predicted from the eigen-solves before it, for solves
//! along a smooth path (the central flow's, at its solver's stages).
//!
//! There the eigenvectors are a smooth function of the state, and the states of the last few
//! solves span the directions the next one moves in (a DOP853 stage is a combination of the
//! step's earlier stages). The model linear in the state through them,
//!   q(x) ≈ Σ_i w_i q_i,  w = argmin ‖Σ_i w_i x_i − x‖² + λ‖w − e_r‖²  over Σ_i w_i = 1,
//! with r the newest state (where the states leave w undetermined, the ridge λ keeps the
//! prediction at the newest vector), is wrong at second order in the distance where the last
//! vector alone is wrong at first: on the default problem at η = 1 the first Rayleigh–Ritz's
//! residual starts near 1e-8 instead of 1e-7–1e-6, and the Krylov steps after it, which cut
//! the residual by only ~2.5× each there, are fewer.
//!
//! In displacements from the oldest state x_0 (the anchor), e_i = x_i − x_0 and γ = w_{1..},
//! the fit solves (EᵀE + λ(I + 11ᵀ)) γ = Eᵀ(x − x_0) + λ(1 + e_r): the matrix does not depend
//! on which state is the newest, so a new state adds a row to its Cholesky factor and a
//! prediction costs a dot product per state and two triangular solves. A factorisation per
//! solve made the README's 8 × 7 central flow, where a Hessian–vector product is ~7000
//! multiply–adds, 1.15× slower.

use nalgebra::DMatrix;

/// ⟨a, b⟩ in four interleaved partial sums: the model's products pipeline instead of waiting
/// on one sum (its order is its own, unlike the Krylov methods' [`crate::vector::dot`]).
fn dot(a: &[f64], b: &[f64]) -> f64 {
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let tail: f64 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    let mut acc = [0.0; 4];
    for (x, y) in ca.zip(cb) {
        for l in 0..4 {
            acc[l] += x[l] * y[l];
        }
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// λ as a fraction of the largest ‖e_i‖² when the factor was built. The fit's useful
/// directions include very small ones: in a first version (a pseudo-inverse of the Gram
/// matrix of displacements from the newest state, instead of this ridge) a cut at 1e-16 of
/// its largest eigenvalue gave fewer products than at 1e-14, 1e-10 or 1e-8. With the ridge,
/// 1e-15 let the fit extrapolate wildly (twice the products), 1e-13 needs as few products as
/// that pseudo-inverse, 1e-12 and 1e-10 10% and 45% more; pulled towards the anchor instead of
/// the newest state, 20% more.
const RIDGE: f64 = 1e-13;

/// A fit that leaves more than this fraction of the displacement unexplained (the state
/// left the span of the last ones) predicts nothing.
const UNEXPLAINED: f64 = 0.5;

/// Recent solves' states and top vectors, and the Cholesky factor of the fit's matrix. The
/// factor is built again when the number of states reaches a power of two and when the
/// model is full (it then keeps its newest half), λ with it.
#[derive(Debug, Clone)]
pub(super) struct Prediction {
    capacity: usize,
    /// Oldest first: the anchor x_0, then the states after it.
    states: Vec<Vec<f64>>,
    /// Each state's top vectors, rotated to the basis of their span nearest the state before's
    /// ([`aligned`]).
    tops: Vec<Vec<Vec<f64>>>,
    /// e_i = x_i − x_0 for i ≥ 1.
    moves: Vec<Vec<f64>>,
    lambda: f64,
    /// Row i of the lower Cholesky factor of EᵀE + λ(I + 11ᵀ).
    factor: Vec<Vec<f64>>,
}

/// The basis Q R of the span of `tops` closest to `last` (R orthogonal: the orthogonal
/// Procrustes solution, R = UVᵀ from Qᵀ Q_last = UΣVᵀ). Held eigenvalues all sit at 2/η, so a
/// solver returns any basis of their span, and only a basis aligned to the last one varies
/// smoothly from state to state; for one vector, R is its sign.
fn aligned(tops: Vec<Vec<f64>>, last: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let p = tops.len();
    let overlap = DMatrix::from_fn(p, p, |a, b| dot(&tops[a], &last[b]));
    let svd = overlap.svd(true, true);
    let (Some(u), Some(v_t)) = (svd.u, svd.v_t) else {
        return tops;
    };
    let r = u * v_t;
    (0..p)
        .map(|b| {
            let mut q = vec![0.0; tops[0].len()];
            for (a, t) in tops.iter().enumerate() {
                q.iter_mut().zip(t).for_each(|(o, v)| *o += r[(a, b)] * v);
            }
            q
        })
        .collect()
}

/// A new state's displacement from the anchor, and the factor's row for it: what a
/// prediction computes and the update after the solve reuses.
pub(super) struct Displacement {
    moved: Vec<f64>,
    /// ‖moved‖².
    tt: f64,
    row: Vec<f64>,
}

impl Prediction {
    /// A model through at most `capacity` states (at least 4).
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(4),
            states: vec![],
            tops: vec![],
            moves: vec![],
            lambda: 0.0,
            factor: vec![],
        }
    }

    pub(super) fn capacity(&self) -> usize {
        self.capacity
    }

    /// The `count` top vectors predicted at `state` (none until two states of solves for
    /// `count` pairs are known, or where the fit fails), and the displacement the update
    /// after the solve needs (`None`: the model starts again at `state`).
    pub(super) fn predict(
        &self,
        state: &[f64],
        count: usize,
    ) -> (Vec<Vec<f64>>, Option<Displacement>) {
        let (Some(anchor), Some(anchor_tops)) = (self.states.first(), self.tops.first()) else {
            return (vec![], None);
        };
        if anchor_tops.len() != count || anchor.len() != state.len() {
            return (vec![], None);
        }
        let moved: Vec<f64> = state.iter().zip(anchor).map(|(x, a)| x - a).collect();
        let b: Vec<f64> = self.moves.iter().map(|e| dot(e, &moved)).collect();
        let tt = dot(&moved, &moved);
        let l = b.len();
        if l == 0 {
            let row = vec![];
            return (vec![], Some(Displacement { moved, tt, row }));
        }
        let (row, y, gamma) = self.weights(&b);
        // ‖t − Eγ‖² = ‖t‖² − 2γᵀb + ‖Eγ‖², and γᵀ(EᵀE + λ(I + 11ᵀ))γ = ‖Fᵀγ‖² = ‖y‖²
        let sum: f64 = gamma.iter().sum();
        let fitted = dot(&y, &y) - self.lambda * (dot(&gamma, &gamma) + sum * sum);
        let unexplained = tt - 2.0 * dot(&gamma, &b) + fitted;
        if !(gamma.iter().all(|v| v.is_finite()) && unexplained <= UNEXPLAINED.powi(2) * tt) {
            // the state left the span of the last ones (a new segment, a jump): the model
            // starts again from it rather than keep states that no longer describe the path
            return (vec![], None);
        }
        let predicted: Vec<Vec<f64>> = (0..count)
            .map(|a| {
                let mut p = anchor_tops[a].clone();
                for (q, g) in self.tops[1..].iter().zip(&gamma) {
                    p.iter_mut()
                        .zip(q[a].iter().zip(&anchor_tops[a]))
                        .for_each(|(o, (qi, q0))| *o += g * (qi - q0));
                }
                p
            })
            // a vector far off the unit sphere is a bad fit's
            .filter(|p| (0.5..=1.5).contains(&dot(p, p).sqrt()))
            .collect();
        let predicted = if predicted.len() == count {
            predicted
        } else {
            vec![]
        };
        (predicted, Some(Displacement { moved, tt, row }))
    }

    /// From b_i = ⟨e_i, x − x_0⟩: the factor's row for x (F row = b + λ1), y (F y = b +
    /// λ(1 + e_r), the newest state r the last displacement's) and the weights γ (Fᵀγ = y).
    fn weights(&self, b: &[f64]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let l = b.len();
        let mut y: Vec<f64> = b.iter().map(|v| v + self.lambda).collect();
        y[l - 1] += self.lambda;
        self.forward(&mut y);
        // the row's right-hand side is y's less λe_r, and F⁻¹e_r = e_r/F_rr
        let mut row = y.clone();
        row[l - 1] -= self.lambda / self.factor[l - 1][l - 1];
        // by the columns of Fᵀ, which are F's rows: contiguous updates
        let mut gamma = y.clone();
        for i in (0..l).rev() {
            let f = &self.factor[i];
            let gi = gamma[i] / f[i];
            gamma[i] = gi;
            gamma[..i]
                .iter_mut()
                .zip(&f[..i])
                .for_each(|(g, fij)| *g -= fij * gi);
        }
        (row, y, gamma)
    }

    /// y ← F⁻¹y, F the factor.
    fn forward(&self, y: &mut [f64]) {
        for i in 0..y.len() {
            let f = &self.factor[i];
            y[i] = (y[i] - dot(&f[..i], &y[..i])) / f[i];
        }
    }

    /// Adds a solve's `state` and its top vectors (`displacement` from [`Self::predict`] at
    /// it; `None` starts the model again there).
    pub(super) fn record(
        &mut self,
        state: &[f64],
        mut tops: Vec<Vec<f64>>,
        displacement: Option<Displacement>,
    ) {
        let Some(Displacement { moved, tt, mut row }) = displacement else {
            *self = Self::new(self.capacity);
            self.states.push(state.to_vec());
            self.tops.push(tops);
            return;
        };
        if tt == 0.0 {
            // the anchor again: nothing new to fit through
            return;
        }
        if let Some(last) = self.tops.last() {
            tops = aligned(tops, last);
        }
        self.states.push(state.to_vec());
        self.tops.push(tops);
        if self.states.len() > self.capacity {
            let drop = self.states.len() - self.capacity / 2;
            self.states.drain(..drop);
            self.tops.drain(..drop);
            self.rebuild();
        } else if self.states.len().is_power_of_two() {
            self.rebuild();
        } else {
            let pivot_squared = tt + 2.0 * self.lambda - dot(&row, &row);
            // at least λ in exact arithmetic: rounding must not make it less
            row.push(pivot_squared.max(self.lambda).sqrt());
            self.factor.push(row);
            self.moves.push(moved);
        }
    }

    /// The displacements, λ and the factor from the states, the oldest the anchor.
    fn rebuild(&mut self) {
        let anchor = &self.states[0];
        self.moves = self.states[1..]
            .iter()
            .map(|x| x.iter().zip(anchor).map(|(a, b)| a - b).collect())
            .collect();
        let l = self.moves.len();
        let gram = DMatrix::from_fn(l, l, |i, j| dot(&self.moves[i], &self.moves[j]));
        let largest = (0..l).map(|i| gram[(i, i)]).fold(0.0f64, f64::max);
        self.lambda = largest * RIDGE;
        let matrix = gram.map(|g| g + self.lambda) + DMatrix::identity(l, l) * self.lambda;
        self.factor = match matrix.cholesky() {
            Some(c) => {
                let f = c.l();
                (0..l)
                    .map(|i| (0..=i).map(|j| f[(i, j)]).collect())
                    .collect()
            }
            // positive definite in exact arithmetic (λ > 0); rounding can break that when the
            // states are nearly dependent: start again from the newest
            None => {
                let (state, tops) = (self.states.pop(), self.tops.pop());
                *self = Self::new(self.capacity);
                self.states.extend(state);
                self.tops.extend(tops);
                return;
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A vector function affine in the state, q(x) = c + A x, at states that span a
    /// three-dimensional affine subspace (many more states than it needs, as a solver's
    /// stages are).
    fn affine(x: &[f64]) -> Vec<f64> {
        (0..6)
            .map(|i| {
                let a: f64 = x
                    .iter()
                    .enumerate()
                    .map(|(j, v)| 0.01 * (((i * 7 + j * 3) % 5) as f64 - 2.0) * v)
                    .sum();
                a + if i == 0 { 1.0 } else { 0.0 }
            })
            .collect()
    }

    fn state(s: [f64; 3]) -> Vec<f64> {
        (0..10)
            .map(|j| {
                let d = [(j % 3) as f64, ((j * j) % 4) as f64 - 1.5, (j as f64).sin()];
                0.3 + s.iter().zip(d).map(|(a, b)| a * b).sum::<f64>()
            })
            .collect()
    }

    /// The model reproduces an affine function at new states in the span of the old ones,
    /// before and after the window is built again (capacity 8, 30 states); it predicts
    /// nothing off the span, or for another number of vectors.
    #[test]
    fn predicts_a_function_affine_in_the_state() {
        let mut model = Prediction::new(8);
        let mut made = 0;
        for k in 0..30 {
            let t = k as f64 * 0.1;
            let x = state([t, (1.3 * t).sin(), 0.2 * t * t]);
            let (predicted, displacement) = model.predict(&x, 1);
            // four states span the three-dimensional affine subspace the path lies in
            if k >= 4 {
                let p = predicted
                    .first()
                    .unwrap_or_else(|| panic!("state {k}: none"));
                let exact = affine(&x);
                let error = p
                    .iter()
                    .zip(&exact)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f64::max);
                assert!(error <= 1e-7, "state {k}: error {error:e}");
                made += 1;
            }
            model.record(&x, vec![affine(&x)], displacement);
        }
        assert_eq!(made, 26);
        let off: Vec<f64> = state([0.5, 0.1, 0.1])
            .iter()
            .enumerate()
            .map(|(j, v)| v + if j == 4 { 100.0 } else { 0.0 })
            .collect();
        assert!(model.predict(&off, 1).0.is_empty(), "off the span");
        let on = state([0.5, 0.1, 0.1]);
        assert!(model.predict(&on, 2).0.is_empty(), "two vectors");
        assert!(model.predict(&on, 2).1.is_none(), "two vectors start again");
    }

    /// A unit vector that depends smoothly and nonlinearly on the state.
    fn curved(x: &[f64]) -> Vec<f64> {
        let mut q = affine(x);
        let bend: f64 = x.iter().map(|v| v * v).sum::<f64>() * 0.02;
        q[1] += bend;
        q[2] += (x[0] * x[3]).sin() * 0.05;
        let n = dot(&q, &q).sqrt();
        q.iter().map(|v| v / n).collect()
    }

    /// Along a path in a three-dimensional affine subspace, the prediction of a nonlinear
    /// function is wrong at second order in the spacing of the states, the last value at
    /// first: halving the spacing divides the one error by 3 or more, the other by about 2.
    #[test]
    fn the_prediction_is_wrong_at_second_order_where_the_last_vector_is_at_first() {
        let errors = |h: f64| {
            let mut model = Prediction::new(32);
            let mut last = vec![];
            let distance = |a: &[f64], b: &[f64]| {
                a.iter()
                    .zip(b)
                    .map(|(x, y)| (x - y).abs())
                    .fold(0.0, f64::max)
            };
            for k in 0..=12 {
                // the same last state whatever the spacing
                let t = 1.2 - (12 - k) as f64 * h;
                let x = state([t, (1.3 * t).sin(), 0.2 * t * t]);
                let (predicted, displacement) = model.predict(&x, 1);
                let exact = curved(&x);
                if k == 12 {
                    return (distance(&predicted[0], &exact), distance(&last, &exact));
                }
                model.record(&x, vec![exact.clone()], displacement);
                last = exact;
            }
            unreachable!()
        };
        let (p1, l1) = errors(0.1);
        let (p2, l2) = errors(0.05);
        assert!(
            p1 < l1 / 10.0 && p2 < l2 / 10.0,
            "{p1:e} {l1:e}, {p2:e} {l2:e}"
        );
        assert!(p1 / p2 > 3.0, "prediction: {p1:e} → {p2:e}");
        assert!(
            l1 / l2 > 1.7 && l1 / l2 < 2.5,
            "last vector: {l1:e} → {l2:e}"
        );
    }

    /// Along a smooth curve through six dimensions, with rows added one at a time between
    /// the rebuilds at 2, 4 and 8 states: the factor is the Cholesky factor of
    /// EᵀE + λ(I + 11ᵀ), and the weights solve the normal equations to rounding.
    #[test]
    fn the_factor_and_the_weights_are_the_normal_equations() {
        let x = |t: f64| -> Vec<f64> {
            (0..20)
                .map(|j| {
                    0.2 + (0..6)
                        .map(|d| {
                            let c = ((d + 1) as f64 * 0.9 * t + d as f64).sin();
                            c * ((j * (d + 2)) as f64 * 0.61).cos()
                        })
                        .sum::<f64>()
                })
                .collect()
        };
        let mut model = Prediction::new(16);
        for k in 0..15 {
            let xk = x(0.15 * k as f64);
            let (_, displacement) = model.predict(&xk, 1);
            assert_eq!(model.states.len(), k, "no restart along the curve");
            let l = model.moves.len();
            if l > 0 {
                let lambda = model.lambda;
                let m = DMatrix::from_fn(l, l, |i, j| {
                    dot(&model.moves[i], &model.moves[j]) + lambda * if i == j { 2.0 } else { 1.0 }
                });
                let f =
                    DMatrix::from_fn(l, l, |i, j| if j <= i { model.factor[i][j] } else { 0.0 });
                let gap = (&f * f.transpose() - &m).abs().max() / m.abs().max();
                assert!(gap <= 1e-12, "{k} states: the factor is off by {gap:e}");
                let t: Vec<f64> = xk
                    .iter()
                    .zip(&model.states[0])
                    .map(|(a, b)| a - b)
                    .collect();
                let b: Vec<f64> = model.moves.iter().map(|e| dot(e, &t)).collect();
                let (_, _, gamma) = model.weights(&b);
                let gamma = nalgebra::DVector::from_vec(gamma);
                let rhs = nalgebra::DVector::from_fn(l, |i, _| {
                    b[i] + lambda * if i + 1 == l { 2.0 } else { 1.0 }
                });
                let residual = (&m * &gamma - &rhs).norm() / (m.norm() * gamma.norm());
                assert!(
                    residual <= 1e-12,
                    "{k} states: the weights' residual {residual:e}"
                );
            }
            let q: Vec<f64> = xk.iter().map(|v| 0.3 * v.sin()).chain([1.0]).collect();
            let n = dot(&q, &q).sqrt();
            model.record(&xk, vec![q.iter().map(|v| v / n).collect()], displacement);
        }
    }
}
