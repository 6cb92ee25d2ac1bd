//! The commands that talk to vouchd's management API. Each prints a summary for a person, or
//! the server's JSON with `--json`.

use std::path::{Path, PathBuf};

use reqwest::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use vouch::signature::HostSigner;
use vouch_api::{
    AttestationRecord, CaCert, Cluster, ClusterChange, ClusterEk, ClusterKeyProvider, ClusterView,
    CreatedKmsKey, CreatedToken, DeepHealth, EkEntryKind, Event, Health, HostState, HostStatus,
    HostToken, HostView, KeyProvider, KeyServer, ManagementServer, NewCaCerts, NewCluster,
    NewClusterEk, NewHost, NewKeyProvider, NewKeyServer, NewKmsKey, NewManagementServer,
    NewPrimaryKey, NewPrincipal, NewToken, Principal, PrincipalKind, SetClusterKeyProvider,
    SigningKeys, SoftwareVersionBody, SoftwareVersionRecord, TlsCertificate, TokenInfo,
    WrappingMode,
};

use crate::client::{Api, ServerOpts, encode, pretty, seg};
use crate::{Failure, read_file};

// ---- Command lines.

#[derive(Debug, clap::Subcommand)]
pub enum PrincipalCmd {
    /// Create a principal (a person or a service account).
    Add {
        name: String,
        /// A group to put it in (repeatable), e.g. TrustedAdmins.
        #[arg(long = "group", value_name = "GROUP")]
        groups: Vec<String>,
        /// What it is.
        #[arg(long, default_value = "person", value_parser = ["person", "service"])]
        kind: String,
    },
    /// List the principals and their groups.
    List,
    /// Show one principal.
    Show { name: String },
    /// Delete a principal and its tokens.
    Remove { name: String },
    /// Add a principal to a group.
    AddGroup { name: String, group: String },
    /// Remove a principal from a group.
    RemoveGroup { name: String, group: String },
}

#[derive(Debug, clap::Subcommand)]
pub enum TokenCmd {
    /// Make a bearer token for a principal; the token is printed this once.
    Create {
        principal: String,
        /// What the token is for.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List a principal's tokens (ids and descriptions; never the secrets).
    List { principal: String },
    /// Revoke a token by its id.
    Revoke {
        id: String,
        /// The token's principal (found by searching every principal when not given).
        #[arg(long)]
        principal: Option<String>,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum ManagementServerCmd {
    /// Register a management server: its id and its ECDSA P-256 signing certificate (PEM).
    Add {
        id: String,
        certificate: PathBuf,
        /// Once a management server is registered, another needs a registered one's signature.
        #[command(flatten)]
        signing: SigningArgs,
    },
    /// List the registered management servers.
    List,
    /// Unregister a management server.
    Remove { id: String },
    /// Make a management server's P-256 signing key and self-signed certificate (offline).
    Keygen {
        id: String,
        /// Where to write the private key (PKCS#8 PEM, mode 0600).
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// Where to write the certificate (PEM), for `management-server add`.
        #[arg(long, value_name = "FILE")]
        cert: PathBuf,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum ClusterCmd {
    /// Create a cluster: a trust configuration for a group of hosts.
    Add {
        name: String,
        /// The PCRs a software version must match (default 0,1: those a Vouch firmware image
        /// is measured into, see `vouch image add`); for Linux/UEFI hosts the PCRs given to
        /// `vouch software from-eventlog`, e.g. --pcrs 0,2,4,7.
        #[arg(long, value_delimiter = ',')]
        pcrs: Option<Vec<u32>>,
        /// The PCR bank compared (default sha256).
        #[arg(long)]
        bank: Option<String>,
    },
    /// Change what a cluster compares: its PCRs or bank. Accepted software versions must give
    /// references for the new PCRs; hosts are judged by the new settings from their next
    /// attestation on.
    Set {
        name: String,
        /// The PCRs a software version must match, e.g. --pcrs 0,1.
        #[arg(long, value_delimiter = ',')]
        pcrs: Option<Vec<u32>>,
        /// The PCR bank compared.
        #[arg(long)]
        bank: Option<String>,
    },
    /// Disable a cluster without deleting it: its hosts are not attested (their attested
    /// state ends now) and get no keys until it is enabled.
    Disable { name: String },
    /// Enable a disabled cluster: its hosts are attested again from their next attestation.
    Enable { name: String },
    /// Print a cluster's trust configuration as JSON (PCRs, bank, enabled, TPM CAs, EKs,
    /// software versions, key provider; no hosts), for `cluster import` on another vouchd.
    Export { name: String },
    /// Create a cluster from a `cluster export` file, all or nothing. Its key provider must
    /// exist on this vouchd; hosts are added afterwards, as always.
    Import {
        file: PathBuf,
        /// The new cluster's name (default: the exported cluster's).
        #[arg(long)]
        name: Option<String>,
    },
    /// List the clusters.
    List,
    /// Show a cluster and a count of its trust configuration.
    Show { name: String },
    /// Delete a cluster. One with hosts is removed only with --force, signed by a management
    /// server (every host removed is a `host.removed` event).
    Remove {
        name: String,
        /// Remove the cluster's hosts with it.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        signing: SigningArgs,
    },
    /// Set the cluster's default key provider (configuring the cluster with it): its attested
    /// hosts' key requests that name no provider use it.
    SetProvider { name: String, provider: String },
    /// Remove the cluster's default key provider (other providers stay, by name only).
    ClearProvider { name: String },
    /// Configure the cluster with one more key provider, which its hosts' key requests may
    /// name (`"provider": NAME`); the default stays.
    AddProvider { name: String, provider: String },
    /// Remove a key provider from the cluster (not its default: `set-provider` another first).
    RemoveProvider { name: String, provider: String },
    /// The cluster's key providers and which is the default.
    Providers { name: String },
}

#[derive(Debug, clap::Subcommand)]
pub enum KmsCmd {
    /// Add a key server (KMS): KMIP endpoints tried in order, the client certificate and key
    /// vouchd presents, and the CA that signs the key server's certificate.
    Add {
        name: String,
        /// host:port (repeatable; replicas, tried in order).
        #[arg(long = "endpoint", value_name = "HOST:PORT", required = true)]
        endpoints: Vec<String>,
        /// vouchd's client certificate (chain), PEM.
        #[arg(long)]
        client_cert: PathBuf,
        /// vouchd's client key, PEM.
        #[arg(long)]
        client_key: PathBuf,
        /// The CA certificate(s) of the key server, PEM (`--ca` is vouchd's own CA).
        #[arg(long)]
        kms_ca: PathBuf,
        /// Add it without vouchd first connecting to it (TLS with the client certificate).
        #[arg(long)]
        no_check: bool,
    },
    /// List the key servers.
    List,
    /// Each key server's endpoints (replicas) as vouchd reaches them now, and its
    /// certificates' expiry (see `vouch health --deep`); exit 1 when one answers on none. The
    /// state of each provider's key and its last error: `vouch provider status`.
    Status,
    /// Remove a key server no provider uses.
    Remove { name: String },
    /// Make vouchd's KMIP client key (mode 0600, never overwritten without --force) and a
    /// certificate signing request (PKCS#10) for the key server's CA to sign. Offline: needs
    /// no vouchd.
    Csr(crate::kms_csr::CsrArgs),
}

#[derive(Debug, clap::Subcommand)]
pub enum SigningKeyCmd {
    /// The current token-signing key and the one a rotation retired (with the end of its
    /// grace period).
    Show,
    /// Rotate: a new key signs attestation tokens from now on (on every replica within
    /// seconds); the old one stays in the JWKS, and its tokens verify, for vouchd's
    /// signing_key_grace_secs. Refused (exit 1) while an earlier rotation's grace period runs.
    Rotate,
}

#[derive(Debug, clap::Subcommand)]
pub enum ProviderCmd {
    /// Add a trusted key provider: a name and an existing primary key on a key server. vouchd
    /// checks that the key exists and is an active AES-256 key usable in the wrapping mode.
    Add {
        name: String,
        /// The key server.
        #[arg(long)]
        kms: String,
        /// The primary key's identifier on the key server.
        #[arg(long)]
        key_id: String,
        /// local: vouchd gets the key and caches it; remote: the key server encrypts.
        #[arg(long, default_value = "local", value_parser = ["local", "remote"])]
        wrapping: String,
        /// Local wrapping: check the key's state again after this many seconds (default 300).
        #[arg(long)]
        refresh: Option<i64>,
        /// Local wrapping: serve a cached key at most this many seconds, also while the key
        /// server is unreachable (default 3600).
        #[arg(long)]
        lifetime: Option<i64>,
    },
    /// List the key providers.
    List,
    /// Each provider's health, checked now: its key server's endpoints (replicas), its primary
    /// key's state, its last failure and when; exit 1 when a provider's key is not usable.
    Status {
        /// One provider (default: every one).
        name: Option<String>,
    },
    /// Remove a key provider no cluster uses.
    Remove { name: String },
    /// Create and activate an AES-256 key on a key server, for use as a primary key (a
    /// convenience: the key server's administrator may provision it instead).
    CreateKey {
        /// The key server.
        #[arg(long)]
        kms: String,
        /// A KMIP Name for the key.
        #[arg(long)]
        name: Option<String>,
    },
    /// Rotate: a new primary key encrypts from now on; the old one still decrypts (rewrap).
    Rotate {
        name: String,
        #[arg(long)]
        key_id: String,
    },
}

#[derive(Debug, clap::Args)]
pub struct ClusterArg {
    /// The cluster.
    #[arg(long)]
    pub cluster: String,
}

#[derive(Debug, clap::Subcommand)]
pub enum TpmCaCmd {
    /// Trust TPM manufacturer CA certificates (one or more in a PEM file) in a cluster.
    Add {
        #[command(flatten)]
        c: ClusterArg,
        file: PathBuf,
    },
    /// List a cluster's TPM CA certificates.
    List {
        #[command(flatten)]
        c: ClusterArg,
    },
    /// Remove a TPM CA certificate by its id.
    Remove {
        #[command(flatten)]
        c: ClusterArg,
        id: String,
    },
}

#[derive(Debug, clap::Args)]
#[group(id = "ek_kind", required = true, multiple = false)]
pub struct EkKind {
    /// An EK certificate (mode 2: the host's certificate must also chain to a TPM CA).
    #[arg(long)]
    certificate: bool,
    /// An EK public key, SPKI PEM (mode 2).
    #[arg(long)]
    public_key: bool,
    /// A bare EK public key, SPKI PEM (mode 3: TPMs without an EK certificate).
    #[arg(long)]
    bare_public_key: bool,
}

#[derive(Debug, clap::Args)]
pub struct EkAddArgs {
    #[command(flatten)]
    c: ClusterArg,
    #[command(flatten)]
    kind: EkKind,
    /// The PEM file.
    file: PathBuf,
    /// Confirm that listing the cluster's first EK certificate or public key switches it to
    /// mode 2, where only listed TPMs are admitted.
    #[arg(long)]
    yes: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum SoftwareCmd {
    /// Accept a software version in a cluster: the JSON `vouch image add` prints.
    Add {
        #[command(flatten)]
        c: ClusterArg,
        file: PathBuf,
        /// The version's name (default: the file's `name`).
        #[arg(long)]
        version: Option<String>,
        /// Replace an accepted version of the same name (without it, that is refused).
        #[arg(long)]
        replace: bool,
    },
    /// Derive a software version from a reference host's TCG event log: the PCR values and
    /// event digests a host that boots the same way presents. Prints it as JSON (what
    /// `software add` reads), or with --cluster uploads it to vouchd.
    FromEventlog(crate::software_cmd::FromEventlogArgs),
    /// List a cluster's accepted software versions.
    List {
        #[command(flatten)]
        c: ClusterArg,
    },
    /// Stop accepting a software version.
    Remove {
        #[command(flatten)]
        c: ClusterArg,
        version: String,
    },
}

/// A management server's signature, which host operations need.
#[derive(Debug, clap::Args)]
pub struct SigningArgs {
    /// The management server's private key (PEM, ECDSA P-256).
    #[arg(long, env = "VOUCH_SIGNING_KEY", value_name = "KEY.pem")]
    signing_key: Option<PathBuf>,
    /// The management server's registered id.
    #[arg(long, env = "VOUCH_SERVER_ID", value_name = "ID")]
    server_id: Option<String>,
}

#[derive(Debug, clap::Args)]
#[group(id = "ek_source", required = true, multiple = false)]
pub struct HostEk {
    /// The host's EK hash (64 hex digits).
    #[arg(long, value_name = "HASH")]
    ek_hash: Option<String>,
    /// The host's EK certificate (PEM); its EK hash is computed by vouchd.
    #[arg(long, value_name = "FILE")]
    ek_certificate: Option<PathBuf>,
}

#[derive(Debug, clap::Subcommand)]
pub enum HostCmd {
    /// Add a host to a cluster (signed by a management server).
    Add {
        /// The host's name (default: `ek-` and the first 16 digits of the EK hash, or the EK
        /// certificate file's name without its extension).
        name: Option<String>,
        #[command(flatten)]
        c: ClusterArg,
        #[command(flatten)]
        ek: HostEk,
        #[command(flatten)]
        signing: SigningArgs,
    },
    /// Remove a host from a cluster (signed by a management server).
    Remove {
        /// The host: its EK hash or its name.
        host: String,
        #[command(flatten)]
        c: ClusterArg,
        #[command(flatten)]
        signing: SigningArgs,
    },
    /// List a cluster's hosts.
    List {
        #[command(flatten)]
        c: ClusterArg,
    },
    /// Print a host's current attestation token (a JWT).
    Token {
        /// The host: its EK hash or its name.
        host: String,
    },
}

#[derive(Debug, clap::Args)]
pub struct EventsArgs {
    /// Only events after this id.
    #[arg(long, default_value_t = 0)]
    after: i64,
    /// At most this many (1 to 1000).
    #[arg(long, default_value_t = 100)]
    limit: u32,
    /// Keep printing new events as they happen (polls every 2 s; with --json one per line).
    #[arg(long, short)]
    follow: bool,
}

// ---- Handlers.

fn connect(opts: &ServerOpts) -> Result<Api, Failure> {
    Api::connect(opts, true)
}

/// A flag's value as its wire type (clap has already checked it is one of the names).
fn wire<T>(flag: &str, value: &str, parse: fn(&str) -> Option<T>) -> Result<T, Failure> {
    parse(value).ok_or_else(|| Failure::Input(format!("{flag} {value}: not a value vouchd knows")))
}

/// `vouch health`: the server is up and its certificate is the one expected.
pub fn health(opts: &ServerOpts, deep: bool) -> Result<(), Failure> {
    if !deep {
        let api = Api::connect(opts, false)?;
        let v: Health = api.get("/healthz")?;
        done(&api, &v, || format!("vouchd is {}", v.status));
        return Ok(());
    }
    let api = connect(opts)?;
    let v: DeepHealth = api.get("/v1/health")?;
    done(&api, &v, || {
        let mut lines = vec![
            format!("vouchd is {}", v.status),
            format!("  store                {}", v.store),
        ];
        for k in &v.key_servers {
            for e in &k.endpoints {
                lines.push(format!(
                    "  key server {} {}  {}",
                    k.name,
                    e.endpoint,
                    match &e.error {
                        None => "reachable".to_owned(),
                        Some(why) => format!("UNREACHABLE: {why}"),
                    }
                ));
            }
        }
        for c in &v.certificates {
            let left = if c.days_left < 0 {
                "EXPIRED".to_owned()
            } else {
                format!("{} days left", c.days_left)
            };
            lines.push(format!(
                "  certificate {}  {}  expires {} ({left})",
                c.what,
                c.subject,
                utc(c.not_after)
            ));
        }
        lines.join("\n")
    });
    if v.status == "ok" {
        Ok(())
    } else {
        Err(Failure::Refused(format!(
            "vouchd is {}: see above",
            v.status
        )))
    }
}

pub fn whoami(opts: &ServerOpts) -> Result<(), Failure> {
    let api = connect(opts)?;
    let p: Principal = api.get("/v1/whoami")?;
    done(&api, &p, || {
        format!(
            "{} ({}) groups: {}",
            p.name,
            p.kind.as_str(),
            groups(&p.groups)
        )
    });
    Ok(())
}

pub fn principal(opts: &ServerOpts, cmd: &PrincipalCmd) -> Result<(), Failure> {
    let api = connect(opts)?;
    match cmd {
        PrincipalCmd::Add {
            name,
            groups: g,
            kind,
        } => {
            let body = NewPrincipal {
                name: name.clone(),
                kind: wire("--kind", kind, PrincipalKind::parse)?,
                groups: g.clone(),
            };
            let p: Principal = api.post("/v1/principals", &body)?;
            done(&api, &p, || {
                format!(
                    "principal {} created; groups: {}",
                    p.name,
                    groups(&p.groups)
                )
            });
        }
        PrincipalCmd::List => {
            let v: Vec<Principal> = api.get("/v1/principals")?;
            list(&api, &v, &["NAME", "KIND", "GROUPS", "CREATED"], |p| {
                vec![
                    p.name.clone(),
                    p.kind.as_str().into(),
                    groups(&p.groups),
                    utc(p.created_at),
                ]
            });
        }
        PrincipalCmd::Show { name } => {
            let p: Principal = api.get(&format!("/v1/principals/{}", seg(name)))?;
            done(&api, &p, || {
                format!(
                    "{} ({})\n  groups   {}\n  created  {}",
                    p.name,
                    p.kind.as_str(),
                    groups(&p.groups),
                    utc(p.created_at)
                )
            });
        }
        PrincipalCmd::Remove { name } => {
            api.delete(&format!("/v1/principals/{}", seg(name)))?;
            ok(&api, &format!("principal {name} deleted, with its tokens"));
        }
        PrincipalCmd::AddGroup { name, group } => {
            api.send::<()>(
                Method::PUT,
                &format!("/v1/principals/{}/groups/{}", seg(name), seg(group)),
                None,
                None,
            )?;
            ok(&api, &format!("{name} is in {group}"));
        }
        PrincipalCmd::RemoveGroup { name, group } => {
            api.delete(&format!(
                "/v1/principals/{}/groups/{}",
                seg(name),
                seg(group)
            ))?;
            ok(&api, &format!("{name} is no longer in {group}"));
        }
    }
    Ok(())
}

fn tokens_of(api: &Api, principal: &str) -> Result<Vec<TokenInfo>, Failure> {
    api.get(&format!("/v1/principals/{}/tokens", seg(principal)))
}

pub fn token(opts: &ServerOpts, cmd: &TokenCmd) -> Result<(), Failure> {
    let api = connect(opts)?;
    match cmd {
        TokenCmd::Create {
            principal,
            description,
        } => {
            let body = NewToken {
                description: description.clone(),
            };
            let t: CreatedToken =
                api.post(&format!("/v1/principals/{}/tokens", seg(principal)), &body)?;
            if api.json {
                crate::output::emit_line(format_args!("{}", pretty(&t)));
            } else {
                // The secret alone on stdout, so `VOUCH_TOKEN=$(vouch token create p)` works.
                crate::output::stderr(format_args!(
                    "token {} for {} (shown this once; keep it secret):",
                    t.id, t.principal
                ));
                crate::output::emit_line(format_args!("{}", t.token));
            }
        }
        TokenCmd::List { principal } => {
            let v = tokens_of(&api, principal)?;
            list(
                &api,
                &v,
                &["ID", "PRINCIPAL", "DESCRIPTION", "CREATED"],
                |t| {
                    vec![
                        t.id.clone(),
                        t.principal.clone(),
                        t.description.clone(),
                        utc(t.created_at),
                    ]
                },
            );
        }
        TokenCmd::Revoke { id, principal } => {
            let owner = match principal {
                Some(p) => p.clone(),
                None => find_token_owner(&api, id)?,
            };
            api.delete(&format!(
                "/v1/principals/{}/tokens/{}",
                seg(&owner),
                seg(id)
            ))?;
            ok(&api, &format!("token {id} of {owner} revoked"));
        }
    }
    Ok(())
}

fn find_token_owner(api: &Api, id: &str) -> Result<String, Failure> {
    let principals: Vec<Principal> = api.get("/v1/principals")?;
    for p in principals {
        if tokens_of(api, &p.name)?.iter().any(|t| t.id == id) {
            return Ok(p.name);
        }
    }
    Err(Failure::Refused(format!(
        "no principal has a token with id {id}; see `vouch token list PRINCIPAL`"
    )))
}

pub fn management_server(opts: &ServerOpts, cmd: &ManagementServerCmd) -> Result<(), Failure> {
    if let ManagementServerCmd::Keygen { id, key, cert } = cmd {
        return keygen(id, key, cert);
    }
    let api = connect(opts)?;
    match cmd {
        ManagementServerCmd::Add {
            id,
            certificate,
            signing,
        } => {
            let body = NewManagementServer {
                id: id.clone(),
                certificate_pem: read_text(certificate, "certificate")?,
            };
            let m: ManagementServer = host_op(
                &api,
                Method::POST,
                "/v1/management-servers",
                Some(&encode(&body)?),
                signing,
            )?;
            done(&api, &m, || {
                format!(
                    "management server {} registered ({}, certificate SHA-256 {})",
                    m.id, m.subject, m.fingerprint
                )
            });
        }
        ManagementServerCmd::List => {
            let v: Vec<ManagementServer> = api.get("/v1/management-servers")?;
            list(
                &api,
                &v,
                &["ID", "SUBJECT", "FINGERPRINT", "CREATED"],
                |m| {
                    vec![
                        m.id.clone(),
                        m.subject.clone(),
                        m.fingerprint.clone(),
                        utc(m.created_at),
                    ]
                },
            );
        }
        ManagementServerCmd::Remove { id } => {
            api.delete(&format!("/v1/management-servers/{}", seg(id)))?;
            ok(&api, &format!("management server {id} removed"));
        }
        ManagementServerCmd::Keygen { .. } => {}
    }
    Ok(())
}

fn keygen(id: &str, key: &Path, cert: &Path) -> Result<(), Failure> {
    let fail = |e: rcgen::Error| Failure::Input(format!("cannot make the key: {e}"));
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(fail)?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(fail)?;
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("vouch management server {id}"),
    );
    let certificate = params.self_signed(&pair).map_err(fail)?;
    write_new(key, pair.serialize_pem().as_bytes(), 0o600)?;
    write_new(cert, certificate.pem().as_bytes(), 0o644)?;
    crate::output::emit_line(format_args!(
        "wrote {} and {}; register it with: vouch management-server add {id} {}",
        key.display(),
        cert.display(),
        cert.display()
    ));
    Ok(())
}

/// Writes a file that must not exist yet.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), Failure> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| Failure::Input(format!("cannot create {}: {e}", path.display())))?;
    f.write_all(bytes)
        .map_err(|e| Failure::Input(format!("cannot write {}: {e}", path.display())))
}

pub fn cluster(opts: &ServerOpts, cmd: &ClusterCmd) -> Result<(), Failure> {
    let api = connect(opts)?;
    match cmd {
        ClusterCmd::Add { name, pcrs, bank } => {
            // Unset options are null, which vouchd reads as its defaults.
            let body = NewCluster {
                name: name.clone(),
                pcrs: pcrs.clone(),
                bank: bank.clone(),
            };
            let c: Cluster = api.post("/v1/clusters", &body)?;
            done(&api, &c, || {
                format!(
                    "cluster {} created: PCRs {} of bank {}",
                    c.name,
                    pcr_list(&c.pcrs),
                    c.bank
                )
            });
        }
        ClusterCmd::Set { name, pcrs, bank } => {
            if pcrs.is_none() && bank.is_none() {
                return Err(Failure::Input(
                    "nothing to change: give --pcrs or --bank".into(),
                ));
            }
            let body = ClusterChange {
                pcrs: pcrs.clone(),
                bank: bank.clone(),
                enabled: None,
            };
            let c: Cluster = api.patch(&format!("/v1/clusters/{}", seg(name)), &body)?;
            done(&api, &c, || {
                format!(
                    "cluster {} now compares PCRs {} of bank {}",
                    c.name,
                    pcr_list(&c.pcrs),
                    c.bank
                )
            });
        }
        ClusterCmd::Disable { name } | ClusterCmd::Enable { name } => {
            let enabled = matches!(cmd, ClusterCmd::Enable { .. });
            let body = ClusterChange {
                enabled: Some(enabled),
                ..ClusterChange::default()
            };
            let c: Cluster = api.patch(&format!("/v1/clusters/{}", seg(name)), &body)?;
            done(&api, &c, || {
                if enabled {
                    format!(
                        "cluster {} enabled: its hosts are attested again from their next attestation",
                        c.name
                    )
                } else {
                    format!(
                        "cluster {} disabled: its hosts are not attested and get no keys",
                        c.name
                    )
                }
            });
        }
        ClusterCmd::Export { name } => {
            let export = crate::cluster_transfer::export(&api, name)?;
            crate::output::stdout_line(pretty(&export))?;
        }
        ClusterCmd::Import { file, name } => {
            let export = crate::cluster_transfer::read(file)?;
            let name = name.as_deref().unwrap_or(&export.name);
            let c = crate::cluster_transfer::import(&api, &export, name)?;
            done(&api, &c, || {
                format!(
                    "cluster {} imported: PCRs {} of bank {}, {} TPM CA certificates, {} EKs, {} software versions{}{}",
                    c.name,
                    pcr_list(&c.pcrs),
                    c.bank,
                    export.tpm_ca_certs.len(),
                    export.eks.len(),
                    export.software_versions.len(),
                    export
                        .key_provider
                        .as_deref()
                        .map(|p| format!(", key provider {p}"))
                        .unwrap_or_default(),
                    if export.enabled { "" } else { " (disabled)" }
                )
            });
        }
        ClusterCmd::List => {
            let v: Vec<Cluster> = api.get("/v1/clusters")?;
            list(
                &api,
                &v,
                &["NAME", "PCRS", "BANK", "STATE", "CREATED"],
                |c| {
                    vec![
                        c.name.clone(),
                        pcr_list(&c.pcrs),
                        c.bank.clone(),
                        cluster_state(c).into(),
                        utc(c.created_at),
                    ]
                },
            );
        }
        ClusterCmd::Show { name } => {
            let v: ClusterView = api.get(&format!("/v1/clusters/{}", seg(name)))?;
            done(&api, &v, || {
                let c = &v.cluster;
                let mut out = format!(
                    "cluster {}\n  state                {}\n  PCRs                 {} ({})\n  TPM CA certificates  {}\n  individual EKs       {}\n  software versions    {}\n  hosts                {}\n  created              {}\n  configuration        generation {}",
                    c.name,
                    cluster_state(c),
                    pcr_list(&c.pcrs),
                    c.bank,
                    v.tpm_ca_certs,
                    v.eks,
                    v.software_versions,
                    v.hosts,
                    utc(c.created_at),
                    c.config_generation,
                );
                if !v.applied.is_empty() {
                    out.push_str("\n  hosts' last attestation against the current configuration:");
                }
                for h in &v.applied {
                    let what = match h.configuration.as_str() {
                        "current" => "current".to_owned(),
                        "outdated" => format!(
                            "OUTDATED: predates the current configuration (used generation {}); the next attestation applies it",
                            h.config_generation.unwrap_or_default()
                        ),
                        _ => {
                            "unknown (no attestation recorded with a configuration yet)".to_owned()
                        }
                    };
                    let at = h.last_result_at.map_or_else(|| "never".to_owned(), utc);
                    out.push_str(&format!(
                        "\n    {:<24} {:<13} {at}  {what}",
                        h.name,
                        h.state.as_str()
                    ));
                }
                if v.applied_truncated {
                    out.push_str(&format!(
                        "\n    (the first {} hosts by name; --json has the same list)",
                        v.applied.len()
                    ));
                }
                out
            });
        }
        ClusterCmd::Remove {
            name,
            force,
            signing,
        } => {
            let path = format!("/v1/clusters/{}", seg(name));
            if *force {
                host_op::<()>(
                    &api,
                    Method::DELETE,
                    &format!("{path}?force=true"),
                    None,
                    signing,
                )?;
            } else {
                api.delete(&path)?;
            }
            ok(&api, &format!("cluster {name} deleted"));
        }
        ClusterCmd::SetProvider { name, provider } => {
            let body = SetClusterKeyProvider {
                provider: provider.clone(),
            };
            let v: ClusterKeyProvider =
                api.put(&format!("/v1/clusters/{}/key-provider", seg(name)), &body)?;
            done(&api, &v, || {
                format!("cluster {name} uses key provider {provider}")
            });
        }
        ClusterCmd::ClearProvider { name } => {
            api.delete(&format!("/v1/clusters/{}/key-provider", seg(name)))?;
            ok(&api, &format!("cluster {name} has no default key provider"));
        }
        ClusterCmd::AddProvider { name, provider } => {
            let v: ClusterKeyProvider = api.put(
                &format!("/v1/clusters/{}/key-providers/{}", seg(name), seg(provider)),
                &serde_json::json!({}),
            )?;
            done(&api, &v, || {
                format!(
                    "cluster {name} may use key provider {provider} (providers: {})",
                    v.providers.join(", ")
                )
            });
        }
        ClusterCmd::RemoveProvider { name, provider } => {
            api.delete(&format!(
                "/v1/clusters/{}/key-providers/{}",
                seg(name),
                seg(provider)
            ))?;
            ok(
                &api,
                &format!("cluster {name} no longer uses key provider {provider}"),
            );
        }
        ClusterCmd::Providers { name } => {
            let v: ClusterKeyProvider =
                api.get(&format!("/v1/clusters/{}/key-provider", seg(name)))?;
            done(&api, &v, || {
                let mut out = format!("cluster {name}");
                if v.providers.is_empty() {
                    out.push_str(": no key provider (vouch cluster set-provider NAME PROVIDER)");
                }
                for p in &v.providers {
                    let default = if v.provider.as_deref() == Some(p) {
                        "  (default)"
                    } else {
                        ""
                    };
                    out.push_str(&format!("\n  {p}{default}"));
                }
                out
            });
        }
    }
    Ok(())
}

/// `enabled`, or `disabled` (no host attested, no keys).
fn cluster_state(c: &Cluster) -> &'static str {
    if c.disabled_at.is_some() {
        "disabled"
    } else {
        "enabled"
    }
}

/// `vouch kms ...`.
pub fn kms(opts: &ServerOpts, cmd: &KmsCmd) -> Result<(), Failure> {
    if let KmsCmd::Csr(args) = cmd {
        // Offline: no vouchd involved.
        return crate::kms_csr::run(args, opts.json);
    }
    let api = connect(opts)?;
    match cmd {
        KmsCmd::Add {
            name,
            endpoints,
            client_cert,
            client_key,
            kms_ca,
            no_check,
        } => {
            let body = NewKeyServer {
                name: name.clone(),
                endpoints: endpoints.clone(),
                client_certificate_pem: read_text(client_cert, "client certificate")?,
                client_key_pem: read_text(client_key, "client key")?,
                ca_certificate_pem: read_text(kms_ca, "key server CA certificate")?,
            };
            let path = if *no_check {
                "/v1/key-servers?no_check=true"
            } else {
                "/v1/key-servers"
            };
            let v: KeyServer = api.post(path, &body)?;
            done(&api, &v, || {
                format!("key server {name} added: {}", endpoints.join(", "))
            });
        }
        KmsCmd::List => {
            let v: Vec<KeyServer> = api.get("/v1/key-servers")?;
            list(&api, &v, &["NAME", "ENDPOINTS", "CREATED"], |k| {
                vec![k.name.clone(), k.endpoints.join(","), utc(k.created_at)]
            });
        }
        KmsCmd::Status => {
            let v: DeepHealth = api.get("/v1/health")?;
            let rows: Vec<(String, String, String)> = v
                .key_servers
                .iter()
                .flat_map(|k| {
                    k.endpoints.iter().map(|e| {
                        (
                            k.name.clone(),
                            e.endpoint.clone(),
                            e.error.as_ref().map_or_else(
                                || "reachable".to_owned(),
                                |w| format!("UNREACHABLE: {w}"),
                            ),
                        )
                    })
                })
                .collect();
            if api.json {
                crate::output::emit_line(format_args!("{}", pretty(&v.key_servers)));
            } else {
                list(&api, &rows, &["KMS", "ENDPOINT", "STATE"], |(k, e, s)| {
                    vec![k.clone(), e.clone(), s.clone()]
                });
            }
            if let Some(k) = v
                .key_servers
                .iter()
                .find(|k| !k.endpoints.iter().any(|e| e.reachable))
            {
                return Err(Failure::Refused(format!(
                    "key server {} answers on none of its endpoints",
                    k.name
                )));
            }
        }
        KmsCmd::Remove { name } => {
            api.delete(&format!("/v1/key-servers/{}", seg(name)))?;
            ok(&api, &format!("key server {name} removed"));
        }
        KmsCmd::Csr(args) => crate::kms_csr::run(args, api.json)?,
    }
    Ok(())
}

/// `vouch tls reload`.
pub fn tls_reload(opts: &ServerOpts) -> Result<(), Failure> {
    let api = connect(opts)?;
    let v: TlsCertificate = api.post("/v1/tls/reload", &serde_json::json!({}))?;
    done(&api, &v, || {
        format!(
            "vouchd serves {} (serial {}, valid until {}) to new connections; SHA-256 fingerprint: {}",
            v.subject, v.serial, v.not_after, v.fingerprint
        )
    });
    Ok(())
}

/// `vouch signing-key ...`.
pub fn signing_key(opts: &ServerOpts, cmd: &SigningKeyCmd) -> Result<(), Failure> {
    let api = connect(opts)?;
    let (v, verb): (SigningKeys, &str) = match cmd {
        SigningKeyCmd::Show => (api.get("/v1/signing-keys")?, "signing keys"),
        SigningKeyCmd::Rotate => (
            api.post("/v1/signing-keys/rotate", &serde_json::json!({}))?,
            "rotated; signing keys",
        ),
    };
    done(&api, &v, || {
        let mut lines = vec![format!("{verb} (grace period {} s):", v.grace_secs)];
        for k in &v.keys {
            lines.push(match k.grace_until {
                None => format!("  {}  current: signs new tokens", k.kid),
                Some(until) => format!(
                    "  {}  retired at {}; in the JWKS, its tokens verifying, until {until}",
                    k.kid,
                    k.retired_at.unwrap_or_default()
                ),
            });
        }
        lines.join("\n")
    });
    Ok(())
}

/// `vouch provider ...`.
pub fn provider(opts: &ServerOpts, cmd: &ProviderCmd) -> Result<(), Failure> {
    let api = connect(opts)?;
    match cmd {
        ProviderCmd::Add {
            name,
            kms,
            key_id,
            wrapping,
            refresh,
            lifetime,
        } => {
            let body = NewKeyProvider {
                name: name.clone(),
                key_server: kms.clone(),
                primary_key_id: key_id.clone(),
                wrapping: wire("--wrapping", wrapping, WrappingMode::parse)?,
                refresh_seconds: refresh.unwrap_or(NewKeyProvider::DEFAULT_REFRESH_SECONDS),
                lifetime_seconds: lifetime.unwrap_or(NewKeyProvider::DEFAULT_LIFETIME_SECONDS),
            };
            let v: KeyProvider = api.post("/v1/key-providers", &body)?;
            done(&api, &v, || {
                format!(
                    "key provider {name} added: key {key_id} on {kms}, {wrapping} wrapping; checked active AES-256"
                )
            });
        }
        ProviderCmd::List => {
            let v: Vec<KeyProvider> = api.get("/v1/key-providers")?;
            list(
                &api,
                &v,
                &[
                    "NAME",
                    "KMS",
                    "PRIMARY KEY",
                    "VERSION",
                    "WRAPPING",
                    "CREATED",
                ],
                |p| {
                    vec![
                        p.name.clone(),
                        p.key_server.clone(),
                        p.primary_key_id.clone(),
                        p.primary_key_version.to_string(),
                        p.wrapping.as_str().into(),
                        utc(p.created_at),
                    ]
                },
            );
        }
        ProviderCmd::Status { name } => {
            let names: Vec<String> = match name {
                Some(n) => vec![n.clone()],
                None => api
                    .get::<Vec<KeyProvider>>("/v1/key-providers")?
                    .into_iter()
                    .map(|p| p.name)
                    .collect(),
            };
            let mut all = Vec::with_capacity(names.len());
            for (i, n) in names.iter().enumerate() {
                if !api.json && names.len() > 1 {
                    crate::output::stderr(format_args!(
                        "checking key provider {n} ({} of {})",
                        i + 1,
                        names.len()
                    ));
                }
                let v: vouch_api::types::KeyProviderStatus =
                    api.get(&format!("/v1/key-providers/{}/status", seg(n)))?;
                all.push(v);
            }
            let rows: Vec<[String; 6]> = all
                .iter()
                .flat_map(|p| {
                    let last = match (&p.last_error, p.last_error_at) {
                        (Some(e), Some(at)) => format!("{} {e}", utc(at)),
                        _ => "-".to_owned(),
                    };
                    p.endpoints.iter().map(move |e| {
                        [
                            p.name.clone(),
                            p.key_server.clone(),
                            e.endpoint.clone(),
                            e.error.as_ref().map_or_else(
                                || "reachable".to_owned(),
                                |w| format!("UNREACHABLE: {w}"),
                            ),
                            p.key_state.clone(),
                            last.clone(),
                        ]
                    })
                })
                .collect();
            if api.json {
                crate::output::emit_line(format_args!("{}", pretty(&all)));
            } else {
                list(
                    &api,
                    &rows,
                    &["PROVIDER", "KMS", "ENDPOINT", "STATE", "KEY", "LAST ERROR"],
                    |r| r.to_vec(),
                );
            }
            if let Some(p) = all.iter().find(|p| p.key_state != "active") {
                return Err(Failure::Refused(format!(
                    "key provider {}'s primary key is not usable ({}): {}; check the key server (vouch kms status) and the key, or rotate to another key (vouch provider rotate)",
                    p.name,
                    p.key_state,
                    p.key_error.as_deref().unwrap_or("no detail")
                )));
            }
        }
        ProviderCmd::Remove { name } => {
            api.delete(&format!("/v1/key-providers/{}", seg(name)))?;
            ok(&api, &format!("key provider {name} removed"));
        }
        ProviderCmd::CreateKey { kms, name } => {
            let body = NewKmsKey { name: name.clone() };
            let v: CreatedKmsKey =
                api.post(&format!("/v1/key-servers/{}/keys", seg(kms)), &body)?;
            done(&api, &v, || {
                format!("created and activated AES-256 key {} on {kms}", v.key_id)
            });
        }
        ProviderCmd::Rotate { name, key_id } => {
            let body = NewPrimaryKey {
                primary_key_id: key_id.clone(),
            };
            let v: KeyProvider = api.put(
                &format!("/v1/key-providers/{}/primary-key", seg(name)),
                &body,
            )?;
            done(&api, &v, || {
                format!(
                    "key provider {name}: primary key {key_id} (version {}); earlier keys still decrypt",
                    v.primary_key_version
                )
            });
        }
    }
    Ok(())
}

pub fn tpm_ca(opts: &ServerOpts, cmd: &TpmCaCmd) -> Result<(), Failure> {
    let api = connect(opts)?;
    match cmd {
        TpmCaCmd::Add { c, file } => {
            let body = NewCaCerts {
                certificate_pem: read_text(file, "CA certificate file")?,
            };
            let v: Vec<CaCert> = api.post(
                &format!("/v1/clusters/{}/tpm-ca-certs", seg(&c.cluster)),
                &body,
            )?;
            done(&api, &v, || {
                v.iter()
                    .map(|ca| format!("trusted in {}: {} (id {})", c.cluster, ca.subject, ca.id))
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        TpmCaCmd::List { c } => {
            let v: Vec<CaCert> =
                api.get(&format!("/v1/clusters/{}/tpm-ca-certs", seg(&c.cluster)))?;
            list(&api, &v, &["ID", "SUBJECT", "ADDED"], |ca| {
                vec![ca.id.clone(), ca.subject.clone(), utc(ca.created_at)]
            });
        }
        TpmCaCmd::Remove { c, id } => {
            api.delete(&format!(
                "/v1/clusters/{}/tpm-ca-certs/{}",
                seg(&c.cluster),
                seg(id)
            ))?;
            ok(&api, &format!("TPM CA {id} removed from {}", c.cluster));
        }
    }
    Ok(())
}

pub fn ek_add(opts: &ServerOpts, args: &EkAddArgs) -> Result<(), Failure> {
    let api = connect(opts)?;
    let kind = if args.kind.certificate {
        EkEntryKind::Certificate
    } else if args.kind.public_key {
        EkEntryKind::PublicKey
    } else {
        EkEntryKind::BarePublicKey
    };
    let body = NewClusterEk {
        kind,
        pem: read_text(&args.file, "EK file")?,
    };
    if kind != EkEntryKind::BarePublicKey && !args.yes {
        let listed: Vec<ClusterEk> =
            api.get(&format!("/v1/clusters/{}/eks", seg(&args.c.cluster)))?;
        if listed.iter().all(|e| e.kind == EkEntryKind::BarePublicKey) {
            return Err(Failure::Input(format!(
                "cluster {} lists no EK certificate or public key yet: the first one switches it to mode 2, where only listed TPMs are admitted and every other host of a trusted manufacturer is refused; add --yes to confirm",
                args.c.cluster
            )));
        }
    }
    let v: ClusterEk = api.post(&format!("/v1/clusters/{}/eks", seg(&args.c.cluster)), &body)?;
    done(&api, &v, || {
        format!(
            "EK {} ({}) listed in {}",
            v.ek_hash,
            v.kind.as_str(),
            args.c.cluster
        )
    });
    Ok(())
}

pub fn ek_list(opts: &ServerOpts, c: &ClusterArg) -> Result<(), Failure> {
    let api = connect(opts)?;
    let v: Vec<ClusterEk> = api.get(&format!("/v1/clusters/{}/eks", seg(&c.cluster)))?;
    list(&api, &v, &["EK HASH", "KIND", "ADDED"], |e| {
        vec![e.ek_hash.clone(), e.kind.as_str().into(), utc(e.created_at)]
    });
    Ok(())
}

pub fn ek_remove(opts: &ServerOpts, c: &ClusterArg, ek_hash: &str) -> Result<(), Failure> {
    let api = connect(opts)?;
    api.delete(&format!(
        "/v1/clusters/{}/eks/{}",
        seg(&c.cluster),
        seg(ek_hash)
    ))?;
    ok(&api, &format!("EK {ek_hash} removed from {}", c.cluster));
    Ok(())
}

pub fn software(opts: &ServerOpts, cmd: &SoftwareCmd) -> Result<(), Failure> {
    match cmd {
        SoftwareCmd::FromEventlog(args) => crate::software_cmd::from_eventlog(args, opts)?,
        SoftwareCmd::Add {
            c,
            file,
            version,
            replace,
        } => {
            let api = connect(opts)?;
            let text = read_text(file, "software version")?;
            let body: Value = serde_json::from_str(&text).map_err(|e| {
                Failure::Input(format!(
                    "{}: not JSON ({e}); give the file `vouch image add -o` writes",
                    file.display()
                ))
            })?;
            upload_software(&api, &c.cluster, body, version.as_deref(), *replace)?;
        }
        SoftwareCmd::List { c } => {
            let api = connect(opts)?;
            let v: Vec<SoftwareVersionRecord> = api.get(&format!(
                "/v1/clusters/{}/software-versions",
                seg(&c.cluster)
            ))?;
            list(&api, &v, &["VERSION", "PCRS", "ADDED"], |s| {
                vec![
                    s.name.clone(),
                    reference_pcrs(&s.reference),
                    utc(s.created_at),
                ]
            });
        }
        SoftwareCmd::Remove { c, version } => {
            let api = connect(opts)?;
            api.delete(&format!(
                "/v1/clusters/{}/software-versions/{}",
                seg(&c.cluster),
                seg(version)
            ))?;
            ok(
                &api,
                &format!(
                    "software version {version} no longer accepted in {}",
                    c.cluster
                ),
            );
        }
    }
    Ok(())
}

/// The banks and PCR indices of a software version's reference values (vouch-attest's
/// `SoftwareVersion` JSON, whose `pcrs` maps a bank to a map of index to digest), e.g.
/// `sha256:0,1,2`.
fn reference_pcrs(reference: &Value) -> String {
    let Some(banks) = reference.get("pcrs").and_then(Value::as_object) else {
        return String::new();
    };
    banks
        .iter()
        .map(|(bank, pcrs)| {
            let indices: Vec<&str> = pcrs
                .as_object()
                .map(|m| m.keys().map(String::as_str).collect())
                .unwrap_or_default();
            format!("{bank}:{}", indices.join(","))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// PUTs a software version (vouch-attest JSON) into a cluster; one of the same name is
/// replaced only with `replace`.
pub fn upload_software(
    api: &Api,
    cluster: &str,
    mut body: Value,
    version: Option<&str>,
    replace: bool,
) -> Result<(), Failure> {
    let name = match version {
        Some(v) => {
            if let Some(map) = body.as_object_mut() {
                map.insert("name".into(), v.into());
            }
            v.to_owned()
        }
        None => body
            .get("name")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| {
                Failure::Input("the software version has no name; pass --version".into())
            })?,
    };
    let v: SoftwareVersionRecord = api.put(
        &format!(
            "/v1/clusters/{}/software-versions/{}{}",
            seg(cluster),
            seg(&name),
            if replace { "?replace=true" } else { "" }
        ),
        &SoftwareVersionBody(body),
    )?;
    done(api, &v, || {
        format!("software version {name} accepted in cluster {cluster}")
    });
    Ok(())
}

fn signer(args: &SigningArgs) -> Result<Option<HostSigner>, Failure> {
    match (&args.signing_key, &args.server_id) {
        (Some(key), Some(id)) => HostSigner::load(key, id).map(Some).map_err(Failure::Input),
        (None, None) => Ok(None),
        (Some(_), None) => Err(Failure::Input(
            "--signing-key needs --server-id: the id the management server is registered under"
                .into(),
        )),
        (None, Some(_)) => Err(Failure::Input(
            "--server-id needs --signing-key: the management server's private key".into(),
        )),
    }
}

/// Sends a host operation, signed when a key is given; explains a refusal for want of one.
fn host_op<T: DeserializeOwned>(
    api: &Api,
    method: Method,
    path: &str,
    body: Option<&[u8]>,
    signing: &SigningArgs,
) -> Result<T, Failure> {
    let signer = signer(signing)?;
    let unsigned = signer.is_none();
    api.send(method, path, body, signer.as_ref()).map_err(|e| match e {
        Failure::Refused(m) if unsigned => Failure::Refused(format!(
            "{m}\n(host operations must be signed by a registered management server: pass --signing-key KEY.pem --server-id ID)"
        )),
        other => other,
    })
}

fn hosts_of(api: &Api, cluster: &str) -> Result<Vec<HostView>, Failure> {
    api.get(&format!("/v1/clusters/{}/hosts", seg(cluster)))
}

pub fn host(opts: &ServerOpts, cmd: &HostCmd) -> Result<(), Failure> {
    let api = connect(opts)?;
    match cmd {
        HostCmd::Add {
            name,
            c,
            ek,
            signing,
        } => {
            let body = NewHost {
                name: name.clone().unwrap_or_else(|| default_host_name(ek)),
                ek_hash: ek.ek_hash.clone(),
                ek_certificate_pem: ek
                    .ek_certificate
                    .as_deref()
                    .map(|f| read_text(f, "EK certificate"))
                    .transpose()?,
            };
            let v: HostView = host_op(
                &api,
                Method::POST,
                &format!("/v1/clusters/{}/hosts", seg(&c.cluster)),
                Some(&encode(&body)?),
                signing,
            )?;
            done(&api, &v, || {
                format!(
                    "host {} added to {} (EK hash {}); it is attested when its agent connects",
                    v.name, v.cluster, v.ek_hash
                )
            });
        }
        HostCmd::Remove { host, c, signing } => {
            let ek_hash = resolve_host(&api, host, Some(&c.cluster))?;
            host_op::<()>(
                &api,
                Method::DELETE,
                &format!("/v1/clusters/{}/hosts/{}", seg(&c.cluster), seg(&ek_hash)),
                None,
                signing,
            )?;
            ok(&api, &format!("host {host} removed from {}", c.cluster));
        }
        HostCmd::List { c } => {
            let v = hosts_of(&api, &c.cluster)?;
            list(
                &api,
                &v,
                &[
                    "NAME",
                    "EK HASH",
                    "STATE",
                    "VALID UNTIL",
                    "SOFTWARE",
                    "ADDED BY",
                ],
                |h| {
                    vec![
                        h.name.clone(),
                        short_hash(&h.ek_hash),
                        state_word(h.state).into(),
                        time(h.valid_until),
                        dash(h.software_version.as_deref()),
                        h.added_by.clone(),
                    ]
                },
            );
        }
        HostCmd::Token { host } => {
            let ek_hash = resolve_host(&api, host, None)?;
            let t: HostToken = api.get(&format!("/v1/hosts/{}/token", seg(&ek_hash)))?;
            if api.json {
                crate::output::emit_line(format_args!("{}", pretty(&t)));
            } else {
                crate::output::stderr(format_args!("expires {}", utc(t.expires_at)));
                crate::output::emit_line(format_args!("{}", t.token));
            }
        }
    }
    Ok(())
}

/// A name for a host added without one.
fn default_host_name(ek: &HostEk) -> String {
    let from_file = ek
        .ek_certificate
        .as_deref()
        .and_then(Path::file_stem)
        .map(|s| {
            s.to_string_lossy()
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@') {
                        c
                    } else {
                        '_'
                    }
                })
                .take(128)
                .collect::<String>()
        });
    let from_hash = ek
        .ek_hash
        .as_deref()
        .map(|h| format!("ek-{}", h.get(..16).unwrap_or(h).to_ascii_lowercase()));
    from_hash.or(from_file).unwrap_or_else(|| "host".into())
}

/// Every host of every cluster.
fn all_hosts(api: &Api) -> Result<Vec<HostView>, Failure> {
    let clusters: Vec<Cluster> = api.get("/v1/clusters")?;
    let mut hosts = Vec::new();
    for c in clusters {
        hosts.extend(hosts_of(api, &c.name)?);
    }
    Ok(hosts)
}

fn is_ek_hash(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A host named by its EK hash, or by its name (looked up, in `cluster` if given).
fn resolve_host(api: &Api, host: &str, cluster: Option<&str>) -> Result<String, Failure> {
    if is_ek_hash(host) {
        return Ok(host.to_ascii_lowercase());
    }
    let hosts = match cluster {
        Some(c) => hosts_of(api, c)?,
        None => all_hosts(api)?,
    };
    let found: Vec<&HostView> = hosts.iter().filter(|h| h.name == host).collect();
    match found.as_slice() {
        [one] => Ok(one.ek_hash.clone()),
        [] => Err(Failure::Refused(format!(
            "no host named {host}{}; give its EK hash, or see `vouch status`",
            cluster
                .map(|c| format!(" in cluster {c}"))
                .unwrap_or_default()
        ))),
        many => Err(Failure::Input(format!(
            "{} hosts are named {host} (in clusters {}); give the EK hash instead",
            many.len(),
            many.iter()
                .map(|h| h.cluster.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

fn host_status_of(api: &Api, ek_hash: &str) -> Result<HostStatus, Failure> {
    api.get(&format!("/v1/hosts/{}", seg(ek_hash)))
}

/// `vouch status [HOST]`.
pub fn status(opts: &ServerOpts, host: Option<&str>) -> Result<(), Failure> {
    let api = connect(opts)?;
    let now = now();
    match host {
        Some(h) => {
            let s = host_status_of(&api, &resolve_host(&api, h, None)?)?;
            done(&api, &s, || host_status(&s, now));
        }
        None => {
            let statuses = all_hosts(&api)?
                .iter()
                .map(|h| host_status_of(&api, &h.ek_hash))
                .collect::<Result<Vec<_>, _>>()?;
            if api.json {
                crate::output::emit_line(format_args!("{}", pretty(&statuses)));
            } else if statuses.is_empty() {
                crate::output::emit_line(format_args!("no hosts; add one with `vouch host add`"));
            } else {
                let rows = statuses
                    .iter()
                    .map(|s| {
                        vec![
                            s.host.name.clone(),
                            s.host.cluster.clone(),
                            state_word(s.host.state).into(),
                            ago(s.host.attested_at, now),
                            ago(s.host.valid_until, now),
                            last_result(s),
                        ]
                    })
                    .collect();
                crate::output::emit(format_args!(
                    "{}",
                    table(
                        &[
                            "HOST",
                            "CLUSTER",
                            "STATE",
                            "ATTESTED",
                            "VALID UNTIL",
                            "LAST RESULT"
                        ],
                        rows
                    )
                ));
            }
        }
    }
    Ok(())
}

fn state_word(state: HostState) -> &'static str {
    match state {
        HostState::Attested => "ATTESTED",
        HostState::NotAttested => "NOT ATTESTED",
        HostState::Unknown => "unknown",
    }
}

/// One attestation's outcome, in a few words.
fn outcome(r: &AttestationRecord) -> String {
    if r.attested {
        format!("attested: {}", dash(r.software_version.as_deref()))
    } else {
        format!("refused: {}", dash(r.reason.as_deref()))
    }
}

fn last_result(s: &HostStatus) -> String {
    s.recent.first().map_or_else(|| "none yet".into(), outcome)
}

/// A host's status for a person.
fn host_status(s: &HostStatus, now: i64) -> String {
    let h = &s.host;
    let mut out = format!("{}  {}\n", h.name, state_word(h.state));
    let mut line = |k: &str, v: String| out.push_str(&format!("  {k:<13}{v}\n"));
    line("cluster", h.cluster.clone());
    line("EK hash", h.ek_hash.clone());
    line("attested at", with_ago(h.attested_at, now));
    line("valid until", with_ago(h.valid_until, now));
    line("software", dash(h.software_version.as_deref()));
    line("AK bound", if h.ak_bound { "yes" } else { "no" }.into());
    line("last result", last_result(s));
    line("added by", h.added_by.clone());
    if s.recent.len() > 1 {
        out.push_str("  recent:\n");
        for r in &s.recent {
            out.push_str(&format!("    {}  {}\n", utc(r.at), outcome(r)));
        }
    }
    out.trim_end().to_owned()
}

pub fn events(opts: &ServerOpts, args: &EventsArgs) -> Result<(), Failure> {
    let api = connect(opts)?;
    let headers = ["ID", "TIME", "KIND", "SUBJECT", "DETAIL"];
    let row = |e: &Event| {
        vec![
            e.id.to_string(),
            utc(e.at),
            e.kind.clone(),
            e.subject.clone(),
            e.detail.to_string(),
        ]
    };
    let page = |after: i64| -> Result<Vec<Event>, Failure> {
        api.get(&format!("/v1/events?after={after}&limit={}", args.limit))
    };
    let mut v = page(args.after)?;
    if !args.follow {
        list(&api, &v, &headers, row);
        return Ok(());
    }
    let mut after = args.after;
    loop {
        for e in &v {
            if api.json {
                crate::output::emit_line(format_args!("{}", compact(e)));
            } else {
                crate::output::emit_line(format_args!("{}", row(e).join("  ")));
            }
            after = after.max(e.id);
        }
        std::thread::sleep(std::time::Duration::from_secs(2));
        v = page(after)?;
    }
}

// ---- Output.

/// What a command that changes something prints with `--json`.
#[derive(Serialize)]
struct Done {
    ok: bool,
}

fn ok(api: &Api, message: &str) {
    if api.json {
        crate::output::emit_line(format_args!("{}", compact(&Done { ok: true })));
    } else {
        crate::output::emit_line(format_args!("{message}"));
    }
}

fn done(api: &Api, v: &impl Serialize, human: impl FnOnce() -> String) {
    if api.json {
        crate::output::emit_line(format_args!("{}", pretty(v)));
    } else {
        crate::output::emit_line(format_args!("{}", human()));
    }
}

fn list<T: Serialize>(api: &Api, items: &[T], headers: &[&str], row: impl Fn(&T) -> Vec<String>) {
    if api.json {
        crate::output::emit_line(format_args!("{}", pretty(&items)));
    } else if items.is_empty() {
        crate::output::emit_line(format_args!("(none)"));
    } else {
        crate::output::emit(format_args!(
            "{}",
            table(headers, items.iter().map(row).collect())
        ));
    }
}

/// A value as one line of JSON.
fn compact(v: &impl Serialize) -> String {
    serde_json::to_string(v).unwrap_or_else(|e| format!("(cannot encode as JSON: {e})"))
}

/// Text, or `-` for none.
fn dash(v: Option<&str>) -> String {
    v.unwrap_or("-").to_owned()
}

/// A time, or `-` for none.
fn time(ts: Option<i64>) -> String {
    ts.map_or_else(|| "-".into(), utc)
}

fn groups(g: &[String]) -> String {
    if g.is_empty() {
        "-".into()
    } else {
        g.join(",")
    }
}

fn pcr_list(pcrs: &[u32]) -> String {
    pcrs.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn short_hash(h: &str) -> String {
    h.get(..16)
        .map_or_else(|| h.to_owned(), |s| format!("{s}…"))
}

/// Columns aligned by their widest cell.
pub fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<String>| {
        let mut l = String::new();
        for (i, (w, c)) in widths.iter().zip(&cells).enumerate() {
            if i + 1 == cells.len() {
                l.push_str(c);
            } else {
                l.push_str(&format!("{c:<w$}  "));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(headers.iter().map(|h| (*h).to_owned()).collect());
    for r in rows {
        line(r);
    }
    out
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// UNIX seconds as `YYYY-MM-DD HH:MM:SSZ`.
pub fn utc(ts: i64) -> String {
    vouch_api::utc(ts)
}

/// A duration for a person: `42s`, `5m`, `3h`, `2d`.
fn span(secs: i64) -> String {
    let s = secs.abs();
    if s < 120 {
        format!("{s}s")
    } else if s < 7200 {
        format!("{}m", s / 60)
    } else if s < 172_800 {
        format!("{}h", s / 3600)
    } else {
        format!("{}d", s / 86_400)
    }
}

/// `5m ago`, `in 3m`, or `-`.
fn ago(ts: Option<i64>, now: i64) -> String {
    match ts {
        None => "-".into(),
        Some(t) if t <= now => format!("{} ago", span(now - t)),
        Some(t) => format!("in {}", span(t - now)),
    }
}

fn with_ago(ts: Option<i64>, now: i64) -> String {
    match ts {
        None => "-".into(),
        Some(t) => format!("{} ({})", utc(t), ago(Some(t), now)),
    }
}

fn read_text(path: &Path, what: &str) -> Result<String, Failure> {
    String::from_utf8(read_file(path, what)?)
        .map_err(|_| Failure::Input(format!("{}: not a text (PEM or JSON) file", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00:00Z");
        assert_eq!(utc(1_700_000_000), "2023-11-14 22:13:20Z");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00Z");
        assert_eq!(ago(Some(100), 400), "5m ago");
        assert_eq!(ago(Some(500), 400), "in 100s");
        assert_eq!(ago(None, 400), "-");
    }

    #[test]
    fn tables_align() {
        let t = table(
            &["A", "BB"],
            vec![
                vec!["long".into(), "x".into()],
                vec!["s".into(), "y".into()],
            ],
        );
        assert_eq!(t, "A     BB\nlong  x\ns     y\n");
    }

    #[test]
    fn status_reads_at_a_glance() {
        let s: HostStatus = serde_json::from_value(serde_json::json!({
            "ek_hash": "ab".repeat(32), "cluster": "lab", "name": "board-1", "added_by": "ms-1",
            "ak_bound": true, "state": "not_attested", "attested_at": 1000, "valid_until": null,
            "software_version": null, "created_at": 1,
            "recent": [{"ek_hash": "ab".repeat(32), "cluster": "lab", "attested": false,
                        "reason": "PCR 0 differs", "at": 1000}]
        }))
        .expect("a host status");
        let text = host_status(&s, 1060);
        assert!(text.starts_with("board-1  NOT ATTESTED\n"), "{text}");
        assert!(
            text.contains("attested at  1970-01-01 00:16:40Z (60s ago)"),
            "{text}"
        );
        assert!(
            text.contains("last result  refused: PCR 0 differs"),
            "{text}"
        );
    }
}
