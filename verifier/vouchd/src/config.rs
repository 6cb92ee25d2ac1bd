//! The service configuration, read from a TOML file. Every field has a default, so an empty
//! file (or none) gives a working, locked-down verifier.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `vouchd.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the management API (HTTPS) listens.
    pub api_listen: SocketAddr,
    /// Where the agent link (TCP, vouch-proto frames) listens.
    pub agent_listen: SocketAddr,
    /// The data directory: database, TLS certificate and key, token-signing key.
    pub data_dir: PathBuf,
    /// The API's TLS certificate chain (PEM). Unset: a self-signed certificate is generated on
    /// first start and kept in the data directory.
    pub tls_cert: Option<PathBuf>,
    /// The API's TLS private key (PEM); set together with `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Subject alternative names of the generated self-signed certificate.
    pub tls_self_signed_names: Vec<String>,
    /// Lifetime of an issued attestation token, in seconds.
    pub token_lifetime_secs: u64,
    /// After a token-signing key rotation, how long the previous key stays in the JWKS and its
    /// tokens verify, in seconds. Unset: `token_lifetime_secs` (every token signed before the
    /// rotation stays valid until it expires). At most 30 days.
    pub signing_key_grace_secs: Option<u64>,
    /// How often every trusted host is attested again, in seconds.
    pub reattest_interval_secs: u64,
    /// A check-in agent (protocol v3) is told to come back after the re-attestation interval
    /// shortened by a random part of up to this percentage, so a fleet that powered on together
    /// spreads out (0 to 50).
    pub checkin_jitter_percent: u8,
    /// A check-in agent that was not attested is told to come back after this many seconds
    /// (at most the re-attestation interval), so its next attestation is pulled early.
    pub checkin_retry_secs: u64,
    /// An agent session that sends nothing for this long is closed, in seconds.
    pub agent_idle_timeout_secs: u64,
    /// The most agent sessions served at once; more connections wait in the kernel's backlog.
    /// 0 (the default): as many as the process's open-file limit allows (RLIMIT_NOFILE, raised
    /// to its hard limit at start, less what the API and the rest need). A larger number is
    /// capped by that limit, with a warning. Each open session costs one file and ~10 KiB.
    pub agent_max_sessions: usize,
    /// An agent must prove possession of its TPM (an attested or not-attested verdict on a quote
    /// its bound AK signed over a fresh nonce) within this many seconds of connecting, however
    /// busy it keeps the link; otherwise it is dropped and its slot freed.
    pub agent_handshake_timeout_secs: u64,
    /// The most sessions one network address may hold open before proving possession of a TPM;
    /// further connections from it are closed at once.
    pub agent_max_unproven_per_address: usize,
    /// At most this many refusals of agents are recorded as events per address and minute (the
    /// log keeps every one).
    pub agent_refusal_events_per_minute: u32,
    /// The most management API connections open at once; more wait in the kernel's backlog.
    pub api_max_connections: usize,
    /// An API client must send a request's headers within this many seconds of connecting or
    /// of its previous response.
    pub api_header_timeout_secs: u64,
    /// An API request, its body included, must be read and answered within this many seconds.
    pub api_request_timeout_secs: u64,
    /// An API connection that sends and receives nothing for this many seconds is closed.
    pub api_idle_timeout_secs: u64,
    /// Attestation results kept per host: its last this many, and every result that changed
    /// its state (attested or not). Older results are deleted as new ones are recorded, so the
    /// database stays bounded however long hosts are attested. 0 keeps every result.
    pub attestation_history_per_host: u32,
    /// The largest event log an agent may send, in bytes.
    pub max_event_log: usize,
    /// The key-encryption key (64 hex digits, mode 0600) that seals the secrets the database
    /// keeps (key servers' client keys). Unset: `key-encryption-key` in the data directory,
    /// made on first start. `VOUCHD_KEY_ENCRYPTION_KEY` in the environment takes precedence.
    pub key_encryption_key_file: Option<PathBuf>,
    /// During a rotation, the previous key-encryption key: what it sealed is sealed again
    /// under the current one on start.
    pub previous_key_encryption_key_file: Option<PathBuf>,
    /// Where every event is POSTed as JSON (http or https), if set.
    pub webhook_url: Option<String>,
    /// The database: unset, the SQLite file in the data directory; `postgres://user@host:port/
    /// database?sslmode=require` (libpq's URL form), a PostgreSQL database that several vouchd
    /// replicas may share. The password does not belong here: see `store_password_file`.
    pub store: Option<String>,
    /// A file holding the PostgreSQL password (its first line). `VOUCHD_STORE_PASSWORD` in the
    /// environment takes precedence.
    pub store_password_file: Option<PathBuf>,
    /// CA certificates (PEM) trusted for the PostgreSQL server's TLS certificate, besides the
    /// system's.
    pub store_ca_file: Option<PathBuf>,
    /// The most PostgreSQL connections this vouchd keeps open.
    pub store_max_connections: u32,
    /// On SIGTERM or SIGINT, how long attestations and requests in flight may take to finish
    /// before vouchd exits anyway, in seconds.
    pub shutdown_grace_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            api_listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            agent_listen: SocketAddr::from(([0, 0, 0, 0], 7443)),
            data_dir: PathBuf::from("/var/lib/vouchd"),
            tls_cert: None,
            tls_key: None,
            tls_self_signed_names: vec!["localhost".into()],
            token_lifetime_secs: 300,
            signing_key_grace_secs: None,
            reattest_interval_secs: 600,
            checkin_jitter_percent: 10,
            checkin_retry_secs: 30,
            attestation_history_per_host: 20,
            agent_idle_timeout_secs: 30,
            agent_max_sessions: 0,
            agent_handshake_timeout_secs: 15,
            agent_max_unproven_per_address: 8,
            agent_refusal_events_per_minute: 6,
            api_max_connections: 1024,
            api_header_timeout_secs: 10,
            api_request_timeout_secs: 20,
            api_idle_timeout_secs: 20,
            max_event_log: 256 * 1024,
            key_encryption_key_file: None,
            previous_key_encryption_key_file: None,
            webhook_url: None,
            store: None,
            store_password_file: None,
            store_ca_file: None,
            store_max_connections: 16,
            shutdown_grace_secs: 10,
        }
    }
}

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config = Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse { source, .. } => ConfigError::Parse {
                path: path.to_owned(),
                source,
            },
            other => other,
        })?;
        Ok(config)
    }

    /// Parses and checks a configuration text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::new(),
            source: Box::new(e),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(ConfigError::Invalid(
                "tls_cert and tls_key must be set together".into(),
            ));
        }
        if self.token_lifetime_secs == 0 || self.token_lifetime_secs > 86_400 {
            return Err(ConfigError::Invalid(
                "token_lifetime_secs must be between 1 and 86400".into(),
            ));
        }
        if self.signing_key_grace_secs.is_some_and(|g| g > 30 * 86_400) {
            return Err(ConfigError::Invalid(
                "signing_key_grace_secs must be at most 2592000 (30 days)".into(),
            ));
        }
        if self.reattest_interval_secs < 10 {
            return Err(ConfigError::Invalid(
                "reattest_interval_secs must be at least 10".into(),
            ));
        }
        if self.checkin_jitter_percent > 50 || self.checkin_retry_secs == 0 {
            return Err(ConfigError::Invalid(
                "checkin_jitter_percent must be at most 50 and checkin_retry_secs at least 1"
                    .into(),
            ));
        }
        if self.agent_idle_timeout_secs == 0 {
            return Err(ConfigError::Invalid(
                "agent_idle_timeout_secs must be at least 1".into(),
            ));
        }
        for (name, value) in [
            (
                "agent_handshake_timeout_secs",
                self.agent_handshake_timeout_secs,
            ),
            ("api_header_timeout_secs", self.api_header_timeout_secs),
            ("api_request_timeout_secs", self.api_request_timeout_secs),
            ("api_idle_timeout_secs", self.api_idle_timeout_secs),
        ] {
            if value == 0 || value > 3600 {
                return Err(ConfigError::Invalid(format!(
                    "{name} must be between 1 and 3600"
                )));
            }
        }
        if self.agent_max_unproven_per_address == 0 || self.api_max_connections == 0 {
            return Err(ConfigError::Invalid(
                "agent_max_unproven_per_address and api_max_connections must be at least 1".into(),
            ));
        }
        if let Some(store) = &self.store {
            if !(store.starts_with("postgres://") || store.starts_with("postgresql://")) {
                return Err(ConfigError::Invalid(
                    "store must be a postgres:// URL (or unset, for the SQLite file in data_dir)"
                        .into(),
                ));
            }
            let parsed = store
                .parse::<postgres::Config>()
                .map_err(|e| ConfigError::Invalid(format!("store: {e}")))?;
            if parsed.get_password().is_some() {
                return Err(ConfigError::Invalid(
                    "store: the password does not belong in the URL; put it in \
                     store_password_file or VOUCHD_STORE_PASSWORD"
                        .into(),
                ));
            }
        }
        if self.store_max_connections == 0 || self.store_max_connections > 1000 {
            return Err(ConfigError::Invalid(
                "store_max_connections must be between 1 and 1000".into(),
            ));
        }
        Ok(())
    }

    pub fn token_lifetime(&self) -> Duration {
        Duration::from_secs(self.token_lifetime_secs)
    }

    /// How long a retired token-signing key stays in the JWKS, seconds.
    pub fn signing_key_grace_secs(&self) -> u64 {
        self.signing_key_grace_secs
            .unwrap_or(self.token_lifetime_secs)
    }

    pub fn reattest_interval(&self) -> Duration {
        Duration::from_secs(self.reattest_interval_secs)
    }

    pub fn agent_idle_timeout(&self) -> Duration {
        Duration::from_secs(self.agent_idle_timeout_secs)
    }

    pub fn agent_handshake_timeout(&self) -> Duration {
        Duration::from_secs(self.agent_handshake_timeout_secs)
    }

    pub fn api_header_timeout(&self) -> Duration {
        Duration::from_secs(self.api_header_timeout_secs)
    }

    pub fn api_request_timeout(&self) -> Duration {
        Duration::from_secs(self.api_request_timeout_secs)
    }

    pub fn api_idle_timeout(&self) -> Duration {
        Duration::from_secs(self.api_idle_timeout_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
    }

    #[test]
    fn the_example_file_states_the_defaults() {
        let example = Config::parse(include_str!("../vouchd.example.toml")).unwrap();
        assert_eq!(example, Config::default());
    }

    #[test]
    fn the_store_is_a_postgres_url_without_a_password() {
        let c =
            Config::parse(r#"store = "postgres://vouchd@db:5432/vouchd?sslmode=require""#).unwrap();
        assert!(c.store.is_some_and(|s| s.ends_with("sslmode=require")));
        for (bad, says) in [
            (r#"store = "mysql://db/x""#, "postgres:// URL"),
            (
                r#"store = "postgres://vouchd:secret@db/vouchd""#,
                "password",
            ),
            ("store_max_connections = 0", "store_max_connections"),
        ] {
            let err = Config::parse(bad).unwrap_err().to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn fields_are_read() {
        let c = Config::parse(
            r#"
            api_listen = "0.0.0.0:9443"
            agent_listen = "127.0.0.1:9000"
            data_dir = "/tmp/v"
            token_lifetime_secs = 60
            reattest_interval_secs = 120
            "#,
        )
        .unwrap();
        assert_eq!(c.api_listen.port(), 9443);
        assert_eq!(c.agent_listen.port(), 9000);
        assert_eq!(c.data_dir, PathBuf::from("/tmp/v"));
        assert_eq!(c.token_lifetime(), Duration::from_secs(60));
        assert_eq!(c.reattest_interval(), Duration::from_secs(120));
    }

    #[test]
    fn unknown_and_inconsistent_settings_are_refused() {
        assert!(matches!(
            Config::parse("tokn_lifetime_secs = 5"),
            Err(ConfigError::Parse { .. })
        ));
        assert!(matches!(
            Config::parse("tls_cert = \"/a.pem\""),
            Err(ConfigError::Invalid(_))
        ));
        assert!(matches!(
            Config::parse("token_lifetime_secs = 0"),
            Err(ConfigError::Invalid(_))
        ));
    }
}
