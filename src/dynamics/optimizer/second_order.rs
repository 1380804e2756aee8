//! Second-order limits Ẍ + c(t)Ẋ = F(X) (MATH §9) as a first-order field on (X, Ẋ, τ):
//! heavy ball at β = 1 − γ√η has c = γ, Nesterov c = 3/t. The clock τ (τ' = 1) is part of the
//! state because the fields are autonomous; an explicit Runge–Kutta method integrates it
//! exactly, so it costs nothing in accuracy.

use std::sync::Arc;

use nalgebra::DMatrix;

use crate::field::{Factors, Field, Workspace};
use crate::operator::SensingOperator;

/// The friction c(τ) of a second-order limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Friction {
    /// c = γ (heavy ball, β = 1 − γ√η).
    Constant(f64),
    /// c = 3/τ (Nesterov's, Su–Boyd–Candès).
    Nesterov,
}

impl Friction {
    fn at(self, tau: f64) -> (f64, f64) {
        match self {
            Friction::Constant(g) => (g, 0.0),
            Friction::Nesterov => (3.0 / tau, -3.0 / (tau * tau)),
        }
    }
}

/// Ẍ + c(τ)Ẋ = F(X) on the state (X, Ẋ, τ), F an inner field.
#[derive(Clone)]
pub struct SecondOrder {
    inner: Arc<dyn Field>,
    friction: Friction,
}

impl SecondOrder {
    pub fn new(inner: Arc<dyn Field>, friction: Friction) -> Self {
        Self { inner, friction }
    }

    /// The state (x, v, τ).
    pub fn state(x: &[f64], v: &[f64], tau: f64) -> Vec<f64> {
        let mut s = Vec::with_capacity(2 * x.len() + 1);
        s.extend_from_slice(x);
        s.extend_from_slice(v);
        s.push(tau);
        s
    }

    fn n(&self) -> usize {
        self.inner.state_len()
    }
}

impl Field for SecondOrder {
    fn factors(&self) -> Factors {
        self.inner.factors()
    }
    fn operator(&self) -> &dyn SensingOperator {
        self.inner.operator()
    }
    fn observations(&self) -> &[f64] {
        self.inner.observations()
    }
    fn describe(&self) -> String {
        match self.friction {
            Friction::Constant(g) => format!("Ẍ + {g}Ẋ = F of {}", self.inner.describe()),
            Friction::Nesterov => format!("Ẍ + (3/t)Ẋ = F of {}", self.inner.describe()),
        }
    }
    fn state_len(&self) -> usize {
        2 * self.n() + 1
    }
    fn product(&self, state: &[f64]) -> DMatrix<f64> {
        self.inner.product(&state[..self.n()])
    }
    fn evaluate(&self, state: &[f64], ws: &mut Workspace) -> f64 {
        self.inner.evaluate(&state[..self.n()], ws)
    }
    fn loss(&self, state: &[f64], ws: &mut Workspace) -> f64 {
        self.inner.loss(&state[..self.n()], ws)
    }
    fn evaluate_loss(&self, state: &[f64], ws: &mut Workspace) -> f64 {
        self.inner.evaluate_loss(&state[..self.n()], ws)
    }
    /// (Ẋ, F(X) − c(τ)Ẋ, 1); returns f(X).
    fn rhs(&self, state: &[f64], out: &mut [f64], ws: &mut Workspace) -> f64 {
        let n = self.n();
        let (x, rest) = state.split_at(n);
        let (v, tau) = rest.split_at(n);
        let (c, _) = self.friction.at(tau[0]);
        let (ox, rest) = out.split_at_mut(n);
        let (ov, ot) = rest.split_at_mut(n);
        ox.copy_from_slice(v);
        let loss = self.inner.rhs(x, ov, ws);
        for (o, vi) in ov.iter_mut().zip(v) {
            *o -= c * vi;
        }
        ot[0] = 1.0;
        loss
    }
    /// (dv, J dx − c dv − c'(τ) dτ v, 0).
    fn jvp(&self, state: &[f64], dir: &[f64], out: &mut [f64], ws: &mut Workspace) {
        let n = self.n();
        let (x, rest) = state.split_at(n);
        let (v, tau) = rest.split_at(n);
        let (dx, rest) = dir.split_at(n);
        let (dv, dtau) = rest.split_at(n);
        let (c, dc) = self.friction.at(tau[0]);
        let (ox, rest) = out.split_at_mut(n);
        let (ov, ot) = rest.split_at_mut(n);
        ox.copy_from_slice(dv);
        self.inner.jvp(x, dx, ov, ws);
        for ((o, d), vi) in ov.iter_mut().zip(dv).zip(v) {
            *o -= c * d + dc * dtau[0] * vi;
        }
        ot[0] = 0.0;
    }
    fn rhs_cost_macs(&self) -> f64 {
        self.inner.rhs_cost_macs()
    }
    /// The Hessian of f at the position (the sharpness is the loss's).
    fn hvp(&self, state: &[f64], dir: &[f64], out: &mut [f64], ws: &mut Workspace) {
        let n = self.n();
        self.inner.hvp(&state[..n], &dir[..n], &mut out[..n], ws);
        out[n..].iter_mut().for_each(|o| *o = 0.0);
    }
}
