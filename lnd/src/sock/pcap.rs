//! A tiny pcap writer: each socklnd write becomes one TCP segment (raw IPv4 link type), so a
//! capture of our bytes can be checked with Wireshark's `lnet` dissector.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddrV4;
use crate::wire::pcap::{PcapFile, LINKTYPE_RAW};

const MAX_SEG: usize = 65_000;

fn csum(b: &[u8]) -> u16 {
    let mut s: u32 = 0;
    for c in b.chunks(2) {
        s += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32;
    }
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

pub struct Capture {
    out: PcapFile,
    seq: HashMap<(SocketAddrV4, SocketAddrV4), u32>,
}

impl Capture {
    pub fn new(out: Box<dyn Write + Send>) -> std::io::Result<Capture> {
        Ok(Capture { out: PcapFile::new(out, LINKTYPE_RAW)?, seq: HashMap::new() })
    }

    pub fn to_file(path: &std::path::Path) -> std::io::Result<Capture> {
        Capture::new(Box::new(std::io::BufWriter::new(std::fs::File::create(path)?)))
    }

    /// Records into `path`, after what an earlier life of the node wrote there (a node started
    /// again goes on with the same capture), stamped with the wall clock when `wall`.
    pub fn append_to(path: &std::path::Path, wall: bool) -> std::io::Result<Capture> {
        Ok(Capture { out: PcapFile::append_to(path, LINKTYPE_RAW, wall)?, seq: HashMap::new() })
    }

    /// Records `data` sent from `src` to `dst` (split into segments of at most 65000 bytes).
    pub fn segment(&mut self, src: SocketAddrV4, dst: SocketAddrV4, data: &[u8]) {
        for chunk in data.chunks(MAX_SEG) {
            let seq = self.seq.entry((src, dst)).or_insert(1);
            let s = *seq;
            *seq = seq.wrapping_add(chunk.len() as u32);
            let ack = *self.seq.get(&(dst, src)).unwrap_or(&1);
            let total = 40 + chunk.len();
            let mut p = Vec::with_capacity(total);
            p.extend_from_slice(&[0x45, 0, (total >> 8) as u8, total as u8, 0, 0, 0x40, 0, 64, 6, 0, 0]);
            p.extend_from_slice(&src.ip().octets());
            p.extend_from_slice(&dst.ip().octets());
            let c = csum(&p[..20]);
            p[10..12].copy_from_slice(&c.to_be_bytes());
            p.extend_from_slice(&src.port().to_be_bytes());
            p.extend_from_slice(&dst.port().to_be_bytes());
            p.extend_from_slice(&s.to_be_bytes());
            p.extend_from_slice(&ack.to_be_bytes());
            p.extend_from_slice(&[0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
            p.extend_from_slice(chunk);
            self.out.record(&[&p]);
        }
        self.out.flush();
    }
}
