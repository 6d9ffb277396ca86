//! Reading fields in the sender's byte order: Lustre structures other than the LNet header are
//! sent in the sender's native order and recognised by a magic that may read byte-swapped.

/// A little-endian u32 at `o` (the byte order of every format of our own).
pub fn le_u32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}

/// A little-endian u64 at `o`.
pub fn le_u64(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

/// Reads u32/u64 in the sender's order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Order {
    pub swapped: bool,
}

impl Order {
    pub fn u32(self, b: &[u8], o: usize) -> u32 {
        let v = le_u32(b, o);
        if self.swapped { v.swap_bytes() } else { v }
    }
    pub fn u64(self, b: &[u8], o: usize) -> u64 {
        let v = le_u64(b, o);
        if self.swapped { v.swap_bytes() } else { v }
    }
    /// Recognizes `magic` in either order from the first four bytes.
    pub fn detect(b: &[u8], magic: u32) -> Option<Order> {
        let v = u32::from_le_bytes(b[..4].try_into().unwrap());
        if v == magic {
            Some(Order { swapped: false })
        } else if v == magic.swap_bytes() {
            Some(Order { swapped: true })
        } else {
            None
        }
    }
}
