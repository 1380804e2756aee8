//! The sensing field F = (−GV, −GᵀU), G = 𝒜*(𝒜(UVᵀ) − y), of f = ½‖𝒜(UVᵀ) − y‖² (MATH §2),
//! and of f = ¼‖𝒜(UUᵀ) − y‖² in the symmetric case (MATH §3).

use std::sync::Arc;

use nalgebra::{DMatrix, DMatrixView, DMatrixViewMut};

use super::{FactorGradient, Factors, Workspace};
use crate::operator::SensingOperator;
use crate::problem::Problem;

/// f(U, V) = ½‖𝒜(UVᵀ) − y‖² and its negative gradient field.
#[derive(Clone)]
pub struct SensingField {
    op: Arc<dyn SensingOperator>,
    y: Vec<f64>,
    /// m zeros: 𝒜*𝒜Ẋ is the residual–adjoint pass with y = 0.
    zeros: Vec<f64>,
    factors: Factors,
}

impl SensingField {
    /// The field of f = ½‖𝒜(UVᵀ) − y‖² with factors of width `k`.
    pub fn new(op: Arc<dyn SensingOperator>, y: Vec<f64>, k: usize) -> Self {
        assert_eq!(op.m(), y.len(), "one observation per measurement");
        let factors = Factors {
            n1: op.n1(),
            n2: op.n2(),
            k,
            symmetric: false,
        };
        let zeros = vec![0.0; y.len()];
        Self {
            op,
            y,
            zeros,
            factors,
        }
    }

    /// The symmetric flow U' = −GU of f = ¼‖𝒜(UUᵀ) − y‖² (needs n1 = n2 and symmetric A_i).
    pub fn symmetric(mut self) -> Self {
        assert_eq!(
            self.factors.n1, self.factors.n2,
            "the symmetric case needs n1 = n2"
        );
        self.factors.symmetric = true;
        self
    }

    /// The field of a problem (symmetric when the problem is).
    pub fn from_problem(p: &Problem) -> Self {
        let f = Self::new(p.op.clone(), p.y.clone(), p.width());
        if p.symmetric {
            f.symmetric()
        } else {
            f
        }
    }

    pub fn is_symmetric(&self) -> bool {
        self.factors.symmetric
    }

    /// The shared operator.
    pub fn operator_arc(&self) -> &Arc<dyn SensingOperator> {
        &self.op
    }

    /// ½ in f = ½‖𝒜(UVᵀ) − y‖², ¼ in the symmetric f = ¼‖𝒜(UUᵀ) − y‖².
    fn loss_factor(&self) -> f64 {
        if self.factors.symmetric {
            0.25
        } else {
            0.5
        }
    }

    /// f from its residual r = 𝒜(X) − y.
    fn loss_of(&self, r: &[f64]) -> f64 {
        self.loss_factor() * r.iter().map(|v| v * v).sum::<f64>()
    }
}

impl FactorGradient for SensingField {
    fn factors(&self) -> Factors {
        self.factors
    }
    fn operator(&self) -> &dyn SensingOperator {
        self.op.as_ref()
    }
    fn observations(&self) -> &[f64] {
        &self.y
    }
    fn describe(&self) -> String {
        if self.factors.symmetric {
            "sensing, symmetric".into()
        } else {
            "sensing".into()
        }
    }

    /// r = 𝒜(X) − y, G = 𝒜*(r): one pass over a dense operator.
    fn gradient(&self, ws: &mut Workspace) -> f64 {
        self.op
            .residual_adjoint(ws.x.as_slice(), &self.y, &mut ws.r, ws.g.as_mut_slice());
        self.loss_of(&ws.r)
    }

    /// Both gradients from one pass over a dense operator.
    fn gradient_pair(&self, a: &mut Workspace, b: &mut Workspace) -> (f64, f64) {
        self.op.residual_adjoint_pair(
            [a.x.as_slice(), b.x.as_slice()],
            &self.y,
            [&mut a.r, &mut b.r],
            [a.g.as_mut_slice(), b.g.as_mut_slice()],
        );
        (self.loss_of(&a.r), self.loss_of(&b.r))
    }

    /// G at `a` and the residual at `b` from one pass over a dense operator.
    fn gradient_beside_loss(&self, a: &mut Workspace, b: &mut Workspace) -> (f64, f64) {
        self.op.residual_adjoint_beside_residual(
            [a.x.as_slice(), b.x.as_slice()],
            &self.y,
            [&mut a.r, &mut b.r],
            a.g.as_mut_slice(),
        );
        (self.loss_of(&a.r), self.loss_of(&b.r))
    }

    /// G at `a` and `b` and the residual at `c` from one pass over a dense operator.
    fn gradient_pair_beside_loss(
        &self,
        a: &mut Workspace,
        b: &mut Workspace,
        c: &mut Workspace,
    ) -> (f64, f64, f64) {
        self.op.residual_adjoint_pair_beside_residual(
            [a.x.as_slice(), b.x.as_slice(), c.x.as_slice()],
            &self.y,
            [&mut a.r, &mut b.r, &mut c.r],
            [a.g.as_mut_slice(), b.g.as_mut_slice()],
        );
        (self.loss_of(&a.r), self.loss_of(&b.r), self.loss_of(&c.r))
    }

    /// Ġ = 𝒜*𝒜Ẋ, in one pass (the residual–adjoint pass with y = 0).
    fn gradient_dot(&self, ws: &mut Workspace) {
        self.op.residual_adjoint(
            ws.xdot.as_slice(),
            &self.zeros,
            &mut ws.rdot,
            ws.gdot.as_mut_slice(),
        );
    }

    /// Ġ for several Ẋ, two per pass over a dense operator.
    fn gradient_dot_many(
        &self,
        _ws: &mut Workspace,
        xdots: &[DMatrix<f64>],
        gdots: &mut [DMatrix<f64>],
    ) {
        let xs: Vec<&[f64]> = xdots.iter().map(|x| x.as_slice()).collect();
        let mut rdots = vec![vec![0.0; self.op.m()]; xdots.len()];
        let mut outs: Vec<&mut [f64]> = gdots.iter_mut().map(|g| g.as_mut_slice()).collect();
        self.op
            .residual_adjoint_many(&xs, &self.zeros, &mut rdots, &mut outs);
    }

    /// G is affine in X: G̈ = 𝒜*𝒜Ẍ.
    fn gradient_second(
        &self,
        ws: &mut Workspace,
        _xdot_u: &DMatrix<f64>,
        _xdot_w: &DMatrix<f64>,
        xddot: &DMatrix<f64>,
        out: &mut DMatrix<f64>,
    ) {
        self.op.residual_adjoint(
            xddot.as_slice(),
            &self.zeros,
            &mut ws.rdot,
            out.as_mut_slice(),
        );
    }

    fn loss_at(&self, x: &DMatrix<f64>, ws: &mut Workspace) -> f64 {
        self.op.apply(x.as_slice(), &mut ws.rdot);
        self.loss_factor()
            * ws.rdot
                .iter()
                .zip(&self.y)
                .map(|(a, y)| (a - y) * (a - y))
                .sum::<f64>()
    }

    /// 𝒜 applied to eight X per pass over the sensing matrix.
    fn loss_batch(&self, xs: &[DMatrix<f64>]) -> Option<Vec<f64>> {
        let views: Vec<&[f64]> = xs.iter().map(|x| x.as_slice()).collect();
        let mut rs = vec![vec![0.0; self.y.len()]; xs.len()];
        self.op.apply_block(&views, &mut rs);
        Some(
            rs.iter_mut()
                .map(|r| {
                    for (ri, yi) in r.iter_mut().zip(&self.y) {
                        *ri -= yi;
                    }
                    self.loss_of(r)
                })
                .collect(),
        )
    }

    /// With 𝒜 and 𝒜* applied to eight states per pass over the sensing matrix
    /// ([`SensingOperator::apply_block`]); every state's result is independent of the others
    /// in the batch (a batch of one included).
    fn rhs_batch(&self, states: &[&[f64]], outs: &mut [Vec<f64>]) -> Option<Vec<f64>> {
        if self.factors.symmetric {
            return None;
        }
        let f = self.factors;
        let (n1, n2, m) = (f.n1, f.n2, self.y.len());
        let xs: Vec<DMatrix<f64>> = states
            .iter()
            .map(|s| {
                let mut x = DMatrix::zeros(n1, n2);
                f.product_into(s, &mut x);
                x
            })
            .collect();
        let views: Vec<&[f64]> = xs.iter().map(|x| x.as_slice()).collect();
        let mut rs = vec![vec![0.0; m]; states.len()];
        self.op.apply_block(&views, &mut rs);
        let mut losses = Vec::with_capacity(states.len());
        for r in rs.iter_mut() {
            for (ri, yi) in r.iter_mut().zip(&self.y) {
                *ri -= yi;
            }
            losses.push(self.loss_of(r));
        }
        let rviews: Vec<&[f64]> = rs.iter().map(|r| r.as_slice()).collect();
        let mut gs = vec![vec![0.0; n1 * n2]; states.len()];
        self.op.adjoint_block(&rviews, &mut gs);
        for ((s, g), out) in states.iter().zip(&gs).zip(outs.iter_mut()) {
            let g = DMatrixView::from_slice(g, n1, n2);
            let (u, v) = f.split(s);
            let (mut fu, mut fv) = f.split_mut(out);
            fu.gemm(-1.0, &g, &v, 0.0);
            fv.gemm_tr(-1.0, &g, &u, 0.0);
        }
        Some(losses)
    }

    fn jacobian_cost_macs(&self) -> Option<f64> {
        if self.factors.symmetric {
            return None;
        }
        let f = self.factors;
        let n = f.state_len() as f64;
        let m = self.y.len() as f64;
        Some(m * n * n + m * 2.0 * (f.n1 * f.n2 * f.k) as f64)
    }

    /// The dense N×N Jacobian J = −(CᵀC + S(G)) (MATH §2) in one GEMM, where row i of C is
    /// (vec(A_i V), vec(A_iᵀ U)) and S(G) has I_k ⊗ G and its transpose off the diagonal.
    fn jacobian_into(&self, state: &[f64], jac: &mut DMatrix<f64>, ws: &mut Workspace) -> bool {
        if self.factors.symmetric {
            return false;
        }
        let n = self.factors.state_len();
        assert_eq!(jac.shape(), (n, n), "Jacobian shape");
        super::Field::evaluate(self, state, ws);
        let f = self.factors;
        let (u, v) = f.split(state);
        let (n1, n2, k, m) = (f.n1, f.n2, f.k, self.y.len());
        let nu = n1 * k;
        // Cᵀ, column i = row i of C: contiguous, and CᵀC = Cᵀ (Cᵀ)ᵀ is one GEMM on it.
        let mut ct = DMatrix::<f64>::zeros(n, m);
        let mut ai = vec![0.0; n1 * n2];
        for i in 0..m {
            self.op.measurement_matrix(i, &mut ai);
            let a = DMatrixView::from_slice(&ai, n1, n2);
            let col = ct.column_mut(i);
            let col = col.data.into_slice_mut();
            let (cu, cv) = col.split_at_mut(nu);
            DMatrixViewMut::from_slice(cu, n1, k).gemm(1.0, &a, &v, 0.0);
            DMatrixViewMut::from_slice(cv, n2, k).gemm_tr(1.0, &a, &u, 0.0);
        }
        // CᵀC is symmetric: form its lower triangle only (half the multiply–adds of a full
        // GEMM) and mirror it. Sequential, so the result does not depend on the thread count.
        {
            use faer::linalg::matmul::triangular::{matmul, BlockStructure};
            let c = faer::MatRef::from_column_major_slice(ct.as_slice(), n, m);
            matmul(
                faer::MatMut::from_column_major_slice_mut(jac.as_mut_slice(), n, n),
                BlockStructure::TriangularLower,
                faer::Accum::Replace,
                c,
                BlockStructure::Rectangular,
                c.transpose(),
                BlockStructure::Rectangular,
                -1.0,
                faer::Par::Seq,
            );
        }
        for col in 1..n {
            for row in 0..col {
                jac[(row, col)] = jac[(col, row)];
            }
        }
        // −S(G): entry (a + j·n1, nu + b + j·n2) and its mirror are −G_ab.
        for j in 0..k {
            for b in 0..n2 {
                let col = nu + b + j * n2;
                for a in 0..n1 {
                    let row = a + j * n1;
                    let g = ws.g[(a, b)];
                    jac[(row, col)] -= g;
                    jac[(col, row)] -= g;
                }
            }
        }
        true
    }
}
