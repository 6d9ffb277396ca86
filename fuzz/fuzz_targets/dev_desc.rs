//! The device side of the shared rings: whatever a (hostile) node writes into its submission
//! ring, reading descriptors and completions never panics or reads out of bounds.
#![no_main]
use libfuzzer_sys::fuzz_target;
use lnd::dev::ring::{Rings, QUEUE_BYTES, SQ_N};
use lnd::mem::Mem;

fuzz_target!(|data: &[u8]| {
    let mem = Mem::heap(QUEUE_BYTES);
    let r = Rings::new(&mem, true).unwrap();
    // Scatter the input over the descriptor slots and their inline data.
    for (i, c) in data.chunks(64 + 64).enumerate().take(SQ_N as usize) {
        let _ = mem.write(256 + (i as u64 % SQ_N as u64) * 64, &c[..c.len().min(64)]);
        if c.len() > 64 {
            let _ = mem.write(256 + SQ_N as u64 * 64 + (i as u64) * 4096, &c[64..]);
        }
    }
    for i in 0..SQ_N {
        let _ = r.read_desc(i);
        let _ = r.read_comp(i);
    }
});
