//! Quantities the theorems are about (MATH §6): phase boundaries detected from the recorded
//! signal, alignment and spurious parts, and the empirical RIP constant of an operator.

use nalgebra::DMatrix;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use super::record::Record;
use crate::operator::SensingOperator;
use crate::problem::sub_rng;

/// Stream of the random low-rank matrices of the RIP estimate.
pub const STREAM_RIP: u64 = 7;

/// Where the phases of MATH §6 end along one trajectory.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Phases {
    /// First recorded t at which both ‖sin Θ‖ (left and right) are ≤ the alignment
    /// tolerance: the top-r singular spaces of UVᵀ have turned to those of X*.
    pub end_of_alignment: Option<f64>,
    /// First recorded t at which σ_r(L*ᵀU)·σ_r(R*ᵀV) ≥ σ_r/2: the weakest direction of the
    /// target is half learned, and local refinement begins.
    pub end_of_growth: Option<f64>,
    pub alignment_tol: f64,
}

/// Detect the phase boundaries from records in time order. Records without the spectral
/// columns (`spectrum_every`) are passed over, so each time is found to the cadence's
/// resolution (`gdflow check` computes them at every record).
pub fn detect_phases(records: &[Record], sigma_r: f64, alignment_tol: f64) -> Phases {
    let end_of_alignment = records
        .iter()
        .find(|r| r.sin_theta_u().max(r.sin_theta_v()) <= alignment_tol)
        .map(|r| r.t);
    let end_of_growth = records
        .iter()
        .find(|r| r.signal_u() * r.signal_v() >= 0.5 * sigma_r)
        .map(|r| r.t);
    Phases {
        end_of_alignment,
        end_of_growth,
        alignment_tol,
    }
}

/// δ̂ = max |‖𝒜(Z)‖² − 1| over `samples` random unit-norm Z of rank `rank` (Z = ABᵀ with
/// Gaussian factors): a lower bound on the RIP constant δ_rank.
pub fn empirical_rip(op: &dyn SensingOperator, rank: usize, samples: usize, seed: u64) -> f64 {
    let (n1, n2) = (op.n1(), op.n2());
    let mut rng = sub_rng(seed, STREAM_RIP);
    let mut out = vec![0.0; op.m()];
    let mut worst: f64 = 0.0;
    for _ in 0..samples {
        let a = DMatrix::<f64>::from_fn(n1, rank, |_, _| StandardNormal.sample(&mut rng));
        let b = DMatrix::<f64>::from_fn(n2, rank, |_, _| StandardNormal.sample(&mut rng));
        let mut z = a * b.transpose();
        let norm = z.norm();
        if norm == 0.0 {
            continue;
        }
        z /= norm;
        op.apply(z.as_slice(), &mut out);
        let energy: f64 = out.iter().map(|v| v * v).sum();
        worst = worst.max((energy - 1.0).abs());
    }
    worst
}
