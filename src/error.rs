//! One error type for the library; each variant carries what a user needs to fix the input.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    /// A configuration value outside its allowed range.
    #[error("invalid value for `{field}`: {value} ({allowed})")]
    InvalidConfig {
        field: String,
        value: String,
        allowed: String,
    },
    /// A problem file that cannot be used as it is.
    #[error("problem file {path}: {message}")]
    Npz { path: String, message: String },
    /// An implicit method whose dense matrices would not fit in memory.
    #[error(
        "method `{method}` needs dense {n}x{n} matrices (about {needed_mib} MiB) but only about \
         {available_mib} MiB are available; use `--method tsit45` or a smaller problem"
    )]
    TooLargeForImplicit {
        method: String,
        n: usize,
        needed_mib: u64,
        available_mib: u64,
    },
    #[error("I/O error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub fn invalid(field: &str, value: impl std::fmt::Display, allowed: impl Into<String>) -> Self {
        Error::InvalidConfig {
            field: field.to_string(),
            value: value.to_string(),
            allowed: allowed.into(),
        }
    }
    pub fn npz(path: &std::path::Path, message: impl Into<String>) -> Self {
        Error::Npz {
            path: path.display().to_string(),
            message: message.into(),
        }
    }
    pub fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
