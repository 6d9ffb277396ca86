//! OST storage, the OSS service and the client I/O engine.

pub mod osc;
pub mod oss;
pub mod store;
