//! The receive side of the core: `lnet_parse` (matching incoming PUT/GET/ACK/REPLY against
//! portals and MDs, lazy portals, forwarding) and the REPLY of an RDMA GET.

use super::md::{try_match, MdMatch};
use super::*;

impl Lnet {

    /// `lnet_parse`: an LND received `hdr` on `ni` from `from`. `private` is the LND's rx
    /// context, returned in the [`LndRecv`]. `rdma_req` marks an RDMA-optimized GET: the LND
    /// will then be given the matched source buffers and send the reply data itself.
    pub fn parse(&mut self, ni: NiIdx, hdr: HdrRepr, from: Nid, private: u64, rdma_req: bool) -> Result<Parsed, ParseError> {
        let ni_nid = self.nis.get(ni).ok_or(ParseError::BadNi(ni))?.cfg.nid;
        if hdr.dest_nid != ni_nid && !(ni == LO_NI && self.is_local(hdr.dest_nid)) {
            if self.is_local(hdr.dest_nid) {
                return Err(ParseError::WrongNi { dest: hdr.dest_nid, ni: ni_nid });
            }
            if hdr.dest_nid.net() == ni_nid.net() {
                return Err(ParseError::ShouldBeDirect { dest: hdr.dest_nid, ni: ni_nid });
            }
            if rdma_req {
                return Err(ParseError::RoutedRdmaGet(hdr.dest_nid));
            }
            if self.router.is_none() {
                return Ok(self.drop_msg(&hdr, from, errno::EHOSTUNREACH, "not for us and routing is disabled"));
            }
            self.gw_down.remove(&from);
            return Ok(self.forward(ni, hdr, from, private));
        }
        self.gw_down.remove(&from);
        if !self.fault_rules.is_empty() {
            match self.fault_verdict(&hdr) {
                Some(fault::Verdict::Drop) => return Ok(self.drop_msg(&hdr, from, errno::EIO, "fault rule")),
                Some(fault::Verdict::Delay(ms)) => {
                    // Held in release order; the LND keeps its rx until the message is delivered.
                    let due = self.now_ms + ms;
                    let at = self.held.iter().position(|h| h.0 > due).unwrap_or(self.held.len());
                    self.held.insert(at, (due, ni, hdr, from, private, rdma_req));
                    return Ok(Parsed::Recv(None));
                }
                None => {}
            }
        }
        self.deliver(ni, hdr, from, private, rdma_req)
    }

    /// The local half of `lnet_parse`: match a message meant for this node.
    pub(super) fn deliver(&mut self, ni: NiIdx, hdr: HdrRepr, from: Nid, private: u64, rdma_req: bool) -> Result<Parsed, ParseError> {
        self.health_received(ni, from);
        // A Multi-Rail peer is known by its primary NID, whichever of its NIs sent this
        // (`msg_initiator`): MEs match it and events report it.
        let src_nid = if self.mr.is_empty() || crate::mutant::active("lnet_initiator_not_primary") { hdr.src_nid } else { self.mr.primary_of(hdr.src_nid) };
        let src = ProcessId::new(src_nid, hdr.src_pid);
        let rlen = hdr.payload_length as u64;
        match hdr.body {
            HdrBody::Put { ack_wmd, match_bits, hdr_data, ptl_index, offset } => {
                let (md, offset, mlen) = match self.match_portal(ptl_index, src, match_bits, opt::OP_PUT, rlen, offset as u64) {
                    Ok(m) => m,
                    Err(errno::ENODATA) if self.lazy.contains(&ptl_index) => {
                        // A lazy portal holds the PUT (its LND keeps the rx) until a buffer is posted.
                        self.counters.credit_stalls += 1;
                        self.delayed.entry(ptl_index).or_default().push_back((ni, hdr, from, private));
                        return Ok(Parsed::Recv(None));
                    }
                    Err(st) => return Ok(self.drop_msg(&hdr, from, st, "PUT matched nothing")),
                };
                let ev = self.event(EventKind::Put, md, src, ptl_index, match_bits, rlen, mlen, offset, hdr_data);
                let wants_ack = !ack_wmd.is_none() && self.mds.get(md.0).unwrap().spec.options & opt::ACK_DISABLE == 0;
                let ack = wants_ack.then(|| self.answer_hdr(&hdr, 0, HdrBody::Ack { dst_wmd: ack_wmd, match_bits, mlength: mlen as u32 }));
                let iov = self.iov_of(md, offset, mlen);
                self.attach_md(md);
                let id = self.new_recv(Some(md), Some(ev), ack, mlen);
                self.actions.push_back(Action::Recv(LndRecv { msg: Some(id), ni, private, rdma_req: false, iov, mlen, rlen }));
                Ok(Parsed::Recv(Some(id)))
            }
            HdrBody::Get { return_wmd, match_bits, ptl_index, src_offset, sink_length } => {
                let want = sink_length as u64;
                let (md, offset, mlen) = match self.match_portal(ptl_index, src, match_bits, opt::OP_GET, want, src_offset as u64) {
                    Ok(m) => m,
                    Err(st) => return Ok(self.drop_msg(&hdr, from, st, "GET matched nothing")),
                };
                let ev = self.event(EventKind::Get, md, src, ptl_index, match_bits, want, mlen, offset, 0);
                let iov = self.iov_of(md, offset, mlen);
                self.attach_md(md);
                let reply = self.answer_hdr(&hdr, mlen as u32, HdrBody::Reply { dst_wmd: return_wmd });
                self.counters.recv_count += 1;
                if rdma_req {
                    // The LND moves the data from the source buffers; the REPLY never goes
                    // through lnet_send.
                    let id = MsgId(self.msgs.insert(Msg { dir: Dir::Send, md: Some(md), ev: Some(ev), ack: None, credit: None, pending: None, fwd: None, resend: None, retry: None }));
                    self.counters.send_count += 1;
                    self.counters.send_length += mlen;
                    self.actions.push_back(Action::Recv(LndRecv { msg: Some(id), ni, private, rdma_req: true, iov, mlen, rlen: want }));
                    Ok(Parsed::Recv(Some(id)))
                } else {
                    self.actions.push_back(Action::Recv(LndRecv { msg: None, ni, private, rdma_req: false, iov: Vec::new(), mlen: 0, rlen: 0 }));
                    let (out_ni, hop) = match self.route(hdr.src_nid) {
                        Ok(r) => r,
                        Err(_) => (ni, from),
                    };
                    self.launch(Some(md), Some(ev), out_ni, hop, src, reply, iov, None);
                    Ok(Parsed::Recv(None))
                }
            }
            HdrBody::Ack { dst_wmd, match_bits, mlength } => {
                let Some(md) = self.md_by_wire(dst_wmd).filter(|h| self.live_md(*h).is_ok()) else {
                    return Ok(self.drop_msg(&hdr, from, errno::ENODATA, "ACK for a gone MD"));
                };
                self.untrack_response(md);
                let ev = self.event(EventKind::Ack, md, src, 0, match_bits, mlength as u64, mlength as u64, 0, 0);
                self.attach_md(md);
                let id = self.new_recv(Some(md), Some(ev), None, 0);
                self.actions.push_back(Action::Recv(LndRecv { msg: Some(id), ni, private, rdma_req: false, iov: Vec::new(), mlen: 0, rlen: 0 }));
                Ok(Parsed::Recv(Some(id)))
            }
            HdrBody::Reply { dst_wmd } => {
                let Some(md) = self.md_by_wire(dst_wmd).filter(|h| self.live_md(*h).is_ok()) else {
                    return Ok(self.drop_msg(&hdr, from, errno::ENODATA, "REPLY for a gone MD"));
                };
                let (iov, mlen) = match self.reply_sink(md, rlen) {
                    Ok(x) => x,
                    Err(st) => return Ok(self.drop_msg(&hdr, from, st, "REPLY too long for MD")),
                };
                self.untrack_response(md);
                let ev = self.event(EventKind::Reply, md, src, 0, 0, rlen, mlen, 0, 0);
                self.attach_md(md);
                let id = self.new_recv(Some(md), Some(ev), None, mlen);
                self.actions.push_back(Action::Recv(LndRecv { msg: Some(id), ni, private, rdma_req: false, iov, mlen, rlen }));
                Ok(Parsed::Recv(Some(id)))
            }
        }
    }

    /// Delivers a message LNet held back (lazy portal, delay rule). One nothing takes now is
    /// handed back to its LND, which still holds the rx: it lets go of it and NAKs an RDMA
    /// sender (`lnet_drop_delayed_msg_list`).
    pub(super) fn deliver_held(&mut self, ni: NiIdx, hdr: HdrRepr, from: Nid, private: u64, rdma_req: bool) {
        let rlen = hdr.payload_length as u64;
        match self.deliver(ni, hdr, from, private, rdma_req) {
            Ok(Parsed::Recv(_)) => return,
            Ok(Parsed::Dropped(_)) => {}
            Err(e) => warn!("held message refused on delivery: {e}"),
        }
        self.actions.push_back(Action::Recv(LndRecv { msg: None, ni, private, rdma_req, iov: Vec::new(), mlen: 0, rlen }));
    }

    fn reply_sink(&mut self, md: MdHandle, rlen: u64) -> Result<(Vec<Seg>, u64), i32> {
        let m = self.mds.get(md.0).ok_or(errno::ENODATA)?;
        if rlen > m.length && m.spec.options & opt::TRUNCATE == 0 {
            return Err(errno::EMSGSIZE);
        }
        let mlen = rlen.min(m.length);
        Ok((self.iov_of(md, 0, mlen), mlen))
    }

    pub(super) fn new_recv(&mut self, md: Option<MdHandle>, ev: Option<Event>, ack: Option<HdrRepr>, len: u64) -> MsgId {
        self.counters.recv_count += 1;
        self.counters.recv_length += len;
        MsgId(self.msgs.insert(Msg { dir: Dir::Recv, md, ev, ack, credit: None, pending: None, fwd: None, resend: None, retry: None }))
    }

    pub(super) fn drop_msg(&mut self, hdr: &HdrRepr, from: Nid, status: i32, why: &str) -> Parsed {
        self.counters.drop_count += 1;
        self.counters.drop_length += hdr.payload_length as u64;
        debug!(from = %from, src = %hdr.src_nid, kind = ?hdr.msg_type(), why, "dropping message");
        Parsed::Dropped(status)
    }

    /// Walks `portal`'s MEs in order; first ME whose MD accepts wins (`lnet_ptl_match_md`).
    fn match_portal(&mut self, portal: u32, src: ProcessId, bits: u64, op: u32, rlen: u64, roff: u64) -> Result<(MdHandle, u64, u64), i32> {
        let Some(list) = self.portals.get(&portal) else { return Err(errno::ENODATA) };
        for &meh in list {
            let Some(me) = self.mes.get(meh.0) else { continue };
            if !me.selects(src, bits) {
                continue;
            }
            let Some(mdh) = me.md else { continue };
            let Some(md) = self.mds.get(mdh.0) else { continue };
            match try_match(md, op, rlen, roff) {
                MdMatch::None => continue,
                MdMatch::Drop => return Err(errno::EMSGSIZE),
                MdMatch::Ok { offset, mlength } => {
                    // With MANAGE_REMOTE too (what MAX_SIZE exhaustion goes by).
                    self.mds.get_mut(mdh.0).unwrap().offset = offset + mlength;
                    return Ok((mdh, offset, mlength));
                }
            }
        }
        Err(errno::ENODATA)
    }

    /// For an RDMA GET initiator: the REPLY is arriving as `len` bytes of data straight into the
    /// GET's MD. Creates the REPLY message (`lnet_create_reply_msg`); returns it, the sink
    /// buffers and how many bytes to take.
    pub fn create_reply_msg(&mut self, get: MsgId, len: u64) -> Result<(MsgId, Vec<Seg>, u64), i32> {
        let msg = self.msgs.get(get.0).ok_or(errno::EINVAL)?;
        let md = msg.md.ok_or(errno::EINVAL)?;
        let peer = msg.ev.as_ref().map(|e| e.peer).unwrap_or(ProcessId::ANY);
        self.live_md(md).map_err(|_| errno::ENODATA)?;
        let (iov, mlen) = self.reply_sink(md, len)?;
        self.untrack_response(md);
        let ev = self.event(EventKind::Reply, md, peer, 0, 0, len, mlen, 0, 0);
        self.attach_md(md);
        Ok((self.new_recv(Some(md), Some(ev), None, mlen), iov, mlen))
    }
}
