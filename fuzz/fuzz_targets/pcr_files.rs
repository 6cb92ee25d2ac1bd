//! tpm2-tools' PCR files (`vouch quote verify --pcrs`): the serialized format, and the values
//! format read against a selection. A serialized file that decodes must also decode in the
//! values format against its own selection once its digests are laid out that way.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vouch_attest::tpm::PcrSelection;
use vouch_attest::tpm2_tools::{parse_serialized_pcrs, parse_values_pcrs};

fuzz_target!(|data: &[u8]| {
    if let Ok((selection, values)) = parse_serialized_pcrs(data) {
        let laid_out: Vec<u8> = selection
            .iter()
            .filter_map(|(alg, pcr)| values.get(alg, pcr))
            .flatten()
            .copied()
            .collect();
        let again = parse_values_pcrs(&laid_out, &selection);
        assert!(again.is_ok(), "{selection}: {again:?}");
        let _ = parse_values_pcrs(data, &selection);
    }
    let _ = parse_values_pcrs(data, &PcrSelection::default());
});
