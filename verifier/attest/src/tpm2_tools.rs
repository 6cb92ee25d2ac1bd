//! File formats of tpm2-tools, so that `vouch` takes the same files as
//! `tpm2_checkquote`.
//!
//! The "serialized" PCR file (`tpm2_quote -o`, `tpm2_pcrread -o`; tpm2-tools
//! lib/pcr.c `pcr_fwrite_serialized`) is raw little-endian C structs:
//! TPML_PCR_SELECTION (u32 count, then 16 × TPMS_PCR_SELECTION {u16 hash,
//! u8 sizeofSelect, u8 pcrSelect\[4\], 1 pad byte}), a u32 count of
//! TPML_DIGEST, then each TPML_DIGEST (u32 count, 8 × TPM2B_DIGEST {u16 size,
//! u8 buffer\[64\]}). Digests follow the selection: bank by bank, PCRs
//! ascending. The "values" format (`-F values`) is the digests alone,
//! concatenated in the same order.

use crate::alg::HashAlg;
use crate::codec::{DecodeError, DecodeReason, Reader};
use crate::pcr::PcrValues;
use crate::tpm::{PcrSelection, bitmap_to_indices};

const SELECTION_SLOTS: usize = 16;
const DIGESTS_PER_LIST: usize = 8;
const TPMU_HA_SIZE: usize = 64;

/// Parses a serialized PCR file into its selection and values.
pub fn parse_serialized_pcrs(bytes: &[u8]) -> Result<(PcrSelection, PcrValues), DecodeError> {
    let mut r = Reader::new(bytes);
    let at = r.offset();
    let count = usize::try_from(r.u32_le("selection count")?).unwrap_or(usize::MAX);
    if count > SELECTION_SLOTS {
        return Err(Reader::err_at(
            at,
            DecodeReason::TooLarge {
                what: "selection count",
                size: count,
                max: SELECTION_SLOTS,
            },
        ));
    }
    let mut banks = Vec::new();
    for slot in 0..SELECTION_SLOTS {
        let at = r.offset();
        let id = r.u16_le("PCR bank")?;
        let size = usize::from(r.u8("sizeofSelect")?);
        let bits = r.take(4, "pcrSelect")?;
        r.take(1, "padding")?;
        if slot >= count {
            continue;
        }
        let alg = HashAlg::from_id(id).ok_or(Reader::err_at(
            at,
            DecodeReason::UnsupportedAlgorithm {
                what: "PCR bank",
                id,
            },
        ))?;
        let bits = bits.get(..size).ok_or(Reader::err_at(
            at.saturating_add(2),
            DecodeReason::TooLarge {
                what: "sizeofSelect",
                size,
                max: 4,
            },
        ))?;
        banks.push((alg, bitmap_to_indices(bits)));
    }
    let selection = PcrSelection::new(banks);
    let at = r.offset();
    let lists = usize::try_from(r.u32_le("digest list count")?).unwrap_or(usize::MAX);
    let max_lists = selection.len().div_ceil(DIGESTS_PER_LIST);
    if lists > max_lists.max(1) {
        return Err(Reader::err_at(
            at,
            DecodeReason::TooLarge {
                what: "digest list count",
                size: lists,
                max: max_lists,
            },
        ));
    }
    let mut digests: Vec<(usize, &[u8])> = Vec::new();
    for _ in 0..lists {
        let at = r.offset();
        let n = usize::try_from(r.u32_le("digest count")?).unwrap_or(usize::MAX);
        if n > DIGESTS_PER_LIST {
            return Err(Reader::err_at(
                at,
                DecodeReason::TooLarge {
                    what: "digest count",
                    size: n,
                    max: DIGESTS_PER_LIST,
                },
            ));
        }
        for k in 0..DIGESTS_PER_LIST {
            let at = r.offset();
            let size = usize::from(r.u16_le("digest size")?);
            let buf = r.take(TPMU_HA_SIZE, "digest")?;
            if k < n {
                let d = buf.get(..size).ok_or(Reader::err_at(
                    at,
                    DecodeReason::TooLarge {
                        what: "digest size",
                        size,
                        max: TPMU_HA_SIZE,
                    },
                ))?;
                digests.push((at, d));
            }
        }
    }
    r.finish()?;
    if digests.len() != selection.len() {
        return Err(Reader::err_at(
            at,
            DecodeReason::Invalid("the number of PCR values differs from the selection"),
        ));
    }
    let mut values = PcrValues::default();
    for ((alg, i), (at, d)) in selection.iter().zip(digests) {
        if d.len() != alg.size() {
            return Err(Reader::err_at(
                at,
                DecodeReason::Invalid("a PCR value's size does not match its bank"),
            ));
        }
        values.insert(alg, i, d.to_vec());
    }
    Ok((selection, values))
}

/// Parses a "values" PCR file (the digests concatenated) for `selection`.
pub fn parse_values_pcrs(bytes: &[u8], selection: &PcrSelection) -> Result<PcrValues, DecodeError> {
    let mut r = Reader::new(bytes);
    let mut values = PcrValues::default();
    for (alg, i) in selection.iter() {
        values.insert(alg, i, r.take(alg.size(), "PCR value")?.to_vec());
    }
    r.finish()?;
    Ok(values)
}
