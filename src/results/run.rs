//! `gdflow run`'s results: `summary.json`, `trajectory.csv` and `config.toml`, written and read
//! here.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{csv_bytes, csv_error, json_bytes, not_ours, read, toml_text, Provenance};
use crate::analysis::Record;
use crate::config::Config;
use crate::dynamics::flow::SolverStats;
use crate::dynamics::Status;
use crate::error::{Error, Result};
use crate::operator::OperatorCounts;
use crate::output::num;
use crate::problem::{Problem, ProblemSource};

/// Where a problem came from and what it is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProblemInfo {
    /// "generated" or the path of the `.npz` file.
    pub source: String,
    pub operator: String,
    pub n1: usize,
    pub n2: usize,
    pub rank: usize,
    pub width: usize,
    pub measurements: usize,
    pub target_singular_values: Vec<f64>,
    pub target_norm: f64,
    /// The scale α of the start (measured from a file's `u0`, `v0`).
    #[serde(default)]
    pub start_scale: f64,
    /// For an f64 problem file run with `--sensing-precision f32`: the relative change of
    /// 𝒜(X*) that rounding the entries made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub f32_change_of_y: Option<f64>,
}

impl ProblemInfo {
    /// "gaussian operator, n1=30 n2=25 r=3 k=6 m=600": the first line of every report.
    pub fn headline(&self) -> String {
        format!(
            "{} operator, n1={} n2={} r={} k={} m={}",
            self.operator, self.n1, self.n2, self.rank, self.width, self.measurements
        )
    }

    pub fn new(problem: &Problem) -> Self {
        Self {
            source: match &problem.source {
                ProblemSource::Generated => "generated".to_string(),
                ProblemSource::File { path, .. } => path.display().to_string(),
            },
            operator: problem.op.name().to_string(),
            n1: problem.n1(),
            n2: problem.n2(),
            rank: problem.target_sv.len(),
            width: problem.width(),
            measurements: problem.m(),
            target_singular_values: problem.target_sv.clone(),
            target_norm: problem.x_star.norm(),
            start_scale: problem.start_scale(),
            f32_change_of_y: problem.f32_change_of_y,
        }
    }
}

/// The end of one dynamics.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DynamicsSummary {
    #[serde(flatten)]
    pub status: Status,
    /// The last recorded time and its quantities.
    pub final_t: f64,
    pub final_loss: f64,
    pub final_rel_error: f64,
    pub final_balance_drift: f64,
    /// Over every step (or every output time jη of the flow), recorded or not.
    pub max_balance_drift: f64,
}

/// max_j ‖U_jV_jᵀ − U(jη)V(jη)ᵀ‖_F over every step both dynamics reached, recorded or not.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Distance {
    pub max: f64,
    /// `max` divided by ‖X*‖_F.
    pub max_relative: f64,
    pub step: usize,
    pub t: f64,
    pub final_distance: f64,
}

/// Wall-clock seconds, kept apart from the results so that those are reproducible byte for byte.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Timings {
    pub problem_seconds: f64,
    /// GD's steps and records (the records reuse GD's own evaluations).
    pub gd_seconds: f64,
    /// The flow solver, without the recording done at its output times.
    pub flow_seconds: f64,
    /// The flow's recorded quantities.
    #[serde(default)]
    pub record_seconds: f64,
    pub total_seconds: f64,
}

/// What computing the sharpness column cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct SharpnessCost {
    pub computations: usize,
    /// Hessian–vector products (each one pass over the sensing matrix).
    pub hvps: usize,
    /// Computations whose estimate missed its tolerance (their cells are empty).
    pub unconverged: usize,
    pub seconds: f64,
}

impl SharpnessCost {
    pub fn absorb(&mut self, other: &SharpnessCost) {
        self.computations += other.computations;
        self.hvps += other.hvps;
        self.unconverged += other.unconverged;
        self.seconds += other.seconds;
    }
}

/// GD against the central flow at the edge of stability (MATH §8), averaged over the steps of
/// the run's second half where the flow holds eigenvalues at 2/η.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EdgeOfStability {
    pub t_from: f64,
    pub t_to: f64,
    pub steps: usize,
    /// mean_j ‖Qᵀ(x_j − x(t_j))‖², GD's oscillation along the active eigenvectors Q of the
    /// central flow ...
    pub oscillation_second_moment: f64,
    /// ... against the mean tr Σ it predicts.
    pub sigma_trace: f64,
    /// mean_j f(x_j), GD's averaged loss ...
    pub gd_mean_loss: f64,
    /// ... against the mean of f(x(t_j)) + tr Σ/η.
    pub predicted_loss: f64,
}

/// The central flow's part of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CentralSummary {
    #[serde(flatten)]
    pub report: crate::dynamics::flow::CentralReport,
    /// max and final of ‖X̄_j − X((j + ½)η)‖_F, GD's two-step average against the flow.
    pub distance_mean: Option<Distance>,
    pub edge_of_stability: Option<EdgeOfStability>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunSummary {
    #[serde(flatten)]
    pub provenance: Provenance<Config>,
    /// Allowed but suspicious settings (also printed on stderr).
    pub warnings: Vec<String>,
    pub problem: ProblemInfo,
    pub gd: DynamicsSummary,
    pub flow: DynamicsSummary,
    pub distance: Option<Distance>,
    /// 2/η: GD is stable near a minimum only while the sharpness is below it (MATH §2, §8).
    #[serde(default)]
    pub two_over_eta: f64,
    /// The discrete method and its limit (MATH §9). The method's rows and its entry above
    /// (`gd`) are this optimiser's.
    #[serde(default)]
    pub optimizer: OptimizerSummary,
    /// What the `sharpness` column cost.
    #[serde(default)]
    pub sharpness_cost: SharpnessCost,
    /// With `--flow central`: its events, GD's average against it, the predictions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub central: Option<CentralSummary>,
    pub solver: SolverStats,
    /// Operator applications over the whole run (GD, flow, recording).
    pub operator_counts: OperatorCounts,
    pub timings: Timings,
}

impl RunSummary {
    pub fn config(&self) -> &Config {
        &self.provenance.config
    }
}

/// The optimiser a run compared with its limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptimizerSummary {
    /// Its registry name: the `dynamics` of its rows in trajectory.csv.
    pub name: String,
    /// Its parameters (damping, momentum, friction), η aside.
    pub parameters: crate::dynamics::optimizer::Parameters,
    /// t = jη or j√η.
    pub time_scale: crate::dynamics::optimizer::TimeScale,
    /// The limit it was compared with, as an equation.
    pub limit: String,
    /// Whether UᵀU − VᵀV is conserved by the limit, in words.
    pub balance: String,
}

impl Default for OptimizerSummary {
    /// GD's, for summaries written before optimisers were recorded.
    fn default() -> Self {
        Self {
            name: "gd".into(),
            parameters: Default::default(),
            time_scale: crate::dynamics::optimizer::TimeScale::Eta,
            limit: String::new(),
            balance: String::new(),
        }
    }
}

/// Everything a run produces.
#[derive(Debug, Clone)]
pub struct RunResult {
    pub summary: RunSummary,
    /// The optimiser's rows (GD's by default; named by `summary.optimizer.name`).
    pub gd: Vec<Record>,
    pub flow: Vec<Record>,
    /// With the central flow: GD's two-step average x̄_j = ½(x_j + x_{j+1}) at t = (j + ½)η,
    /// the rows `gd_mean` (MATH §8).
    pub gd_mean: Vec<Record>,
    /// Columns of the user's recorded quantities ([`crate::analysis::Quantity`]), after the
    /// built-in ones; each record's `extra` holds their values.
    pub extra_columns: Vec<String>,
}

/// The columns of `trajectory.csv` before `sv_1..sv_k`.
pub const LEADING_COLUMNS: [&str; 6] = [
    "dynamics",
    "step",
    "t",
    "loss",
    "rel_error",
    "balance_drift",
];

/// The columns of `trajectory.csv` after `sv_1..sv_k` (see [`Record`]).
pub const THEORY_COLUMNS: [&str; 7] = [
    "rho",
    "signal_u",
    "signal_v",
    "sin_theta_u",
    "sin_theta_v",
    "spurious_u",
    "spurious_v",
];

/// The columns after the theory ones (MATH §8): λ_max(∇²f) where computed, and the central
/// flow's tr Σ and number of active eigenvalues (empty cells where they do not apply).
pub const STABILITY_COLUMNS: [&str; 3] = ["sharpness", "sigma_trace", "active"];

/// The header of `trajectory.csv` for width `k` and the user's extra columns.
pub fn trajectory_header(k: usize, extra: &[String]) -> Vec<String> {
    let mut header: Vec<String> = LEADING_COLUMNS.iter().map(|s| s.to_string()).collect();
    header.extend((1..=k).map(|i| format!("sv_{i}")));
    header.extend(THEORY_COLUMNS.iter().map(|s| s.to_string()));
    header.extend(STABILITY_COLUMNS.iter().map(|s| s.to_string()));
    header.extend(extra.iter().cloned());
    header
}

/// `trajectory.csv`: one row per output time and dynamics.
pub fn trajectory_csv(result: &RunResult) -> Result<Vec<u8>> {
    let k = result.summary.problem.width;
    let mut w = csv::Writer::from_writer(Vec::new());
    let err = csv_error("trajectory.csv");
    w.write_record(trajectory_header(k, &result.extra_columns))
        .map_err(&err)?;
    for (name, records) in [
        (result.summary.optimizer.name.as_str(), &result.gd),
        ("flow", &result.flow),
        ("gd_mean", &result.gd_mean),
    ] {
        for r in records {
            let mut row = vec![
                name.to_string(),
                r.step.to_string(),
                num(r.t),
                num(r.loss),
                num(r.rel_error),
                num(r.balance_drift),
            ];
            row.extend(r.sv.iter().map(|s| num(*s)));
            row.extend(
                [
                    r.rho,
                    r.signal_u,
                    r.signal_v,
                    r.sin_theta_u,
                    r.sin_theta_v,
                    r.spurious_u,
                    r.spurious_v,
                ]
                .map(num),
            );
            row.push(r.sharpness.map_or_else(String::new, num));
            row.push(r.sigma_trace.map_or_else(String::new, num));
            row.push(r.active.map_or_else(String::new, |p| p.to_string()));
            row.extend(r.extra.iter().map(|v| num(*v)));
            w.write_record(&row).map_err(&err)?;
        }
    }
    csv_bytes("trajectory.csv", w)
}

/// `config.toml` of a run: the resolved configuration without the output paths (a re-run
/// must not overwrite these outputs) and without what a problem file fixed (a re-run takes
/// it from the file again).
pub fn config_toml(summary: &RunSummary) -> Result<String> {
    let mut leave_out = vec!["out", "save_problem"];
    leave_out.extend(summary.provenance.from_file.iter().map(String::as_str));
    toml_text("config.toml", &summary.config().table_without(&leave_out)?)
}

/// Write `summary.json`, `trajectory.csv` and the resolved `config.toml` into `dir`.
pub fn write_run(result: &RunResult, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let csv = trajectory_csv(result)?;
    let json = json_bytes("summary.json", &result.summary)?;
    let toml = config_toml(&result.summary)?;
    crate::output::write_bytes(&dir.join("trajectory.csv"), &csv)?;
    crate::output::write_bytes(&dir.join("config.toml"), toml.as_bytes())?;
    crate::output::write_bytes(&dir.join("summary.json"), &json)?;
    Ok(())
}

/// Read a `gdflow run` output directory (summary.json and trajectory.csv).
pub fn load_run(dir: &Path) -> Result<RunResult> {
    let path = dir.join("summary.json");
    let summary: RunSummary =
        serde_json::from_slice(&read(&path)?).map_err(|e| not_ours(&path, e))?;
    let path = dir.join("trajectory.csv");
    let bytes = read(&path)?;
    let mut reader = csv::Reader::from_reader(bytes.as_slice());
    let header = reader.headers().map_err(|e| not_ours(&path, e))?.clone();
    let col = |name: &str| header.iter().position(|h| h == name);
    let sv_cols: Vec<usize> = (1..).map_while(|i| col(&format!("sv_{i}"))).collect();
    let named =
        |name: &str| col(name).ok_or_else(|| not_ours(&path, format!("no column `{name}`")));
    let cols = [
        named("step")?,
        named("t")?,
        named("loss")?,
        named("rel_error")?,
        named("balance_drift")?,
    ];
    let theory: Vec<Option<usize>> = THEORY_COLUMNS.iter().map(|c| col(c)).collect();
    let stability: Vec<Option<usize>> = STABILITY_COLUMNS.iter().map(|c| col(c)).collect();
    let standard = trajectory_header(sv_cols.len(), &[]);
    let extra_cols: Vec<usize> = (0..header.len())
        .filter(|&i| !standard.iter().any(|s| s == &header[i]))
        .collect();
    let (mut gd, mut flow, mut gd_mean) = (Vec::new(), Vec::new(), Vec::new());
    for row in reader.records() {
        let row = row.map_err(|e| not_ours(&path, e))?;
        let num = |i: usize| -> Result<f64> {
            row.get(i)
                .ok_or_else(|| not_ours(&path, "short row"))?
                .parse::<f64>()
                .map_err(|e| not_ours(&path, e))
        };
        let opt = |i: Option<usize>| i.map_or(Ok(f64::NAN), num);
        let cell = |i: Option<usize>| -> Result<Option<f64>> {
            match i.and_then(|i| row.get(i)) {
                None | Some("") => Ok(None),
                Some(c) => c.parse::<f64>().map(Some).map_err(|e| not_ours(&path, e)),
            }
        };
        let record = Record {
            step: num(cols[0])? as usize,
            t: num(cols[1])?,
            loss: num(cols[2])?,
            rel_error: num(cols[3])?,
            balance_drift: num(cols[4])?,
            sv: sv_cols.iter().map(|&i| num(i)).collect::<Result<_>>()?,
            rho: opt(theory[0])?,
            signal_u: opt(theory[1])?,
            signal_v: opt(theory[2])?,
            sin_theta_u: opt(theory[3])?,
            sin_theta_v: opt(theory[4])?,
            spurious_u: opt(theory[5])?,
            spurious_v: opt(theory[6])?,
            sharpness: cell(stability[0])?,
            sigma_trace: cell(stability[1])?,
            active: cell(stability[2])?.map(|p| p as usize),
            extra: extra_cols.iter().map(|&i| num(i)).collect::<Result<_>>()?,
        };
        match row.get(0) {
            Some("flow") => flow.push(record),
            Some("gd_mean") => gd_mean.push(record),
            Some(name) if name == summary.optimizer.name => gd.push(record),
            other => return Err(not_ours(&path, format!("unknown dynamics {other:?}"))),
        }
    }
    Ok(RunResult {
        summary,
        gd,
        flow,
        gd_mean,
        extra_columns: extra_cols.iter().map(|&i| header[i].to_string()).collect(),
    })
}
