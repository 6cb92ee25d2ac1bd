//! The key provider service's routes: key servers, key providers and each cluster's provider
//! (TrustedAdmins), and the key operations of attested hosts (authorised by the host's
//! attestation token).

use axum::Json;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use vouch_keyprovider::{KeyProvider, Reply, Request};
use vouch_kmip::SymmetricKeyTemplate;
use zeroize::Zeroizing;

use super::error::ApiError;
use super::{AppState, JsonBody, audit, check_name, require_cluster};
use crate::auth::{Caller, deny};
use crate::jwt::AttestationClaims;
use crate::keys::{api_error, key_server};
use crate::store::{
    self, Host, HostState, KeyProviderRecord, KeyServerRecord, RetiredKey, WrappingMode,
};

// ---- Key servers.

#[derive(Debug, Deserialize, Serialize)]
pub struct NewKeyServer {
    pub name: String,
    /// `host:port`, tried in order.
    pub endpoints: Vec<String>,
    pub client_certificate_pem: String,
    pub client_key_pem: String,
    pub ca_certificate_pem: String,
}

pub async fn list_key_servers(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<KeyServerRecord>>, ApiError> {
    caller.require_trusted_admin(&state)?;
    Ok(Json(
        store::run(&state.store, |s| s.list_key_servers()).await?,
    ))
}

pub async fn get_key_server(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<KeyServerRecord>, ApiError> {
    caller.require_trusted_admin(&state)?;
    let n = name.clone();
    store::run(&state.store, move |s| s.get_key_server(&n))
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("key server {name} not found")))
}

pub async fn add_key_server(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<NewKeyServer>,
) -> Result<(StatusCode, Json<KeyServerRecord>), ApiError> {
    caller.require_trusted_admin(&state)?;
    check_name("key server", &body.name)?;
    if body.endpoints.is_empty() || body.endpoints.len() > 16 {
        return Err(ApiError::BadRequest(
            "a key server has 1 to 16 endpoints".into(),
        ));
    }
    let record = KeyServerRecord {
        name: body.name,
        endpoints: body.endpoints,
        client_certificate: body.client_certificate_pem,
        client_key: body.client_key_pem,
        ca_certificates: body.ca_certificate_pem,
        created_at: crate::now(),
    };
    // The endpoints and PEM must make a KMIP client.
    key_server(&record)?;
    let r = record.clone();
    store::run(&state.store, move |s| s.add_key_server(&r)).await?;
    audit(
        &state,
        &caller.principal.name,
        "key_server.added",
        &record.name,
        serde_json::json!({"endpoints": record.endpoints}),
    )
    .await;
    Ok((StatusCode::CREATED, Json(record)))
}

pub async fn delete_key_server(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require_trusted_admin(&state)?;
    let n = name.clone();
    store::run(&state.store, move |s| s.delete_key_server(&n)).await?;
    audit(
        &state,
        &caller.principal.name,
        "key_server.deleted",
        &name,
        serde_json::json!({}),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Default, Deserialize, Serialize)]
pub struct NewKmsKey {
    /// A KMIP Name for the key.
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct CreatedKmsKey {
    pub key_server: String,
    pub key_id: String,
}

/// Creates and activates an AES-256 key on the key server (a convenience: provisioning the
/// primary key is the key server administrator's step).
pub async fn create_kms_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<NewKmsKey>,
) -> Result<(StatusCode, Json<CreatedKmsKey>), ApiError> {
    caller.require_trusted_admin(&state)?;
    if let Some(n) = &body.name {
        check_name("key name", n)?;
    }
    let n = name.clone();
    let record = store::run(&state.store, move |s| s.get_key_server(&n))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("key server {name} not found")))?;
    let kms = key_server(&record)?;
    let kmip = |e: vouch_kmip::Error| crate::keys::kmip_error(&name, &e);
    let mut connection = kms.connect().await.map_err(kmip)?;
    let id = connection
        .create_symmetric_key(&SymmetricKeyTemplate::aes_256(body.name.as_deref()))
        .await
        .map_err(kmip)?;
    connection.activate(&id).await.map_err(kmip)?;
    audit(
        &state,
        &caller.principal.name,
        "key_server.key_created",
        &name,
        serde_json::json!({"key_id": id}),
    )
    .await;
    Ok((
        StatusCode::CREATED,
        Json(CreatedKmsKey {
            key_server: name,
            key_id: id,
        }),
    ))
}

// ---- Key providers.

fn default_refresh() -> i64 {
    300
}

fn default_lifetime() -> i64 {
    3600
}

#[derive(Debug, Deserialize, Serialize)]
pub struct NewKeyProvider {
    pub name: String,
    pub key_server: String,
    pub primary_key_id: String,
    pub wrapping: WrappingMode,
    #[serde(default = "default_refresh")]
    pub refresh_seconds: i64,
    #[serde(default = "default_lifetime")]
    pub lifetime_seconds: i64,
}

pub async fn list_key_providers(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<KeyProviderRecord>>, ApiError> {
    caller.require_trusted_admin(&state)?;
    Ok(Json(
        store::run(&state.store, |s| s.list_key_providers()).await?,
    ))
}

pub async fn get_key_provider(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<KeyProviderRecord>, ApiError> {
    caller.require_trusted_admin(&state)?;
    let n = name.clone();
    store::run(&state.store, move |s| s.get_key_provider(&n))
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("key provider {name} not found")))
}

/// Checks the record's primary key on its key server (exists, Active, AES-256, usable in the
/// configured mode).
async fn check_provider(state: &AppState, record: &KeyProviderRecord) -> Result<(), ApiError> {
    let ks = record.key_server.clone();
    let server = store::run(&state.store, move |s| s.get_key_server(&ks))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("key server {} not found", record.key_server)))?;
    let provider = state.keys.build(&server, record)?;
    provider.check_primary().await.map_err(|e| api_error(&e))
}

pub async fn add_key_provider(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<NewKeyProvider>,
) -> Result<(StatusCode, Json<KeyProviderRecord>), ApiError> {
    caller.require_trusted_admin(&state)?;
    check_name("key provider", &body.name)?;
    if body.name.len() > vouch_keyprovider::ciphertext::MAX_PROVIDER_NAME {
        return Err(ApiError::BadRequest(
            "a key provider's name is at most 64 characters".into(),
        ));
    }
    if body.primary_key_id.is_empty()
        || body.primary_key_id.len() > vouch_keyprovider::ciphertext::MAX_KEY_ID
    {
        return Err(ApiError::BadRequest(
            "a primary key id is 1 to 128 bytes".into(),
        ));
    }
    if body.refresh_seconds < 0 || body.lifetime_seconds < body.refresh_seconds {
        return Err(ApiError::BadRequest(
            "0 <= refresh_seconds <= lifetime_seconds".into(),
        ));
    }
    let record = KeyProviderRecord {
        name: body.name,
        key_server: body.key_server,
        primary_key_id: body.primary_key_id,
        primary_key_version: 1,
        retired: vec![],
        wrapping: body.wrapping,
        refresh_seconds: body.refresh_seconds,
        lifetime_seconds: body.lifetime_seconds,
        created_at: crate::now(),
    };
    check_provider(&state, &record).await?;
    let r = record.clone();
    store::run(&state.store, move |s| s.add_key_provider(&r)).await?;
    state.keys.forget(&record.name).await;
    audit(
        &state,
        &caller.principal.name,
        "key_provider.added",
        &record.name,
        serde_json::json!({"key_server": record.key_server, "primary_key_id": record.primary_key_id, "wrapping": record.wrapping}),
    )
    .await;
    Ok((StatusCode::CREATED, Json(record)))
}

pub async fn delete_key_provider(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require_trusted_admin(&state)?;
    let n = name.clone();
    store::run(&state.store, move |s| s.delete_key_provider(&n)).await?;
    state.keys.forget(&name).await;
    audit(
        &state,
        &caller.principal.name,
        "key_provider.deleted",
        &name,
        serde_json::json!({}),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, Serialize)]
pub struct NewPrimaryKey {
    pub primary_key_id: String,
}

/// Rotation: a new primary key (checked like on add) takes over encryption; the old one is
/// retired and still decrypts, so ciphertexts can be rewrapped.
pub async fn rotate_primary_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<NewPrimaryKey>,
) -> Result<Json<KeyProviderRecord>, ApiError> {
    caller.require_trusted_admin(&state)?;
    let n = name.clone();
    let mut record = store::run(&state.store, move |s| s.get_key_provider(&n))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("key provider {name} not found")))?;
    if body.primary_key_id.is_empty()
        || body.primary_key_id.len() > vouch_keyprovider::ciphertext::MAX_KEY_ID
    {
        return Err(ApiError::BadRequest(
            "a primary key id is 1 to 128 bytes".into(),
        ));
    }
    record.retired.push(RetiredKey {
        id: record.primary_key_id.clone(),
        version: record.primary_key_version,
    });
    record.primary_key_id = body.primary_key_id;
    record.primary_key_version = record.primary_key_version.saturating_add(1);
    check_provider(&state, &record).await?;
    let r = record.clone();
    store::run(&state.store, move |s| s.update_key_provider(&r)).await?;
    state.keys.forget(&name).await;
    audit(
        &state,
        &caller.principal.name,
        "key_provider.rotated",
        &name,
        serde_json::json!({"primary_key_id": record.primary_key_id, "version": record.primary_key_version}),
    )
    .await;
    Ok(Json(record))
}

// ---- A cluster's provider.

#[derive(Debug, Deserialize, Serialize)]
pub struct ClusterKeyProvider {
    pub cluster: String,
    pub provider: Option<String>,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct SetClusterKeyProvider {
    pub provider: String,
}

pub async fn get_cluster_key_provider(
    State(state): State<AppState>,
    caller: Caller,
    Path(cluster): Path<String>,
) -> Result<Json<ClusterKeyProvider>, ApiError> {
    caller.require_trusted_admin(&state)?;
    require_cluster(&state, &cluster).await?;
    let c = cluster.clone();
    let provider = store::run(&state.store, move |s| s.cluster_key_provider(&c)).await?;
    Ok(Json(ClusterKeyProvider { cluster, provider }))
}

pub async fn set_cluster_key_provider(
    State(state): State<AppState>,
    caller: Caller,
    Path(cluster): Path<String>,
    JsonBody(body): JsonBody<SetClusterKeyProvider>,
) -> Result<Json<ClusterKeyProvider>, ApiError> {
    caller.require_trusted_admin(&state)?;
    require_cluster(&state, &cluster).await?;
    let p = body.provider.clone();
    if store::run(&state.store, move |s| s.get_key_provider(&p))
        .await?
        .is_none()
    {
        return Err(ApiError::NotFound(format!(
            "key provider {} not found",
            body.provider
        )));
    }
    let (c, p) = (cluster.clone(), body.provider.clone());
    store::run(&state.store, move |s| {
        s.set_cluster_key_provider(&c, Some(&p))
    })
    .await?;
    audit(
        &state,
        &caller.principal.name,
        "cluster.key_provider_set",
        &cluster,
        serde_json::json!({"provider": body.provider}),
    )
    .await;
    Ok(Json(ClusterKeyProvider {
        cluster,
        provider: Some(body.provider),
    }))
}

pub async fn clear_cluster_key_provider(
    State(state): State<AppState>,
    caller: Caller,
    Path(cluster): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require_trusted_admin(&state)?;
    require_cluster(&state, &cluster).await?;
    let c = cluster.clone();
    store::run(&state.store, move |s| s.set_cluster_key_provider(&c, None)).await?;
    audit(
        &state,
        &caller.principal.name,
        "cluster.key_provider_cleared",
        &cluster,
        serde_json::json!({}),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

// ---- Host key operations.

/// An attested host asking for key operations: its attestation token (a JWT this vouchd signed,
/// unexpired) as the bearer token, the host still attested in the store now, and its cluster
/// configured with a key provider.
#[derive(Debug)]
pub struct AttestedHost {
    pub host: Host,
    pub claims: AttestationClaims,
    pub provider: String,
}

/// The checks of [`AttestedHost`], from a token; shared with the agent link.
pub async fn authorise_host(
    state: &AppState,
    token: &str,
    what: &str,
) -> Result<AttestedHost, ApiError> {
    let now = crate::now();
    let claims = state.signer.verify(token, now).map_err(|why| {
        deny(
            state,
            "anonymous",
            what,
            ApiError::Unauthenticated(format!("attestation token refused: {why}")),
        )
    })?;
    let who = claims.sub.clone();
    let forbidden = |why: String| deny(state, &who, what, ApiError::Forbidden(why));
    let ek = claims.sub.clone();
    let host = store::run(&state.store, move |s| s.get_host(&ek))
        .await?
        .ok_or_else(|| forbidden(format!("host {} is not known", claims.sub)))?;
    if host.cluster != claims.cluster {
        return Err(forbidden(format!(
            "host {} is no longer in cluster {}",
            host.ek_hash, claims.cluster
        )));
    }
    if host.state != HostState::Attested || host.valid_until.is_some_and(|t| t <= now) {
        return Err(forbidden(format!(
            "host {} is not attested now (state {})",
            host.ek_hash,
            host.state.as_str()
        )));
    }
    let c = host.cluster.clone();
    let provider = store::run(&state.store, move |s| s.cluster_key_provider(&c))
        .await?
        .ok_or_else(|| {
            forbidden(format!(
                "cluster {} is not configured with a key provider",
                host.cluster
            ))
        })?;
    Ok(AttestedHost {
        host,
        claims,
        provider,
    })
}

impl FromRequestParts<AppState> for AttestedHost {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let what = format!("{} {}", parts.method, parts.uri.path());
        let token = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| {
                let (scheme, token) = h.split_once(' ')?;
                scheme
                    .eq_ignore_ascii_case("bearer")
                    .then_some(token.trim())
            })
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                deny(
                    state,
                    "anonymous",
                    &what,
                    ApiError::Unauthenticated(
                        "send the host's attestation token as 'Bearer <jwt>'".into(),
                    ),
                )
            })?
            .to_owned();
        authorise_host(state, &token, &what).await
    }
}

fn b64(what: &str, s: &str) -> Result<Vec<u8>, ApiError> {
    B64.decode(s)
        .map_err(|_| ApiError::BadRequest(format!("{what} is not base64")))
}

#[derive(Debug, Default, Deserialize, Serialize)]
pub struct GenerateKeyRequest {
    /// Associated data, base64.
    #[serde(default)]
    pub aad: String,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct GeneratedKey {
    pub provider: String,
    /// The data key, base64.
    pub key: String,
    /// The wrapped key (a ciphertext), base64.
    pub wrapped: String,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct EncryptRequest {
    pub plaintext: String,
    #[serde(default)]
    pub aad: String,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct CiphertextRequest {
    pub ciphertext: String,
    #[serde(default)]
    pub aad: String,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct CiphertextReply {
    pub ciphertext: String,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct PlaintextReply {
    pub plaintext: String,
}

async fn provider_of(
    state: &AppState,
    host: &AttestedHost,
) -> Result<std::sync::Arc<KeyProvider>, ApiError> {
    state.keys.provider(&state.store, &host.provider).await
}

/// Logs a key operation's refusal by the provider.
fn refused(
    state: &AppState,
    host: &AttestedHost,
    what: &str,
    e: &vouch_keyprovider::Error,
) -> ApiError {
    deny(state, &host.host.ek_hash, what, api_error(e))
}

pub async fn generate_key(
    State(state): State<AppState>,
    host: AttestedHost,
    JsonBody(body): JsonBody<GenerateKeyRequest>,
) -> Result<Json<GeneratedKey>, ApiError> {
    let aad = b64("aad", &body.aad)?;
    let provider = provider_of(&state, &host).await?;
    let key = provider
        .generate_key(&aad)
        .await
        .map_err(|e| refused(&state, &host, "generate key", &e))?;
    Ok(Json(GeneratedKey {
        provider: host.provider,
        key: B64.encode(key.key.as_ref()),
        wrapped: B64.encode(&key.wrapped),
    }))
}

pub async fn encrypt(
    State(state): State<AppState>,
    host: AttestedHost,
    JsonBody(body): JsonBody<EncryptRequest>,
) -> Result<Json<CiphertextReply>, ApiError> {
    let plaintext = Zeroizing::new(b64("plaintext", &body.plaintext)?);
    let aad = b64("aad", &body.aad)?;
    let provider = provider_of(&state, &host).await?;
    let ct = provider
        .encrypt(&plaintext, &aad)
        .await
        .map_err(|e| refused(&state, &host, "encrypt", &e))?;
    Ok(Json(CiphertextReply {
        ciphertext: B64.encode(ct),
    }))
}

pub async fn decrypt(
    State(state): State<AppState>,
    host: AttestedHost,
    JsonBody(body): JsonBody<CiphertextRequest>,
) -> Result<Json<PlaintextReply>, ApiError> {
    let ct = b64("ciphertext", &body.ciphertext)?;
    let aad = b64("aad", &body.aad)?;
    let provider = provider_of(&state, &host).await?;
    let plain = provider
        .decrypt(&ct, &aad)
        .await
        .map_err(|e| refused(&state, &host, "decrypt", &e))?;
    Ok(Json(PlaintextReply {
        plaintext: B64.encode(plain.as_slice()),
    }))
}

pub async fn rewrap(
    State(state): State<AppState>,
    host: AttestedHost,
    JsonBody(body): JsonBody<CiphertextRequest>,
) -> Result<Json<CiphertextReply>, ApiError> {
    let ct = b64("ciphertext", &body.ciphertext)?;
    let aad = b64("aad", &body.aad)?;
    let provider = provider_of(&state, &host).await?;
    let ct = provider
        .rewrap(&ct, &aad)
        .await
        .map_err(|e| refused(&state, &host, "rewrap", &e))?;
    Ok(Json(CiphertextReply {
        ciphertext: B64.encode(ct),
    }))
}

/// One item of a batch: `op` is `generate`, `encrypt`, `decrypt` or `rewrap`.
#[derive(Debug, Deserialize, Serialize)]
pub struct BatchItem {
    pub op: String,
    #[serde(default)]
    pub aad: String,
    #[serde(default)]
    pub plaintext: Option<String>,
    #[serde(default)]
    pub ciphertext: Option<String>,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct BatchRequest {
    pub items: Vec<BatchItem>,
}

/// One result: the fields of the operation's reply, or `error` and `reason`.
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct BatchResult {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wrapped: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ciphertext: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plaintext: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct BatchReply {
    pub results: Vec<BatchResult>,
}

fn batch_request(item: BatchItem) -> Result<Request, ApiError> {
    let aad = b64("aad", &item.aad)?;
    let field = |v: Option<String>, name: &str| {
        v.ok_or_else(|| ApiError::BadRequest(format!("{} needs {name}", item.op)))
            .and_then(|s| b64(name, &s))
    };
    match item.op.as_str() {
        "generate" => Ok(Request::GenerateKey { aad }),
        "encrypt" => Ok(Request::Encrypt {
            plaintext: Zeroizing::new(field(item.plaintext.clone(), "plaintext")?),
            aad,
        }),
        "decrypt" => Ok(Request::Decrypt {
            ciphertext: field(item.ciphertext.clone(), "ciphertext")?,
            aad,
        }),
        "rewrap" => Ok(Request::Rewrap {
            ciphertext: field(item.ciphertext.clone(), "ciphertext")?,
            aad,
        }),
        other => Err(ApiError::BadRequest(format!(
            "unknown batch op '{other}' (generate, encrypt, decrypt, rewrap)"
        ))),
    }
}

pub async fn batch(
    State(state): State<AppState>,
    host: AttestedHost,
    JsonBody(body): JsonBody<BatchRequest>,
) -> Result<Json<BatchReply>, ApiError> {
    if body.items.len() > vouch_keyprovider::MAX_BATCH {
        return Err(ApiError::BadRequest(format!(
            "at most {} items in a batch",
            vouch_keyprovider::MAX_BATCH
        )));
    }
    let requests = body
        .items
        .into_iter()
        .map(batch_request)
        .collect::<Result<Vec<_>, _>>()?;
    let provider = provider_of(&state, &host).await?;
    let replies = provider
        .batch(requests)
        .await
        .map_err(|e| refused(&state, &host, "batch", &e))?;
    let results = replies
        .into_iter()
        .map(|r| match r {
            Ok(Reply::GenerateKey(k)) => BatchResult {
                key: Some(B64.encode(k.key.as_ref())),
                wrapped: Some(B64.encode(&k.wrapped)),
                ..BatchResult::default()
            },
            Ok(Reply::Encrypt(ct) | Reply::Rewrap(ct)) => BatchResult {
                ciphertext: Some(B64.encode(ct)),
                ..BatchResult::default()
            },
            Ok(Reply::Decrypt(p)) => BatchResult {
                plaintext: Some(B64.encode(p.as_slice())),
                ..BatchResult::default()
            },
            Err(e) => {
                let e = refused(&state, &host, "batch item", &e);
                BatchResult {
                    error: Some(e.code().into()),
                    reason: Some(e.reason()),
                    ..BatchResult::default()
                }
            }
        })
        .collect();
    Ok(Json(BatchReply { results }))
}
