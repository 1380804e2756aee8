//! What is measured along trajectories: recorded quantities ([`record`]), the quantities the
//! theorems are about ([`theory`]), and fits of them ([`fit`]).

pub mod fit;
pub mod lowrank;
pub mod record;
pub mod theory;

pub use record::{At, Quantity, Record, Recorder};
