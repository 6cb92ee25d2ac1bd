//! The HTTP edge: the management and host APIs over TLS (see [`crate::tls`]). Handlers are
//! thin: an extractor proves who may call ([`auth`]), the body is a `vouch_api` type, the
//! work is the service core's, and a [`crate::service::Error`] becomes a status and a JSON
//! body ([`error`]). Each handler carries its OpenAPI operation; [`routes`] is the one list of
//! routes, from which the router and the document served at `/openapi.json` are both made.

pub mod auth;
pub mod console;
pub mod error;
pub mod https;
pub mod keys;
pub mod openapi;
mod views;

use axum::Json;
use axum::Router;
use axum::extract::{FromRequest, MatchedPath, Path, Query, Request, State};
use axum::http::{StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, SubjectPublicKeyInfoDer};
use serde::de::DeserializeOwned;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use vouch_attest::ek::EkKey;

use crate::jwt::AttestationClaims;
use crate::metrics::HttpLabels;
use crate::service::auth::{self as service_auth, TRUSTED_ADMINS};
use crate::service::{AppState, Error};
use crate::store::{
    self, CaCert, Cluster, ClusterEk, EkEntryKind, Host, HostState, ManagementServer,
    SoftwareVersionRecord,
};
use auth::{Caller, HostOperation, TrustedAdmin};
use vouch_api::types::{
    self as api, ClusterChange, ClusterView, CreatedToken, EventQuery, Health, HostStatus,
    HostToken, HostView, NewCaCerts, NewCluster, NewClusterEk, NewHost, NewManagementServer,
    NewPrincipal, NewToken, PutSoftwareVersion, RemoveCluster, SoftwareVersionBody,
};

/// Every route with its OpenAPI operation: the one list from which both the router and the
/// document are made, so neither can have a route the other lacks.
fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::base())
        .routes(routes!(healthz))
        .routes(routes!(metrics))
        .routes(routes!(openapi_json))
        .routes(routes!(jwks))
        .routes(routes!(whoami))
        .routes(routes!(deep_health))
        .routes(routes!(list_signing_keys))
        .routes(routes!(rotate_signing_key))
        .routes(routes!(reload_tls))
        .routes(routes!(list_principals, create_principal))
        .routes(routes!(get_principal, delete_principal))
        .routes(routes!(add_group, remove_group))
        .routes(routes!(list_tokens, create_token))
        .routes(routes!(delete_token))
        .routes(routes!(list_management_servers, add_management_server))
        .routes(routes!(delete_management_server))
        .routes(routes!(list_clusters, create_cluster))
        .routes(routes!(get_cluster, update_cluster, delete_cluster))
        .routes(routes!(list_ca_certs, add_ca_certs))
        .routes(routes!(delete_ca_cert))
        .routes(routes!(list_cluster_eks, add_cluster_ek))
        .routes(routes!(delete_cluster_ek))
        .routes(routes!(list_software_versions))
        .routes(routes!(put_software_version, delete_software_version))
        .routes(routes!(list_hosts, add_host))
        .routes(routes!(delete_host))
        .routes(routes!(get_host))
        .routes(routes!(get_host_token))
        .routes(routes!(list_events))
        .routes(routes!(keys::list_key_servers, keys::add_key_server))
        .routes(routes!(keys::get_key_server, keys::delete_key_server))
        .routes(routes!(keys::create_kms_key))
        .routes(routes!(keys::list_key_providers, keys::add_key_provider))
        .routes(routes!(keys::get_key_provider, keys::delete_key_provider))
        .routes(routes!(keys::rotate_primary_key))
        .routes(routes!(keys::key_provider_status))
        .routes(routes!(
            keys::get_cluster_key_provider,
            keys::set_cluster_key_provider,
            keys::clear_cluster_key_provider
        ))
        .routes(routes!(
            keys::add_cluster_provider,
            keys::remove_cluster_provider
        ))
        .routes(routes!(keys::generate_key))
        .routes(routes!(keys::encrypt))
        .routes(routes!(keys::decrypt))
        .routes(routes!(keys::rewrap))
        .routes(routes!(keys::batch))
}

/// The API router.
pub fn router(state: AppState) -> Router {
    let (router, _) = routes().split_for_parts();
    router
        .merge(console::router())
        .fallback(no_such_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(middleware::from_fn_with_state(state.clone(), deadline))
        .with_state(state)
}

/// Bounds a request, its body included, by `api_request_timeout`: past it the answer is 408
/// and the connection is closed, so a client sending its body slowly holds nothing for long.
async fn deadline(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let limit = state.config.api_request_timeout();
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            let mut response = error::answer(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!("the request took longer than {} s", limit.as_secs()),
            );
            response.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
            response
        }
    }
}

/// The OpenAPI document of [`router`], made once.
pub fn document() -> &'static utoipa::openapi::OpenApi {
    static DOCUMENT: std::sync::OnceLock<utoipa::openapi::OpenApi> = std::sync::OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let (_, mut document) = routes().split_for_parts();
        openapi::finish(&mut document);
        document
    })
}

async fn no_such_route(uri: Uri) -> Response {
    error::answer(
        StatusCode::NOT_FOUND,
        "no_such_route",
        format!("no route for {}", uri.path()),
    )
}

async fn method_not_allowed() -> Response {
    error::answer(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not accept this method".into(),
    )
}

/// Counts and logs every request by its route template.
async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let started = std::time::Instant::now();
    let changing = !request.method().is_safe();
    let response = next.run(request).await;
    if changing {
        // A change made through this replica is in force here at once (see
        // `service::generation`).
        state.config_generation.invalidate();
    }
    let status = response.status().as_u16();
    tracing::debug!(%method, %route, status, elapsed_ms = started.elapsed().as_millis(), "request");
    state
        .metrics
        .http_requests
        .get_or_create(&HttpLabels {
            method,
            route,
            status,
        })
        .inc();
    response
}

/// A JSON body whose rejection is answered in the API's JSON error form.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Error> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Self(v)),
            Err(e) => Err(Error::BadRequest(e.body_text())),
        }
    }
}

/// Records an audit event; failure to record is logged, not fatal to the request.
async fn audit(
    state: &AppState,
    who: &str,
    kind: &str,
    subject: &str,
    mut detail: serde_json::Value,
) {
    if let Some(map) = detail.as_object_mut() {
        map.insert("by".into(), who.into());
    }
    crate::service::events::record(state, kind, subject, detail).await;
}

pub(crate) fn check_name(what: &str, name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'));
    if ok {
        Ok(())
    } else {
        Err(Error::BadRequest(format!(
            "{what} '{name}' must be 1 to 128 characters of A-Z a-z 0-9 - _ . @"
        )))
    }
}

fn check_hash(ek_hash: &str) -> Result<String, Error> {
    let lower = ek_hash.to_ascii_lowercase();
    if lower.len() == 64 && crate::unhex(&lower).is_some() {
        Ok(lower)
    } else {
        Err(Error::BadRequest(
            "an EK hash is 64 hex digits (SHA-256)".into(),
        ))
    }
}

async fn require_cluster(state: &AppState, name: &str) -> Result<Cluster, Error> {
    let n = name.to_owned();
    store::run(&state.store, move |s| s.get_cluster(&n))
        .await?
        .ok_or_else(|| Error::NotFound(format!("cluster {name} not found")))
}

// ---- Public routes.

#[utoipa::path(
    get,
    path = "/healthz",
    tag = "public",
    summary = "Liveness and database check",
    responses((status = 200, description = "Success", body = api::Health)),
)]
async fn healthz(State(state): State<AppState>) -> Result<Json<Health>, Error> {
    store::run(&state.store, |s| s.get_cluster("")).await?;
    Ok(Json(Health {
        status: "ok".into(),
    }))
}

#[utoipa::path(
    get,
    path = "/v1/health",
    tag = "health",
    summary = "Deep health: the store, each key server's endpoints, certificate expiry",
    responses((status = 200, description = "Success", body = api::DeepHealth)),
    security(("bearer" = [])),
)]
async fn deep_health(State(state): State<AppState>, _admin: TrustedAdmin) -> Json<api::DeepHealth> {
    Json(crate::service::health::deep(&state).await)
}

#[utoipa::path(
    post,
    path = "/v1/tls/reload",
    tag = "health",
    summary = "Read the TLS certificate and key files again (as SIGHUP does); a bad pair keeps the one in service",
    responses(
        (status = 200, description = "The certificate now in service", body = api::TlsCertificate),
        (status = 409, description = "The files were refused; the certificate in service stays"),
    ),
    security(("bearer" = [])),
)]
async fn reload_tls(
    State(state): State<AppState>,
    _admin: TrustedAdmin,
) -> Result<Json<api::TlsCertificate>, Error> {
    // The files on disk, not the request, are at fault: a conflict (the vouch CLI's exit 1).
    let info = crate::service::certs::reload_tls(&state)
        .await
        .map_err(Error::Conflict)?;
    Ok(Json(api::TlsCertificate {
        fingerprint: info.fingerprint,
        serial: info.serial,
        subject: info.subject,
        not_before: info.not_before,
        not_after: info.not_after,
    }))
}

fn signing_keys_view(state: &AppState) -> api::SigningKeys {
    api::SigningKeys {
        keys: state
            .signer
            .describe()
            .into_iter()
            .map(|k| api::SigningKeyInfo {
                kid: k.kid,
                retired_at: k.retired_at,
                grace_until: k.grace_until,
            })
            .collect(),
        grace_secs: state.config.signing_key_grace_secs(),
    }
}

#[utoipa::path(
    get,
    path = "/v1/signing-keys",
    tag = "health",
    summary = "The token-signing keys: the current one and the one a rotation retired",
    responses((status = 200, description = "Success", body = api::SigningKeys)),
    security(("bearer" = [])),
)]
async fn list_signing_keys(
    State(state): State<AppState>,
    _admin: TrustedAdmin,
) -> Json<api::SigningKeys> {
    Json(signing_keys_view(&state))
}

#[utoipa::path(
    post,
    path = "/v1/signing-keys/rotate",
    tag = "health",
    summary = "Rotate the token-signing key: a new key signs; the old one stays in the JWKS for the grace period",
    responses(
        (status = 200, description = "Success", body = api::SigningKeys),
        (status = 409, description = "The previous key is still in its grace period"),
    ),
    security(("bearer" = [])),
)]
async fn rotate_signing_key(
    State(state): State<AppState>,
    admin: TrustedAdmin,
) -> Result<Json<api::SigningKeys>, Error> {
    crate::service::certs::rotate_signing_key(&state, admin.name()).await?;
    Ok(Json(signing_keys_view(&state)))
}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "public",
    summary = "Prometheus metrics (OpenMetrics text)",
    responses((status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text", body = String)),
)]
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "public",
    summary = "This document",
    responses((status = 200, description = "This document", body = Object)),
)]
async fn openapi_json() -> Json<&'static utoipa::openapi::OpenApi> {
    Json(document())
}

#[utoipa::path(
    get,
    path = "/.well-known/jwks.json",
    tag = "public",
    summary = "Public keys that verify attestation tokens",
    responses((status = 200, description = "Success", body = api::Jwks)),
)]
async fn jwks(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, "public, max-age=300")],
        Json(state.signer.jwks()),
    )
}

// ---- Principals, groups and tokens.

#[utoipa::path(
    get,
    path = "/v1/whoami",
    tag = "whoami",
    summary = "The caller's principal",
    responses((status = 200, description = "Success", body = api::Principal)),
    security(("bearer" = [])),
)]
async fn whoami(caller: Caller) -> Json<store::Principal> {
    Json(caller.principal)
}

#[utoipa::path(
    get,
    path = "/v1/principals",
    tag = "principals",
    summary = "List principals",
    responses((status = 200, description = "Success", body = Vec<api::Principal>)),
    security(("bearer" = [])),
)]
async fn list_principals(
    State(state): State<AppState>,
    _admin: TrustedAdmin,
) -> Result<Json<Vec<store::Principal>>, Error> {
    Ok(Json(
        store::run(&state.store, |s| s.list_principals()).await?,
    ))
}

#[utoipa::path(
    post,
    path = "/v1/principals",
    tag = "principals",
    summary = "Create a principal (person or service account)",
    request_body = NewPrincipal,
    responses((status = 201, description = "Created", body = api::Principal)),
    security(("bearer" = [])),
)]
async fn create_principal(
    State(state): State<AppState>,
    admin: TrustedAdmin,
    JsonBody(body): JsonBody<NewPrincipal>,
) -> Result<(StatusCode, Json<store::Principal>), Error> {
    check_name("principal", &body.name)?;
    for g in &body.groups {
        check_name("group", g)?;
    }
    let NewPrincipal { name, kind, groups } = body;
    let n = name.clone();
    let g = groups.clone();
    let created = store::run(&state.store, move |s| {
        s.create_principal(&n, kind, crate::now())?;
        for group in &g {
            s.add_to_group(&n, group)?;
        }
        s.get_principal(&n)
    })
    .await?
    .ok_or_else(|| Error::Internal("principal vanished".into()))?;
    audit(
        &state,
        admin.name(),
        "principal.created",
        &name,
        serde_json::json!({"kind": kind, "groups": groups}),
    )
    .await;
    Ok((StatusCode::CREATED, Json(created)))
}

#[utoipa::path(
    get,
    path = "/v1/principals/{name}",
    tag = "principals",
    summary = "Get a principal",
    params(("name" = String, Path, description = "The name")),
    responses((status = 200, description = "Success", body = api::Principal)),
    security(("bearer" = [])),
)]
async fn get_principal(
    State(state): State<AppState>,
    _admin: TrustedAdmin,
    Path(name): Path<String>,
) -> Result<Json<store::Principal>, Error> {
    let n = name.clone();
    store::run(&state.store, move |s| s.get_principal(&n))
        .await?
        .map(Json)
        .ok_or_else(|| Error::NotFound(format!("principal {name} not found")))
}

/// Refuses a change that would leave TrustedAdmins without members.
async fn keep_an_admin(state: &AppState, losing: &str) -> Result<(), Error> {
    let principals = store::run(&state.store, |s| s.list_principals()).await?;
    let remaining = principals
        .iter()
        .filter(|p| p.name != losing && p.in_group(TRUSTED_ADMINS))
        .count();
    let losing_is_admin = principals
        .iter()
        .any(|p| p.name == losing && p.in_group(TRUSTED_ADMINS));
    if losing_is_admin && remaining == 0 {
        return Err(Error::Conflict(format!(
            "{losing} is the last member of {TRUSTED_ADMINS}; add another first"
        )));
    }
    Ok(())
}

#[utoipa::path(
    delete,
    path = "/v1/principals/{name}",
    tag = "principals",
    summary = "Delete a principal and its tokens",
    params(("name" = String, Path, description = "The name")),
    responses((status = 204, description = "Done")),
    security(("bearer" = [])),
)]
async fn delete_principal(
    State(state): State<AppState>,
    admin: TrustedAdmin,
    Path(name): Path<String>,
) -> Result<StatusCode, Error> {
    keep_an_admin(&state, &name).await?;
    let n = name.clone();
    store::run(&state.store, move |s| s.delete_principal(&n)).await?;
    audit(
        &state,
        admin.name(),
        "principal.deleted",
        &name,
        serde_json::json!({}),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    put,
    path = "/v1/principals/{name}/groups/{group}",
    tag = "principals",
    summary = "Add a principal to a group",
    params(("name" = String, Path, description = "The name"), ("group" = String, Path, description = "A group name")),
    responses((status = 204, description = "Done")),
    security(("bearer" = [])),
)]
async fn add_group(
    State(state): State<AppState>,
    admin: TrustedAdmin,
    Path((name, group)): Path<(String, String)>,
) -> Result<StatusCode, Error> {
    check_name("group", &group)?;
    let (n, g) = (name.clone(), group.clone());
    store::run(&state.store, move |s| s.add_to_group(&n, &g)).await?;
    audit(
        &state,
        admin.name(),
        "group.member_added",
        &name,
        serde_json::json!({"group": group}),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    delete,
    path = "/v1/principals/{name}/groups/{group}",
    tag = "principals",
    summary = "Remove a principal from a group",
    params(("name" = String, Path, description = "The name"), ("group" = String, Path, description = "A group name")),
    responses((status = 204, description = "Done")),
    security(("bearer" = [])),
)]
async fn remove_group(
    State(state): State<AppState>,
    admin: TrustedAdmin,
    Path((name, group)): Path<(String, String)>,
) -> Result<StatusCode, Error> {
    if group == TRUSTED_ADMINS {
        keep_an_admin(&state, &name).await?;
    }
    let (n, g) = (name.clone(), group.clone());
    store::run(&state.store, move |s| s.remove_from_group(&n, &g)).await?;
    audit(
        &state,
        admin.name(),
        "group.member_removed",
        &name,
        serde_json::json!({"group": group}),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get,
    path = "/v1/principals/{name}/tokens",
    tag = "principals",
    summary = "List a principal's tokens (never the secrets)",
    params(("name" = String, Path, description = "The name")),
    responses((status = 200, description = "Success", body = Vec<api::TokenInfo>)),
    security(("bearer" = [])),
)]
async fn list_tokens(
    State(state): State<AppState>,
    _admin: TrustedAdmin,
    Path(name): Path<String>,
) -> Result<Json<Vec<store::TokenInfo>>, Error> {
    let n = name.clone();
    let tokens = store::run(&state.store, move |s| {
        s.get_principal(&n)?.map(|_| s.list_tokens(&n)).transpose()
    })
    .await?;
    tokens
        .map(Json)
        .ok_or_else(|| Error::NotFound(format!("principal {name} not found")))
}

#[utoipa::path(
    post,
    path = "/v1/principals/{name}/tokens",
    tag = "principals",
    summary = "Make a bearer token; the secret is shown once",
    params(("name" = String, Path, description = "The name")),
    request_body = NewToken,
    responses((status = 201, description = "Created", body = CreatedToken)),
    security(("bearer" = [])),
)]
async fn create_token(
    State(state): State<AppState>,
    admin: TrustedAdmin,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<NewToken>,
) -> Result<(StatusCode, Json<CreatedToken>), Error> {
    if body.description.len() > 256 {
        return Err(Error::BadRequest(
            "description is longer than 256 bytes".into(),
        ));
    }
    let token = service_auth::new_token(&name, &body.description, crate::now())?;
    let (info, hash) = (token.info.clone(), token.hash);
    store::run(&state.store, move |s| s.create_token(&info, &hash)).await?;
    audit(
        &state,
        admin.name(),
        "token.created",
        &name,
        serde_json::json!({"id": token.info.id}),
    )
    .await;
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            id: token.info.id,
            principal: token.info.principal,
            description: token.info.description,
            created_at: token.info.created_at,
            token: token.secret,
        }),
    ))
}

#[utoipa::path(
    delete,
    path = "/v1/principals/{name}/tokens/{id}",
    tag = "principals",
    summary = "Revoke a token",
    params(("name" = String, Path, description = "The name"), ("id" = String, Path, description = "The id")),
    responses((status = 204, description = "Done")),
    security(("bearer" = [])),
)]
async fn delete_token(
    State(state): State<AppState>,
    admin: TrustedAdmin,
    Path((name, id)): Path<(String, String)>,
) -> Result<StatusCode, Error> {
    let (n, i) = (name.clone(), id.clone());
    store::run(&state.store, move |s| s.delete_token(&n, &i)).await?;
    audit(
        &state,
        admin.name(),
        "token.deleted",
        &name,
        serde_json::json!({"id": id}),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

// ---- Management servers.

#[utoipa::path(
    get,
    path = "/v1/management-servers",
    tag = "management-servers",
    summary = "List management servers with host permission",
    responses((status = 200, description = "Success", body = Vec<api::ManagementServer>)),
    security(("bearer" = [])),
)]
async fn list_management_servers(
    State(state): State<AppState>,
    _admin: TrustedAdmin,
) -> Result<Json<Vec<api::ManagementServer>>, Error> {
    Ok(Json(views::all(
        store::run(&state.store, |s| s.list_management_servers()).await?,
    )))
}

#[utoipa::path(
    post,
    path = "/v1/management-servers",
    tag = "management-servers",
    summary = "Import a management server's ECDSA P-256 signing certificate (after the first, signed by a registered one)",
    request_body = NewManagementServer,
    responses((status = 201, description = "Created", body = api::ManagementServer)),
    security(("bearer" = [])),
)]
async fn add_management_server(
    State(state): State<AppState>,
    TrustedAdmin(admin): TrustedAdmin,
    uri: Uri,
    headers: axum::http::HeaderMap,
    bytes: axum::body::Bytes,
) -> Result<(StatusCode, Json<api::ManagementServer>), Error> {
    // Separation of duties: a management server may sign host operations, so registering one
    // needs what a host operation needs — once one is registered, a signature by a registered
    // one. The first is registered by a TrustedAdmin alone.
    let registered = store::run(&state.store, |s| s.list_management_servers()).await?;
    let (admin, signed_by) = if registered.is_empty() {
        (admin.name().to_owned(), None)
    } else {
        let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
        let signature = headers
            .get(vouch_api::signing::SIGNATURE_HEADER)
            .map(|v| v.to_str().unwrap_or(""));
        let permission = service_auth::check_host_permission(
            &state,
            admin,
            service_auth::SignedRequest {
                method: "POST",
                path_and_query: path,
                signature,
                body: &bytes,
            },
        )
        .await?;
        (
            permission.admin().name().to_owned(),
            Some(permission.server().to_owned()),
        )
    };
    let body: NewManagementServer = serde_json::from_slice(&bytes)
        .map_err(|e| Error::BadRequest(format!("invalid JSON body: {e}")))?;
    check_name("management server id", &body.id)?;
    let der = CertificateDer::from_pem_slice(body.certificate_pem.as_bytes())
        .map_err(|e| Error::BadRequest(format!("certificate_pem: {e}")))?;
    let (subject, _) = service_auth::management_certificate(&der).map_err(Error::BadRequest)?;
    let server = ManagementServer {
        id: body.id,
        fingerprint: crate::hex(&crate::sha256(&der)),
        certificate: der.to_vec(),
        subject,
        created_at: crate::now(),
    };
    let s2 = server.clone();
    store::run(&state.store, move |s| s.add_management_server(&s2)).await?;
    audit(
        &state,
        &admin,
        "management_server.added",
        &server.id,
        serde_json::json!({"fingerprint": server.fingerprint, "signed_by": signed_by}),
    )
    .await;
    Ok((StatusCode::CREATED, Json(server.into())))
}

#[utoipa::path(
    delete,
    path = "/v1/management-servers/{id}",
    tag = "management-servers",
    summary = "Remove a management server",
    params(("id" = String, Path, description = "The id")),
    responses((status = 204, description = "Done")),
    security(("bearer" = [])),
)]
async fn delete_management_server(
    State(state): State<AppState>,
    admin: TrustedAdmin,
    Path(id): Path<String>,
) -> Result<StatusCode, Error> {
    let i = id.clone();
    store::run(&state.store, move |s| s.delete_management_server(&i)).await?;
    audit(
        &state,
        admin.name(),
        "management_server.deleted",
        &id,
        serde_json::json!({}),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

// ---- Clusters and their trust configuration.

#[utoipa::path(
    get,
    path = "/v1/clusters",
    tag = "clusters",
    summary = "List trusted clusters",
    responses((status = 200, description = "Success", body = Vec<api::Cluster>)),
    security(("bearer" = [])),
)]
async fn list_clusters(
    State(state): State<AppState>,
    _admin: TrustedAdmin,
) -> Result<Json<Vec<Cluster>>, Error> {
    Ok(Json(store::run(&state.store, |s| s.list_clusters()).await?))
}

#[utoipa::path(
    post,
    path = "/v1/clusters",
    tag = "clusters",
    summary = "Create a trusted cluster",
    request_body = NewCluster,
    responses((status = 201, description = "Created", body = api::Cluster)),
    security(("bearer" = [])),
)]
async fn create_cluster(
    State(state): State<AppState>,
    admin: TrustedAdmin,
    JsonBody(body): JsonBody<NewCluster>,
) -> Result<(StatusCode, Json<Cluster>), Error> {
    check_name("cluster", &body.name)?;
    let pcrs = check_pcrs(body.pcrs.unwrap_or_else(|| DEFAULT_PCRS.to_vec()))?;
    let bank = check_bank(body.bank.unwrap_or_else(|| "sha256".into()))?;
    let cluster = Cluster {
        name: body.name,
        pcrs,
        bank,
        created_at: crate::now(),
        disabled_at: None,
        config_generation: 0,
    };
    let c = cluster.clone();
    store::run(&state.store, move |s| s.create_cluster(&c)).await?;
    audit(
        &state,
        admin.name(),
        "cluster.created",
        &cluster.name,
        serde_json::json!({"pcrs": cluster.pcrs, "bank": cluster.bank}),
    )
    .await;
    Ok((StatusCode::CREATED, Json(cluster)))
}

/// The PCRs a new cluster compares by default: those a Vouch firmware image is measured into
/// (`vouch image add`).
const DEFAULT_PCRS: [u32; 2] = [0, 1];

fn check_pcrs(mut pcrs: Vec<u32>) -> Result<Vec<u32>, Error> {
    if pcrs.is_empty() || pcrs.iter().any(|p| *p >= vouch_attest::pcr::PCR_COUNT) {
        return Err(Error::BadRequest(format!(
            "pcrs must be a non-empty list of PCR indices below {}",
            vouch_attest::pcr::PCR_COUNT
        )));
    }
    pcrs.sort_unstable();
    pcrs.dedup();
    Ok(pcrs)
}

fn check_bank(bank: String) -> Result<String, Error> {
    serde_json::from_value::<vouch_attest::HashAlg>(serde_json::Value::String(bank.clone()))
        .map_err(|_| {
            Error::BadRequest(format!(
                "bank '{bank}' is not a hash algorithm vouch-attest knows"
            ))
        })?;
    Ok(bank)
}

/// The PCRs of `cluster` for which `version` gives neither a value nor event digests in the
/// cluster's bank: a version with any can never match.
fn uncovered_pcrs(cluster: &Cluster, version: &vouch_attest::policy::SoftwareVersion) -> Vec<u32> {
    let bank = serde_json::from_value::<vouch_attest::HashAlg>(serde_json::Value::String(
        cluster.bank.clone(),
    ));
    let covered = |pcr: u32| {
        bank.as_ref().is_ok_and(|b| {
            version.pcrs.get(b).is_some_and(|m| m.contains_key(&pcr))
                || version.events.get(b).is_some_and(|m| m.contains_key(&pcr))
        })
    };
    cluster
        .pcrs
        .iter()
        .copied()
        .filter(|p| !covered(*p))
        .collect()
}

#[utoipa::path(
    patch,
    path = "/v1/clusters/{cluster}",
    tag = "clusters",
    summary = "Change a cluster's PCRs or bank, or disable or enable it",
    params(("cluster" = String, Path, description = "The trusted cluster")),
    request_body = ClusterChange,
    responses((status = 200, description = "Success", body = api::Cluster)),
    security(("bearer" = [])),
)]
async fn update_cluster(
    State(state): State<AppState>,
    admin: TrustedAdmin,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<ClusterChange>,
) -> Result<Json<Cluster>, Error> {
    let before = require_cluster(&state, &name).await?;
    let mut cluster = before.clone();
    if let Some(pcrs) = body.pcrs {
        cluster.pcrs = check_pcrs(pcrs)?;
    }
    if let Some(bank) = body.bank {
        cluster.bank = check_bank(bank)?;
    }
    let now = crate::now();
    match body.enabled {
        Some(false) if before.disabled_at.is_none() => cluster.disabled_at = Some(now),
        Some(true) => cluster.disabled_at = None,
        _ => {}
    }
    let c = cluster.clone();
    let disabled_now = before.disabled_at.is_none() && cluster.disabled_at.is_some();
    let reason = crate::service::cluster_disabled_reason(&name);
    let recorded = store::run(&state.store, move |s| {
        s.update_cluster(&c)?;
        let mut events = Vec::new();
        if disabled_now {
            // Its hosts lose their attested state now, so they get no keys from this moment.
            for host in s.list_hosts(&c.name)? {
                if host.state != HostState::Attested {
                    continue;
                }
                let record = store::AttestationRecord {
                    ek_hash: host.ek_hash,
                    cluster: c.name.clone(),
                    at: now,
                    attested: false,
                    software_version: None,
                    reason: Some(reason.clone()),
                    pcr_digest: None,
                    nonce: None,
                    valid_until: None,
                    token: None,
                    presented: None,
                    config_generation: None,
                };
                events.extend(s.record_attestation(&record)?.event);
            }
        }
        Ok(events)
    })
    .await?;
    for event in recorded {
        crate::service::events::announce(&state, event);
    }
    let kind = match (before.disabled_at, cluster.disabled_at) {
        (None, Some(_)) => "cluster.disabled",
        (Some(_), None) => "cluster.enabled",
        _ => "cluster.changed",
    };
    audit(
        &state,
        admin.name(),
        kind,
        &name,
        serde_json::json!({
            "pcrs": cluster.pcrs,
            "bank": cluster.bank,
            "before": {"pcrs": before.pcrs, "bank": before.bank},
        }),
    )
    .await;
    Ok(Json(cluster))
}

#[utoipa::path(
    get,
    path = "/v1/clusters/{cluster}",
    tag = "clusters",
    summary = "Get a cluster with a summary of its trust configuration",
    params(("cluster" = String, Path, description = "The trusted cluster")),
    responses((status = 200, description = "Success", body = ClusterView)),
    security(("bearer" = [])),
)]
async fn get_cluster(
    State(state): State<AppState>,
    _admin: TrustedAdmin,
    Path(name): Path<String>,
) -> Result<Json<ClusterView>, Error> {
    require_cluster(&state, &name).await?;
    let (cluster, cas, eks, versions, hosts, applied) = store::run(&state.store, move |s| {
        // The cluster is read again with its hosts' results, so that both are of one moment
        // as far as the comparison goes: a change after this read shows at the next one.
        let cluster = s
            .get_cluster(&name)?
            .ok_or_else(|| store::StoreError::NotFound(format!("cluster {name}")))?;
        let mut hosts = s.list_hosts(&name)?;
        hosts.sort_by(|a, b| store::HostQuery::order(a).cmp(&store::HostQuery::order(b)));
        let count = hosts.len();
        let mut applied = Vec::new();
        for host in hosts.into_iter().take(api::MAX_APPLIED_HOSTS) {
            let last = s.list_attestations(&host.ek_hash, 1)?.into_iter().next();
            applied.push(host_applied(&cluster, host, last.as_ref()));
        }
        Ok((
            cluster,
            s.list_ca_certs(&name)?.len(),
            s.list_cluster_eks(&name)?.len(),
            s.list_software_versions(&name)?.len(),
            count,
            applied,
        ))
    })
    .await?;
    Ok(Json(ClusterView {
        cluster,
        tpm_ca_certs: cas,
        eks,
        software_versions: versions,
        applied_truncated: hosts > applied.len(),
        hosts,
        applied,
    }))
}

/// Desired vs applied for one host: its last result's configuration generation against the
/// cluster's.
fn host_applied(
    cluster: &Cluster,
    host: Host,
    last: Option<&store::AttestationRecord>,
) -> api::HostApplied {
    let config_generation = last.and_then(|a| a.config_generation);
    let configuration = match config_generation {
        Some(g) if g == cluster.config_generation => "current",
        Some(_) => "outdated",
        None => "unknown",
    };
    api::HostApplied {
        ek_hash: host.ek_hash,
        name: host.name,
        state: host.state,
        last_result_at: last.map(|a| a.at),
        config_generation,
        configuration: configuration.into(),
    }
}

#[utoipa::path(
    delete,
    path = "/v1/clusters/{cluster}",
    tag = "clusters",
    summary = "Delete a cluster and its trust configuration; one with hosts only with force and a management server's signature",
    params(("cluster" = String, Path, description = "The trusted cluster"), RemoveCluster),
    responses((status = 204, description = "Done")),
    security(("bearer" = [])),
)]
async fn delete_cluster(
    State(state): State<AppState>,
    TrustedAdmin(admin): TrustedAdmin,
    Path(name): Path<String>,
    Query(q): Query<RemoveCluster>,
    uri: Uri,
    headers: axum::http::HeaderMap,
) -> Result<StatusCode, Error> {
    let n = name.clone();
    let hosts = store::run(&state.store, move |s| s.list_hosts(&n)).await?;
    // Removing hosts is a host operation: with hosts, the request must say so (force) and
    // carry a management server's signature.
    let (admin, server) = if hosts.is_empty() {
        (admin.name().to_owned(), None)
    } else if !q.force {
        return Err(service_auth::deny(
            &state,
            admin.name(),
            admin.what(),
            Error::Conflict(format!(
                "cluster {name} has {} hosts: remove them first, or remove it with force and a management server's signature",
                hosts.len()
            )),
        ));
    } else {
        let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
        let signature = headers
            .get(vouch_api::signing::SIGNATURE_HEADER)
            .map(|v| v.to_str().unwrap_or(""));
        let permission = service_auth::check_host_permission(
            &state,
            admin,
            service_auth::SignedRequest {
                method: "DELETE",
                path_and_query: path,
                signature,
                body: b"",
            },
        )
        .await?;
        (
            permission.admin().name().to_owned(),
            Some(permission.server().to_owned()),
        )
    };
    let n = name.clone();
    store::run(&state.store, move |s| s.delete_cluster(&n)).await?;
    for host in &hosts {
        audit(
            &state,
            &admin,
            "host.removed",
            &host.ek_hash,
            serde_json::json!({"cluster": name, "management_server": server, "with_cluster": true}),
        )
        .await;
    }
    audit(
        &state,
        &admin,
        "cluster.deleted",
        &name,
        serde_json::json!({"hosts": hosts.len(), "management_server": server}),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get,
    path = "/v1/clusters/{cluster}/tpm-ca-certs",
    tag = "clusters",
    summary = "List the cluster's TPM CA certificates",
    params(("cluster" = String, Path, description = "The trusted cluster")),
    responses((status = 200, description = "Success", body = Vec<api::CaCert>)),
    security(("bearer" = [])),
)]
async fn list_ca_certs(
    State(state): State<AppState>,
    _admin: TrustedAdmin,
    Path(cluster): Path<String>,
) -> Result<Json<Vec<api::CaCert>>, Error> {
    require_cluster(&state, &cluster).await?;
    Ok(Json(views::all(
        store::run(&state.store, move |s| s.list_ca_certs(&cluster)).await?,
    )))
}

#[utoipa::path(
    post,
    path = "/v1/clusters/{cluster}/tpm-ca-certs",
    tag = "clusters",
    summary = "Trust TPM CA certificates (PEM, one per hardware type)",
    params(("cluster" = String, Path, description = "The trusted cluster")),
    request_body = NewCaCerts,
    responses((status = 201, description = "Created", body = Vec<api::CaCert>)),
    security(("bearer" = [])),
)]
async fn add_ca_certs(
    State(state): State<AppState>,
    admin: TrustedAdmin,
    Path(cluster): Path<String>,
    JsonBody(body): JsonBody<NewCaCerts>,
) -> Result<(StatusCode, Json<Vec<api::CaCert>>), Error> {
    require_cluster(&state, &cluster).await?;
    let ders: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(body.certificate_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| Error::BadRequest(format!("certificate_pem: {e}")))?;
    if ders.is_empty() {
        return Err(Error::BadRequest(
            "certificate_pem holds no certificate".into(),
        ));
    }
    let now = crate::now();
    let mut certs = Vec::with_capacity(ders.len());
    for der in ders {
        let subject = vouch_attest::ek::check_ca_certificate(&der, now)
            .map_err(|e| Error::BadRequest(format!("not a usable TPM CA certificate: {e}")))?;
        certs.push(CaCert {
            id: crate::hex(&crate::sha256(&der)),
            cluster: cluster.clone(),
            subject,
            der: der.to_vec(),
            created_at: now,
        });
    }
    let c2 = certs.clone();
    store::run(&state.store, move |s| {
        for c in &c2 {
            s.add_ca_cert(c)?;
        }
        Ok(())
    })
    .await?;
    for c in &certs {
        audit(
            &state,
            admin.name(),
            "cluster.tpm_ca_added",
            &cluster,
            serde_json::json!({"id": c.id, "subject": c.subject}),
        )
        .await;
    }
    Ok((StatusCode::CREATED, Json(views::all(certs))))
}

#[utoipa::path(
    delete,
    path = "/v1/clusters/{cluster}/tpm-ca-certs/{id}",
    tag = "clusters",
    summary = "Stop trusting a TPM CA certificate",
    params(("cluster" = String, Path, description = "The trusted cluster"), ("id" = String, Path, description = "The id")),
    responses((status = 204, description = "Done")),
    security(("bearer" = [])),
)]
async fn delete_ca_cert(
    State(state): State<AppState>,
    admin: TrustedAdmin,
    Path((cluster, id)): Path<(String, String)>,
) -> Result<StatusCode, Error> {
    let (c, i) = (cluster.clone(), id.clone());
    store::run(&state.store, move |s| s.delete_ca_cert(&c, &i)).await?;
    audit(
        &state,
        admin.name(),
        "cluster.tpm_ca_deleted",
        &cluster,
        serde_json::json!({"id": id}),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get,
    path = "/v1/clusters/{cluster}/eks",
    tag = "clusters",
    summary = "List individually trusted EKs",
    params(("cluster" = String, Path, description = "The trusted cluster")),
    responses((status = 200, description = "Success", body = Vec<api::ClusterEk>)),
    security(("bearer" = [])),
)]
async fn list_cluster_eks(
    State(state): State<AppState>,
    _admin: TrustedAdmin,
    Path(cluster): Path<String>,
) -> Result<Json<Vec<api::ClusterEk>>, Error> {
    require_cluster(&state, &cluster).await?;
    Ok(Json(views::all(
        store::run(&state.store, move |s| s.list_cluster_eks(&cluster)).await?,
    )))
}

#[utoipa::path(
    post,
    path = "/v1/clusters/{cluster}/eks",
    tag = "clusters",
    summary = "Trust an individual EK (certificate or public key) or a bare EK public key",
    params(("cluster" = String, Path, description = "The trusted cluster")),
    request_body = NewClusterEk,
    responses((status = 201, description = "Created", body = api::ClusterEk)),
    security(("bearer" = [])),
)]
async fn add_cluster_ek(
    State(state): State<AppState>,
    admin: TrustedAdmin,
    Path(cluster): Path<String>,
    JsonBody(body): JsonBody<NewClusterEk>,
) -> Result<(StatusCode, Json<api::ClusterEk>), Error> {
    require_cluster(&state, &cluster).await?;
    let (der, key) = match body.kind {
        EkEntryKind::Certificate => {
            let der = CertificateDer::from_pem_slice(body.pem.as_bytes())
                .map_err(|e| Error::BadRequest(format!("pem: {e}")))?;
            let key = EkKey::from_certificate(&der)
                .map_err(|e| Error::BadRequest(format!("EK certificate: {e}")))?;
            (der.to_vec(), key)
        }
        EkEntryKind::PublicKey | EkEntryKind::BarePublicKey => {
            let der = SubjectPublicKeyInfoDer::from_pem_slice(body.pem.as_bytes())
                .map_err(|e| Error::BadRequest(format!("pem: {e}")))?;
            let key = EkKey::from_spki_der(&der)
                .map_err(|e| Error::BadRequest(format!("EK public key: {e}")))?;
            (der.to_vec(), key)
        }
    };
    let entry = ClusterEk {
        ek_hash: crate::ek::ek_hash(&key),
        cluster: cluster.clone(),
        kind: body.kind,
        der,
        created_at: crate::now(),
    };
    let e2 = entry.clone();
    store::run(&state.store, move |s| s.add_cluster_ek(&e2)).await?;
    audit(
        &state,
        admin.name(),
        "cluster.ek_added",
        &cluster,
        serde_json::json!({"ek_hash": entry.ek_hash, "kind": entry.kind}),
    )
    .await;
    Ok((StatusCode::CREATED, Json(entry.into())))
}

#[utoipa::path(
    delete,
    path = "/v1/clusters/{cluster}/eks/{ek_hash}",
    tag = "clusters",
    summary = "Stop trusting an individual EK",
    params(("cluster" = String, Path, description = "The trusted cluster"), ("ek_hash" = String, Path, description = "The EK hash: SHA-256 of the EK public key, 64 hex digits")),
    responses((status = 204, description = "Done")),
    security(("bearer" = [])),
)]
async fn delete_cluster_ek(
    State(state): State<AppState>,
    admin: TrustedAdmin,
    Path((cluster, ek_hash)): Path<(String, String)>,
) -> Result<StatusCode, Error> {
    let ek_hash = check_hash(&ek_hash)?;
    let (c, h) = (cluster.clone(), ek_hash.clone());
    store::run(&state.store, move |s| s.delete_cluster_ek(&c, &h)).await?;
    audit(
        &state,
        admin.name(),
        "cluster.ek_deleted",
        &cluster,
        serde_json::json!({"ek_hash": ek_hash}),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get,
    path = "/v1/clusters/{cluster}/software-versions",
    tag = "clusters",
    summary = "List accepted software versions",
    params(("cluster" = String, Path, description = "The trusted cluster")),
    responses((status = 200, description = "Success", body = Vec<api::SoftwareVersionRecord>)),
    security(("bearer" = [])),
)]
async fn list_software_versions(
    State(state): State<AppState>,
    _admin: TrustedAdmin,
    Path(cluster): Path<String>,
) -> Result<Json<Vec<SoftwareVersionRecord>>, Error> {
    require_cluster(&state, &cluster).await?;
    Ok(Json(
        store::run(&state.store, move |s| s.list_software_versions(&cluster)).await?,
    ))
}

#[utoipa::path(
    put,
    path = "/v1/clusters/{cluster}/software-versions/{version}",
    tag = "clusters",
    summary = "Accept a software version (vouch-attest reference values); an existing one is replaced only with replace=true",
    params(("cluster" = String, Path, description = "The trusted cluster"), ("version" = String, Path, description = "The software version's name"), PutSoftwareVersion),
    request_body = SoftwareVersionBody,
    responses((status = 200, description = "Success", body = api::SoftwareVersionRecord), (status = 409, description = "The version exists and replace was not given")),
    security(("bearer" = [])),
)]
async fn put_software_version(
    State(state): State<AppState>,
    admin: TrustedAdmin,
    Path((cluster, version)): Path<(String, String)>,
    Query(q): Query<PutSoftwareVersion>,
    JsonBody(SoftwareVersionBody(mut body)): JsonBody<SoftwareVersionBody>,
) -> Result<Json<SoftwareVersionRecord>, Error> {
    check_name("software version", &version)?;
    let found = require_cluster(&state, &cluster).await?;
    if let Some(map) = body.as_object_mut() {
        match map.get("name") {
            None => {
                map.insert("name".into(), version.clone().into());
            }
            Some(n) if n.as_str() == Some(version.as_str()) => {}
            Some(_) => {
                return Err(Error::BadRequest(
                    "the body's name differs from the version in the path".into(),
                ));
            }
        }
    }
    let parsed: vouch_attest::policy::SoftwareVersion = serde_json::from_value(body)
        .map_err(|e| Error::BadRequest(format!("not a vouch-attest software version: {e}")))?;
    if parsed.pcrs.is_empty() && parsed.events.is_empty() {
        return Err(Error::BadRequest(
            "a software version needs reference PCR values or event digests".into(),
        ));
    }
    let uncovered = uncovered_pcrs(&found, &parsed);
    if !uncovered.is_empty() {
        return Err(Error::BadRequest(format!(
            "software version {version} gives no {} reference for PCRs {uncovered:?}, which cluster {cluster} compares, so no host could ever match it: derive the version for those PCRs, or change what the cluster compares (`vouch cluster set {cluster} --pcrs ...`)",
            found.bank
        )));
    }
    let record = SoftwareVersionRecord {
        cluster: cluster.clone(),
        name: version.clone(),
        reference: serde_json::to_value(&parsed).map_err(|e| Error::Internal(e.to_string()))?,
        created_at: crate::now(),
    };
    let r2 = record.clone();
    let replace = q.replace;
    let replaced = store::run(&state.store, move |s| {
        let exists = s
            .list_software_versions(&r2.cluster)?
            .iter()
            .any(|v| v.name == r2.name);
        if exists && !replace {
            // InUse carries its sentence to the 409 as it is.
            return Err(store::StoreError::InUse(format!(
                "software version {} of cluster {} exists already; `vouch software add --replace` (replace=true) replaces it",
                r2.name, r2.cluster
            )));
        }
        s.put_software_version(&r2)?;
        Ok(exists)
    })
    .await?;
    audit(
        &state,
        admin.name(),
        "cluster.software_version_set",
        &cluster,
        serde_json::json!({"version": version, "replaced": replaced}),
    )
    .await;
    Ok(Json(record))
}

#[utoipa::path(
    delete,
    path = "/v1/clusters/{cluster}/software-versions/{version}",
    tag = "clusters",
    summary = "Stop accepting a software version",
    params(("cluster" = String, Path, description = "The trusted cluster"), ("version" = String, Path, description = "The software version's name")),
    responses((status = 204, description = "Done")),
    security(("bearer" = [])),
)]
async fn delete_software_version(
    State(state): State<AppState>,
    admin: TrustedAdmin,
    Path((cluster, version)): Path<(String, String)>,
) -> Result<StatusCode, Error> {
    let (c, v) = (cluster.clone(), version.clone());
    store::run(&state.store, move |s| s.delete_software_version(&c, &v)).await?;
    audit(
        &state,
        admin.name(),
        "cluster.software_version_deleted",
        &cluster,
        serde_json::json!({"version": version}),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

// ---- Hosts.

#[utoipa::path(
    get,
    path = "/v1/clusters/{cluster}/hosts",
    tag = "clusters",
    summary = "List the cluster's hosts and their states",
    params(("cluster" = String, Path, description = "The trusted cluster")),
    responses((status = 200, description = "Success", body = Vec<HostView>)),
    security(("bearer" = [])),
)]
async fn list_hosts(
    State(state): State<AppState>,
    _admin: TrustedAdmin,
    Path(cluster): Path<String>,
) -> Result<Json<Vec<HostView>>, Error> {
    require_cluster(&state, &cluster).await?;
    let hosts = store::run(&state.store, move |s| s.list_hosts(&cluster)).await?;
    Ok(Json(hosts.into_iter().map(HostView::from).collect()))
}

#[utoipa::path(
    post,
    path = "/v1/clusters/{cluster}/hosts",
    tag = "clusters",
    summary = "Add a host (needs host permission)",
    params(("cluster" = String, Path, description = "The trusted cluster")),
    request_body = NewHost,
    responses((status = 201, description = "Created", body = HostView)),
    security(("bearer" = [], "managementSignature" = [])),
)]
async fn add_host(
    State(state): State<AppState>,
    Path(cluster): Path<String>,
    op: HostOperation,
) -> Result<(StatusCode, Json<HostView>), Error> {
    let admin = op.permission.admin();
    let server = op.permission.server().to_owned();
    let body: NewHost = op.json()?;
    check_name("host", &body.name)?;
    require_cluster(&state, &cluster).await?;
    let ek_hash = match (&body.ek_hash, &body.ek_certificate_pem) {
        (Some(h), None) => check_hash(h)?,
        (None, Some(pem)) => {
            let der = CertificateDer::from_pem_slice(pem.as_bytes())
                .map_err(|e| Error::BadRequest(format!("ek_certificate_pem: {e}")))?;
            let key = EkKey::from_certificate(&der)
                .map_err(|e| Error::BadRequest(format!("EK certificate: {e}")))?;
            crate::ek::ek_hash(&key)
        }
        _ => {
            return Err(Error::BadRequest(
                "give exactly one of ek_hash and ek_certificate_pem".into(),
            ));
        }
    };
    let host = Host {
        ek_hash,
        cluster: cluster.clone(),
        name: body.name,
        added_by: server.clone(),
        ak_public: None,
        state: HostState::Unknown,
        attested_at: None,
        valid_until: None,
        software_version: None,
        created_at: crate::now(),
    };
    let h2 = host.clone();
    store::run(&state.store, move |s| s.add_host(&h2)).await?;
    audit(
        &state,
        admin.name(),
        "host.added",
        &host.ek_hash,
        serde_json::json!({"cluster": cluster, "name": host.name, "management_server": server}),
    )
    .await;
    Ok((StatusCode::CREATED, Json(HostView::from(host))))
}

#[utoipa::path(
    delete,
    path = "/v1/clusters/{cluster}/hosts/{ek_hash}",
    tag = "clusters",
    summary = "Remove a host (needs host permission)",
    params(("cluster" = String, Path, description = "The trusted cluster"), ("ek_hash" = String, Path, description = "The EK hash: SHA-256 of the EK public key, 64 hex digits")),
    responses((status = 204, description = "Done")),
    security(("bearer" = [], "managementSignature" = [])),
)]
async fn delete_host(
    State(state): State<AppState>,
    Path((cluster, ek_hash)): Path<(String, String)>,
    op: HostOperation,
) -> Result<StatusCode, Error> {
    let admin = op.permission.admin();
    let server = op.permission.server().to_owned();
    let ek_hash = check_hash(&ek_hash)?;
    let (c, h) = (cluster.clone(), ek_hash.clone());
    store::run(&state.store, move |s| s.delete_host(&c, &h)).await?;
    audit(
        &state,
        admin.name(),
        "host.removed",
        &ek_hash,
        serde_json::json!({"cluster": cluster, "management_server": server}),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get,
    path = "/v1/hosts/{ek_hash}",
    tag = "hosts",
    summary = "A host's attestation status and recent results",
    params(("ek_hash" = String, Path, description = "The EK hash: SHA-256 of the EK public key, 64 hex digits")),
    responses((status = 200, description = "Success", body = HostStatus)),
    security(("bearer" = [])),
)]
async fn get_host(
    State(state): State<AppState>,
    _admin: TrustedAdmin,
    Path(ek_hash): Path<String>,
) -> Result<Json<HostStatus>, Error> {
    let ek_hash = check_hash(&ek_hash)?;
    let h = ek_hash.clone();
    let (host, recent) = store::run(&state.store, move |s| {
        Ok((s.get_host(&h)?, s.list_attestations(&h, 10)?))
    })
    .await?;
    let host = host.ok_or_else(|| Error::NotFound(format!("host with EK {ek_hash} not found")))?;
    Ok(Json(HostStatus {
        host: host.into(),
        recent,
    }))
}

#[utoipa::path(
    get,
    path = "/v1/hosts/{ek_hash}/token",
    tag = "hosts",
    summary = "The host's current attestation token (JWT, ES256)",
    params(("ek_hash" = String, Path, description = "The EK hash: SHA-256 of the EK public key, 64 hex digits")),
    responses((status = 200, description = "Success", body = HostToken)),
    security(("bearer" = [])),
)]
async fn get_host_token(
    State(state): State<AppState>,
    _admin: TrustedAdmin,
    Path(ek_hash): Path<String>,
) -> Result<Json<HostToken>, Error> {
    let ek_hash = check_hash(&ek_hash)?;
    let h = ek_hash.clone();
    let latest = store::run(&state.store, move |s| s.list_attestations(&h, 1)).await?;
    let none = || {
        Error::NotFound(format!(
            "host with EK {ek_hash} has no current attestation token"
        ))
    };
    let record = latest.into_iter().next().ok_or_else(none)?;
    // Tokens are stored as hashes only: issue one for the current result, valid as long as
    // the one issued with it.
    let jti = crate::random::<16>().map_err(|_| Error::Internal("RNG failure".into()))?;
    let claims =
        AttestationClaims::for_result(&record, record.at, state.config.token_lifetime_secs, &jti)
            .ok_or_else(none)?;
    let expires_at = claims.exp;
    if expires_at <= crate::now() {
        return Err(none());
    }
    let token = state
        .signer
        .sign(&claims)
        .map_err(|e| Error::Internal(e.to_string()))?;
    state.metrics.tokens_issued.inc();
    Ok(Json(HostToken {
        ek_hash,
        token,
        issued_at: record.at,
        expires_at,
    }))
}

#[utoipa::path(
    get,
    path = "/v1/events",
    tag = "events",
    summary = "Events (configuration changes, host state changes), oldest first",
    params(EventQuery),
    responses((status = 200, description = "Success", body = Vec<api::Event>)),
    security(("bearer" = [])),
)]
async fn list_events(
    State(state): State<AppState>,
    _admin: TrustedAdmin,
    Query(q): Query<EventQuery>,
) -> Result<Json<Vec<store::Event>>, Error> {
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    Ok(Json(
        store::run(&state.store, move |s| s.list_events(q.after, limit)).await?,
    ))
}
