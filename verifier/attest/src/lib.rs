//! Pure attestation decisions for Vouch: event-log parsing and replay, TPM
//! structure decoding, quote verification, EK certificate trust, the
//! verifier side of TPM2_MakeCredential and software-version policy.
//!
//! Invariant: this crate does no I/O and reads no clock or ambient state.
//! Time and randomness are passed in, so every decision is deterministic,
//! can be fuzzed, benchmarked and used offline by the `vouch` CLI.
//! Untrusted bytes are decoded only through the bounds-checked reader in
//! [`codec`]; verification results are proof types that only this crate
//! constructs.

pub mod alg;
pub mod codec;
pub mod credential;
pub mod ek;
pub mod eventlog;
pub mod evidence;
pub mod pcr;
pub mod policy;
pub mod quote;
pub mod tpm;
pub mod tpm2_tools;

pub use alg::HashAlg;
pub use codec::{DecodeError, DecodeReason};
pub use pcr::PcrValues;
