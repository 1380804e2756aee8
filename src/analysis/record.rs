//! Quantities recorded at every output time, for every dynamics alike: the built-in ones of
//! [`Record`], and any a user adds through [`Quantity`].

use std::sync::Arc;

use nalgebra::DMatrix;
use serde::{Deserialize, Serialize};

use super::lowrank::{op_norm, FactoredSvd};
use crate::field::{Field, Workspace};

/// A recorded quantity a user adds: its columns in `trajectory.csv` (after the built-in ones)
/// and its values at a state. See `examples/custom_quantity.rs`.
pub trait Quantity: Send + Sync {
    /// Column names, unique and distinct from the built-in ones.
    fn columns(&self) -> Vec<String>;
    /// One value per column at the state `at` describes.
    fn measure(&self, at: &At<'_>) -> Vec<f64>;
}

/// What a [`Quantity`] may look at.
pub struct At<'a> {
    pub step: usize,
    pub t: f64,
    pub field: &'a dyn Field,
    pub state: &'a [f64],
    /// UVᵀ.
    pub product: &'a DMatrix<f64>,
    pub x_star: &'a DMatrix<f64>,
    /// The field evaluated at the state: [`Workspace::g`] is G there.
    pub workspace: &'a Workspace,
}

/// One row of a trajectory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub step: usize,
    pub t: f64,
    pub loss: f64,
    /// ‖UVᵀ − X*‖_F / ‖X*‖_F.
    pub rel_error: f64,
    /// ‖UᵀU − VᵀV − D_0‖_F.
    pub balance_drift: f64,
    /// Singular values of UVᵀ, largest first, k of them.
    pub sv: Vec<f64>,
    /// ρ = ‖E‖_op / ‖X* − UVᵀ‖_op with E = −G − (X* − UVᵀ): the perturbation the dynamics
    /// sees relative to the residual (MATH §5).
    pub rho: f64,
    /// Signal strength σ_r(L*ᵀU) and σ_r(R*ᵀV) (MATH §6).
    pub signal_u: f64,
    pub signal_v: f64,
    /// ‖sin Θ‖_op between the top-r left (right) singular space of UVᵀ and L* (R*).
    pub sin_theta_u: f64,
    pub sin_theta_v: f64,
    /// Spurious parts ‖(I − L*L*ᵀ)U‖_F and ‖(I − R*R*ᵀ)V‖_F.
    pub spurious_u: f64,
    pub spurious_v: f64,
    /// λ_max(∇²f), where computed (see `sharpness_every`).
    #[serde(default)]
    pub sharpness: Option<f64>,
    /// tr Σ of the central flow (0 while no eigenvalue is active; none for other dynamics).
    #[serde(default)]
    pub sigma_trace: Option<f64>,
    /// The central flow's number of active eigenvalues.
    #[serde(default)]
    pub active: Option<usize>,
    /// The values of the user's [`Quantity`]s, in the order of their columns.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra: Vec<f64>,
}

/// The numerical rank of a target (relative threshold as in
/// [`crate::problem::nonzero_singular_values`]).
fn rank_of(x: &DMatrix<f64>) -> usize {
    crate::problem::nonzero_singular_values(x).len()
}

/// Computes [`Record`]s against a fixed target and start.
pub struct Recorder<'f> {
    field: &'f dyn Field,
    x_star: DMatrix<f64>,
    x_star_norm: f64,
    d0: DMatrix<f64>,
    /// Orthonormal bases of X*'s column and row spaces (n1×r, n2×r).
    l_star: DMatrix<f64>,
    r_star: DMatrix<f64>,
    /// L*Σ*, so that X* = (L*Σ*)R*ᵀ.
    l_star_sigma: DMatrix<f64>,
    quantities: Vec<Arc<dyn Quantity>>,
}

/// Top-`r` left and right singular vectors of `x`, by decreasing singular value, with the
/// singular values.
pub fn top_singular_spaces(x: &DMatrix<f64>, r: usize) -> (DMatrix<f64>, DMatrix<f64>, Vec<f64>) {
    let svd = x.clone().svd(true, true);
    let mut order: Vec<usize> = (0..svd.singular_values.len()).collect();
    order.sort_by(|&a, &b| svd.singular_values[b].total_cmp(&svd.singular_values[a]));
    let u = svd.u.expect("asked for U");
    let vt = svd.v_t.expect("asked for Vᵀ");
    let r = r.min(order.len());
    let l = DMatrix::from_fn(x.nrows(), r, |i, j| u[(i, order[j])]);
    let rr = DMatrix::from_fn(x.ncols(), r, |i, j| vt[(order[j], i)]);
    let values = order[..r].iter().map(|&i| svd.singular_values[i]).collect();
    (l, rr, values)
}

/// The r-th largest singular value of `m` (0 when it has fewer).
fn sigma_r(m: &DMatrix<f64>, r: usize) -> f64 {
    let mut sv: Vec<f64> = m.singular_values().iter().copied().collect();
    sv.sort_by(|a, b| b.total_cmp(a));
    if r == 0 {
        return 0.0;
    }
    sv.get(r - 1).copied().unwrap_or(0.0)
}

/// ‖sin Θ‖_op between span(a) and span(b), both orthonormal, b with r columns.
fn sin_theta(a: &DMatrix<f64>, b: &DMatrix<f64>) -> f64 {
    let r = b.ncols();
    if a.ncols() < r {
        return 1.0;
    }
    let c = sigma_r(&(b.transpose() * a), r);
    (1.0 - c * c).max(0.0).sqrt()
}

/// D(U, V) = UᵀU − VᵀV.
pub fn balance(field: &dyn Field, state: &[f64]) -> DMatrix<f64> {
    let (u, v) = field.factors().split(state);
    u.tr_mul(&u) - v.tr_mul(&v)
}

/// Singular values of UVᵀ from the k×k core R_U R_Vᵀ of the QR factors, exact and
/// O((n1 + n2)k²) instead of an n1×n2 SVD; zero-padded to k values.
pub fn product_singular_values(field: &dyn Field, state: &[f64]) -> Vec<f64> {
    let (u, v) = field.factors().split(state);
    let mut sv = FactoredSvd::of(u, v).values;
    sv.resize(field.factors().k, 0.0);
    sv
}

impl<'f> Recorder<'f> {
    pub fn new(field: &'f dyn Field, x_star: &DMatrix<f64>, start: &[f64]) -> Self {
        let (l_star, r_star, sigma) = top_singular_spaces(x_star, rank_of(x_star));
        let mut l_star_sigma = l_star.clone();
        for (j, s) in sigma.iter().enumerate() {
            l_star_sigma.column_mut(j).scale_mut(*s);
        }
        Self {
            field,
            x_star: x_star.clone(),
            x_star_norm: x_star.norm(),
            d0: balance(field, start),
            l_star,
            r_star,
            l_star_sigma,
            quantities: Vec::new(),
        }
    }

    /// Also record these quantities.
    pub fn with_quantities(mut self, quantities: &[Arc<dyn Quantity>]) -> Self {
        self.quantities.extend(quantities.iter().cloned());
        self
    }

    /// The columns the added quantities fill, in order.
    pub fn extra_columns(&self) -> Vec<String> {
        self.quantities.iter().flat_map(|q| q.columns()).collect()
    }

    /// ‖UᵀU − VᵀV − D_0‖_F.
    pub fn balance_drift(&self, state: &[f64]) -> f64 {
        (balance(self.field, state) - &self.d0).norm()
    }

    /// The record at `state`, evaluating the field there (one rhs, two operator passes).
    pub fn record(&self, step: usize, t: f64, state: &[f64], ws: &mut Workspace) -> Record {
        self.field.evaluate(state, ws);
        self.record_evaluated(step, t, state, ws)
    }

    /// The record at `state` from a workspace that already holds the field's evaluation there
    /// (e.g. GD's own, at the iterate it steps from): no operator pass.
    pub fn record_evaluated(&self, step: usize, t: f64, state: &[f64], ws: &Workspace) -> Record {
        assert!(
            ws.holds(state),
            "the workspace must hold the evaluation at `state`"
        );
        let loss = ws.loss;
        let x = self.field.product(state);
        let extra = self
            .quantities
            .iter()
            .flat_map(|q| {
                q.measure(&At {
                    step,
                    t,
                    field: self.field,
                    state,
                    product: &x,
                    x_star: &self.x_star,
                    workspace: ws,
                })
            })
            .collect();
        let resid = &self.x_star - &x;
        let rel_error = resid.norm() / self.x_star_norm;
        let balance_drift = (balance(self.field, state) - &self.d0).norm();
        let (u, v) = self.field.factors().split(state);
        let k = self.field.factors().k;
        // UVᵀ and X* − UVᵀ = [L*Σ*, U]·[R*, −V]ᵀ through the cores of their factors
        let product = FactoredSvd::of(u, v);
        let mut sv = product.values.clone();
        sv.resize(k, 0.0);
        let a = DMatrix::from_fn(u.nrows(), self.l_star.ncols() + k, |i, j| {
            if j < self.l_star.ncols() {
                self.l_star_sigma[(i, j)]
            } else {
                u[(i, j - self.l_star.ncols())]
            }
        });
        let b = DMatrix::from_fn(v.nrows(), self.r_star.ncols() + k, |i, j| {
            if j < self.r_star.ncols() {
                self.r_star[(i, j)]
            } else {
                -v[(i, j - self.r_star.ncols())]
            }
        });
        let resid_op = FactoredSvd::of(a.as_view(), b.as_view())
            .values
            .first()
            .copied()
            .unwrap_or(0.0);
        let rho = if resid_op > 0.0 {
            op_norm(&(-ws.g() - &resid)) / resid_op
        } else {
            0.0
        };
        let r = self.l_star.ncols();
        let top = r.min(k);
        let lx = product.left.columns(0, top).clone_owned();
        let rx = product.right.columns(0, top).clone_owned();
        let spurious = |basis: &DMatrix<f64>, f: &nalgebra::DMatrixView<f64>| {
            (f - basis * (basis.transpose() * f)).norm()
        };
        Record {
            step,
            t,
            loss,
            rel_error,
            balance_drift,
            sv,
            rho,
            signal_u: sigma_r(&(self.l_star.transpose() * u), r),
            signal_v: sigma_r(&(self.r_star.transpose() * v), r),
            sin_theta_u: sin_theta(&lx, &self.l_star),
            sin_theta_v: sin_theta(&rx, &self.r_star),
            spurious_u: spurious(&self.l_star, &u),
            spurious_v: spurious(&self.r_star, &v),
            sharpness: None,
            sigma_trace: None,
            active: None,
            extra,
        }
    }
}
