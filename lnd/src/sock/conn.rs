//! One socklnd TCP connection as a sans-IO byte parser: acceptor preamble (passive side), HELLO,
//! then `ksock_msg` frames. It only splits and checks bytes; what they mean is the LND's call.

use super::wire::{ksock_crc, ConnReq, ACCEPTOR_MAGIC, ACCEPTOR_VERSION, PROTO_MAGIC, Hello, HelloStart, KsockHdr, Order, CONNREQ_LEN, HELLO_LEN, KSOCK_HDR_LEN, KSOCK_MSG_NOOP};
use crate::wire::{HdrRepr, Nid, HDR_LEN};

/// What the bytes said.
#[derive(Debug)]
pub enum ConnEvent {
    /// Passive side: the acceptor preamble naming the NID the peer wants.
    ConnReq(Nid),
    /// Passive side: the peer opened with the LNet magic or an acceptor version we do not
    /// speak; Lustre answers with its own magic and version, then hangs up.
    AcceptorQuery,
    /// The peer's HELLO (the request on the passive side, the reply on the active side).
    Hello(Hello),
    /// The peer's HELLO has a version we do not speak; it told us which.
    UnknownVersion(u32),
    /// A NOOP: keepalive or zero-copy ACK cookies.
    Noop(KsockHdr),
    /// A whole LNet frame: `frame[KSOCK_HDR_LEN + HDR_LEN..]` is the payload.
    Lnet { ksock: KsockHdr, hdr: HdrRepr, frame: Vec<u8> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    ConnReq,
    HelloStart,
    HelloFixed { order: Order },
    HelloIps { order: Order, n: u32 },
    Frames,
    Dead,
}

/// Frame payload offset.
pub const PAYLOAD_AT: usize = KSOCK_HDR_LEN + HDR_LEN;

pub struct ConnParser {
    phase: Phase,
    /// Unparsed bytes are `buf[pos..]`: taking a message advances `pos` (no shifting per
    /// message); the consumed front is dropped once per input.
    buf: Vec<u8>,
    pos: usize,
    order: Order,
    version: u32,
    pending_hello: Option<Hello>,
    /// Total length of the frame being assembled, once its headers are in.
    frame_len: Option<usize>,
    /// Bytes moved inside the buffer (kept linear in the input; checked by a test).
    moved: usize,
}

impl ConnParser {
    /// `passive`: expect the acceptor preamble first.
    pub fn new(passive: bool) -> ConnParser {
        ConnParser {
            phase: if passive { Phase::ConnReq } else { Phase::HelloStart },
            buf: Vec::new(),
            pos: 0,
            order: Order { swapped: false },
            version: 3,
            pending_hello: None,
            frame_len: None,
            moved: 0,
        }
    }

    /// Part of a message is in and the rest is awaited.
    pub fn mid_message(&self) -> bool {
        self.pos < self.buf.len()
    }

    /// The protocol version the peer's HELLO announced.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Feeds bytes; events go to `out`. An error means the connection must close.
    pub fn input(&mut self, data: &[u8], out: &mut Vec<ConnEvent>) -> Result<(), String> {
        self.compact()?;
        self.buf.extend_from_slice(data);
        self.parse_or_die(out)
    }

    /// Feeds an owned buffer of bytes: when nothing is left over from earlier input, the parser
    /// takes the buffer as it is (a frame read whole is then handed on without a copy). Returns
    /// a spent buffer for the caller to read into again.
    pub fn input_owned(&mut self, data: Vec<u8>, out: &mut Vec<ConnEvent>) -> Result<Vec<u8>, String> {
        self.compact()?;
        if !self.buf.is_empty() || data.capacity() < self.buf.capacity() {
            self.buf.extend_from_slice(&data);
            return self.parse_or_die(out).map(|()| data);
        }
        let spent = std::mem::replace(&mut self.buf, data);
        self.parse_or_die(out).map(|()| spent)
    }

    /// Drops the parsed front of the buffer, before more input.
    fn compact(&mut self) -> Result<(), String> {
        if self.phase == Phase::Dead {
            return Err("connection already failed".into());
        }
        if self.pos > 0 {
            self.moved += self.buf.len() - self.pos;
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        Ok(())
    }

    fn parse_or_die(&mut self, out: &mut Vec<ConnEvent>) -> Result<(), String> {
        let r = self.parse(out);
        if r.is_err() {
            self.phase = Phase::Dead;
            self.buf = Vec::new();
            self.pos = 0;
        }
        r
    }

    /// Unparsed bytes.
    fn avail(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// The next `n` unparsed bytes, owned. A message filling most of the buffer (a large frame)
    /// keeps the buffer and the few bytes after it move instead: linear either way.
    fn take(&mut self, n: usize) -> Vec<u8> {
        if self.pos == 0 && n >= self.buf.len() - n {
            let rest = self.buf.split_off(n);
            self.moved += rest.len();
            return std::mem::replace(&mut self.buf, rest);
        }
        let v = self.buf[self.pos..self.pos + n].to_vec();
        self.pos += n;
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        v
    }

    fn parse(&mut self, out: &mut Vec<ConnEvent>) -> Result<(), String> {
        loop {
            match self.phase {
                Phase::Dead => return Ok(()),
                Phase::ConnReq => {
                    if self.avail().len() < 4 {
                        return Ok(());
                    }
                    let query = match Order::detect(self.avail(), ACCEPTOR_MAGIC) {
                        None => Order::detect(self.avail(), PROTO_MAGIC).is_some(),
                        Some(_) if self.avail().len() < 8 => return Ok(()),
                        Some(o) => o.u32(self.avail(), 4) != ACCEPTOR_VERSION,
                    };
                    if query {
                        out.push(ConnEvent::AcceptorQuery);
                        self.phase = Phase::Dead;
                        return Ok(());
                    }
                    if self.avail().len() < CONNREQ_LEN {
                        return Ok(());
                    }
                    let b = self.take(CONNREQ_LEN);
                    let c = ConnReq::parse(b[..].try_into().unwrap()).map_err(|e| format!("acceptor preamble: {e}"))?;
                    out.push(ConnEvent::ConnReq(c.nid));
                    self.phase = Phase::HelloStart;
                }
                Phase::HelloStart => {
                    if self.avail().len() < 8 {
                        return Ok(());
                    }
                    match Hello::start(self.avail()[..8].try_into().unwrap()).map_err(|e| format!("HELLO: {e}"))? {
                        HelloStart::V2V3 { version, order } => {
                            self.version = version;
                            self.order = order;
                            self.phase = Phase::HelloFixed { order };
                        }
                        HelloStart::V1 => {
                            out.push(ConnEvent::UnknownVersion(1));
                            self.phase = Phase::Dead;
                            return Ok(());
                        }
                        HelloStart::Unknown(v) => {
                            out.push(ConnEvent::UnknownVersion(v));
                            self.phase = Phase::Dead;
                            return Ok(());
                        }
                    }
                }
                Phase::HelloFixed { order } => {
                    if self.avail().len() < HELLO_LEN {
                        return Ok(());
                    }
                    let b = self.take(HELLO_LEN);
                    let (h, n) = Hello::parse_fixed(b[..].try_into().unwrap(), order).map_err(|e| format!("HELLO: {e}"))?;
                    self.pending_hello = Some(h);
                    self.phase = Phase::HelloIps { order, n };
                }
                Phase::HelloIps { order, n } => {
                    let need = 4 * n as usize;
                    if self.avail().len() < need {
                        return Ok(());
                    }
                    let b = self.take(need);
                    let mut h = self.pending_hello.take().expect("fixed part parsed");
                    h.ips = b.chunks(4).map(|c| order.u32(c, 0)).collect();
                    out.push(ConnEvent::Hello(h));
                    self.phase = Phase::Frames;
                }
                Phase::Frames => {
                    if self.avail().len() < KSOCK_HDR_LEN {
                        return Ok(());
                    }
                    let k = KsockHdr::parse(self.avail(), self.order).map_err(|e| format!("frame: {e}"))?;
                    if k.ty == KSOCK_MSG_NOOP {
                        self.take(KSOCK_HDR_LEN);
                        out.push(ConnEvent::Noop(k));
                        continue;
                    }
                    let len = match self.frame_len {
                        Some(l) => l,
                        None => {
                            if self.avail().len() < PAYLOAD_AT {
                                return Ok(());
                            }
                            let hdr = HdrRepr::parse_bytes(&self.avail()[KSOCK_HDR_LEN..PAYLOAD_AT]).map_err(|e| format!("frame: {e}"))?;
                            let l = PAYLOAD_AT + hdr.payload_length as usize;
                            self.frame_len = Some(l);
                            self.buf.reserve(l.saturating_sub(self.avail().len()));
                            l
                        }
                    };
                    if self.avail().len() < len {
                        return Ok(());
                    }
                    self.frame_len = None;
                    let mut frame = self.take(len);
                    let hdr = HdrRepr::parse_bytes(&frame[KSOCK_HDR_LEN..PAYLOAD_AT]).map_err(|e| format!("frame: {e}"))?;
                    if k.csum != 0 && self.version == 2 {
                        frame[4..8].fill(0);
                        let c = ksock_crc(&[&frame]);
                        frame[4..8].copy_from_slice(&k.csum.to_le_bytes());
                        if c != k.csum {
                            return Err(format!("frame checksum {:#x} != computed {c:#x}", k.csum));
                        }
                    }
                    out.push(ConnEvent::Lnet { ksock: k, hdr, frame });
                }
            }
        }
    }
}

/// The bytes of one LNET frame header (ksock header + LNet header); the payload follows.
pub fn lnet_frame_header(hdr: &HdrRepr, zc_ack: u64) -> [u8; PAYLOAD_AT] {
    let mut b = [0u8; PAYLOAD_AT];
    let k = KsockHdr { ty: super::wire::KSOCK_MSG_LNET, csum: 0, zc_req: 0, zc_ack };
    b[..KSOCK_HDR_LEN].copy_from_slice(&k.emit());
    b[KSOCK_HDR_LEN..].copy_from_slice(&hdr.to_bytes());
    b
}

/// A NOOP carrying `zc_ack` (1 = keepalive, or a zero-copy cookie being returned).
pub fn noop(zc_ack: u64) -> [u8; KSOCK_HDR_LEN] {
    KsockHdr { ty: KSOCK_MSG_NOOP, csum: 0, zc_req: 0, zc_ack }.emit()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sock::wire::{ctype, ACCEPTOR_VERSION};
    use crate::wire::{HdrBody, WireHandle};

    fn hello() -> Hello {
        Hello {
            version: 3,
            src_nid: "127.0.0.2@tcp".parse().unwrap(),
            dst_nid: "127.0.0.1@tcp".parse().unwrap(),
            src_pid: 12345,
            dst_pid: 0,
            src_incarnation: 5,
            dst_incarnation: 0,
            ctype: ctype::BULK_OUT,
            ips: vec![0x7f000001],
        }
    }

    fn put(len: u32) -> HdrRepr {
        HdrRepr {
            dest_nid: "127.0.0.1@tcp".parse().unwrap(),
            src_nid: "127.0.0.2@tcp".parse().unwrap(),
            dest_pid: 12345,
            src_pid: 12345,
            payload_length: len,
            body: HdrBody::Put { ack_wmd: WireHandle::NONE, match_bits: 1, hdr_data: 0, ptl_index: 4, offset: 0 },
        }
    }

    #[test]
    fn passive_stream_in_dribbles() {
        let mut bytes = ConnReq { version: ACCEPTOR_VERSION, nid: "127.0.0.1@tcp".parse().unwrap() }.emit().to_vec();
        bytes.extend(hello().emit());
        bytes.extend(noop(1));
        bytes.extend(lnet_frame_header(&put(5), 0));
        bytes.extend(b"hello");
        bytes.extend(lnet_frame_header(&put(0), 0));
        let mut p = ConnParser::new(true);
        let mut ev = Vec::new();
        for b in bytes.chunks(3) {
            p.input(b, &mut ev).unwrap();
        }
        assert!(matches!(ev[0], ConnEvent::ConnReq(n) if n.to_string() == "127.0.0.1@tcp"));
        assert!(matches!(&ev[1], ConnEvent::Hello(h) if *h == hello()));
        assert!(matches!(ev[2], ConnEvent::Noop(k) if k.zc_ack == 1));
        match &ev[3] {
            ConnEvent::Lnet { hdr, frame, .. } => {
                assert_eq!(*hdr, put(5));
                assert_eq!(&frame[PAYLOAD_AT..], b"hello");
            }
            e => panic!("{e:?}"),
        }
        assert!(matches!(&ev[4], ConnEvent::Lnet { frame, .. } if frame.len() == PAYLOAD_AT));
        assert_eq!(ev.len(), 5);
    }

    #[test]
    fn hostile_bytes_fail_with_reasons() {
        let mut ev = Vec::new();
        let e = ConnParser::new(true).input(&[0xde; 16], &mut ev).unwrap_err();
        assert!(e.contains("acceptor preamble"), "{e}");
        // A frame claiming a 2 MiB payload.
        let mut p = ConnParser::new(false);
        p.input(&hello().emit(), &mut ev).unwrap();
        let mut h = lnet_frame_header(&put(0), 0);
        h[KSOCK_HDR_LEN + 28..KSOCK_HDR_LEN + 32].copy_from_slice(&(2u32 << 20).to_le_bytes());
        let e = p.input(&h, &mut ev).unwrap_err();
        assert!(e.contains("exceeds LNET_MTU"), "{e}");
        assert!(p.input(&[0], &mut ev).is_err(), "stays dead");
        // Unknown frame type.
        let mut p = ConnParser::new(false);
        p.input(&hello().emit(), &mut ev).unwrap();
        assert!(p.input(&[0x77; 24], &mut ev).unwrap_err().contains("type"));
        // Unknown HELLO version is reported, not an error: the passive side answers it.
        let mut p = ConnParser::new(false);
        let mut b = hello().emit();
        b[4] = 7;
        ev.clear();
        p.input(&b, &mut ev).unwrap();
        assert!(matches!(ev[0], ConnEvent::UnknownVersion(7)));
    }

    /// A 1 MiB frame read whole is handed on in the buffer it was read into (no copy, no new
    /// allocation), and the parser gives back the buffer it held; a frame split across reads
    /// still parses, its second part appended.
    #[test]
    fn a_frame_read_whole_is_taken_without_a_copy() {
        let mut p = ConnParser::new(false);
        let mut ev = Vec::new();
        p.input(&hello().emit(), &mut ev).unwrap();
        let mut data = lnet_frame_header(&put(1 << 20), 0).to_vec();
        data.resize(PAYLOAD_AT + (1 << 20), 0xab);
        ev.clear();
        let before = p.moved;
        let spent = p.input_owned(data.clone(), &mut ev).unwrap();
        assert!(spent.is_empty());
        let ConnEvent::Lnet { frame, .. } = ev.pop().unwrap() else { panic!("a frame") };
        assert_eq!(frame.len(), PAYLOAD_AT + (1 << 20));
        assert_eq!(p.moved, before, "nothing moved");
        let at2 = data.as_ptr();
        let spent = p.input_owned(data, &mut ev).unwrap();
        let ConnEvent::Lnet { frame: f2, .. } = ev.pop().unwrap() else { panic!("a frame") };
        assert_eq!(f2.as_ptr(), at2, "the frame is the buffer it was read into");
        drop((frame, spent));
        // Split: 1000 bytes, then the rest.
        let mut whole = lnet_frame_header(&put(1 << 20), 0).to_vec();
        whole.resize(PAYLOAD_AT + (1 << 20), 0xcd);
        p.input_owned(whole[..1000].to_vec(), &mut ev).unwrap();
        assert!(ev.is_empty());
        p.input_owned(whole[1000..].to_vec(), &mut ev).unwrap();
        let ConnEvent::Lnet { frame, .. } = ev.pop().unwrap() else { panic!("a frame") };
        assert_eq!(frame, whole);
    }

    /// Item 13: a burst of small frames in one read costs time linear in its length.
    #[test]
    fn small_frames_parse_in_linear_time() {
        let mut p = ConnParser::new(false);
        let mut ev = Vec::new();
        p.input(&hello().emit(), &mut ev).unwrap();
        let mut burst = Vec::new();
        for _ in 0..5000 {
            burst.extend(noop(1));
            burst.extend(lnet_frame_header(&put(3), 0));
            burst.extend(b"abc");
        }
        burst.extend(&noop(1)[..10]);
        let before = p.moved;
        p.input(&burst, &mut ev).unwrap();
        assert_eq!(ev.len(), 1 + 10000);
        let moved = p.moved - before;
        assert!(moved <= burst.len(), "{moved} bytes moved for a {}-byte burst", burst.len());
    }

    #[test]
    fn v2_checksums_are_checked() {
        let mut h = hello();
        h.version = 2;
        let mut frame = lnet_frame_header(&put(3), 0).to_vec();
        frame.extend(b"abc");
        let c = ksock_crc(&[&frame]);
        frame[4..8].copy_from_slice(&c.to_le_bytes());
        let mut p = ConnParser::new(false);
        let mut ev = Vec::new();
        p.input(&h.emit(), &mut ev).unwrap();
        p.input(&frame, &mut ev).unwrap();
        assert!(matches!(ev.last(), Some(ConnEvent::Lnet { .. })));
        frame[PAYLOAD_AT] ^= 1;
        assert!(p.input(&frame, &mut ev).unwrap_err().contains("checksum"));
    }
}
