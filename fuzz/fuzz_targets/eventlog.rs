//! TCG event logs in both formats (SHA-1 and crypto-agile): parse, describe every event,
//! replay every bank, and check the replay against itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vouch_attest::eventlog;

fuzz_target!(|data: &[u8]| {
    let Ok(log) = eventlog::parse(data) else {
        return;
    };
    for event in &log.events {
        let _ = event.describe();
        let _ = event.startup_locality();
    }
    let _ = log.startup_locality();
    let replay = log.replay();
    let checked = log.check_against(&replay, &replay.pcrs);
    assert!(
        checked.is_ok(),
        "a replay disagrees with itself: {checked:?}"
    );
    for bank in log.banks() {
        let _ = log.replay_banks(Some(&[bank]));
    }
});
