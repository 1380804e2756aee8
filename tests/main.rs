//! All integration tests in one crate: one link step.
mod suite;
