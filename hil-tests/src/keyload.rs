//! The key provider under load (`cargo xtask keyload`): a real vouchd (its own process), a
//! real PyKMIP key server, a host attested by the hosted agent on swtpm, and many concurrent
//! clients sending that host's key requests over loopback TLS for a bounded time.
//!
//! The provider refreshes its primary key every [`REFRESH_SECONDS`], so refreshes fall inside
//! any run longer than a few seconds.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use crate::swtpm::{HarnessError, Swtpm};
use crate::verifier::{Verifier, ca_pems, ek_certificate_pem, workspace_binary};

/// The provider's refresh period in a run: short, so that refreshes fall inside it.
pub const REFRESH_SECONDS: i64 = 5;
/// The longest run (the host's token must outlive it).
pub const MAX_DURATION: Duration = Duration::from_secs(240);
/// The most concurrent clients.
pub const MAX_CONCURRENCY: usize = 1024;
/// Items in one batch request (the API's bound).
pub const BATCH_ITEMS: usize = 64;

/// What each request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Encrypt,
    Decrypt,
    /// [`BATCH_ITEMS`] encryptions per request; each counts as an operation.
    Batch,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Self::Encrypt => "encrypt",
            Self::Decrypt => "decrypt",
            Self::Batch => "batch",
        }
    }
}

/// A run's settings.
#[derive(Debug, Clone)]
pub struct Options {
    pub op: Op,
    pub concurrency: usize,
    pub duration: Duration,
    /// Remote wrapping (every operation a KMIP Encrypt or Decrypt) instead of local.
    pub remote: bool,
    /// Pin vouchd to CPU 0 (the caller runs on another).
    pub pin_vouchd: bool,
    /// Progress lines on stderr.
    pub progress: bool,
}

/// A run's figures: operations, not requests (a batch request is [`BATCH_ITEMS`] of them);
/// latencies per request.
#[derive(Debug, Clone)]
pub struct Report {
    pub op: Op,
    pub concurrency: usize,
    pub wrapping: &'static str,
    pub duration_s: f64,
    pub requests: u64,
    pub ops: u64,
    pub ops_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub errors: u64,
    /// vouchd's CPU time (user + system) during the load, per request: what the figures
    /// would be on an idle core, whatever else ran on it.
    pub vouchd_cpu_us_per_request: f64,
    /// Remote wrapping: the key server's own ceiling, measured just before with the same
    /// operation, concurrency and pooled KMIP client, without vouchd.
    pub key_server_ops_per_s: Option<f64>,
}

impl Report {
    pub fn json(&self) -> Value {
        json!({
            "op": self.op.name(),
            "concurrency": self.concurrency,
            "wrapping": self.wrapping,
            "duration_s": round(self.duration_s),
            "requests": self.requests,
            "ops": self.ops,
            "ops_per_s": self.ops_per_s.round(),
            "p50_ms": round(self.p50_ms),
            "p99_ms": round(self.p99_ms),
            "max_ms": round(self.max_ms),
            "errors": self.errors,
            "vouchd_cpu_us_per_request": self.vouchd_cpu_us_per_request.round(),
            "key_server_ops_per_s": self.key_server_ops_per_s.map(f64::round),
        })
    }
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn failed(what: &str, e: impl std::fmt::Display) -> String {
    format!("{what}: {e}")
}

/// A host attested by the hosted agent on swtpm, in cluster `load` of `verifier`, and its
/// attestation token.
fn attested_host(verifier: &Verifier, work: &Path) -> Result<(Swtpm, String), String> {
    let e = |e: HarnessError| e.to_string();
    let mut tpm = Swtpm::start().map_err(e)?;
    let ek_pem = ek_certificate_pem(&tpm).map_err(e)?;
    tpm.restart(true).map_err(e)?;
    verifier
        .trust_cluster("load", &ca_pems(&tpm).map_err(e)?, &[0, 1])
        .map_err(e)?;
    let image_path = work.join("host-image.bin");
    let image = b"a host's boot image, measured by the hosted agent";
    std::fs::write(&image_path, image).map_err(|e| failed("image", e))?;
    let parts: [&[u8]; 1] = [image];
    let version = vouch::image::software_version(
        "load-host-1",
        &vouch_agent::measure::BootImage {
            version: b"vouch-hosted-agent",
            image: &parts,
            base: 0,
            config: b"",
        },
    )?;
    let version = serde_json::to_value(version).map_err(|e| failed("software version", e))?;
    verifier.accept("load", &version).map_err(e)?;
    let ek_hash = verifier.add_host("load", "load-1", &ek_pem).map_err(e)?;
    let agent = workspace_binary("vouch-hosted-agent", "VOUCH_HOSTED_AGENT_BIN").map_err(e)?;
    let socket = format!("unix:{}", tpm.dir().join("data.sock").display());
    let output = std::process::Command::new(agent)
        .args(["--verifier", &verifier.agent_addr().to_string()])
        .args(["--tpm", &socket])
        .arg("--measure-image")
        .arg(&image_path)
        .arg("--once")
        .output()
        .map_err(|e| failed("vouch-hosted-agent", e))?;
    if !output.status.success() {
        return Err(format!(
            "the hosted agent did not attest: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    verifier
        .wait_for_state(&ek_hash, "attested", Duration::from_secs(30))
        .map_err(e)?;
    let (status, body) = verifier
        .call("GET", &format!("/v1/hosts/{ek_hash}/token"), None)
        .map_err(e)?;
    let token = body
        .get("token")
        .and_then(Value::as_str)
        .filter(|_| status == 200)
        .ok_or_else(|| format!("no token for the host: {status} {body}"))?;
    Ok((tpm, token.to_owned()))
}

fn ok(verifier: &Verifier, method: &str, path: &str, body: Value) -> Result<Value, String> {
    let (status, v) = verifier
        .call(method, path, Some(body))
        .map_err(|e| e.to_string())?;
    if !(200..300).contains(&status) {
        return Err(format!("{method} {path}: {status} {v}"));
    }
    Ok(v)
}

/// Pins every thread of process `pid` (and so those it starts) to CPU 0.
fn pin_to_cpu0(pid: u32) -> Result<(), String> {
    let status = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", "0", &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .map_err(|e| failed("taskset (util-linux; run `cargo xtask setup`)", e))?;
    if !status.success() {
        return Err(format!("taskset -a -p -c 0 {pid}: {status}"));
    }
    Ok(())
}

/// Sets everything up, runs the load, and reports.
///
/// # Errors
/// A part that did not start or configure, with what to do.
pub fn run(options: &Options) -> Result<Report, String> {
    if options.concurrency == 0 || options.concurrency > MAX_CONCURRENCY {
        return Err(format!("--concurrency is 1 to {MAX_CONCURRENCY}"));
    }
    if options.duration.is_zero() || options.duration > MAX_DURATION {
        return Err(format!(
            "--duration is 1 to {} seconds",
            MAX_DURATION.as_secs()
        ));
    }
    let say = |m: &str| {
        if options.progress {
            eprintln!("keyload: {m}");
        }
    };
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    say("starting PyKMIP and vouchd");
    let kms = crate::pykmip::PyKmip::start_checked()?;
    let verifier = Verifier::start_process(600).map_err(|e| e.to_string())?;
    if options.pin_vouchd {
        let pid = verifier
            .pid()
            .ok_or_else(|| "vouchd is not running".to_owned())?;
        pin_to_cpu0(pid)?;
    }
    let work = tempfile::tempdir().map_err(|e| failed("temporary directory", e))?;
    say("attesting a host (hosted agent on swtpm)");
    let (_tpm, token) = attested_host(&verifier, work.path())?;
    ok(
        &verifier,
        "POST",
        "/v1/key-servers",
        json!({
            "name": "kms-1",
            "endpoints": [format!("127.0.0.1:{}", kms.port)],
            "client_certificate_pem": kms.pki.client_cert,
            "client_key_pem": kms.pki.client_key,
            "ca_certificate_pem": kms.pki.ca,
        }),
    )?;
    let key = ok(&verifier, "POST", "/v1/key-servers/kms-1/keys", json!({}))?;
    let wrapping = if options.remote { "remote" } else { "local" };
    ok(
        &verifier,
        "POST",
        "/v1/key-providers",
        json!({
            "name": "load", "key_server": "kms-1", "primary_key_id": key.get("key_id"),
            "wrapping": wrapping, "refresh_seconds": REFRESH_SECONDS, "lifetime_seconds": 3600,
        }),
    )?;
    ok(
        &verifier,
        "PUT",
        "/v1/clusters/load/key-provider",
        json!({"provider": "load"}),
    )?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| failed("tokio runtime", e))?;
    let api = verifier.api_url();
    let certificate = std::fs::read(verifier.data_dir().join("api-cert.pem"))
        .map_err(|e| failed("api-cert.pem", e))?;
    say(&format!(
        "{} x {} for {} s ({wrapping} wrapping, key refresh every {REFRESH_SECONDS} s)",
        options.concurrency,
        options.op.name(),
        options.duration.as_secs()
    ));
    let key_server_ops_per_s = if options.remote {
        say("measuring the key server's own ceiling (same client, no vouchd)");
        let id = key
            .get("key_id")
            .and_then(Value::as_str)
            .ok_or("no key id")?;
        Some(runtime.block_on(key_server_ceiling(&kms, id, options))?)
    } else {
        None
    };
    let pid = verifier.pid();
    let cpu_before = pid.and_then(cpu_seconds);
    let report = runtime.block_on(load(options, &api, &certificate, &token))?;
    let cpu = match (cpu_before, pid.and_then(cpu_seconds)) {
        (Some(before), Some(after)) if report.requests > 0 => {
            (after - before) * 1e6 / report.requests as f64
        }
        _ => 0.0,
    };
    drop(verifier);
    drop(kms);
    Ok(Report {
        wrapping,
        vouchd_cpu_us_per_request: cpu,
        key_server_ops_per_s,
        ..report
    })
}

/// How many remote-wrapping operations per second the key server answers the provider's
/// client directly (pooled connections, state check and Encrypt or Decrypt), from
/// `options.concurrency` tasks for at most 5 s.
async fn key_server_ceiling(
    kms: &crate::pykmip::PyKmip,
    id: &str,
    options: &Options,
) -> Result<f64, String> {
    use vouch_keyprovider::{KeyProvider, KeyRef, ProviderConfig, SystemClock, Wrapping};
    let provider = KeyProvider::new(
        ProviderConfig {
            name: "ceiling".into(),
            key_server: "kms-1".into(),
            primary: KeyRef {
                id: id.into(),
                version: 1,
            },
            retired: vec![],
            wrapping: Wrapping::Remote,
        },
        kms.key_server(vouch_kmip::ProtocolVersion::V1_4),
        Arc::new(SystemClock::new()),
    )
    .map_err(|e| failed("provider", e))?;
    let provider = Arc::new(provider);
    let sample = provider
        .encrypt(&[0x42; 32], b"keyload")
        .await
        .map_err(|e| failed("the key server", e))?;
    let started = Instant::now();
    let deadline = started + options.duration.min(Duration::from_secs(5));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..options.concurrency {
        let (provider, sample) = (Arc::clone(&provider), sample.clone());
        let decrypt = options.op == Op::Decrypt;
        tasks.spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                let done = if decrypt {
                    provider.decrypt(&sample, b"keyload").await.map(drop)
                } else {
                    provider.encrypt(&[0x42; 32], b"keyload").await.map(drop)
                };
                done.map_err(|e| e.to_string())?;
                n += 1;
            }
            Ok::<_, String>(n)
        });
    }
    let mut ops = 0u64;
    while let Some(done) = tasks.join_next().await {
        ops += done.map_err(|e| failed("a task", e))??;
    }
    Ok(ops as f64 / started.elapsed().as_secs_f64())
}

/// The CPU time (user + system, seconds) process `pid` has used, from `/proc/PID/stat`.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name (which may hold spaces) closed by ')'.
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime: fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // USER_HZ is 100 on Linux (sysconf(_SC_CLK_TCK)).
    Some(ticks / 100.0)
}

struct Shared {
    requests: AtomicU64,
    errors: AtomicU64,
    first_error: std::sync::Mutex<Option<String>>,
}

async fn load(
    options: &Options,
    api: &str,
    certificate_pem: &[u8],
    token: &str,
) -> Result<Report, String> {
    let url = reqwest::Url::parse(api).map_err(|e| failed("API URL", e))?;
    let addr = url
        .socket_addrs(|| None)
        .ok()
        .and_then(|a| a.into_iter().next())
        .ok_or("the API address")?;
    if !addr.ip().is_loopback() {
        return Err(format!("{addr} is not a loopback address"));
    }
    let client = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(
            reqwest::Certificate::from_pem(certificate_pem)
                .map_err(|e| failed("certificate", e))?,
        )
        .resolve("localhost", addr)
        .pool_max_idle_per_host(options.concurrency)
        .build()
        .map_err(|e| failed("HTTP client", e))?;
    let base = format!("https://localhost:{}/v1/keys", addr.port());
    let auth = format!("Bearer {token}");
    let plaintext = B64.encode([0x42u8; 32]);
    let aad = B64.encode(b"keyload");
    // The request body of each operation; a decryption needs a ciphertext first.
    let (path, body) = match options.op {
        Op::Encrypt => (
            "encrypt",
            json!({"plaintext": plaintext, "aad": aad}).to_string(),
        ),
        Op::Decrypt => {
            let reply: Value = client
                .post(format!("{base}/encrypt"))
                .header("authorization", &auth)
                .header("content-type", "application/json")
                .body(json!({"plaintext": plaintext, "aad": aad}).to_string())
                .send()
                .await
                .map_err(|e| failed("the first encryption", e))?
                .json()
                .await
                .map_err(|e| failed("the first encryption", e))?;
            let ct = reply
                .get("ciphertext")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("the first encryption: {reply}"))?;
            ("decrypt", json!({"ciphertext": ct, "aad": aad}).to_string())
        }
        Op::Batch => {
            let item = json!({"op": "encrypt", "plaintext": plaintext, "aad": aad});
            let items = vec![item; BATCH_ITEMS];
            ("batch", json!({ "items": items }).to_string())
        }
    };
    let url = format!("{base}/{path}");
    let shared = Arc::new(Shared {
        requests: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        first_error: std::sync::Mutex::new(None),
    });
    let started = Instant::now();
    let deadline = started + options.duration;
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..options.concurrency {
        let (client, url, body, auth, shared) = (
            client.clone(),
            url.clone(),
            body.clone(),
            auth.clone(),
            Arc::clone(&shared),
        );
        let batch = options.op == Op::Batch;
        clients.spawn(async move {
            let mut latencies: Vec<u32> = Vec::with_capacity(4096);
            while Instant::now() < deadline {
                let sent = Instant::now();
                let outcome = request(&client, &url, &auth, &body, batch).await;
                let us = u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX);
                latencies.push(us);
                shared.requests.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = outcome {
                    shared.errors.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut first) = shared.first_error.lock() {
                        first.get_or_insert(e);
                    }
                }
            }
            latencies
        });
    }
    let progress = options.progress.then(|| {
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let mut last = 0u64;
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let n = shared.requests.load(Ordering::Relaxed);
                eprintln!(
                    "keyload: {:>4.0} s  {:>8.0} requests/s  {} errors",
                    started.elapsed().as_secs_f64(),
                    (n - last) as f64 / 5.0,
                    shared.errors.load(Ordering::Relaxed)
                );
                last = n;
            }
        })
    });
    // Every client stops at the deadline; a request in flight then is bounded by the
    // client's own timeout.
    let mut latencies: Vec<u32> = Vec::new();
    while let Some(done) = clients.join_next().await {
        latencies.extend(done.map_err(|e| failed("a client task", e))?);
    }
    if let Some(p) = progress {
        p.abort();
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let at = |per_mille: usize| {
        // The nearest rank below: the index is at most len - 1.
        let last = latencies.len().saturating_sub(1);
        let i = last.saturating_mul(per_mille) / 1000;
        latencies.get(i).map_or(0.0, |&us| f64::from(us) / 1000.0)
    };
    let requests = shared.requests.load(Ordering::Relaxed);
    let errors = shared.errors.load(Ordering::Relaxed);
    if let Ok(Some(e)) = shared.first_error.lock().map(|f| f.clone()) {
        eprintln!("keyload: first error: {e}");
    }
    let per_request = if options.op == Op::Batch {
        BATCH_ITEMS as u64
    } else {
        1
    };
    let ops = requests.saturating_sub(errors) * per_request;
    Ok(Report {
        op: options.op,
        concurrency: options.concurrency,
        wrapping: "local",
        duration_s: elapsed,
        requests,
        ops,
        ops_per_s: ops as f64 / elapsed,
        p50_ms: at(500),
        p99_ms: at(990),
        max_ms: latencies.last().map_or(0.0, |&us| f64::from(us) / 1000.0),
        errors,
        vouchd_cpu_us_per_request: 0.0,
        key_server_ops_per_s: None,
    })
}

/// One request; an error says why it failed.
async fn request(
    client: &reqwest::Client,
    url: &str,
    auth: &str,
    body: &str,
    batch: bool,
) -> Result<(), String> {
    let response = client
        .post(url)
        .header("authorization", auth)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let bytes = response.bytes().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("{status}: {}", String::from_utf8_lossy(&bytes)));
    }
    if batch {
        let reply: Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
        let results = reply
            .get("results")
            .and_then(Value::as_array)
            .ok_or("no results")?;
        if results.len() != BATCH_ITEMS
            || results
                .iter()
                .any(|r| r.get("error").is_some_and(|e| !e.is_null()))
        {
            return Err(format!("batch: {reply}"));
        }
    }
    Ok(())
}
