//! CRC-16/KERMIT, the checksum of the TCG I2C interface's `TPM_DATA_CSUM` as QEMU computes it
//! (Linux's `crc_ccitt`: reflected polynomial 0x8408, initial value 0, no final xor).

/// CRC-16/KERMIT of `data`; `kermit(b"123456789") == 0x2189`.
pub fn kermit(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= u16::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x8408
            } else {
                crc >> 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    #[test]
    fn check_value() {
        assert_eq!(super::kermit(b"123456789"), 0x2189);
        assert_eq!(super::kermit(b""), 0);
    }
}
