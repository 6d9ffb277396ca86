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
    let base = seed ^ file.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let word = |w: u64| {
        let mut x = base ^ w.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x ^= x >> 31;
        x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
        (x ^ (x >> 29)).to_le_bytes()
    };
    // The bytes before the first whole word, whole words (fixed-size stores the compiler
    // unrolls), then the bytes after the last.
    let skip = (offset & 7) as usize;
    let head = ((8 - skip) & 7).min(out.len());
    if head > 0 {
        out[..head].copy_from_slice(&word(offset >> 3)[skip..skip + head]);
    }
    let mut w = (offset + head as u64) >> 3;
    let whole = (out.len() - head) / 8 * 8;
    let (mid, tail) = out[head..].split_at_mut(whole);
    for c in mid.chunks_exact_mut(8) {
        c.copy_from_slice(&word(w));
        w += 1;
    }
    if !tail.is_empty() {
        let n = tail.len();
        tail.copy_from_slice(&word(w)[..n]);
    }
}

#[cfg(test)]
mod tests {
    /// The word-wide generator writes the bytes the byte-at-a-time one did (golden digests
    /// and every earlier run's files depend on them).
    #[test]
    fn pattern_bytes_are_unchanged() {
        let mut b = [0u8; 21];
        super::pattern_fill(1, 2, 5, &mut b);
        let old = |o: u64| {
            let w = o >> 3;
            let mut x = 1 ^ 2u64.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ w.wrapping_mul(0xBF58_476D_1CE4_E5B9);
            x ^= x >> 31;
            x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
            x ^= x >> 29;
            x.to_le_bytes()[(o & 7) as usize]
        };
        assert!(b.iter().enumerate().all(|(i, &v)| v == old(5 + i as u64)));
        let mut one = [0u8; 3];
        super::pattern_fill(1, 2, 9, &mut one);
        assert_eq!(one, b[4..7]);
    }

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
