//! lnd: a user-space LNet — wire formats, the sans-IO LNet core, the emulated DMA device and the
//! DMA LND. See the workspace README for the architecture.

pub mod daemon;
pub mod dev;
pub mod dmalnd;
pub mod lnd;
pub mod lnet;
pub mod lolnd;
pub mod mem;
pub mod node;
pub mod ost;
pub mod ptlrpc;
pub mod selftest;
pub mod sim;
pub mod sock;
pub mod wire;
