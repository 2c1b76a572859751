//! Whole-system tests that start veil's real binaries, and `veil-load`, the load harness
//! (see [`load`]).

pub mod hop;
pub mod load;
