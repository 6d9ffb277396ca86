//! Bug hunting: generated specs and many seeds, run in parallel, failures kept with their REPRO.

pub mod child;
pub mod generate;
pub mod seeds;
pub mod shrink;
