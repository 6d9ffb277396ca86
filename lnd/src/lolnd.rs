//! The loopback LND (`0@lo` and messages to our own NIDs): sends are parsed straight back and
//! the payload is copied within the node's memory.

use crate::lnd::Lnd;
use crate::lnet::{Lnet, LndRecv, LndSend, MsgId, Parsed};
use crate::mem::{iov_read, iov_write, Mem, Seg};
use std::collections::HashMap;
use std::sync::Arc;

pub struct LoLnd {
    mem: Arc<Mem>,
    /// Sends parsed but not yet received: private id -> (send msg, source iov).
    stash: HashMap<u64, (MsgId, Vec<Seg>)>,
    next: u64,
    buf: Vec<u8>,
}

impl LoLnd {
    pub fn new(mem: Arc<Mem>) -> LoLnd {
        LoLnd { mem, stash: HashMap::new(), next: 1, buf: Vec::new() }
    }
}

impl Lnd for LoLnd {
    fn name(&self) -> &'static str {
        "lo"
    }

    fn send(&mut self, lnet: &mut Lnet, m: LndSend) {
        let id = self.next;
        self.next += 1;
        self.stash.insert(id, (m.msg, m.iov));
        match lnet.parse(m.ni, m.hdr, m.hdr.src_nid, id, false) {
            Ok(Parsed::Recv(_)) => {}
            Ok(Parsed::Dropped(_)) => {
                self.stash.remove(&id);
                lnet.finalize(m.msg, 0);
            }
            Err(e) => {
                tracing::warn!("lo: {e}");
                self.stash.remove(&id);
                lnet.finalize(m.msg, crate::lnet::errno::EPROTO);
            }
        }
    }

    fn recv(&mut self, lnet: &mut Lnet, m: LndRecv) {
        let Some((send, src)) = self.stash.remove(&m.private) else { return };
        if let Some(msg) = m.msg {
            self.buf.clear();
            let status = match iov_read(&self.mem, &src, &mut self.buf) {
                Ok(()) => {
                    let n = (m.mlen as usize).min(self.buf.len());
                    match iov_write(&self.mem, &m.iov, &self.buf[..n]) {
                        Ok(_) => 0,
                        Err(_) => crate::lnet::errno::EIO,
                    }
                }
                Err(_) => crate::lnet::errno::EIO,
            };
            lnet.finalize(msg, status);
        }
        lnet.finalize(send, 0);
    }

    fn poll(&mut self, _lnet: &mut Lnet) -> bool {
        false
    }
}
