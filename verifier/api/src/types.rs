//! Request and response bodies of the management API (TrustedAdmins), the host API (attested
//! hosts' key operations) and the public routes, with their exact JSON shapes.

use serde::{Deserialize, Serialize};

/// Derives the JSON schema of a type when the `openapi` feature is on.
macro_rules! contract {
    ($($item:item)*) => {
        $(
            #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
            $item
        )*
    };
}

/// Maps an enum to and from its snake_case wire name, for storage columns.
macro_rules! wire_names {
    ($ty:ident { $($variant:ident => $name:literal),* $(,)? }) => {
        impl $ty {
            /// The wire name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $name,)*
                }
            }

            /// The variant of a wire name.
            pub fn parse(s: &str) -> Option<Self> {
                match s {
                    $($name => Some(Self::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

contract! {
    /// `GET /v1/signing-keys`, `POST /v1/signing-keys/rotate` (TrustedAdmins): the
    /// token-signing keys vouchd holds.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct SigningKeys {
        /// The current key first, then the key it replaced, if any.
        pub keys: Vec<SigningKeyInfo>,
        /// How long a retired key stays in the JWKS, seconds (`signing_key_grace_secs`).
        pub grace_secs: u64,
    }

    /// `POST /v1/tls/reload` (TrustedAdmins): the API's TLS certificate now in service.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct TlsCertificate {
        /// SHA-256 of the leaf certificate, hex (what `vouch --fingerprint` pins).
        pub fingerprint: String,
        /// The leaf's serial number, hex.
        pub serial: String,
        pub subject: String,
        /// notBefore and notAfter, Unix seconds.
        pub not_before: i64,
        pub not_after: i64,
    }

    /// One token-signing key.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct SigningKeyInfo {
        /// Its `kid` (RFC 7638 thumbprint), as in the JWKS and the tokens' headers.
        pub kid: String,
        /// When it stopped signing (Unix seconds); absent for the current key.
        pub retired_at: Option<i64>,
        /// When it leaves the JWKS and its tokens stop verifying; absent for the current key.
        pub grace_until: Option<i64>,
    }
}

contract! {
    /// `GET /healthz`.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Health {
        /// `ok` when the database answers.
        pub status: String,
    }

    /// `GET /v1/health` (TrustedAdmins): the store, each key server's endpoints, and the
    /// expiry of every certificate vouchd depends on.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct DeepHealth {
        /// `ok`, or `degraded` when the store fails, a key server answers on no endpoint, or
        /// a certificate has expired.
        pub status: String,
        /// `ok`, or why the store failed.
        pub store: String,
        pub key_servers: Vec<KeyServerHealth>,
        /// Soonest expiry first.
        pub certificates: Vec<CertificateHealth>,
    }

    /// A key server's endpoints, each tried now.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct KeyServerHealth {
        pub name: String,
        pub endpoints: Vec<EndpointHealth>,
    }

    /// One endpoint (replica) of a key server.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct EndpointHealth {
        /// `host:port`.
        pub endpoint: String,
        /// Whether a TCP connection was accepted within the check's timeout.
        pub reachable: bool,
        /// Why not, when not.
        pub error: Option<String>,
    }

    /// A certificate vouchd depends on, and when it expires.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct CertificateHealth {
        /// `tls` (the API's), `kms-client:NAME` (vouchd's client certificate for a key server),
        /// `kms-ca:NAME`, `tpm-ca:CLUSTER`, or `token-signing:KID` (a retired token-signing key
        /// until the end of its grace period).
        pub what: String,
        pub subject: String,
        /// notAfter, Unix seconds.
        pub not_after: i64,
        /// Whole days left (negative once expired).
        pub days_left: i64,
    }

    /// One public key of the token-signing key set (RFC 7517).
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Jwk {
        /// `EC`.
        pub kty: String,
        /// `P-256`.
        pub crv: String,
        /// The point's x coordinate, base64url.
        pub x: String,
        /// The point's y coordinate, base64url.
        pub y: String,
        /// `sig`.
        #[serde(rename = "use")]
        pub use_: String,
        /// `ES256`.
        pub alg: String,
        /// The key's RFC 7638 thumbprint, the `kid` of the tokens it signs.
        pub kid: String,
    }

    /// `GET /.well-known/jwks.json`: the keys that verify attestation tokens.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Jwks {
        pub keys: Vec<Jwk>,
    }

    /// `PUT /v1/clusters/{cluster}/software-versions/{version}`: reference values as
    /// vouch-attest's `SoftwareVersion` JSON (`name` may be left out: the path names it).
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(transparent)]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub struct SoftwareVersionBody(pub serde_json::Value);

    /// People and service accounts.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    pub enum PrincipalKind {
        Person,
        Service,
    }

    /// A management principal and the groups it belongs to.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Principal {
        pub name: String,
        pub kind: PrincipalKind,
        pub groups: Vec<String>,
        pub created_at: i64,
    }

    /// `POST /v1/principals`.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct NewPrincipal {
        pub name: String,
        pub kind: PrincipalKind,
        #[serde(default)]
        pub groups: Vec<String>,
    }

    /// A bearer token's record; the token itself is never stored, only its SHA-256.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct TokenInfo {
        pub id: String,
        pub principal: String,
        pub description: String,
        pub created_at: i64,
    }

    /// `POST /v1/principals/{name}/tokens`.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    pub struct NewToken {
        #[serde(default)]
        pub description: String,
    }

    /// A new token; `token` is shown this once.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct CreatedToken {
        pub id: String,
        pub principal: String,
        pub description: String,
        pub created_at: i64,
        pub token: String,
    }

    /// `POST /v1/management-servers`.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct NewManagementServer {
        pub id: String,
        /// The server's ECDSA P-256 signing certificate, PEM.
        pub certificate_pem: String,
    }

    /// A management server allowed to sign host operations.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct ManagementServer {
        pub id: String,
        /// The certificate's subject, for people.
        pub subject: String,
        /// SHA-256 of the certificate, hex.
        pub fingerprint: String,
        pub created_at: i64,
    }

    /// A trusted cluster and its policy settings.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Cluster {
        pub name: String,
        /// PCRs that must match an accepted software version.
        pub pcrs: Vec<u32>,
        /// The PCR bank compared (e.g. `sha256`).
        pub bank: String,
        pub created_at: i64,
        /// When the cluster was disabled (`PATCH` with `enabled: false`): its hosts are not
        /// attested and get no keys until it is enabled. Null while enabled.
        #[serde(default)]
        pub disabled_at: Option<i64>,
        /// Counts changes to what the cluster's hosts are attested against (PCR selection and
        /// bank, CA certificates, individual EKs, software versions); set by the store.
        #[serde(default)]
        pub config_generation: i64,
    }

    /// `PATCH /v1/clusters/{cluster}`: the settings to change; what is left out stays.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    pub struct ClusterChange {
        /// PCRs an accepted software version must match.
        #[serde(default)]
        pub pcrs: Option<Vec<u32>>,
        /// The PCR bank compared.
        #[serde(default)]
        pub bank: Option<String>,
        /// `false` disables the cluster (its hosts are not attested and get no keys), `true`
        /// enables it again.
        #[serde(default)]
        pub enabled: Option<bool>,
    }

    /// `PUT /v1/clusters/{cluster}/software-versions/{version}` query.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    #[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
    #[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
    pub struct PutSoftwareVersion {
        /// Replace a version of the same name; without it, an existing version is a 409.
        #[serde(default)]
        pub replace: bool,
    }

    /// `POST /v1/clusters`.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct NewCluster {
        pub name: String,
        /// PCRs an accepted software version must match; default 0 and 1, the PCRs a Vouch
        /// firmware image is measured into (`vouch image add`). Linux/UEFI hosts: the PCRs
        /// given to `vouch software from-eventlog`.
        #[serde(default)]
        pub pcrs: Option<Vec<u32>>,
        /// The PCR bank compared; default `sha256`.
        #[serde(default)]
        pub bank: Option<String>,
    }

    /// A cluster with a summary of its trust configuration.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct ClusterView {
        #[serde(flatten)]
        pub cluster: Cluster,
        pub tpm_ca_certs: usize,
        pub eks: usize,
        pub software_versions: usize,
        pub hosts: usize,
        /// Desired vs applied: each host's last result against the cluster's current
        /// configuration (`config_generation`), by host name; at most
        /// [`MAX_APPLIED_HOSTS`] hosts (`applied_truncated` says when there are more).
        #[serde(default)]
        pub applied: Vec<HostApplied>,
        #[serde(default)]
        pub applied_truncated: bool,
    }

    /// Whether a host's last attestation used its cluster's current configuration.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct HostApplied {
        pub ek_hash: String,
        pub name: String,
        pub state: HostState,
        /// When the last result was recorded (none yet: absent).
        #[serde(default)]
        pub last_result_at: Option<i64>,
        /// The cluster's `config_generation` that result was verified against (absent when
        /// unknown: no result yet, or one recorded before generations were kept).
        #[serde(default)]
        pub config_generation: Option<i64>,
        /// `current` (the last result used the current configuration), `outdated` (it
        /// predates the current configuration: the host is judged by the new one at its next
        /// attestation), or `unknown`.
        pub configuration: String,
    }

    /// `POST /v1/clusters/{cluster}/tpm-ca-certs`.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct NewCaCerts {
        /// One or more CA certificates, PEM.
        pub certificate_pem: String,
    }

    /// A TPM manufacturer CA certificate trusted by a cluster.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct CaCert {
        /// SHA-256 of the DER certificate, hex.
        pub id: String,
        pub cluster: String,
        pub subject: String,
        pub created_at: i64,
        /// The certificate, PEM (what `vouch cluster export` carries).
        #[serde(default)]
        pub pem: String,
    }

    /// How an individual EK is listed in a cluster.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    pub enum EkEntryKind {
        /// Mode 2: an EK certificate; the host's certificate must also chain to a trusted CA.
        Certificate,
        /// Mode 2: an EK public key (SPKI); the host's certificate must also chain to a trusted
        /// CA.
        PublicKey,
        /// Mode 3: a bare EK public key, for TPMs without an EK certificate.
        BarePublicKey,
    }

    /// `POST /v1/clusters/{cluster}/eks`.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct NewClusterEk {
        pub kind: EkEntryKind,
        /// An EK certificate (`kind: certificate`) or a SubjectPublicKeyInfo (`PUBLIC KEY`), PEM.
        pub pem: String,
    }

    /// An individual EK listed by a cluster.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct ClusterEk {
        /// The EK hash, hex.
        pub ek_hash: String,
        pub cluster: String,
        pub kind: EkEntryKind,
        pub created_at: i64,
        /// The certificate or public key as listed, PEM (what `vouch cluster export` carries).
        #[serde(default)]
        pub pem: String,
    }

    /// An accepted software version: reference values as vouch-attest's `SoftwareVersion`
    /// JSON.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct SoftwareVersionRecord {
        pub cluster: String,
        pub name: String,
        #[cfg_attr(feature = "openapi", schema(value_type = Object))]
        pub reference: serde_json::Value,
        pub created_at: i64,
    }

    /// A host's attestation state.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    pub enum HostState {
        /// Never attested, or its last result expired without a new one.
        Unknown,
        Attested,
        NotAttested,
    }

    /// A host as the API shows it.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct HostView {
        pub ek_hash: String,
        pub cluster: String,
        pub name: String,
        /// The management server that added it.
        pub added_by: String,
        pub ak_bound: bool,
        pub state: HostState,
        pub attested_at: Option<i64>,
        pub valid_until: Option<i64>,
        pub software_version: Option<String>,
        pub created_at: i64,
    }

    /// `POST /v1/clusters/{cluster}/hosts` (a host operation: signed).
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct NewHost {
        pub name: String,
        /// The EK hash; or give `ek_certificate_pem` and it is computed.
        #[serde(default)]
        pub ek_hash: Option<String>,
        #[serde(default)]
        pub ek_certificate_pem: Option<String>,
    }

    /// One attestation's outcome.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct AttestationRecord {
        pub ek_hash: String,
        pub cluster: String,
        pub at: i64,
        pub attested: bool,
        pub software_version: Option<String>,
        pub reason: Option<String>,
        /// Hex.
        pub pcr_digest: Option<String>,
        /// Hex.
        pub nonce: Option<String>,
        pub valid_until: Option<i64>,
        /// SHA-256 (hex) of the attestation token issued, when attested: tokens are stored
        /// as hashes only (`GET /v1/hosts/{ek_hash}/token` issues one for the current result).
        pub token: Option<String>,
        /// What the host presented, kept with a refusal so that it can be compared with the
        /// accepted versions later: `{"bank": "sha256", "pcrs": {"<index>": "<hex>"},
        /// "events": {"<index>": [{"number": n, "digest": "<hex>"}]}}` (events when the host
        /// sent an event log). Absent from results recorded before it was kept.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
        pub presented: Option<serde_json::Value>,
        /// The cluster's `config_generation` the result was verified against (absent from
        /// results recorded before it was kept).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub config_generation: Option<i64>,
    }

    /// A host's status with its latest results.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct HostStatus {
        #[serde(flatten)]
        pub host: HostView,
        pub recent: Vec<AttestationRecord>,
    }

    /// A host's current attestation token.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct HostToken {
        pub ek_hash: String,
        /// The JWT (ES256); verify it with `/.well-known/jwks.json`.
        pub token: String,
        pub issued_at: i64,
        pub expires_at: i64,
    }

    /// Something that happened, for the audit trail and webhooks.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Event {
        pub id: i64,
        pub at: i64,
        pub kind: String,
        pub subject: String,
        #[cfg_attr(feature = "openapi", schema(value_type = Object))]
        pub detail: serde_json::Value,
    }

    /// `DELETE /v1/clusters/{cluster}` query.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    #[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
    #[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
    pub struct RemoveCluster {
        /// Remove the cluster with its hosts: needs a management server's signature over the
        /// request, as a host operation does. Without it, a cluster with hosts is not removed.
        #[serde(default)]
        pub force: bool,
    }

    /// `POST /v1/key-servers` query.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    #[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
    #[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
    pub struct AddKeyServer {
        /// Add it without first connecting to it (TLS with the client certificate).
        #[serde(default)]
        pub no_check: bool,
    }

    /// `GET /v1/events` query.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    #[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
    #[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
    pub struct EventQuery {
        /// Only events with a larger id.
        #[serde(default)]
        pub after: i64,
        /// At most this many (1 to 1000, default 100).
        #[serde(default)]
        pub limit: Option<u32>,
    }

    /// `POST /v1/key-servers`.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct NewKeyServer {
        pub name: String,
        /// `host:port`, tried in order.
        pub endpoints: Vec<String>,
        pub client_certificate_pem: String,
        pub client_key_pem: String,
        pub ca_certificate_pem: String,
    }

    /// A key server (KMS): KMIP endpoints tried in order, the client certificate vouchd
    /// presents and the CA certificates that sign the key server's certificate, PEM. The
    /// client key is never shown.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct KeyServer {
        pub name: String,
        pub endpoints: Vec<String>,
        pub client_certificate: String,
        pub ca_certificates: String,
        pub created_at: i64,
    }

    /// `POST /v1/key-servers/{name}/keys`.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    pub struct NewKmsKey {
        /// The key's KMIP Name attribute.
        #[serde(default)]
        pub name: Option<String>,
    }

    /// A key made on a key server.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct CreatedKmsKey {
        pub key_server: String,
        pub key_id: String,
    }

    /// How a provider wraps data keys.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    pub enum WrappingMode {
        /// vouchd caches the primary key and wraps locally.
        Local,
        /// Every operation is a call to the key server.
        Remote,
    }

    /// A primary key a provider used before a rotation: it still decrypts.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct RetiredKey {
        pub id: String,
        pub version: u32,
    }

    /// A trusted key provider: a name and one primary key on a key server.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct KeyProvider {
        pub name: String,
        pub key_server: String,
        pub primary_key_id: String,
        pub primary_key_version: u32,
        pub retired: Vec<RetiredKey>,
        pub wrapping: WrappingMode,
        /// Local wrapping: the key's state is checked again after this long.
        pub refresh_seconds: i64,
        /// Local wrapping: a cached key serves at most this long after it was got.
        pub lifetime_seconds: i64,
        pub created_at: i64,
    }

    /// `POST /v1/key-providers`.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct NewKeyProvider {
        pub name: String,
        pub key_server: String,
        pub primary_key_id: String,
        pub wrapping: WrappingMode,
        /// Default 300.
        #[serde(default = "default_refresh")]
        pub refresh_seconds: i64,
        /// Default 3600.
        #[serde(default = "default_lifetime")]
        pub lifetime_seconds: i64,
    }

    /// `PUT /v1/key-providers/{name}/primary-key`.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct NewPrimaryKey {
        pub primary_key_id: String,
    }

    /// A cluster's key provider, if any.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct ClusterKeyProvider {
        pub cluster: String,
        /// The default: what a key request that names no provider uses.
        pub provider: Option<String>,
        /// Every provider the cluster is configured with (the default among them), by name.
        #[serde(default)]
        pub providers: Vec<String>,
    }

    /// `GET /v1/key-providers/{name}/status`: a key provider's health, checked now.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct KeyProviderStatus {
        pub name: String,
        pub key_server: String,
        /// `ok`, or `degraded` when the primary key cannot be used now or an endpoint of the
        /// key server is unreachable.
        pub status: String,
        /// Each endpoint (replica) of the key server, tried now.
        pub endpoints: Vec<EndpointHealth>,
        pub primary_key_id: String,
        pub primary_key_version: u32,
        /// `active` when the primary key is usable now (exists, Active, AES-256, usable in the
        /// wrapping mode); otherwise the failure's code (`key_revoked`, `key_unusable`,
        /// `key_server_unreachable`, ..., or `configuration_error` when the key server's
        /// client configuration does not load).
        pub key_state: String,
        /// Why the key is not usable, when not.
        #[serde(default)]
        pub key_error: Option<String>,
        /// The provider's last failure since vouchd started (a key operation or a status
        /// check; not a caller's bad ciphertext), and when.
        #[serde(default)]
        pub last_error: Option<String>,
        #[serde(default)]
        pub last_error_at: Option<i64>,
    }

    /// `PUT /v1/clusters/{cluster}/key-provider`.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct SetClusterKeyProvider {
        pub provider: String,
    }

    /// `POST /v1/keys/generate`.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    pub struct GenerateKeyRequest {
        /// Associated data, base64.
        #[serde(default)]
        pub aad: String,
        /// The key provider to use: one the host's cluster is configured with (absent: the
        /// cluster's default). Added with several providers per cluster.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub provider: Option<String>,
    }

    /// A fresh data key and its wrapped form.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct GeneratedKey {
        pub provider: String,
        /// The data key, base64.
        pub key: String,
        /// The wrapped data key (a ciphertext of the key), base64.
        pub wrapped: String,
    }

    /// `POST /v1/keys/encrypt`.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct EncryptRequest {
        /// Base64.
        pub plaintext: String,
        /// Associated data, base64.
        #[serde(default)]
        pub aad: String,
        /// The key provider to use: one the host's cluster is configured with (absent: the
        /// cluster's default). Added with several providers per cluster.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub provider: Option<String>,
    }

    /// `POST /v1/keys/decrypt` and `/v1/keys/rewrap`.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct CiphertextRequest {
        /// Base64.
        pub ciphertext: String,
        /// Associated data, base64.
        #[serde(default)]
        pub aad: String,
        /// The key provider to use: one the host's cluster is configured with (absent: the
        /// cluster's default). Added with several providers per cluster.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub provider: Option<String>,
    }

    /// A ciphertext, base64.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct CiphertextReply {
        pub ciphertext: String,
    }

    /// A plaintext, base64.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct PlaintextReply {
        pub plaintext: String,
    }

    /// One operation of a batch: `op` is `generate`, `encrypt`, `decrypt` or `rewrap`.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct BatchItem {
        pub op: String,
        #[serde(default)]
        pub aad: String,
        #[serde(default)]
        pub plaintext: Option<String>,
        #[serde(default)]
        pub ciphertext: Option<String>,
    }

    /// `POST /v1/keys/batch`.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct BatchRequest {
        pub items: Vec<BatchItem>,
        /// The key provider to use: one the host's cluster is configured with (absent: the
        /// cluster's default). Added with several providers per cluster.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub provider: Option<String>,
    }

    /// One batch item's result: its outputs, or `error` and `reason`.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    pub struct BatchResult {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub key: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub wrapped: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub ciphertext: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub plaintext: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub error: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub reason: Option<String>,
    }

    /// The results, in the order of the items.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct BatchReply {
        pub results: Vec<BatchResult>,
    }
}

wire_names!(PrincipalKind { Person => "person", Service => "service" });
wire_names!(EkEntryKind {
    Certificate => "certificate",
    PublicKey => "public_key",
    BarePublicKey => "bare_public_key",
});
wire_names!(HostState {
    Unknown => "unknown",
    Attested => "attested",
    NotAttested => "not_attested",
});
wire_names!(WrappingMode { Local => "local", Remote => "remote" });

impl Principal {
    /// Whether the principal is a member of `group`.
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }
}

impl NewKeyProvider {
    /// `refresh_seconds` when a request leaves it out.
    pub const DEFAULT_REFRESH_SECONDS: i64 = 300;
    /// `lifetime_seconds` when a request leaves it out.
    pub const DEFAULT_LIFETIME_SECONDS: i64 = 3600;
}

fn default_refresh() -> i64 {
    NewKeyProvider::DEFAULT_REFRESH_SECONDS
}

fn default_lifetime() -> i64 {
    NewKeyProvider::DEFAULT_LIFETIME_SECONDS
}

/// The most hosts [`ClusterView::applied`] lists.
pub const MAX_APPLIED_HOSTS: usize = 1000;
