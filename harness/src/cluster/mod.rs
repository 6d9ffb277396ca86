//! Clusters: YAML specs, the layout of nodes and addresses, backends that run them, and the
//! `run` flow (up, workloads, verify, down) with its report and artifacts.

pub mod backend;
pub mod compose;
#[cfg(feature = "cluster")]
pub mod docker;
pub mod faults;
pub mod plan;
pub mod process;
pub mod run;
pub mod sim;
pub mod spec;
