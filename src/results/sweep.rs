//! `gdflow sweep`'s results: `summary.json`, `sweep.csv`, `deviation.csv` and `config.toml`,
//! written and read here (`gdflow merge` and `gdflow plot` read parts through
//! [`load_sweep`]).

use std::path::Path;

pub use super::shard::Shard;

use serde::{Deserialize, Serialize};

use super::run::ProblemInfo;
use super::{csv_bytes, csv_error, json_bytes, not_ours, read, toml_text, Provenance};
use crate::analysis::fit::OrderFit;
use crate::dynamics::central::CentralStats;
use crate::dynamics::flow::SolverStats;
use crate::dynamics::sharpness::TopEigen;
use crate::dynamics::stability::StabilityLimit;
use crate::dynamics::Status;
use crate::error::{Error, Result};
use crate::operator::OperatorCounts;
use crate::output::num;

/// The resolved sweep options, as recorded in the outputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepSettings {
    /// Ascending, distinct.
    pub etas: Vec<f64>,
    pub horizon: f64,
    pub epsilon: f64,
    /// 0: the stability limit was not searched.
    pub stability_steps: usize,
    pub stability_tol: f64,
    pub max_rows: usize,
    /// Run only part `index` (1-based) of `count` disjoint parts: the η whose position in
    /// `etas` is ≡ index − 1 (mod count). `gdflow merge` combines the parts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<Shard>,
}

impl SweepSettings {
    /// The step sizes this run compares: all, or its shard's.
    pub fn active_etas(&self) -> Vec<f64> {
        self.etas
            .iter()
            .enumerate()
            .filter(|(i, _)| self.shard.is_none_or(|s| s.owns(*i)))
            .map(|(_, &e)| e)
            .collect()
    }

    /// Where the sharpness is measured: the latest time any step size of the full list
    /// reaches, so that every shard measures it at the same state.
    pub fn sharpness_time(&self) -> f64 {
        self.etas
            .iter()
            .map(|&e| self.steps_for(e) as f64 * e)
            .fold(0.0, f64::max)
    }

    /// J: the last GD step with Jη ≤ T (rounding forgiven when T is a multiple of η).
    pub fn steps_for(&self, eta: f64) -> usize {
        ((self.horizon / eta) * (1.0 + 1e-12)).floor() as usize
    }
}

/// One row of `deviation.csv`: GD iterate j against both flows at t_j = jη.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviationRow {
    pub eta: f64,
    pub step: usize,
    pub t: f64,
    /// ‖X_j − X(t_j)‖_F, X = UVᵀ, against the plain flow.
    pub dev: f64,
    pub dev_rel: f64,
    pub dev_u: f64,
    pub dev_v: f64,
    pub loss_gd: f64,
    pub loss_flow: f64,
    /// f(GD) − f(flow).
    pub loss_diff: f64,
    /// The plain reference's error at t_j.
    pub ref_error: f64,
    /// dev ≤ ref_error: the deviation is not resolved by the reference.
    pub below_ref: bool,
    pub dev_modified: f64,
    pub dev_modified_rel: f64,
    pub ref_error_modified: f64,
    pub below_ref_modified: bool,
    pub rel_error_gd: f64,
    pub rel_error_flow: f64,
    pub rel_error_modified: f64,
    /// ‖D_j − D_0‖_F with D = UᵀU − VᵀV.
    pub drift_gd: f64,
    pub drift_flow: f64,
    /// ‖X̄ − X_c((j − ½)η)‖_F: GD's two-step average X̄ of ½(x_{j−1} + x_j) against the
    /// central flow (MATH §8); empty at j = 0, after the central flow stopped, or when it is
    /// not defined (a non-gradient perturbation).
    pub dev_central: Option<f64>,
    pub dev_central_rel: Option<f64>,
    pub rel_error_gd_mean: Option<f64>,
    pub rel_error_central: Option<f64>,
    /// Eigenvalues the central flow holds at 2/η at (j − ½)η.
    pub active_central: Option<usize>,
}

/// A maximum over time and where it occurs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Peak {
    pub value: f64,
    pub step: usize,
    pub t: f64,
}

impl Peak {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn update(&mut self, value: f64, step: usize, t: f64) {
        if value > self.value {
            *self = Self { value, step, t };
        }
    }
}

/// One step size: maxima over every step both dynamics reached, final values, t_ε.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepPoint {
    pub eta: f64,
    /// J, the last GD step.
    pub steps: usize,
    /// The last step compared (J unless GD diverged or a flow failed).
    pub compared_steps: usize,
    pub gd_status: Status,
    pub modified_flow_status: Status,
    pub max_dev: Peak,
    pub max_dev_rel: f64,
    pub max_dev_u: Peak,
    pub max_dev_v: Peak,
    /// Largest |f(GD) − f(flow)|.
    pub max_loss_diff: Peak,
    /// The plain reference's largest error over the compared times.
    pub ref_error: f64,
    pub below_ref: bool,
    pub max_dev_modified: Peak,
    pub max_dev_modified_rel: f64,
    pub ref_error_modified: f64,
    pub below_ref_modified: bool,
    pub final_rel_error_gd: f64,
    pub final_rel_error_flow: f64,
    pub final_rel_error_modified: f64,
    /// First jη with ‖X_j − X*‖/‖X*‖ < ε.
    pub t_eps_gd: Option<f64>,
    /// First t with relative error < ε along the plain flow, interpolated log-linearly between
    /// the output times jη.
    pub t_eps_flow: Option<f64>,
    pub final_drift_gd: f64,
    pub final_drift_flow: f64,
    pub max_drift_gd: f64,
    pub modified_solver: SolverStats,
    pub modified_solver_tight: SolverStats,
    /// GD's two-step average against the central flow; `None` when the central flow is not
    /// defined (a non-gradient perturbation).
    pub central: Option<CentralPoint>,
    /// ‖X_J − X(t_J)‖ at the last compared step against the plain limit (absolute): at a fixed
    /// time, where momentum's O(η²) order shows (MATH §9); NaN in sweeps written before it.
    #[serde(default = "not_recorded", with = "nan_as_null")]
    pub final_dev: f64,
    /// The same against the modified limit.
    #[serde(default = "not_recorded", with = "nan_as_null")]
    pub final_dev_modified: f64,
}

fn not_recorded() -> f64 {
    f64::NAN
}

/// JSON has no NaN: a value that could not be measured is written as null.
mod nan_as_null {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else {
            s.serialize_none()
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
    }
}

/// The central flow at one step size (MATH §8) and GD's two-step average against it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CentralPoint {
    pub status: Status,
    /// Largest ‖X̄ − X_c‖_F over the compared half steps (its t is the half step's).
    pub max_dev: Peak,
    pub max_dev_rel: f64,
    /// At the last compared half step.
    pub final_dev: Option<f64>,
    /// When an eigenvalue of the Hessian first reached 2/η (never, below the limit).
    pub first_reached: Option<f64>,
    pub max_active: usize,
    pub events: usize,
    pub solver: SolverStats,
    pub work: CentralStats,
}

/// λ_max at the end of the reference flow and the GD stability limit beside 2/λ_max.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StabilityReport {
    /// The time of the reference state where the sharpness was measured, and its relative
    /// error (it should be near a solution).
    pub sharpness_t: f64,
    pub sharpness_rel_error: f64,
    /// The top eigenvalue of ∇²f there (block Lanczos; `converged` says whether it passed
    /// its residual test: an unconverged value is never used as λ_max).
    pub sharpness: TopEigen,
    /// Where the bisection started: 2/λ_max, or 1/σ_1 when λ_max did not converge.
    pub bisection_start: f64,
    pub bisection: Option<StabilityLimit>,
    pub steps_per_trial: usize,
}

impl StabilityReport {
    /// 2/λ_max, when λ_max converged and is positive.
    pub fn two_over_lambda_max(&self) -> Option<f64> {
        self.sharpness
            .lambda_max()
            .filter(|l| *l > 0.0)
            .map(|l| 2.0 / l)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReferenceSolves {
    pub status: Status,
    pub solver: SolverStats,
    pub solver_tight: SolverStats,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SweepTimings {
    pub problem_seconds: f64,
    pub reference_seconds: f64,
    pub points_seconds: f64,
    pub stability_seconds: f64,
    pub total_seconds: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SweepSummary {
    /// The configuration is the problem and solver keys of the resolved configuration (what
    /// `config.toml` holds at its top level).
    #[serde(flatten)]
    pub provenance: Provenance<toml::Table>,
    pub sweep: SweepSettings,
    /// Allowed but suspicious settings (also printed on stderr).
    pub warnings: Vec<String>,
    pub problem: ProblemInfo,
    /// Observed order of max_j ‖X_j − X(jη)‖ in η against the plain flow (expect ≈ 1).
    pub order_plain: Option<f64>,
    /// The same against GD's modified flow (expect ≈ 2).
    pub order_modified: Option<f64>,
    /// The largest η at which GD converged on this problem (bisection).
    pub stability_limit: Option<f64>,
    /// 2/λ_max with λ_max the sharpness at the end of the reference flow.
    pub two_over_lambda_max: Option<f64>,
    pub fit_plain: OrderFit,
    pub fit_modified: OrderFit,
    /// `None` in shards other than the first.
    pub stability: Option<StabilityReport>,
    pub reference: ReferenceSolves,
    pub points: Vec<SweepPoint>,
    /// With `--target-deviation`: the largest η within it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_deviation: Option<TargetDeviation>,
    /// With `--replicas N` for a stochastic method: the weak errors per η (weak_error.csv)
    /// and each limit's fitted weak order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weak: Option<WeakSweep>,
    pub operator_counts: OperatorCounts,
    pub timings: SweepTimings,
}

/// The weak errors of a stochastic method's sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeakSweep {
    pub replicas: usize,
    pub points: Vec<super::ensemble::WeakPoint>,
    pub orders: std::collections::BTreeMap<String, super::ensemble::WeakOrder>,
}

/// The largest η whose max_j ‖X_j − X(jη)‖/‖X*‖ against the plain limit is ≤ `target`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetDeviation {
    pub target: f64,
    /// The bracket's lower end: the largest η measured within the target (`None`: none was,
    /// down to 2⁻²⁰ of the smallest swept η).
    pub eta: Option<f64>,
    /// [lo, hi]: lo within the target, hi not (`None` where no such η was found).
    pub bracket: [Option<f64>; 2],
    /// The relative deviations measured at lo and hi (`None`: diverged or not found).
    pub deviation: [Option<f64>; 2],
    /// The bisection stops when hi/lo ≤ 1 + this.
    pub tolerance: f64,
    /// Step sizes run beyond the sweep's own.
    pub evaluations: usize,
    /// Wall-clock seconds of the search.
    #[serde(default)]
    pub seconds: f64,
}

impl SweepSummary {
    /// The optimiser the sweep compared (GD for sweeps written before optimisers were
    /// recorded).
    pub fn optimizer(&self) -> &str {
        self.provenance
            .config
            .get("optimizer")
            .and_then(|v| v.as_str())
            .unwrap_or("gd")
    }
}

pub struct SweepResult {
    pub summary: SweepSummary,
    pub deviations: Vec<DeviationRow>,
}

fn cell(v: Option<f64>) -> String {
    v.map_or_else(String::new, num)
}

/// `sweep.csv`: one row per step size.
pub fn sweep_csv(summary: &SweepSummary) -> Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let err = csv_error("sweep.csv");
    w.write_record([
        "eta",
        "steps",
        "gd_status",
        "max_dev",
        "max_dev_rel",
        "t_max_dev",
        "ref_error",
        "below_ref",
        "max_dev_modified",
        "max_dev_modified_rel",
        "t_max_dev_modified",
        "ref_error_modified",
        "below_ref_modified",
        "max_dev_u",
        "max_dev_v",
        "max_loss_diff",
        "final_rel_error_gd",
        "final_rel_error_flow",
        "final_rel_error_modified",
        "t_eps_gd",
        "t_eps_flow",
        "final_drift_gd",
        "final_drift_flow",
        "max_drift_gd",
        "max_dev_central",
        "max_dev_central_rel",
        "t_max_dev_central",
        "final_dev_central",
        "central_first_reached",
        "central_max_active",
        "central_status",
        "final_dev",
        "final_dev_modified",
    ])
    .map_err(&err)?;
    for p in &summary.points {
        w.write_record([
            num(p.eta),
            p.steps.to_string(),
            p.gd_status.label().to_string(),
            num(p.max_dev.value),
            num(p.max_dev_rel),
            num(p.max_dev.t),
            num(p.ref_error),
            p.below_ref.to_string(),
            num(p.max_dev_modified.value),
            num(p.max_dev_modified_rel),
            num(p.max_dev_modified.t),
            num(p.ref_error_modified),
            p.below_ref_modified.to_string(),
            num(p.max_dev_u.value),
            num(p.max_dev_v.value),
            num(p.max_loss_diff.value),
            num(p.final_rel_error_gd),
            num(p.final_rel_error_flow),
            num(p.final_rel_error_modified),
            cell(p.t_eps_gd),
            cell(p.t_eps_flow),
            num(p.final_drift_gd),
            num(p.final_drift_flow),
            num(p.max_drift_gd),
            cell(p.central.as_ref().map(|c| c.max_dev.value)),
            cell(p.central.as_ref().map(|c| c.max_dev_rel)),
            cell(p.central.as_ref().map(|c| c.max_dev.t)),
            cell(p.central.as_ref().and_then(|c| c.final_dev)),
            cell(p.central.as_ref().and_then(|c| c.first_reached)),
            p.central
                .as_ref()
                .map_or_else(String::new, |c| c.max_active.to_string()),
            p.central
                .as_ref()
                .map_or_else(String::new, |c| c.status.label().to_string()),
            num(p.final_dev),
            num(p.final_dev_modified),
        ])
        .map_err(&err)?;
    }
    csv_bytes("sweep.csv", w)
}

/// `deviation.csv`: one row per step size and compared time.
pub fn deviation_csv(rows: &[DeviationRow]) -> Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    for r in rows {
        w.serialize(r).map_err(csv_error("deviation.csv"))?;
    }
    if rows.is_empty() {
        w.write_record(["eta", "step", "t"])
            .map_err(csv_error("deviation.csv"))?;
    }
    csv_bytes("deviation.csv", w)
}

/// Write `summary.json`, `sweep.csv`, `deviation.csv` and `config.toml` (problem keys at the
/// top level, the resolved sweep in a `[sweep]` table) into `dir`.
pub fn write_sweep(result: &SweepResult, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let s = &result.summary;
    let json = json_bytes("summary.json", s)?;
    let mut table = s.provenance.config.clone();
    let mut sweep = toml::Table::try_from(&s.sweep)
        .map_err(|e| Error::serialise("config.toml", e.to_string()))?;
    // the file is run again with --config: keys the sweep refuses there are left out (the
    // bisection's tolerance without a bisection; the bisection for a method other than GD)
    if s.sweep.stability_steps == 0 || s.optimizer() != "gd" {
        sweep.remove("stability_tol");
    }
    if s.optimizer() != "gd" {
        sweep.remove("stability_steps");
    }
    table.insert("sweep".into(), toml::Value::Table(sweep));
    let toml = toml_text("config.toml", &table)?;
    crate::output::write_bytes(&dir.join("sweep.csv"), &sweep_csv(s)?)?;
    crate::output::write_bytes(
        &dir.join("deviation.csv"),
        &deviation_csv(&result.deviations)?,
    )?;
    crate::output::write_bytes(&dir.join("config.toml"), toml.as_bytes())?;
    if let Some(w) = &s.weak {
        crate::output::write_bytes(
            &dir.join("weak_error.csv"),
            &super::ensemble::weak_error_csv(&w.points)?,
        )?;
    }
    crate::output::write_bytes(&dir.join("summary.json"), &json)?;
    Ok(())
}

/// Read a `gdflow sweep` output directory (summary.json and deviation.csv).
pub fn load_sweep(dir: &Path) -> Result<SweepResult> {
    let path = dir.join("summary.json");
    let bytes = read(&path)?;
    let summary: SweepSummary =
        serde_json::from_slice(&bytes).map_err(|e| super::wrong_kind(&path, &bytes, "sweep", e))?;
    let path = dir.join("deviation.csv");
    let bytes = read(&path)?;
    let deviations = csv::Reader::from_reader(bytes.as_slice())
        .deserialize()
        .collect::<std::result::Result<Vec<DeviationRow>, _>>()
        .map_err(|e| not_ours(&path, e))?;
    // every η's last compared step closes its rows (the writer keeps it): a table that lost
    // rows at its end is refused, not merged or drawn as if whole
    for p in &summary.points {
        let last = deviations.iter().rev().find(|r| r.eta == p.eta);
        if p.compared_steps > 0 && last.is_none_or(|r| r.step != p.compared_steps) {
            return Err(not_ours(
                &path,
                format!(
                    "its rows for η = {} end at step {} where summary.json says {}: the file is \
                     incomplete",
                    p.eta,
                    last.map_or(0, |r| r.step),
                    p.compared_steps
                ),
            ));
        }
    }
    Ok(SweepResult {
        summary,
        deviations,
    })
}
