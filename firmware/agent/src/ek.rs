//! Which endorsement key identifies the TPM to the verifier.
//!
//! The TCG EK Credential Profile defines an RSA-2048 EK (template L-1, certificate at NV index
//! 0x01C00002) and an ECC NIST P-256 EK (template L-2, certificate at 0x01C0000A); a TPM may
//! carry either certificate or both. The verifier handles both (an ECC EK's credential is
//! sealed with an ECDH-derived seed), and the wire contract does not let it ask for one, so the
//! agent decides: the configured kind, or with [`EkChoice::Auto`] the one the TPM has a
//! certificate for — RSA when it has both (the EK most TPMs are enrolled by), ECC when it has
//! only that one, and RSA when it has none (trust mode 3 then names the EK's key itself).

use vouch_tpm::{CommandError, EkKind, ResponseCode, Tpm, Transport};

/// The EK an agent is configured to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EkChoice {
    /// The EK whose certificate is in the TPM's NV: RSA-2048 if that certificate is there
    /// (also when both are), else ECC P-256 if that one is, else RSA-2048.
    #[default]
    Auto,
    /// Always the RSA-2048 EK (template L-1).
    Rsa,
    /// Always the ECC NIST P-256 EK (template L-2).
    Ecc,
}

impl EkChoice {
    /// From its configuration name: `auto`, `rsa` or `ecc`.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "auto" => Some(Self::Auto),
            "rsa" => Some(Self::Rsa),
            "ecc" => Some(Self::Ecc),
            _ => None,
        }
    }
}

/// The EK the agent uses on `tpm` when configured with `choice` (see [`EkChoice::Auto`] for
/// the rule). Asks the TPM only for `Auto`: TPM2_NV_ReadPublic of the certificate indices.
///
/// # Errors
/// A TPM failure other than "no such index" while looking for the certificates.
pub fn choose<T: Transport, const N: usize>(
    tpm: &mut Tpm<T, N>,
    choice: EkChoice,
) -> Result<EkKind, CommandError<T::Error>> {
    match choice {
        EkChoice::Rsa => Ok(EkKind::Rsa2048),
        EkChoice::Ecc => Ok(EkKind::EccP256),
        EkChoice::Auto => {
            if has_certificate(tpm, EkKind::Rsa2048)? {
                Ok(EkKind::Rsa2048)
            } else if has_certificate(tpm, EkKind::EccP256)? {
                Ok(EkKind::EccP256)
            } else {
                Ok(EkKind::Rsa2048)
            }
        }
    }
}

/// Whether the TPM has a (non-empty) NV index at `kind`'s certificate index.
///
/// # Errors
/// A TPM failure other than "no such index".
pub fn has_certificate<T: Transport, const N: usize>(
    tpm: &mut Tpm<T, N>,
    kind: EkKind,
) -> Result<bool, CommandError<T::Error>> {
    match tpm.nv_read_public(kind.certificate_index()) {
        Ok(public) => Ok(public.data_size > 0),
        Err(CommandError::Tpm(rc)) if is_no_such_index(rc) => Ok(false),
        Err(e) => Err(e),
    }
}

/// TPM_RC_HANDLE on the command's first handle: the NV index is not defined.
pub(crate) fn is_no_such_index(rc: ResponseCode) -> bool {
    rc.is_format_one() && rc.base() == 0x08B
}

/// The EK's name in log lines and messages: "RSA" or "ECC".
#[must_use]
pub const fn name(kind: EkKind) -> &'static str {
    match kind {
        EkKind::Rsa2048 => "RSA",
        EkKind::EccP256 => "ECC",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choice_names_round_trip() {
        assert_eq!(EkChoice::from_name("auto"), Some(EkChoice::Auto));
        assert_eq!(EkChoice::from_name("rsa"), Some(EkChoice::Rsa));
        assert_eq!(EkChoice::from_name("ecc"), Some(EkChoice::Ecc));
        assert_eq!(EkChoice::from_name("ECC"), None);
        assert_eq!(EkChoice::default(), EkChoice::Auto);
    }

    #[test]
    fn only_handle_errors_mean_no_index() {
        assert!(is_no_such_index(ResponseCode(0x18B)));
        assert!(!is_no_such_index(ResponseCode(0x101)));
        assert!(!is_no_such_index(ResponseCode(0x98E)));
    }
}
