//! Wire formats shared by every LND: NIDs and the LNet header (smoltcp style: view + Repr).

pub mod hdr;
pub mod order;
pub mod nid;
pub mod pcap;

pub use hdr::{HdrBody, HdrError, HdrRepr, Header, MsgType, WireHandle, HDR_LEN, LNET_MTU};
pub use nid::{LndType, Net, Nid, NidParseError, ProcessId};
