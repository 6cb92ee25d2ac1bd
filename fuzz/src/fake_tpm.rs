//! A TPM that answers every command the agent sends with a well-formed success response of
//! fixed content (an ECC P-256 EK and AK, zero PCRs, a quote with a dummy signature), so a
//! fuzzed verifier can drive the agent's whole session without a real TPM. It checks nothing:
//! the agent's TPM stack is tested against swtpm elsewhere.

use vouch_tpm::Transport;

const RC_HANDLE: u32 = 0x18B;
const RC_FAILURE: u32 = 0x101;

/// The fake TPM; see the module docs.
#[derive(Debug, Default)]
pub struct FakeTpm;

impl Transport for FakeTpm {
    type Error = core::convert::Infallible;

    fn transact(&mut self, command: &[u8], response: &mut [u8]) -> Result<usize, Self::Error> {
        let answer = answer(command);
        let n = answer.len().min(response.len());
        if let (Some(dst), Some(src)) = (response.get_mut(..n), answer.get(..n)) {
            dst.copy_from_slice(src);
        }
        Ok(n)
    }
}

fn be16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*bytes.get(at)?, *bytes.get(at + 1)?]))
}

fn be32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes([
        *bytes.get(at)?,
        *bytes.get(at + 1)?,
        *bytes.get(at + 2)?,
        *bytes.get(at + 3)?,
    ]))
}

/// The response to `command`.
#[must_use]
pub fn answer(command: &[u8]) -> Vec<u8> {
    let Some(cc) = be32(command, 6) else {
        return error(RC_FAILURE);
    };
    match cc {
        // CreatePrimary: the EK.
        0x131 => {
            let mut params = ecc_public(0x0003_00B2, 0x11);
            params.extend(hex("0000 0000 8021 4000000b 0000"));
            params.extend(name(0x11));
            success(&[0x8000_0000], &params, true)
        }
        // Create: the AK's private and public areas.
        0x153 => {
            let mut params = hex("0004 deadbeef");
            params.extend(ecc_public(AK_ATTRIBUTES, 0x21));
            params.extend(hex("0000 0000 8021 4000000b 0000"));
            success(&[], &params, true)
        }
        // Load: the AK's transient handle and Name.
        0x157 => success(&[0x8000_0001], &name(0x21), true),
        // ReadPublic: the persistent AK.
        0x173 => {
            let mut params = ecc_public(AK_ATTRIBUTES, 0x21);
            params.extend(name(0x21));
            params.extend(name(0x22));
            success(&[], &params, false)
        }
        // NV_ReadPublic: no EK certificate.
        0x169 => error(RC_HANDLE),
        // GetRandom: as many bytes as asked (0x5A is a valid P-256 scalar).
        0x17B => {
            let n = usize::from(be16(command, 10).unwrap_or(0).min(64));
            let mut params = tpm2b_len(n);
            params.resize(2 + n, 0x5A);
            success(&[], &params, false)
        }
        // StartAuthSession: a policy session.
        0x176 => success(
            &[0x0300_0000],
            &hex("0010 00112233445566778899aabbccddeeff"),
            false,
        ),
        // PolicySecret: empty timeout and ticket.
        0x151 => success(&[], &hex("0000 8021 40000007 0000"), true),
        // ActivateCredential: a 32-byte certInfo.
        0x147 => {
            let mut params = hex("0020");
            params.extend([0xC0; 32]);
            success(&[], &params, true)
        }
        // Quote: a short TPMS_ATTEST and an ECDSA signature.
        0x158 => {
            let mut params = hex("0006 ff544347 8018 0018 000b 0020");
            params.extend([0x01; 32]);
            params.extend(hex("0020"));
            params.extend([0x02; 32]);
            success(&[], &params, true)
        }
        // PCR_Read: the selection asked for, every PCR zero.
        0x17E => pcr_read(command),
        // FlushContext, EvictControl.
        0x165 => success(&[], &[], false),
        0x121 => success(&[], &[], true),
        _ => error(RC_FAILURE),
    }
}

/// TPMA_OBJECT of an AK as the agent creates it.
const AK_ATTRIBUTES: u32 = vouch_tpm::AK_ATTRIBUTES;

fn pcr_read(command: &[u8]) -> Vec<u8> {
    // TPML_PCR_SELECTION with one bank: count, hash, sizeofSelect, bitmap.
    let (Some(1), Some(alg), Some(&size)) = (be32(command, 10), be16(command, 14), command.get(16))
    else {
        return error(RC_FAILURE);
    };
    let Some(bitmap) = command.get(17..17 + usize::from(size)) else {
        return error(RC_FAILURE);
    };
    let digest = match alg {
        0x0004 => 20,
        0x000B => 32,
        0x000C => 48,
        0x000D => 64,
        _ => return error(RC_FAILURE),
    };
    let count: u32 = bitmap.iter().map(|b| b.count_ones()).sum();
    let mut params = 7u32.to_be_bytes().to_vec();
    params.extend(1u32.to_be_bytes());
    params.extend(alg.to_be_bytes());
    params.push(size);
    params.extend_from_slice(bitmap);
    params.extend(count.to_be_bytes());
    for _ in 0..count {
        params.extend(tpm2b_len(digest));
        params.resize(params.len() + digest, 0);
    }
    success(&[], &params, false)
}

fn ecc_public(attributes: u32, x: u8) -> Vec<u8> {
    let mut area = hex("0023 000b");
    area.extend(attributes.to_be_bytes());
    area.extend(hex("0000 0010 0018 000b 0003 0010 0020"));
    area.extend([x; 32]);
    area.extend(hex("0020"));
    area.extend([x.wrapping_add(1); 32]);
    let mut v = tpm2b_len(area.len());
    v.extend(area);
    v
}

fn name(x: u8) -> Vec<u8> {
    let mut v = hex("0022 000b");
    v.extend([x; 32]);
    v
}

fn tpm2b_len(len: usize) -> Vec<u8> {
    u16::try_from(len)
        .unwrap_or(u16::MAX)
        .to_be_bytes()
        .to_vec()
}

fn success(handles: &[u32], params: &[u8], sessions: bool) -> Vec<u8> {
    let mut body = Vec::new();
    for h in handles {
        body.extend(h.to_be_bytes());
    }
    if sessions {
        body.extend(
            u32::try_from(params.len())
                .unwrap_or(u32::MAX)
                .to_be_bytes(),
        );
        body.extend_from_slice(params);
        // One empty response authorization: nonce, attributes, hmac.
        body.extend([0, 0, 0, 0, 0]);
    } else {
        body.extend_from_slice(params);
    }
    let tag: u16 = if sessions { 0x8002 } else { 0x8001 };
    let mut v = tag.to_be_bytes().to_vec();
    v.extend(
        u32::try_from(body.len() + 10)
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    v.extend(0u32.to_be_bytes());
    v.extend(body);
    v
}

fn error(rc: u32) -> Vec<u8> {
    let mut v = hex("8001 0000000a");
    v.extend(rc.to_be_bytes());
    v
}

fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s
        .bytes()
        .filter(u8::is_ascii_hexdigit)
        .map(|c| match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => c - b'A' + 10,
        })
        .collect();
    digits
        .chunks(2)
        .map(|p| p.iter().fold(0, |a, d| a * 16 + d))
        .collect()
}
