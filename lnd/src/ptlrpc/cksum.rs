//! CRC32C (Castagnoli), the bulk checksum ptlrpc uses here (OBD_CKSUM_CRC32C), computed by the
//! `crc32c` crate (the CPU's crc32 instruction on three interleaved streams where it has one).

/// CRC32C of `data` continuing from `crc` (0 to start): `crc32c(crc32c(0, a), b)` is the CRC32C
/// of `a` followed by `b`.
pub fn crc32c(crc: u32, data: &[u8]) -> u32 {
    ::crc32c::crc32c_append(crc, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_check_value() {
        assert_eq!(crc32c(0, b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(crc32c(0, b"1234"), b"56789"), 0xE306_9283);
        let big: Vec<u8> = (0..10_007u32).map(|i| (i * 31) as u8).collect();
        assert_eq!(crc32c(crc32c(0, &big[..5000]), &big[5000..]), crc32c(0, &big));
    }
}
