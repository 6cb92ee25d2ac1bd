//! `vouch` against a real vouchd, started in-process on loopback with a temporary data
//! directory: the binary is driven as an operator would drive it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test helpers: a failure is a test failure"
)]

use std::path::PathBuf;
use std::process::{Command, Output};

use base64::Engine as _;
use serde_json::Value;
use tempfile::TempDir;
use vouchd::store::AttestationRecord;
use vouchd::testing::{BlockingVouchd, loopback_config};

/// A vouchd on loopback. Fields drop in order: the server before its runtime.
struct Vouchd {
    server: BlockingVouchd,
    dir: TempDir,
    url: String,
    fingerprint: String,
    admin: String,
}

fn vouchd() -> Vouchd {
    let dir = tempfile::tempdir().unwrap();
    let server = BlockingVouchd::start(loopback_config(&dir.path().join("data"))).unwrap();
    let running = &server.vouchd.running;
    Vouchd {
        url: format!("https://127.0.0.1:{}", running.api_addr.port()),
        fingerprint: running.tls_fingerprint.clone(),
        admin: running.bootstrap_token.clone().unwrap(),
        server,
        dir,
    }
}

const ENV: &[&str] = &[
    "VOUCH_SERVER",
    "VOUCH_TOKEN",
    "VOUCH_FINGERPRINT",
    "VOUCH_CA",
    "VOUCH_SIGNING_KEY",
    "VOUCH_SERVER_ID",
];

fn bare(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vouch"));
    for e in ENV {
        c.env_remove(e);
    }
    c.args(args);
    c
}

impl Vouchd {
    /// `vouch ARGS` as `token` (None: no token), trusting the pinned fingerprint.
    fn run_as(&self, token: Option<&str>, args: &[&str]) -> Output {
        let mut c = bare(args);
        c.env("VOUCH_SERVER", &self.url)
            .env("VOUCH_FINGERPRINT", &self.fingerprint);
        if let Some(t) = token {
            c.env("VOUCH_TOKEN", t);
        }
        c.output().unwrap()
    }

    fn admin(&self, args: &[&str]) -> Output {
        self.run_as(Some(&self.admin), args)
    }

    /// As admin; must succeed; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let o = self.admin(args);
        assert_eq!(o.status.code(), Some(0), "vouch {args:?}: {}", stderr(&o));
        stdout(&o)
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        serde_json::from_str(&self.ok(&a)).unwrap()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn file(&self, name: &str, contents: &[u8]) -> String {
        let p = self.path(name);
        std::fs::write(&p, contents).unwrap();
        p.to_str().unwrap().to_owned()
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn refused(o: &Output, reason: &str) {
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(o), stderr(o));
    assert!(stderr(o).contains(reason), "{}", stderr(o));
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn tpm_ca_pem() -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Test TPM Root CA");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    params.self_signed(&key).unwrap().pem()
}

fn names(list: &Value, key: &str) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|v| v[key].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn principals_tokens_and_trusted_admins() {
    let v = vouchd();
    assert!(v.ok(&["health"]).contains("ok"));
    assert!(v.ok(&["whoami"]).contains("admin"));
    v.ok(&["principal", "add", "alice", "--group", "TrustedAdmins"]);
    v.ok(&["principal", "add", "bob", "--kind", "service"]);
    let list = v.json(&["principal", "list"]);
    assert_eq!(names(&list, "name"), ["admin", "alice", "bob"]);
    assert!(
        v.ok(&["principal", "show", "alice"])
            .contains("TrustedAdmins")
    );

    // A token is printed alone on stdout, once.
    let bob = v.ok(&["token", "create", "bob", "--description", "ci"]);
    let bob = bob.trim();
    assert!(bob.starts_with("vouch_"), "{bob}");
    assert!(stdout(&v.run_as(Some(bob), &["whoami"])).contains("bob"));

    // Not in TrustedAdmins: refused, exit 1, the server's reason printed.
    let o = v.run_as(Some(bob), &["cluster", "list"]);
    refused(&o, "principal 'bob' is not a member of TrustedAdmins");
    assert!(
        !stderr(&o).contains(bob) && !stdout(&o).contains(bob),
        "the token is never printed"
    );
    let o = v.run_as(Some(bob), &["cluster", "add", "lab", "--json"]);
    assert_eq!(o.status.code(), Some(1));
    let body: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(body["error"], "forbidden");

    // Joining the group grants, leaving revokes.
    v.ok(&["principal", "add-group", "bob", "TrustedAdmins"]);
    assert_eq!(
        v.run_as(Some(bob), &["cluster", "list"]).status.code(),
        Some(0)
    );
    v.ok(&["principal", "remove-group", "bob", "TrustedAdmins"]);
    refused(&v.run_as(Some(bob), &["cluster", "list"]), "not a member");

    // Revoking by id alone finds the owner.
    let tokens = v.json(&["token", "list", "bob"]);
    let id = tokens[0]["id"].as_str().unwrap().to_owned();
    assert!(v.ok(&["token", "revoke", &id]).contains("revoked"));
    refused(
        &v.run_as(Some(bob), &["whoami"]),
        "the bearer token is unknown or was revoked",
    );

    // The last admin cannot be removed... but alice exists, so admin can go; bob is removed.
    v.ok(&["principal", "remove", "bob"]);
    refused(&v.admin(&["principal", "show", "bob"]), "not found");

    // No token at all.
    let o = v.run_as(None, &["whoami"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("VOUCH_TOKEN"), "{}", stderr(&o));
    // A wrong token: refused by the server.
    refused(
        &v.run_as(Some("vouch_nope"), &["whoami"]),
        "unknown or was revoked",
    );

    // Following: new events arrive as JSON lines.
    let last = v.json(&["events", "--limit", "1000"]);
    let last_id = last.as_array().unwrap().last().unwrap()["id"]
        .as_i64()
        .unwrap();
    let mut follow = bare(&[
        "events",
        "--follow",
        "--json",
        "--after",
        &last_id.to_string(),
    ])
    .env("VOUCH_SERVER", &v.url)
    .env("VOUCH_FINGERPRINT", &v.fingerprint)
    .env("VOUCH_TOKEN", &v.admin)
    .stdout(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    let out = follow.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(out).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    v.ok(&["principal", "add", "carol"]);
    let line = rx.recv_timeout(std::time::Duration::from_secs(15));
    let _ = follow.kill();
    let _ = follow.wait();
    let event: Value = serde_json::from_str(&line.unwrap()).unwrap();
    assert_eq!(event["kind"], "principal.created");
    assert_eq!(event["subject"], "carol");

    let events = v.json(&["events", "--limit", "1000"]);
    let kinds = names(&events, "kind");
    assert!(kinds.contains(&"token.deleted".to_owned()), "{kinds:?}");
    assert!(v.ok(&["events"]).contains("principal.created"));
}

#[test]
fn clusters_trust_software_hosts_and_status() {
    let v = vouchd();
    v.ok(&["cluster", "add", "lab", "--pcrs", "0,1"]);
    assert_eq!(names(&v.json(&["cluster", "list"]), "name"), ["lab"]);
    assert_eq!(
        v.json(&["cluster", "show", "lab"])["pcrs"],
        serde_json::json!([0, 1])
    );
    refused(
        &v.admin(&["cluster", "show", "nope"]),
        "cluster nope not found",
    );
    refused(&v.admin(&["cluster", "add", "lab"]), "409");

    // TPM CAs.
    let ca = v.file("ca.pem", tpm_ca_pem().as_bytes());
    assert!(
        v.ok(&["tpm-ca", "add", "--cluster", "lab", &ca])
            .contains("Test TPM Root CA")
    );
    let cas = v.json(&["tpm-ca", "list", "--cluster", "lab"]);
    let ca_id = cas[0]["id"].as_str().unwrap().to_owned();
    v.ok(&["tpm-ca", "remove", "--cluster", "lab", &ca_id]);
    assert_eq!(
        v.json(&["tpm-ca", "list", "--cluster", "lab"]),
        serde_json::json!([])
    );
    // Bad input is exit 2 with the server's reason.
    let junk = v.file("junk.pem", b"not a certificate");
    let o = v.admin(&["tpm-ca", "add", "--cluster", "lab", &junk]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("certificate"), "{}", stderr(&o));

    // Individual EKs (mode 3: a bare public key).
    let ek_key = rcgen::KeyPair::generate().unwrap();
    let ek = v.file("ek.pem", ek_key.public_key_pem().as_bytes());
    let added = v.json(&["ek", "add", "--cluster", "lab", "--bare-public-key", &ek]);
    let ek_hash = added["ek_hash"].as_str().unwrap().to_owned();
    assert_eq!(added["kind"], "bare_public_key");
    assert!(v.ok(&["ek", "list", "--cluster", "lab"]).contains(&ek_hash));
    v.ok(&["ek", "remove", "--cluster", "lab", &ek_hash]);
    let o = v.admin(&["ek", "add", "--cluster", "lab", &ek]);
    assert_eq!(o.status.code(), Some(2), "a kind is required");

    // Software versions: from `vouch image add` output, and uploaded directly.
    let image = v.file("image.bin", &[0x5a; 4096]);
    let sw = v.path("v1.json");
    let offline = v.ok(&[
        "image",
        "add",
        &image,
        "--version",
        "v1",
        "--agent-version",
        "1.0",
        "--config",
        "board=test",
        "-o",
        sw.to_str().unwrap(),
    ]);
    assert!(offline.is_empty());
    assert!(
        v.ok(&["software", "add", "--cluster", "lab", sw.to_str().unwrap()])
            .contains("software version v1 accepted in cluster lab")
    );
    v.ok(&[
        "image",
        "add",
        &image,
        "--version",
        "v2",
        "--agent-version",
        "1.0",
        "--config",
        "board=test",
        "--cluster",
        "lab",
    ]);
    let versions = v.json(&["software", "list", "--cluster", "lab"]);
    assert_eq!(names(&versions, "name"), ["v1", "v2"]);
    let from_file: Value = serde_json::from_slice(&std::fs::read(&sw).unwrap()).unwrap();
    assert_eq!(versions[0]["reference"], from_file);
    v.ok(&["software", "remove", "--cluster", "lab", "v2"]);
    // A Linux host's, from a reference host's event log.
    let log = format!(
        "{}/../../testdata/eventlogs/tpm2-tools/event-gce-ubuntu-2104-log.bin",
        env!("CARGO_MANIFEST_DIR")
    );
    assert!(
        v.ok(&[
            "software",
            "from-eventlog",
            &log,
            "--version",
            "ubuntu",
            "--pcrs",
            "0,1,7",
            "--bank",
            "sha256",
            "--cluster",
            "lab",
        ])
        .contains("software version ubuntu accepted in cluster lab")
    );
    let versions = v.json(&["software", "list", "--cluster", "lab"]);
    let ubuntu = versions
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "ubuntu")
        .unwrap();
    assert_eq!(
        ubuntu["reference"]["pcrs"]["sha256"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["0", "1", "7"]
    );
    v.ok(&["software", "remove", "--cluster", "lab", "ubuntu"]);

    // Hosts need a registered management server's signature.
    let key = v.path("ms.key");
    let cert = v.path("ms.pem");
    v.ok(&[
        "management-server",
        "keygen",
        "ms-1",
        "--key",
        key.to_str().unwrap(),
        "--cert",
        cert.to_str().unwrap(),
    ]);
    v.ok(&["management-server", "add", "ms-1", cert.to_str().unwrap()]);
    assert_eq!(
        names(&v.json(&["management-server", "list"]), "id"),
        ["ms-1"]
    );
    let h = "ab".repeat(32);
    let o = v.admin(&[
        "host",
        "add",
        "board-1",
        "--cluster",
        "lab",
        "--ek-hash",
        &h,
    ]);
    refused(&o, "403 forbidden: host permission denied");
    assert!(stderr(&o).contains("--signing-key"), "{}", stderr(&o));
    let signed = [
        "--signing-key",
        key.to_str().unwrap(),
        "--server-id",
        "ms-1",
    ];
    let mut add = vec![
        "host",
        "add",
        "board-1",
        "--cluster",
        "lab",
        "--ek-hash",
        &h,
    ];
    add.extend_from_slice(&signed);
    assert!(v.ok(&add).contains("host board-1 added to lab"));
    // A signature by an unregistered id is refused too.
    let o = v.admin(&[
        "host",
        "add",
        "board-2",
        "--cluster",
        "lab",
        "--ek-hash",
        &"cd".repeat(32),
        "--signing-key",
        key.to_str().unwrap(),
        "--server-id",
        "ms-9",
    ]);
    refused(&o, "management server 'ms-9' is not registered");

    // From an EK certificate: the same EK hash as its public key's.
    let ek_cert = rcgen::CertificateParams::new(vec!["ek.example".to_owned()])
        .unwrap()
        .self_signed(&ek_key)
        .unwrap();
    let ek_cert = v.file("ek-cert.pem", ek_cert.pem().as_bytes());
    let mut add2 = vec![
        "host",
        "add",
        "board-2",
        "--cluster",
        "lab",
        "--ek-certificate",
        &ek_cert,
        "--json",
    ];
    add2.extend_from_slice(&signed);
    let board2: Value = serde_json::from_str(&v.ok(&add2)).unwrap();
    assert_eq!(board2["ek_hash"], ek_hash.as_str());
    // Without a name: one made from the EK hash.
    let third = "ef".repeat(32);
    let mut add3 = vec![
        "host",
        "add",
        "--cluster",
        "lab",
        "--ek-hash",
        &third,
        "--json",
    ];
    add3.extend_from_slice(&signed);
    let board3: Value = serde_json::from_str(&v.ok(&add3)).unwrap();
    assert_eq!(board3["name"], "ek-efefefefefefefef");
    let mut remove3 = vec!["host", "remove", "ek-efefefefefefefef", "--cluster", "lab"];
    remove3.extend_from_slice(&signed);
    v.ok(&remove3);
    let hosts = v.json(&["host", "list", "--cluster", "lab"]);
    assert_eq!(names(&hosts, "name"), ["board-1", "board-2"]);
    let mut remove2 = vec!["host", "remove", &ek_hash, "--cluster", "lab"];
    remove2.extend_from_slice(&signed);
    v.ok(&remove2);
    let hosts = v.json(&["host", "list", "--cluster", "lab"]);
    assert_eq!(names(&hosts, "name"), ["board-1"]);
    assert!(
        v.ok(&["host", "list", "--cluster", "lab"])
            .contains("board-1")
    );

    // Status: the table, one host by name or hash, and JSON.
    let table = v.ok(&["status"]);
    assert!(table.starts_with("HOST"), "{table}");
    assert!(
        table.contains("board-1") && table.contains("unknown"),
        "{table}"
    );
    assert!(table.contains("none yet"), "{table}");
    let one = v.ok(&["status", "board-1"]);
    assert!(one.starts_with("board-1  unknown"), "{one}");
    assert!(one.contains(&format!("EK hash      {h}")), "{one}");
    assert!(one.contains("valid until  -"), "{one}");
    let j = v.json(&["status", &h]);
    assert_eq!(j["state"], "unknown");
    assert_eq!(j["added_by"], "ms-1");
    refused(&v.admin(&["status", "nobody"]), "no host named nobody");
    refused(
        &v.admin(&["host", "token", "board-1"]),
        "no current attestation token",
    );

    // An attestation result, as the agent link records it: the status reads at a glance.
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap();
    let record = |attested: bool, reason: Option<&str>| AttestationRecord {
        ek_hash: h.clone(),
        cluster: "lab".into(),
        at: now - 60,
        attested,
        software_version: attested.then(|| "v1".to_owned()),
        reason: reason.map(str::to_owned),
        pcr_digest: attested.then(|| "cd".repeat(32)),
        nonce: attested.then(|| "ab".repeat(16)),
        valid_until: attested.then_some(now + 240),
        // The database keeps a token's SHA-256 only.
        token: attested.then(|| "ef".repeat(32)),
        presented: None,
        config_generation: None,
    };
    v.server
        .vouchd
        .running
        .state
        .store
        .record_attestation(&record(true, None))
        .unwrap();
    let one = v.ok(&["status", "board-1"]);
    assert!(one.starts_with("board-1  ATTESTED"), "{one}");
    // The record is 60 s old when made; a slow machine may take a few seconds more.
    assert!(
        (60..=70).any(|s| one.contains(&format!("({s}s ago)"))),
        "{one}"
    );
    assert!(
        one.contains("valid until") && (one.contains("(in 4m)") || one.contains("(in 3m)")),
        "{one}"
    );
    assert!(one.contains("last result  attested: v1"), "{one}");
    // The token is issued for the current result, signed by this vouchd.
    let token = v.ok(&["host", "token", "board-1"]);
    let claims = v
        .server
        .vouchd
        .running
        .state
        .signer
        .verify(token.trim(), now)
        .unwrap();
    assert_eq!(claims.sub, h);
    assert_eq!(claims.attestation, "ab".repeat(16));
    assert_eq!(claims.software_version, "v1");
    assert_eq!(claims.exp, now - 60 + 300);
    v.server
        .vouchd
        .running
        .state
        .store
        .record_attestation(&record(
            false,
            Some("PCR 0 differs from every accepted version"),
        ))
        .unwrap();
    let table = v.ok(&["status"]);
    assert!(table.contains("NOT ATTESTED"), "{table}");
    assert!(table.contains("refused: PCR 0 differs"), "{table}");
    assert_eq!(
        v.json(&["status", "board-1"])["recent"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // Removal is signed too.
    refused(
        &v.admin(&["host", "remove", "board-1", "--cluster", "lab"]),
        "host permission denied",
    );
    let mut remove = vec!["host", "remove", "board-1", "--cluster", "lab"];
    remove.extend_from_slice(&signed);
    v.ok(&remove);
    assert_eq!(
        v.json(&["host", "list", "--cluster", "lab"]),
        serde_json::json!([])
    );
    assert!(v.ok(&["status"]).contains("no hosts"));

    let kinds = names(&v.json(&["events", "--limit", "1000"]), "kind");
    for k in [
        "cluster.created",
        "host.added",
        "host.removed",
        "cluster.software_version_set",
    ] {
        assert!(kinds.contains(&k.to_owned()), "{k} in {kinds:?}");
    }
    v.ok(&["management-server", "remove", "ms-1"]);
    v.ok(&["cluster", "remove", "lab"]);
    assert_eq!(v.json(&["cluster", "list"]), serde_json::json!([]));
}

#[test]
fn editing_trust_safely() {
    let v = vouchd();
    // The default PCRs are those `vouch image add` covers: its version is accepted as is.
    v.ok(&["cluster", "add", "lab"]);
    assert_eq!(
        v.json(&["cluster", "show", "lab"])["pcrs"],
        serde_json::json!([0, 1])
    );
    let image = v.file("image.bin", &[0x3c; 2048]);
    let add_image = |extra: &[&str]| {
        let mut args = vec![
            "image",
            "add",
            image.as_str(),
            "--version",
            "v1",
            "--agent-version",
            "1.0",
            "--config",
            "board=test",
            "--cluster",
            "lab",
        ];
        args.extend_from_slice(extra);
        v.admin(&args)
    };
    let o = add_image(&[]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Again: refused, unless replaced.
    refused(&add_image(&[]), "--replace");
    let o = add_image(&["--replace"]);
    assert!(o.status.success(), "{}", stderr(&o));

    // cluster set: checked, and a version that cannot match the new PCRs is refused.
    let o = v.admin(&["cluster", "set", "lab"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        v.ok(&["cluster", "set", "lab", "--pcrs", "0,1,7"])
            .contains("now compares PCRs")
    );
    assert_eq!(
        v.json(&["cluster", "show", "lab"])["pcrs"],
        serde_json::json!([0, 1, 7])
    );
    let o = add_image(&["--replace"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("vouch cluster set lab"),
        "{}",
        stderr(&o)
    );
    let o = v.admin(&["cluster", "set", "lab", "--bank", "md5"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));

    // The first listed EK switches the cluster to mode 2: only with --yes.
    let ek_key = rcgen::KeyPair::generate().unwrap();
    let ek = v.file("ek.pem", ek_key.public_key_pem().as_bytes());
    let o = v.admin(&["ek", "add", "--cluster", "lab", "--public-key", &ek]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("mode 2"), "{}", stderr(&o));
    assert_eq!(
        v.json(&["ek", "list", "--cluster", "lab"]),
        serde_json::json!([])
    );
    v.ok(&[
        "ek",
        "add",
        "--cluster",
        "lab",
        "--public-key",
        &ek,
        "--yes",
    ]);
    // A second one needs no confirmation.
    let other = rcgen::KeyPair::generate().unwrap();
    let other = v.file("ek2.pem", other.public_key_pem().as_bytes());
    v.ok(&["ek", "add", "--cluster", "lab", "--public-key", &other]);

    // Disable and enable.
    assert!(v.ok(&["cluster", "disable", "lab"]).contains("disabled"));
    assert!(v.ok(&["cluster", "list"]).contains("disabled"));
    assert!(v.json(&["cluster", "show", "lab"])["disabled_at"].is_i64());
    v.ok(&["cluster", "enable", "lab"]);
    assert!(v.ok(&["cluster", "show", "lab"]).contains("enabled"));
    refused(&v.admin(&["cluster", "disable", "nope"]), "not found");
}

#[test]
fn a_clusters_trust_is_exported_and_imported_all_or_nothing() {
    let v = vouchd();
    v.ok(&["cluster", "add", "lab"]);
    let ca = v.file("ca.pem", tpm_ca_pem().as_bytes());
    v.ok(&["tpm-ca", "add", "--cluster", "lab", &ca]);
    let listed = rcgen::KeyPair::generate().unwrap();
    let listed = v.file("ek.pem", listed.public_key_pem().as_bytes());
    v.ok(&[
        "ek",
        "add",
        "--cluster",
        "lab",
        "--public-key",
        &listed,
        "--yes",
    ]);
    let bare = rcgen::KeyPair::generate().unwrap();
    let bare = v.file("bare.pem", bare.public_key_pem().as_bytes());
    v.ok(&["ek", "add", "--cluster", "lab", "--bare-public-key", &bare]);
    let image = v.file("image.bin", &[0x42; 1024]);
    v.ok(&[
        "image",
        "add",
        &image,
        "--version",
        "v1",
        "--agent-version",
        "1.0",
        "--config",
        "board=test",
        "--cluster",
        "lab",
    ]);
    v.ok(&["cluster", "disable", "lab"]);

    let exported = v.ok(&["cluster", "export", "lab"]);
    let file = v.file("lab.json", exported.as_bytes());
    let lab: Value = serde_json::from_str(&exported).unwrap();
    assert_eq!(lab["format"], "vouch-cluster-v1");
    assert_eq!(lab["enabled"], false);
    assert_eq!(lab["eks"].as_array().unwrap().len(), 2);
    assert!(
        lab["tpm_ca_certs"][0]
            .as_str()
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );
    assert!(!exported.contains("hosts"), "no hosts in an export");

    // Imported under another name, it exports the same.
    assert!(
        v.ok(&["cluster", "import", &file, "--name", "prod"])
            .contains("cluster prod imported")
    );
    let mut prod: Value = serde_json::from_str(&v.ok(&["cluster", "export", "prod"])).unwrap();
    prod["name"] = lab["name"].clone();
    // The EKs are listed in the order they were added; the import adds them within one
    // second, the original adds may have spanned one: compare them as a set.
    let eks_sorted = |mut v: Value| {
        if let Some(eks) = v["eks"].as_array_mut() {
            eks.sort_by_key(|e| e.to_string());
        }
        v
    };
    assert_eq!(eks_sorted(prod), eks_sorted(lab.clone()));
    // Again: the cluster exists, nothing changes.
    refused(
        &v.admin(&["cluster", "import", &file, "--name", "prod"]),
        "409",
    );

    // A part refused (an unknown key provider): the import is undone.
    let mut broken = lab.clone();
    broken["key_provider"] = Value::String("nope".into());
    let broken = v.file("broken.json", broken.to_string().as_bytes());
    let o = v.admin(&["cluster", "import", &broken, "--name", "staging"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("undone"), "{}", stderr(&o));
    assert_eq!(
        names(&v.json(&["cluster", "list"]), "name"),
        ["lab", "prod"]
    );
    // Not an export.
    let junk = v.file("junk.json", b"{}");
    let o = v.admin(&["cluster", "import", &junk]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

#[test]
fn deep_health_tries_key_servers_and_lists_certificate_expiry() {
    let v = vouchd();
    let health = v.json(&["health", "--deep"]);
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["store"], "ok", "{health}");
    assert_eq!(health["certificates"][0]["what"], "tls", "{health}");
    assert!(health["certificates"][0]["days_left"].as_i64().unwrap() > 0);

    v.ok(&["cluster", "add", "lab"]);
    let ca = v.file("ca.pem", tpm_ca_pem().as_bytes());
    v.ok(&["tpm-ca", "add", "--cluster", "lab", &ca]);
    // A key server with two replicas on loopback: one listening, one not.
    let listening = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let up = listening.local_addr().unwrap().to_string();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["vouchd.example".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let cert = v.file("client.pem", cert.pem().as_bytes());
    let key = v.file("client.key", key.serialize_pem().as_bytes());
    let kms = |name: &str, endpoints: &[&str], check: bool| {
        let mut args = vec!["kms", "add", name];
        if !check {
            args.push("--no-check");
        }
        for e in endpoints {
            args.extend(["--endpoint", e]);
        }
        args.extend([
            "--client-cert",
            cert.as_str(),
            "--client-key",
            key.as_str(),
            "--kms-ca",
            ca.as_str(),
        ]);
        v.admin(&args)
    };
    let down = closed.to_string();
    // vouchd connects to a key server before adding it: refused with what to do.
    let o = kms("kms-1", &[&down], true);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--no-check"), "{}", stderr(&o));
    // The rest are added unchecked: one replica is only a TCP listener, the other is down.
    let kms = |name: &str, endpoints: &[&str]| {
        let o = kms(name, endpoints, false);
        assert!(o.status.success(), "{}", stderr(&o));
    };
    kms("kms-1", &[&down, &up]);
    let health = v.json(&["health", "--deep"]);
    assert_eq!(health["status"], "ok", "{health}");
    let endpoints = &health["key_servers"][0]["endpoints"];
    assert_eq!(endpoints[0]["reachable"], false, "{health}");
    assert!(endpoints[0]["error"].is_string(), "{health}");
    assert_eq!(endpoints[1]["reachable"], true, "{health}");
    let whats: Vec<&str> = health["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["what"].as_str())
        .collect();
    for what in ["tls", "tpm-ca:lab", "kms-client:kms-1", "kms-ca:kms-1"] {
        assert!(whats.contains(&what), "{what}: {health}");
    }

    // A key server answering on no endpoint: degraded, exit 1, and the reason shown.
    kms("kms-2", &[&down]);
    let o = v.admin(&["health", "--deep"]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("UNREACHABLE"), "{}", stdout(&o));
    let o = v.admin(&["kms", "status"]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o).contains("kms-2 answers on none"),
        "{}",
        stderr(&o)
    );
    assert!(stdout(&o).contains(&up), "{}", stdout(&o));
    drop(listening);
}

#[test]
fn tls_trust_is_required_and_checked() {
    let v = vouchd();
    // No way to trust the server: refused before connecting, saying what to pass.
    let o = bare(&["--server", &v.url, "health"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("--fingerprint") && stderr(&o).contains("--ca"),
        "{}",
        stderr(&o)
    );

    // A wrong fingerprint: the TLS handshake is refused.
    let wrong = "00".repeat(32);
    let o = bare(&["health", "--server", &v.url, "--fingerprint", &wrong])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains("does not match the pinned fingerprint"),
        "{err}"
    );
    assert!(
        err.contains(&v.fingerprint),
        "names the certificate it saw: {err}"
    );

    // Fingerprints are accepted with colons and in capitals.
    let colons: Vec<String> = v
        .fingerprint
        .as_bytes()
        .chunks(2)
        .map(|c| std::str::from_utf8(c).unwrap().to_uppercase())
        .collect();
    let o = bare(&[
        "health",
        "--server",
        &v.url,
        "--fingerprint",
        &colons.join(":"),
    ])
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    // A CA file: vouchd's self-signed certificate, for its name (localhost).
    let ca = v.file(
        "vouchd.pem",
        pem("CERTIFICATE", &v.server.vouchd.running.tls_certificate).as_bytes(),
    );
    let by_name = format!(
        "https://localhost:{}",
        v.server.vouchd.running.api_addr.port()
    );
    let o = bare(&["health", "--server", &by_name, "--ca", &ca])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // Some other CA: refused.
    let other = v.file("other.pem", tpm_ca_pem().as_bytes());
    let o = bare(&["health", "--server", &by_name, "--ca", &other])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("cannot reach vouchd"), "{}", stderr(&o));

    // Both at once is ambiguous.
    let o = bare(&[
        "health",
        "--server",
        &v.url,
        "--ca",
        &ca,
        "--fingerprint",
        &v.fingerprint,
    ])
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(2));

    // Nobody listening.
    let o = bare(&[
        "health",
        "--server",
        "https://127.0.0.1:9",
        "--fingerprint",
        &wrong,
    ])
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("check that vouchd is running"),
        "{}",
        stderr(&o)
    );

    // No server named.
    let o = bare(&["health", "--fingerprint", &wrong]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("VOUCH_SERVER"), "{}", stderr(&o));
    // HTTP is refused.
    let o = bare(&[
        "health",
        "--server",
        "http://127.0.0.1:9",
        "--fingerprint",
        &wrong,
    ])
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn offline_commands_keep_their_options() {
    // `ek verify --ca` is the TPM CA, not the server's; `--json` stays its own.
    let o = bare(&["ek", "verify", "--help"]).output().unwrap();
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).contains("--ca <FILE_OR_DIR>"), "{}", stdout(&o));
    let o = bare(&["image", "add", "/nonexistent", "--version", "v"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("cannot read firmware image"),
        "{}",
        stderr(&o)
    );
}

/// A management command whose standard output is full (or closed) exits 2 with the reason,
/// never panicking (exit 101).
#[test]
fn management_output_to_a_full_stdout_exits_2() {
    let v = vouchd();
    for args in [
        &["whoami"][..],
        &["cluster", "list"][..],
        &["cluster", "list", "--json"][..],
    ] {
        let full = std::fs::File::options()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let o = bare(args)
            .env("VOUCH_SERVER", &v.url)
            .env("VOUCH_FINGERPRINT", &v.fingerprint)
            .env("VOUCH_TOKEN", &v.admin)
            .stdout(full)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "vouch {args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("cannot write"), "{}", stderr(&o));
    }
}

#[test]
fn the_signing_key_is_shown_and_rotated() {
    let v = vouchd();
    let shown: Value = serde_json::from_str(&v.ok(&["signing-key", "show", "--json"])).unwrap();
    let old = shown["keys"][0]["kid"].as_str().unwrap().to_owned();
    assert_eq!(shown["keys"].as_array().unwrap().len(), 1, "{shown}");
    assert_eq!(shown["grace_secs"], 300, "token_lifetime_secs by default");

    let human = v.ok(&["signing-key", "rotate"]);
    assert!(
        human.contains(&old) && human.contains("retired at"),
        "{human}"
    );
    let shown: Value = serde_json::from_str(&v.ok(&["signing-key", "show", "--json"])).unwrap();
    assert_ne!(shown["keys"][0]["kid"], old.as_str());
    assert_eq!(shown["keys"][1]["kid"], old.as_str());
    // The JWKS carries both during the grace period.
    let jwks = v.server.vouchd.running.state.signer.jwks();
    assert_eq!(jwks.keys.len(), 2);

    // Again within the grace period: refused, exit 1, with the reason.
    refused(&v.admin(&["signing-key", "rotate"]), "grace period");
}

#[test]
fn kms_csr_writes_a_key_and_a_request_offline() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("client.key");
    let csr = dir.path().join("client.csr");
    let args = [
        "kms",
        "csr",
        "--common-name",
        "vouchd-lab",
        "--key-out",
        key.to_str().unwrap(),
        "--csr-out",
        csr.to_str().unwrap(),
        "--json",
    ];
    // No server, no token: it is offline.
    let o = bare(&args).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(out["key"], key.to_str().unwrap());
    assert_eq!(out["csr"], csr.to_str().unwrap());
    assert_eq!(out["key_type"], "ecdsa-p256");
    assert!(
        std::fs::read_to_string(&csr)
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE REQUEST-----")
    );
    // The key is not overwritten without --force (exit 2: input).
    let o = bare(&args).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--force"), "{}", stderr(&o));
}

/// Several key providers per cluster through the CLI (`cluster set-provider | add-provider |
/// remove-provider | providers`), and `provider status` with its key server down: exit 1,
/// each replica UNREACHABLE, and what to do. (The providers are stored directly: adding one
/// checks its key on a real key server, which tests/keys.rs of vouchd does with PyKMIP.)
#[test]
fn a_cluster_has_several_providers_and_their_status_is_shown() {
    let v = vouchd();
    v.ok(&["cluster", "add", "lab"]);
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let store = &v.server.vouchd.running.state.store;
    store
        .add_key_server(&vouchd::store::KeyServerRecord {
            name: "kms-1".into(),
            endpoints: vec![closed.clone()],
            client_certificate: String::new(),
            client_key: String::new(),
            ca_certificates: String::new(),
            created_at: 1,
        })
        .unwrap();
    for name in ["p1", "p2"] {
        store
            .add_key_provider(&vouchd::store::KeyProviderRecord {
                name: name.into(),
                key_server: "kms-1".into(),
                primary_key_id: "1".into(),
                primary_key_version: 1,
                retired: vec![],
                wrapping: vouchd::store::WrappingMode::Remote,
                refresh_seconds: 60,
                lifetime_seconds: 600,
                created_at: 1,
            })
            .unwrap();
    }
    v.ok(&["cluster", "set-provider", "lab", "p1"]);
    let out = v.ok(&["cluster", "add-provider", "lab", "p2"]);
    assert!(out.contains("p1, p2"), "{out}");
    let providers = v.json(&["cluster", "providers", "lab"]);
    assert_eq!(providers["provider"], "p1", "{providers}");
    assert_eq!(providers["providers"], serde_json::json!(["p1", "p2"]));
    let out = v.ok(&["cluster", "providers", "lab"]);
    assert!(out.contains("p1  (default)"), "{out}");
    // An export carries every provider; an import configures them again.
    let export = v.ok(&["cluster", "export", "lab"]);
    let exported: Value = serde_json::from_str(&export).unwrap();
    assert_eq!(exported["key_provider"], "p1", "{exported}");
    assert_eq!(exported["other_key_providers"], serde_json::json!(["p2"]));
    let file = v.file("lab.json", export.as_bytes());
    v.ok(&["cluster", "import", &file, "--name", "prod"]);
    let providers = v.json(&["cluster", "providers", "prod"]);
    assert_eq!(providers["provider"], "p1", "{providers}");
    assert_eq!(providers["providers"], serde_json::json!(["p1", "p2"]));
    // The default is not removed as a mere provider.
    let o = v.admin(&["cluster", "remove-provider", "lab", "p1"]);
    assert_ne!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(stderr(&o).contains("default"), "{}", stderr(&o));
    v.ok(&["cluster", "remove-provider", "lab", "p2"]);
    let providers = v.json(&["cluster", "providers", "lab"]);
    assert_eq!(providers["providers"], serde_json::json!(["p1"]));

    let o = v.admin(&["provider", "status", "p1"]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains(&closed), "{}", stdout(&o));
    assert!(stdout(&o).contains("UNREACHABLE"), "{}", stdout(&o));
    assert!(stderr(&o).contains("vouch kms status"), "{}", stderr(&o));
    let o = v.admin(&["provider", "status", "--json"]);
    let all: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(all.as_array().unwrap().len(), 2, "{all}");
    assert_eq!(all[0]["endpoints"][0]["reachable"], false, "{all}");

    // cluster show: the cluster's configuration generation, and no host yet.
    let shown = v.json(&["cluster", "show", "lab"]);
    assert!(shown["config_generation"].is_i64(), "{shown}");
    assert_eq!(shown["applied"], serde_json::json!([]), "{shown}");
}

#[test]
fn tls_reload_serves_new_files_and_refuses_a_bad_pair() {
    let v = vouchd();
    let data = v.path("data");
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(data.join("api-cert.pem"), cert.pem()).unwrap();
    std::fs::write(data.join("api-key.pem"), key.serialize_pem()).unwrap();
    let served = v.json(&["tls", "reload"]);
    let fingerprint = served["fingerprint"].as_str().unwrap();
    assert_ne!(fingerprint, v.fingerprint);
    assert_eq!(fingerprint.len(), 64);

    // A key that is not the certificate's: refused (exit 1, why); the new certificate stays,
    // so the old pin no longer matches and the new one does.
    std::fs::write(
        data.join("api-key.pem"),
        rcgen::KeyPair::generate().unwrap().serialize_pem(),
    )
    .unwrap();
    let o = bare(&["tls", "reload"])
        .env("VOUCH_SERVER", &v.url)
        .env("VOUCH_FINGERPRINT", fingerprint)
        .env("VOUCH_TOKEN", &v.admin)
        .output()
        .unwrap();
    refused(&o, "not the private key");
    let o = bare(&["health"])
        .env("VOUCH_SERVER", &v.url)
        .env("VOUCH_FINGERPRINT", fingerprint)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}
