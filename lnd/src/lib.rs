//! lnd: a user-space LNet — wire formats, the sans-IO LNet core, the emulated DMA device and the
//! DMA LND. See the workspace README for the architecture.

pub mod dev;
pub mod mem;
pub mod wire;
