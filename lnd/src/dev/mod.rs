//! The emulated asymmetric DMA device: descriptors, completions and the node-side trait.
//! A receiver pulls from a transmit the owner set up; nobody can push. Two providers share one
//! engine: [`inproc`] (tests, simulation) and [`client`]/[`server`] (the `dmadev` process).

pub mod bell;
pub mod capture;
pub mod client;
mod device;
mod direct;
pub mod linkio;
pub mod engine;
mod fabric;
mod injector;
pub mod inproc;
pub mod link;
pub mod mailbox;
pub mod proto;
pub mod remote;
pub mod ring;
pub mod server;
pub mod spin;

pub use device::*;
