//! Small helpers shared by the pipeline stages.

pub mod atomic;
pub mod hash;
