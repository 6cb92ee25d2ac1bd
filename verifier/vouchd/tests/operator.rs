//! The operator's lifecycle commands of the `vouchd` binary against a serving vouchd: a backup
//! taken while the API writes, restored into a new data directory that then serves the same
//! configuration and tokens; the refusals of a restore; recovering administrative access; and
//! a first start that cannot bind making no admin.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a test failure"
)]

mod common;

use std::path::Path;
use std::process::{Command, Output};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn vouchd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vouchd"))
        .args(args)
        .env_remove("VOUCHD_KEY_ENCRYPTION_KEY")
        .output()
        .unwrap()
}

async fn vouchd_async(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        vouchd(&args)
    })
    .await
    .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A configuration file naming `data_dir`, written beside it.
fn config_file(dir: &Path, name: &str, data_dir: &Path) -> String {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "api_listen = \"127.0.0.1:0\"\nagent_listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n",
            data_dir.display()
        ),
    )
    .unwrap();
    path.to_str().unwrap().to_owned()
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_serving_restores_into_a_new_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let h = common::harness(common::config(&data)).await;
    let admin = h.admin();
    let (s, _) = h
        .call(
            Method::POST,
            "/v1/clusters",
            Some(&admin),
            Some(json!({"name": "lab", "pcrs": [0, 1]})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let config = config_file(dir.path(), "vouchd.toml", &data);
    let out = dir.path().join("vouchd.backup");

    // Writes go on while the backup is taken: principals made one after another.
    let writer = {
        let (client, base, admin) = (h.client.clone(), h.base.clone(), admin.clone());
        tokio::spawn(async move {
            let mut made = 0u32;
            for i in 0..40u32 {
                let r = client
                    .post(format!("{base}/v1/principals"))
                    .bearer_auth(&admin)
                    .json(&json!({"name": format!("p{i}"), "kind": "service", "groups": []}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), StatusCode::CREATED);
                made += 1;
            }
            made
        })
    };
    let o = vouchd_async(vec![
        "backup".into(),
        "--config".into(),
        config.clone(),
        "--out".into(),
        out.to_str().unwrap().into(),
        "--json".into(),
    ])
    .await;
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(writer.await.unwrap(), 40);
    let summary: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["clusters"], 1, "{summary}");
    let files = summary["files"].to_string();
    for f in ["token-signing-key.p8", "api-cert.pem", "api-key.pem"] {
        assert!(files.contains(f), "{summary}");
    }
    assert_eq!(mode(&out), 0o600);
    // The signing key is sealed in the backup, not in clear.
    let signing_key = std::fs::read(data.join("token-signing-key.p8")).unwrap();
    let raw = std::fs::read(&out).unwrap();
    let hex_key = vouchd::hex(&signing_key);
    assert!(
        !String::from_utf8_lossy(&raw).contains(&hex_key),
        "the signing key is in clear"
    );

    // A second backup into the same file is refused.
    let again = vouchd(&[
        "backup",
        "--config",
        &config,
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!again.status.success());
    assert!(text(&again).contains("must not exist"), "{}", text(&again));

    // Restore: refused without the key-encryption key, with another one, and over a non-empty
    // data directory.
    let restored = dir.path().join("restored");
    let config2 = config_file(dir.path(), "restored.toml", &restored);
    let o = vouchd(&["restore", "--config", &config2, out.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(text(&o).contains("--key-encryption-key"), "{}", text(&o));
    assert!(!restored.exists() || std::fs::read_dir(&restored).unwrap().next().is_none());
    let other_kek = dir.path().join("other-kek");
    std::fs::write(&other_kek, format!("{}\n", "ab".repeat(32))).unwrap();
    let o = vouchd(&[
        "restore",
        "--config",
        &config2,
        "--key-encryption-key",
        other_kek.to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("sealed under key-encryption key"),
        "{}",
        text(&o)
    );
    let kek = data.join("key-encryption-key");
    let o = vouchd(&[
        "restore",
        "--config",
        &config,
        "--key-encryption-key",
        kek.to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(text(&o).contains("is not empty"), "{}", text(&o));

    let o = vouchd(&[
        "restore",
        "--config",
        &config2,
        "--key-encryption-key",
        kek.to_str().unwrap(),
        "--json",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let summary: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["clusters"], 1, "{summary}");
    assert_eq!(mode(&restored), 0o700);
    for f in [
        "vouchd.sqlite3",
        "key-encryption-key",
        "token-signing-key.p8",
        "api-key.pem",
    ] {
        assert_eq!(mode(&restored.join(f)), 0o600, "{f}");
    }
    assert_eq!(
        std::fs::read(restored.join("token-signing-key.p8")).unwrap(),
        signing_key
    );

    // The restored vouchd: no new bootstrap, the same certificate, signing key and tokens.
    let fingerprint = h.running.tls_fingerprint.clone();
    let jwks_before = h
        .call(Method::GET, "/.well-known/jwks.json", None, None)
        .await
        .1;
    drop(h);
    let r = common::harness(common::config(&restored)).await;
    assert!(r.running.bootstrap_token.is_none());
    assert_eq!(r.running.tls_fingerprint, fingerprint);
    let (s, clusters) = r
        .call(Method::GET, "/v1/clusters", Some(&admin), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(clusters[0]["name"], "lab", "{clusters}");
    assert_eq!(clusters[0]["pcrs"], json!([0, 1]), "{clusters}");
    let jwks_after = r
        .call(Method::GET, "/.well-known/jwks.json", None, None)
        .await
        .1;
    assert_eq!(jwks_before, jwks_after);
    // Every write the backup saw is whole: each principal it holds is complete with its kind.
    let (_, principals) = r
        .call(Method::GET, "/v1/principals", Some(&admin), None)
        .await;
    for p in principals.as_array().unwrap() {
        assert!(p["kind"].is_string(), "{p}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_bootstrap_recovers_administrative_access_while_serving() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let h = common::harness(common::config(&data)).await;
    let config = config_file(dir.path(), "vouchd.toml", &data);
    // The bootstrap token is lost.
    std::fs::remove_file(data.join("bootstrap-token")).unwrap();

    for principal in ["admin", "ops"] {
        let o = vouchd_async(vec![
            "admin".into(),
            "reset-bootstrap".into(),
            "--config".into(),
            config.clone(),
            "--principal".into(),
            principal.into(),
        ])
        .await;
        assert!(o.status.success(), "{}", text(&o));
        assert!(text(&o).contains("bootstrap-token"), "{}", text(&o));
        let file = data.join("bootstrap-token");
        assert_eq!(mode(&file), 0o600);
        let token = std::fs::read_to_string(&file).unwrap().trim().to_owned();
        assert!(
            !text(&o).contains(&token),
            "the token must not reach stdout"
        );
        let (s, me) = h.call(Method::GET, "/v1/whoami", Some(&token), None).await;
        assert_eq!(s, StatusCode::OK, "{me}");
        assert_eq!(me["name"], principal, "{me}");
        assert!(me["groups"].to_string().contains("TrustedAdmins"), "{me}");
        // Trust configuration is open to it.
        let (s, _) = h
            .call(
                Method::POST,
                "/v1/clusters",
                Some(&token),
                Some(json!({"name": format!("c-{principal}")})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED);
    }
    let (_, events) = h
        .call(Method::GET, "/v1/events", Some(&h.admin()), None)
        .await;
    let resets: Vec<&Value> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "principal.bootstrap_reset")
        .collect();
    assert_eq!(resets.len(), 2, "{events}");
    assert_eq!(resets[1]["subject"], "ops");
    assert_eq!(resets[1]["detail"]["principal_created"], true);

    // A bad principal name, and a data directory with no database, are refused.
    let o = vouchd(&[
        "admin",
        "reset-bootstrap",
        "--config",
        &config,
        "--principal",
        "a b",
    ]);
    assert!(!o.status.success());
    let empty = config_file(dir.path(), "empty.toml", &dir.path().join("none"));
    let o = vouchd(&["admin", "reset-bootstrap", "--config", &empty]);
    assert!(!o.status.success());
    assert!(text(&o).contains("does not exist"), "{}", text(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_start_that_cannot_bind_makes_no_admin() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut config = common::config(&data);
    config.agent_listen = taken.local_addr().unwrap();
    let failed = vouchd::testing::TestVouchd::start(config).await;
    assert!(failed.is_err());
    assert!(!data.join("bootstrap-token").exists());
    drop(taken);
    // The next start that serves makes the admin and shows its token.
    let h = common::harness(common::config(&data)).await;
    let token = h
        .running
        .bootstrap_token
        .clone()
        .expect("a bootstrap token");
    assert_eq!(
        std::fs::read_to_string(data.join("bootstrap-token"))
            .unwrap()
            .trim(),
        token
    );
}

fn version(name: &str, pcrs: &[u32]) -> Value {
    let values: serde_json::Map<String, Value> = pcrs
        .iter()
        .map(|p| (p.to_string(), Value::String("11".repeat(32))))
        .collect();
    json!({"name": name, "pcrs": {"sha256": values}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_a_cluster_safely() {
    let dir = tempfile::tempdir().unwrap();
    let h = common::harness(common::config(dir.path())).await;
    let a = h.admin();
    let a = Some(a.as_str());
    // The default PCRs are those `vouch image add` covers.
    let (s, c) = h
        .call(
            Method::POST,
            "/v1/clusters",
            a,
            Some(json!({"name": "lab"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(c["pcrs"], json!([0, 1]));
    assert_eq!(c["disabled_at"], Value::Null);

    // Software versions: one that covers the cluster's PCRs is accepted once; again only with
    // replace; one that cannot match is refused with what to do.
    let put = "/v1/clusters/lab/software-versions/fw-1";
    let (s, _) = h
        .call(Method::PUT, put, a, Some(version("fw-1", &[0, 1])))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, e) = h
        .call(Method::PUT, put, a, Some(version("fw-1", &[0, 1])))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    assert!(e["reason"].as_str().unwrap().contains("--replace"), "{e}");
    let (s, _) = h
        .call(
            Method::PUT,
            &format!("{put}?replace=true"),
            a,
            Some(version("fw-1", &[0, 1])),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, e) = h
        .call(
            Method::PUT,
            "/v1/clusters/lab/software-versions/fw-2",
            a,
            Some(version("fw-2", &[0])),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    let reason = e["reason"].as_str().unwrap();
    assert!(
        reason.contains("[1]") && reason.contains("vouch cluster set lab"),
        "{e}"
    );

    // PATCH: PCRs and bank, checked; what is left out stays.
    let (s, c) = h
        .call(
            Method::PATCH,
            "/v1/clusters/lab",
            a,
            Some(json!({"pcrs": [7, 0, 1, 7]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{c}");
    assert_eq!(c["pcrs"], json!([0, 1, 7]));
    assert_eq!(c["bank"], "sha256");
    for bad in [
        json!({"pcrs": [99]}),
        json!({"pcrs": []}),
        json!({"bank": "md5"}),
    ] {
        let (s, e) = h
            .call(Method::PATCH, "/v1/clusters/lab", a, Some(bad))
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    }
    let (s, _) = h
        .call(Method::PATCH, "/v1/clusters/none", a, Some(json!({})))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Disable and enable, each an event.
    let (s, c) = h
        .call(
            Method::PATCH,
            "/v1/clusters/lab",
            a,
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(c["disabled_at"].is_i64(), "{c}");
    let (_, c) = h.call(Method::GET, "/v1/clusters/lab", a, None).await;
    assert!(c["disabled_at"].is_i64(), "{c}");
    let (_, c) = h
        .call(
            Method::PATCH,
            "/v1/clusters/lab",
            a,
            Some(json!({"enabled": true})),
        )
        .await;
    assert_eq!(c["disabled_at"], Value::Null);
    let (_, events) = h.call(Method::GET, "/v1/events", a, None).await;
    let kinds: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .filter(|k| k.starts_with("cluster."))
        .collect();
    assert_eq!(
        kinds,
        [
            "cluster.created",
            "cluster.software_version_set",
            "cluster.software_version_set",
            "cluster.changed",
            "cluster.disabled",
            "cluster.enabled"
        ]
    );
}

/// Runs one of PostgreSQL's programs (`pg_dump`, `pg_restore`) against `url`, as the test
/// cluster's superuser over loopback.
fn pg_tool(program: &str, args: &[&str]) -> Output {
    let bin = vouchd::testing::postgres::bin_dir().unwrap();
    Command::new(bin.join(program)).args(args).output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_reset_bootstrap_works_and_backup_is_pg_dump() {
    use vouchd::testing::postgres::PgCluster;
    // The cluster's setup blocks (a client with a runtime of its own).
    let cluster = tokio::task::block_in_place(|| PgCluster::shared().unwrap());
    let url = tokio::task::block_in_place(|| cluster.create_database().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let kek = dir.path().join("key-encryption-key");
    std::fs::write(&kek, "5a".repeat(32)).unwrap();
    let mut config = common::config(&dir.path().join("replica-1"));
    config.store = Some(url.clone());
    config.key_encryption_key_file = Some(kek.clone());
    let h = common::harness(config).await;
    let (s, _) = h
        .call(
            Method::POST,
            "/v1/clusters",
            Some(&h.admin()),
            Some(json!({"name": "kept"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);

    // The operator, on another replica's host (its own data directory), recovers access: the
    // token is made in the shared database and works on the serving replica.
    let other = dir.path().join("replica-2");
    let config = dir.path().join("replica-2.toml");
    std::fs::write(
        &config,
        format!(
            "api_listen = \"127.0.0.1:0\"\nagent_listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\nstore = \"{url}\"\nkey_encryption_key_file = \"{}\"\n",
            other.display(),
            kek.display()
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap().to_owned();
    let o = vouchd_async(vec![
        "admin".into(),
        "reset-bootstrap".into(),
        "--config".into(),
        config.clone(),
        "--principal".into(),
        "ops".into(),
    ])
    .await;
    assert!(o.status.success(), "{}", text(&o));
    let file = other.join("bootstrap-token");
    assert_eq!(mode(&file), 0o600);
    let token = std::fs::read_to_string(&file).unwrap().trim().to_owned();
    assert!(
        !text(&o).contains(&token),
        "the token must not reach stdout"
    );
    // In force on the serving replica within the configuration bound (one second).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (s, me) = h.call(Method::GET, "/v1/whoami", Some(&token), None).await;
        if s == StatusCode::OK {
            assert_eq!(me["name"], "ops", "{me}");
            assert!(me["groups"].to_string().contains("TrustedAdmins"), "{me}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{s}: {me}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // vouchd's own backup and restore are the single node's: on PostgreSQL they refuse and
    // say what to run.
    let out = dir.path().join("vouchd.backup");
    let o = vouchd(&[
        "backup",
        "--config",
        &config,
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(text(&o).contains("pg_dump -Fc"), "{}", text(&o));
    assert!(!out.exists(), "no backup file is left behind");
    let o = vouchd(&["restore", "--config", &config, out.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(text(&o).contains("pg_restore"), "{}", text(&o));

    // What docs/deploy.md says instead: pg_dump while the replica serves, pg_restore into an
    // empty database, and a replica with the same key-encryption key serves it: the
    // configuration and the recovered token are there.
    let dump = dir.path().join("vouchd.dump");
    let o = pg_tool(
        "pg_dump",
        &["-Fc", "-d", &url, "-f", dump.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", text(&o));
    let restored_url = tokio::task::block_in_place(|| cluster.create_database().unwrap());
    let o = pg_tool("pg_restore", &["-d", &restored_url, dump.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let mut config = common::config(&dir.path().join("restored"));
    config.store = Some(restored_url);
    config.key_encryption_key_file = Some(kek);
    let restored = common::harness(config).await;
    assert!(
        restored.running.bootstrap_token.is_none(),
        "a restored database is not bootstrapped again"
    );
    let (s, me) = restored
        .call(Method::GET, "/v1/whoami", Some(&token), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{me}");
    let (s, c) = restored
        .call(Method::GET, "/v1/clusters/kept", Some(&token), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{c}");
}
