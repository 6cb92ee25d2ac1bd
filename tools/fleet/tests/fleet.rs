//! A small fleet against a real vouchd process (the workspace's `vouchd` binary, built with the
//! workspace's tests): every host attests, by check-in and in persistent sessions, with no error;
//! and three replicas on a private PostgreSQL, one killed with SIGKILL, lose nothing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use vouch_fleet::run::{Mode, Options, Report, run};

/// The workspace's vouchd binary beside this test (cargo builds it with the workspace's tests),
/// or `VOUCHD_BIN`.
fn vouchd() -> PathBuf {
    if let Some(path) = std::env::var_os("VOUCHD_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().unwrap();
    exe.ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join("vouchd"))
        .find(|p| p.is_file())
        .expect("the vouchd binary is not built next to this test: run `cargo build -p vouchd` (workspace `cargo test` builds it) or set VOUCHD_BIN")
}

fn options(hosts: usize, mode: Mode, duration: u64, work: &std::path::Path) -> Options {
    Options {
        hosts,
        interval: Duration::from_secs(10),
        duration: Duration::from_secs(duration),
        mode,
        cold: false,
        external: None,
        store: None,
        replicas: 1,
        kill_one_at: None,
        vouchd: vouchd(),
        work_dir: work.to_owned(),
        rsa_cache: PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../target/fleet-test/rsa-keys"
        )),
    }
}

fn run_fleet(options: &Options) -> Report {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let progress = Arc::new(|line: String| eprintln!("fleet: {line}"));
    runtime.block_on(run(options, progress)).unwrap()
}

fn fleet(hosts: usize, mode: Mode, duration: u64) -> Report {
    let work = tempfile::tempdir().unwrap();
    run_fleet(&options(hosts, mode, duration, work.path()))
}

fn assert_all_attested(report: &Report, hosts: usize) {
    eprintln!("{}", serde_json::to_string(report).unwrap());
    assert!(report.errors.is_empty(), "errors: {:?}", report.errors);
    assert_eq!(report.attested, hosts, "{report:?}");
    assert!(report.attestations > 0, "{report:?}");
    assert!(report.max_ms >= report.p99_ms && report.p99_ms >= report.p50_ms);
    assert!(
        report.vouchd_rss_mib > 0.0 && report.db_mib > 0.0,
        "{report:?}"
    );
}

#[test]
fn a_fleet_of_200_checks_in_and_stays_attested() {
    let report = fleet(200, Mode::Checkin, 12);
    assert_all_attested(&report, 200);
    // The mix: one host in 20 has an RSA EK and one in 20 an RSA AK.
    assert_eq!(vouch_fleet::hosts::rsa_hosts(200, 100), 10);
}

#[test]
fn a_fleet_in_persistent_sessions_stays_attested() {
    let report = fleet(40, Mode::Persistent, 12);
    assert_all_attested(&report, 40);
}

#[test]
fn replicas_on_postgres_carry_the_fleet_through_a_sigkill() {
    let work = tempfile::tempdir().unwrap();
    let mut options = options(30, Mode::Checkin, 12, work.path());
    options.store = Some(vouch_fleet::launch::PRIVATE_POSTGRES.into());
    options.replicas = 3;
    options.kill_one_at = Some(Duration::from_secs(2));
    let report = run_fleet(&options);
    eprintln!("{}", serde_json::to_string(&report).unwrap());
    assert_eq!(report.replicas, 3);
    assert!(report.errors.is_empty(), "errors: {:?}", report.errors);
    assert_eq!(report.attested, 30, "{report:?}");
    // Every verdict an agent received is in the database.
    assert_eq!(report.lost, Some(0), "{report:?}");
    // A third of the hosts were the killed replica's: those that checked in since were
    // attested by another, and each failure with it was a reconnect, not an error.
    assert!((1..=10).contains(&report.failovers), "{report:?}");
    assert!(!report.reconnects.is_empty(), "{report:?}");
    assert!(report.db_mib > 0.0, "{report:?}");
}
