//! The management API: HTTP/JSON over TLS (see [`crate::tls`]). Every route is listed in
//! [`ROUTES`] and described in the OpenAPI document ([`openapi::document`]); a test holds the
//! three together.

pub mod auth;
pub mod error;
pub mod keys;
pub mod openapi;
mod views;

use axum::Json;
use axum::Router;
use axum::extract::{FromRequest, MatchedPath, Path, Query, Request, State};
use axum::http::{StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, SubjectPublicKeyInfoDer};
use serde::de::DeserializeOwned;
use vouch_attest::ek::EkKey;

use crate::metrics::HttpLabels;
use crate::service::auth::{self as service_auth, TRUSTED_ADMINS};
use crate::service::{AppState, Error};
use crate::store::{
    self, CaCert, Cluster, ClusterEk, EkEntryKind, Host, HostState, ManagementServer,
    SoftwareVersionRecord,
};
use auth::{Caller, HostOperation, TrustedAdmin};
use vouch_api::types::{
    self as api, ClusterView, CreatedToken, EventQuery, Health, HostStatus, HostToken, HostView,
    NewCaCerts, NewCluster, NewClusterEk, NewHost, NewManagementServer, NewPrincipal, NewToken,
};

/// Every route: method and path template. The router, the OpenAPI document and the tests agree
/// on this list.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("GET", "/.well-known/jwks.json"),
    ("GET", "/v1/whoami"),
    ("GET", "/v1/principals"),
    ("POST", "/v1/principals"),
    ("GET", "/v1/principals/{name}"),
    ("DELETE", "/v1/principals/{name}"),
    ("PUT", "/v1/principals/{name}/groups/{group}"),
    ("DELETE", "/v1/principals/{name}/groups/{group}"),
    ("GET", "/v1/principals/{name}/tokens"),
    ("POST", "/v1/principals/{name}/tokens"),
    ("DELETE", "/v1/principals/{name}/tokens/{id}"),
    ("GET", "/v1/management-servers"),
    ("POST", "/v1/management-servers"),
    ("DELETE", "/v1/management-servers/{id}"),
    ("GET", "/v1/clusters"),
    ("POST", "/v1/clusters"),
    ("GET", "/v1/clusters/{cluster}"),
    ("DELETE", "/v1/clusters/{cluster}"),
    ("GET", "/v1/clusters/{cluster}/tpm-ca-certs"),
    ("POST", "/v1/clusters/{cluster}/tpm-ca-certs"),
    ("DELETE", "/v1/clusters/{cluster}/tpm-ca-certs/{id}"),
    ("GET", "/v1/clusters/{cluster}/eks"),
    ("POST", "/v1/clusters/{cluster}/eks"),
    ("DELETE", "/v1/clusters/{cluster}/eks/{ek_hash}"),
    ("GET", "/v1/clusters/{cluster}/software-versions"),
    ("PUT", "/v1/clusters/{cluster}/software-versions/{version}"),
    (
        "DELETE",
        "/v1/clusters/{cluster}/software-versions/{version}",
    ),
    ("GET", "/v1/clusters/{cluster}/hosts"),
    ("POST", "/v1/clusters/{cluster}/hosts"),
    ("DELETE", "/v1/clusters/{cluster}/hosts/{ek_hash}"),
    ("GET", "/v1/hosts/{ek_hash}"),
    ("GET", "/v1/hosts/{ek_hash}/token"),
    ("GET", "/v1/events"),
    ("GET", "/v1/key-servers"),
    ("POST", "/v1/key-servers"),
    ("GET", "/v1/key-servers/{name}"),
    ("DELETE", "/v1/key-servers/{name}"),
    ("POST", "/v1/key-servers/{name}/keys"),
    ("GET", "/v1/key-providers"),
    ("POST", "/v1/key-providers"),
    ("GET", "/v1/key-providers/{name}"),
    ("DELETE", "/v1/key-providers/{name}"),
    ("PUT", "/v1/key-providers/{name}/primary-key"),
    ("GET", "/v1/clusters/{cluster}/key-provider"),
    ("PUT", "/v1/clusters/{cluster}/key-provider"),
    ("DELETE", "/v1/clusters/{cluster}/key-provider"),
    ("POST", "/v1/keys/generate"),
    ("POST", "/v1/keys/encrypt"),
    ("POST", "/v1/keys/decrypt"),
    ("POST", "/v1/keys/rewrap"),
    ("POST", "/v1/keys/batch"),
];

/// The API router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi_json))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/v1/whoami", get(whoami))
        .route(
            "/v1/principals",
            get(list_principals).post(create_principal),
        )
        .route(
            "/v1/principals/{name}",
            get(get_principal).delete(delete_principal),
        )
        .route(
            "/v1/principals/{name}/groups/{group}",
            put(add_group).delete(remove_group),
        )
        .route(
            "/v1/principals/{name}/tokens",
            get(list_tokens).post(create_token),
        )
        .route(
            "/v1/principals/{name}/tokens/{id}",
            axum::routing::delete(delete_token),
        )
        .route(
            "/v1/management-servers",
            get(list_management_servers).post(add_management_server),
        )
        .route(
            "/v1/management-servers/{id}",
            axum::routing::delete(delete_management_server),
        )
        .route("/v1/clusters", get(list_clusters).post(create_cluster))
        .route(
            "/v1/clusters/{cluster}",
            get(get_cluster).delete(delete_cluster),
        )
        .route(
            "/v1/clusters/{cluster}/tpm-ca-certs",
            get(list_ca_certs).post(add_ca_certs),
        )
        .route(
            "/v1/clusters/{cluster}/tpm-ca-certs/{id}",
            axum::routing::delete(delete_ca_cert),
        )
        .route(
            "/v1/clusters/{cluster}/eks",
            get(list_cluster_eks).post(add_cluster_ek),
        )
        .route(
            "/v1/clusters/{cluster}/eks/{ek_hash}",
            axum::routing::delete(delete_cluster_ek),
        )
        .route(
            "/v1/clusters/{cluster}/software-versions",
            get(list_software_versions),
        )
        .route(
            "/v1/clusters/{cluster}/software-versions/{version}",
            put(put_software_version).delete(delete_software_version),
        )
        .route(
            "/v1/clusters/{cluster}/hosts",
            get(list_hosts).post(add_host),
        )
        .route(
            "/v1/clusters/{cluster}/hosts/{ek_hash}",
            axum::routing::delete(delete_host),
        )
        .route("/v1/hosts/{ek_hash}", get(get_host))
        .route("/v1/hosts/{ek_hash}/token", get(get_host_token))
        .route("/v1/events", get(list_events))
        .route(
            "/v1/key-servers",
            get(keys::list_key_servers).post(keys::add_key_server),
        )
        .route(
            "/v1/key-servers/{name}",
            get(keys::get_key_server).delete(keys::delete_key_server),
        )
        .route(
            "/v1/key-servers/{name}/keys",
            axum::routing::post(keys::create_kms_key),
        )
        .route(
            "/v1/key-providers",
            get(keys::list_key_providers).post(keys::add_key_provider),
        )
        .route(
            "/v1/key-providers/{name}",
            get(keys::get_key_provider).delete(keys::delete_key_provider),
        )
        .route(
            "/v1/key-providers/{name}/primary-key",
            put(keys::rotate_primary_key),
        )
        .route(
            "/v1/clusters/{cluster}/key-provider",
            get(keys::get_cluster_key_provider)
                .put(keys::set_cluster_key_provider)
                .delete(keys::clear_cluster_key_provider),
        )
        .route("/v1/keys/generate", axum::routing::post(keys::generate_key))
        .route("/v1/keys/encrypt", axum::routing::post(keys::encrypt))
        .route("/v1/keys/decrypt", axum::routing::post(keys::decrypt))
        .route("/v1/keys/rewrap", axum::routing::post(keys::rewrap))
        .route("/v1/keys/batch", axum::routing::post(keys::batch))
        .fallback(no_such_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
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
    let response = next.run(request).await;
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

fn check_name(what: &str, name: &str) -> Result<(), Error> {
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

async fn healthz(State(state): State<AppState>) -> Result<Json<Health>, Error> {
    store::run(&state.store, |s| s.get_cluster("")).await?;
    Ok(Json(Health {
        status: "ok".into(),
    }))
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

async fn openapi_json() -> Json<serde_json::Value> {
    Json(openapi::document())
}

async fn jwks(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, "public, max-age=300")],
        Json(state.signer.jwks()),
    )
}

// ---- Principals, groups and tokens.

async fn whoami(caller: Caller) -> Json<store::Principal> {
    Json(caller.principal)
}

async fn list_principals(
    State(state): State<AppState>,
    _admin: TrustedAdmin,
) -> Result<Json<Vec<store::Principal>>, Error> {
    Ok(Json(
        store::run(&state.store, |s| s.list_principals()).await?,
    ))
}

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

async fn list_management_servers(
    State(state): State<AppState>,
    _admin: TrustedAdmin,
) -> Result<Json<Vec<api::ManagementServer>>, Error> {
    Ok(Json(views::all(
        store::run(&state.store, |s| s.list_management_servers()).await?,
    )))
}

async fn add_management_server(
    State(state): State<AppState>,
    admin: TrustedAdmin,
    JsonBody(body): JsonBody<NewManagementServer>,
) -> Result<(StatusCode, Json<api::ManagementServer>), Error> {
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
        admin.name(),
        "management_server.added",
        &server.id,
        serde_json::json!({"fingerprint": server.fingerprint}),
    )
    .await;
    Ok((StatusCode::CREATED, Json(server.into())))
}

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

async fn list_clusters(
    State(state): State<AppState>,
    _admin: TrustedAdmin,
) -> Result<Json<Vec<Cluster>>, Error> {
    Ok(Json(store::run(&state.store, |s| s.list_clusters()).await?))
}

async fn create_cluster(
    State(state): State<AppState>,
    admin: TrustedAdmin,
    JsonBody(body): JsonBody<NewCluster>,
) -> Result<(StatusCode, Json<Cluster>), Error> {
    check_name("cluster", &body.name)?;
    let pcrs = body.pcrs.unwrap_or_else(|| (0..8).collect());
    if pcrs.is_empty() || pcrs.iter().any(|p| *p >= vouch_attest::pcr::PCR_COUNT) {
        return Err(Error::BadRequest(format!(
            "pcrs must be a non-empty list of PCR indices below {}",
            vouch_attest::pcr::PCR_COUNT
        )));
    }
    let bank = body.bank.unwrap_or_else(|| "sha256".into());
    serde_json::from_value::<vouch_attest::HashAlg>(serde_json::Value::String(bank.clone()))
        .map_err(|_| {
            Error::BadRequest(format!(
                "bank '{bank}' is not a hash algorithm vouch-attest knows"
            ))
        })?;
    let cluster = Cluster {
        name: body.name,
        pcrs,
        bank,
        created_at: crate::now(),
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

async fn get_cluster(
    State(state): State<AppState>,
    _admin: TrustedAdmin,
    Path(name): Path<String>,
) -> Result<Json<ClusterView>, Error> {
    let cluster = require_cluster(&state, &name).await?;
    let (cas, eks, versions, hosts) = store::run(&state.store, move |s| {
        Ok((
            s.list_ca_certs(&name)?.len(),
            s.list_cluster_eks(&name)?.len(),
            s.list_software_versions(&name)?.len(),
            s.list_hosts(&name)?.len(),
        ))
    })
    .await?;
    Ok(Json(ClusterView {
        cluster,
        tpm_ca_certs: cas,
        eks,
        software_versions: versions,
        hosts,
    }))
}

async fn delete_cluster(
    State(state): State<AppState>,
    admin: TrustedAdmin,
    Path(name): Path<String>,
) -> Result<StatusCode, Error> {
    let n = name.clone();
    store::run(&state.store, move |s| s.delete_cluster(&n)).await?;
    audit(
        &state,
        admin.name(),
        "cluster.deleted",
        &name,
        serde_json::json!({}),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

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

async fn put_software_version(
    State(state): State<AppState>,
    admin: TrustedAdmin,
    Path((cluster, version)): Path<(String, String)>,
    JsonBody(mut body): JsonBody<serde_json::Value>,
) -> Result<Json<SoftwareVersionRecord>, Error> {
    check_name("software version", &version)?;
    require_cluster(&state, &cluster).await?;
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
    let record = SoftwareVersionRecord {
        cluster: cluster.clone(),
        name: version.clone(),
        reference: serde_json::to_value(&parsed).map_err(|e| Error::Internal(e.to_string()))?,
        created_at: crate::now(),
    };
    let r2 = record.clone();
    store::run(&state.store, move |s| s.put_software_version(&r2)).await?;
    audit(
        &state,
        admin.name(),
        "cluster.software_version_set",
        &cluster,
        serde_json::json!({"version": version}),
    )
    .await;
    Ok(Json(record))
}

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

async fn list_hosts(
    State(state): State<AppState>,
    _admin: TrustedAdmin,
    Path(cluster): Path<String>,
) -> Result<Json<Vec<HostView>>, Error> {
    require_cluster(&state, &cluster).await?;
    let hosts = store::run(&state.store, move |s| s.list_hosts(&cluster)).await?;
    Ok(Json(hosts.into_iter().map(HostView::from).collect()))
}

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

async fn get_host_token(
    State(state): State<AppState>,
    _admin: TrustedAdmin,
    Path(ek_hash): Path<String>,
) -> Result<Json<HostToken>, Error> {
    let ek_hash = check_hash(&ek_hash)?;
    let h = ek_hash.clone();
    let latest = store::run(&state.store, move |s| s.list_attestations(&h, 1)).await?;
    let lifetime = i64::try_from(state.config.token_lifetime_secs).unwrap_or(i64::MAX);
    let none = || {
        Error::NotFound(format!(
            "host with EK {ek_hash} has no current attestation token"
        ))
    };
    let record = latest.into_iter().next().ok_or_else(none)?;
    let token = record.token.filter(|_| record.attested).ok_or_else(none)?;
    let expires_at = record.at.saturating_add(lifetime);
    if expires_at <= crate::now() {
        return Err(none());
    }
    Ok(Json(HostToken {
        ek_hash,
        token,
        issued_at: record.at,
        expires_at,
    }))
}

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
