//! The DMA fabric as a pcap (link type USER0): every short message the device carries, with
//! its bytes, and every transmit set up and pull asked for, as the device saw them.
//! `tools/dmalnd.lua` teaches Wireshark to read it.
//!
//! ```text
//! 0 event u8 (1 SMSG, 2 TX_SETUP, 3 PULL) | 1 status u8 (DevStatus) | 2 reserved u16
//! 4 src u32 | 8 dst u32 | 12 nob u32 | 16 cookie u64 | 24 the SMSG's bytes (SMSG only)
//! ```
//! SMSG: src sent to dst. TX_SETUP: src set up nob bytes for dst to pull, cookie its handle
//! (0 when refused). PULL: src pulls nob bytes of dst's transmit cookie. All little-endian.

use crate::wire::pcap::{PcapFile, LINKTYPE_USER0};

pub const EV_SMSG: u8 = 1;
pub const EV_TX_SETUP: u8 = 2;
pub const EV_PULL: u8 = 3;
pub const REC_HDR: usize = 24;

/// One fabric event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FabricEvent<'a> {
    pub event: u8,
    pub status: u8,
    pub src: u32,
    pub dst: u32,
    pub nob: u32,
    pub cookie: u64,
    pub data: &'a [u8],
}

impl FabricEvent<'_> {
    pub fn emit_header(&self) -> [u8; REC_HDR] {
        let mut h = [0u8; REC_HDR];
        h[0] = self.event;
        h[1] = self.status;
        h[4..8].copy_from_slice(&self.src.to_le_bytes());
        h[8..12].copy_from_slice(&self.dst.to_le_bytes());
        h[12..16].copy_from_slice(&self.nob.to_le_bytes());
        h[16..24].copy_from_slice(&self.cookie.to_le_bytes());
        h
    }
}

pub struct FabricCapture {
    out: PcapFile,
}

impl FabricCapture {
    /// Records into `path` (appending: a device started again goes on in the same file),
    /// stamped with the wall clock when `wall`, else numbered (deterministic under simulation).
    pub fn append_to(path: &std::path::Path, wall: bool) -> std::io::Result<FabricCapture> {
        Ok(FabricCapture { out: PcapFile::append_to(path, LINKTYPE_USER0, wall)? })
    }

    pub fn record(&mut self, e: &FabricEvent) {
        self.out.record(&[&e.emit_header(), e.data]);
        self.out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_bytes() {
        let e = FabricEvent { event: EV_PULL, status: 3, src: 2, dst: 0x0102_0304, nob: 4096, cookie: 0x1122_3344_5566_7788, data: &[] };
        assert_eq!(e.emit_header(), [3, 3, 0, 0, 2, 0, 0, 0, 4, 3, 2, 1, 0, 16, 0, 0, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11]);
    }
}
