//! `lnetlab bench`: our figures next to their physical baselines, measured in the same run.

#[cfg(feature = "cluster")]
pub mod cluster;
pub mod cli;
pub mod compare;
pub mod dma;
pub mod io;
pub mod metric;
pub mod plot;
pub mod remote;
pub mod scale;
pub mod sim;
pub mod sock;
