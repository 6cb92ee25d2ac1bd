//! The management API client: HTTPS/JSON to vouchd, trusting its certificate by a pinned
//! SHA-256 fingerprint or through a CA file, and nothing else.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, OtherError, SignatureScheme};
use serde::Serialize;
use serde::de::DeserializeOwned;
use vouch_api::ErrorBody;

use crate::Failure;
use vouch::signature::HostSigner;

/// How to reach vouchd; global options of every command that talks to it.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerOpts {
    /// vouchd's management API, https://HOST:PORT.
    #[arg(
        long,
        global = true,
        env = "VOUCH_SERVER",
        value_name = "URL",
        help_heading = "Server"
    )]
    pub server: Option<String>,
    /// A bearer token (prefer the environment variable: arguments are visible to other users).
    #[arg(
        long,
        global = true,
        env = "VOUCH_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN",
        help_heading = "Server"
    )]
    pub token: Option<String>,
    /// Trust exactly the certificate with this SHA-256 fingerprint (vouchd prints it when it
    /// starts).
    #[arg(
        long,
        global = true,
        env = "VOUCH_FINGERPRINT",
        value_name = "SHA256HEX",
        help_heading = "Server"
    )]
    pub fingerprint: Option<String>,
    /// Trust server certificates issued by the CA certificates in this PEM file.
    #[arg(
        long = "ca",
        global = true,
        env = "VOUCH_CA",
        value_name = "FILE",
        help_heading = "Server"
    )]
    pub ca: Option<PathBuf>,
    /// Print the server's JSON instead of a summary for a person.
    #[arg(long, global = true, help_heading = "Server")]
    pub json: bool,
}

/// A connection to vouchd's management API.
#[derive(Debug)]
pub struct Api {
    http: reqwest::blocking::Client,
    base: String,
    token: Option<String>,
    /// Print JSON rather than a summary.
    pub json: bool,
}

/// Parses a fingerprint: 64 hex digits, colons and case ignored.
pub fn parse_fingerprint(text: &str) -> Result<[u8; 32], Failure> {
    let digits: String = text
        .chars()
        .filter(|c| *c != ':' && !c.is_whitespace())
        .collect();
    hex::decode(&digits).ok()
        .and_then(|v| <[u8; 32]>::try_from(v).ok())
        .ok_or_else(|| {
            Failure::Input(format!(
                "--fingerprint '{text}' is not a SHA-256 fingerprint (64 hex digits); copy the one vouchd printed when it started"
            ))
        })
}

/// The base URL: `https://HOST:PORT` (a bare `HOST:PORT` gets `https://`).
fn base_url(server: &str) -> Result<String, Failure> {
    let server = server.trim();
    if server.starts_with("http://") {
        return Err(Failure::Input(format!(
            "--server {server}: vouchd's management API is HTTPS only; use https://"
        )));
    }
    let host = server
        .strip_prefix("https://")
        .unwrap_or(server)
        .trim_end_matches('/');
    if host.is_empty() {
        return Err(Failure::Input(
            "--server is empty; pass https://HOST:PORT".into(),
        ));
    }
    Ok(format!("https://{host}"))
}

impl Api {
    /// Checks the options and builds the TLS client. Refuses without a way to trust the server.
    pub fn connect(opts: &ServerOpts, need_token: bool) -> Result<Self, Failure> {
        let server = opts.server.as_deref().ok_or_else(|| {
            Failure::Input(
                "which vouchd? pass --server https://HOST:PORT or set VOUCH_SERVER".into(),
            )
        })?;
        let base = base_url(server)?;
        let token = opts.token.clone().filter(|t| !t.trim().is_empty());
        if need_token && token.is_none() {
            return Err(Failure::Input(
                "this needs a bearer token: set VOUCH_TOKEN (or pass --token)".into(),
            ));
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| Failure::Input(format!("TLS setup: {e}")))?;
        let tls = match (&opts.fingerprint, &opts.ca) {
            (Some(fp), None) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Pinned {
                    sha256: parse_fingerprint(fp)?,
                    algorithms: provider.signature_verification_algorithms,
                }))
                .with_no_client_auth(),
            (None, Some(path)) => {
                let pem = crate::read_file(path, "CA file")?;
                let mut roots = rustls::RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(&pem) {
                    let cert =
                        cert.map_err(|e| Failure::Input(format!("--ca {}: {e}", path.display())))?;
                    roots
                        .add(cert)
                        .map_err(|e| Failure::Input(format!("--ca {}: {e}", path.display())))?;
                }
                if roots.is_empty() {
                    return Err(Failure::Input(format!(
                        "--ca {}: no PEM certificate in the file",
                        path.display()
                    )));
                }
                builder.with_root_certificates(roots).with_no_client_auth()
            }
            (Some(_), Some(_)) => {
                return Err(Failure::Input(
                    "pass either --fingerprint or --ca, not both".into(),
                ));
            }
            (None, None) => {
                return Err(Failure::Input(
                    "how should vouchd's certificate be trusted? pass --fingerprint SHA256HEX (vouchd prints it when it starts; or set VOUCH_FINGERPRINT) or --ca FILE (the CA that issued vouchd's certificate; or set VOUCH_CA)".into(),
                ));
            }
        };
        let http = reqwest::blocking::Client::builder()
            .use_preconfigured_tls(tls)
            .no_proxy()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .user_agent(concat!("vouch/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Failure::Input(format!("HTTP client setup: {}", chain(&e))))?;
        Ok(Self {
            http,
            base,
            token,
            json: opts.json,
        })
    }

    /// `GET path`, its answer read as `T`.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, Failure> {
        self.send(Method::GET, path, None, None)
    }

    /// `POST path` with a JSON body, its answer read as `T`.
    pub fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, Failure> {
        self.send(Method::POST, path, Some(&encode(body)?), None)
    }

    /// `PUT path` with a JSON body, its answer read as `T`.
    pub fn put<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, Failure> {
        self.send(Method::PUT, path, Some(&encode(body)?), None)
    }

    /// `PATCH path` with a JSON body, its answer read as `T`.
    pub fn patch<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, Failure> {
        self.send(Method::PATCH, path, Some(&encode(body)?), None)
    }

    /// `DELETE path`, which answers with no body.
    pub fn delete(&self, path: &str) -> Result<(), Failure> {
        self.send(Method::DELETE, path, None, None)
    }

    /// Sends a request; `path` is the path and query, already encoded, and `body` is JSON. A
    /// 2xx answer is read as `T` ([`read_answer`]); a refusal (401, 403, 404, 409) is
    /// [`Failure::Refused`] with the server's reason; anything else is [`Failure::Input`].
    pub fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&[u8]>,
        signer: Option<&HostSigner>,
    ) -> Result<T, Failure> {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(bytes) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(bytes.to_vec());
        }
        if let Some(s) = signer {
            let header = s
                .header(method.as_str(), path, body.unwrap_or_default())
                .map_err(Failure::Input)?;
            req = req.header(vouch::signature::HEADER, header);
        }
        let resp = req.send().map_err(|e| self.unreachable(&e))?;
        let status = resp.status();
        let answer = resp.bytes().map_err(|e| self.unreachable(&e))?;
        if status.is_success() {
            return read_answer(&method, path, &answer);
        }
        let error: Option<ErrorBody> = serde_json::from_slice(&answer).ok();
        if self.json
            && let Some(e) = &error
        {
            crate::output::emit_line(format_args!("{}", pretty(e)));
        }
        let (code, reason) = match error {
            Some(e) => (e.error, e.reason),
            None => (
                status.canonical_reason().unwrap_or("error").to_owned(),
                String::from_utf8_lossy(&answer).trim().to_owned(),
            ),
        };
        let message = format!(
            "vouchd refused {method} {path}: {} {code}: {reason}",
            status.as_u16()
        );
        match status.as_u16() {
            401 => Err(Failure::Refused(format!(
                "{message}\n(check the token in VOUCH_TOKEN or --token)"
            ))),
            403 | 404 | 409 => Err(Failure::Refused(message)),
            400 => Err(Failure::Input(format!(
                "vouchd could not use the request {method} {path}: {reason}"
            ))),
            _ => Err(Failure::Input(format!(
                "{message}\n(a server-side failure: see vouchd's log)"
            ))),
        }
    }

    fn unreachable(&self, e: &reqwest::Error) -> Failure {
        let detail = tls_failure(e).unwrap_or_else(|| chain(e));
        let next = if detail.contains(PIN_MISMATCH) {
            "check --fingerprint against the one vouchd printed when it started (or this is not the vouchd you meant)"
        } else if detail.contains("certificate") || detail.contains("Certificate") {
            "check --ca, or pin the certificate with --fingerprint"
        } else if e.is_timeout() {
            "vouchd did not answer in time; check that it is running and reachable"
        } else {
            "check that vouchd is running and that --server (or VOUCH_SERVER) names its management API"
        };
        Failure::Input(format!(
            "cannot reach vouchd at {}: {detail}\n({next})",
            self.base
        ))
    }
}

/// A 2xx answer to `method path` read as `T`: an empty answer is JSON `null` (which `()`
/// reads); one that does not fit `T` is [`Failure::Input`] naming the route.
fn read_answer<T: DeserializeOwned>(
    method: &Method,
    path: &str,
    answer: &[u8],
) -> Result<T, Failure> {
    let json: &[u8] = if answer.trim_ascii().is_empty() {
        b"null"
    } else {
        answer
    };
    serde_json::from_slice(json).map_err(|e| {
        Failure::Input(format!(
            "vouchd's answer to {method} {path} is not what this vouch expects: {e}\n(is vouch the same version as vouchd?)"
        ))
    })
}

/// An error and its sources, each said once.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let t = s.to_string();
        if !text.contains(&t) {
            text.push_str(": ");
            text.push_str(&t);
        }
        source = s.source();
    }
    text
}

/// The TLS failure in an error's sources, said for a person.
fn tls_failure(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut source = Some(e);
    while let Some(s) = source {
        // io::Error hides what it wraps from `source()`; look through it.
        let mut inner: &(dyn std::error::Error + 'static) = s;
        while let Some(wrapped) = inner
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            inner = wrapped;
        }
        if let Some(t) = inner.downcast_ref::<rustls::Error>() {
            if let rustls::Error::InvalidCertificate(CertificateError::Other(other)) = t
                && let Some(m) = other.0.downcast_ref::<Mismatch>()
            {
                return Some(format!("TLS: {m}"));
            }
            return Some(format!("TLS: {t}"));
        }
        source = s.source();
    }
    None
}

/// A request body as JSON.
pub fn encode(body: &impl Serialize) -> Result<Vec<u8>, Failure> {
    serde_json::to_vec(body).map_err(|e| Failure::Input(format!("cannot encode the request: {e}")))
}

/// A value as indented JSON, for `--json`.
pub fn pretty(v: &impl Serialize) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|e| format!("(cannot encode as JSON: {e})"))
}

/// One path segment, percent-encoded (everything but RFC 3986's unreserved characters).
pub fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

const PIN_MISMATCH: &str = "does not match the pinned fingerprint";

#[derive(Debug)]
struct Mismatch {
    got: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the server's certificate (SHA-256 {}) {PIN_MISMATCH}",
            self.got
        )
    }
}

impl std::error::Error for Mismatch {}

/// Trusts exactly one certificate, by its SHA-256; the handshake signature is still verified
/// with that certificate's key, so only the holder of its private key passes.
#[derive(Debug)]
struct Pinned {
    sha256: [u8; 32],
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, end_entity.as_ref());
        if got.as_ref() == self.sha256 {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(Mismatch {
                    got: hex::encode(got.as_ref()),
                })),
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse_with_or_without_colons() {
        let hex = "AB".repeat(32);
        assert_eq!(parse_fingerprint(&hex).ok(), Some([0xab; 32]));
        let colons = vec!["ab"; 32].join(":");
        assert_eq!(parse_fingerprint(&colons).ok(), Some([0xab; 32]));
        assert!(parse_fingerprint("abcd").is_err());
        assert!(parse_fingerprint(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn server_urls_are_https() {
        assert_eq!(
            base_url("https://h:8443/").ok().as_deref(),
            Some("https://h:8443")
        );
        assert_eq!(base_url("h:8443").ok().as_deref(), Some("https://h:8443"));
        assert!(base_url("http://h:8443").is_err());
        assert!(base_url("https://").is_err());
    }

    #[test]
    fn answers_are_read_as_the_contract_types() {
        assert!(read_answer::<()>(&Method::DELETE, "/v1/clusters/lab", b"").is_ok());
        let p: Result<vouch_api::Principal, _> = read_answer(
            &Method::GET,
            "/v1/whoami",
            br#"{"name":"ops","kind":"person","groups":[],"created_at":1}"#,
        );
        assert_eq!(p.map(|p| p.name).ok().as_deref(), Some("ops"));
        for bad in [&b""[..], b"not json", br#"{"name":"ops"}"#] {
            let r = read_answer::<vouch_api::Principal>(&Method::GET, "/v1/whoami", bad);
            assert!(
                matches!(&r, Err(Failure::Input(m)) if m.contains("GET /v1/whoami")),
                "{r:?}"
            );
        }
    }

    #[test]
    fn segments_are_encoded() {
        assert_eq!(seg("lab-1_a.b"), "lab-1_a.b");
        assert_eq!(seg("a/b c@d"), "a%2Fb%20c%40d");
    }
}
