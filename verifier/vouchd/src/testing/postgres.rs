//! A private PostgreSQL cluster for tests: `initdb` in a temporary directory, `pg_ctl start`
//! on a free loopback port with the Unix socket in that directory (`-k`), stopped (`pg_ctl
//! stop -m immediate`) and deleted on drop. Nothing system-wide is started or changed. As root
//! the cluster runs as the `postgres` user (initdb refuses root), otherwise as the caller.
//!
//! Debian's `postgresql` package provides the programs (`cargo xtask setup` installs it);
//! `VOUCH_PG_BIN` names another directory holding `initdb` and `pg_ctl`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use anyhow::{Context, bail};

/// The cluster's superuser; authentication is `trust`, on loopback only.
pub const SUPERUSER: &str = "vouch";

/// How a cluster authenticates and encrypts TCP connections.
#[derive(Debug, Clone, Default)]
pub struct PgClusterOptions {
    /// The superuser's password; set, TCP connections must give it (scram-sha-256).
    /// Unset, loopback connections are trusted.
    pub password: Option<String>,
    /// The server's certificate chain and key (PEM); set, TLS is on (and optional for clients).
    pub tls: Option<(String, String)>,
}

/// A running private cluster.
#[derive(Debug)]
pub struct PgCluster {
    dir: PathBuf,
    bin: PathBuf,
    run_as: Option<String>,
    password: Option<String>,
    /// The loopback port it listens on.
    pub port: u16,
    databases: AtomicU64,
}

/// The directory holding `initdb` and `pg_ctl`: `VOUCH_PG_BIN`, or Debian's newest.
pub fn bin_dir() -> anyhow::Result<PathBuf> {
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
    dirs.pop().context(
        "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): run `cargo xtask \
         setup`, which installs Debian's postgresql, or set VOUCH_PG_BIN to a directory with \
         initdb and pg_ctl",
    )
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

fn check(what: &str, output: std::io::Result<Output>) -> anyhow::Result<()> {
    let output = output.with_context(|| format!("cannot run {what}"))?;
    if !output.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// A port free on 127.0.0.1 just now.
fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl PgCluster {
    /// Makes and starts a cluster that trusts loopback connections, without TLS.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(&PgClusterOptions::default())
    }

    /// Makes and starts a cluster.
    pub fn start_with(options: &PgClusterOptions) -> anyhow::Result<Self> {
        let bin = bin_dir()?;
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "vouch-pg-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).with_context(|| format!("{}", dir.display()))?;
        let run_as = is_root().then(|| "postgres".to_owned());
        let mut cluster = Self {
            dir,
            bin,
            run_as,
            password: options.password.clone(),
            port: 0,
            databases: AtomicU64::new(0),
        };
        if let Some(user) = &cluster.run_as {
            check(
                "chown",
                Command::new("chown")
                    .arg(user)
                    .arg(&cluster.dir)
                    .output(),
            )
            .context("the cluster's directory must belong to the postgres user (useradd postgres, or install Debian's postgresql)")?;
        }
        let data = cluster.dir.join("data");
        let mut initdb = cluster.command("initdb");
        initdb.arg("-D").arg(&data).args([
            "-U",
            SUPERUSER,
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ]);
        match &options.password {
            Some(password) => {
                let file = cluster.dir.join("pwfile");
                cluster.write_private(&file, password)?;
                initdb
                    .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
                    .arg(format!("--pwfile={}", file.display()));
            }
            None => {
                initdb.args(["-A", "trust"]);
            }
        }
        check("initdb", initdb.output())?;
        let mut settings = String::new();
        if let Some((cert, key)) = &options.tls {
            let (cert_file, key_file) = (
                cluster.dir.join("server.crt"),
                cluster.dir.join("server.key"),
            );
            cluster.write_private(&cert_file, cert)?;
            cluster.write_private(&key_file, key)?;
            settings = format!(
                " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                cert_file.display(),
                key_file.display()
            );
        }
        // A port taken between the probe and the start fails the start: try a few.
        let mut last = None;
        for _ in 0..5 {
            cluster.port = free_port()?;
            let options = format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300{settings}",
                cluster.port,
                cluster.dir.display()
            );
            let started = check(
                "pg_ctl start",
                cluster
                    .command("pg_ctl")
                    .arg("-D")
                    .arg(&data)
                    .args(["-o", &options, "-l"])
                    .arg(cluster.dir.join("log"))
                    .args(["-w", "-t", "120", "start"])
                    .output(),
            );
            match started {
                Ok(()) => return Ok(cluster),
                Err(e) => last = Some(e),
            }
        }
        let log = std::fs::read_to_string(cluster.dir.join("log")).unwrap_or_default();
        Err(last
            .unwrap_or_else(|| anyhow::anyhow!("pg_ctl start failed"))
            .context(log))
    }

    /// One cluster shared by the tests of a process that run at the same time: started by the
    /// first, stopped when the last drops its handle.
    pub fn shared() -> anyhow::Result<Arc<Self>> {
        static SHARED: Mutex<Weak<PgCluster>> = Mutex::new(Weak::new());
        let mut shared = SHARED
            .lock()
            .map_err(|_| anyhow::anyhow!("the shared cluster's lock is poisoned"))?;
        if let Some(cluster) = shared.upgrade() {
            return Ok(cluster);
        }
        let cluster = Arc::new(Self::start()?);
        *shared = Arc::downgrade(&cluster);
        Ok(cluster)
    }

    /// Writes a file only the server's user may read.
    fn write_private(&self, path: &Path, contents: &str) -> anyhow::Result<()> {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::write(path, contents).with_context(|| format!("{}", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        if let Some(user) = &self.run_as {
            check("chown", Command::new("chown").arg(user).arg(path).output())?;
        }
        Ok(())
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(path);
                c
            }
            None => Command::new(path),
        }
    }

    /// The directory of the cluster's files (the data, the log, the Unix socket).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The URL of `database` (never with the password: see [`Self::password`]).
    pub fn url(&self, database: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates a new, empty database and returns its URL.
    pub fn create_database(&self) -> anyhow::Result<String> {
        let n = self.databases.fetch_add(1, Ordering::Relaxed);
        let name = format!("vouch_{n}");
        let mut config: postgres::Config = self.url("postgres").parse()?;
        if let Some(password) = &self.password {
            config.password(password);
        }
        let mut client = config
            .connect(postgres::NoTls)
            .context("cannot connect to the test cluster")?;
        client.batch_execute(&format!("CREATE DATABASE {name}"))?;
        Ok(self.url(&name))
    }

    /// The superuser's password, if the cluster has one.
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// The server's log so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let stopped = self
            .command("pg_ctl")
            .arg("-D")
            .arg(&data)
            .args(["-m", "immediate", "-w", "stop"])
            .output();
        if let Err(e) = check("pg_ctl stop", stopped) {
            eprintln!(
                "cannot stop the test PostgreSQL in {}: {e}",
                self.dir.display()
            );
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
