//! `cargo xtask keyload`'s machinery, briefly: PyKMIP, vouchd as its own process, a host
//! attested by the hosted agent on swtpm, and concurrent clients across a key refresh. No
//! timing is asserted (the figures come from the release run): every request answered, none
//! failed, for each kind of operation.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

use std::time::Duration;

use hil_tests::keyload::{Op, Options, run};

fn options(op: Op, remote: bool) -> Options {
    Options {
        op,
        concurrency: 8,
        duration: Duration::from_secs(2),
        remote,
        pin_vouchd: false,
        progress: false,
    }
}

#[test]
fn keyload_runs_every_operation_without_errors() {
    for (op, remote) in [
        (Op::Encrypt, false),
        (Op::Batch, false),
        (Op::Decrypt, true),
    ] {
        let report = run(&options(op, remote)).unwrap();
        let json = report.json();
        assert_eq!(report.errors, 0, "{json}");
        assert!(report.ops > 0, "{json}");
        assert!(
            report.requests > 0 && report.p99_ms >= report.p50_ms,
            "{json}"
        );
        if op == Op::Batch {
            assert_eq!(report.ops % 64, 0, "{json}");
        }
        for key in [
            "op",
            "concurrency",
            "ops_per_s",
            "p50_ms",
            "p99_ms",
            "max_ms",
            "errors",
        ] {
            assert!(json.get(key).is_some(), "{key} in {json}");
        }
    }
}
