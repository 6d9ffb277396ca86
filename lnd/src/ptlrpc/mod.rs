//! ptlrpc as Lustre lays it out: requests and replies are LNet PUTs of `lustre_msg_v2`, bulk data
//! moves by GET (writes) or PUT (reads) on the bulk portal. Helpers shared by the OSS and client.

pub mod at;
pub mod cksum;
pub mod pinger;
pub mod wire;
pub mod xid;

use crate::lnet::{Event, MdSpec};
use crate::mem::Seg;
use crate::node::Node;

/// Events of a service's MDs carry its tag in the top byte of `user_ptr`.
pub const TAG_SHIFT: u32 = 56;
pub const TAG_OSS: u64 = 1;
pub const TAG_OSC: u64 = 2;

pub fn tag_of(ev: &Event) -> u64 {
    ev.user_ptr >> TAG_SHIFT
}

pub fn user_ptr(tag: u64, id: u64) -> u64 {
    (tag << TAG_SHIFT) | (id & ((1 << TAG_SHIFT) - 1))
}



/// Node memory for `len` bytes (filled with `data` if given).
pub fn alloc(node: &mut Node, len: usize, data: Option<&[u8]>) -> Result<Seg, String> {
    let off = node.arena.alloc(len as u64).ok_or_else(|| format!("node memory exhausted ({len} bytes wanted, {} free)", node.arena.free_bytes()))?;
    if let Some(d) = data {
        node.mem.write(off, d).map_err(|e| e.to_string())?;
    }
    Ok(Seg { off, len: len as u32 })
}

pub fn free(node: &mut Node, s: Seg) {
    node.arena.free(s.off, s.len as u64);
}

/// A one-segment MD spec.
pub fn spec(seg: Seg, options: u32, threshold: Option<u32>, user_ptr: u64) -> MdSpec {
    MdSpec { iov: vec![seg], options, threshold, max_size: 0, user_ptr }
}

/// The byte the I/O workloads put at `offset` of file `file` (deterministic from the seed), so
/// reads are checked without keeping a copy.
pub fn pattern_fill(seed: u64, file: u64, offset: u64, out: &mut [u8]) {
    let mut o = offset;
    let mut i = 0;
    while i < out.len() {
        let word = o >> 3;
        let mut x = seed ^ file.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ word.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x ^= x >> 31;
        x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^= x >> 29;
        let bytes = x.to_le_bytes();
        let start = (o & 7) as usize;
        let n = (8 - start).min(out.len() - i);
        out[i..i + n].copy_from_slice(&bytes[start..start + n]);
        i += n;
        o += n as u64;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn pattern_is_position_independent() {
        let mut whole = vec![0u8; 100];
        super::pattern_fill(7, 3, 1000, &mut whole);
        let mut part = vec![0u8; 37];
        super::pattern_fill(7, 3, 1013, &mut part);
        assert_eq!(&whole[13..50], &part[..]);
        let mut other = vec![0u8; 100];
        super::pattern_fill(8, 3, 1000, &mut other);
        assert_ne!(whole, other);
    }
}

#[cfg(test)]
mod speed {
    #[test]
    #[ignore]
    fn pattern_speed() {
        let mut b = vec![0u8; 1 << 20];
        let t = std::time::Instant::now();
        for i in 0..64 {
            super::pattern_fill(1, 2, i << 20, &mut b);
        }
        eprintln!("pattern_fill: {:.2} GB/s", (64u64 << 20) as f64 / t.elapsed().as_secs_f64() / 1e9);
    }
}
