//! `run --replicas N`: N independent paths of a stochastic method (each its own noise stream,
//! MATH §10) — and of its limit when that is stochastic too (an SME, each its own Brownian
//! path) — summarised at every recorded step by the mean, standard deviation and 95% interval
//! of each quantity. A deterministic limit has n = 1. At the last step the weak error
//! E φ(method) − E φ(limit) is given with its interval, resolved or not; for an SME also its
//! scheme's own weak error, E_h − E_{h/2} from a second ensemble on half the substep.

use std::collections::BTreeMap;
use std::sync::Arc;

use nalgebra::DMatrix;

use rayon::prelude::*;

use crate::analysis::record::balance;
use crate::analysis::{Record, Recorder};
use crate::dynamics::flow::Times;
use crate::dynamics::optimizer::{Dynamics, Limit, Optimizer};
use crate::dynamics::{Driver, FlowVariant, Iterate, RunOptions, SaveAt, Status};
use crate::error::{Error, Result};
use crate::field::Field;
use crate::operator::beside_other_work;
use crate::results::ensemble::{
    BlockRow, EnsemblePart, EnsembleRow, EnsembleSummary, Running, Stat, SubstepChoice, WeakError,
};
use crate::results::run::States;
use crate::results::shard::Shard;

use super::Setup;

/// Replicas per chunk: the unit of parallel work and of the fixed accumulation order.
const CHUNK: usize = 8;
/// Chunks run in parallel before their results are merged (and freed).
const WAVE: usize = 256;
/// The most blocks an ensemble is summed in: each block folds its chunks in order, and the
/// ensemble folds its blocks in order, so a shard holding whole blocks lets `gdflow merge`
/// fold them as the unsharded run does. It bounds the parts of a sharded ensemble and the size
/// of their `ensemble_blocks.csv`.
pub const MAX_BLOCKS: usize = 64;

/// The replicas of each block of an ensemble of `count`: whole chunks, at most [`MAX_BLOCKS`]
/// blocks, as even as possible (one chunk each up to 512 replicas).
pub fn block_ranges(count: usize) -> Vec<std::ops::Range<u64>> {
    let chunks = count.div_ceil(CHUNK);
    let blocks = chunks.min(MAX_BLOCKS);
    (0..blocks)
        .map(|b| {
            let (c0, c1) = (b * chunks / blocks, (b + 1) * chunks / blocks);
            (c0 * CHUNK) as u64..(c1 * CHUNK).min(count) as u64
        })
        .collect()
}

/// Paths that ended before the last step: the method's (or the one ensemble's), and its
/// paired limit's.
type Ended = [usize; 2];

/// The quantities every replica records (their names are ensemble.csv's `quantity`): beside
/// the loss, the error, the drift of UᵀU − VᵀV and the distance to a deterministic limit, the
/// two that say where on the set of minima a stochastic method goes (MATH §10): the imbalance
/// ‖UᵀU − VᵀV‖ and the excess ‖U‖² + ‖V‖² − 2‖X*‖_* of the factors' norms over the balanced
/// factorisation's.
pub const QUANTITIES: [&str; 6] = [
    "loss",
    "rel_error",
    "balance_drift",
    "distance",
    "imbalance",
    "norm_excess",
];

/// Per recorded step, one accumulator per quantity.
type Acc = Vec<[Running; QUANTITIES.len()]>;

/// One ensemble's accumulators by block, in block order.
pub type Blocked = Vec<(usize, Acc)>;

fn empty(recorded: usize) -> Acc {
    vec![[Running::default(); QUANTITIES.len()]; recorded]
}

/// `acc` followed by `part`, quantity by quantity.
fn merge_into(acc: &mut Acc, part: &Acc) {
    for (a, p) in acc.iter_mut().zip(part) {
        for (q, pq) in a.iter_mut().zip(p) {
            q.merge(pq);
        }
    }
}

/// The whole ensemble: its blocks folded in block order (every path to a result — a run, a
/// shard's blocks merged — folds the same way, so the sums agree bit for bit).
fn fold(blocked: &Blocked, recorded: usize) -> Acc {
    let mut acc = empty(recorded);
    for (_, part) in blocked {
        merge_into(&mut acc, part);
    }
    acc
}

/// One value per quantity (`None` where it does not apply).
type Values = [Option<f64>; QUANTITIES.len()];

/// The method's ensemble and, with `--vary start`, each paired deterministic limit's
/// ensemble and the paired differences method − limit (at the last step only).
struct Methods {
    method: Blocked,
    paired: Vec<(Blocked, Blocked)>,
    /// The method's paths that ended before the last step, and the (first) paired limit's.
    ended_method: usize,
    ended_limit: usize,
}

/// What every replica's values are measured with.
struct Measure<'a> {
    setup: &'a Setup,
    /// The set-up's field, made once (every record needs UVᵀ).
    field: Arc<dyn Field>,
    recorder: &'a Recorder<'a>,
    /// The steps trajectory.csv records.
    recorded: Vec<usize>,
    /// The same steps for the driver: where a mini-batch method must give its loss, not its
    /// batch's estimate.
    loss_at: SaveAt,
    dt: f64,
    target_norm: f64,
    /// ‖X*‖_*.
    target_nuclear: f64,
    optimizer: &'a dyn Optimizer,
    /// Counts replicas done, over every ensemble of the run.
    bar: super::progress::ProgressBar,
    /// Run only this part's blocks (`run --replicas N --shard i/N`).
    shard: Option<Shard>,
}

impl<'a> Measure<'a> {
    /// What `setup`'s replicas are measured with, at the steps trajectory.csv records or, for
    /// a weak sweep (`last_only`), at the last step alone; `shard`'s blocks of them, or all.
    fn new(
        setup: &'a Setup,
        field: Arc<dyn Field>,
        recorder: &'a Recorder<'a>,
        optimizer: &'a dyn Optimizer,
        bar: &super::progress::ProgressBar,
        last_only: bool,
        shard: Option<Shard>,
    ) -> Self {
        let cfg = &setup.config;
        let (recorded, loss_at) = if last_only {
            (vec![cfg.steps], SaveAt::Last)
        } else {
            (
                RunOptions::new(cfg.eta, cfg.steps, cfg.record_every).saved_steps(),
                SaveAt::Every(cfg.record_every),
            )
        };
        Self {
            setup,
            field,
            recorder,
            recorded,
            loss_at,
            dt: optimizer.time_scale().per_step(cfg.eta),
            target_norm: setup.problem.x_star.norm(),
            target_nuclear: nuclear_norm(&setup.problem.x_star),
            optimizer,
            bar: bar.clone(),
            shard,
        }
    }

    /// The quantities at `state`; `x` is its UVᵀ, `d0` the UᵀU − VᵀV of its replica's start.
    fn values(
        &self,
        state: &[f64],
        x: &DMatrix<f64>,
        loss: f64,
        distance: Option<f64>,
        d0: &DMatrix<f64>,
    ) -> Values {
        let target = &self.setup.problem.x_star;
        let (u, v) = self.field.factors().split(state);
        let d = balance(self.field.as_ref(), state);
        [
            Some(loss),
            Some((x - target).norm() / self.target_norm),
            Some((&d - d0).norm()),
            distance,
            Some(d.norm()),
            Some(u.norm_squared() + v.norm_squared() - 2.0 * self.target_nuclear),
        ]
    }

    /// A deterministic path's quantities at `state` (`loss` there), each with n = 1.
    fn exact_at(&self, state: &[f64], loss: f64) -> BTreeMap<String, Stat> {
        let x = self.field.product(state);
        let values = self.values(state, &x, loss, None, self.recorder.d0());
        QUANTITIES
            .iter()
            .zip(values)
            .filter_map(|(q, v)| v.map(|v| (q.to_string(), Stat::exact(v))))
            .collect()
    }

    /// Add the values at recorded step index `i` to `acc`.
    fn add(acc: &mut Acc, i: usize, values: Values) {
        for (a, v) in acc[i].iter_mut().zip(values) {
            if let Some(v) = v {
                a.push(v);
            }
        }
    }

    /// UᵀU − VᵀV at replica `r`'s start.
    fn d0(&self, r: u64) -> DMatrix<f64> {
        if self.setup.config.vary.is_some() {
            balance(self.field.as_ref(), &self.start(r))
        } else {
            self.recorder.d0().clone()
        }
    }

    fn empty(&self) -> Acc {
        empty(self.recorded.len())
    }

    /// The whole of an ensemble run here (all its blocks: no shard).
    fn total(&self, blocked: &Blocked) -> Acc {
        fold(blocked, self.recorded.len())
    }

    /// The replicas (this shard's blocks of them) in fixed chunks, in parallel; each chunk
    /// accumulates its replicas in order into `k` accumulators, and each block folds its
    /// chunks in order, so the result does not depend on the thread count. The chunks run in
    /// waves whose results are merged before the next starts: memory stays that of a wave and
    /// of one accumulator per block, whatever the number of replicas.
    fn replicas(
        &self,
        count: usize,
        k: usize,
        one_chunk: impl Fn(std::ops::Range<u64>) -> Result<(Vec<Acc>, Ended)> + Sync + Send,
    ) -> Result<(Vec<Blocked>, Ended)> {
        let chunks: Vec<(usize, std::ops::Range<u64>)> = block_ranges(count)
            .into_iter()
            .enumerate()
            .filter(|(b, _)| self.shard.is_none_or(|s| s.owns(*b)))
            .flat_map(|(b, r)| {
                let end = r.end;
                r.step_by(CHUNK)
                    .map(move |a| (b, a..(a + CHUNK as u64).min(end)))
            })
            .collect();
        let mut blocked: Vec<Blocked> = vec![Vec::new(); k];
        let mut ended = [0, 0];
        for wave in chunks.chunks(WAVE) {
            let parts = wave
                .par_iter()
                .map(|(_, range)| {
                    // replicas side by side: their passes share rayon's pool (one chunk
                    // alone takes the operator's helpers)
                    let chunk = || one_chunk(range.clone());
                    let part = if wave.len() > 1 {
                        beside_other_work(chunk)
                    } else {
                        chunk()
                    };
                    self.bar.inc(range.end - range.start);
                    part
                })
                .collect::<Result<Vec<_>>>()?;
            for ((block, _), (part, e)) in wave.iter().zip(&parts) {
                for (blocks, part) in blocked.iter_mut().zip(part) {
                    if blocks.last().is_none_or(|(b, _)| b != block) {
                        blocks.push((*block, self.empty()));
                    }
                    let (_, acc) = blocks.last_mut().expect("pushed");
                    merge_into(acc, part);
                }
                ended = [ended[0] + e[0], ended[1] + e[1]];
            }
        }
        Ok((blocked, ended))
    }

    /// Replica `r`'s start: its own with `--vary start`, the problem's otherwise.
    fn start(&self, r: u64) -> Vec<f64> {
        let cfg = &self.setup.config;
        match cfg.vary {
            Some(crate::config::Vary::Start) => self.setup.problem.replica_start_state(cfg.seed, r),
            None => self.setup.start(),
        }
    }

    /// Replica `r` of `limit` (a `variant` limit of the method): its own noise, and with
    /// `--vary start` its start as the method's rule makes it from the replica's start (heavy
    /// ball's modified limit starts off x_0).
    fn limit_replica(&self, limit: &Limit, variant: FlowVariant, r: u64) -> Result<Limit> {
        let mut path = limit.replica(r);
        if self.setup.config.vary.is_some() {
            let cfg = &self.setup.config;
            path.start = limit_at(
                self.optimizer,
                variant,
                self.field.clone(),
                &self.start(r),
                cfg.eta,
            )?
            .start;
        }
        Ok(path)
    }

    /// One path of `path` (replica `r`'s) on the grid of the method's times: each recorded
    /// step's quantities into `acc`; `keep` also collects its positions and its last values.
    /// Returns whether it ended early.
    fn solve_path(
        &self,
        path: &Limit,
        r: u64,
        acc: &mut Acc,
        mut keep: Option<(&mut States, &mut Values)>,
    ) -> Result<bool> {
        let cfg = &self.setup.config;
        let field = self.field.as_ref();
        let mut ws = field.workspace();
        let d0 = self.d0(r);
        let times = Times::Grid {
            dt: self.dt,
            count: cfg.steps + 1,
        };
        let end = path.solve(
            times,
            &cfg.flow_options(),
            &mut |j, t, out| {
                if let Ok(i) = self.recorded.binary_search(&j) {
                    let loss = field.loss(out.state, &mut ws);
                    let x = field.product(out.state);
                    let values = self.values(out.state, &x, loss, None, &d0);
                    Self::add(acc, i, values);
                    if let Some((states, last)) = keep.as_mut() {
                        states.push(j, t, out.state);
                        **last = values;
                    }
                }
            },
            &mut |_| {},
        )?;
        Ok(end.status != Status::Completed)
    }

    /// The method's replicas, and the distance of each to the limit: to `flow` (a
    /// deterministic limit's positions at the recorded steps, one start for all), or with
    /// `--vary start` to the first of `paired` (deterministic limits, each solved here from
    /// every replica's start).
    fn method(&self, flow: Option<&States>, paired: &[(&Limit, FlowVariant)]) -> Result<Methods> {
        let cfg = &self.setup.config;
        let field = self.field.as_ref();
        let opts = RunOptions {
            save: SaveAt::Nothing,
            loss_at: self.loss_at.clone(),
            ..RunOptions::new(cfg.eta, cfg.steps, cfg.record_every).with_dt(self.dt)
        };
        let last_step = self.recorded.last().copied();
        let limits = paired.len();
        // the method's, then per paired limit its own and the differences (last step only)
        let (mut accs, ended) = self.replicas(cfg.replicas, 1 + 2 * limits, |range| {
            let mut accs: Vec<Acc> = (0..1 + 2 * limits).map(|_| self.empty()).collect();
            // each replica's own limit paths, when the starts differ: [limit][replica]
            let mut flows: Vec<Vec<States>> = vec![Vec::new(); limits];
            let mut flow_last: Vec<Vec<Values>> = vec![Vec::new(); limits];
            let mut ended = 0;
            for (l, (limit, variant)) in paired.iter().enumerate() {
                for r in range.clone() {
                    let (mut states, mut last) = (States::default(), [None; QUANTITIES.len()]);
                    let path = self.limit_replica(limit, *variant, r)?;
                    let early = self.solve_path(
                        &path,
                        r,
                        &mut accs[1 + 2 * l],
                        Some((&mut states, &mut last)),
                    )?;
                    ended += usize::from(early && l == 0);
                    // a path that ended early has no last-step values to pair
                    if states.steps.last() != last_step.as_ref() {
                        last = [None; QUANTITIES.len()];
                    }
                    flows[l].push(states);
                    flow_last[l].push(last);
                }
            }
            let d0s: Vec<DMatrix<f64>> = range.clone().map(|r| self.d0(r)).collect();
            let runs = range
                .map(|r| {
                    (
                        self.optimizer.replica_stepper(cfg.eta, r),
                        self.start(r),
                        opts.clone(),
                    )
                })
                .collect();
            let mut observe = |it: &Iterate<'_>| {
                let Ok(i) = self.recorded.binary_search(&it.step) else {
                    return;
                };
                let x = field.product(it.state);
                let own = flows.first().and_then(|f| f.get(it.run));
                let distance = own.or(flow).and_then(|f| {
                    let k = f.steps.binary_search(&it.step).ok()?;
                    Some((&x - field.product(&f.states[k])).norm())
                });
                let values = self.values(it.state, &x, it.loss, distance, &d0s[it.run]);
                Self::add(&mut accs[0], i, values);
                if Some(it.step) != last_step {
                    return;
                }
                for (l, lasts) in flow_last.iter().enumerate() {
                    let diff = &mut accs[2 + 2 * l][i];
                    for ((d, m), v) in diff.iter_mut().zip(values).zip(lasts[it.run]) {
                        if let (Some(m), Some(v)) = (m, v) {
                            d.push(m - v);
                        }
                    }
                }
            };
            let ended_method = Driver::batch(field, runs)
                .run(&mut observe)
                .iter()
                .filter(|t| t.status != Status::Completed)
                .count();
            Ok((accs, [ended_method, ended]))
        })?;
        let [ended_method, ended_limit] = ended;
        let mut limits_out = Vec::with_capacity(limits);
        while accs.len() > 1 {
            let diff = accs.pop().expect("pairs");
            let own = accs.pop().expect("pairs");
            limits_out.push((own, diff));
        }
        limits_out.reverse();
        Ok(Methods {
            method: accs.pop().expect("the method's"),
            paired: limits_out,
            ended_method,
            ended_limit,
        })
    }

    /// A limit's replicas (a stochastic limit's own paths, or with `--vary start` each from
    /// its replica's start), each on the grid of the method's times.
    fn limit(&self, limit: &Limit, variant: FlowVariant) -> Result<(Blocked, usize)> {
        let cfg = &self.setup.config;
        let (mut accs, ended) = self.replicas(cfg.replicas, 1, |range| {
            let mut acc = self.empty();
            let mut ended = 0;
            for r in range {
                let path = self.limit_replica(limit, variant, r)?;
                ended += usize::from(self.solve_path(&path, r, &mut acc, None)?);
            }
            Ok((vec![acc], [ended, 0]))
        })?;
        Ok((accs.pop().expect("one"), ended[0]))
    }
}

/// Where an ensemble's statistics sit: the recorded steps and the time of a step.
pub struct Grid {
    pub recorded: Vec<usize>,
    pub dt: f64,
}

impl Grid {
    fn rows(&self, dynamics: &str, acc: &Acc) -> Vec<EnsembleRow> {
        self.stat_rows(
            dynamics,
            &acc.iter().map(|a| a.map(|r| r.stat())).collect::<Vec<_>>(),
        )
    }

    fn stat_rows(&self, dynamics: &str, table: &[[Stat; QUANTITIES.len()]]) -> Vec<EnsembleRow> {
        let mut rows = Vec::new();
        for (&step, stats) in self.recorded.iter().zip(table) {
            for (q, &stat) in QUANTITIES.iter().zip(stats) {
                if stat.n > 0 {
                    rows.push(EnsembleRow {
                        dynamics: dynamics.to_string(),
                        step,
                        t: step as f64 * self.dt,
                        quantity: q.to_string(),
                        stat,
                    });
                }
            }
        }
        rows
    }
}

fn nuclear_norm(x: &DMatrix<f64>) -> f64 {
    x.singular_values().sum()
}

/// The last recorded step's statistics, by quantity.
fn last(acc: &Acc) -> BTreeMap<String, Stat> {
    acc.last()
        .map_or_else(BTreeMap::new, |l| last_of(&l.map(|r| r.stat())))
}

fn last_of(stats: &[Stat; QUANTITIES.len()]) -> BTreeMap<String, Stat> {
    QUANTITIES
        .iter()
        .zip(stats)
        .filter(|(_, s)| s.n > 0)
        .map(|(q, s)| (q.to_string(), *s))
        .collect()
}

/// A run's ensembles by name (`method`; with `--vary start` `paired` and
/// `paired_difference`; for an SME `sme_h`, `sme_h2`), each by block — all blocks, or one
/// shard's — and what else their summary needs.
pub struct Ensembles {
    pub blocked: BTreeMap<String, Blocked>,
    /// A deterministic limit's values at the last step (n = 1), when it has one path.
    pub flow_final: Option<BTreeMap<String, Stat>>,
    /// The method's replicas that ended early, and the limit's.
    pub ended: Ended,
    pub substeps: Option<SubstepChoice>,
    pub grid: Grid,
}

/// Run the replicas (`shard`'s blocks of them, or all) of the method and of a stochastic limit
/// or, with `--vary start`, of a deterministic one. A deterministic limit's positions at the
/// recorded steps (`flow`) give the method's distances, its last record (`flow_last`) its n = 1
/// values.
#[allow(clippy::too_many_arguments)]
pub fn ensemble(
    setup: &Setup,
    optimizer: &dyn Optimizer,
    limit: &Limit,
    recorder: &Recorder<'_>,
    flow: Option<&States>,
    flow_last: Option<&Record>,
    progress: bool,
    shard: Option<Shard>,
) -> Result<Ensembles> {
    let cfg = &setup.config;
    let stochastic_limit = limit.is_stochastic();
    if cfg.talay_tubaro && !stochastic_limit {
        return Err(Error::invalid(
            "talay_tubaro",
            true,
            format!(
                "extrapolates an SME's ensembles on h and h/2, and --flow {} is deterministic: \
                 use --flow sme1 or sme2",
                cfg.flow.name()
            ),
        ));
    }
    // the method's replicas, and an SME's on h and h/2 (more if its substeps are doubled)
    let ensembles = if stochastic_limit { 3 } else { 1 };
    let bar = ensemble_bar(setup, progress, ensembles, limit.substeps(), shard);
    bar.set_message(if stochastic_limit {
        format!(
            "{} and its SME on h and h/2, {} replicas each",
            optimizer.name(),
            cfg.replicas
        )
    } else {
        format!("{}, {} replicas", optimizer.name(), cfg.replicas)
    });
    let measure = Measure::new(
        setup,
        setup.field(),
        recorder,
        optimizer,
        &bar,
        false,
        shard,
    );
    // with --vary start a deterministic limit is an ensemble too: one path per replica's start
    let paired = (cfg.vary.is_some() && !stochastic_limit).then_some((limit, cfg.flow));
    let paired: Vec<(&Limit, FlowVariant)> = paired.into_iter().collect();
    let methods = measure.method(
        flow.filter(|_| !stochastic_limit && paired.is_empty()),
        &paired,
    )?;
    let mut ended = [methods.ended_method, methods.ended_limit];
    let mut blocked = BTreeMap::from([("method".to_string(), methods.method)]);
    if let Some((own, difference)) = methods.paired.into_iter().next() {
        blocked.insert("paired".into(), own);
        blocked.insert("paired_difference".into(), difference);
    }
    let mut flow_final = None;
    let mut substeps = None;
    if stochastic_limit {
        let method_final = last(&fold(&blocked["method"], measure.recorded.len()));
        let sme = measure.sme(limit, cfg.flow, &method_final)?;
        ended[1] += sme.ended;
        blocked.insert("sme_h".into(), sme.coarse);
        blocked.insert("sme_h2".into(), sme.fine);
        substeps = Some(sme.choice);
    } else if let Some(r) = flow_last.filter(|r| r.step == cfg.steps && paired.is_empty()) {
        // the limit's one path: every quantity at its last state, n = 1
        let state = flow.and_then(|f| f.states.last().filter(|_| f.steps.last() == Some(&r.step)));
        flow_final = Some(if let Some(state) = state {
            measure.exact_at(state, r.loss())
        } else {
            [
                ("loss", r.loss()),
                ("rel_error", r.rel_error()),
                ("balance_drift", r.balance_drift()),
            ]
            .iter()
            .map(|(q, v)| (q.to_string(), Stat::exact(*v)))
            .collect()
        });
    }
    bar.finish_and_clear();
    Ok(Ensembles {
        blocked,
        flow_final,
        ended,
        substeps,
        grid: Grid {
            recorded: measure.recorded,
            dt: measure.dt,
        },
    })
}

/// The statistics of whole ensembles (every block present) of method `name`: ensemble.csv's
/// rows and the summary's `ensemble`.
pub fn summarise(
    ens: &Ensembles,
    name: &str,
    replicas: usize,
    talay_tubaro: bool,
) -> Result<(Vec<EnsembleRow>, EnsembleSummary)> {
    let grid = &ens.grid;
    let folded = |e: &str| ens.blocked.get(e).map(|b| fold(b, grid.recorded.len()));
    let method = folded("method").unwrap_or_else(|| empty(grid.recorded.len()));
    let mut rows = grid.rows(name, &method);
    let mut final_stats = BTreeMap::from([(name.to_string(), last(&method))]);
    let mut scheme_error = BTreeMap::new();
    if let (Some(coarse), Some(fine)) = (folded("sme_h"), folded("sme_h2")) {
        // the scheme's own weak error: the same SME on h/2 (its own paths), E_h − E_{h/2}
        scheme_error = differences(&last(&coarse), &last(&fine));
        if talay_tubaro {
            let extrapolated = extrapolate(&coarse, &fine);
            rows.extend(grid.stat_rows("flow", &extrapolated));
            let end = extrapolated.last().map_or_else(BTreeMap::new, last_of);
            final_stats.insert("flow".into(), end);
        } else {
            rows.extend(grid.rows("flow", &coarse));
            final_stats.insert("flow".into(), last(&coarse));
        }
    } else if let Some(paired) = folded("paired") {
        rows.extend(grid.rows("flow", &paired));
        final_stats.insert("flow".into(), last(&paired));
    } else if let Some(flow) = &ens.flow_final {
        final_stats.insert("flow".into(), flow.clone());
    }
    let weak_error = match (folded("paired_difference"), final_stats.get("flow")) {
        // paired by start: the mean of the replicas' own differences and its interval
        (Some(diff), _) => last(&diff)
            .into_iter()
            .map(|(q, d)| (q, WeakError::of_differences(&d)))
            .collect(),
        (None, Some(flow)) => differences(&final_stats[name], flow),
        _ => BTreeMap::new(),
    };
    if rows.is_empty() {
        return Err(Error::invalid("replicas", replicas, "recorded nothing"));
    }
    Ok((
        rows,
        EnsembleSummary {
            replicas,
            final_stats,
            ended_early: ens.ended[0],
            ended_early_limit: ens.ended[1],
            weak_error,
            scheme_error,
            substeps: ens.substeps.clone(),
            talay_tubaro,
        },
    ))
}

/// A shard's ensembles as `ensemble_blocks.csv`'s rows and the summary's `ensemble_part`.
pub fn shard_part(ens: &Ensembles, shard: Shard, replicas: usize) -> (Vec<BlockRow>, EnsemblePart) {
    let mut rows = Vec::new();
    for (ensemble, blocked) in &ens.blocked {
        for (block, acc) in blocked {
            for (&step, at) in ens.grid.recorded.iter().zip(acc) {
                for (q, running) in QUANTITIES.iter().zip(at) {
                    if running.parts().0 > 0 {
                        rows.push(BlockRow {
                            ensemble: ensemble.clone(),
                            block: *block,
                            step,
                            quantity: q.to_string(),
                            running: *running,
                        });
                    }
                }
            }
        }
    }
    let part = EnsemblePart {
        shard,
        replicas,
        blocks: block_ranges(replicas).len(),
        dt: ens.grid.dt,
        ended_early: ens.ended[0],
        ended_early_limit: ens.ended[1],
        flow_final: ens.flow_final.clone(),
        substeps: ens.substeps.clone(),
    };
    (rows, part)
}

/// The whole ensembles again from every shard's blocks (`rows`) and the first part's
/// `ensemble_part`, on the run's recorded steps; the ended counts are the parts' sums.
pub fn from_shards(
    rows: &[BlockRow],
    first: &EnsemblePart,
    ended: Ended,
    recorded: Vec<usize>,
) -> Result<Ensembles> {
    let mut by_block: BTreeMap<String, BTreeMap<usize, Acc>> = BTreeMap::new();
    for r in rows {
        let i = recorded.binary_search(&r.step).map_err(|_| {
            Error::invalid(
                "merge",
                format!("step {}", r.step),
                "is in a part's ensemble_blocks.csv but not a recorded step of the run",
            )
        })?;
        let q = QUANTITIES
            .iter()
            .position(|q| *q == r.quantity)
            .ok_or_else(|| {
                Error::invalid(
                    "merge",
                    &r.quantity,
                    "is not a quantity of an ensemble (ensemble_blocks.csv)",
                )
            })?;
        let acc = by_block
            .entry(r.ensemble.clone())
            .or_default()
            .entry(r.block)
            .or_insert_with(|| empty(recorded.len()));
        acc[i][q] = r.running;
    }
    Ok(Ensembles {
        blocked: by_block
            .into_iter()
            .map(|(e, blocks)| (e, blocks.into_iter().collect()))
            .collect(),
        flow_final: first.flow_final.clone(),
        ended,
        substeps: first.substeps.clone(),
        grid: Grid {
            recorded,
            dt: first.dt,
        },
    })
}

/// The warnings an ensemble's summary calls for.
pub fn warnings(s: &EnsembleSummary) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(c) = s.substeps.as_ref().filter(|c| c.tried.len() > 1) {
        out.push(format!(
            "the ensemble's SME ran on {} substeps a step (chosen: {:?}); trajectory.csv's \
             flow rows (replica 0) and `solver` are from the first solve, on {}: give \
             --sde-substeps {} for both",
            c.substeps, c.tried, c.tried[0], c.substeps
        ));
    }
    if let Some(c) = s
        .substeps
        .as_ref()
        .filter(|c| c.reason.contains("at the cap"))
    {
        out.push(format!("SME substeps: {}", c.reason));
    }
    if s.ended_early > 0 || s.ended_early_limit > 0 {
        out.push(format!(
            "{} of the method's and {} of the limit's {} replicas ended before the last \
             step (diverged or failed): the statistics after that are the survivors'",
            s.ended_early, s.ended_early_limit, s.replicas
        ));
    }
    out
}

/// A bar over the replicas of `ensembles` ensembles, drawn when the work is worth one (an SME
/// substep costs about three passes).
fn ensemble_bar(
    setup: &Setup,
    show: bool,
    ensembles: usize,
    substeps: Option<usize>,
    shard: Option<Shard>,
) -> super::progress::ProgressBar {
    let replicas = owned_replicas(setup.config.replicas, shard);
    let work = replica_work(setup, replicas * setup.config.steps, substeps);
    super::progress::bar(show, work, (ensembles * replicas) as u64, "replica")
}

/// Operator entries streamed by `replica_steps` steps of replicas, with an SME's `substeps`
/// (each about three passes) or none: what a progress bar weighs before drawing itself.
pub(super) fn replica_work(setup: &Setup, replica_steps: usize, substeps: Option<usize>) -> f64 {
    let per_step = 2.0 + 9.0 * substeps.unwrap_or(0) as f64;
    setup.problem.op.entries_per_pass() as f64 * replica_steps as f64 * per_step
}

/// Whether `run --shard` (as `spec`) can split this run's ensemble, or why not, naming the
/// flag: before any work.
pub fn check_shard(cfg: &crate::config::Config, shard: Shard, spec: &str) -> Result<()> {
    let bad = |why: String| Err(Error::invalid("shard", spec, why));
    if cfg.replicas < 2 {
        return bad(
            "splits an ensemble's replicas between runs, and there is none: give --replicas N \
             (N ≥ 2), or drop --shard"
                .into(),
        );
    }
    if cfg.out.is_none() {
        return bad(
            "a part's result is its blocks of accumulators, for `gdflow merge` to read: add \
             --out DIR"
                .into(),
        );
    }
    let blocks = block_ranges(cfg.replicas).len();
    if shard.count > blocks {
        let (summed, at_most) = if blocks == 1 {
            ("one block".to_string(), "run them unsharded".to_string())
        } else {
            (
                format!("{blocks} blocks"),
                format!("split into at most {blocks} parts"),
            )
        };
        return bad(format!(
            "asks for {} parts, and {} replicas are summed in {summed} (whole chunks of {CHUNK} \
             replicas, at most {MAX_BLOCKS} blocks): {at_most}, or run more replicas",
            shard.count, cfg.replicas
        ));
    }
    if matches!(cfg.flow, FlowVariant::Sme1 | FlowVariant::Sme2) && cfg.sde_substeps.is_none() {
        return bad(format!(
            "leaves --flow {}'s substeps to be chosen from the whole ensemble, which a part \
             does not see: give --sde-substeps s (an unsharded run reports its choice in \
             ensemble.substeps)",
            cfg.flow.name()
        ));
    }
    Ok(())
}

/// The replicas of `count` that `shard` runs (all without one).
pub fn owned_replicas(count: usize, shard: Option<Shard>) -> usize {
    block_ranges(count)
        .iter()
        .enumerate()
        .filter(|(b, _)| shard.is_none_or(|s| s.owns(*b)))
        .map(|(_, r)| (r.end - r.start) as usize)
        .sum()
}

/// The method's `variant` limit from `start`, or why not, naming the flow.
fn limit_at(
    optimizer: &dyn Optimizer,
    variant: FlowVariant,
    field: Arc<dyn Field>,
    start: &[f64],
    eta: f64,
) -> Result<Limit> {
    optimizer
        .limit(variant, field, start, eta)
        .map_err(|why| Error::invalid("flow", variant.name(), why))
}

/// Each quantity's `a − b`, where both have it.
fn differences(
    a: &BTreeMap<String, Stat>,
    b: &BTreeMap<String, Stat>,
) -> BTreeMap<String, WeakError> {
    a.iter()
        .filter_map(|(q, x)| b.get(q).map(|y| (q.clone(), WeakError::between(x, y))))
        .collect()
}

/// Talay–Tubaro: 2E_{h/2} − E_h at every recorded step, which removes Euler–Maruyama's
/// first-order weak error. The two ensembles are independent, so the interval is
/// 1.96·√(4s²_{h/2}/n_{h/2} + s²_h/n_h); the spread reported is the h/2 ensemble's.
fn extrapolate(coarse: &Acc, fine: &Acc) -> Vec<[Stat; QUANTITIES.len()]> {
    coarse
        .iter()
        .zip(fine)
        .map(|(c, f)| std::array::from_fn(|q| Stat::talay_tubaro(&c[q].stat(), &f[q].stat())))
        .collect()
}

/// An SME's two ensembles (on h and h/2) and how its substep count was chosen.
struct SmeEnsembles {
    coarse: Blocked,
    fine: Blocked,
    ended: usize,
    choice: SubstepChoice,
}

/// The most substeps per step the choice goes to (from 8, four doublings).
const MAX_CHOSEN_SUBSTEPS: usize = 128;
/// The most Euler–Maruyama substeps (over all replicas) one more doubling may cost: about
/// half an hour on two cores of MATH §10's tiny problem (2·10⁶ substeps a second). Beyond,
/// the count is left where it is, and the summary says so.
const MAX_CHOSEN_WORK: f64 = 4e9;

impl Measure<'_> {
    /// The SME's ensembles on h and h/2. When the configuration leaves the substep count to
    /// gdflow, it is doubled (the h/2 ensemble becoming the next h) while some quantity's
    /// scheme error E_h − E_{h/2} is resolved and not below half its weak error against the
    /// method (`method`'s final statistics): the coarse scheme's own error is about twice
    /// E_h − E_{h/2}, and a measured weak error must not be the scheme's.
    fn sme(
        &self,
        limit: &Limit,
        variant: FlowVariant,
        method: &BTreeMap<String, Stat>,
    ) -> Result<SmeEnsembles> {
        let cfg = &self.setup.config;
        let choose = cfg.sde_substeps.is_none();
        let mut limit = limit.clone();
        let (mut coarse, mut ended) = self.limit(&limit, variant)?;
        let mut tried = Vec::new();
        loop {
            let substeps = limit.substeps().unwrap_or(1);
            tried.push(substeps);
            let refined = limit.refined();
            let (fine, fine_ended) = self.limit(&refined, variant)?;
            let (c, f) = (last(&self.total(&coarse)), last(&self.total(&fine)));
            let scheme = differences(&c, &f);
            let weak = differences(method, &c);
            let too_large: Vec<String> = scheme
                .iter()
                .filter(|(q, s)| {
                    s.resolved
                        && weak.get(*q).is_some_and(|w| {
                            2.0 * (s.difference.abs() + s.ci95) > w.difference.abs()
                        })
                })
                .map(|(q, _)| q.clone())
                .collect();
            // the next h/2 ensemble costs replicas × steps × 4·substeps substeps
            let next_work = (cfg.replicas * cfg.steps) as f64 * 4.0 * substeps as f64;
            let at_cap = substeps * 2 > MAX_CHOSEN_SUBSTEPS || next_work > MAX_CHOSEN_WORK;
            if !choose || too_large.is_empty() || at_cap {
                let reason = if !choose {
                    "given (sde_substeps)".to_string()
                } else if too_large.is_empty() {
                    "chosen: the scheme's error E_h − E_{h/2} is unresolved or below half the \
                     weak error for every quantity"
                        .to_string()
                } else {
                    format!(
                        "chosen, at the cap ({MAX_CHOSEN_SUBSTEPS} substeps or {MAX_CHOSEN_WORK:e} \
                         substeps of work): the scheme's error is still not below half the weak \
                         error for {} — set --sde-substeps, or read those weak errors as the \
                         scheme's",
                        too_large.join(", ")
                    )
                };
                return Ok(SmeEnsembles {
                    coarse,
                    fine,
                    ended,
                    choice: SubstepChoice {
                        substeps,
                        tried,
                        reason,
                    },
                });
            }
            self.bar.inc_length(cfg.replicas as u64);
            limit = refined;
            coarse = fine;
            ended = fine_ended;
        }
    }
}

/// The method's ensemble at its last step against each of several limits, as a weak sweep
/// compares them at one step size.
pub struct WeakAgainst {
    /// The method's statistics at the last step, by quantity.
    pub method: BTreeMap<String, Stat>,
    /// Each limit's (by its flow name) statistics at the last step: n = 1 for a deterministic
    /// limit; a limit that did not reach the last step is left out.
    pub limits: BTreeMap<String, BTreeMap<String, Stat>>,
    /// With `--vary start`, a deterministic limit's weak error from the replicas' paired
    /// differences (method − limit from the same start), by quantity.
    pub paired: BTreeMap<String, BTreeMap<String, WeakError>>,
    /// A stochastic limit's scheme error E_h − E_{h/2}, by quantity.
    pub scheme_error: BTreeMap<String, BTreeMap<String, WeakError>>,
    /// A stochastic limit's substeps per step and how they were set.
    pub substeps: BTreeMap<String, SubstepChoice>,
}

/// The method's replicas run once, then each limit of `variants`: a stochastic one by its own
/// replicas (and again on h/2 for its scheme error), a deterministic one by one solve.
pub fn weak_against(
    setup: &Setup,
    variants: &[FlowVariant],
    bar: &super::progress::ProgressBar,
) -> Result<WeakAgainst> {
    let cfg = &setup.config;
    let optimizer = setup.optimizer()?;
    let field = setup.field();
    let x0 = setup.start();
    let recorder = Recorder::new(field.as_ref(), &setup.problem.x_star, &x0);
    let measure = Measure::new(
        setup,
        field.clone(),
        &recorder,
        optimizer.as_ref(),
        bar,
        true,
        None,
    );
    let dt = measure.dt;
    let has = optimizer.limits();
    let variants: Vec<FlowVariant> = variants
        .iter()
        .copied()
        .filter(|v| has.contains(v))
        .collect();
    let limits: Vec<(Limit, FlowVariant)> = variants
        .iter()
        .map(|&v| limit_at(optimizer.as_ref(), v, field.clone(), &x0, cfg.eta).map(|l| (l, v)))
        .collect::<Result<_>>()?;
    // with --vary start the deterministic limits are solved from every replica's start and
    // paired with the method's replicas
    let pairs: Vec<(&Limit, FlowVariant)> = limits
        .iter()
        .filter(|(l, _)| cfg.vary.is_some() && !l.is_stochastic())
        .map(|(l, v)| (l, *v))
        .collect();
    let methods = measure.method(None, &pairs)?;
    let mut out = WeakAgainst {
        method: last(&measure.total(&methods.method)),
        limits: BTreeMap::new(),
        paired: BTreeMap::new(),
        scheme_error: BTreeMap::new(),
        substeps: BTreeMap::new(),
    };
    for ((_, variant), (own, diff)) in pairs.iter().zip(&methods.paired) {
        let name = variant.name().to_string();
        out.limits.insert(name.clone(), last(&measure.total(own)));
        let paired = last(&measure.total(diff))
            .into_iter()
            .map(|(q, d)| (q, WeakError::of_differences(&d)))
            .collect();
        out.paired.insert(name, paired);
    }
    let opts = cfg.flow_options();
    for (limit, variant) in &limits {
        let (limit, variant) = (limit, *variant);
        if out.limits.contains_key(variant.name()) {
            continue;
        }
        let stats = if limit.is_stochastic() {
            let sme = measure.sme(limit, variant, &out.method)?;
            let (coarse, fine) = (measure.total(&sme.coarse), measure.total(&sme.fine));
            let (coarse_last, fine_last) = (last(&coarse), last(&fine));
            out.scheme_error.insert(
                variant.name().to_string(),
                differences(&coarse_last, &fine_last),
            );
            out.substeps.insert(variant.name().to_string(), sme.choice);
            if cfg.talay_tubaro {
                extrapolate(&coarse, &fine)
                    .last()
                    .map_or_else(BTreeMap::new, last_of)
            } else {
                coarse_last
            }
        } else {
            let times = Times::Grid {
                dt: dt * cfg.steps as f64,
                count: 2,
            };
            let kept = limit.solve_kept(times, &opts, &|i| i == 1)?;
            let Some(state) = kept.states.first() else {
                continue;
            };
            measure.exact_at(state, field.loss(state, &mut field.workspace()))
        };
        out.limits.insert(variant.name().to_string(), stats);
    }
    Ok(out)
}
