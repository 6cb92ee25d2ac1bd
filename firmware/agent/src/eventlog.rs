//! The TCG crypto-agile event log (TCG PC Client Platform Firmware Profile, §10), kept in a
//! fixed buffer.
//!
//! The log starts with the Spec ID event in the SHA-1 log format (`TCG_PCClientPCREvent`,
//! EV_NO_ACTION, PCR 0) that declares every PCR bank the log carries; each later record is a
//! `TCG_PCR_EVENT2` with one digest per declared bank. Integers are little-endian.

use crate::measure::Digests;

/// EV_NO_ACTION: not extended into a PCR (the Spec ID event).
pub const EV_NO_ACTION: u32 = 0x0000_0003;
/// EV_SEPARATOR: the end of a boot phase.
pub const EV_SEPARATOR: u32 = 0x0000_0004;
/// EV_S_CRTM_VERSION: the version of the code that measures first.
pub const EV_S_CRTM_VERSION: u32 = 0x0000_0008;
/// EV_PLATFORM_CONFIG_FLAGS: platform configuration (PCR 1).
pub const EV_PLATFORM_CONFIG_FLAGS: u32 = 0x0000_000A;
/// EV_EFI_PLATFORM_FIRMWARE_BLOB2: a firmware image, with a description.
pub const EV_EFI_PLATFORM_FIRMWARE_BLOB2: u32 = 0x8000_000A;

/// The log buffer is full: the record was not added and the PCR must not be extended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogFull;

/// A crypto-agile event log of at most `N` bytes.
#[derive(Debug)]
pub struct EventLog<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> EventLog<N> {
    /// A log whose Spec ID event declares `banks` (TPM_ALG_IDs with their digest sizes).
    ///
    /// # Errors
    /// [`LogFull`] if `N` cannot hold the Spec ID event.
    pub fn new(banks: &[(u16, u16)]) -> Result<Self, LogFull> {
        let mut log = Self::empty();
        log.start(banks)?;
        Ok(log)
    }

    /// A log with nothing in it, not even the Spec ID event: [`EventLog::start`] begins it.
    #[must_use]
    pub const fn empty() -> Self {
        Self {
            buf: [0; N],
            len: 0,
        }
    }

    /// Empties the log and writes the Spec ID event declaring `banks`, in place.
    ///
    /// # Errors
    /// [`LogFull`] if `N` cannot hold the Spec ID event.
    pub fn start(&mut self, banks: &[(u16, u16)]) -> Result<(), LogFull> {
        self.len = 0;
        let mut spec_id = [0u8; 128];
        let spec_len = spec_id_event(banks, &mut spec_id).ok_or(LogFull)?;
        let spec_id = spec_id.get(..spec_len).ok_or(LogFull)?;
        self.put(&0u32.to_le_bytes())?; // PCR 0
        self.put(&EV_NO_ACTION.to_le_bytes())?;
        self.put(&[0u8; 20])?; // SHA-1 digest field, zero
        self.put(&len_u32(spec_id.len())?.to_le_bytes())?;
        self.put(spec_id)
    }

    /// Appends a `TCG_PCR_EVENT2` record. Nothing is written unless all of it fits.
    ///
    /// # Errors
    /// [`LogFull`] when the record does not fit.
    pub fn record(
        &mut self,
        pcr: u32,
        event_type: u32,
        digests: &Digests,
        data: &[u8],
    ) -> Result<(), LogFull> {
        let start = self.len;
        let result = self.write_record(pcr, event_type, digests, data);
        if result.is_err() {
            self.len = start;
        }
        result
    }

    fn write_record(
        &mut self,
        pcr: u32,
        event_type: u32,
        digests: &Digests,
        data: &[u8],
    ) -> Result<(), LogFull> {
        self.put(&pcr.to_le_bytes())?;
        self.put(&event_type.to_le_bytes())?;
        self.put(&len_u32(digests.len())?.to_le_bytes())?;
        for (alg, digest) in digests.iter() {
            self.put(&alg.to_le_bytes())?;
            self.put(digest)?;
        }
        self.put(&len_u32(data.len())?.to_le_bytes())?;
        self.put(data)
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), LogFull> {
        let end = self.len.checked_add(bytes.len()).ok_or(LogFull)?;
        self.buf
            .get_mut(self.len..end)
            .ok_or(LogFull)?
            .copy_from_slice(bytes);
        self.len = end;
        Ok(())
    }

    /// The log's bytes, as a verifier parses them.
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }
}

fn len_u32(len: usize) -> Result<u32, LogFull> {
    u32::try_from(len).map_err(|_| LogFull)
}

/// Writes `TCG_EfiSpecIDEventStruct` ("Spec ID Event03", PC Client platform class, spec 2.0
/// errata 2, 32-bit UINTN) into `out`; returns its length.
fn spec_id_event(banks: &[(u16, u16)], out: &mut [u8]) -> Option<usize> {
    let mut w = 0usize;
    let mut put = |bytes: &[u8]| -> Option<()> {
        let end = w.checked_add(bytes.len())?;
        out.get_mut(w..end)?.copy_from_slice(bytes);
        w = end;
        Some(())
    };
    put(b"Spec ID Event03\0")?;
    put(&0u32.to_le_bytes())?; // platformClass: client
    put(&[0, 2, 2, 1])?; // specVersionMinor, specVersionMajor, specErrata, uintnSize (32-bit)
    put(&u32::try_from(banks.len()).ok()?.to_le_bytes())?;
    for (alg, size) in banks {
        put(&alg.to_le_bytes())?;
        put(&size.to_le_bytes())?;
    }
    put(&[0])?; // vendorInfoSize
    Some(w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::{Digests, SHA1, SHA256};

    #[test]
    fn spec_id_event_declares_every_bank() {
        let log = EventLog::<256>::new(&[(SHA1, 20), (SHA256, 32)]).unwrap();
        let bytes = log.as_bytes();
        // PCR 0, EV_NO_ACTION, a zero SHA-1 digest, then the Spec ID event's size.
        assert_eq!(&bytes[..8], &[0, 0, 0, 0, 3, 0, 0, 0]);
        assert_eq!(&bytes[8..28], &[0u8; 20]);
        let size = u32::from_le_bytes(bytes[28..32].try_into().unwrap()) as usize;
        assert_eq!(size, 16 + 4 + 4 + 4 + 2 * 4 + 1);
        let event = &bytes[32..];
        assert_eq!(event.len(), size);
        assert_eq!(&event[..16], b"Spec ID Event03\0");
        // Two banks: sha1/20 and sha256/32.
        assert_eq!(&event[24..28], &2u32.to_le_bytes());
        assert_eq!(&event[28..36], &[4, 0, 20, 0, 11, 0, 32, 0]);
        assert_eq!(event[36], 0);
    }

    #[test]
    fn a_record_that_does_not_fit_leaves_the_log_unchanged() {
        let mut log = EventLog::<128>::new(&[(SHA256, 32)]).unwrap();
        let before = log.as_bytes().to_vec();
        let digests = Digests::of(&[SHA256], &[b"x"]);
        assert_eq!(
            log.record(0, EV_SEPARATOR, &digests, &[0u8; 64]),
            Err(LogFull)
        );
        assert_eq!(log.as_bytes(), before.as_slice());
        log.record(0, EV_SEPARATOR, &digests, &[0; 4]).unwrap();
        let record = &log.as_bytes()[before.len()..];
        assert_eq!(record.len(), 4 + 4 + 4 + 2 + 32 + 4 + 4);
        assert_eq!(&record[8..14], &[1, 0, 0, 0, 11, 0]);
        assert_eq!(&record[14..46], digests.get(SHA256).unwrap());
    }

    #[test]
    fn a_buffer_too_small_for_the_spec_id_event_is_refused() {
        assert_eq!(EventLog::<40>::new(&[(SHA256, 32)]).err(), Some(LogFull));
    }
}
