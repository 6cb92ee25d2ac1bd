//! Feeds arbitrary bytes to every TPM response parser of vouch-tpm: none may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vouch_tpm::fuzz_all_parsers(data);
});
