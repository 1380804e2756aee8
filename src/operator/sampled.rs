//! Operators that store no matrix: the identity (plain factorisation) and entry sampling
//! (matrix completion).

use rand::Rng;

use super::{Counter, OperatorCounts, SensingOperator};

/// 𝒜 = vec: plain matrix factorisation.
pub struct IdentityOperator {
    n1: usize,
    n2: usize,
    counter: Counter,
}

impl IdentityOperator {
    pub fn new(n1: usize, n2: usize) -> Self {
        Self {
            n1,
            n2,
            counter: Counter::default(),
        }
    }
}

impl SensingOperator for IdentityOperator {
    fn n1(&self) -> usize {
        self.n1
    }
    fn n2(&self) -> usize {
        self.n2
    }
    fn m(&self) -> usize {
        self.n1 * self.n2
    }
    fn apply(&self, x: &[f64], out: &mut [f64]) {
        self.counter.apply();
        out.copy_from_slice(x);
    }
    fn adjoint(&self, z: &[f64], out: &mut [f64]) {
        self.counter.adjoint();
        out.copy_from_slice(z);
    }
    fn measurement_matrix(&self, i: usize, out: &mut [f64]) {
        out.fill(0.0);
        out[i] = 1.0;
    }
    fn counts(&self) -> OperatorCounts {
        self.counter.counts()
    }
    fn name(&self) -> &'static str {
        "identity"
    }
    fn entries_per_pass(&self) -> usize {
        self.n1 * self.n2
    }
}

/// Matrix completion: A_i = s·e_a e_bᵀ for m distinct entries (a, b), with s = √(n1·n2/m) so
/// that 𝒜*𝒜 = (n1·n2/m)·P_Ω and E‖𝒜(Z)‖² = ‖Z‖².
pub struct EntryOperator {
    n1: usize,
    n2: usize,
    /// Column-major linear index a + b·n1 of each sampled entry.
    entries: Vec<usize>,
    scale: f64,
    counter: Counter,
}

impl EntryOperator {
    /// m distinct entries drawn uniformly (`rand::seq::index::sample`), kept in drawn order.
    pub fn sample(n1: usize, n2: usize, m: usize, rng: &mut impl Rng) -> Self {
        let entries = rand::seq::index::sample(rng, n1 * n2, m).into_vec();
        Self::new(n1, n2, entries)
    }

    pub fn new(n1: usize, n2: usize, entries: Vec<usize>) -> Self {
        let scale = ((n1 * n2) as f64 / entries.len() as f64).sqrt();
        Self {
            n1,
            n2,
            entries,
            scale,
            counter: Counter::default(),
        }
    }
}

impl SensingOperator for EntryOperator {
    fn n1(&self) -> usize {
        self.n1
    }
    fn n2(&self) -> usize {
        self.n2
    }
    fn m(&self) -> usize {
        self.entries.len()
    }
    fn apply(&self, x: &[f64], out: &mut [f64]) {
        self.counter.apply();
        for (o, &e) in out.iter_mut().zip(&self.entries) {
            *o = self.scale * x[e];
        }
    }
    fn adjoint(&self, z: &[f64], out: &mut [f64]) {
        self.counter.adjoint();
        out.fill(0.0);
        for (&zi, &e) in z.iter().zip(&self.entries) {
            out[e] += self.scale * zi;
        }
    }
    fn measurement_matrix(&self, i: usize, out: &mut [f64]) {
        out.fill(0.0);
        out[self.entries[i]] = self.scale;
    }
    fn counts(&self) -> OperatorCounts {
        self.counter.counts()
    }
    fn name(&self) -> &'static str {
        "entries"
    }
    fn entries_per_pass(&self) -> usize {
        // a pass also fills or reads the n1×n2 matrix
        self.entries.len() + self.n1 * self.n2
    }
}
