//! lnetlab: the user-facing harness over the `lnd` crate — benchmarks now; clusters, workloads,
//! golden traces and backends as their issues land.

pub mod bench;
pub mod procs;
pub mod runner;
