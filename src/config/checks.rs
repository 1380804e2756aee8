//! The checks a single key's value must pass, named on the key's field (`keys!`'s `check`): a
//! range, a sign, what double precision can hold. Checks that relate several keys stay in
//! [`super::Config::validate`].

use crate::error::{Error, Result};

/// A key's value whether the resolved form holds it plainly or as an `Option` (a key with no
/// default): `None` skips the check.
pub trait Given<T> {
    fn given(&self) -> Option<&T>;
}

impl<T> Given<T> for T {
    fn given(&self) -> Option<&T> {
        Some(self)
    }
}

impl<T> Given<T> for Option<T> {
    fn given(&self) -> Option<&T> {
        self.as_ref()
    }
}

pub fn positive_finite(key: &str, v: &f64) -> Result<()> {
    if v.is_finite() && *v > 0.0 {
        Ok(())
    } else {
        Err(Error::invalid(key, v, "must be a finite number > 0"))
    }
}

pub fn non_negative(key: &str, v: &f64) -> Result<()> {
    if v.is_finite() && *v >= 0.0 {
        Ok(())
    } else {
        Err(Error::invalid(key, v, "must be a finite number >= 0"))
    }
}

pub fn at_least_one(key: &str, v: &usize) -> Result<()> {
    if *v == 0 {
        return Err(Error::invalid(key, v, "must be an integer >= 1"));
    }
    Ok(())
}

/// config.toml records integers as TOML integers (signed 64-bit).
pub fn toml_integer(key: &str, v: &u64) -> Result<()> {
    if *v > i64::MAX as u64 {
        return Err(Error::invalid(
            key,
            v,
            "must be < 2^63: config.toml records it as a TOML integer (signed 64-bit)",
        ));
    }
    Ok(())
}

/// A count (0 allowed) that config.toml can record.
pub fn toml_count(key: &str, v: &usize) -> Result<()> {
    toml_integer(key, &(*v as u64))
}

/// A count of at least one that config.toml can record.
pub fn count(key: &str, v: &usize) -> Result<()> {
    at_least_one(key, v)?;
    toml_count(key, v)
}

/// Below 1e-100 a scale leaves double precision: `why` says how.
pub fn representable(key: &str, v: &f64, why: &str) -> Result<()> {
    positive_finite(key, v)?;
    const MIN: f64 = 1e-100;
    if *v < MIN {
        return Err(Error::invalid(key, v, format!("must be >= {MIN:e}: {why}")));
    }
    Ok(())
}

pub fn in_unit_interval(key: &str, v: &f64) -> Result<()> {
    if !(*v > 0.0 && *v < 1.0) {
        return Err(Error::invalid(key, v, "must lie in (0, 1)"));
    }
    Ok(())
}

/// Explicit singular values: each finite and > 0, at most 1e100, the largest over the smallest
/// at most [`super::MAX_KAPPA`] (beyond, the smallest is lost in the rounding of the largest).
pub fn spectrum(key: &str, sv: &Vec<f64>) -> Result<()> {
    let (lo, hi) = sv.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), &v| {
        (lo.min(v), hi.max(v))
    });
    let max_kappa = super::MAX_KAPPA;
    if hi > 1e100 || (lo > 0.0 && hi / lo > max_kappa) {
        return Err(Error::invalid(
            key,
            format!("{sv:?}"),
            format!(
                "must be at most 1e100 with a ratio largest/smallest at most {max_kappa:e}: \
                 beyond, the smallest is lost in the rounding of the largest"
            ),
        ));
    }
    if let Some(bad) = sv.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
        return Err(Error::invalid(
            key,
            bad,
            "every value must be finite and > 0",
        ));
    }
    Ok(())
}
