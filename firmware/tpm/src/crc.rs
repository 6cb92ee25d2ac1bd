//! CRC-16/KERMIT, the checksum of the TCG I2C interface's TPM_DATA_CSUM register.

/// CRC-16/KERMIT (reflected polynomial 0x8408, initial value 0, no final XOR) over `data`.
///
/// The TPM reports it in TPM_DATA_CSUM; read it as a big-endian `u16` to compare.
#[must_use]
pub fn crc16_kermit(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= u16::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
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
    use super::*;

    #[test]
    fn check_value() {
        assert_eq!(crc16_kermit(b"123456789"), 0x2189);
        assert_eq!(crc16_kermit(b""), 0);
    }
}
