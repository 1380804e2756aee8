//! Quantities recorded at every output time, for GD and for the flow alike.

use nalgebra::DMatrix;
use serde::{Deserialize, Serialize};

use crate::field::{VectorField, Workspace};

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
}

/// Computes [`Record`]s against a fixed target and start.
pub struct Recorder<'f> {
    field: &'f VectorField,
    x_star: DMatrix<f64>,
    x_star_norm: f64,
    d0: DMatrix<f64>,
}

/// D(U, V) = UᵀU − VᵀV.
pub fn balance(field: &VectorField, state: &[f64]) -> DMatrix<f64> {
    let (u, v) = field.split(state);
    u.tr_mul(&u) - v.tr_mul(&v)
}

/// Singular values of UVᵀ from the k×k core R_U R_Vᵀ of the QR factors, exact and
/// O((n1 + n2)k²) instead of an n1×n2 SVD; zero-padded to k values.
pub fn product_singular_values(field: &VectorField, state: &[f64]) -> Vec<f64> {
    let (u, v) = field.split(state);
    let ru = u.clone_owned().qr().r();
    let rv = v.clone_owned().qr().r();
    let core = ru * rv.transpose();
    let mut sv: Vec<f64> = core.singular_values().iter().copied().collect();
    sv.sort_by(|a, b| b.total_cmp(a));
    sv.resize(field.k(), 0.0);
    sv
}

impl<'f> Recorder<'f> {
    pub fn new(field: &'f VectorField, x_star: &DMatrix<f64>, start: &[f64]) -> Self {
        Self {
            field,
            x_star: x_star.clone(),
            x_star_norm: x_star.norm(),
            d0: balance(field, start),
        }
    }

    pub fn record(&self, step: usize, t: f64, state: &[f64], ws: &mut Workspace) -> Record {
        let loss = self.field.loss(state, ws);
        let x = self.field.product(state);
        let rel_error = (x - &self.x_star).norm() / self.x_star_norm;
        let balance_drift = (balance(self.field, state) - &self.d0).norm();
        Record {
            step,
            t,
            loss,
            rel_error,
            balance_drift,
            sv: product_singular_values(self.field, state),
        }
    }
}
