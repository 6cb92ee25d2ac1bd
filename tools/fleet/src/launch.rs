//! The vouchd a run attests to: one started on loopback with its own data directory (SQLite,
//! or a PostgreSQL URL), several replicas on a private PostgreSQL this module starts itself
//! (`--store postgres --replicas R`), or running ones (`--servers`). Also what a run measures
//! of them: memory and CPU, the database's size, SIGKILL of one replica, and the verdicts the
//! agents received that the database does not hold.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::vouchd::{self, Api, Process, Settings, VouchdError};

/// `--store postgres`: start a private PostgreSQL for the run (any other value is a URL).
pub const PRIVATE_POSTGRES: &str = "postgres";
/// The pool of PostgreSQL connections each replica keeps (`store_max_connections`).
pub const POOL_PER_REPLICA: u32 = 16;
/// The database the replicas share in the private cluster.
const DATABASE: &str = "vouchd";
/// The private cluster's superuser (trusted on loopback only).
const SUPERUSER: &str = "vouch";

/// Why the servers could not be started or measured.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error(transparent)]
    Vouchd(#[from] VouchdError),
    #[error("{0}")]
    Postgres(String),
    #[error("{what}: {error}")]
    Io { what: String, error: std::io::Error },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LaunchError {
    let what = what.into();
    move |error| LaunchError::Io { what, error }
}

/// Whether this process runs as root (initdb refuses root: the cluster then runs as the
/// `postgres` user that Debian's package creates).
fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The directory holding PostgreSQL's programs: `VOUCH_PG_BIN`, or Debian's newest.
fn postgres_bin() -> Result<PathBuf, LaunchError> {
    if let Some(dir) = std::env::var_os("VOUCH_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
                .filter(|bin| bin.join("initdb").is_file() && bin.join("pg_ctl").is_file())
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs.pop().ok_or_else(|| {
        LaunchError::Postgres(
            "--store postgres needs PostgreSQL's programs (no /usr/lib/postgresql/*/bin/initdb): \
             run `cargo xtask setup`, which installs Debian's postgresql, or set VOUCH_PG_BIN"
                .into(),
        )
    })
}

fn checked(what: &str, output: std::io::Result<Output>) -> Result<String, LaunchError> {
    let output = output.map_err(io(format!("running {what}")))?;
    if !output.status.success() {
        return Err(LaunchError::Postgres(format!(
            "{what} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// A private PostgreSQL cluster for one run: `initdb` in a temporary directory, `pg_ctl start`
/// on a free loopback port with its Unix socket in that directory, as an unprivileged user;
/// stopped and deleted when dropped. Nothing system-wide is started or changed. Durability
/// settings are PostgreSQL's defaults (fsync on), as an operator's database would run.
#[derive(Debug)]
pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    run_as: Option<&'static str>,
    port: u16,
}

impl Postgres {
    /// Makes and starts a cluster accepting `max_connections`, with an empty database for
    /// vouchd.
    pub fn start(max_connections: u32) -> Result<Self, LaunchError> {
        let bin = postgres_bin()?;
        let dir = tempfile::Builder::new()
            .prefix("vouch-fleet-pg-")
            .tempdir()
            .map_err(io("making the PostgreSQL directory"))?;
        let run_as = is_root().then_some("postgres");
        let mut cluster = Self {
            dir,
            bin,
            run_as,
            port: 0,
        };
        if let Some(user) = run_as {
            checked(
                "chown (the cluster's directory must belong to the postgres user: install Debian's postgresql)",
                Command::new("chown")
                    .arg(user)
                    .arg(cluster.dir.path())
                    .output(),
            )?;
        }
        let data = cluster.dir.path().join("data");
        checked(
            "initdb",
            cluster
                .command("initdb")
                .arg("-D")
                .arg(&data)
                .args(["-U", SUPERUSER, "-A", "trust", "-E", "UTF8", "--locale=C"])
                .output(),
        )?;
        // A port taken between the probe and the start fails the start: try a few.
        let mut last = None;
        for _ in 0..5 {
            cluster.port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(io("probing a port"))?
                .port();
            let options = format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections={max_connections}",
                cluster.port,
                cluster.dir.path().display()
            );
            let started = checked(
                "pg_ctl start",
                cluster
                    .command("pg_ctl")
                    .arg("-D")
                    .arg(&data)
                    .args(["-o", &options, "-l"])
                    .arg(cluster.dir.path().join("log"))
                    .args(["-w", "-t", "120", "start"])
                    .output(),
            );
            match started {
                Ok(_) => {
                    cluster.psql("postgres", &format!("CREATE DATABASE {DATABASE}"))?;
                    return Ok(cluster);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| LaunchError::Postgres("pg_ctl start failed".into())))
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        match self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(path);
                c
            }
            None => Command::new(path),
        }
    }

    /// vouchd's `store` setting for the cluster's database.
    pub fn url(&self) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{DATABASE}", self.port)
    }

    /// Runs one SQL statement with `psql` in `database`; its rows, one a line, fields
    /// separated by `|`.
    fn psql(&self, database: &str, sql: &str) -> Result<String, LaunchError> {
        checked(
            "psql",
            Command::new(self.bin.join("psql"))
                .args(["-X", "-q", "-A", "-t", "-h", "127.0.0.1", "-U", SUPERUSER])
                .arg("-p")
                .arg(self.port.to_string())
                .args(["-d", database, "-c", sql])
                .output(),
        )
    }

    /// The quote nonces (hex) of every result in vouchd's database.
    pub fn recorded_nonces(&self) -> Result<HashSet<String>, LaunchError> {
        let rows = self.psql(
            DATABASE,
            "SELECT nonce FROM attestations WHERE nonce IS NOT NULL",
        )?;
        Ok(rows.lines().map(|l| l.trim().to_owned()).collect())
    }

    /// The size of vouchd's database, MiB.
    pub fn database_mib(&self) -> f64 {
        self.psql(DATABASE, &format!("SELECT pg_database_size('{DATABASE}')"))
            .ok()
            .and_then(|s| s.trim().parse::<f64>().ok())
            .map_or(0.0, |bytes| bytes / (1024.0 * 1024.0))
    }

    /// CPU time (s) used so far by the server, its live backends and those that ended (the
    /// server reaps them: their time is its children's).
    pub fn cpu_s(&self) -> f64 {
        let Ok(pidfile) =
            std::fs::read_to_string(self.dir.path().join("data").join("postmaster.pid"))
        else {
            return 0.0;
        };
        let Some(postmaster) = pidfile
            .lines()
            .next()
            .and_then(|l| l.trim().parse::<u32>().ok())
        else {
            return 0.0;
        };
        let children: Vec<u32> = std::fs::read_dir("/proc")
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                    .filter(|&pid| parent(pid) == Some(postmaster))
                    .collect()
            })
            .unwrap_or_default();
        let live: f64 = children
            .into_iter()
            .filter_map(vouchd::usage)
            .map(|(_, cpu)| cpu)
            .sum();
        let own = stat_fields(postmaster).map_or(0.0, |f| {
            // utime, stime, cutime, cstime.
            (11..=14)
                .filter_map(|i| f.get(i)?.parse::<f64>().ok())
                .sum::<f64>()
        }) / clock_ticks();
        live + own
    }
}

/// The fields of /proc/`pid`/stat after the command's closing parenthesis (the state first).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
    )
}

/// The parent of process `pid`.
fn parent(pid: u32) -> Option<u32> {
    stat_fields(pid)?.get(1)?.parse().ok()
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let stopped = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "fast", "-w", "stop"])
            .output();
        if let Err(e) = checked("pg_ctl stop", stopped) {
            eprintln!(
                "vouch-fleet: cannot stop the private PostgreSQL in {}: {e}",
                self.dir.path().display()
            );
        }
    }
}

/// The vouchd processes of a run, their database, and what became of them.
#[derive(Debug)]
pub struct Servers {
    /// The management API of the first (where trust is configured, as an operator would).
    pub api: Api,
    /// Every agent link address, one per vouchd (replica).
    pub agents: Vec<SocketAddr>,
    /// The started processes; `None` once killed. Empty for running ones (`--servers`).
    processes: Vec<Option<Process>>,
    /// CPU time of the killed replicas when they were killed, s.
    killed_cpu_s: f64,
    /// Dropped after the processes (declaration order): the cluster they use.
    postgres: Option<Postgres>,
    /// Their data directories, deleted last.
    _dirs: Vec<tempfile::TempDir>,
}

/// What to start.
#[derive(Debug, Clone)]
pub struct Start<'a> {
    pub binary: &'a Path,
    pub work_dir: &'a Path,
    pub replicas: usize,
    /// `store`: unset (SQLite), [`PRIVATE_POSTGRES`], or a PostgreSQL URL.
    pub store: Option<&'a str>,
    pub interval_secs: u64,
    pub max_sessions: Option<usize>,
}

impl Servers {
    /// vouchd already running, configured through `api`.
    pub fn running(api: Api, agents: Vec<SocketAddr>) -> Self {
        Self {
            api,
            agents,
            processes: Vec::new(),
            killed_cpu_s: 0.0,
            postgres: None,
            _dirs: Vec::new(),
        }
    }

    /// Starts `start.replicas` vouchd processes on loopback, each with its own data directory
    /// and ports; more than one share a PostgreSQL database and the key-encryption key, as
    /// replicas must. The first bootstraps the database; the others are started once it
    /// serves, and configured by nothing but the database.
    pub fn start(
        start: &Start<'_>,
        progress: &(dyn Fn(String) + Send + Sync),
    ) -> Result<Self, LaunchError> {
        let replicas = start.replicas.max(1);
        let postgres = match start.store {
            Some(PRIVATE_POSTGRES) => {
                let max = POOL_PER_REPLICA
                    .saturating_mul(u32::try_from(replicas).unwrap_or(u32::MAX))
                    .saturating_add(20);
                let pg = Postgres::start(max)?;
                progress(format!(
                    "started a private PostgreSQL on 127.0.0.1:{} (max_connections {max})",
                    pg.port
                ));
                Some(pg)
            }
            _ => None,
        };
        let store = match (&postgres, start.store) {
            (Some(pg), _) => Some(pg.url()),
            (None, store) => store.map(str::to_owned),
        };
        if replicas > 1 && store.is_none() {
            return Err(LaunchError::Postgres(
                "--replicas needs a shared database: --store postgres (or a PostgreSQL URL)".into(),
            ));
        }
        std::fs::create_dir_all(start.work_dir)
            .map_err(io(start.work_dir.display().to_string()))?;
        let mut dirs = Vec::with_capacity(replicas);
        let mut processes = Vec::with_capacity(replicas);
        let mut extra_config = String::new();
        if store.is_some() {
            // Replicas share one key-encryption key (a PostgreSQL store needs one given).
            let shared = tempfile::Builder::new()
                .prefix("fleet-kek-")
                .tempdir_in(start.work_dir)
                .map_err(io(start.work_dir.display().to_string()))?;
            let kek = shared.path().join("key-encryption-key");
            let mut key = [0u8; 32];
            aws_lc_rs::rand::fill(&mut key)
                .map_err(|_| LaunchError::Postgres("the RNG failed".into()))?;
            write_private(&kek, &hex::encode(key))?;
            // Every result kept, so that each verdict an agent received can be looked up.
            extra_config = format!(
                "key_encryption_key_file = \"{}\"\nstore_max_connections = {POOL_PER_REPLICA}\nattestation_history_per_host = 0\n",
                kek.display()
            );
            dirs.push(shared);
        }
        let mut token = None;
        for index in 0..replicas {
            let dir = tempfile::Builder::new()
                .prefix("fleet-")
                .tempdir_in(start.work_dir)
                .map_err(io(start.work_dir.display().to_string()))?;
            let settings = Settings {
                interval_secs: start.interval_secs,
                max_sessions: start.max_sessions,
                store: store.clone(),
                extra_config: extra_config.clone(),
                token: token.clone(),
            };
            let process = Process::start(start.binary, dir.path(), &settings)?;
            if replicas > 1 {
                progress(format!(
                    "replica {index}: agent link {}, data directory {}",
                    process.agent_addr,
                    dir.path().display()
                ));
            }
            token.get_or_insert_with(|| process.api.token().to_owned());
            processes.push(process);
            dirs.push(dir);
        }
        let api = processes
            .first()
            .map(|p| p.api.clone())
            .ok_or_else(|| LaunchError::Postgres("no vouchd started".into()))?;
        Ok(Self {
            api,
            agents: processes.iter().map(|p| p.agent_addr).collect(),
            processes: processes.into_iter().map(Some).collect(),
            killed_cpu_s: 0.0,
            postgres,
            _dirs: dirs,
        })
    }

    /// Resident memory (MiB, the live processes) and CPU time so far (s, every process,
    /// killed ones until their end) of the started vouchd; `None` for running ones.
    pub fn usage(&self) -> Option<(f64, f64)> {
        if self.processes.is_empty() {
            return None;
        }
        let (rss, cpu) = self
            .processes
            .iter()
            .flatten()
            .filter_map(|p| vouchd::usage(p.pid()))
            .fold((0.0, 0.0), |(r, c), (rss, cpu)| (r + rss, c + cpu));
        Some((rss, cpu + self.killed_cpu_s))
    }

    /// CPU time so far of the private PostgreSQL, s.
    pub fn postgres_cpu_s(&self) -> Option<f64> {
        self.postgres.as_ref().map(Postgres::cpu_s)
    }

    /// Kills vouchd number `index` with SIGKILL.
    pub fn kill(&mut self, index: usize) -> Result<(), LaunchError> {
        let Some(slot) = self.processes.get_mut(index) else {
            return Err(LaunchError::Postgres(format!("no replica {index} to kill")));
        };
        if let Some(mut process) = slot.take() {
            let cpu = vouchd::usage(process.pid()).map_or(0.0, |u| u.1);
            process.kill()?;
            self.killed_cpu_s += cpu;
        }
        Ok(())
    }

    /// The database's size, MiB: the SQLite files of the first vouchd, or the PostgreSQL
    /// database started here.
    pub fn database_mib(&self) -> f64 {
        match (&self.postgres, self.processes.first()) {
            (Some(pg), _) => pg.database_mib(),
            (None, Some(Some(p))) => vouchd::database_mib(&p.data_dir),
            _ => 0.0,
        }
    }

    /// How many of the verdicts the agents received (their quote nonces) the database does
    /// not hold; `None` when the database is not the private PostgreSQL.
    pub fn lost(&self, received: &[Vec<u8>]) -> Result<Option<u64>, LaunchError> {
        let Some(pg) = &self.postgres else {
            return Ok(None);
        };
        let recorded = pg.recorded_nonces()?;
        let lost = received
            .iter()
            .filter(|nonce| !recorded.contains(&hex::encode(nonce)))
            .count();
        Ok(Some(u64::try_from(lost).unwrap_or(u64::MAX)))
    }
}

/// Writes a file only its owner may read.
fn write_private(path: &Path, contents: &str) -> Result<(), LaunchError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(contents.as_bytes()))
        .map_err(io(path.display().to_string()))
}
