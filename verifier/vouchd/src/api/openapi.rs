//! The OpenAPI 3.1 description of the management API, served at `/openapi.json`. Written by
//! hand from [`OPERATIONS`]; a test checks that it and the router's [`super::ROUTES`] agree.

use serde_json::{Map, Value, json};

/// Who may call an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No authentication.
    Public,
    /// Any valid bearer token.
    Token,
    /// A token of a TrustedAdmins member.
    Admin,
    /// A TrustedAdmins token and a management server's signature.
    HostOp,
    /// An attested host: its attestation token (JWT) as the bearer token, the host attested
    /// now, its cluster configured with a key provider.
    Attested,
}

/// One operation: method, path, summary, access, request schema, success status and schema.
#[derive(Debug, Clone, Copy)]
pub struct Operation {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    pub access: Access,
    pub request: Option<&'static str>,
    pub status: u16,
    pub response: Option<&'static str>,
}

const fn op(
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    access: Access,
    request: Option<&'static str>,
    status: u16,
    response: Option<&'static str>,
) -> Operation {
    Operation {
        method,
        path,
        summary,
        access,
        request,
        status,
        response,
    }
}

use Access::{Admin, Attested, HostOp, Public, Token};

/// Every operation the API offers.
pub const OPERATIONS: &[Operation] = &[
    op(
        "GET",
        "/healthz",
        "Liveness and database check",
        Public,
        None,
        200,
        Some("Health"),
    ),
    op(
        "GET",
        "/metrics",
        "Prometheus metrics (OpenMetrics text)",
        Public,
        None,
        200,
        None,
    ),
    op(
        "GET",
        "/openapi.json",
        "This document",
        Public,
        None,
        200,
        None,
    ),
    op(
        "GET",
        "/.well-known/jwks.json",
        "Public keys that verify attestation tokens",
        Public,
        None,
        200,
        Some("Jwks"),
    ),
    op(
        "GET",
        "/v1/whoami",
        "The caller's principal",
        Token,
        None,
        200,
        Some("Principal"),
    ),
    op(
        "GET",
        "/v1/principals",
        "List principals",
        Admin,
        None,
        200,
        Some("PrincipalList"),
    ),
    op(
        "POST",
        "/v1/principals",
        "Create a principal (person or service account)",
        Admin,
        Some("NewPrincipal"),
        201,
        Some("Principal"),
    ),
    op(
        "GET",
        "/v1/principals/{name}",
        "Get a principal",
        Admin,
        None,
        200,
        Some("Principal"),
    ),
    op(
        "DELETE",
        "/v1/principals/{name}",
        "Delete a principal and its tokens",
        Admin,
        None,
        204,
        None,
    ),
    op(
        "PUT",
        "/v1/principals/{name}/groups/{group}",
        "Add a principal to a group",
        Admin,
        None,
        204,
        None,
    ),
    op(
        "DELETE",
        "/v1/principals/{name}/groups/{group}",
        "Remove a principal from a group",
        Admin,
        None,
        204,
        None,
    ),
    op(
        "GET",
        "/v1/principals/{name}/tokens",
        "List a principal's tokens (never the secrets)",
        Admin,
        None,
        200,
        Some("TokenList"),
    ),
    op(
        "POST",
        "/v1/principals/{name}/tokens",
        "Make a bearer token; the secret is shown once",
        Admin,
        Some("NewToken"),
        201,
        Some("CreatedToken"),
    ),
    op(
        "DELETE",
        "/v1/principals/{name}/tokens/{id}",
        "Revoke a token",
        Admin,
        None,
        204,
        None,
    ),
    op(
        "GET",
        "/v1/management-servers",
        "List management servers with host permission",
        Admin,
        None,
        200,
        Some("ManagementServerList"),
    ),
    op(
        "POST",
        "/v1/management-servers",
        "Import a management server's ECDSA P-256 signing certificate",
        Admin,
        Some("NewManagementServer"),
        201,
        Some("ManagementServer"),
    ),
    op(
        "DELETE",
        "/v1/management-servers/{id}",
        "Remove a management server",
        Admin,
        None,
        204,
        None,
    ),
    op(
        "GET",
        "/v1/clusters",
        "List trusted clusters",
        Admin,
        None,
        200,
        Some("ClusterList"),
    ),
    op(
        "POST",
        "/v1/clusters",
        "Create a trusted cluster",
        Admin,
        Some("NewCluster"),
        201,
        Some("Cluster"),
    ),
    op(
        "GET",
        "/v1/clusters/{cluster}",
        "Get a cluster with a summary of its trust configuration",
        Admin,
        None,
        200,
        Some("ClusterView"),
    ),
    op(
        "DELETE",
        "/v1/clusters/{cluster}",
        "Delete a cluster, its trust configuration and hosts",
        Admin,
        None,
        204,
        None,
    ),
    op(
        "GET",
        "/v1/clusters/{cluster}/tpm-ca-certs",
        "List the cluster's TPM CA certificates",
        Admin,
        None,
        200,
        Some("CaCertList"),
    ),
    op(
        "POST",
        "/v1/clusters/{cluster}/tpm-ca-certs",
        "Trust TPM CA certificates (PEM, one per hardware type)",
        Admin,
        Some("NewCaCerts"),
        201,
        Some("CaCertList"),
    ),
    op(
        "DELETE",
        "/v1/clusters/{cluster}/tpm-ca-certs/{id}",
        "Stop trusting a TPM CA certificate",
        Admin,
        None,
        204,
        None,
    ),
    op(
        "GET",
        "/v1/clusters/{cluster}/eks",
        "List individually trusted EKs",
        Admin,
        None,
        200,
        Some("ClusterEkList"),
    ),
    op(
        "POST",
        "/v1/clusters/{cluster}/eks",
        "Trust an individual EK (certificate or public key) or a bare EK public key",
        Admin,
        Some("NewClusterEk"),
        201,
        Some("ClusterEk"),
    ),
    op(
        "DELETE",
        "/v1/clusters/{cluster}/eks/{ek_hash}",
        "Stop trusting an individual EK",
        Admin,
        None,
        204,
        None,
    ),
    op(
        "GET",
        "/v1/clusters/{cluster}/software-versions",
        "List accepted software versions",
        Admin,
        None,
        200,
        Some("SoftwareVersionRecordList"),
    ),
    op(
        "PUT",
        "/v1/clusters/{cluster}/software-versions/{version}",
        "Accept a software version (vouch-attest reference values)",
        Admin,
        Some("SoftwareVersion"),
        200,
        Some("SoftwareVersionRecord"),
    ),
    op(
        "DELETE",
        "/v1/clusters/{cluster}/software-versions/{version}",
        "Stop accepting a software version",
        Admin,
        None,
        204,
        None,
    ),
    op(
        "GET",
        "/v1/clusters/{cluster}/hosts",
        "List the cluster's hosts and their states",
        Admin,
        None,
        200,
        Some("HostList"),
    ),
    op(
        "POST",
        "/v1/clusters/{cluster}/hosts",
        "Add a host (needs host permission)",
        HostOp,
        Some("NewHost"),
        201,
        Some("Host"),
    ),
    op(
        "DELETE",
        "/v1/clusters/{cluster}/hosts/{ek_hash}",
        "Remove a host (needs host permission)",
        HostOp,
        None,
        204,
        None,
    ),
    op(
        "GET",
        "/v1/hosts/{ek_hash}",
        "A host's attestation status and recent results",
        Admin,
        None,
        200,
        Some("HostStatus"),
    ),
    op(
        "GET",
        "/v1/hosts/{ek_hash}/token",
        "The host's current attestation token (JWT, ES256)",
        Admin,
        None,
        200,
        Some("HostToken"),
    ),
    op(
        "GET",
        "/v1/events",
        "Events (configuration changes, host state changes), oldest first",
        Admin,
        None,
        200,
        Some("EventList"),
    ),
    op(
        "GET",
        "/v1/key-servers",
        "Key servers (KMIP)",
        Admin,
        None,
        200,
        Some("KeyServerList"),
    ),
    op(
        "POST",
        "/v1/key-servers",
        "Add a key server: KMIP endpoints tried in order, client certificate and key, CA",
        Admin,
        Some("NewKeyServer"),
        201,
        Some("KeyServer"),
    ),
    op(
        "GET",
        "/v1/key-servers/{name}",
        "A key server",
        Admin,
        None,
        200,
        Some("KeyServer"),
    ),
    op(
        "DELETE",
        "/v1/key-servers/{name}",
        "Remove a key server no provider uses",
        Admin,
        None,
        204,
        None,
    ),
    op(
        "POST",
        "/v1/key-servers/{name}/keys",
        "Create and activate an AES-256 key on the key server (convenience)",
        Admin,
        Some("NewKmsKey"),
        201,
        Some("CreatedKmsKey"),
    ),
    op(
        "GET",
        "/v1/key-providers",
        "Trusted key providers",
        Admin,
        None,
        200,
        Some("KeyProviderList"),
    ),
    op(
        "POST",
        "/v1/key-providers",
        "Add a trusted key provider; its primary key must exist, be Active, AES-256 and usable in the wrapping mode",
        Admin,
        Some("NewKeyProvider"),
        201,
        Some("KeyProvider"),
    ),
    op(
        "GET",
        "/v1/key-providers/{name}",
        "A trusted key provider",
        Admin,
        None,
        200,
        Some("KeyProvider"),
    ),
    op(
        "DELETE",
        "/v1/key-providers/{name}",
        "Remove a key provider no cluster uses",
        Admin,
        None,
        204,
        None,
    ),
    op(
        "PUT",
        "/v1/key-providers/{name}/primary-key",
        "Rotate: a new primary key encrypts; the old one is retired and still decrypts (rewrap)",
        Admin,
        Some("NewPrimaryKey"),
        200,
        Some("KeyProvider"),
    ),
    op(
        "GET",
        "/v1/clusters/{cluster}/key-provider",
        "The cluster's key provider",
        Admin,
        None,
        200,
        Some("ClusterKeyProvider"),
    ),
    op(
        "PUT",
        "/v1/clusters/{cluster}/key-provider",
        "Configure the cluster with a key provider",
        Admin,
        Some("SetClusterKeyProvider"),
        200,
        Some("ClusterKeyProvider"),
    ),
    op(
        "DELETE",
        "/v1/clusters/{cluster}/key-provider",
        "Remove the cluster's key provider",
        Admin,
        None,
        204,
        None,
    ),
    op(
        "POST",
        "/v1/keys/generate",
        "A fresh 256-bit data key and its wrapped form",
        Attested,
        Some("GenerateKey"),
        200,
        Some("GeneratedKey"),
    ),
    op(
        "POST",
        "/v1/keys/encrypt",
        "AES-256-GCM under the provider's primary key, with associated data",
        Attested,
        Some("Encrypt"),
        200,
        Some("Ciphertext"),
    ),
    op(
        "POST",
        "/v1/keys/decrypt",
        "Decrypt a ciphertext of the cluster's provider",
        Attested,
        Some("CiphertextRequest"),
        200,
        Some("Plaintext"),
    ),
    op(
        "POST",
        "/v1/keys/rewrap",
        "Decrypt and encrypt again under the current primary key",
        Attested,
        Some("CiphertextRequest"),
        200,
        Some("Ciphertext"),
    ),
    op(
        "POST",
        "/v1/keys/batch",
        "Several key operations, a result per item",
        Attested,
        Some("Batch"),
        200,
        Some("BatchReply"),
    ),
];

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn list_of(name: &str) -> Value {
    json!({"type": "array", "items": schema_ref(name)})
}

fn error_response(description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema_ref("Error")}}})
}

fn operation(o: &Operation) -> Value {
    let mut params = Vec::new();
    for segment in o.path.split('/') {
        if let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            params.push(
                json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}),
            );
        }
    }
    if o.path == "/v1/events" {
        params.push(json!({"name": "after", "in": "query", "schema": {"type": "integer"}, "description": "Only events with a greater id"}));
        params.push(json!({"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}}));
    }
    let mut responses = Map::new();
    let success = match o.response {
        Some(s) if s.ends_with("List") => {
            json!({"description": "OK", "content": {"application/json": {"schema": list_of(s.trim_end_matches("List"))}}})
        }
        Some(s) => {
            json!({"description": "OK", "content": {"application/json": {"schema": schema_ref(s)}}})
        }
        None if o.path == "/metrics" => {
            json!({"description": "OK", "content": {"application/openmetrics-text": {"schema": {"type": "string"}}}})
        }
        None if o.path == "/openapi.json" => {
            json!({"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}})
        }
        None => json!({"description": "Done"}),
    };
    responses.insert(o.status.to_string(), success);
    if o.access != Public {
        responses.insert("401".into(), error_response("No valid bearer token"));
    }
    if matches!(o.access, Admin | HostOp | Attested) {
        responses.insert(
            "403".into(),
            error_response(match o.access {
                HostOp => "Not in TrustedAdmins, or no valid management-server signature",
                Attested => "The host is not attested now, or its cluster has no key provider",
                _ => "Not in TrustedAdmins",
            }),
        );
    }
    if o.path.starts_with("/v1/key") || o.path.ends_with("/keys") {
        responses.insert(
            "503".into(),
            error_response("key_server_unreachable: no replica of the key server answered"),
        );
        responses.insert(
            "502".into(),
            error_response("key_server_error: the key server refused or broke KMIP"),
        );
    }
    if o.request.is_some() || o.path.contains('{') {
        responses.insert("400".into(), error_response("Malformed request"));
        responses.insert("404".into(), error_response("No such resource"));
        responses.insert(
            "409".into(),
            error_response("Already exists, or would leave TrustedAdmins empty"),
        );
    }
    let mut value = json!({
        "summary": o.summary,
        "operationId": format!("{} {}", o.method.to_lowercase(), o.path),
        "parameters": params,
        "responses": responses,
    });
    if let Some(map) = value.as_object_mut() {
        let security = match o.access {
            Public => json!([]),
            Token | Admin => json!([{"bearer": []}]),
            HostOp => json!([{"bearer": [], "managementSignature": []}]),
            Attested => json!([{"attestation": []}]),
        };
        map.insert("security".into(), security);
        if let Some(req) = o.request {
            map.insert(
                "requestBody".into(),
                json!({"required": true, "content": {"application/json": {"schema": schema_ref(req)}}}),
            );
        }
    }
    value
}

fn schemas() -> Value {
    let s = |props: Value, required: &[&str]| json!({"type": "object", "properties": props, "required": required});
    let int = json!({"type": "integer"});
    let text = json!({"type": "string"});
    let opt_int = json!({"type": ["integer", "null"]});
    let opt_text = json!({"type": ["string", "null"]});
    let mut all = json!({
        "Error": s(json!({"error": text, "reason": text}), &["error", "reason"]),
        "Health": s(json!({"status": text}), &["status"]),
        "Jwks": s(json!({"keys": {"type": "array", "items": s(json!({"kty": text, "crv": text, "x": text, "y": text, "use": text, "alg": text, "kid": text}), &["kty", "crv", "x", "y", "kid"])}}), &["keys"]),
        "Principal": s(json!({"name": text, "kind": {"enum": ["person", "service"]}, "groups": {"type": "array", "items": text}, "created_at": int}), &["name", "kind", "groups", "created_at"]),
        "NewPrincipal": s(json!({"name": text, "kind": {"enum": ["person", "service"]}, "groups": {"type": "array", "items": text}}), &["name", "kind"]),
        "Token": s(json!({"id": text, "principal": text, "description": text, "created_at": int}), &["id", "principal", "description", "created_at"]),
        "NewToken": s(json!({"description": text}), &[]),
        "CreatedToken": s(json!({"id": text, "principal": text, "description": text, "created_at": int, "token": {"type": "string", "description": "The secret; shown only in this response"}}), &["id", "principal", "token"]),
        "ManagementServer": s(json!({"id": text, "subject": text, "fingerprint": text, "created_at": int}), &["id", "subject", "fingerprint", "created_at"]),
        "NewManagementServer": s(json!({"id": text, "certificate_pem": {"type": "string", "description": "ECDSA P-256 signing certificate, PEM"}}), &["id", "certificate_pem"]),
        "Cluster": s(json!({"name": text, "pcrs": {"type": "array", "items": int}, "bank": text, "created_at": int}), &["name", "pcrs", "bank", "created_at"]),
        "ClusterView": s(json!({"name": text, "pcrs": {"type": "array", "items": int}, "bank": text, "created_at": int, "tpm_ca_certs": int, "eks": int, "software_versions": int, "hosts": int}), &["name", "pcrs", "bank"]),
        "NewCluster": s(json!({"name": text, "pcrs": {"type": "array", "items": int, "description": "Default 0..7"}, "bank": {"type": "string", "description": "Default sha256"}}), &["name"]),
        "CaCert": s(json!({"id": {"type": "string", "description": "SHA-256 of the DER certificate"}, "cluster": text, "subject": text, "created_at": int}), &["id", "cluster", "subject", "created_at"]),
        "NewCaCerts": s(json!({"certificate_pem": {"type": "string", "description": "One or more CA certificates, PEM"}}), &["certificate_pem"]),
        "ClusterEk": s(json!({"ek_hash": text, "cluster": text, "kind": {"enum": ["certificate", "public_key", "bare_public_key"]}, "created_at": int}), &["ek_hash", "cluster", "kind", "created_at"]),
        "NewClusterEk": s(json!({"kind": {"enum": ["certificate", "public_key", "bare_public_key"]}, "pem": {"type": "string", "description": "EK certificate or SubjectPublicKeyInfo, PEM"}}), &["kind", "pem"]),
        "SoftwareVersion": {"type": "object", "description": "vouch-attest's SoftwareVersion: name, and reference pcrs and/or events per bank, digests as hex", "properties": {"name": text, "pcrs": {"type": "object"}, "events": {"type": "object"}}},
        "SoftwareVersionRecord": s(json!({"cluster": text, "name": text, "reference": schema_ref("SoftwareVersion"), "created_at": int}), &["cluster", "name", "reference", "created_at"]),
        "Host": s(json!({"ek_hash": text, "cluster": text, "name": text, "added_by": text, "ak_bound": {"type": "boolean"}, "state": {"enum": ["unknown", "attested", "not_attested"]}, "attested_at": opt_int, "valid_until": opt_int, "software_version": opt_text, "created_at": int}), &["ek_hash", "cluster", "name", "state"]),
        "NewHost": s(json!({"name": text, "ek_hash": {"type": "string", "description": "64 hex digits; or give ek_certificate_pem"}, "ek_certificate_pem": text}), &["name"]),
        "AttestationRecord": s(json!({"ek_hash": text, "cluster": text, "at": int, "attested": {"type": "boolean"}, "software_version": opt_text, "reason": opt_text, "pcr_digest": opt_text, "nonce": opt_text, "valid_until": opt_int, "token": opt_text}), &["ek_hash", "cluster", "at", "attested"]),
        "HostStatus": {"allOf": [schema_ref("Host"), s(json!({"recent": list_of("AttestationRecord")}), &["recent"])]},
        "HostToken": s(json!({"ek_hash": text, "token": {"type": "string", "description": "JWT signed with ES256; claims iss, sub (EK hash), cluster, software_version, pcr_digest, nonce, iat, exp, jti"}, "issued_at": int, "expires_at": int}), &["ek_hash", "token", "issued_at", "expires_at"]),
        "Event": s(json!({"id": int, "at": int, "kind": text, "subject": text, "detail": {"type": "object"}}), &["id", "at", "kind", "subject", "detail"]),
    });
    let keys = json!({
        "KeyServer": s(json!({"name": text, "endpoints": {"type": "array", "items": text}, "client_certificate": text, "ca_certificates": text, "created_at": int}), &["name", "endpoints", "created_at"]),
        "NewKeyServer": s(json!({"name": text, "endpoints": {"type": "array", "items": {"type": "string", "description": "host:port"}}, "client_certificate_pem": text, "client_key_pem": text, "ca_certificate_pem": text}), &["name", "endpoints", "client_certificate_pem", "client_key_pem", "ca_certificate_pem"]),
        "NewKmsKey": s(json!({"name": {"type": ["string", "null"], "description": "A KMIP Name for the key"}}), &[]),
        "CreatedKmsKey": s(json!({"key_server": text, "key_id": text}), &["key_server", "key_id"]),
        "KeyProvider": s(json!({"name": text, "key_server": text, "primary_key_id": text, "primary_key_version": int, "retired": {"type": "array", "items": s(json!({"id": text, "version": int}), &["id", "version"])}, "wrapping": {"enum": ["local", "remote"]}, "refresh_seconds": int, "lifetime_seconds": int, "created_at": int}), &["name", "key_server", "primary_key_id", "primary_key_version", "wrapping"]),
        "NewKeyProvider": s(json!({"name": text, "key_server": text, "primary_key_id": text, "wrapping": {"enum": ["local", "remote"]}, "refresh_seconds": {"type": "integer", "description": "Local: state checked again after this long (default 300)"}, "lifetime_seconds": {"type": "integer", "description": "Local: a cached key serves at most this long, also when the key server is unreachable (default 3600)"}}), &["name", "key_server", "primary_key_id", "wrapping"]),
        "NewPrimaryKey": s(json!({"primary_key_id": text}), &["primary_key_id"]),
        "ClusterKeyProvider": s(json!({"cluster": text, "provider": opt_text}), &["cluster", "provider"]),
        "SetClusterKeyProvider": s(json!({"provider": text}), &["provider"]),
        "GenerateKey": s(json!({"aad": {"type": "string", "description": "Associated data, base64"}}), &[]),
        "GeneratedKey": s(json!({"provider": text, "key": {"type": "string", "description": "The 256-bit data key, base64"}, "wrapped": {"type": "string", "description": "The key wrapped under the provider's primary key (a ciphertext), base64"}}), &["provider", "key", "wrapped"]),
        "Encrypt": s(json!({"plaintext": {"type": "string", "description": "base64"}, "aad": {"type": "string", "description": "base64"}}), &["plaintext"]),
        "CiphertextRequest": s(json!({"ciphertext": {"type": "string", "description": "base64"}, "aad": {"type": "string", "description": "base64; the same as at encryption"}}), &["ciphertext"]),
        "Ciphertext": s(json!({"ciphertext": {"type": "string", "description": "Self-describing (format version, provider, primary key id and version, nonce, tag), base64"}}), &["ciphertext"]),
        "Plaintext": s(json!({"plaintext": {"type": "string", "description": "base64"}}), &["plaintext"]),
        "Batch": s(json!({"items": {"type": "array", "maxItems": 64, "items": s(json!({"op": {"enum": ["generate", "encrypt", "decrypt", "rewrap"]}, "aad": text, "plaintext": text, "ciphertext": text}), &["op"])}}), &["items"]),
        "BatchReply": s(json!({"results": {"type": "array", "items": s(json!({"key": text, "wrapped": text, "ciphertext": text, "plaintext": text, "error": text, "reason": text}), &[])}}), &["results"]),
    });
    if let (Some(all), Value::Object(keys)) = (all.as_object_mut(), keys) {
        all.extend(keys);
    }
    all
}

/// The OpenAPI document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for o in OPERATIONS {
        let entry = paths
            .entry(o.path.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(map) = entry.as_object_mut() {
            map.insert(o.method.to_lowercase(), operation(o));
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "vouchd management API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Vouch's trust authority. Off by default: a fresh vouchd trusts nothing until a TrustedAdmins member configures a trusted cluster. Errors are JSON {error, reason}.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas(),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "A vouchd token (vouch_...)"},
                "attestation": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT", "description": "The host's attestation token from this vouchd (ES256), unexpired; the host must also be attested now"},
                "managementSignature": {
                    "type": "apiKey", "in": "header", "name": "Vouch-Signature",
                    "description": "id=<management server>; ts=<unix seconds>; nonce=<text>; sig=<base64 DER ECDSA P-256 SHA-256 signature over 'vouch-host-op-v1\\n' METHOD '\\n' path-and-query '\\n' ts '\\n' nonce '\\n' hex(SHA-256(body))>; at most 5 minutes old; each signed request is accepted once"
                },
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_described_and_every_description_is_routed() {
        let doc = document();
        for (method, path) in super::super::ROUTES {
            assert!(
                doc["paths"][*path][method.to_lowercase()].is_object(),
                "{method} {path} is routed but not described"
            );
        }
        for o in OPERATIONS {
            assert!(
                super::super::ROUTES.contains(&(o.method, o.path)),
                "{} {} is described but not routed",
                o.method,
                o.path
            );
        }
    }

    #[test]
    fn every_schema_reference_resolves() {
        let doc = document();
        let text = doc.to_string();
        for piece in text.split("#/components/schemas/").skip(1) {
            let name: String = piece
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect();
            assert!(
                doc["components"]["schemas"][&name].is_object(),
                "missing schema {name}"
            );
        }
    }
}
