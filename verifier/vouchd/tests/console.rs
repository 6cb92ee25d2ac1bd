//! The web console at `/ui/`: sign-in and its refusals over plain HTTPS, and the pages in a
//! real headless Chromium driven by chromedriver over WebDriver on loopback (Debian's
//! `chromium` and `chromium-driver`, installed by `cargo xtask setup`). Screenshots of each
//! page go to `target/console-screenshots/`.
//!
//! The fleet is seeded through the API (the cluster and its accepted version) and the store
//! (hosts and their results: attestation itself is tested in tests/agent.rs and the
//! hil-tests).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test helpers: a failure is a test failure"
)]

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{Harness, config, harness};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use vouchd::store::{AttestationRecord, Host, HostState};

const CLUSTER: &str = "prod";
const VERSION: &str = "esxi-8.0u3";

fn ek(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

/// PCR 7 as the accepted version has it and as the refused host presented it.
fn expected_pcr7() -> String {
    "cc".repeat(32)
}
fn presented_pcr7() -> String {
    "bb".repeat(32)
}

fn add_host(h: &Harness, n: u8, name: &str) {
    h.running
        .state
        .store
        .add_host(&Host {
            ek_hash: ek(n),
            cluster: CLUSTER.into(),
            name: name.into(),
            added_by: "mgmt-1".into(),
            ak_public: None,
            state: HostState::Unknown,
            attested_at: None,
            valid_until: None,
            software_version: None,
            created_at: vouchd::now(),
        })
        .unwrap();
}

fn record(h: &Harness, n: u8, attested: bool) {
    let now = vouchd::now();
    let refused = !attested;
    h.running
        .state
        .store
        .record_attestation(&AttestationRecord {
            ek_hash: ek(n),
            cluster: CLUSTER.into(),
            at: now,
            attested,
            software_version: attested.then(|| VERSION.into()),
            reason: refused.then(|| {
                format!(
                    "the evidence matches no accepted software version: {VERSION}: PCR 7 (sha256) is {}, the version expects {}",
                    presented_pcr7(),
                    expected_pcr7()
                )
            }),
            pcr_digest: None,
            nonce: Some("11".repeat(16)),
            valid_until: attested.then_some(now + 600),
            token: None,
            presented: refused.then(|| {
                json!({"bank": "sha256", "pcrs": {"0": "aa".repeat(32), "7": presented_pcr7()}, "events": {}})
            }),
            config_generation: None,
        })
        .unwrap();
}

/// A cluster accepting one version (PCRs 0 and 7), an attested host, a refused one with a
/// PCR 7 mismatch, and one never attested.
async fn seed(h: &Harness) {
    let admin = h.admin();
    let (s, body) = h
        .call(
            Method::POST,
            "/v1/clusters",
            Some(&admin),
            Some(json!({"name": CLUSTER, "pcrs": [0, 7]})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let (s, body) = h
        .call(
            Method::PUT,
            &format!("/v1/clusters/{CLUSTER}/software-versions/{VERSION}"),
            Some(&admin),
            Some(json!({"pcrs": {"sha256": {"0": "aa".repeat(32), "7": expected_pcr7()}}})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    add_host(h, 1, "esx-01");
    add_host(h, 2, "esx-02");
    add_host(h, 3, "esx-03");
    record(h, 1, true);
    record(h, 2, false);
}

/// A seeded vouchd (its data directory with it) and a client of it.
async fn seeded() -> (tempfile::TempDir, Harness, reqwest::Client) {
    let dir = tempfile::tempdir().unwrap();
    let h = harness(config(dir.path())).await;
    seed(&h).await;
    let client = raw_client(&h);
    (dir, h, client)
}

/// A client that does not follow redirects and keeps no cookies: each test says what it sends.
fn raw_client(h: &Harness) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_der(&h.running.tls_certificate).unwrap())
        .resolve("localhost", h.running.api_addr)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The value of cookie `name` among a response's `Set-Cookie` headers, with the whole header.
fn set_cookie(response: &reqwest::Response, name: &str) -> Option<(String, String)> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| {
            let value = v
                .split(';')
                .next()
                .and_then(|p| p.split_once('='))
                .map(|(_, v)| v.to_owned())
                .unwrap_or_default();
            (value, v.to_owned())
        })
}

/// The `value` of the hidden `csrf` input of a page.
fn csrf_field(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a CSRF field") + 19;
    html[at..].split('"').next().unwrap().to_owned()
}

/// Signs in over plain HTTPS; returns the session cookie's value.
async fn sign_in(h: &Harness, client: &reqwest::Client, token: &str) -> reqwest::Response {
    let page = client
        .get(format!("{}/ui/sign-in", h.base))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let (pre, _) = set_cookie(&page, "__Host-vouch-sign-in").expect("a sign-in CSRF cookie");
    let csrf = csrf_field(&page.text().await.unwrap());
    assert_eq!(csrf, pre);
    client
        .post(format!("{}/ui/sign-in", h.base))
        .header("cookie", format!("__Host-vouch-sign-in={pre}"))
        .form(&[("token", token), ("csrf", &csrf)])
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_request_without_a_session_is_refused() {
    let (_dir, h, client) = seeded().await;
    for path in [
        "/ui/fleet",
        "/ui/hosts",
        &format!("/ui/hosts/{}", ek(2)),
        "/ui/clusters",
        "/ui/events",
    ] {
        for cookie in [None, Some("__Host-vouch-session=forged")] {
            let mut request = client.get(format!("{}{path}", h.base));
            if let Some(c) = cookie {
                request = request.header("cookie", c);
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), StatusCode::SEE_OTHER, "{path}");
            assert_eq!(response.headers()["location"], "/ui/sign-in");
            let body = response.text().await.unwrap();
            assert!(!body.contains("esx-0"), "{path} showed hosts: {body}");
        }
        // A bearer token is not a session: the console takes only its cookie.
        let response = client
            .get(format!("{}{path}", h.base))
            .bearer_auth(h.admin())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{path}");
    }
    // The live refreshes answer 401 rather than a redirect.
    let response = client
        .get(format!("{}/ui/fleet/live", h.base))
        .header("vouch-live", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    // Signing out needs a session too.
    let response = client
        .post(format!("{}/ui/sign-out", h.base))
        .form(&[("csrf", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn sign_in_gives_a_strict_cookie_and_pages_a_strict_policy() {
    let (_dir, h, client) = seeded().await;

    // A wrong token and a token of a principal outside TrustedAdmins get no session.
    let response = sign_in(&h, &client, "vouch_not-a-token").await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(set_cookie(&response, "__Host-vouch-session").is_none());
    let reader = h.principal("reader", &["Readers"]).await;
    let response = sign_in(&h, &client, &reader).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(set_cookie(&response, "__Host-vouch-session").is_none());

    let response = sign_in(&h, &client, &h.admin()).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let (session, header) =
        set_cookie(&response, "__Host-vouch-session").expect("a session cookie");
    for attribute in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(header.contains(attribute), "{header} lacks {attribute}");
    }
    assert!(!session.contains(&h.admin()), "the cookie is not the token");

    let cookie = format!("__Host-vouch-session={session}");
    let response = client
        .get(format!("{}/ui/hosts", h.base))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let csp = response.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("script-src 'self'") && csp.contains("style-src 'self'"));
    assert!(!csp.contains("unsafe-inline"));
    let page = response.text().await.unwrap();
    assert!(page.contains("esx-01") && page.contains("esx-02") && page.contains("esx-03"));
    assert!(page.contains("Not attested"), "state in words");
    // No inline script or style anywhere.
    assert!(!page.contains("<script>") && !page.contains("style="));

    // Revoking the token ends the session.
    let (s, tokens) = h
        .call(
            Method::GET,
            "/v1/principals/admin/tokens",
            Some(&h.admin()),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let other = h.principal("admin2", &["TrustedAdmins"]).await;
    let id = tokens[0]["id"].as_str().unwrap();
    let (s, _) = h
        .call(
            Method::DELETE,
            &format!("/v1/principals/admin/tokens/{id}"),
            Some(&other),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let response = client
        .get(format!("{}/ui/hosts", h.base))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn a_csrf_attempt_is_refused() {
    let (_dir, h, client) = seeded().await;
    let response = sign_in(&h, &client, &h.admin()).await;
    let (session, _) = set_cookie(&response, "__Host-vouch-session").unwrap();
    let cookie = format!("__Host-vouch-session={session}");
    let page = client
        .get(format!("{}/ui/fleet", h.base))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = csrf_field(&page);
    let still_signed_in = || async {
        client
            .get(format!("{}/ui/fleet", h.base))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap()
            .status()
            == StatusCode::OK
    };

    // Sign-out without the token, with a wrong one, and from another site: refused.
    for (form, origin) in [
        (vec![], None),
        (vec![("csrf", "wrong")], None),
        (vec![("csrf", csrf.as_str())], Some("https://evil.example")),
    ] {
        let mut request = client
            .post(format!("{}/ui/sign-out", h.base))
            .header("cookie", &cookie)
            .form(&form);
        if let Some(o) = origin {
            request = request.header("origin", o);
        }
        let response = request.send().await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::FORBIDDEN,
            "{form:?} {origin:?}"
        );
        assert!(still_signed_in().await);
    }
    // A sign-in form posted without its CSRF cookie (login CSRF): refused.
    let response = client
        .post(format!("{}/ui/sign-in", h.base))
        .form(&[("token", h.admin().as_str()), ("csrf", "forged")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(set_cookie(&response, "__Host-vouch-session").is_none());

    // With the session's token, sign-out works and ends the session.
    let response = client
        .post(format!("{}/ui/sign-out", h.base))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert!(!still_signed_in().await);
}

// ---- A real browser.

/// A minimal W3C WebDriver client over loopback HTTP.
struct WebDriver {
    http: reqwest::Client,
    /// `http://127.0.0.1:PORT`.
    http_base: String,
    session: String,
}

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl WebDriver {
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let url = format!("{}/session/{}{path}", self.http_base, self.session);
        let mut request = self.http.request(method, url);
        if let Some(b) = body {
            request = request.json(&b);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let value: Value = response.json().await.unwrap_or(Value::Null);
        (status, value["value"].clone())
    }

    async fn goto(&self, url: &str) {
        let (s, v) = self
            .call(Method::POST, "/url", Some(json!({"url": url})))
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }

    async fn url(&self) -> String {
        let (_, v) = self.call(Method::GET, "/url", None).await;
        v.as_str().unwrap_or_default().to_owned()
    }

    /// The element `css` selects, waiting for it up to `deadline`.
    async fn find(&self, css: &str) -> String {
        let until = Instant::now() + DEADLINE;
        loop {
            let (s, v) = self
                .call(
                    Method::POST,
                    "/element",
                    Some(json!({"using": "css selector", "value": css})),
                )
                .await;
            if s == StatusCode::OK
                && let Some(id) = v[ELEMENT].as_str()
            {
                return id.to_owned();
            }
            assert!(Instant::now() < until, "no element {css}: {v}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn text(&self, css: &str) -> String {
        let id = self.find(css).await;
        let (_, v) = self
            .call(Method::GET, &format!("/element/{id}/text"), None)
            .await;
        v.as_str().unwrap_or_default().to_owned()
    }

    /// Waits until the text of `css` contains `want`.
    async fn wait_text(&self, css: &str, want: &str) -> String {
        let until = Instant::now() + DEADLINE;
        loop {
            let text = self.text(css).await;
            if text.contains(want) {
                return text;
            }
            assert!(
                Instant::now() < until,
                "{css} never showed {want:?}; last: {text}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn click(&self, css: &str) {
        let id = self.find(css).await;
        let (s, v) = self
            .call(
                Method::POST,
                &format!("/element/{id}/click"),
                Some(json!({})),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }

    async fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css).await;
        let (s, v) = self
            .call(
                Method::POST,
                &format!("/element/{id}/value"),
                Some(json!({"text": text})),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }

    async fn script(&self, script: &str) -> Value {
        let (s, v) = self
            .call(
                Method::POST,
                "/execute/sync",
                Some(json!({"script": script, "args": []})),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v
    }

    /// Waits until the browser's URL ends with `path`.
    async fn wait_url(&self, path: &str) {
        let until = Instant::now() + DEADLINE;
        loop {
            let url = self.url().await;
            if url.ends_with(path) {
                return;
            }
            if Instant::now() >= until {
                let page = self.script("return document.body.innerText;").await;
                panic!("the browser is at {url}, not {path}; the page says: {page}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn screenshot(&self, name: &str) {
        let (s, v) = self.call(Method::GET, "/screenshot", None).await;
        assert_eq!(s, StatusCode::OK);
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap();
        let dir = screenshots();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }
}

/// How long any one wait in the browser may take (generous: the machine may be loaded).
const DEADLINE: Duration = Duration::from_secs(30);

fn screenshots() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"),
        PathBuf::from,
    );
    target.join("console-screenshots")
}

/// chromedriver on a loopback port, killed when dropped.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn need(program: &str) -> PathBuf {
    let path = PathBuf::from(program);
    assert!(
        path.is_file(),
        "{program} is missing: run `cargo xtask setup` (it installs Debian's chromium and chromium-driver)"
    );
    path
}

async fn start_driver(http: &reqwest::Client) -> Driver {
    let driver = need("/usr/bin/chromedriver");
    need("/usr/bin/chromium");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(driver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let driver = Driver { child, port };
    let until = Instant::now() + DEADLINE;
    loop {
        if let Ok(r) = http
            .get(format!("http://127.0.0.1:{port}/status"))
            .send()
            .await
            && let Ok(v) = r.json::<Value>().await
            && v["value"]["ready"] == true
        {
            return driver;
        }
        assert!(
            Instant::now() < until,
            "chromedriver did not start on port {port}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_a_real_browser() {
    let dir = tempfile::tempdir().unwrap();
    let h = harness(config(dir.path())).await;
    seed(&h).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let driver = start_driver(&http).await;
    let profile = tempfile::tempdir().unwrap();
    let base = format!("http://127.0.0.1:{}", driver.port);
    let (s, created) = {
        let r = http
            .post(format!("{base}/session"))
            .json(&json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "acceptInsecureCerts": true,
                "goog:chromeOptions": {
                    "binary": "/usr/bin/chromium",
                    "args": [
                        "--headless=new", "--no-sandbox", "--disable-gpu",
                        "--disable-dev-shm-usage", "--window-size=1280,1000",
                        format!("--user-data-dir={}", profile.path().display()),
                    ],
                },
            }}}))
            .send()
            .await
            .unwrap();
        (r.status(), r.json::<Value>().await.unwrap())
    };
    assert_eq!(s, StatusCode::OK, "{created}");
    let b = WebDriver {
        http: http.clone(),
        http_base: base.clone(),
        session: created["value"]["sessionId"].as_str().unwrap().to_owned(),
    };
    let ui = format!("{}/ui", h.base);

    // Sign in.
    b.goto(&format!("{ui}/")).await;
    b.wait_url("/ui/sign-in").await;
    b.screenshot("sign-in").await;
    b.type_into("#token", &h.admin()).await;
    b.click("#sign-in").await;
    b.wait_url("/ui/fleet").await;
    b.wait_text("#user", "admin").await;
    let counts = b.wait_text("#counts", CLUSTER).await;
    assert!(
        counts.contains("Attested") && counts.contains("Not attested"),
        "{counts}"
    );
    b.screenshot("fleet").await;

    // The hosts with their states, in words.
    b.goto(&format!("{ui}/hosts")).await;
    let hosts = b.wait_text("#hosts", "esx-03").await;
    for (name, state) in [
        ("esx-01", "Attested"),
        ("esx-02", "Not attested"),
        ("esx-03", "Unknown"),
    ] {
        let row = hosts
            .lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("no row for {name}: {hosts}"));
        assert!(row.contains(state), "{name} should be {state}: {row}");
    }
    b.screenshot("hosts").await;

    // The refused host: PCR 7 expected and presented, side by side in one row.
    b.click("#hosts a[href$='/ui/hosts/0202020202020202020202020202020202020202020202020202020202020202']")
        .await;
    b.wait_text("#host-state", "Not attested").await;
    let differs = b.text("#refusal table.pcrs tr.differs").await;
    assert!(differs.contains(&expected_pcr7()), "{differs}");
    assert!(differs.contains(&presented_pcr7()), "{differs}");
    assert!(differs.contains("differs"), "{differs}");
    b.screenshot("host-refused").await;

    b.goto(&format!("{ui}/clusters")).await;
    b.wait_text("main", VERSION).await;
    b.screenshot("clusters").await;
    b.goto(&format!("{ui}/events")).await;
    b.wait_text("#events", "host.state_changed").await;
    b.screenshot("events").await;

    // A state change appears on the fleet page without a reload: a marker set in the page
    // survives.
    b.goto(&format!("{ui}/fleet")).await;
    b.wait_text("#counts", CLUSTER).await;
    b.script("window.vouchMarker = 'kept'; return null;").await;
    record(&h, 3, true);
    b.wait_text("#changes", "esx-03").await;
    assert_eq!(b.script("return window.vouchMarker;").await, "kept");
    b.screenshot("fleet-live").await;

    // Sign out; the session is gone.
    b.click("#sign-out").await;
    b.wait_url("/ui/sign-in").await;
    b.goto(&format!("{ui}/fleet")).await;
    b.wait_url("/ui/sign-in").await;

    let (s, _) = b.call(Method::DELETE, "", None).await;
    assert_eq!(s, StatusCode::OK);
    drop(driver);
}
