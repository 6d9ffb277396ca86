//! lnetlab: the user-facing harness over the `lnd` crate — cluster specs and backends, runs with
//! reports and artifacts, and benchmarks. ARCHITECTURE.md at the root has the code map.

pub mod bench;
pub mod cluster;
pub mod ctl;
pub mod golden;
pub mod hunt;
pub mod interrupt;
pub mod junit;
pub mod procs;
pub mod progress;
pub mod runner;
pub mod runs;
pub mod state;
pub mod timeline;
pub mod up;
