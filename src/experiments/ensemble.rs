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
use crate::dynamics::optimizer::{Limit, Optimizer};
use crate::dynamics::{Driver, FlowVariant, Iterate, RunOptions, SaveAt, Status};
use crate::error::{Error, Result};
use crate::field::Field;
use crate::results::ensemble::{EnsembleRow, EnsembleSummary, Running, Stat, WeakError};
use crate::results::run::States;

use super::Setup;

/// Replicas per chunk: the unit of parallel work and of the fixed accumulation order.
const CHUNK: usize = 8;

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

/// What every replica's values are measured with.
struct Measure<'a> {
    setup: &'a Setup,
    /// The set-up's field, made once (every record needs UVᵀ).
    field: Arc<dyn Field>,
    recorder: &'a Recorder<'a>,
    /// The steps trajectory.csv records.
    recorded: Vec<usize>,
    dt: f64,
    target_norm: f64,
    /// ‖X*‖_*.
    target_nuclear: f64,
}

impl Measure<'_> {
    /// Add the values at recorded step index `i` to `acc`; `x` is UVᵀ of `state`.
    fn add(
        &self,
        acc: &mut Acc,
        i: usize,
        state: &[f64],
        x: &DMatrix<f64>,
        loss: f64,
        distance: Option<f64>,
    ) {
        let target = &self.setup.problem.x_star;
        let (u, v) = self.field.factors().split(state);
        let values = [
            Some(loss),
            Some((x - target).norm() / self.target_norm),
            Some(self.recorder.balance_drift(state)),
            distance,
            Some(balance(self.field.as_ref(), state).norm()),
            Some(u.norm_squared() + v.norm_squared() - 2.0 * self.target_nuclear),
        ];
        for (a, v) in acc[i].iter_mut().zip(values) {
            if let Some(v) = v {
                a.push(v);
            }
        }
    }

    fn empty(&self) -> Acc {
        vec![[Running::default(); QUANTITIES.len()]; self.recorded.len()]
    }

    /// The replicas in fixed chunks, in parallel; each chunk accumulates its replicas in order
    /// and the chunks merge in order, so the result does not depend on the thread count.
    fn replicas(
        &self,
        count: usize,
        one_chunk: impl Fn(std::ops::Range<u64>) -> Result<(Acc, usize)> + Sync + Send,
    ) -> Result<(Acc, usize)> {
        let chunks: Vec<std::ops::Range<u64>> = (0..count as u64)
            .step_by(CHUNK)
            .map(|a| a..(a + CHUNK as u64).min(count as u64))
            .collect();
        let parts = chunks
            .into_par_iter()
            .map(&one_chunk)
            .collect::<Result<Vec<_>>>()?;
        let mut acc = self.empty();
        let mut ended = 0;
        for (part, e) in &parts {
            for (a, p) in acc.iter_mut().zip(part) {
                for (q, pq) in a.iter_mut().zip(p) {
                    q.merge(pq);
                }
            }
            ended += e;
        }
        Ok((acc, ended))
    }

    /// The method's replicas; `flow` (a deterministic limit's positions at the recorded
    /// steps) gives each its distance to the limit.
    fn method(&self, optimizer: &dyn Optimizer, flow: Option<&States>) -> Result<(Acc, usize)> {
        let cfg = &self.setup.config;
        let field = self.field.as_ref();
        let x0 = self.setup.start();
        let opts = RunOptions {
            save: SaveAt::Nothing,
            ..RunOptions::new(cfg.eta, cfg.steps, cfg.record_every).with_dt(self.dt)
        };
        self.replicas(cfg.replicas, |range| {
            let mut acc = self.empty();
            let runs = range
                .map(|r| {
                    (
                        optimizer.replica_stepper(cfg.eta, r),
                        x0.clone(),
                        opts.clone(),
                    )
                })
                .collect();
            let mut observe = |it: &Iterate<'_>| {
                let Ok(i) = self.recorded.binary_search(&it.step) else {
                    return;
                };
                let x = field.product(it.state);
                let distance = flow.and_then(|f| {
                    let k = f.steps.binary_search(&it.step).ok()?;
                    Some((&x - field.product(&f.states[k])).norm())
                });
                self.add(&mut acc, i, it.state, &x, it.loss, distance);
            };
            let ended = Driver::batch(field, runs)
                .run(&mut observe)
                .iter()
                .filter(|t| t.status != Status::Completed)
                .count();
            Ok((acc, ended))
        })
    }

    /// A stochastic limit's replicas, each its own path on the grid of the method's times.
    fn limit(&self, limit: &Limit) -> Result<(Acc, usize)> {
        let cfg = &self.setup.config;
        let field = self.field.as_ref();
        let opts = cfg.flow_options();
        self.replicas(cfg.replicas, |range| {
            let mut acc = self.empty();
            let mut ws = field.workspace();
            let mut ended = 0;
            for r in range {
                let path = limit.replica(r);
                let times = Times::Grid {
                    dt: self.dt,
                    count: cfg.steps + 1,
                };
                let end = path.solve(
                    times,
                    &opts,
                    &mut |j, _, out| {
                        if let Ok(i) = self.recorded.binary_search(&j) {
                            let loss = field.loss(out.state, &mut ws);
                            let x = field.product(out.state);
                            self.add(&mut acc, i, out.state, &x, loss, None);
                        }
                    },
                    &mut |_| {},
                )?;
                ended += usize::from(end.status != Status::Completed);
            }
            Ok((acc, ended))
        })
    }

    fn rows(&self, dynamics: &str, acc: &Acc) -> Vec<EnsembleRow> {
        let mut rows = Vec::new();
        for (&step, stats) in self.recorded.iter().zip(acc) {
            for (q, a) in QUANTITIES.iter().zip(stats) {
                let stat = a.stat();
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
    acc.last().map_or_else(BTreeMap::new, |l| {
        QUANTITIES
            .iter()
            .zip(l)
            .filter(|(_, a)| a.stat().n > 0)
            .map(|(q, a)| (q.to_string(), a.stat()))
            .collect()
    })
}

/// Run the replicas and summarise them. A deterministic limit's positions at the recorded
/// steps (`flow`) give the method's distances, its last record (`flow_last`) its n = 1 values;
/// a stochastic limit runs its own replicas.
pub fn ensemble(
    setup: &Setup,
    optimizer: &dyn Optimizer,
    limit: &Limit,
    recorder: &Recorder<'_>,
    flow: Option<&States>,
    flow_last: Option<&Record>,
) -> Result<(Vec<EnsembleRow>, EnsembleSummary)> {
    let cfg = &setup.config;
    let dt = optimizer.time_scale().per_step(cfg.eta);
    let measure = Measure {
        setup,
        field: setup.field(),
        recorder,
        recorded: RunOptions::new(cfg.eta, cfg.steps, cfg.record_every).saved_steps(),
        dt,
        target_norm: setup.problem.x_star.norm(),
        target_nuclear: nuclear_norm(&setup.problem.x_star),
    };
    let name = optimizer.name();
    let stochastic_limit = limit.is_stochastic();
    let (acc, mut ended_early) = measure.method(optimizer, flow.filter(|_| !stochastic_limit))?;
    let mut rows = measure.rows(&name, &acc);
    let mut final_stats = BTreeMap::from([(name.clone(), last(&acc))]);
    let mut scheme_error = BTreeMap::new();
    if stochastic_limit {
        let (lacc, ended) = measure.limit(limit)?;
        ended_early += ended;
        rows.extend(measure.rows("flow", &lacc));
        let coarse = last(&lacc);
        // the scheme's own weak error: the same SME on h/2 (its own paths), E_h − E_{h/2}
        let (fine, _) = measure.limit(&limit.refined())?;
        let fine = last(&fine);
        scheme_error = coarse
            .iter()
            .filter_map(|(q, a)| fine.get(q).map(|b| (q.clone(), WeakError::between(a, b))))
            .collect();
        final_stats.insert("flow".into(), coarse);
    } else if let Some(r) = flow_last.filter(|r| r.step == cfg.steps) {
        let exact = [
            ("loss", r.loss()),
            ("rel_error", r.rel_error()),
            ("balance_drift", r.balance_drift()),
        ];
        final_stats.insert(
            "flow".into(),
            exact
                .iter()
                .map(|(q, v)| (q.to_string(), Stat::exact(*v)))
                .collect(),
        );
    }
    let weak_error = match (final_stats.get(&name), final_stats.get("flow")) {
        (Some(method), Some(flow)) => method
            .iter()
            .filter_map(|(q, a)| flow.get(q).map(|b| (q.clone(), WeakError::between(a, b))))
            .collect(),
        _ => BTreeMap::new(),
    };
    if rows.is_empty() {
        return Err(Error::invalid("replicas", cfg.replicas, "recorded nothing"));
    }
    Ok((
        rows,
        EnsembleSummary {
            replicas: cfg.replicas,
            final_stats,
            ended_early,
            weak_error,
            scheme_error,
        },
    ))
}

/// The method's ensemble at its last step against each of several limits, as a weak sweep
/// compares them at one step size.
pub struct WeakAgainst {
    /// The method's statistics at the last step, by quantity.
    pub method: BTreeMap<String, Stat>,
    /// Each limit's (by its flow name) statistics at the last step: n = 1 for a deterministic
    /// limit; a limit that did not reach the last step is left out.
    pub limits: BTreeMap<String, BTreeMap<String, Stat>>,
    /// A stochastic limit's scheme error E_h − E_{h/2}, by quantity.
    pub scheme_error: BTreeMap<String, BTreeMap<String, WeakError>>,
}

/// The method's replicas run once, then each limit of `variants`: a stochastic one by its own
/// replicas (and again on h/2 for its scheme error), a deterministic one by one solve.
pub fn weak_against(setup: &Setup, variants: &[FlowVariant]) -> Result<WeakAgainst> {
    let cfg = &setup.config;
    let optimizer = setup.optimizer()?;
    let field = setup.field();
    let x0 = setup.start();
    let recorder = Recorder::new(field.as_ref(), &setup.problem.x_star, &x0);
    let dt = optimizer.time_scale().per_step(cfg.eta);
    let measure = Measure {
        setup,
        field: field.clone(),
        recorder: &recorder,
        recorded: vec![cfg.steps],
        dt,
        target_norm: setup.problem.x_star.norm(),
        target_nuclear: nuclear_norm(&setup.problem.x_star),
    };
    let (acc, _) = measure.method(optimizer.as_ref(), None)?;
    let mut out = WeakAgainst {
        method: last(&acc),
        limits: BTreeMap::new(),
        scheme_error: BTreeMap::new(),
    };
    let opts = cfg.flow_options();
    for &variant in variants {
        let limit = optimizer
            .limit(variant, field.clone(), &x0, cfg.eta)
            .map_err(|why| Error::invalid("flow", variant.name(), why))?;
        let stats = if limit.is_stochastic() {
            let coarse = last(&measure.limit(&limit)?.0);
            let fine = last(&measure.limit(&limit.refined())?.0);
            let scheme = coarse
                .iter()
                .filter_map(|(q, a)| fine.get(q).map(|b| (q.clone(), WeakError::between(a, b))))
                .collect();
            out.scheme_error.insert(variant.name().to_string(), scheme);
            coarse
        } else {
            let times = Times::Grid {
                dt: dt * cfg.steps as f64,
                count: 2,
            };
            let kept = limit.solve_kept(times, &opts, &|i| i == 1)?;
            let Some(state) = kept.states.first() else {
                continue;
            };
            let mut acc = measure.empty();
            let loss = field.loss(state, &mut field.workspace());
            measure.add(&mut acc, 0, state, &field.product(state), loss, None);
            last(&acc)
                .into_iter()
                .map(|(q, s)| (q, Stat::exact(s.mean)))
                .collect()
        };
        out.limits.insert(variant.name().to_string(), stats);
    }
    Ok(out)
}
