//! What the agent measures at boot, computed the same way on the board and by the operator's
//! tools (`vouch image add`), so reference values need no booted board.
//!
//! Following the TCG PC Client Platform Firmware Profile conventions:
//! - PCR 0, EV_S_CRTM_VERSION: the agent's version string.
//! - PCR 0, EV_EFI_PLATFORM_FIRMWARE_BLOB2: the firmware image (its flash region); the event
//!   data is the blob description, base address and length.
//! - PCR 1, EV_PLATFORM_CONFIG_FLAGS: the board's configuration bytes.
//! - PCR 0 and PCR 1, EV_SEPARATOR: four zero bytes, closing the measured boot.
//!
//! Every digest is computed for every active PCR bank.

use crate::eventlog::{
    EV_EFI_PLATFORM_FIRMWARE_BLOB2, EV_PLATFORM_CONFIG_FLAGS, EV_S_CRTM_VERSION, EV_SEPARATOR,
};
use sha1::Sha1;
use sha2::{Sha256, Sha384, Sha512};

/// TPM_ALG_SHA1.
pub const SHA1: u16 = 0x0004;
/// TPM_ALG_SHA256.
pub const SHA256: u16 = 0x000B;
/// TPM_ALG_SHA384.
pub const SHA384: u16 = 0x000C;
/// TPM_ALG_SHA512.
pub const SHA512: u16 = 0x000D;
/// Most PCR banks measured at once.
pub const MAX_BANKS: usize = 4;

/// The digest size of a hash algorithm this agent can compute.
pub const fn digest_size(alg: u16) -> Option<usize> {
    match alg {
        SHA1 => Some(20),
        SHA256 => Some(32),
        SHA384 => Some(48),
        SHA512 => Some(64),
        _ => None,
    }
}

/// One digest per bank (a TPML_DIGEST_VALUES).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Digests {
    entries: [(u16, [u8; 64]); MAX_BANKS],
    count: usize,
}

impl Digests {
    /// Hashes the concatenation of `parts` with each algorithm of `banks`. Banks with an
    /// algorithm this agent cannot compute are skipped (and reported by [`Digests::len`]).
    pub fn of(banks: &[u16], parts: &[&[u8]]) -> Self {
        let mut digests = Self {
            entries: [(0, [0; 64]); MAX_BANKS],
            count: 0,
        };
        for &alg in banks {
            let mut out = [0u8; 64];
            let ok = match alg {
                SHA1 => hash_into::<Sha1>(parts, &mut out),
                SHA256 => hash_into::<Sha256>(parts, &mut out),
                SHA384 => hash_into::<Sha384>(parts, &mut out),
                SHA512 => hash_into::<Sha512>(parts, &mut out),
                _ => false,
            };
            if let (true, Some(slot)) = (ok, digests.entries.get_mut(digests.count)) {
                *slot = (alg, out);
                digests.count += 1;
            }
        }
        digests
    }

    /// How many banks have a digest.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether no bank has a digest.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// `(TPM_ALG_ID, digest)` per bank, in the order the banks were given.
    pub fn iter(&self) -> impl Iterator<Item = (u16, &[u8])> {
        self.entries.iter().take(self.count).map(|(alg, d)| {
            (
                *alg,
                d.get(..digest_size(*alg).unwrap_or(0)).unwrap_or_default(),
            )
        })
    }

    /// The digest of one bank.
    pub fn get(&self, alg: u16) -> Option<&[u8]> {
        self.iter().find(|(a, _)| *a == alg).map(|(_, d)| d)
    }
}

fn hash_into<D: sha2::Digest>(parts: &[&[u8]], out: &mut [u8; 64]) -> bool {
    let mut hasher = D::new();
    for part in parts {
        hasher.update(part);
    }
    let digest = hasher.finalize();
    match out.get_mut(..digest.len()) {
        Some(slot) => {
            slot.copy_from_slice(&digest);
            true
        }
        None => false,
    }
}

/// The description recorded with the firmware image.
pub const FIRMWARE_DESCRIPTION: &[u8] = b"vouch firmware";
/// Its length, as the UINT8 the event data starts with.
#[allow(
    clippy::cast_possible_truncation,
    reason = "the assertion below keeps it below 256"
)]
const FIRMWARE_DESCRIPTION_LEN: [u8; 1] = [FIRMWARE_DESCRIPTION.len() as u8];
const _: () = assert!(FIRMWARE_DESCRIPTION.len() < 256);
/// Largest event data of one boot measurement (the firmware blob's descriptor).
pub const MAX_EVENT_DATA: usize = 1 + FIRMWARE_DESCRIPTION.len() + 16;

/// One measurement: what is extended into which PCR, and the event data logged with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Measurement<'a> {
    pub pcr: u32,
    pub event_type: u32,
    /// The event data when it is not the measured bytes themselves.
    descriptor: [u8; MAX_EVENT_DATA],
    descriptor_len: usize,
    /// The event data when it is the measured bytes (version string, configuration).
    inline: &'a [u8],
    pub digests: Digests,
}

impl Measurement<'_> {
    /// The event data recorded in the log.
    pub fn event_data(&self) -> &[u8] {
        if self.descriptor_len > 0 {
            self.descriptor
                .get(..self.descriptor_len)
                .unwrap_or_default()
        } else {
            self.inline
        }
    }
}

/// What the agent is and what it was loaded from.
#[derive(Debug, Clone, Copy)]
pub struct BootImage<'a> {
    /// The agent's version string (EV_S_CRTM_VERSION).
    pub version: &'a [u8],
    /// The image bytes as they sit in flash, in pieces measured as one (a board may have to
    /// read the first word apart: address 0 cannot be a Rust slice).
    pub image: &'a [&'a [u8]],
    /// The image's load address (recorded, not measured).
    pub base: u64,
    /// The board's configuration bytes (PCR 1).
    pub config: &'a [u8],
}

/// The measured-boot sequence for `boot` in `banks`, in extend order.
pub fn boot_measurements<'a>(boot: &BootImage<'a>, banks: &[u16]) -> [Measurement<'a>; 5] {
    let separator: &'static [u8] = &[0, 0, 0, 0];
    let image_len: usize = boot.image.iter().map(|part| part.len()).sum();
    let mut descriptor = [0u8; MAX_EVENT_DATA];
    // UINT8 description size, description, UINT64 base, UINT64 length (little-endian).
    let mut at = 0;
    for bytes in [
        &FIRMWARE_DESCRIPTION_LEN[..],
        FIRMWARE_DESCRIPTION,
        &boot.base.to_le_bytes(),
        &(image_len as u64).to_le_bytes(),
    ] {
        if let Some(slot) = descriptor.get_mut(at..at + bytes.len()) {
            slot.copy_from_slice(bytes);
        }
        at += bytes.len();
    }
    let inline = |pcr, event_type, data: &'a [u8]| Measurement {
        pcr,
        event_type,
        descriptor: [0; MAX_EVENT_DATA],
        descriptor_len: 0,
        inline: data,
        digests: Digests::of(banks, &[data]),
    };
    [
        inline(0, EV_S_CRTM_VERSION, boot.version),
        Measurement {
            pcr: 0,
            event_type: EV_EFI_PLATFORM_FIRMWARE_BLOB2,
            descriptor,
            descriptor_len: MAX_EVENT_DATA,
            inline: &[],
            digests: Digests::of(banks, boot.image),
        },
        inline(1, EV_PLATFORM_CONFIG_FLAGS, boot.config),
        inline(0, EV_SEPARATOR, separator),
        inline(1, EV_SEPARATOR, separator),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> std::string::String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn digests_match_known_answers_and_skip_unknown_banks() {
        let d = Digests::of(&[SHA1, 0x0012, SHA256], &[b"a", b"bc"]);
        assert_eq!(d.len(), 2);
        assert_eq!(
            hex(d.get(SHA1).unwrap()),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(
            hex(d.get(SHA256).unwrap()),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(d.get(SHA384).is_none());
    }

    #[test]
    fn boot_measurements_follow_the_pc_client_conventions() {
        let image = [0xA5u8; 300];
        let boot = BootImage {
            version: b"vouch 0.1",
            image: &[&image[..100], &image[100..]],
            base: 0x1000,
            config: b"board=test",
        };
        let m = boot_measurements(&boot, &[SHA256]);
        let kinds: std::vec::Vec<(u32, u32)> = m.iter().map(|m| (m.pcr, m.event_type)).collect();
        assert_eq!(
            kinds,
            [
                (0, EV_S_CRTM_VERSION),
                (0, EV_EFI_PLATFORM_FIRMWARE_BLOB2),
                (1, EV_PLATFORM_CONFIG_FLAGS),
                (0, EV_SEPARATOR),
                (1, EV_SEPARATOR)
            ]
        );
        assert_eq!(m[0].event_data(), b"vouch 0.1");
        // The blob's digest is the image's, its event data the descriptor.
        assert_eq!(
            m[1].digests.get(SHA256),
            Digests::of(&[SHA256], &[&image]).get(SHA256)
        );
        let data = m[1].event_data();
        assert_eq!(data[0] as usize, FIRMWARE_DESCRIPTION.len());
        assert_eq!(&data[1..15], FIRMWARE_DESCRIPTION);
        assert_eq!(&data[15..23], &0x1000u64.to_le_bytes());
        assert_eq!(&data[23..31], &300u64.to_le_bytes());
        assert_eq!(m[3].event_data(), &[0, 0, 0, 0]);
        // Changing one byte of the image changes only the blob's digest.
        let mut other = image;
        other[7] ^= 1;
        let boot2 = BootImage {
            image: &[&other],
            ..boot
        };
        let m2 = boot_measurements(&boot2, &[SHA256]);
        assert_ne!(m[1].digests, m2[1].digests);
        assert_eq!(m[0].digests, m2[0].digests);
    }
}
