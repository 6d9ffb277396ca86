//! ptlrpc as Lustre lays it out: requests and replies are LNet PUTs of `lustre_msg_v2`, bulk data
//! moves by GET (writes) or PUT (reads) on the bulk portal.

pub mod wire;
