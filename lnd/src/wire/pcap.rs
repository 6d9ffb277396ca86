//! A pcap file (classic libpcap format, little-endian): the file header once, then one record
//! per packet. The socklnd capture (raw IPv4) and the DMA fabric capture (a user link type) both
//! write through it.

use std::io::Write;

/// Raw IPv4 packets.
pub const LINKTYPE_RAW: u32 = 101;
/// The first user-defined link type: the DMA fabric's records (see `dev::capture`).
pub const LINKTYPE_USER0: u32 = 147;
const MAGIC: u32 = 0xa1b2_c3d4;
const SNAPLEN: u32 = 262_144;

pub struct PcapFile {
    out: Box<dyn Write + Send>,
    /// Records stamped with the wall clock; else with a count (deterministic, for the simulator).
    wall: bool,
    t: u32,
}

fn file_header(linktype: u32) -> [u8; 24] {
    let mut h = [0u8; 24];
    h[..4].copy_from_slice(&MAGIC.to_le_bytes());
    h[4..6].copy_from_slice(&2u16.to_le_bytes());
    h[6..8].copy_from_slice(&4u16.to_le_bytes());
    h[16..20].copy_from_slice(&SNAPLEN.to_le_bytes());
    h[20..24].copy_from_slice(&linktype.to_le_bytes());
    h
}

impl PcapFile {
    /// A capture written to `out`, records numbered rather than timed.
    pub fn new(mut out: Box<dyn Write + Send>, linktype: u32) -> std::io::Result<PcapFile> {
        out.write_all(&file_header(linktype))?;
        Ok(PcapFile { out, wall: false, t: 0 })
    }

    /// Records into `path`, after what an earlier life of the writer left there (one file
    /// header), stamped with the wall clock when `wall`.
    pub fn append_to(path: &std::path::Path, linktype: u32, wall: bool) -> std::io::Result<PcapFile> {
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        if f.metadata()?.len() == 0 {
            f.write_all(&file_header(linktype))?;
        }
        Ok(PcapFile { out: Box::new(std::io::BufWriter::new(f)), wall, t: 0 })
    }

    /// One record made of `parts`, in order. Write errors are ignored: a capture never stops
    /// the traffic it records.
    pub fn record(&mut self, parts: &[&[u8]]) {
        self.t += 1;
        let (sec, usec) = match self.wall {
            true => std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| (d.as_secs() as u32, d.subsec_micros())).unwrap_or((0, 0)),
            false => (self.t / 1000, (self.t % 1000) * 1000),
        };
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let mut rec = [0u8; 16];
        rec[..4].copy_from_slice(&sec.to_le_bytes());
        rec[4..8].copy_from_slice(&usec.to_le_bytes());
        rec[8..12].copy_from_slice(&(len as u32).to_le_bytes());
        rec[12..16].copy_from_slice(&(len as u32).to_le_bytes());
        let _ = self.out.write_all(&rec);
        for p in parts {
            let _ = self.out.write_all(p);
        }
    }

    pub fn flush(&mut self) {
        let _ = self.out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The file header and a record, byte for byte (numbered records: 1 ms apart).
    #[test]
    fn header_and_record_bytes() {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let mut p = PcapFile::new(Box::new(Shared(buf.clone())), LINKTYPE_USER0).unwrap();
        p.record(&[b"ab", b"c"]);
        let b = buf.lock().unwrap().clone();
        let want: Vec<u8> = [
            &[0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 147, 0, 0, 0][..],
            &[0, 0, 0, 0, 0xe8, 3, 0, 0, 3, 0, 0, 0, 3, 0, 0, 0][..],
            b"abc",
        ]
        .concat();
        assert_eq!(b, want);
    }
}
