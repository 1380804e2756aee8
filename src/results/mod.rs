//! What the experiments produce, as serde types, with each output file's writer and reader
//! side by side: [`run`] (`gdflow run`), [`sweep`] (`gdflow sweep`, `gdflow merge`),
//! [`check`] (`gdflow check`). The figures read results through these readers.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub mod check;
pub mod ensemble;
pub mod run;
pub mod shard;
pub mod sweep;
pub mod table;

/// Where a result comes from: crate, version, seed and the resolved configuration. Every
/// summary starts with it (its keys sit at the top level of `summary.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance<C> {
    pub crate_name: String,
    pub crate_version: String,
    pub seed: u64,
    /// The resolved configuration.
    pub config: C,
    /// The configuration keys whose values came from a problem file (`--problem`), not from
    /// flags, a configuration file or defaults.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_file: Vec<String>,
}

impl<C> Provenance<C> {
    pub fn new(seed: u64, config: C, from_file: Vec<String>) -> Self {
        Self {
            crate_name: env!("CARGO_PKG_NAME").to_string(),
            crate_version: env!("CARGO_PKG_VERSION").to_string(),
            seed,
            config,
            from_file,
        }
    }
}

/// Pretty JSON of a result (`what` names the file in the error).
pub fn json_bytes<T: Serialize + ?Sized>(what: &str, value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec_pretty(value).map_err(|e| Error::serialise(what, e.to_string()))
}

/// TOML of a table.
pub fn toml_text(what: &str, table: &toml::Table) -> Result<String> {
    toml::to_string(table).map_err(|e| Error::serialise(what, e.to_string()))
}

/// The bytes a CSV writer holds.
/// JSON has no NaN: serde_json writes it as `null`. A number that may be NaN (an interval
/// with two points, no residual) reads `null` back as NaN.
pub(crate) fn nan_if_null<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<f64, D::Error> {
    Ok(<Option<f64> as serde::Deserialize>::deserialize(d)?.unwrap_or(f64::NAN))
}

pub(crate) fn csv_bytes(what: &str, w: csv::Writer<Vec<u8>>) -> Result<Vec<u8>> {
    w.into_inner()
        .map_err(|e| Error::serialise(what, e.to_string()))
}

/// A CSV writing error, for `what`.
pub(crate) fn csv_error(what: &str) -> impl Fn(csv::Error) -> Error + '_ {
    move |e| Error::serialise(what, e.to_string())
}

/// Read a result file; a missing or unreadable one names the results directory option.
pub(crate) fn read(path: &std::path::Path) -> Result<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| Error::invalid("results", path.display(), format!("cannot be read: {e}")))
}

/// A result file that is not what gdflow writes.
pub(crate) fn not_ours(path: &std::path::Path, e: impl std::fmt::Display) -> Error {
    Error::invalid(
        "results",
        path.display(),
        format!("is not a gdflow output: {e}"),
    )
}

/// What kind of gdflow output a `summary.json` is, from its keys.
pub fn summary_kind(bytes: &[u8]) -> Option<&'static str> {
    let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let has = |k: &str| v.get(k).is_some();
    if has("sweep") && has("points") {
        Some("sweep")
    } else if has("rows") && has("check") {
        Some("check")
    } else if has("gd") && has("flow") {
        Some("run")
    } else {
        None
    }
}

/// A summary.json that parses, but as the wrong kind of output: say which it is.
pub(crate) fn wrong_kind(
    path: &std::path::Path,
    bytes: &[u8],
    want: &str,
    e: impl std::fmt::Display,
) -> Error {
    match summary_kind(bytes) {
        Some(kind) if kind != want => Error::invalid(
            "results",
            path.display(),
            format!("is the output of `gdflow {kind}`, not of `gdflow {want}`"),
        ),
        _ => not_ours(path, e),
    }
}
