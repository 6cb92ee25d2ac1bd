//! Several vouchd on one PostgreSQL: three replicas (vouchd processes) on a private cluster,
//! three hosted agents on their own swtpm spread over them, each given every replica in its
//! own order. One replica is killed with SIGKILL while its agent is attesting; every agent
//! goes on attesting through the others, and nothing any replica acknowledged is lost.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a test failure"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hil_tests::swtpm::Swtpm;
use hil_tests::verifier::Verifier;
use serde_json::{Value, json};
use vouch_agent::measure::BootImage;
use vouchd::testing::postgres::PgCluster;

const REPLICAS: usize = 3;
const AGENTS: usize = 3;
/// The shortest re-attestation interval vouchd takes: the sweeper runs every 2.5 s.
const INTERVAL: u64 = 10;
const IMAGE: &[u8] = &[0x5a; 2500];

/// A hosted agent process with its TPM and its stderr in a file.
struct Agent {
    /// Kept running while the agent uses it.
    _swtpm: Swtpm,
    ek_hash: String,
    log: PathBuf,
    child: Option<Child>,
}

impl Agent {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The verdicts the agent reported: one per connection (`--reconnect-each-verdict`).
    fn verdicts(&self) -> usize {
        self.log().matches("attested (linux-host-1)").count()
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits for `done`, polling, for at most `limit`; panics with `what` and `detail()` then.
fn wait_for(
    what: &str,
    limit: Duration,
    mut done: impl FnMut() -> bool,
    detail: impl Fn() -> String,
) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < limit,
            "{what}: not after {limit:?}\n{}",
            detail()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn kek_file(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join("key-encryption-key");
    let key: [u8; 32] = std::array::from_fn(|i| u8::try_from(i).unwrap().wrapping_mul(37));
    std::fs::write(&path, hil_tests::tools::hex(&key)).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// `vouchd_expiry_sweeps_total{replica="ID"} N` of a replica's metrics: (ID, N).
fn sweeps_metric(verifier: &Verifier) -> Option<(String, i64)> {
    let text = verifier.get_text("/metrics").unwrap();
    text.lines().find_map(|line| {
        let rest = line.strip_prefix("vouchd_expiry_sweeps_total{replica=\"")?;
        let (id, count) = rest.split_once("\"} ")?;
        Some((id.to_owned(), count.trim().parse().ok()?))
    })
}

#[test]
fn three_replicas_on_postgres_survive_one_killed_mid_attestation() {
    let cluster = PgCluster::start().unwrap();
    let url = cluster.create_database().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kek = kek_file(dir.path());
    let mut replicas = Verifier::start_replicas(REPLICAS, INTERVAL, &url, &kek).unwrap();

    // One signing key for every replica.
    let jwks: Vec<Value> = replicas
        .iter()
        .map(|r| r.call("GET", "/.well-known/jwks.json", None).unwrap().1)
        .collect();
    assert!(jwks[0]["keys"][0]["kid"].is_string(), "{}", jwks[0]);
    assert!(jwks.iter().all(|j| *j == jwks[0]), "{jwks:?}");

    // Configured through replica 0; agents attest through all three.
    let mut swtpms: Vec<(Swtpm, String)> = (0..AGENTS)
        .map(|_| {
            let mut swtpm = Swtpm::start().unwrap();
            let ek = hil_tests::verifier::ek_certificate_pem(&swtpm).unwrap();
            swtpm.restart(true).unwrap();
            (swtpm, ek)
        })
        .collect();
    let cas: BTreeSet<String> = swtpms
        .iter()
        .flat_map(|(s, _)| hil_tests::verifier::ca_pems(s).unwrap())
        .collect();
    let cas: Vec<String> = cas.into_iter().collect();
    replicas[0].trust_cluster("lab", &cas, &[0, 1]).unwrap();
    let parts: [&[u8]; 1] = [IMAGE];
    let version = vouch::image::software_version(
        "linux-host-1",
        &BootImage {
            version: b"vouch-hosted-agent",
            image: &parts,
            base: 0,
            config: b"",
        },
    )
    .unwrap();
    replicas[0]
        .accept("lab", &serde_json::to_value(version).unwrap())
        .unwrap();
    let binary =
        hil_tests::verifier::workspace_binary("vouch-hosted-agent", "VOUCH_HOSTED_AGENT_BIN")
            .unwrap();
    let mut agents: Vec<Agent> = Vec::new();
    for (i, (swtpm, ek)) in swtpms.drain(..).enumerate() {
        // Hosts added through different replicas: the configuration is the database's.
        let ek_hash = replicas[i % REPLICAS]
            .add_host("lab", &format!("host-{i}"), &ek)
            .unwrap();
        let image = swtpm.dir().join("image.bin");
        std::fs::write(&image, IMAGE).unwrap();
        let log = swtpm.dir().join("agent.log");
        let mut command = Command::new(&binary);
        for k in 0..REPLICAS {
            command
                .arg("--verifier")
                .arg(replicas[(i + k) % REPLICAS].agent_addr().to_string());
        }
        let child = command
            .arg("--tpm")
            .arg(format!("unix:{}", swtpm.dir().join("data.sock").display()))
            .arg("--measure-image")
            .arg(&image)
            .arg("--reconnect-each-verdict")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        agents.push(Agent {
            _swtpm: swtpm,
            ek_hash,
            log,
            child: Some(child),
        });
    }

    // Everyone attested through their first replica.
    wait_for(
        "every agent attested",
        Duration::from_secs(60),
        || agents.iter().all(|a| a.verdicts() >= 1),
        || {
            agents
                .iter()
                .map(Agent::log)
                .collect::<Vec<_>>()
                .join("\n---\n")
        },
    );

    // A signed host operation replayed to another replica is refused there.
    let (first, replay) = replicas[1]
        .send_signed_then_replay(
            &replicas[2],
            "POST",
            "/v1/clusters/lab/hosts",
            &json!({"name": "never", "ek_hash": "ab".repeat(32)}),
        )
        .unwrap();
    assert_eq!(first, 201, "the first use of the signature is accepted");
    assert_eq!(replay, 403, "the replay is refused by another replica");

    // Kill replica 0 while agent 0 (whose first choice it is) is in a session with it.
    let r0 = replicas[0].agent_addr().to_string();
    wait_for(
        "agent 0 connected to replica 0",
        Duration::from_secs(30),
        || {
            agents[0]
                .log()
                .lines()
                .last()
                .is_some_and(|l| l.contains(&format!("connected to {r0}")))
        },
        || agents[0].log(),
    );
    replicas[0].kill().unwrap();
    let killed_at: Vec<usize> = agents.iter().map(Agent::verdicts).collect();

    // Every agent attests again, twice, through the replicas left.
    wait_for(
        "every agent attested twice after the kill",
        Duration::from_secs(60),
        || {
            agents
                .iter()
                .zip(&killed_at)
                .all(|(a, k)| a.verdicts() >= k + 2)
        },
        || {
            agents
                .iter()
                .map(Agent::log)
                .collect::<Vec<_>>()
                .join("\n---\n")
        },
    );
    for agent in &mut agents {
        agent.stop();
    }
    let after_kill = agents[0].log();
    let after_kill = &after_kill[after_kill.rfind(&format!("connected to {r0}")).unwrap()..];
    assert!(
        after_kill.contains(&format!("connected to {}", replicas[1].agent_addr())),
        "agent 0 moved to replica 1: {after_kill}"
    );

    let mut db = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    for agent in &agents {
        // Every verdict an agent received is recorded (a result recorded whose verdict the
        // kill cut off may add one more).
        let recorded: i64 = db
            .query_one(
                "SELECT count(*) FROM attestations WHERE ek_hash = $1 AND attested",
                &[&agent.ek_hash],
            )
            .unwrap()
            .get(0);
        let received = i64::try_from(agent.verdicts()).unwrap();
        assert!(
            recorded >= received,
            "{}: {received} verdicts received, {recorded} recorded",
            agent.ek_hash
        );
        let host = replicas[2].host(&agent.ek_hash).unwrap();
        assert_eq!(host["state"], "attested", "{host}");
    }

    // Every event once, the same from every replica left, in id order.
    let feeds: Vec<Vec<Value>> = replicas[1..]
        .iter()
        .map(|r| {
            let (status, body) = r
                .call("GET", "/v1/events?after=0&limit=1000", None)
                .unwrap();
            assert_eq!(status, 200, "{body}");
            body.as_array().unwrap().clone()
        })
        .collect();
    assert_eq!(feeds[0], feeds[1]);
    let ids: Vec<i64> = feeds[0].iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    let stored: i64 = db
        .query_one("SELECT count(*) FROM events", &[])
        .unwrap()
        .get(0);
    assert_eq!(i64::try_from(ids.len()).unwrap(), stored);
    let mut seen = BTreeSet::new();
    for e in &feeds[0] {
        let key = (
            e["at"].clone(),
            e["kind"].clone(),
            e["subject"].clone(),
            e["detail"].to_string(),
        );
        assert!(seen.insert(format!("{key:?}")), "event twice: {e}");
    }
    for agent in &agents {
        assert!(
            feeds[0].iter().any(|e| e["kind"] == "host.state_changed"
                && e["subject"] == agent.ek_hash.as_str()
                && e["detail"]["to"] == "attested"),
            "no event for {}",
            agent.ek_hash
        );
    }

    // The sweeper ran once per period: every claim belongs to one replica, and each replica
    // left swept exactly the periods it claimed.
    let claims: BTreeMap<String, i64> = db
        .query(
            "SELECT replica, count(*) AS n FROM sweeps GROUP BY replica",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get("replica"), r.get("n")))
        .collect();
    assert!(!claims.is_empty(), "no sweep ran");
    assert!(claims.len() <= REPLICAS, "{claims:?}");
    for r in &replicas[1..] {
        if let Some((id, swept)) = sweeps_metric(r) {
            assert_eq!(claims.get(&id).copied(), Some(swept), "{id}: {claims:?}");
        }
    }
    let periods: i64 = db
        .query_one("SELECT count(DISTINCT period) FROM sweeps", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        periods,
        claims.values().sum::<i64>(),
        "one sweep per period"
    );
    drop(agents);
    drop(replicas);
    drop(cluster);
}
