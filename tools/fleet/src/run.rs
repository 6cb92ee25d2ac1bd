//! A fleet run: make the hosts, start and configure vouchd (or use running ones), let every host
//! attest (check-in or persistent), measure a window of steady state, report.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::agent::{self, Attestation, Event, Failure};
use crate::hosts::{self, Boot, Host, Manufacturer, RsaCache};
use crate::launch::{self, Servers, Start};
use crate::vouchd::{self, Api};

/// The most open files one simulator process may use for sessions (the hard limit here is
/// 20,000; the rest is headroom for the runtime and the API client).
pub const MAX_CONNECTIONS_PER_PROCESS: usize = 19_000;
/// Most RSA EKs (and, separately, RSA AKs) in a fleet: RSA keys are made once and cached.
pub const MAX_RSA_HOSTS: usize = 100;

/// How the hosts attest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Connect, prove, receive the verdict and the next check-in time, disconnect.
    Checkin,
    /// Keep a session open; vouchd asks for a quote every interval.
    Persistent,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "checkin" => Ok(Self::Checkin),
            "persistent" => Ok(Self::Persistent),
            other => Err(format!("mode must be checkin or persistent, not {other}")),
        }
    }
}

/// Vouchd servers the fleet attests to when it does not start its own.
#[derive(Debug, Clone)]
pub struct External {
    /// The agent link addresses; hosts are spread over them.
    pub servers: Vec<SocketAddr>,
    /// The management API, its certificate (PEM) and an admin's token, to configure trust.
    pub api: SocketAddr,
    pub api_certificate: PathBuf,
    pub token: String,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub hosts: usize,
    pub interval: Duration,
    pub duration: Duration,
    pub mode: Mode,
    /// Every host enrolls at once, and the measurement includes it.
    pub cold: bool,
    /// Use running vouchds instead of starting one.
    pub external: Option<External>,
    /// vouchd's `store` setting for the vouchd started here: a PostgreSQL URL, or
    /// [`launch::PRIVATE_POSTGRES`] to start a private PostgreSQL for the run.
    pub store: Option<String>,
    /// How many vouchd replicas to start (more than one needs a PostgreSQL store); agents are
    /// spread over them and each knows every one.
    pub replicas: usize,
    /// Kill one replica (the first) with SIGKILL this long into the measured window.
    pub kill_one_at: Option<Duration>,
    /// The vouchd binary to start.
    pub vouchd: PathBuf,
    /// Where vouchd's data directory goes (a fresh one per run).
    pub work_dir: PathBuf,
    /// Where RSA keys are cached.
    pub rsa_cache: PathBuf,
}

/// The result, with the keys the issue specifies.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub mode: Mode,
    pub hosts: usize,
    pub interval_s: u64,
    pub duration_s: u64,
    /// Hosts whose last verdict was attested and is still valid at the end.
    pub attested: usize,
    /// Attested verdicts within the measured window.
    pub attestations: u64,
    pub rate_per_s: f64,
    /// Cold start: seconds until every host was attested once; otherwise the enrolment phase.
    pub enroll_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Failures by kind (connect, timeout, refused:<code>, not_attested, io, protocol, tpm),
    /// except those of sessions with a replica the run killed, after it was killed.
    pub errors: BTreeMap<String, u64>,
    /// vouchd's resident memory at the end (every live replica) and CPU time in the measured
    /// window (every replica).
    pub vouchd_rss_mib: f64,
    pub vouchd_cpu_s: f64,
    /// The simulator's own CPU time in the window (it shares the machine with vouchd).
    pub fleet_cpu_s: f64,
    pub db_mib: f64,
    /// vouchd processes serving the fleet.
    pub replicas: usize,
    /// Hosts that were attested by another replica than their own (after their replica died).
    pub failovers: u64,
    /// Failures, by kind, of sessions with the killed replica once it was killed: each was
    /// followed by a reconnect to the next replica.
    pub reconnects: BTreeMap<String, u64>,
    /// Verdicts an agent received whose result the database does not hold at the end; `null`
    /// when not checked (only the private PostgreSQL of `--store postgres` is).
    pub lost: Option<u64>,
    /// CPU time of the private PostgreSQL in the measured window, s.
    pub postgres_cpu_s: Option<f64>,
}

/// Why a run could not be done.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Fleet(#[from] hosts::FleetError),
    #[error(transparent)]
    Vouchd(#[from] vouchd::VouchdError),
    #[error(transparent)]
    Launch(#[from] launch::LaunchError),
    #[error("{0}")]
    Io(String),
}

/// Counters shared by every host task.
#[derive(Debug, Default)]
struct Stats {
    /// Hosts attested at least once.
    enrolled: AtomicUsize,
    /// When the measured window starts (ms after the launch; 0 = not yet).
    window_start_ms: AtomicU64,
    attestations: AtomicU64,
    latencies_us: Mutex<Vec<u32>>,
    errors: Mutex<BTreeMap<String, u64>>,
    /// Per host: when its last attestation stops being valid.
    valid_until: Mutex<Vec<Option<Instant>>>,
    /// Per host: attested by another replica than its own.
    failed_over: Mutex<Vec<bool>>,
    /// The quote nonce of every attested verdict received.
    received: Mutex<Vec<Vec<u8>>>,
    /// Failures explained by the killed replica, by kind.
    reconnects: Mutex<BTreeMap<String, u64>>,
    /// The killed replica's index plus one; 0 while none is.
    killed: AtomicUsize,
}

impl Stats {
    fn attested(&self, index: usize, first: &mut bool, a: &Attestation, launch: Instant) {
        if *first {
            *first = false;
            self.enrolled.fetch_add(1, Ordering::Relaxed);
        }
        if let Ok(mut r) = self.received.lock() {
            r.push(a.nonce.clone());
        }
        if let Ok(mut v) = self.valid_until.lock()
            && let Some(slot) = v.get_mut(index)
        {
            *slot = Some(a.at + a.valid_for);
        }
        let start = self.window_start_ms.load(Ordering::Relaxed);
        let since = u64::try_from(a.at.duration_since(launch).as_millis()).unwrap_or(u64::MAX);
        if start != 0 && since >= start {
            self.attestations.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut l) = self.latencies_us.lock() {
                l.push(u32::try_from(a.latency.as_micros()).unwrap_or(u32::MAX));
            }
        }
    }

    fn failed(&self, failure: &Failure) {
        if let Ok(mut e) = self.errors.lock() {
            *e.entry(failure.kind()).or_insert(0) += 1;
        }
    }

    /// A failure of a session with replica `server`: a reconnect when that replica was
    /// killed, an error otherwise. True for a reconnect.
    fn failed_with(&self, server: usize, failure: &Failure) -> bool {
        if self.killed.load(Ordering::Acquire) == server + 1 {
            if let Ok(mut r) = self.reconnects.lock() {
                *r.entry(failure.kind()).or_insert(0) += 1;
            }
            true
        } else {
            self.failed(failure);
            false
        }
    }

    /// A verdict received in a session that failed after it.
    fn received_only(&self, nonce: Vec<u8>) {
        if let Ok(mut r) = self.received.lock() {
            r.push(nonce);
        }
    }

    fn moved(&self, index: usize) {
        if let Ok(mut f) = self.failed_over.lock()
            && let Some(slot) = f.get_mut(index)
        {
            *slot = true;
        }
    }

    fn error_count(&self) -> u64 {
        self.errors.lock().map_or(0, |e| e.values().sum())
    }
}

/// The source address of host `index`: one address per host in 127.1.0.0 and up, as a data
/// centre has (so vouchd's per-address limit on unproven sessions never pools hosts).
pub fn source_address(index: usize) -> IpAddr {
    let offset = u32::try_from(index).unwrap_or(0) % 0x00FE_0000;
    IpAddr::V4(Ipv4Addr::from(0x7F01_0000u32 + offset))
}

/// A random duration in `[0, max)`.
fn jitter(max: Duration) -> Duration {
    let mut b = [0u8; 8];
    let _ = aws_lc_rs::rand::fill(&mut b);
    let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX).max(1);
    Duration::from_nanos(u64::from_le_bytes(b) % nanos)
}

/// The wait after the `failures`-th failure in a row: 1 s doubling to 30 s, each with up to
/// as much again of jitter, so a refused storm spreads out.
fn backoff(failures: u32) -> Duration {
    let base = Duration::from_secs(1u64 << failures.min(5)).min(Duration::from_secs(30));
    base + jitter(base)
}

/// Raises this process's open-file limit to its hard limit; returns the limit.
pub fn raise_file_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) != 0 {
            return 1024;
        }
        limit.rlim_cur = limit.rlim_max;
        let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &raw const limit);
        if libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) != 0 {
            return 1024;
        }
    }
    limit.rlim_cur
}

/// Makes the fleet's hosts on every core.
fn make_hosts(
    count: usize,
    rsa: &RsaCache,
    rsa_count: usize,
    ca: &Manufacturer,
    progress: &(dyn Fn(String) + Sync),
) -> Result<Vec<Host>, hosts::FleetError> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let made = AtomicUsize::new(0);
    let per = count.div_ceil(threads).max(1);
    let started = Instant::now();
    let parts: Vec<Result<Vec<Host>, hosts::FleetError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let made = &made;
                s.spawn(move || {
                    let range = (t * per)..((t + 1) * per).min(count);
                    let mut out = Vec::with_capacity(range.len());
                    let mut last = Instant::now();
                    for i in range {
                        out.push(hosts::host(i, count, rsa, rsa_count, ca)?);
                        let n = made.fetch_add(1, Ordering::Relaxed) + 1;
                        if t == 0 && last.elapsed() > Duration::from_secs(5) {
                            last = Instant::now();
                            progress(format!(
                                "{:>5.0}s made {n}/{count} software TPMs and EK certificates",
                                started.elapsed().as_secs_f64()
                            ));
                        }
                    }
                    Ok(out)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(hosts::FleetError::EventLog("a thread panicked".into()))
                })
            })
            .collect()
    });
    let mut all = Vec::with_capacity(count);
    for part in parts {
        all.extend(part?);
    }
    Ok(all)
}

/// Runs the fleet; `progress` gets a line every few seconds.
pub async fn run(
    options: &Options,
    progress: Arc<dyn Fn(String) + Send + Sync>,
) -> Result<Report, RunError> {
    if options.hosts == 0 {
        return Err(RunError::Usage("--hosts must be at least 1".into()));
    }
    if options.interval < Duration::from_secs(10) {
        return Err(RunError::Usage(
            "--interval must be at least 10 s (vouchd's reattest_interval_secs)".into(),
        ));
    }
    check_replicas(options)?;
    let file_limit = usize::try_from(raise_file_limit()).unwrap_or(usize::MAX);
    let connections_here = MAX_CONNECTIONS_PER_PROCESS.min(file_limit.saturating_sub(1000));
    if options.mode == Mode::Persistent && options.hosts > connections_here {
        return Err(RunError::Usage(format!(
            "persistent mode holds one connection per host, and this process may hold {connections_here} \
             (open-file limit {file_limit}); one vouchd holds no more either: use at most \
             {connections_here} hosts, or check-in mode"
        )));
    }

    let boot = Boot::new()?;
    let ca = Manufacturer::new()?;
    let rsa_count = hosts::rsa_hosts(options.hosts, MAX_RSA_HOSTS);
    progress(format!(
        "{} hosts: {rsa_count} with an RSA EK, {rsa_count} with an RSA AK, the rest ECC P-256 \
         (RSA keys cached in {})",
        options.hosts,
        options.rsa_cache.display()
    ));
    let rsa = RsaCache::load(&options.rsa_cache, 2 * rsa_count)?;
    let progress_ref: &(dyn Fn(String) + Sync) = &*progress;
    let hosts = Arc::new(make_hosts(
        options.hosts,
        &rsa,
        rsa_count,
        &ca,
        progress_ref,
    )?);

    // vouchd: our own (one, or replicas), or running ones.
    let mut servers = match &options.external {
        None => Servers::start(
            &Start {
                binary: &options.vouchd,
                work_dir: &options.work_dir,
                replicas: options.replicas,
                store: options.store.as_deref(),
                interval_secs: options.interval.as_secs(),
                max_sessions: (options.mode == Mode::Persistent).then_some(options.hosts + 1000),
            },
            &*progress,
        )?,
        Some(external) => {
            let certificate = std::fs::read(&external.api_certificate).map_err(|e| {
                RunError::Io(format!("{}: {e}", external.api_certificate.display()))
            })?;
            let api = Api::new(external.api, &certificate, &external.token)?;
            Servers::running(api, external.servers.clone())
        }
    };
    let api = servers.api.clone();
    let addresses = Arc::new(servers.agents.clone());

    // Trust, as an operator configures it.
    api.configure(&ca.certificate_pem, &boot.version).await?;
    register(&api, &hosts, &*progress).await?;

    // The fleet.
    let stats = Arc::new(Stats {
        valid_until: Mutex::new(vec![None; options.hosts]),
        failed_over: Mutex::new(vec![false; options.hosts]),
        ..Stats::default()
    });
    let launch = Instant::now();
    let enroll_limit = Duration::from_secs(300).max(Duration::from_millis(
        u64::try_from(options.hosts).unwrap_or(0) * 20,
    ));
    let hard_end = launch + enroll_limit + options.duration + Duration::from_secs(5);
    let end = Arc::new(Mutex::new(hard_end));
    // Outside a cold start, hosts enrol a few at a time, as they would join a running fleet
    // (check-in hosts also spread their first check-in over one interval).
    // A cold start lets every host try at once, up to the connections this process may open.
    let gate = Arc::new(tokio::sync::Semaphore::new(if options.cold {
        connections_here
    } else {
        64
    }));
    // Every connection of this process holds a place: never more than its files allow.
    let connections = Arc::new(tokio::sync::Semaphore::new(connections_here));
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..options.hosts {
        let ctx = HostTask {
            index,
            servers: Arc::clone(&addresses),
            hosts: Arc::clone(&hosts),
            boot: boot.clone(),
            stats: Arc::clone(&stats),
            end: Arc::clone(&end),
            gate: Arc::clone(&gate),
            connections: Arc::clone(&connections),
            launch,
            interval: options.interval,
            cold: options.cold,
        };
        match options.mode {
            Mode::Checkin => tasks.spawn(ctx.check_ins()),
            Mode::Persistent => tasks.spawn(ctx.persistent()),
        };
    }

    // Enrolment: until every host was attested once.
    let mut last_progress = Instant::now();
    loop {
        let enrolled = stats.enrolled.load(Ordering::Relaxed);
        if enrolled >= options.hosts {
            break;
        }
        if launch.elapsed() > enroll_limit {
            progress(format!(
                "only {enrolled}/{} hosts attested after {enroll_limit:?}: measuring anyway",
                options.hosts
            ));
            break;
        }
        if last_progress.elapsed() >= Duration::from_secs(5) {
            last_progress = Instant::now();
            progress(format!(
                "{:>5.0}s enrolling: {enrolled}/{} attested, errors {}",
                launch.elapsed().as_secs_f64(),
                options.hosts,
                stats.error_count()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let enroll_s = launch.elapsed().as_secs_f64();
    progress(format!(
        "{enroll_s:>5.0}s every host attested once; measuring {} s",
        options.duration.as_secs()
    ));

    // The measured window.
    let window_start = Instant::now();
    let cpu_before = servers.usage().map_or(0.0, |u| u.1);
    let pg_cpu_before = servers.postgres_cpu_s();
    let mut kill_at = options.kill_one_at.map(|at| window_start + at);
    let own_cpu_before = vouchd::usage(std::process::id()).map_or(0.0, |u| u.1);
    stats.window_start_ms.store(
        u64::try_from(window_start.duration_since(launch).as_millis())
            .unwrap_or(u64::MAX)
            .max(1),
        Ordering::Relaxed,
    );
    let window_end = window_start + options.duration;
    if let Ok(mut e) = end.lock() {
        *e = window_end;
    }
    while Instant::now() < window_end {
        tokio::time::sleep(
            Duration::from_millis(200).min(window_end.saturating_duration_since(Instant::now())),
        )
        .await;
        if kill_at.is_some_and(|at| Instant::now() >= at) {
            kill_at = None;
            // Failures from now on of sessions with it are reconnects, not errors.
            stats.killed.store(1, Ordering::Release);
            servers.kill(0)?;
            progress(format!(
                "{:>5.0}s killed replica 0 ({}) with SIGKILL",
                launch.elapsed().as_secs_f64(),
                addresses.first().map_or(String::new(), ToString::to_string)
            ));
        }
        if last_progress.elapsed() >= Duration::from_secs(5) {
            last_progress = Instant::now();
            let n = stats.attestations.load(Ordering::Relaxed);
            let usage = servers.usage();
            progress(format!(
                "{:>5.0}s measuring: {n} attestations ({:.0}/s), errors {}, reconnects {}{}",
                launch.elapsed().as_secs_f64(),
                n as f64 / window_start.elapsed().as_secs_f64().max(0.001),
                stats.error_count(),
                stats
                    .reconnects
                    .lock()
                    .map_or(0, |r| r.values().sum::<u64>()),
                usage.map_or(String::new(), |(rss, _)| format!(", vouchd {rss:.0} MiB"))
            ));
        }
    }
    let measured_end = Instant::now();
    let usage = servers.usage();
    let pg_cpu = servers.postgres_cpu_s();
    let own_cpu = vouchd::usage(std::process::id()).map_or(0.0, |u| u.1 - own_cpu_before);
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}

    let attested = stats.valid_until.lock().map_or(0, |v| {
        v.iter()
            .filter(|u| u.is_some_and(|u| u > measured_end))
            .count()
    });
    let mut latencies = stats
        .latencies_us
        .lock()
        .map(|l| l.clone())
        .unwrap_or_default();
    latencies.sort_unstable();
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "q is a fraction between 0 and 1"
    )]
    let pick = |q: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        // The nearest rank: q of the way from the first to the last.
        let last = latencies.len() - 1;
        let i = (last * usize::from((q * 1000.0) as u16)).div_ceil(1000);
        latencies.get(i).map_or(0.0, |&us| f64::from(us) / 1000.0)
    };
    let round = |x: f64| (x * 10.0).round() / 10.0;
    let attestations = stats.attestations.load(Ordering::Relaxed);
    let duration_s = options.duration.as_secs_f64().max(0.001);
    let report = Report {
        mode: options.mode,
        hosts: options.hosts,
        interval_s: options.interval.as_secs(),
        duration_s: options.duration.as_secs(),
        attested,
        attestations,
        rate_per_s: round(attestations as f64 / duration_s),
        enroll_s: round(enroll_s),
        p50_ms: round(pick(0.50)),
        p99_ms: round(pick(0.99)),
        max_ms: round(pick(1.0)),
        errors: stats.errors.lock().map(|e| e.clone()).unwrap_or_default(),
        vouchd_rss_mib: round(usage.map_or(0.0, |u| u.0)),
        vouchd_cpu_s: round(usage.map_or(0.0, |u| u.1 - cpu_before)),
        fleet_cpu_s: round(own_cpu),
        db_mib: round(servers.database_mib()),
        replicas: servers.agents.len(),
        failovers: stats.failed_over.lock().map_or(0, |f| {
            u64::try_from(f.iter().filter(|&&moved| moved).count()).unwrap_or(u64::MAX)
        }),
        reconnects: stats
            .reconnects
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default(),
        lost: servers.lost(&stats.received.lock().map(|r| r.clone()).unwrap_or_default())?,
        postgres_cpu_s: pg_cpu
            .zip(pg_cpu_before)
            .map(|(after, before)| round(after - before)),
    };
    drop(servers);
    Ok(report)
}

/// The replica options make sense together.
fn check_replicas(options: &Options) -> Result<(), RunError> {
    if options.replicas == 0 {
        return Err(RunError::Usage("--replicas must be at least 1".into()));
    }
    if options.external.is_some() && (options.replicas > 1 || options.kill_one_at.is_some()) {
        return Err(RunError::Usage(
            "--replicas and --kill-one-at start vouchd: they do not go with --servers".into(),
        ));
    }
    if options.replicas > 1 && options.store.is_none() {
        return Err(RunError::Usage(
            "replicas share a PostgreSQL database: add --store postgres (a private one for the \
             run) or --store postgres://..."
                .into(),
        ));
    }
    if let Some(at) = options.kill_one_at {
        if options.replicas < 2 {
            return Err(RunError::Usage(
                "--kill-one-at needs at least 2 replicas (--replicas), so agents have another"
                    .into(),
            ));
        }
        if at >= options.duration {
            return Err(RunError::Usage(format!(
                "--kill-one-at {} must fall inside the measured window (--duration {})",
                at.as_secs(),
                options.duration.as_secs()
            )));
        }
    }
    Ok(())
}

/// Registers every host with a signed host operation, a few at a time.
async fn register(
    api: &Api,
    hosts: &Arc<Vec<Host>>,
    progress: &(dyn Fn(String) + Send + Sync),
) -> Result<(), RunError> {
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (api, hosts, next, done) = (
            api.clone(),
            Arc::clone(hosts),
            Arc::clone(&next),
            Arc::clone(&done),
        );
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(host) = hosts.get(i) else {
                    return Ok::<(), vouchd::VouchdError>(());
                };
                api.add_host(&host.name, &host.ek_certificate).await?;
                done.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    let mut last = Instant::now();
    loop {
        tokio::select! {
            joined = workers.join_next() => match joined {
                None => break,
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(e))) => return Err(e.into()),
                Some(Err(e)) => return Err(RunError::Io(format!("registration task: {e}"))),
            },
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        if last.elapsed() >= Duration::from_secs(5) {
            last = Instant::now();
            progress(format!(
                "{:>5.0}s registered {}/{} hosts (signed host operations)",
                started.elapsed().as_secs_f64(),
                done.load(Ordering::Relaxed),
                hosts.len()
            ));
        }
    }
    Ok(())
}

/// One host's life in the fleet.
struct HostTask {
    index: usize,
    /// Every vouchd (replica); the host's own is `index % len`, and it tries the others in
    /// order from there when its own fails, staying with the one that answers.
    servers: Arc<Vec<SocketAddr>>,
    hosts: Arc<Vec<Host>>,
    boot: Boot,
    stats: Arc<Stats>,
    end: Arc<Mutex<Instant>>,
    gate: Arc<tokio::sync::Semaphore>,
    connections: Arc<tokio::sync::Semaphore>,
    launch: Instant,
    interval: Duration,
    cold: bool,
}

impl HostTask {
    fn end(&self) -> Instant {
        self.end.lock().map_or_else(|_| Instant::now(), |e| *e)
    }

    /// Before its first attestation, a host waits for a place among those enrolling.
    async fn enrolment_permit(&self, first: bool) -> Option<tokio::sync::OwnedSemaphorePermit> {
        if first {
            Arc::clone(&self.gate).acquire_owned().await.ok()
        } else {
            None
        }
    }

    /// Sleeps for `d`, or until the end; false at the end.
    async fn sleep(&self, d: Duration) -> bool {
        let until = Instant::now() + d;
        // The end moves (earlier) once enrolment is over: wake at least every few seconds.
        loop {
            let end = self.end();
            let now = Instant::now();
            if now >= end {
                return false;
            }
            if now >= until {
                return true;
            }
            let step = (until.min(end) - now).min(Duration::from_secs(5));
            tokio::time::sleep(step).await;
        }
    }

    /// The host's own replica.
    fn home(&self) -> usize {
        self.index % self.servers.len().max(1)
    }

    /// The address of replica `current`.
    fn server(&self, current: usize) -> Option<SocketAddr> {
        self.servers.get(current).copied()
    }

    /// After a failure of a session with replica `current`: counts it (as a reconnect when
    /// that replica was killed), and returns the replica to try next (the next one when the
    /// link failed, as an agent given several verifiers does) and how long to wait first.
    fn after_failure(
        &self,
        current: usize,
        failure: &Failure,
        failures: &mut u32,
    ) -> (usize, Duration) {
        let link_failed = matches!(
            failure,
            Failure::Connect(_) | Failure::Io(_) | Failure::Timeout
        );
        let next = if link_failed && self.servers.len() > 1 {
            (current + 1) % self.servers.len()
        } else {
            current
        };
        if self.stats.failed_with(current, failure) {
            // Its replica died: on to the next one now (jitter spreads the reconnects).
            (next, jitter(Duration::from_secs(1)))
        } else {
            *failures = failures.saturating_add(1);
            (next, backoff(*failures))
        }
    }

    /// Counts an attestation by replica `current`, a failover when not the host's own.
    fn attested_by(&self, current: usize, first: &mut bool, attestation: &Attestation) {
        if current != self.home() {
            self.stats.moved(self.index);
        }
        self.stats
            .attested(self.index, first, attestation, self.launch);
    }

    /// Check-ins until the end: when vouchd says, or after a jittered backoff on failure.
    async fn check_ins(self) {
        let Some(host) = self.hosts.get(self.index) else {
            return;
        };
        let source = source_address(self.index);
        let mut first = true;
        let mut failures = 0u32;
        let mut current = self.home();
        loop {
            if Instant::now() >= self.end() {
                return;
            }
            if first && !self.cold {
                // Steady state: the fleet has been running, so its check-ins are spread over one
                // interval; host i first checks in at i/N of it.
                let hosts = u32::try_from(self.hosts.len()).unwrap_or(u32::MAX).max(1);
                let index = u32::try_from(self.index).unwrap_or(0);
                let offset = self.interval / hosts * index;
                tokio::time::sleep_until((self.launch + offset).into()).await;
            }
            let permit = self.enrolment_permit(first).await;
            let connection = Arc::clone(&self.connections).acquire_owned().await.ok();
            let Some(server) = self.server(current) else {
                return;
            };
            let mut verdict = None;
            let result = agent::check_in_seen(source, server, host, &self.boot, &mut verdict).await;
            drop((permit, connection));
            let wait = match result {
                Ok((attestation, after)) => {
                    failures = 0;
                    self.attested_by(current, &mut first, &attestation);
                    after
                }
                Err(failure) => {
                    // A verdict received before the session failed is checked against the
                    // database like any other.
                    if let Some(v) = verdict {
                        self.stats.received_only(v.nonce);
                    }
                    let (next, wait) = self.after_failure(current, &failure, &mut failures);
                    current = next;
                    wait
                }
            };
            if !self.sleep(wait).await {
                return;
            }
        }
    }

    /// A persistent session: enrol, then answer vouchd's quote requests until the end;
    /// reconnect after a jittered backoff when the session breaks.
    async fn persistent(self) {
        let Some(host) = self.hosts.get(self.index) else {
            return;
        };
        let source = source_address(self.index);
        let mut first = true;
        let mut failures = 0u32;
        let mut current = self.home();
        // Between quote requests vouchd is silent for one interval.
        let wait = self.interval + agent::ANSWER_TIMEOUT;
        loop {
            if Instant::now() >= self.end() {
                return;
            }
            let permit = self.enrolment_permit(first).await;
            let Some(server) = self.server(current) else {
                return;
            };
            let session = async {
                let mut link = agent::Link::connect(source, server).await?;
                agent::enroll(&mut link, host, false).await?;
                let mut asked = None;
                let mut permit = permit;
                loop {
                    match agent::next_event(&mut link, host, &self.boot, &mut asked, wait).await? {
                        Event::Attested(a) => {
                            drop(permit.take());
                            self.attested_by(current, &mut first, &a);
                        }
                        Event::Closed => {
                            return Err(Failure::Io("vouchd closed the session".into()));
                        }
                        Event::NextCheckIn(_) => {
                            return Err(Failure::Protocol(
                                "NextCheckIn in a persistent session".into(),
                            ));
                        }
                    }
                }
            };
            let until_end = self.end().saturating_duration_since(Instant::now());
            let result: Result<(), Failure> = tokio::select! {
                r = session => r,
                () = tokio::time::sleep(until_end) => Ok(()),
            };
            match result {
                Ok(()) => {
                    // The end moved earlier, or arrived: look again.
                    if Instant::now() >= self.end() {
                        return;
                    }
                }
                Err(failure) => {
                    let (next, wait) = self.after_failure(current, &failure, &mut failures);
                    current = next;
                    if !self.sleep(wait).await {
                        return;
                    }
                }
            }
        }
    }
}
