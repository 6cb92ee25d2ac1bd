//! `vouch kms`, `vouch provider` and `vouch cluster set-provider` against a real vouchd
//! (in-process) and real PyKMIP servers (vouch-kmip's harness, shared by path).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test helpers: a failure is a test failure"
)]

#[path = "../../../verifier/kmip/tests/common/mod.rs"]
mod pykmip;

use std::process::{Command, Output};

use pykmip::PyKmip;
use serde_json::Value;
use vouchd::testing::{BlockingVouchd, loopback_config};

struct Vouchd {
    server: BlockingVouchd,
    dir: tempfile::TempDir,
    url: String,
}

fn vouchd() -> Vouchd {
    let dir = tempfile::tempdir().unwrap();
    let server = BlockingVouchd::start(loopback_config(&dir.path().join("data"))).unwrap();
    let running = &server.vouchd.running;
    Vouchd {
        url: format!("https://127.0.0.1:{}", running.api_addr.port()),
        server,
        dir,
    }
}

impl Vouchd {
    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_vouch"))
            .env_clear()
            .env("VOUCH_SERVER", &self.url)
            .env(
                "VOUCH_FINGERPRINT",
                &self.server.vouchd.running.tls_fingerprint,
            )
            .env(
                "VOUCH_TOKEN",
                self.server
                    .vouchd
                    .running
                    .bootstrap_token
                    .as_deref()
                    .unwrap(),
            )
            .args(args)
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert_eq!(
            o.status.code(),
            Some(0),
            "vouch {args:?}: {}",
            text(&o.stderr)
        );
        text(&o.stdout)
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        serde_json::from_str(&self.ok(&a)).unwrap()
    }

    fn file(&self, name: &str, contents: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, contents).unwrap();
        p.to_str().unwrap().to_owned()
    }

    fn add_kms(&self, name: &str, server: &PyKmip) {
        let endpoint = format!("127.0.0.1:{}", server.port);
        let (cert, key, ca) = (
            self.file(&format!("{name}.crt"), &server.pki.client_cert),
            self.file(&format!("{name}.key"), &server.pki.client_key),
            self.file(&format!("{name}-ca.crt"), &server.pki.ca),
        );
        let out = self.ok(&[
            "kms",
            "add",
            name,
            "--endpoint",
            &endpoint,
            "--client-cert",
            &cert,
            "--client-key",
            &key,
            "--kms-ca",
            &ca,
        ]);
        assert!(out.contains(&format!("key server {name} added")), "{out}");
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn key_servers_providers_and_cluster_provider() {
    let v = vouchd();
    let (kms1, kms2) = (PyKmip::start(), PyKmip::start());
    v.add_kms("kms-1", &kms1);
    v.add_kms("kms-2", &kms2);
    let listed = v.ok(&["kms", "list"]);
    assert!(
        listed.contains("kms-1") && listed.contains("kms-2"),
        "{listed}"
    );

    let key = |kms: &str| {
        let created = v.json(&["provider", "create-key", "--kms", kms, "--name", "primary"]);
        created["key_id"].as_str().unwrap().to_owned()
    };
    let (k1, k2, k3) = (key("kms-1"), key("kms-1"), key("kms-2"));
    for (name, kms, id, wrapping) in [
        ("provider-1", "kms-1", &k1, "local"),
        ("provider-2", "kms-1", &k2, "remote"),
        ("provider-3", "kms-2", &k3, "local"),
    ] {
        let out = v.ok(&[
            "provider",
            "add",
            name,
            "--kms",
            kms,
            "--key-id",
            id,
            "--wrapping",
            wrapping,
        ]);
        assert!(out.contains("checked active AES-256"), "{out}");
    }
    // A key that does not exist: refused (exit 1) with the reason.
    let o = v.run(&[
        "provider", "add", "bad", "--kms", "kms-1", "--key-id", "4242",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("not usable"),
        "{}",
        text(&o.stderr)
    );
    let list = v.json(&["provider", "list"]);
    assert_eq!(list.as_array().unwrap().len(), 3);
    let table = v.ok(&["provider", "list"]);
    assert!(
        table.contains("provider-2") && table.contains("remote"),
        "{table}"
    );

    v.ok(&["cluster", "add", "prod"]);
    let out = v.ok(&["cluster", "set-provider", "prod", "provider-1"]);
    assert!(out.contains("uses key provider provider-1"), "{out}");
    // In use: the provider and its key server stay.
    let o = v.run(&["provider", "remove", "provider-1"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("used by clusters"),
        "{}",
        text(&o.stderr)
    );
    let o = v.run(&["kms", "remove", "kms-2"]);
    assert_eq!(o.status.code(), Some(1));

    // Rotation: the version goes up.
    let k1b = key("kms-1");
    let rotated = v.json(&["provider", "rotate", "provider-1", "--key-id", &k1b]);
    assert_eq!(rotated["primary_key_version"], 2);
    assert_eq!(rotated["retired"][0]["id"], k1.as_str());

    v.ok(&["cluster", "clear-provider", "prod"]);
    v.ok(&["provider", "remove", "provider-1"]);
    v.ok(&["provider", "remove", "provider-3"]);
    v.ok(&["kms", "remove", "kms-2"]);
    assert!(!v.ok(&["kms", "list"]).contains("kms-2"));
}
