//! PCR values per bank.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::alg::HashAlg;

/// Number of PCRs of a PC Client TPM.
pub const PCR_COUNT: u32 = 24;

/// PCR values per bank, each bank mapping a PCR index to its value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PcrValues {
    /// The banks.
    pub banks: BTreeMap<HashAlg, BTreeMap<u32, Vec<u8>>>,
}

impl PcrValues {
    /// The value of one PCR.
    pub fn get(&self, alg: HashAlg, pcr: u32) -> Option<&[u8]> {
        self.banks
            .get(&alg)
            .and_then(|b| b.get(&pcr))
            .map(Vec::as_slice)
    }

    /// Sets one PCR's value.
    pub fn insert(&mut self, alg: HashAlg, pcr: u32, value: Vec<u8>) {
        self.banks.entry(alg).or_default().insert(pcr, value);
    }

    /// Every (bank, index, value), banks in algorithm order, indices ascending.
    pub fn iter(&self) -> impl Iterator<Item = (HashAlg, u32, &[u8])> {
        self.banks
            .iter()
            .flat_map(|(alg, b)| b.iter().map(move |(i, v)| (*alg, *i, v.as_slice())))
    }
}

/// The value a PCR has after TPM2_Startup(CLEAR) and before any extend
/// (PC Client profile: 0 for most, all ones for the dynamic PCRs 17–22).
pub fn initial_value(alg: HashAlg, pcr: u32, locality: u8) -> Vec<u8> {
    let mut v = if (17..=22).contains(&pcr) {
        vec![0xff; alg.size()]
    } else {
        vec![0; alg.size()]
    };
    if pcr == 0
        && let Some(last) = v.last_mut()
    {
        *last = locality;
    }
    v
}
