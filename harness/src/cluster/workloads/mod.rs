//! What runs on a cluster once it is up: io workloads and selftests.

pub mod io;
pub mod orphans;
pub mod selftest;
pub mod waiting;
