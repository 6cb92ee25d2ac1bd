//! Measures the web console's hosts page over 100,000 hosts (`cargo xtask bench` runs it; or
//! `cargo run --release -p vouchd --example console_hosts [HOSTS]`).
//!
//! Seeds a fresh database with HOSTS hosts (default 100,000) in one transaction over three
//! clusters, a third of them refused, starts an in-process vouchd on loopback, signs in to the
//! console and times `GET /ui/hosts` for the first page, a deep page, each filter and the
//! searches (a name prefix, one matching every host, an EK hash prefix): 20 requests each, one at a time, over one HTTPS connection. Prints the median and
//! the slowest of each. Traffic stays on loopback; every loop is bounded.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "a measuring command: a failure ends it with the reason"
)]

use std::time::{Duration, Instant};

use vouchd::store::sqlite::SqliteStore;
use vouchd::store::{Cluster, Host, HostState};
use vouchd::testing::{TestVouchd, loopback_config};

const ROUNDS: usize = 20;
const CLUSTERS: [&str; 3] = ["prod", "edge", "lab"];

fn hosts(n: usize, now: i64) -> Vec<Host> {
    (0..n)
        .map(|i| {
            let ek = vouchd::hex(&vouchd::sha256(&i.to_le_bytes()));
            let state = match i % 3 {
                0 => HostState::NotAttested,
                1 => HostState::Attested,
                _ => HostState::Unknown,
            };
            let attested = state == HostState::Attested;
            Host {
                ek_hash: ek,
                cluster: CLUSTERS[i % CLUSTERS.len()].into(),
                name: format!("esx-{i:06}"),
                added_by: "mgmt-1".into(),
                ak_public: None,
                state,
                attested_at: attested.then_some(now),
                valid_until: attested.then_some(now + 600 + i64::try_from(i % 7200).unwrap()),
                software_version: attested.then(|| format!("esxi-8.0u{}", i % 4)),
                created_at: now,
            }
        })
        .collect()
}

fn main() -> anyhow::Result<()> {
    let count: usize = match std::env::args().nth(1) {
        Some(n) => n
            .parse()
            .map_err(|_| anyhow::anyhow!("usage: console_hosts [HOSTS]"))?,
        None => 100_000,
    };
    let dir = tempfile::tempdir()?;
    let config = loopback_config(dir.path());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let vouchd = TestVouchd::start(config).await?;
        let token = vouchd.admin_token().unwrap().to_owned();
        let now = vouchd::now();
        let db = dir.path().join(vouchd::server::DATABASE_FILE);
        let started = Instant::now();
        let seeded = tokio::task::spawn_blocking(move || {
            let store = SqliteStore::open(&db)?;
            for name in CLUSTERS {
                vouchd::store::Store::create_cluster(
                    &store,
                    &Cluster {
                        name: name.into(),
                        pcrs: vec![0, 7],
                        bank: "sha256".into(),
                        created_at: now,
                        disabled_at: None,
                        config_generation: 0,
                    },
                )?;
            }
            store.add_hosts(&hosts(count, now))
        })
        .await?;
        seeded?;
        println!(
            "seeded {count} hosts in one transaction in {:.1} s",
            started.elapsed().as_secs_f64()
        );

        let client = reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_der(
                &vouchd.running.tls_certificate,
            )?)
            .resolve("localhost", vouchd.running.api_addr)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()?;
        let base = &vouchd.base;
        let page = client.get(format!("{base}/ui/sign-in")).send().await?;
        let pre = page
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| v.strip_prefix("__Host-vouch-sign-in="))
            .and_then(|v| v.split(';').next())
            .unwrap()
            .to_owned();
        let signed = client
            .post(format!("{base}/ui/sign-in"))
            .header("cookie", format!("__Host-vouch-sign-in={pre}"))
            .form(&[("token", token.as_str()), ("csrf", pre.as_str())])
            .send()
            .await?;
        let session = signed
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| v.strip_prefix("__Host-vouch-session="))
            .and_then(|v| v.split(';').next())
            .ok_or_else(|| anyhow::anyhow!("sign-in failed: {}", signed.status()))?
            .to_owned();
        let cookie = format!("__Host-vouch-session={session}");

        let deep = count / 50 / 2;
        let some_ek = vouchd::hex(&vouchd::sha256(&(count / 2).to_le_bytes()));
        let cases = [
            ("first page".to_owned(), "/ui/hosts".to_owned()),
            (format!("page {deep}"), format!("/ui/hosts?page={deep}")),
            (
                "state=not_attested".into(),
                "/ui/hosts?state=not_attested".into(),
            ),
            (
                "cluster=edge&state=attested".into(),
                "/ui/hosts?cluster=edge&state=attested".into(),
            ),
            (
                "version=esxi-8.0u2".into(),
                "/ui/hosts?version=esxi-8.0u2".into(),
            ),
            ("name search".into(), "/ui/hosts?q=esx-0421".into()),
            ("name search, every host".into(), "/ui/hosts?q=ESX".into()),
            (
                "EK hash search".into(),
                format!("/ui/hosts?q={}", &some_ek[..12]),
            ),
        ];
        println!("GET /ui/hosts over {count} hosts, {ROUNDS} requests each (median / slowest):");
        for (label, path) in cases {
            let mut times = Vec::with_capacity(ROUNDS);
            for _ in 0..ROUNDS {
                let t = Instant::now();
                let response = client
                    .get(format!("{base}{path}"))
                    .header("cookie", &cookie)
                    .send()
                    .await?;
                let status = response.status();
                let body = response.text().await?;
                times.push(t.elapsed());
                anyhow::ensure!(status.is_success(), "{path}: {status}");
                anyhow::ensure!(
                    body.contains("id=\"hosts-summary\""),
                    "{path}: not the hosts page"
                );
            }
            times.sort();
            println!(
                "  {label:<28} {:>7.1} ms / {:>7.1} ms",
                times[ROUNDS / 2].as_secs_f64() * 1000.0,
                times[ROUNDS - 1].as_secs_f64() * 1000.0
            );
        }
        Ok::<_, anyhow::Error>(())
    })
}
