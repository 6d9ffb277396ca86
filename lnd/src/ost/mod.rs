//! OST storage (its write-back cache in `journal`), the OSS service and the client I/O engine.

pub mod clients;
pub mod journal;
pub mod osc;
pub mod oss;
pub mod store;
