//! Differential: the agent's event-log writer (firmware) against the verifier's parser and
//! replay. The input chooses the banks and the events; every event the agent logs must come
//! back from `vouch_attest::eventlog::parse` unchanged, and the replay must equal the PCR
//! values extended here event by event.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use vouch_agent::eventlog::{EV_NO_ACTION, EventLog};
use vouch_agent::measure::{Digests, SHA1, SHA256, SHA384, SHA512, digest_size};
use vouch_attest::HashAlg;
use vouch_attest::eventlog::{self, LogFormat};
use vouch_attest::pcr::initial_value;

fuzz_target!(|data: &[u8]| {
    let Some((&mask, mut rest)) = data.split_first() else {
        return;
    };
    let banks: Vec<u16> = [SHA1, SHA256, SHA384, SHA512]
        .into_iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, alg)| alg)
        .collect();
    let banks = if banks.is_empty() {
        vec![SHA256]
    } else {
        banks
    };
    let sizes: Vec<(u16, u16)> = banks
        .iter()
        .map(|&alg| {
            (
                alg,
                digest_size(alg)
                    .and_then(|s| u16::try_from(s).ok())
                    .unwrap_or(0),
            )
        })
        .collect();
    let Ok(mut log) = EventLog::<8192>::new(&sizes) else {
        return;
    };

    // Each event: PCR (one byte), event type (one byte, spread over the TCG ranges), data
    // length (one byte), data.
    let mut logged = Vec::new();
    while let [pcr, kind, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (event_data, tail) = tail.split_at(len);
        rest = tail;
        let pcr = u32::from(*pcr % 24);
        let event_type = match kind >> 6 {
            0 => u32::from(*kind),
            1 => 0x8000_0000 | u32::from(kind & 0x3F),
            2 => 0x8000_00E0 | u32::from(kind & 0x1F),
            _ => u32::from(*kind) << 8,
        };
        let digests = Digests::of(&banks, &[event_data]);
        if log.record(pcr, event_type, &digests, event_data).is_err() {
            break;
        }
        logged.push((pcr, event_type, digests, event_data));
    }

    let parsed = match eventlog::parse(log.as_bytes()) {
        Ok(parsed) => parsed,
        Err(e) => panic!("the verifier refuses the agent's log: {e}"),
    };
    assert_eq!(parsed.format, LogFormat::CryptoAgile);
    assert_eq!(
        parsed.events.len(),
        logged.len() + 1,
        "the Spec ID event and every record"
    );
    let mut expected: BTreeMap<(HashAlg, u32), Vec<u8>> = BTreeMap::new();
    for (event, (pcr, event_type, digests, event_data)) in parsed.events.iter().skip(1).zip(&logged)
    {
        assert_eq!((event.pcr, event.event_type), (*pcr, *event_type));
        assert_eq!(event.data, *event_data);
        let theirs: Vec<(u16, &[u8])> = event.digests.iter().map(|(a, d)| (a.id(), *d)).collect();
        let ours: Vec<(u16, &[u8])> = digests.iter().collect();
        assert_eq!(theirs, ours);
        if *event_type == EV_NO_ACTION {
            continue;
        }
        for (alg, digest) in &event.digests {
            let value = expected
                .entry((*alg, *pcr))
                .or_insert_with(|| initial_value(*alg, *pcr, parsed.startup_locality()));
            if let Some(next) = alg.hash(&[value.as_slice(), digest]) {
                *value = next;
            }
        }
    }
    let replay = parsed.replay();
    for ((alg, pcr), value) in &expected {
        assert_eq!(
            replay.pcrs.get(*alg, *pcr),
            Some(value.as_slice()),
            "{alg} PCR {pcr}"
        );
    }
});
