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
    /// A result that could not be serialised: a fault of the program, not of the input.
    #[error("cannot write {what}: {message}")]
    Serialise { what: String, message: String },
}

impl Error {
    pub fn invalid(field: &str, value: impl std::fmt::Display, allowed: impl Into<String>) -> Self {
        let mut value = value.to_string();
        // a number printed as hundreds of digits (1e-320, 1e308) is shown as the user wrote it
        if value.len() > 24 {
            if let Ok(v) = value.parse::<f64>() {
                value = format!("{v:e}");
            }
        }
        Error::InvalidConfig {
            field: field.to_string(),
            value,
            allowed: allowed.into(),
        }
    }
    pub fn npz(path: &std::path::Path, message: impl Into<String>) -> Self {
        Error::Npz {
            path: path.display().to_string(),
            message: message.into(),
        }
    }
    pub fn serialise(what: &str, message: impl Into<String>) -> Self {
        Error::Serialise {
            what: what.to_string(),
            message: message.into(),
        }
    }

    /// The process exit status this error calls for: 2 for anything the user can fix (flags,
    /// configuration and problem files, output paths, sizes that cannot fit), 1 for a failure
    /// at run time (I/O, serialisation).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::InvalidConfig { .. } | Error::Npz { .. } | Error::TooLargeForImplicit { .. } => {
                2
            }
            Error::Io { .. } | Error::Serialise { .. } => 1,
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
