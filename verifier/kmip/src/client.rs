//! The KMIP client: a key server (replicas tried in order, a client certificate and a CA), a
//! TLS connection to one replica, and one method per operation.

use crate::error::{EndpointFailure, Error};
use crate::message::{
    self, Attribute, CipherInput, Encrypted, ProtocolVersion, QueryResult, SymmetricKey,
    SymmetricKeyTemplate, Violation,
};
use crate::spec::{
    Operation, QueryFunction, ResultReason, ResultStatus, RevocationReasonCode, State, attribute,
};
use crate::ttlv::{self, HEADER_LEN, Item, Limits, MAX_MESSAGE_LEN};
use rustls::ClientConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use zeroize::Zeroizing;

/// The default time allowed for connecting to one replica (TCP and TLS) and for one request.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// One KMIP endpoint: a host name or IP address and a port (KMIP's is 5696).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    #[must_use]
    pub fn new(host: &str, port: u16) -> Self {
        Self {
            host: host.to_owned(),
            port,
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// A key server: one or more replicas of one KMS, the client's certificate and key, and the CA
/// that signs the key server's certificates.
#[derive(Clone)]
pub struct KeyServer {
    endpoints: Vec<Endpoint>,
    tls: Arc<ClientConfig>,
    version: ProtocolVersion,
    timeout: Duration,
    max_message_len: usize,
}

impl fmt::Debug for KeyServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyServer")
            .field("endpoints", &self.endpoints)
            .field("version", &self.version)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl KeyServer {
    /// A key server reached over TLS 1.2 or 1.3, authenticating with the client certificate
    /// chain and key in PEM (PKCS#8, SEC1 or PKCS#1), trusting only the CA certificates in
    /// `ca_pem`. Speaks KMIP 1.2 unless [`Self::with_version`] says otherwise.
    ///
    /// # Errors
    /// [`Error::Config`] when there is no endpoint or the PEM is unusable.
    pub fn new(
        endpoints: Vec<Endpoint>,
        client_chain_pem: &[u8],
        client_key_pem: &[u8],
        ca_pem: &[u8],
    ) -> Result<Self, Error> {
        if endpoints.is_empty() {
            return Err(Error::Config("no KMIP endpoint".into()));
        }
        let chain = CertificateDer::pem_slice_iter(client_chain_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::Config(format!("client certificate PEM: {e}")))?;
        if chain.is_empty() {
            return Err(Error::Config("no certificate in the client PEM".into()));
        }
        let key = PrivateKeyDer::from_pem_slice(client_key_pem)
            .map_err(|e| Error::Config(format!("client key PEM: {e}")))?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem) {
            let cert = cert.map_err(|e| Error::Config(format!("CA PEM: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| Error::Config(format!("CA certificate: {e}")))?;
        }
        if roots.is_empty() {
            return Err(Error::Config("no certificate in the CA PEM".into()));
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| Error::Config(format!("TLS versions: {e}")))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| Error::Config(format!("client certificate and key: {e}")))?;
        Ok(Self {
            endpoints,
            tls: Arc::new(tls),
            version: ProtocolVersion::V1_2,
            timeout: DEFAULT_TIMEOUT,
            max_message_len: MAX_MESSAGE_LEN,
        })
    }

    /// The KMIP version to put in request headers (1.2 or 1.4).
    #[must_use]
    pub fn with_version(mut self, version: ProtocolVersion) -> Self {
        self.version = version;
        self
    }

    /// The time allowed for connecting to one replica, and for one request.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The largest message sent or accepted.
    #[must_use]
    pub fn with_max_message_len(mut self, max: usize) -> Self {
        self.max_message_len = max;
        self
    }

    #[must_use]
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// Connects to the first replica that accepts a TCP connection and completes the TLS
    /// handshake, trying them in order.
    ///
    /// # Errors
    /// [`Error::Unreachable`] with every replica's failure when none could be reached.
    pub async fn connect(&self) -> Result<Connection, Error> {
        let mut attempts = Vec::new();
        for endpoint in &self.endpoints {
            match self.connect_to(endpoint).await {
                Ok(connection) => return Ok(connection),
                Err(failure) => attempts.push(failure),
            }
        }
        Err(Error::Unreachable { attempts })
    }

    /// Runs `f` on a connection to the first replica that answers; when a replica cannot be
    /// reached, or its connection breaks or goes silent during `f` ([`Error::is_unavailable`]),
    /// runs `f` again from the start on a fresh connection to the next replica. Any other
    /// error — a refusal, a revoked key, a malformed answer — is returned at once.
    ///
    /// `f` may run on more than one replica: give it idempotent work (Get, GetAttributes,
    /// Locate, Encrypt, Decrypt, the state check), not Create.
    ///
    /// # Errors
    /// [`Error::Unreachable`] listing every replica's failure when none completed `f`, or the
    /// first error that is not about availability.
    pub async fn with_failover<T>(
        &self,
        mut f: impl AsyncFnMut(&mut Connection) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let mut attempts = Vec::new();
        for endpoint in &self.endpoints {
            let mut connection = match self.connect_to(endpoint).await {
                Ok(connection) => connection,
                Err(failure) => {
                    attempts.push(failure);
                    continue;
                }
            };
            match f(&mut connection).await {
                Err(e) if e.is_unavailable() => attempts.push(EndpointFailure {
                    endpoint: endpoint.to_string(),
                    reason: e.to_string(),
                }),
                other => return other,
            }
        }
        Err(Error::Unreachable { attempts })
    }

    /// The key provider's call: an Active key's material from the first replica that answers
    /// ([`Connection::get_active_key`] under [`Self::with_failover`]).
    ///
    /// # Errors
    /// [`Error::Unreachable`], [`Error::KeyRevoked`], [`Error::KeyNotActive`],
    /// [`Error::KeyNotFound`], or any other [`Error`].
    pub async fn get_active_key(&self, id: &str) -> Result<SymmetricKey, Error> {
        self.with_failover(async |connection: &mut Connection| connection.get_active_key(id).await)
            .await
    }

    /// Connects to one replica (for a caller's own failover loop, e.g. one whose futures must
    /// be `Send`, which [`Self::with_failover`]'s async closure cannot promise).
    ///
    /// # Errors
    /// The replica's failure.
    pub async fn connect_replica(
        &self,
        endpoint: &Endpoint,
    ) -> Result<Connection, EndpointFailure> {
        self.connect_to(endpoint).await
    }

    async fn connect_to(&self, endpoint: &Endpoint) -> Result<Connection, EndpointFailure> {
        match tokio::time::timeout(self.timeout, self.connect_one(endpoint)).await {
            Ok(Ok(stream)) => Ok(Connection {
                stream,
                endpoint: endpoint.clone(),
                version: self.version,
                timeout: self.timeout,
                max_message_len: self.max_message_len,
            }),
            Ok(Err(reason)) => Err(EndpointFailure {
                endpoint: endpoint.to_string(),
                reason,
            }),
            Err(_) => Err(EndpointFailure {
                endpoint: endpoint.to_string(),
                reason: format!("timed out after {:.1} s", self.timeout.as_secs_f64()),
            }),
        }
    }

    async fn connect_one(&self, endpoint: &Endpoint) -> Result<TlsStream<TcpStream>, String> {
        let name = ServerName::try_from(endpoint.host.clone())
            .map_err(|e| format!("invalid host name: {e}"))?;
        let tcp = TcpStream::connect((endpoint.host.as_str(), endpoint.port))
            .await
            .map_err(|e| format!("TCP connect: {e}"))?;
        tcp.set_nodelay(true)
            .map_err(|e| format!("TCP_NODELAY: {e}"))?;
        TlsConnector::from(Arc::clone(&self.tls))
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake: {e}"))
    }
}

/// A TLS connection to one replica of a key server. Requests go one at a time (`&mut self`).
/// After an [`Error::Io`], [`Error::Timeout`], [`Error::Malformed`] or [`Error::Protocol`] the
/// connection is in an unknown state: drop it and [`KeyServer::connect`] again.
pub struct Connection {
    stream: TlsStream<TcpStream>,
    endpoint: Endpoint,
    version: ProtocolVersion,
    timeout: Duration,
    max_message_len: usize,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("endpoint", &self.endpoint)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// The replica this connection reached.
    #[must_use]
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The protocol versions the server supports, among `versions` (all it supports when
    /// empty), its preference first.
    ///
    /// # Errors
    /// See [`Error`].
    pub async fn discover_versions(
        &mut self,
        versions: &[ProtocolVersion],
    ) -> Result<Vec<ProtocolVersion>, Error> {
        let payload = self
            .call(
                Operation::DiscoverVersions,
                message::discover_versions_payload(versions),
            )
            .await?;
        self.read(message::discover_versions_response(&payload))
    }

    /// Query: the operations and object types the server supports and its vendor.
    ///
    /// # Errors
    /// See [`Error`].
    pub async fn query(&mut self, functions: &[QueryFunction]) -> Result<QueryResult, Error> {
        let payload = self
            .call(Operation::Query, message::query_payload(functions))
            .await?;
        self.read(message::query_response(&payload))
    }

    /// Locate: the identifiers of the objects that match every attribute.
    ///
    /// # Errors
    /// See [`Error`].
    pub async fn locate(&mut self, attributes: &[Attribute]) -> Result<Vec<String>, Error> {
        let payload = self
            .call(Operation::Locate, message::locate_payload(attributes, None))
            .await?;
        self.read(message::locate_response(&payload))
    }

    /// Locate by the Name attribute.
    ///
    /// # Errors
    /// See [`Error`].
    pub async fn locate_by_name(&mut self, name: &str) -> Result<Vec<String>, Error> {
        self.locate(&[Attribute::name(name)]).await
    }

    /// Create a symmetric key; returns its identifier. The key starts Pre-Active.
    ///
    /// # Errors
    /// See [`Error`].
    pub async fn create_symmetric_key(
        &mut self,
        template: &SymmetricKeyTemplate,
    ) -> Result<String, Error> {
        let payload = self
            .call(Operation::Create, message::create_payload(template))
            .await?;
        self.read(message::identifier_response(&payload))
    }

    /// Activate: Pre-Active to Active.
    ///
    /// # Errors
    /// See [`Error`].
    pub async fn activate(&mut self, id: &str) -> Result<(), Error> {
        self.identified(Operation::Activate, id, message::identifier_payload(id))
            .await
    }

    /// Revoke: Active to Deactivated (or Compromised for a key compromise).
    ///
    /// # Errors
    /// See [`Error`].
    pub async fn revoke(
        &mut self,
        id: &str,
        reason: RevocationReasonCode,
        message: Option<&str>,
    ) -> Result<(), Error> {
        self.identified(
            Operation::Revoke,
            id,
            message::revoke_payload(id, reason, message),
        )
        .await
    }

    /// Destroy. Servers refuse to destroy an Active key: revoke it first.
    ///
    /// # Errors
    /// See [`Error`].
    pub async fn destroy(&mut self, id: &str) -> Result<(), Error> {
        self.identified(Operation::Destroy, id, message::identifier_payload(id))
            .await
    }

    /// GetAttributes: the named attributes (all of them when `names` is empty).
    ///
    /// # Errors
    /// See [`Error`]; [`Error::KeyNotFound`] when the server has no such object.
    pub async fn get_attributes(
        &mut self,
        id: &str,
        names: &[&str],
    ) -> Result<Vec<Attribute>, Error> {
        let payload = self
            .call(
                Operation::GetAttributes,
                message::get_attributes_payload(id, names),
            )
            .await
            .map_err(|e| not_found(e, id))?;
        self.read(message::get_attributes_response(&payload))
    }

    /// The State of an object.
    ///
    /// # Errors
    /// See [`Error`]; [`Error::KeyNotFound`] when the server has no such object.
    pub async fn state(&mut self, id: &str) -> Result<State, Error> {
        let attributes = self.get_attributes(id, &[attribute::STATE]).await?;
        self.read(message::state_of(&attributes))
    }

    /// Get: the key's material, whatever its state. A server may hand out a revoked key (PyKMIP
    /// does); use [`Self::get_active_key`] to use a key.
    ///
    /// # Errors
    /// See [`Error`]; [`Error::KeyNotFound`] when the server has no such object.
    pub async fn get(&mut self, id: &str) -> Result<SymmetricKey, Error> {
        let mut payload = self
            .call(Operation::Get, message::identifier_payload(id))
            .await
            .map_err(|e| not_found(e, id))?;
        let key = message::get_symmetric_key_response(&payload);
        message::zeroize_item(&mut payload);
        self.read(key)
    }

    /// The key, only if it is Active: checks the State first, then gets the material.
    ///
    /// # Errors
    /// [`Error::KeyRevoked`] for a revoked or destroyed key, [`Error::KeyNotActive`] for one not
    /// yet activated, [`Error::KeyNotFound`], or any other [`Error`].
    pub async fn get_active_key(&mut self, id: &str) -> Result<SymmetricKey, Error> {
        check_active(id, self.state(id).await?)?;
        let key = self.get(id).await?;
        if key.id != id {
            return Err(Error::Protocol {
                endpoint: self.endpoint.to_string(),
                detail: format!("asked for key {id}, got {}", key.id),
            });
        }
        Ok(key)
    }

    /// Encrypt with a key held by the server.
    ///
    /// # Errors
    /// See [`Error`].
    pub async fn encrypt(&mut self, id: &str, input: &CipherInput<'_>) -> Result<Encrypted, Error> {
        self.check_authenticated(input)?;
        let payload = self
            .call(Operation::Encrypt, message::cipher_payload(id, input))
            .await
            .map_err(|e| not_found(e, id))?;
        self.read(message::encrypt_response(&payload))
    }

    /// Decrypt with a key held by the server; returns the plaintext.
    ///
    /// # Errors
    /// See [`Error`].
    pub async fn decrypt(
        &mut self,
        id: &str,
        input: &CipherInput<'_>,
    ) -> Result<Zeroizing<Vec<u8>>, Error> {
        self.check_authenticated(input)?;
        let mut payload = self
            .call(Operation::Decrypt, message::cipher_payload(id, input))
            .await
            .map_err(|e| not_found(e, id))?;
        let plain = message::decrypt_response(&payload);
        message::zeroize_item(&mut payload);
        self.read(plain)
    }

    /// Additional authenticated data and the tag exist from KMIP 1.4 on: a 1.2 server would
    /// ignore them (PyKMIP does) and GCM would fail or, worse, skip the AAD.
    fn check_authenticated(&self, input: &CipherInput<'_>) -> Result<(), Error> {
        if self.version < ProtocolVersion::V1_4 && (input.aad.is_some() || input.tag.is_some()) {
            return Err(Error::Config(format!(
                "authenticated encryption data (AAD, tag) needs KMIP 1.4; this client speaks {}",
                self.version
            )));
        }
        Ok(())
    }

    async fn identified(
        &mut self,
        operation: Operation,
        id: &str,
        payload: Vec<Item>,
    ) -> Result<(), Error> {
        let payload = self
            .call(operation, payload)
            .await
            .map_err(|e| not_found(e, id))?;
        let answered = self.read(message::identifier_response(&payload))?;
        if answered != id {
            return Err(Error::Protocol {
                endpoint: self.endpoint.to_string(),
                detail: format!("{operation:?} of {id} answered for {answered}"),
            });
        }
        Ok(())
    }

    fn read<T>(&self, result: Result<T, Violation>) -> Result<T, Error> {
        result.map_err(|Violation(detail)| Error::Protocol {
            endpoint: self.endpoint.to_string(),
            detail,
        })
    }

    /// Sends one request and returns the response payload of a successful answer.
    async fn call(&mut self, operation: Operation, payload: Vec<Item>) -> Result<Item, Error> {
        let request =
            message::request(self.version, operation, payload).encode(self.max_message_len);
        // The request may hold key material or plaintext (Encrypt): zero it once sent.
        let request = Zeroizing::new(request?);
        let timeout = self.timeout;
        let reply = tokio::time::timeout(timeout, self.exchange(&request))
            .await
            .map_err(|_| Error::Timeout {
                endpoint: self.endpoint.to_string(),
                seconds: timeout.as_secs_f64(),
            })??;
        let response = self.read(message::response(reply, operation))?;
        if response.status != ResultStatus::Success {
            return Err(Error::Refused {
                operation,
                status: response.status,
                reason: response.reason,
                message: response.message,
            });
        }
        response.payload.ok_or_else(|| Error::Protocol {
            endpoint: self.endpoint.to_string(),
            detail: format!("a successful {operation:?} without a Response Payload"),
        })
    }

    async fn exchange(&mut self, request: &[u8]) -> Result<Item, Error> {
        let io = |endpoint: &Endpoint, source| Error::Io {
            endpoint: endpoint.to_string(),
            source,
        };
        self.stream
            .write_all(request)
            .await
            .map_err(|e| io(&self.endpoint, e))?;
        self.stream
            .flush()
            .await
            .map_err(|e| io(&self.endpoint, e))?;
        let mut header = [0u8; HEADER_LEN];
        self.stream
            .read_exact(&mut header)
            .await
            .map_err(|e| io(&self.endpoint, e))?;
        let malformed = |endpoint: &Endpoint, source| Error::Malformed {
            endpoint: endpoint.to_string(),
            source,
        };
        let total = ttlv::item_len(&header, self.max_message_len)
            .map_err(|e| malformed(&self.endpoint, e))?;
        let mut message = Zeroizing::new(vec![0u8; total]);
        let (head, body) = message.split_at_mut(HEADER_LEN.min(total));
        head.copy_from_slice(header.get(..head.len()).unwrap_or_default());
        self.stream
            .read_exact(body)
            .await
            .map_err(|e| io(&self.endpoint, e))?;
        ttlv::decode_with_limits(
            &message,
            Limits {
                max_len: self.max_message_len,
                ..Limits::default()
            },
        )
        .map_err(|e| malformed(&self.endpoint, e))
    }
}

/// A refusal with reason Item Not Found, for an operation on `id`, becomes [`Error::KeyNotFound`].
fn not_found(error: Error, id: &str) -> Error {
    match error {
        Error::Refused {
            reason: Some(ResultReason::ItemNotFound),
            ..
        } => Error::KeyNotFound { id: id.to_owned() },
        other => other,
    }
}

/// The state check of the key provider: only an Active key may be used.
///
/// # Errors
/// [`Error::KeyRevoked`] for Deactivated, Compromised, Destroyed and Destroyed Compromised;
/// [`Error::KeyNotActive`] for Pre-Active and unknown states.
pub fn check_active(id: &str, state: State) -> Result<(), Error> {
    match state {
        State::Active => Ok(()),
        State::Deactivated
        | State::Compromised
        | State::Destroyed
        | State::DestroyedCompromised => Err(Error::KeyRevoked {
            id: id.to_owned(),
            state,
        }),
        State::PreActive | State::Other(_) => Err(Error::KeyNotActive {
            id: id.to_owned(),
            state,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_active_keys_pass_the_state_check() {
        assert!(check_active("1", State::Active).is_ok());
        for state in [
            State::Deactivated,
            State::Compromised,
            State::Destroyed,
            State::DestroyedCompromised,
        ] {
            assert!(matches!(
                check_active("1", state),
                Err(Error::KeyRevoked { .. })
            ));
        }
        assert!(matches!(
            check_active("1", State::PreActive),
            Err(Error::KeyNotActive { .. })
        ));
        assert!(matches!(
            check_active("1", State::Other(9)),
            Err(Error::KeyNotActive { .. })
        ));
    }

    #[test]
    fn ipv6_endpoints_display_in_brackets() {
        assert_eq!(Endpoint::new("::1", 5696).to_string(), "[::1]:5696");
        assert_eq!(
            Endpoint::new("kms.example", 5696).to_string(),
            "kms.example:5696"
        );
    }
}
