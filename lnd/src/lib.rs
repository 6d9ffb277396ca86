//! lnd: a user-space LNet — wire formats, the sans-IO LNet core, the emulated DMA device and the
//! DMA LND. See the workspace README for the architecture.

pub mod daemon;
pub mod dev;
pub mod dmalnd;
pub mod lnd;
pub mod lnet;
pub mod lolnd;
pub mod mem;
pub mod mutant;
pub mod node;
pub mod ost;
pub mod ptlrpc;
pub mod rng;
pub mod selftest;
pub mod sim;
pub mod sock;
pub mod wire;

/// A source of "now": the wall clock, or virtual time under simulation.
pub type Clock = std::sync::Arc<dyn Fn() -> std::time::Instant + Send + Sync>;

/// The wall clock.
pub fn wall_clock() -> Clock {
    std::sync::Arc::new(std::time::Instant::now)
}
