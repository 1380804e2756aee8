//! `--shard i/N`: one part of N of a sweep's step sizes or of an ensemble's blocks, given or
//! read from the array job a command runs in; `gdflow merge` combines the parts.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The array-job indices `--shard auto` reads, one scheduler's each.
const INDEX_KEYS: [&str; 5] = [
    "SLURM_ARRAY_TASK_ID",
    "SGE_TASK_ID",
    "PBS_ARRAY_INDEX",
    "PBS_ARRAYID",
    "JOB_COMPLETION_INDEX",
];

/// Written "i/N", as `--shard` takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl From<Shard> for String {
    fn from(s: Shard) -> String {
        format!("{}/{}", s.index, s.count)
    }
}

impl TryFrom<String> for Shard {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        Shard::parse(&s)
    }
}

impl Shard {
    /// "i/N" with 1 ≤ i ≤ N.
    pub fn parse(spec: &str) -> Result<Self> {
        let bad = || Error::invalid("shard", spec, "must be i/N with 1 <= i <= N, e.g. 2/4");
        let (i, n) = spec.split_once('/').ok_or_else(bad)?;
        let index: usize = i.trim().parse().map_err(|_| bad())?;
        let count: usize = n.trim().parse().map_err(|_| bad())?;
        if index == 0 || index > count {
            return Err(bad());
        }
        Ok(Self { index, count })
    }

    /// `--shard` as given: "i/N", or "auto" / "auto/N" to read the part from the array job
    /// the command runs in, through `env` (the process environment, or a test's):
    /// - SLURM: `SLURM_ARRAY_TASK_ID`, its `_MIN` and `_STEP`, and `SLURM_ARRAY_TASK_COUNT`;
    /// - SGE: `SGE_TASK_ID`, `SGE_TASK_FIRST`, `SGE_TASK_LAST`, `SGE_TASK_STEPSIZE`;
    /// - PBS (`PBS_ARRAY_INDEX`, or Torque's `PBS_ARRAYID`) and Kubernetes indexed jobs
    ///   (`JOB_COMPLETION_INDEX`), which give no count: "auto/N", and the part is the index
    ///   mod N, plus 1 — a one-to-one map for any N consecutive indices (0..N−1 or 1..N).
    ///
    /// A count given beside one the scheduler gives must agree with it. Returns the part and
    /// where it came from.
    pub fn resolve(spec: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<(Self, String)> {
        let Some(rest) = spec.trim().strip_prefix("auto") else {
            return Ok((Self::parse(spec)?, "given".into()));
        };
        let given: Option<usize> = match rest.strip_prefix('/') {
            None if rest.is_empty() => None,
            Some(n) => Some(n.trim().parse().ok().filter(|n| *n >= 1).ok_or_else(|| {
                Error::invalid(
                    "shard",
                    spec,
                    "must be auto or auto/N with N >= 1, e.g. auto/8",
                )
            })?),
            None => {
                return Err(Error::invalid(
                    "shard",
                    spec,
                    "must be i/N, auto or auto/N (e.g. 2/4, auto, auto/8)",
                ))
            }
        };
        let number = |key: &str| -> Result<Option<i64>> {
            match env(key) {
                None => Ok(None),
                Some(v) if v.trim() == "undefined" => Ok(None),
                Some(v) => v.trim().parse::<i64>().map(Some).map_err(|_| {
                    Error::invalid("shard", spec, format!("{key}={v} is not an integer"))
                }),
            }
        };
        let with_count =
            |index0: i64, count: Option<i64>, from: String| -> Result<(Self, String)> {
                let count = match (count, given) {
                    (Some(c), Some(g)) if c != g as i64 => {
                        return Err(Error::invalid(
                            "shard",
                            spec,
                            format!("{from} says the array has {c} tasks, and auto/{g} says {g}"),
                        ))
                    }
                    (Some(c), _) => c,
                    (None, Some(g)) => g as i64,
                    (None, None) => {
                        return Err(Error::invalid(
                            "shard",
                            spec,
                            format!("{from} gives no task count: write --shard auto/N"),
                        ))
                    }
                };
                if count < 1 || index0 < 0 || index0 >= count {
                    return Err(Error::invalid(
                        "shard",
                        spec,
                        format!("{from} is task {index0} (from 0) of {count}: outside the array"),
                    ));
                }
                Ok((
                    Self {
                        index: index0 as usize + 1,
                        count: count as usize,
                    },
                    from,
                ))
            };
        // one scheduler's index, never a guess between two
        let set: Vec<&str> = INDEX_KEYS
            .iter()
            .copied()
            .filter(|k| env(k).is_some_and(|v| v.trim() != "undefined"))
            .collect();
        if set.len() > 1 {
            return Err(Error::invalid(
                "shard",
                spec,
                format!(
                    "finds the indices of more than one scheduler ({}): give --shard i/N",
                    set.join(", ")
                ),
            ));
        }
        // the position of `id` in the array first, first + step, …
        let position = |key: &str, id: i64, first: i64, step: i64| -> Result<i64> {
            if step < 1 || id < first || (id - first) % step != 0 {
                return Err(Error::invalid(
                    "shard",
                    spec,
                    format!(
                        "{key}={id} is not a task of the array from {first} in steps of {step}"
                    ),
                ));
            }
            Ok((id - first) / step)
        };
        if let Some(id) = number("SLURM_ARRAY_TASK_ID")? {
            let min = number("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
            let step = number("SLURM_ARRAY_TASK_STEP")?.unwrap_or(1);
            let count = number("SLURM_ARRAY_TASK_COUNT")?;
            let at = position("SLURM_ARRAY_TASK_ID", id, min, step)?;
            return with_count(at, count, format!("SLURM_ARRAY_TASK_ID={id}"));
        }
        if let Some(id) = number("SGE_TASK_ID")? {
            let first = number("SGE_TASK_FIRST")?.unwrap_or(1);
            let step = number("SGE_TASK_STEPSIZE")?.unwrap_or(1);
            let at = position("SGE_TASK_ID", id, first, step)?;
            let count = number("SGE_TASK_LAST")?.map(|last| (last - first) / step + 1);
            return with_count(at, count, format!("SGE_TASK_ID={id}"));
        }
        for key in ["PBS_ARRAY_INDEX", "PBS_ARRAYID", "JOB_COMPLETION_INDEX"] {
            if let Some(id) = number(key)? {
                if id < 0 {
                    return Err(Error::invalid(
                        "shard",
                        spec,
                        format!("{key}={id} is not an array index (negative)"),
                    ));
                }
                let Some(n) = given else {
                    return Err(Error::invalid(
                        "shard",
                        spec,
                        format!("{key}={id} gives no task count: write --shard auto/N"),
                    ));
                };
                return with_count(id.rem_euclid(n as i64), None, format!("{key}={id}"));
            }
        }
        Err(Error::invalid(
            "shard",
            spec,
            "found no array-job index (SLURM_ARRAY_TASK_ID, SGE_TASK_ID, PBS_ARRAY_INDEX, \
             PBS_ARRAYID, JOB_COMPLETION_INDEX): run it as an array job, or give --shard i/N",
        ))
    }

    /// Whether the item at `position` (an η of the full list, or a block of an ensemble)
    /// belongs to this part.
    pub fn owns(&self, position: usize) -> bool {
        position % self.count == self.index - 1
    }
}
