//! The key provider service's routes: key servers, key providers and each cluster's provider
//! (TrustedAdmins), and the key operations of attested hosts (authorised by the host's
//! attestation token).

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use vouch_keyprovider::{KeyProvider, Reply, Request};
use vouch_kmip::SymmetricKeyTemplate;
use zeroize::Zeroizing;

use super::auth::TrustedAdmin;
use vouch_api::types::{
    self as api, BatchItem, BatchReply, BatchRequest, BatchResult, CiphertextReply,
    CiphertextRequest, ClusterKeyProvider, CreatedKmsKey, EncryptRequest, GenerateKeyRequest,
    GeneratedKey, NewKeyProvider, NewKeyServer, NewKmsKey, NewPrimaryKey, PlaintextReply,
    SetClusterKeyProvider,
};

use super::{AppState, JsonBody, audit, check_name, require_cluster, views};
use crate::service::Error;
use crate::service::auth::deny;
use crate::service::keys::AttestedHost;
use crate::service::keys::{key_server, provider_error};
use crate::store::{self, KeyProviderRecord, KeyServerRecord, RetiredKey};

// ---- Key servers.

#[utoipa::path(
    get,
    path = "/v1/key-servers",
    tag = "key-servers",
    summary = "Key servers (KMIP)",
    responses((status = 200, description = "Success", body = Vec<api::KeyServer>)),
    security(("bearer" = [])),
)]
pub async fn list_key_servers(
    State(state): State<AppState>,
    _admin: TrustedAdmin,
) -> Result<Json<Vec<api::KeyServer>>, Error> {
    Ok(Json(views::all(
        store::run(&state.store, |s| s.list_key_servers()).await?,
    )))
}

#[utoipa::path(
    get,
    path = "/v1/key-servers/{name}",
    tag = "key-servers",
    summary = "A key server",
    params(("name" = String, Path, description = "The name")),
    responses((status = 200, description = "Success", body = api::KeyServer)),
    security(("bearer" = [])),
)]
pub async fn get_key_server(
    State(state): State<AppState>,
    _admin: TrustedAdmin,
    Path(name): Path<String>,
) -> Result<Json<api::KeyServer>, Error> {
    let n = name.clone();
    store::run(&state.store, move |s| s.get_key_server(&n))
        .await?
        .map(|k| Json(k.into()))
        .ok_or_else(|| Error::NotFound(format!("key server {name} not found")))
}

#[utoipa::path(
    post,
    path = "/v1/key-servers",
    tag = "key-servers",
    summary = "Add a key server: KMIP endpoints tried in order, client certificate and key, CA; connected to first unless no_check",
    params(vouch_api::types::AddKeyServer),
    request_body = NewKeyServer,
    responses((status = 201, description = "Created", body = api::KeyServer)),
    security(("bearer" = [])),
)]
pub async fn add_key_server(
    State(state): State<AppState>,
    admin: TrustedAdmin,
    Query(q): Query<vouch_api::types::AddKeyServer>,
    JsonBody(body): JsonBody<NewKeyServer>,
) -> Result<(StatusCode, Json<api::KeyServer>), Error> {
    check_name("key server", &body.name)?;
    if body.endpoints.is_empty() || body.endpoints.len() > 16 {
        return Err(Error::BadRequest(
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
    // The endpoints and PEM must make a KMIP client, which reaches a replica (TLS with the
    // client certificate) unless the check is skipped.
    let client = key_server(&record)?;
    if !q.no_check {
        client.connect().await.map_err(|e| {
            Error::BadRequest(format!(
                "cannot connect to key server {}: {e}; check its endpoints, the client certificate and the CA, or add it without the check (--no-check)",
                record.name
            ))
        })?;
    }
    let r = record.clone();
    store::run(&state.store, move |s| s.add_key_server(&r)).await?;
    audit(
        &state,
        admin.name(),
        "key_server.added",
        &record.name,
        serde_json::json!({"endpoints": record.endpoints}),
    )
    .await;
    Ok((StatusCode::CREATED, Json(record.into())))
}

#[utoipa::path(
    delete,
    path = "/v1/key-servers/{name}",
    tag = "key-servers",
    summary = "Remove a key server no provider uses",
    params(("name" = String, Path, description = "The name")),
    responses((status = 204, description = "Done")),
    security(("bearer" = [])),
)]
pub async fn delete_key_server(
    State(state): State<AppState>,
    admin: TrustedAdmin,
    Path(name): Path<String>,
) -> Result<StatusCode, Error> {
    let n = name.clone();
    store::run(&state.store, move |s| s.delete_key_server(&n)).await?;
    audit(
        &state,
        admin.name(),
        "key_server.deleted",
        &name,
        serde_json::json!({}),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

/// Creates and activates an AES-256 key on the key server (a convenience: provisioning the
/// primary key is the key server administrator's step).
#[utoipa::path(
    post,
    path = "/v1/key-servers/{name}/keys",
    tag = "key-servers",
    summary = "Create and activate an AES-256 key on the key server (convenience)",
    params(("name" = String, Path, description = "The name")),
    request_body = NewKmsKey,
    responses((status = 201, description = "Created", body = CreatedKmsKey)),
    security(("bearer" = [])),
)]
pub async fn create_kms_key(
    State(state): State<AppState>,
    admin: TrustedAdmin,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<NewKmsKey>,
) -> Result<(StatusCode, Json<CreatedKmsKey>), Error> {
    if let Some(n) = &body.name {
        check_name("key name", n)?;
    }
    let n = name.clone();
    let record = store::run(&state.store, move |s| s.get_key_server(&n))
        .await?
        .ok_or_else(|| Error::NotFound(format!("key server {name} not found")))?;
    let kms = key_server(&record)?;
    let kmip = |e: vouch_kmip::Error| crate::service::keys::kmip_error(&name, &e);
    let mut connection = kms.connect().await.map_err(kmip)?;
    let id = connection
        .create_symmetric_key(&SymmetricKeyTemplate::aes_256(body.name.as_deref()))
        .await
        .map_err(kmip)?;
    connection.activate(&id).await.map_err(kmip)?;
    audit(
        &state,
        admin.name(),
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

#[utoipa::path(
    get,
    path = "/v1/key-providers",
    tag = "key-providers",
    summary = "Trusted key providers",
    responses((status = 200, description = "Success", body = Vec<api::KeyProvider>)),
    security(("bearer" = [])),
)]
pub async fn list_key_providers(
    State(state): State<AppState>,
    _admin: TrustedAdmin,
) -> Result<Json<Vec<KeyProviderRecord>>, Error> {
    Ok(Json(
        store::run(&state.store, |s| s.list_key_providers()).await?,
    ))
}

#[utoipa::path(
    get,
    path = "/v1/key-providers/{name}",
    tag = "key-providers",
    summary = "A trusted key provider",
    params(("name" = String, Path, description = "The name")),
    responses((status = 200, description = "Success", body = api::KeyProvider)),
    security(("bearer" = [])),
)]
pub async fn get_key_provider(
    State(state): State<AppState>,
    _admin: TrustedAdmin,
    Path(name): Path<String>,
) -> Result<Json<KeyProviderRecord>, Error> {
    let n = name.clone();
    store::run(&state.store, move |s| s.get_key_provider(&n))
        .await?
        .map(Json)
        .ok_or_else(|| Error::NotFound(format!("key provider {name} not found")))
}

#[utoipa::path(
    get,
    path = "/v1/key-providers/{name}/status",
    tag = "key-providers",
    summary = "A key provider's health, checked now: each key server endpoint (replica), the primary key's state, the last failure",
    params(("name" = String, Path, description = "The name")),
    responses((status = 200, description = "Success", body = api::KeyProviderStatus)),
    security(("bearer" = [])),
)]
pub async fn key_provider_status(
    State(state): State<AppState>,
    _admin: TrustedAdmin,
    Path(name): Path<String>,
) -> Result<Json<api::KeyProviderStatus>, Error> {
    let n = name.clone();
    let (record, server) = store::run(&state.store, move |s| {
        let Some(p) = s.get_key_provider(&n)? else {
            return Ok(None);
        };
        Ok(s.get_key_server(&p.key_server)?.map(|k| (p, k)))
    })
    .await?
    .ok_or_else(|| Error::NotFound(format!("key provider {name} not found")))?;
    let reached = crate::service::health::endpoints(&server).await.endpoints;
    for e in &reached {
        state
            .metrics
            .key_servers
            .endpoint(&server.name, &e.endpoint, e.reachable);
    }
    // A provider that cannot even be built (its key server's PEM does not parse, say) is
    // reported as such, with the endpoints tried all the same.
    let (key_state, key_error) = match state.keys.build(&server, &record) {
        Err(e) => {
            let reason = e.reason();
            state.keys.failed(&name, &reason, crate::now());
            state.metrics.key_servers.failed(&name, crate::now());
            ("configuration_error".to_owned(), Some(reason))
        }
        Ok(provider) => match provider.check_primary().await {
            Ok(()) => ("active".to_owned(), None),
            Err(e) => {
                crate::service::keys::note_failure(&state, &name, &e);
                (e.kind().to_owned(), Some(e.to_string()))
            }
        },
    };
    state
        .metrics
        .key_servers
        .key_checked(&name, key_error.is_none());
    let last = state.keys.last_error(&name);
    let degraded = key_error.is_some() || reached.iter().any(|e| !e.reachable);
    Ok(Json(api::KeyProviderStatus {
        name: record.name,
        key_server: server.name,
        status: if degraded { "degraded" } else { "ok" }.into(),
        endpoints: reached,
        primary_key_id: record.primary_key_id,
        primary_key_version: record.primary_key_version,
        key_state,
        key_error,
        last_error: last.as_ref().map(|(reason, _)| reason.clone()),
        last_error_at: last.map(|(_, at)| at),
    }))
}

/// Checks the record's primary key on its key server (exists, Active, AES-256, usable in the
/// configured mode).
async fn check_provider(state: &AppState, record: &KeyProviderRecord) -> Result<(), Error> {
    let ks = record.key_server.clone();
    let server = store::run(&state.store, move |s| s.get_key_server(&ks))
        .await?
        .ok_or_else(|| Error::NotFound(format!("key server {} not found", record.key_server)))?;
    let provider = state.keys.build(&server, record)?;
    provider
        .check_primary()
        .await
        .map_err(|e| provider_error(&e))
}

#[utoipa::path(
    post,
    path = "/v1/key-providers",
    tag = "key-providers",
    summary = "Add a trusted key provider; its primary key must exist, be Active, AES-256 and usable in the wrapping mode",
    request_body = NewKeyProvider,
    responses((status = 201, description = "Created", body = api::KeyProvider)),
    security(("bearer" = [])),
)]
pub async fn add_key_provider(
    State(state): State<AppState>,
    admin: TrustedAdmin,
    JsonBody(body): JsonBody<NewKeyProvider>,
) -> Result<(StatusCode, Json<KeyProviderRecord>), Error> {
    check_name("key provider", &body.name)?;
    if body.name.len() > vouch_keyprovider::ciphertext::MAX_PROVIDER_NAME {
        return Err(Error::BadRequest(
            "a key provider's name is at most 64 characters".into(),
        ));
    }
    if body.primary_key_id.is_empty()
        || body.primary_key_id.len() > vouch_keyprovider::ciphertext::MAX_KEY_ID
    {
        return Err(Error::BadRequest(
            "a primary key id is 1 to 128 bytes".into(),
        ));
    }
    if body.refresh_seconds < 0 || body.lifetime_seconds < body.refresh_seconds {
        return Err(Error::BadRequest(
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
        admin.name(),
        "key_provider.added",
        &record.name,
        serde_json::json!({"key_server": record.key_server, "primary_key_id": record.primary_key_id, "wrapping": record.wrapping}),
    )
    .await;
    Ok((StatusCode::CREATED, Json(record)))
}

#[utoipa::path(
    delete,
    path = "/v1/key-providers/{name}",
    tag = "key-providers",
    summary = "Remove a key provider no cluster uses",
    params(("name" = String, Path, description = "The name")),
    responses((status = 204, description = "Done")),
    security(("bearer" = [])),
)]
pub async fn delete_key_provider(
    State(state): State<AppState>,
    admin: TrustedAdmin,
    Path(name): Path<String>,
) -> Result<StatusCode, Error> {
    let n = name.clone();
    store::run(&state.store, move |s| s.delete_key_provider(&n)).await?;
    state.keys.forget(&name).await;
    audit(
        &state,
        admin.name(),
        "key_provider.deleted",
        &name,
        serde_json::json!({}),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

/// Rotation: a new primary key (checked like on add) takes over encryption; the old one is
/// retired and still decrypts, so ciphertexts can be rewrapped.
#[utoipa::path(
    put,
    path = "/v1/key-providers/{name}/primary-key",
    tag = "key-providers",
    summary = "Rotate: a new primary key encrypts; the old one is retired and still decrypts (rewrap)",
    params(("name" = String, Path, description = "The name")),
    request_body = NewPrimaryKey,
    responses((status = 200, description = "Success", body = api::KeyProvider)),
    security(("bearer" = [])),
)]
pub async fn rotate_primary_key(
    State(state): State<AppState>,
    admin: TrustedAdmin,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<NewPrimaryKey>,
) -> Result<Json<KeyProviderRecord>, Error> {
    let n = name.clone();
    let mut record = store::run(&state.store, move |s| s.get_key_provider(&n))
        .await?
        .ok_or_else(|| Error::NotFound(format!("key provider {name} not found")))?;
    if body.primary_key_id.is_empty()
        || body.primary_key_id.len() > vouch_keyprovider::ciphertext::MAX_KEY_ID
    {
        return Err(Error::BadRequest(
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
        admin.name(),
        "key_provider.rotated",
        &name,
        serde_json::json!({"primary_key_id": record.primary_key_id, "version": record.primary_key_version}),
    )
    .await;
    Ok(Json(record))
}

// ---- A cluster's provider.

#[utoipa::path(
    get,
    path = "/v1/clusters/{cluster}/key-provider",
    tag = "key-providers",
    summary = "The cluster's key provider",
    params(("cluster" = String, Path, description = "The trusted cluster")),
    responses((status = 200, description = "Success", body = ClusterKeyProvider)),
    security(("bearer" = [])),
)]
pub async fn get_cluster_key_provider(
    State(state): State<AppState>,
    _admin: TrustedAdmin,
    Path(cluster): Path<String>,
) -> Result<Json<ClusterKeyProvider>, Error> {
    require_cluster(&state, &cluster).await?;
    Ok(Json(cluster_providers(&state, cluster).await?))
}

/// The cluster's default provider and all its providers.
async fn cluster_providers(state: &AppState, cluster: String) -> Result<ClusterKeyProvider, Error> {
    let c = cluster.clone();
    let (provider, providers) = store::run(&state.store, move |s| {
        Ok((s.cluster_key_provider(&c)?, s.cluster_providers(&c)?))
    })
    .await?;
    Ok(ClusterKeyProvider {
        cluster,
        provider,
        providers,
    })
}

#[utoipa::path(
    put,
    path = "/v1/clusters/{cluster}/key-provider",
    tag = "key-providers",
    summary = "Configure the cluster with a key provider",
    params(("cluster" = String, Path, description = "The trusted cluster")),
    request_body = SetClusterKeyProvider,
    responses((status = 200, description = "Success", body = ClusterKeyProvider)),
    security(("bearer" = [])),
)]
pub async fn set_cluster_key_provider(
    State(state): State<AppState>,
    admin: TrustedAdmin,
    Path(cluster): Path<String>,
    JsonBody(body): JsonBody<SetClusterKeyProvider>,
) -> Result<Json<ClusterKeyProvider>, Error> {
    require_cluster(&state, &cluster).await?;
    let p = body.provider.clone();
    if store::run(&state.store, move |s| s.get_key_provider(&p))
        .await?
        .is_none()
    {
        return Err(Error::NotFound(format!(
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
        admin.name(),
        "cluster.key_provider_set",
        &cluster,
        serde_json::json!({"provider": body.provider}),
    )
    .await;
    Ok(Json(cluster_providers(&state, cluster).await?))
}

#[utoipa::path(
    put,
    path = "/v1/clusters/{cluster}/key-providers/{provider}",
    tag = "key-providers",
    summary = "Configure the cluster with one more key provider, which its hosts' key requests may name (the default stays)",
    params(
        ("cluster" = String, Path, description = "The trusted cluster"),
        ("provider" = String, Path, description = "The key provider"),
    ),
    responses((status = 200, description = "Success", body = ClusterKeyProvider)),
    security(("bearer" = [])),
)]
pub async fn add_cluster_provider(
    State(state): State<AppState>,
    admin: TrustedAdmin,
    Path((cluster, provider)): Path<(String, String)>,
) -> Result<Json<ClusterKeyProvider>, Error> {
    require_cluster(&state, &cluster).await?;
    let (c, p) = (cluster.clone(), provider.clone());
    store::run(&state.store, move |s| {
        if s.get_key_provider(&p)?.is_none() {
            return Err(store::StoreError::NotFound(format!("key provider {p}")));
        }
        s.add_cluster_provider(&c, &p)
    })
    .await?;
    audit(
        &state,
        admin.name(),
        "cluster.key_provider_added",
        &cluster,
        serde_json::json!({"provider": provider}),
    )
    .await;
    Ok(Json(cluster_providers(&state, cluster).await?))
}

#[utoipa::path(
    delete,
    path = "/v1/clusters/{cluster}/key-providers/{provider}",
    tag = "key-providers",
    summary = "Remove a key provider from the cluster (not its default: change or clear the default first)",
    params(
        ("cluster" = String, Path, description = "The trusted cluster"),
        ("provider" = String, Path, description = "The key provider"),
    ),
    responses((status = 204, description = "Done")),
    security(("bearer" = [])),
)]
pub async fn remove_cluster_provider(
    State(state): State<AppState>,
    admin: TrustedAdmin,
    Path((cluster, provider)): Path<(String, String)>,
) -> Result<StatusCode, Error> {
    require_cluster(&state, &cluster).await?;
    let (c, p) = (cluster.clone(), provider.clone());
    store::run(&state.store, move |s| s.remove_cluster_provider(&c, &p)).await?;
    audit(
        &state,
        admin.name(),
        "cluster.key_provider_removed",
        &cluster,
        serde_json::json!({"provider": provider}),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    delete,
    path = "/v1/clusters/{cluster}/key-provider",
    tag = "key-providers",
    summary = "Remove the cluster's key provider",
    params(("cluster" = String, Path, description = "The trusted cluster")),
    responses((status = 204, description = "Done")),
    security(("bearer" = [])),
)]
pub async fn clear_cluster_key_provider(
    State(state): State<AppState>,
    admin: TrustedAdmin,
    Path(cluster): Path<String>,
) -> Result<StatusCode, Error> {
    require_cluster(&state, &cluster).await?;
    let c = cluster.clone();
    store::run(&state.store, move |s| s.set_cluster_key_provider(&c, None)).await?;
    audit(
        &state,
        admin.name(),
        "cluster.key_provider_cleared",
        &cluster,
        serde_json::json!({}),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

// ---- Host key operations.

fn b64(what: &str, s: &str) -> Result<Vec<u8>, Error> {
    B64.decode(s)
        .map_err(|_| Error::BadRequest(format!("{what} is not base64")))
}

/// The provider the request names (one of the host's cluster's) or the cluster's default.
async fn provider_of(
    state: &AppState,
    host: &AttestedHost,
    requested: Option<&str>,
) -> Result<std::sync::Arc<KeyProvider>, Error> {
    let name = host
        .provider(requested)
        .map_err(|e| deny(state, &host.host.ek_hash, "key request", e))?;
    state.keys.provider(&state.store, name).await
}

/// Logs a key operation's refusal by the provider.
fn refused(
    state: &AppState,
    host: &AttestedHost,
    provider: &KeyProvider,
    what: &str,
    e: &vouch_keyprovider::Error,
) -> Error {
    crate::service::keys::note_failure(state, provider.name(), e);
    deny(state, &host.host.ek_hash, what, provider_error(e))
}

#[utoipa::path(
    post,
    path = "/v1/keys/generate",
    tag = "keys",
    summary = "A fresh 256-bit data key and its wrapped form",
    request_body = GenerateKeyRequest,
    responses((status = 200, description = "Success", body = GeneratedKey)),
    security(("attestation" = [])),
)]
pub async fn generate_key(
    State(state): State<AppState>,
    host: AttestedHost,
    JsonBody(body): JsonBody<GenerateKeyRequest>,
) -> Result<Json<GeneratedKey>, Error> {
    let aad = b64("aad", &body.aad)?;
    let provider = provider_of(&state, &host, body.provider.as_deref()).await?;
    let key = provider
        .generate_key_in(Some(&host.host.cluster), &aad)
        .await
        .map_err(|e| refused(&state, &host, &provider, "generate key", &e))?;
    Ok(Json(GeneratedKey {
        provider: provider.name().to_owned(),
        key: B64.encode(key.key.as_ref()),
        wrapped: B64.encode(&key.wrapped),
    }))
}

#[utoipa::path(
    post,
    path = "/v1/keys/encrypt",
    tag = "keys",
    summary = "AES-256-GCM under the provider's primary key, with associated data",
    request_body = EncryptRequest,
    responses((status = 200, description = "Success", body = CiphertextReply)),
    security(("attestation" = [])),
)]
pub async fn encrypt(
    State(state): State<AppState>,
    host: AttestedHost,
    JsonBody(body): JsonBody<EncryptRequest>,
) -> Result<Json<CiphertextReply>, Error> {
    let plaintext = Zeroizing::new(b64("plaintext", &body.plaintext)?);
    let aad = b64("aad", &body.aad)?;
    let provider = provider_of(&state, &host, body.provider.as_deref()).await?;
    let ct = provider
        .encrypt_in(Some(&host.host.cluster), &plaintext, &aad)
        .await
        .map_err(|e| refused(&state, &host, &provider, "encrypt", &e))?;
    Ok(Json(CiphertextReply {
        ciphertext: B64.encode(ct),
    }))
}

#[utoipa::path(
    post,
    path = "/v1/keys/decrypt",
    tag = "keys",
    summary = "Decrypt a ciphertext of the cluster's provider",
    request_body = CiphertextRequest,
    responses((status = 200, description = "Success", body = PlaintextReply)),
    security(("attestation" = [])),
)]
pub async fn decrypt(
    State(state): State<AppState>,
    host: AttestedHost,
    JsonBody(body): JsonBody<CiphertextRequest>,
) -> Result<Json<PlaintextReply>, Error> {
    let ct = b64("ciphertext", &body.ciphertext)?;
    let aad = b64("aad", &body.aad)?;
    let provider = provider_of(&state, &host, body.provider.as_deref()).await?;
    let plain = provider
        .decrypt_in(Some(&host.host.cluster), &ct, &aad)
        .await
        .map_err(|e| refused(&state, &host, &provider, "decrypt", &e))?;
    Ok(Json(PlaintextReply {
        plaintext: B64.encode(plain.as_slice()),
    }))
}

#[utoipa::path(
    post,
    path = "/v1/keys/rewrap",
    tag = "keys",
    summary = "Decrypt and encrypt again under the current primary key",
    request_body = CiphertextRequest,
    responses((status = 200, description = "Success", body = CiphertextReply)),
    security(("attestation" = [])),
)]
pub async fn rewrap(
    State(state): State<AppState>,
    host: AttestedHost,
    JsonBody(body): JsonBody<CiphertextRequest>,
) -> Result<Json<CiphertextReply>, Error> {
    let ct = b64("ciphertext", &body.ciphertext)?;
    let aad = b64("aad", &body.aad)?;
    let provider = provider_of(&state, &host, body.provider.as_deref()).await?;
    let ct = provider
        .rewrap_in(Some(&host.host.cluster), &ct, &aad)
        .await
        .map_err(|e| refused(&state, &host, &provider, "rewrap", &e))?;
    Ok(Json(CiphertextReply {
        ciphertext: B64.encode(ct),
    }))
}

fn batch_request(item: BatchItem) -> Result<Request, Error> {
    let aad = b64("aad", &item.aad)?;
    let field = |v: Option<String>, name: &str| {
        v.ok_or_else(|| Error::BadRequest(format!("{} needs {name}", item.op)))
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
        other => Err(Error::BadRequest(format!(
            "unknown batch op '{other}' (generate, encrypt, decrypt, rewrap)"
        ))),
    }
}

#[utoipa::path(
    post,
    path = "/v1/keys/batch",
    tag = "keys",
    summary = "Several key operations, a result per item",
    request_body = BatchRequest,
    responses((status = 200, description = "Success", body = BatchReply)),
    security(("attestation" = [])),
)]
pub async fn batch(
    State(state): State<AppState>,
    host: AttestedHost,
    JsonBody(body): JsonBody<BatchRequest>,
) -> Result<Json<BatchReply>, Error> {
    if body.items.len() > vouch_keyprovider::MAX_BATCH {
        return Err(Error::BadRequest(format!(
            "at most {} items in a batch",
            vouch_keyprovider::MAX_BATCH
        )));
    }
    let requests = body
        .items
        .into_iter()
        .map(batch_request)
        .collect::<Result<Vec<_>, _>>()?;
    let provider = provider_of(&state, &host, body.provider.as_deref()).await?;
    let replies = provider
        .batch_in(Some(&host.host.cluster), requests)
        .await
        .map_err(|e| refused(&state, &host, &provider, "batch", &e))?;
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
                let e = refused(&state, &host, &provider, "batch item", &e);
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
