//! The perturbed gradient flow of MATH §5: −G = (X* − UVᵀ) + E, with E from a model, wrapped
//! around the sensing field whose operator and shape it shares.

use nalgebra::DMatrix;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use super::{FactorGradient, Factors, SensingField, Workspace};
use crate::operator::SensingOperator;
use crate::problem::{sub_rng, Problem};

/// Stream of the seeded direction W of the `relative` and `absolute` perturbations.
pub const STREAM_PERTURBATION: u64 = 6;

/// The E of the perturbed gradient flow −G = (X* − UVᵀ) + E (MATH §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PerturbationModel {
    /// E = 0: plain matrix factorisation.
    None,
    /// E = (𝒜*𝒜 − I)(X* − UVᵀ): the sensing flow, spelled out.
    Sensing,
    /// The sensing E plus 𝒜*ξ, ξ the measurement noise.
    Noise,
    /// E = ε‖X* − UVᵀ‖·W/‖W‖, W a fixed seeded Gaussian direction.
    Relative,
    /// E = ε·W/‖W‖ (constant forcing).
    Absolute,
}

impl PerturbationModel {
    pub const ALL: [PerturbationModel; 5] = [
        PerturbationModel::None,
        PerturbationModel::Sensing,
        PerturbationModel::Noise,
        PerturbationModel::Relative,
        PerturbationModel::Absolute,
    ];
    pub fn name(self) -> &'static str {
        match self {
            PerturbationModel::None => "none",
            PerturbationModel::Sensing => "sensing",
            PerturbationModel::Noise => "noise",
            PerturbationModel::Relative => "relative",
            PerturbationModel::Absolute => "absolute",
        }
    }
    pub fn description(self) -> &'static str {
        match self {
            PerturbationModel::None => "E = 0: plain matrix factorisation",
            PerturbationModel::Sensing => "E = (𝒜*𝒜 − I)(X* − UVᵀ): the sensing flow, spelled out",
            PerturbationModel::Noise => "the sensing E plus 𝒜*ξ, ξ the measurement noise",
            PerturbationModel::Relative => "E = ε‖X* − UVᵀ‖·W/‖W‖, W a fixed seeded direction",
            PerturbationModel::Absolute => "E = ε·W/‖W‖ (constant forcing)",
        }
    }
    /// Whether the field reads the sensing operator 𝒜 and y (the others are the factorisation
    /// X* − UVᵀ and a seeded E of their own).
    pub fn uses_sensing(self) -> bool {
        matches!(self, PerturbationModel::Sensing | PerturbationModel::Noise)
    }
    /// Whether ε (`--perturbation-size`) enters E.
    pub fn uses_size(self) -> bool {
        matches!(
            self,
            PerturbationModel::Relative | PerturbationModel::Absolute
        )
    }
    /// Whether −G = X* − UVᵀ + E is the negative gradient of a loss of X (so that ∇²f,
    /// the sharpness and the central flow mean something): not for the relative model, and
    /// for the absolute one the loss would not be the ½‖X* − UVᵀ‖² reported.
    pub fn is_gradient(self) -> bool {
        !self.uses_size()
    }
    /// Whether E is symmetric whenever X* − UUᵀ is (what the symmetric case needs): models
    /// built from the seeded, non-symmetric direction W are not.
    pub fn keeps_symmetry(self) -> bool {
        !self.uses_size()
    }
}

/// A model of E with its data.
#[derive(Clone, Debug)]
pub struct Perturbation {
    pub model: PerturbationModel,
    /// ε for `relative` and `absolute`.
    pub size: f64,
    x_star: DMatrix<f64>,
    /// W/‖W‖_F, W Gaussian from the seed's perturbation stream.
    direction: DMatrix<f64>,
    /// 𝒜*ξ for `noise` (ξ the problem's measurement noise: y − 𝒜(X*)).
    adjoint_noise: DMatrix<f64>,
}

impl Perturbation {
    pub fn new(model: PerturbationModel, size: f64, problem: &Problem, seed: u64) -> Self {
        let (n1, n2) = (problem.n1(), problem.n2());
        let mut rng = sub_rng(seed, STREAM_PERTURBATION);
        let mut w = DMatrix::<f64>::from_fn(n1, n2, |_, _| StandardNormal.sample(&mut rng));
        let norm = w.norm();
        w /= norm;
        let mut clean = vec![0.0; problem.m()];
        problem.op.apply(problem.x_star.as_slice(), &mut clean);
        let xi: Vec<f64> = problem.y.iter().zip(&clean).map(|(y, c)| y - c).collect();
        let mut adjoint_noise = DMatrix::zeros(n1, n2);
        problem.op.adjoint(&xi, adjoint_noise.as_mut_slice());
        Self {
            model,
            size,
            x_star: problem.x_star.clone(),
            direction: w,
            adjoint_noise,
        }
    }
}

/// U' = (X* − UVᵀ + E)V, V' = (X* − UVᵀ + E)ᵀU on the shape and operator of a sensing field.
/// Its loss is reported as ½‖X* − UVᵀ‖² (not every model is a gradient flow).
#[derive(Clone)]
pub struct Perturbed {
    inner: SensingField,
    p: Perturbation,
}

impl Perturbed {
    pub fn new(inner: SensingField, p: Perturbation) -> Self {
        Self { inner, p }
    }
    pub fn perturbation(&self) -> &Perturbation {
        &self.p
    }

    /// 𝒜*𝒜 applied to `x` into `out`.
    fn gram(&self, x: &DMatrix<f64>, r: &mut [f64], out: &mut DMatrix<f64>) {
        let op = FactorGradient::operator(&self.inner);
        op.apply(x.as_slice(), r);
        op.adjoint(r, out.as_mut_slice());
    }
}

impl FactorGradient for Perturbed {
    fn factors(&self) -> Factors {
        FactorGradient::factors(&self.inner)
    }
    fn operator(&self) -> &dyn SensingOperator {
        FactorGradient::operator(&self.inner)
    }
    fn observations(&self) -> &[f64] {
        FactorGradient::observations(&self.inner)
    }
    fn describe(&self) -> String {
        if self.p.model.uses_size() {
            format!("perturbed ({}, ε = {})", self.p.model.name(), self.p.size)
        } else {
            format!("perturbed ({})", self.p.model.name())
        }
    }

    /// G = −(R + E) with R = X* − UVᵀ (ws.x holds UVᵀ); returns ½‖R‖².
    fn gradient(&self, ws: &mut Workspace) -> f64 {
        let p = &self.p;
        ws.resid.copy_from(&p.x_star);
        ws.resid -= &ws.x;
        let e = &mut ws.scratch;
        match p.model {
            PerturbationModel::None => e.fill(0.0),
            PerturbationModel::Sensing | PerturbationModel::Noise => {
                // E = (𝒜*𝒜 − I)R (+ 𝒜*ξ), spelled out rather than folded into 𝒜*(𝒜X − y)
                let op = FactorGradient::operator(&self.inner);
                op.apply(ws.resid.as_slice(), &mut ws.r);
                op.adjoint(&ws.r, e.as_mut_slice());
                *e -= &ws.resid;
                if p.model == PerturbationModel::Noise {
                    *e += &p.adjoint_noise;
                }
            }
            PerturbationModel::Relative => {
                e.copy_from(&p.direction);
                *e *= p.size * ws.resid.norm();
            }
            PerturbationModel::Absolute => {
                e.copy_from(&p.direction);
                *e *= p.size;
            }
        }
        ws.g.copy_from(&ws.resid);
        ws.g += &ws.scratch;
        ws.g.neg_mut();
        0.5 * ws.resid.norm_squared()
    }

    /// Ṙ = −Ẋ, Ġ = −(Ṙ + Ė) = Ẋ − Ė.
    fn gradient_dot(&self, ws: &mut Workspace) {
        let p = &self.p;
        ws.gdot.copy_from(&ws.xdot);
        match p.model {
            PerturbationModel::None | PerturbationModel::Absolute => {}
            PerturbationModel::Sensing | PerturbationModel::Noise => {
                // Ė = (𝒜*𝒜 − I)Ṙ = −𝒜*𝒜Ẋ + Ẋ, so Ġ = 𝒜*𝒜Ẋ
                let op = FactorGradient::operator(&self.inner);
                op.apply(ws.xdot.as_slice(), &mut ws.rdot);
                op.adjoint(&ws.rdot, ws.gdot.as_mut_slice());
            }
            PerturbationModel::Relative => {
                // Ė = ε⟨R, Ṙ⟩/‖R‖ · W = −ε⟨R, Ẋ⟩/‖R‖ · W
                let norm = ws.resid.norm();
                if norm > 0.0 {
                    let c = -p.size * ws.resid.dot(&ws.xdot) / norm;
                    for (g, w) in ws.gdot.iter_mut().zip(p.direction.iter()) {
                        *g -= c * w;
                    }
                }
            }
        }
    }

    /// G̈ = Ẍ − Ë with Ë = D²E[Ṙ_u, Ṙ_w] + DE[R̈], R̈ = −Ẍ.
    fn gradient_second(
        &self,
        ws: &mut Workspace,
        xdot_u: &DMatrix<f64>,
        xdot_w: &DMatrix<f64>,
        xddot: &DMatrix<f64>,
        out: &mut DMatrix<f64>,
    ) {
        let p = &self.p;
        match p.model {
            PerturbationModel::None | PerturbationModel::Absolute => out.copy_from(xddot),
            PerturbationModel::Sensing | PerturbationModel::Noise => {
                let mut r = std::mem::take(&mut ws.rdot);
                self.gram(xddot, &mut r, out);
                ws.rdot = r;
            }
            PerturbationModel::Relative => {
                // E = ε‖R‖W: Ë = ε[(⟨Ṙ_u, Ṙ_w⟩ + ⟨R, R̈⟩)/‖R‖ − ⟨R, Ṙ_u⟩⟨R, Ṙ_w⟩/‖R‖³]·W
                out.copy_from(xddot);
                let norm = ws.resid.norm();
                if norm > 0.0 {
                    let ru = -ws.resid.dot(xdot_u);
                    let rw = -ws.resid.dot(xdot_w);
                    let c = p.size
                        * ((xdot_u.dot(xdot_w) - ws.resid.dot(xddot)) / norm
                            - ru * rw / norm.powi(3));
                    for (g, w) in out.iter_mut().zip(p.direction.iter()) {
                        *g -= c * w;
                    }
                }
            }
        }
    }

    fn loss_at(&self, x: &DMatrix<f64>, _ws: &mut Workspace) -> f64 {
        0.5 * (&self.p.x_star - x).norm_squared()
    }
}
