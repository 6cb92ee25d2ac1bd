//! The OpenAPI 3.1 document's frame: title, version, tags and security schemes. The paths and
//! schemas come from the handlers' `#[utoipa::path]` operations and the `vouch_api` types,
//! collected by the router itself ([`super::routes`]).
//!
//! Why utoipa: its operations are attributes beside each handler and its schemas derive from
//! the same serde types clients use, so the document cannot drift from the code; `utoipa-axum`
//! builds the axum router from the same list. (aide, the alternative, infers more from
//! extractor types but wraps the router and needs schemars on every type.)

use utoipa::Modify;
use utoipa::OpenApi;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
use vouch_api::ErrorBody;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "vouchd",
        description = "Vouch's verifier: the management API (TrustedAdmins configure trust; host \
                       operations also need a management server's signature) and the key \
                       operations of attested hosts.",
        license(name = "Apache-2.0 OR MIT", identifier = "Apache-2.0 OR MIT"),
    ),
    tags(
        (name = "public", description = "Health, metrics, this document and the token-verification keys"),
        (name = "whoami", description = "The caller's principal"),
        (name = "principals", description = "Principals, groups and bearer tokens"),
        (name = "management-servers", description = "Management servers allowed to sign host operations"),
        (name = "clusters", description = "Trusted clusters: TPM CAs, EKs, software versions and hosts"),
        (name = "hosts", description = "A host's state, results and attestation token"),
        (name = "events", description = "The audit trail"),
        (name = "key-servers", description = "KMIP key servers"),
        (name = "key-providers", description = "Trusted key providers and each cluster's provider"),
        (name = "keys", description = "Key operations of attested hosts"),
    ),
    components(schemas(ErrorBody)),
    modifiers(&SecuritySchemes),
)]
struct ApiDoc;

/// The document before the routes are added.
pub fn base() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc
}

/// Completes the document once the routes are in: every operation can answer an error, the
/// `default` response, an `ErrorBody`.
pub fn finish(doc: &mut utoipa::openapi::OpenApi) {
    let error = ResponseBuilder::new()
        .description("An error: its code and reason")
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build();
    for item in doc.paths.paths.values_mut() {
        for operation in [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            operation
                .responses
                .responses
                .insert("default".into(), error.clone().into());
        }
    }
}

/// `bearer`: a principal's token; `managementSignature`: the `Vouch-Signature` header of host
/// operations; `attestation`: a host's attestation token (a JWT) as the bearer token.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("A principal's token (vouch_...)"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "managementSignature",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Vouch-Signature",
                "id=<server>; ts=<unix s>; nonce=<text>; sig=<base64 DER ECDSA P-256> over \
                 vouch_api::signing::signing_message",
            ))),
        );
        components.add_security_scheme(
            "attestation",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some("The host's attestation token (ES256 JWT)"))
                    .build(),
            ),
        );
    }
}
