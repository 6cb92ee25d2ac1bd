//! vouchd's management API bodies: the input as the JSON body of each request type of
//! `vouch-api` (deserialised directly), and as the body of a request to vouchd's own router
//! (`vouchd::api::router`, on an in-memory store, as the bootstrap admin), so that vouchd's
//! validation and storage run on whatever decodes. The first byte picks the route; for host
//! operations part of the input is the `Vouch-Signature` header. Routes that reach a key
//! server (adding key servers and providers) are deserialised only: they would dial the
//! address in the body. A panic, or an answer 500, is a bug: bad input gets a 4xx.
#![no_main]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt as _;
use vouch_api::types as api;
use vouchd::store::Store as _;

/// (method, path) of every route that takes a JSON body and stays on this machine.
const ROUTES: &[(&str, &str)] = &[
    ("POST", "/v1/principals"),
    ("POST", "/v1/principals/svc/tokens"),
    ("POST", "/v1/management-servers"),
    ("POST", "/v1/clusters"),
    ("POST", "/v1/clusters/lab/tpm-ca-certs"),
    ("POST", "/v1/clusters/lab/eks"),
    ("PUT", "/v1/clusters/lab/software-versions/fw-1"),
    ("POST", "/v1/clusters/lab/hosts"),
    ("DELETE", "/v1/clusters/other"),
    ("PUT", "/v1/clusters/lab/key-provider"),
    ("POST", "/v1/keys/encrypt"),
    ("POST", "/v1/keys/batch"),
];

/// Inputs before the in-memory vouchd is made again, so its tables stay small.
const FRESH_EVERY: u32 = 4096;

struct Vouchd {
    runtime: tokio::runtime::Runtime,
    router: axum::Router,
    admin: String,
    served: u32,
    _dir: tempfile::TempDir,
}

impl Vouchd {
    fn new() -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = vouchd::store::sqlite::SqliteStore::open_in_memory().unwrap();
        let admin = vouchd::service::auth::bootstrap(&store, 1)
            .unwrap()
            .unwrap();
        store
            .create_principal("svc", api::PrincipalKind::Service, 1)
            .unwrap();
        store
            .create_cluster(&api::Cluster {
                name: "lab".into(),
                pcrs: vec![0, 1],
                bank: "sha256".into(),
                created_at: 1,
                disabled_at: None,
                config_generation: 0,
            })
            .unwrap();
        let signer = vouchd::jwt::Signer::load_or_create(&dir.path().join("jwt.p8")).unwrap();
        let state = vouchd::service::AppState::new(
            Arc::new(store),
            vouchd::config::Config {
                data_dir: dir.path().to_owned(),
                ..vouchd::config::Config::default()
            },
            signer,
            None,
        );
        Self {
            runtime,
            router: vouchd::api::router(state),
            admin,
            served: 0,
            _dir: dir,
        }
    }

    fn serve(&mut self, method: &str, path: &str, signature: &[u8], body: &[u8]) -> StatusCode {
        self.served += 1;
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {}", self.admin))
            .header("content-type", "application/json");
        if !signature.is_empty() {
            request = request.header(vouch_api::signing::SIGNATURE_HEADER, signature);
        }
        let Ok(request) = request.body(Body::from(body.to_vec())) else {
            return StatusCode::BAD_REQUEST; // a header value axum itself refuses to build
        };
        let router = self.router.clone();
        self.runtime
            .block_on(async move { router.oneshot(request).await })
            .map_or(StatusCode::INTERNAL_SERVER_ERROR, |r| r.status())
    }
}

/// Decodes `body` as every request type.
fn deserialise_all(body: &[u8]) {
    fn as_<T: serde::de::DeserializeOwned>(body: &[u8]) {
        let _ = serde_json::from_slice::<T>(body);
    }
    as_::<api::NewPrincipal>(body);
    as_::<api::NewToken>(body);
    as_::<api::NewManagementServer>(body);
    as_::<api::NewCluster>(body);
    as_::<api::NewCaCerts>(body);
    as_::<api::NewClusterEk>(body);
    as_::<api::SoftwareVersionBody>(body);
    as_::<api::NewHost>(body);
    as_::<api::RemoveCluster>(body);
    as_::<api::EventQuery>(body);
    as_::<api::NewKeyServer>(body);
    as_::<api::NewKmsKey>(body);
    as_::<api::NewKeyProvider>(body);
    as_::<api::NewPrimaryKey>(body);
    as_::<api::SetClusterKeyProvider>(body);
    as_::<api::GenerateKeyRequest>(body);
    as_::<api::EncryptRequest>(body);
    as_::<api::CiphertextRequest>(body);
    as_::<api::BatchRequest>(body);
}

thread_local! {
    static VOUCHD: std::cell::RefCell<Option<Vouchd>> = const { std::cell::RefCell::new(None) };
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    deserialise_all(rest);
    let (method, path) = ROUTES[usize::from(pick) % ROUTES.len()];
    // Host operations: the input's first line is the signature header.
    let (signature, body) = if path.ends_with("/hosts") || method == "DELETE" {
        match rest.iter().position(|&b| b == b'\n') {
            Some(at) => (&rest[..at], &rest[at + 1..]),
            None => (&[][..], rest),
        }
    } else {
        (&[][..], rest)
    };
    VOUCHD.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.as_ref().is_none_or(|v| v.served >= FRESH_EVERY) {
            *cell = Some(Vouchd::new());
        }
        let vouchd = cell.as_mut().unwrap();
        let status = vouchd.serve(method, path, signature, body);
        assert!(
            !status.is_server_error(),
            "{method} {path} answered {status} for {:?}",
            String::from_utf8_lossy(body)
        );
    });
});
