//! Quantities recorded at every output time, for every dynamics alike: every column is a
//! [`Quantity`] — the built-in ones (loss, errors, spectrum, the theory's) and any a user adds —
//! and a [`Record`] holds one value per column, read by name.

use std::sync::Arc;

use nalgebra::DMatrix;

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
    /// The field evaluated at the state: [`Workspace::g`] is G there (a user's quantity always
    /// sees it so; the built-in loss column may be given the loss alone, see
    /// [`Recorder::needs_gradient`]).
    pub workspace: &'a Workspace,
}

/// The columns of a trajectory's records: names, and which hold integers.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    pub names: Vec<String>,
    pub integer: Vec<bool>,
}

/// Columns a run fills after the record is measured (MATH §8): λ_max(∇²f) where computed, the
/// central flow's tr Σ and its number of active eigenvalues (empty where they do not apply).
pub const SET_BY_RUN: [(&str, bool); 5] = [
    ("sharpness", false),
    ("sigma_trace", false),
    ("active", true),
    ("distance", false),
    ("distance_rel", false),
];

impl Header {
    /// The columns of a run's records: the built-in quantities' (for width `k`), those a run
    /// sets ([`SET_BY_RUN`]), then the user's.
    pub fn standard(k: usize, extra: &[String]) -> Self {
        let mut names: Vec<String> = Basic::COLUMNS.iter().map(|s| s.to_string()).collect();
        names.extend(Spectrum::columns_for(k));
        let mut integer = vec![false; names.len()];
        for (name, int) in SET_BY_RUN {
            names.push(name.into());
            integer.push(int);
        }
        names.extend(extra.iter().cloned());
        integer.resize(names.len(), false);
        Self { names, integer }
    }

    fn index(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }
}

/// One row of a trajectory: a value (or none) for every column of its [`Header`], read by
/// name. The built-in columns have accessors; any other (a user's [`Quantity`]) is read with
/// [`Record::get`].
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub step: usize,
    pub t: f64,
    header: Arc<Header>,
    values: Vec<Option<f64>>,
}

impl Record {
    /// A record of `values` under `header` (one value per column).
    pub fn new(step: usize, t: f64, header: Arc<Header>, values: Vec<Option<f64>>) -> Self {
        assert_eq!(header.names.len(), values.len(), "a value per column");
        Self {
            step,
            t,
            header,
            values,
        }
    }
    pub fn header(&self) -> &Header {
        &self.header
    }
    /// The values, in the header's order.
    pub fn values(&self) -> &[Option<f64>] {
        &self.values
    }
    /// The value of column `name`; `None` where the column is absent or the cell empty.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.header.index(name).and_then(|i| self.values[i])
    }
    /// Set column `name`, one of the header's.
    pub fn set(&mut self, name: &str, value: Option<f64>) {
        let i = self
            .header
            .index(name)
            .unwrap_or_else(|| panic!("no column `{name}` in this record"));
        self.values[i] = value;
    }
    fn num(&self, name: &str) -> f64 {
        self.get(name).unwrap_or(f64::NAN)
    }
    pub fn loss(&self) -> f64 {
        self.num("loss")
    }
    /// ‖UVᵀ − X*‖_F / ‖X*‖_F.
    pub fn rel_error(&self) -> f64 {
        self.num("rel_error")
    }
    /// ‖UᵀU − VᵀV − D_0‖_F.
    pub fn balance_drift(&self) -> f64 {
        self.num("balance_drift")
    }
    /// Singular values of UVᵀ, largest first, k of them.
    pub fn sv(&self) -> Vec<f64> {
        (1..)
            .map_while(|i| self.header.index(&format!("sv_{i}")))
            .map(|c| self.values[c].unwrap_or(f64::NAN))
            .collect()
    }
    /// ρ = ‖E‖_op / ‖X* − UVᵀ‖_op with E = −G − (X* − UVᵀ): the perturbation the dynamics
    /// sees relative to the residual (MATH §5).
    pub fn rho(&self) -> f64 {
        self.num("rho")
    }
    /// Signal strength σ_r(L*ᵀU) (MATH §6).
    pub fn signal_u(&self) -> f64 {
        self.num("signal_u")
    }
    /// Signal strength σ_r(R*ᵀV).
    pub fn signal_v(&self) -> f64 {
        self.num("signal_v")
    }
    /// ‖sin Θ‖_op between the top-r left singular space of UVᵀ and L*.
    pub fn sin_theta_u(&self) -> f64 {
        self.num("sin_theta_u")
    }
    /// The same on the right, against R*.
    pub fn sin_theta_v(&self) -> f64 {
        self.num("sin_theta_v")
    }
    /// ‖(I − L*L*ᵀ)U‖_F.
    pub fn spurious_u(&self) -> f64 {
        self.num("spurious_u")
    }
    /// ‖(I − R*R*ᵀ)V‖_F.
    pub fn spurious_v(&self) -> f64 {
        self.num("spurious_v")
    }
    /// λ_max(∇²f), where computed (see `sharpness_every`).
    pub fn sharpness(&self) -> Option<f64> {
        self.get("sharpness")
    }
    /// tr Σ of the central flow.
    pub fn sigma_trace(&self) -> Option<f64> {
        self.get("sigma_trace")
    }
    /// The central flow's number of active eigenvalues.
    pub fn active(&self) -> Option<usize> {
        self.get("active").map(|v| v as usize)
    }
}

/// Loss, relative error and balance drift.
struct Basic {
    x_star_norm: f64,
    d0: DMatrix<f64>,
}

impl Basic {
    const COLUMNS: [&'static str; 3] = ["loss", "rel_error", "balance_drift"];
}

impl Quantity for Basic {
    fn columns(&self) -> Vec<String> {
        Self::COLUMNS.iter().map(|s| s.to_string()).collect()
    }
    fn measure(&self, at: &At<'_>) -> Vec<f64> {
        let rel_error = (at.x_star - at.product).norm() / self.x_star_norm;
        let drift = (balance(at.field, at.state) - &self.d0).norm();
        vec![at.workspace.loss, rel_error, drift]
    }
}

/// The singular values of UVᵀ and the theory's quantities of MATH §5–6, which share its
/// factored SVD.
struct Spectrum {
    k: usize,
    /// Orthonormal bases of X*'s column and row spaces (n1×r, n2×r).
    l_star: DMatrix<f64>,
    r_star: DMatrix<f64>,
    /// L*Σ*, so that X* = (L*Σ*)R*ᵀ.
    l_star_sigma: DMatrix<f64>,
}

impl Spectrum {
    const THEORY: [&'static str; 7] = [
        "rho",
        "signal_u",
        "signal_v",
        "sin_theta_u",
        "sin_theta_v",
        "spurious_u",
        "spurious_v",
    ];
    /// How many columns [`Self::columns_for`] names.
    fn width(k: usize) -> usize {
        k + Self::THEORY.len()
    }
    fn columns_for(k: usize) -> Vec<String> {
        let mut c: Vec<String> = (1..=k).map(|i| format!("sv_{i}")).collect();
        c.extend(Self::THEORY.iter().map(|s| s.to_string()));
        c
    }
}

impl Quantity for Spectrum {
    fn columns(&self) -> Vec<String> {
        Self::columns_for(self.k)
    }
    fn measure(&self, at: &At<'_>) -> Vec<f64> {
        let (u, v) = at.field.factors().split(at.state);
        let k = self.k;
        // UVᵀ and X* − UVᵀ = [L*Σ*, U]·[R*, −V]ᵀ through the cores of their factors
        let product = FactoredSvd::of(u, v);
        let mut out = product.values.clone();
        out.resize(k, 0.0);
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
        let resid_op = FactoredSvd::values_of(a.as_view(), b.as_view())
            .first()
            .copied()
            .unwrap_or(0.0);
        let rho = if resid_op > 0.0 {
            // E = −G − (X* − UVᵀ), entry by entry in that order
            let e = at
                .workspace
                .g()
                .zip_zip_map(at.x_star, at.product, |g, s, x| -g - (s - x));
            op_norm(&e) / resid_op
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
        out.extend([
            rho,
            sigma_r(&(self.l_star.transpose() * u), r),
            sigma_r(&(self.r_star.transpose() * v), r),
            sin_theta(&lx, &self.l_star),
            sin_theta(&rx, &self.r_star),
            spurious(&self.l_star, &u),
            spurious(&self.r_star, &v),
        ]);
        out
    }
}

/// The numerical rank of a target (relative threshold as in
/// [`crate::problem::nonzero_singular_values`]).
fn rank_of(x: &DMatrix<f64>) -> usize {
    crate::problem::nonzero_singular_values(x).len()
}

/// Computes [`Record`]s against a fixed target and start: the built-in quantities
/// ([`Header::standard`]), then the user's.
pub struct Recorder<'f> {
    field: &'f dyn Field,
    x_star: DMatrix<f64>,
    d0: DMatrix<f64>,
    builtin: [Arc<dyn Quantity>; 2],
    quantities: Vec<Arc<dyn Quantity>>,
    header: Arc<Header>,
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
    let mut sv = FactoredSvd::values_of(u, v);
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
        let d0 = balance(field, start);
        let k = field.factors().k;
        Self {
            field,
            x_star: x_star.clone(),
            builtin: [
                Arc::new(Basic {
                    x_star_norm: x_star.norm(),
                    d0: d0.clone(),
                }),
                Arc::new(Spectrum {
                    k,
                    l_star,
                    r_star,
                    l_star_sigma,
                }),
            ],
            d0,
            quantities: Vec::new(),
            header: Arc::new(Header::standard(k, &[])),
        }
    }

    /// Also record these quantities.
    pub fn with_quantities(mut self, quantities: &[Arc<dyn Quantity>]) -> Self {
        self.quantities.extend(quantities.iter().cloned());
        self.header = Arc::new(Header::standard(
            self.field.factors().k,
            &self.extra_columns(),
        ));
        self
    }

    /// The columns the added quantities fill, in order.
    pub fn extra_columns(&self) -> Vec<String> {
        self.quantities.iter().flat_map(|q| q.columns()).collect()
    }

    /// The columns of every record.
    pub fn header(&self) -> Arc<Header> {
        self.header.clone()
    }

    /// ‖UᵀU − VᵀV − D_0‖_F.
    /// UᵀU − VᵀV at the start, what the drift is measured from.
    /// The target X* the records measure against.
    pub fn x_star(&self) -> &DMatrix<f64> {
        &self.x_star
    }

    pub fn d0(&self) -> &DMatrix<f64> {
        &self.d0
    }

    pub fn balance_drift(&self, state: &[f64]) -> f64 {
        (balance(self.field, state) - &self.d0).norm()
    }

    /// The record at `state`, evaluating the field there (one rhs, two operator passes).
    pub fn record(&self, step: usize, t: f64, state: &[f64], ws: &mut Workspace) -> Record {
        self.record_with(step, t, state, ws, true)
    }

    /// Whether a record (with the spectral columns if `spectrum`) reads G: ρ does, and so may
    /// a user's quantity ([`At::workspace`]); the other built-in columns need only the loss.
    pub fn needs_gradient(&self, spectrum: bool) -> bool {
        spectrum || !self.quantities.is_empty()
    }

    /// [`Self::record`], with the spectral columns (sv_i, ρ, the theory's) only when
    /// `spectrum` (empty otherwise: `spectrum_every`). Without them (and without a user's
    /// quantity) the loss alone is evaluated: one application of 𝒜 (no 𝒜*), or nothing where
    /// `ws` holds it (the dot products it added to GD's pass, [`Field::evaluate_beside_loss`]).
    pub fn record_with(
        &self,
        step: usize,
        t: f64,
        state: &[f64],
        ws: &mut Workspace,
        spectrum: bool,
    ) -> Record {
        if self.needs_gradient(spectrum) {
            self.field.evaluate(state, ws);
        } else {
            self.field.evaluate_loss(state, ws);
        }
        self.record_evaluated_with(step, t, state, ws, spectrum)
    }

    /// Fill the spectral columns of `rec`, made at `state` without them: what
    /// [`Self::record_with`] would have put there (one evaluation of the field at `state`).
    pub fn fill_spectrum(&self, rec: &mut Record, state: &[f64], ws: &mut Workspace) {
        let full = self.record_with(rec.step, rec.t, state, ws, true);
        for name in self.builtin[1].columns() {
            rec.set(&name, full.get(&name));
        }
    }

    /// The record at `state` from a workspace that already holds the field's evaluation there
    /// (e.g. GD's own, at the iterate it steps from): no operator pass.
    pub fn record_evaluated(&self, step: usize, t: f64, state: &[f64], ws: &Workspace) -> Record {
        self.record_evaluated_with(step, t, state, ws, true)
    }

    /// [`Self::record_evaluated`], with the spectral columns only when `spectrum` (`ws` may
    /// then hold the loss alone, unless [`Self::needs_gradient`]).
    pub fn record_evaluated_with(
        &self,
        step: usize,
        t: f64,
        state: &[f64],
        ws: &Workspace,
        spectrum: bool,
    ) -> Record {
        if self.needs_gradient(spectrum) {
            assert!(
                ws.holds(state),
                "the workspace must hold the evaluation at `state`"
            );
        } else {
            assert!(
                ws.holds_loss(state),
                "the workspace must hold the loss at `state`"
            );
        }
        let x = self.field.product(state);
        let at = At {
            step,
            t,
            field: self.field,
            state,
            product: &x,
            x_star: &self.x_star,
            workspace: ws,
        };
        let mut values: Vec<Option<f64>> = Vec::with_capacity(self.header.names.len());
        let [basic, spectral] = &self.builtin;
        values.extend(basic.measure(&at).into_iter().map(Some));
        if spectrum {
            values.extend(spectral.measure(&at).into_iter().map(Some));
        } else {
            // empty cells, without making the columns' names for every record
            let width = Spectrum::width(self.field.factors().k);
            values.resize(values.len() + width, None);
        }
        values.extend(SET_BY_RUN.iter().map(|_| None));
        for q in &self.quantities {
            values.extend(q.measure(&at).into_iter().map(Some));
        }
        Record::new(step, t, self.header.clone(), values)
    }
}
