//! `run --replicas N`: N independent paths of a stochastic method (each its own noise stream,
//! MATH §10), summarised at every recorded step by the mean, standard deviation and 95%
//! interval of each quantity; the deterministic limit beside them has n = 1.

use std::collections::BTreeMap;

use rayon::prelude::*;

use crate::analysis::{Record, Recorder};
use crate::dynamics::optimizer::Optimizer;
use crate::dynamics::{Driver, Iterate, RunOptions, SaveAt, Status};
use crate::error::Result;
use crate::results::ensemble::{EnsembleRow, EnsembleSummary, Running, Stat};
use crate::results::run::States;

use super::Setup;

/// Replicas per chunk: the unit of parallel work and of the fixed accumulation order.
const CHUNK: usize = 8;

/// The quantities every replica records (their names are ensemble.csv's `quantity`).
pub const QUANTITIES: [&str; 4] = ["loss", "rel_error", "balance_drift", "distance"];

/// Run the replicas and summarise them; `flow` holds the limit's positions at the recorded
/// steps (for `distance`), `flow_last` its last record.
pub fn ensemble(
    setup: &Setup,
    optimizer: &dyn Optimizer,
    recorder: &Recorder<'_>,
    flow: Option<&States>,
    flow_last: Option<&Record>,
) -> Result<(Vec<EnsembleRow>, EnsembleSummary)> {
    let cfg = &setup.config;
    let field = setup.field();
    let x0 = setup.start();
    let dt = optimizer.time_scale().per_step(cfg.eta);
    let every = RunOptions::new(cfg.eta, cfg.steps, cfg.record_every).with_dt(dt);
    // the steps trajectory.csv records; the replicas' states are not kept
    let recorded = every.saved_steps();
    let opts = RunOptions {
        save: SaveAt::Nothing,
        ..every
    };
    let target = &setup.problem.x_star;
    let target_norm = target.norm();
    // Replicas run in fixed chunks, in parallel; each chunk accumulates its replicas in order
    // and the chunks are merged in order, so the statistics do not depend on the thread count.
    let chunks: Vec<std::ops::Range<u64>> = (0..cfg.replicas as u64)
        .step_by(CHUNK)
        .map(|a| a..(a + CHUNK as u64).min(cfg.replicas as u64))
        .collect();
    let field = field.as_ref();
    let per_chunk = chunks
        .into_par_iter()
        .map(|range| {
            let mut acc = vec![[Running::default(); QUANTITIES.len()]; recorded.len()];
            let runs = range
                .map(|r| (optimizer.replica_stepper(cfg.eta, r), x0.clone(), opts.clone()))
                .collect();
            let mut observe = |it: &Iterate<'_>| {
                let Ok(i) = recorded.binary_search(&it.step) else {
                    return;
                };
                let x = field.product(it.state);
                let distance = flow.and_then(|f| {
                    let k = f.steps.binary_search(&it.step).ok()?;
                    Some((&x - field.product(&f.states[k])).norm())
                });
                let values = [
                    Some(it.loss),
                    Some((&x - target).norm() / target_norm),
                    Some(recorder.balance_drift(it.state)),
                    distance,
                ];
                for (a, v) in acc[i].iter_mut().zip(values) {
                    if let Some(v) = v {
                        a.push(v);
                    }
                }
            };
            let ended = Driver::batch(field, runs)
                .run(&mut observe)
                .iter()
                .filter(|t| t.status != Status::Completed)
                .count();
            (acc, ended)
        })
        .collect::<Vec<_>>();
    let mut acc = vec![[Running::default(); QUANTITIES.len()]; recorded.len()];
    let mut ended_early = 0;
    for (chunk, ended) in &per_chunk {
        for (a, c) in acc.iter_mut().zip(chunk) {
            for (q, cq) in a.iter_mut().zip(c) {
                q.merge(cq);
            }
        }
        ended_early += ended;
    }
    let name = optimizer.name();
    let mut rows = Vec::new();
    for (&step, stats) in recorded.iter().zip(&acc) {
        for (q, a) in QUANTITIES.iter().zip(stats) {
            let stat = a.stat();
            if stat.n > 0 {
                rows.push(EnsembleRow {
                    dynamics: name.clone(),
                    step,
                    t: step as f64 * dt,
                    quantity: q.to_string(),
                    stat,
                });
            }
        }
    }
    let mut final_stats = BTreeMap::new();
    if let Some(last) = acc.last() {
        let method: BTreeMap<String, Stat> = QUANTITIES
            .iter()
            .zip(last)
            .filter(|(_, a)| a.stat().n > 0)
            .map(|(q, a)| (q.to_string(), a.stat()))
            .collect();
        final_stats.insert(name, method);
    }
    if let Some(r) = flow_last.filter(|r| r.step == cfg.steps) {
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
    Ok((
        rows,
        EnsembleSummary {
            replicas: cfg.replicas,
            final_stats,
            ended_early,
        },
    ))
}
