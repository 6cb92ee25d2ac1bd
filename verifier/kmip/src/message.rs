//! KMIP messages and the payloads of the operations this client speaks, built as and read from
//! TTLV items. No I/O: [`crate::client`] moves the bytes.
//!
//! Every request is one Request Message with one batch item; every response must be one
//! Response Message whose one batch item answers the same operation.

use crate::spec::{
    BlockCipherMode, CryptographicAlgorithm, KeyFormatType, NameType, ObjectType, Operation,
    PaddingMethod, QueryFunction, ResultReason, ResultStatus, RevocationReasonCode, State,
    attribute, tag,
};
use crate::ttlv::{Item, Tag, Value};
use std::fmt;
use zeroize::{Zeroize, Zeroizing};

/// A KMIP protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProtocolVersion {
    pub major: i32,
    pub minor: i32,
}

impl ProtocolVersion {
    pub const V1_2: Self = Self { major: 1, minor: 2 };
    pub const V1_4: Self = Self { major: 1, minor: 4 };

    fn to_item(self) -> Item {
        Item::structure(
            tag::PROTOCOL_VERSION,
            vec![
                Item::new(tag::PROTOCOL_VERSION_MAJOR, Value::Integer(self.major)),
                Item::new(tag::PROTOCOL_VERSION_MINOR, Value::Integer(self.minor)),
            ],
        )
    }

    fn from_item(item: &Item) -> Result<Self, Violation> {
        Ok(Self {
            major: integer(item, tag::PROTOCOL_VERSION_MAJOR)?,
            minor: integer(item, tag::PROTOCOL_VERSION_MINOR)?,
        })
    }
}

impl fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// A well-formed TTLV message that breaks KMIP: what was expected and not found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation(pub String);

fn missing(parent: &Item, tag: Tag, what: &str) -> Violation {
    Violation(format!(
        "{what} ({tag}) missing or of the wrong type in {}",
        parent.tag
    ))
}

fn field(parent: &Item, tag: Tag) -> Result<&Value, Violation> {
    parent
        .child(tag)
        .map(|i| &i.value)
        .ok_or_else(|| missing(parent, tag, "field"))
}

fn integer(parent: &Item, tag: Tag) -> Result<i32, Violation> {
    match field(parent, tag)? {
        Value::Integer(v) => Ok(*v),
        _ => Err(missing(parent, tag, "integer")),
    }
}

fn enumeration(parent: &Item, tag: Tag) -> Result<u32, Violation> {
    match field(parent, tag)? {
        Value::Enumeration(v) => Ok(*v),
        _ => Err(missing(parent, tag, "enumeration")),
    }
}

fn text(parent: &Item, tag: Tag) -> Result<String, Violation> {
    match field(parent, tag)? {
        Value::TextString(v) => Ok(v.clone()),
        _ => Err(missing(parent, tag, "text string")),
    }
}

fn bytes(parent: &Item, tag: Tag) -> Result<Vec<u8>, Violation> {
    match field(parent, tag)? {
        Value::ByteString(v) => Ok(v.clone()),
        _ => Err(missing(parent, tag, "byte string")),
    }
}

fn optional_bytes(parent: &Item, tag: Tag) -> Result<Option<Vec<u8>>, Violation> {
    if parent.child(tag).is_none() {
        return Ok(None);
    }
    bytes(parent, tag).map(Some)
}

fn structure(parent: &Item, tag: Tag) -> Result<&Item, Violation> {
    parent
        .child(tag)
        .filter(|i| i.items().is_some())
        .ok_or_else(|| missing(parent, tag, "structure"))
}

fn unique_identifier(payload: &Item) -> Result<String, Violation> {
    text(payload, tag::UNIQUE_IDENTIFIER)
}

fn uid_item(id: &str) -> Item {
    Item::new(tag::UNIQUE_IDENTIFIER, Value::TextString(id.to_owned()))
}

/// Overwrites every byte and text string in `item` with zeros: for responses that carried key
/// material or plaintext, before they are dropped.
pub fn zeroize_item(item: &mut Item) {
    match &mut item.value {
        Value::Structure(items) => items.iter_mut().for_each(zeroize_item),
        Value::ByteString(b) | Value::BigInteger(b) => b.zeroize(),
        _ => {}
    }
}

/// A Request Message with one batch item.
#[must_use]
pub fn request(version: ProtocolVersion, operation: Operation, payload: Vec<Item>) -> Item {
    Item::structure(
        tag::REQUEST_MESSAGE,
        vec![
            Item::structure(
                tag::REQUEST_HEADER,
                vec![
                    version.to_item(),
                    Item::new(tag::BATCH_COUNT, Value::Integer(1)),
                ],
            ),
            Item::structure(
                tag::BATCH_ITEM,
                vec![
                    Item::new(tag::OPERATION, Value::Enumeration(operation.value())),
                    Item::structure(tag::REQUEST_PAYLOAD, payload),
                ],
            ),
        ],
    )
}

/// The one batch item of a Response Message.
#[derive(Debug)]
pub struct Response {
    pub status: ResultStatus,
    pub reason: Option<ResultReason>,
    pub message: Option<String>,
    /// The Response Payload, on success.
    pub payload: Option<Item>,
}

/// Reads a Response Message answering `operation`.
///
/// # Errors
/// A [`Violation`] when it is not a Response Message, holds other than one batch item, or
/// answers another operation.
pub fn response(mut message: Item, operation: Operation) -> Result<Response, Violation> {
    if message.tag != tag::RESPONSE_MESSAGE || message.items().is_none() {
        return Err(Violation(format!(
            "expected a Response Message, got {}",
            message.tag
        )));
    }
    structure(&message, tag::RESPONSE_HEADER)?;
    let count = message.children(tag::BATCH_ITEM).count();
    if count != 1 {
        return Err(Violation(format!(
            "expected one batch item in the response, got {count}"
        )));
    }
    let Value::Structure(items) = &mut message.value else {
        return Err(Violation("Response Message is not a structure".into()));
    };
    let Some(position) = items.iter().position(|i| i.tag == tag::BATCH_ITEM) else {
        return Err(Violation("no batch item".into()));
    };
    let mut batch = items.swap_remove(position);
    if batch.items().is_none() {
        return Err(Violation("the batch item is not a structure".into()));
    }
    if batch.child(tag::OPERATION).is_some() {
        let answered = Operation::from_value(enumeration(&batch, tag::OPERATION)?);
        if answered != operation {
            return Err(Violation(format!(
                "asked for {operation:?}, the response answers {answered:?}"
            )));
        }
    }
    let status = ResultStatus::from_value(enumeration(&batch, tag::RESULT_STATUS)?);
    let reason = match batch.child(tag::RESULT_REASON) {
        Some(_) => Some(ResultReason::from_value(enumeration(
            &batch,
            tag::RESULT_REASON,
        )?)),
        None => None,
    };
    let message = match batch.child(tag::RESULT_MESSAGE) {
        Some(_) => Some(text(&batch, tag::RESULT_MESSAGE)?),
        None => None,
    };
    let payload = match &mut batch.value {
        Value::Structure(items) => items
            .iter()
            .position(|i| i.tag == tag::RESPONSE_PAYLOAD)
            .map(|p| items.swap_remove(p)),
        _ => None,
    };
    if let Some(p) = &payload
        && p.items().is_none()
    {
        return Err(Violation("the Response Payload is not a structure".into()));
    }
    Ok(Response {
        status,
        reason,
        message,
        payload,
    })
}

/// An attribute as KMIP 1.x carries it: a name, an optional index and a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    pub name: String,
    pub index: Option<i32>,
    /// The value, typed as the attribute's definition says (a structure for Name).
    pub value: Value,
}

impl Attribute {
    #[must_use]
    pub fn new(name: &str, value: Value) -> Self {
        Self {
            name: name.to_owned(),
            index: None,
            value,
        }
    }

    #[must_use]
    pub fn cryptographic_algorithm(algorithm: CryptographicAlgorithm) -> Self {
        Self::new(
            attribute::CRYPTOGRAPHIC_ALGORITHM,
            Value::Enumeration(algorithm.value()),
        )
    }

    /// The length in bits.
    #[must_use]
    pub fn cryptographic_length(bits: i32) -> Self {
        Self::new(attribute::CRYPTOGRAPHIC_LENGTH, Value::Integer(bits))
    }

    /// A mask of [`crate::spec::usage_mask`] bits.
    #[must_use]
    pub fn cryptographic_usage_mask(mask: i32) -> Self {
        Self::new(attribute::CRYPTOGRAPHIC_USAGE_MASK, Value::Integer(mask))
    }

    /// A Name of type Uninterpreted Text String.
    #[must_use]
    pub fn name(name: &str) -> Self {
        Self::new(
            attribute::NAME,
            Value::Structure(vec![
                Item::new(tag::NAME_VALUE, Value::TextString(name.to_owned())),
                Item::new(
                    tag::NAME_TYPE,
                    Value::Enumeration(NameType::UninterpretedTextString.value()),
                ),
            ]),
        )
    }

    #[must_use]
    pub fn object_type(object_type: ObjectType) -> Self {
        Self::new(
            attribute::OBJECT_TYPE,
            Value::Enumeration(object_type.value()),
        )
    }

    fn to_item(&self) -> Item {
        let mut items = vec![Item::new(
            tag::ATTRIBUTE_NAME,
            Value::TextString(self.name.clone()),
        )];
        if let Some(index) = self.index {
            items.push(Item::new(tag::ATTRIBUTE_INDEX, Value::Integer(index)));
        }
        items.push(Item::new(tag::ATTRIBUTE_VALUE, self.value.clone()));
        Item::structure(tag::ATTRIBUTE, items)
    }

    fn from_item(item: &Item) -> Result<Self, Violation> {
        let index = match item.child(tag::ATTRIBUTE_INDEX) {
            Some(_) => Some(integer(item, tag::ATTRIBUTE_INDEX)?),
            None => None,
        };
        Ok(Self {
            name: text(item, tag::ATTRIBUTE_NAME)?,
            index,
            value: field(item, tag::ATTRIBUTE_VALUE)?.clone(),
        })
    }

    /// The value as an enumeration.
    #[must_use]
    pub fn as_enumeration(&self) -> Option<u32> {
        match self.value {
            Value::Enumeration(v) => Some(v),
            _ => None,
        }
    }

    /// The value as an integer.
    #[must_use]
    pub fn as_integer(&self) -> Option<i32> {
        match self.value {
            Value::Integer(v) => Some(v),
            _ => None,
        }
    }
}

/// Finds the attribute `name` in a list; its value must be an enumeration.
#[must_use]
pub fn find_enumeration(attributes: &[Attribute], name: &str) -> Option<u32> {
    attributes
        .iter()
        .find(|a| a.name == name)
        .and_then(Attribute::as_enumeration)
}

/// Finds the attribute `name` in a list; its value must be an integer.
#[must_use]
pub fn find_integer(attributes: &[Attribute], name: &str) -> Option<i32> {
    attributes
        .iter()
        .find(|a| a.name == name)
        .and_then(Attribute::as_integer)
}

/// The template of a symmetric key to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SymmetricKeyTemplate {
    pub algorithm: CryptographicAlgorithm,
    /// In bits.
    pub length: i32,
    /// [`crate::spec::usage_mask`] bits.
    pub usage_mask: i32,
    /// A Name attribute, to find the key again with Locate.
    pub name: Option<String>,
}

impl SymmetricKeyTemplate {
    /// AES-256 for encryption and decryption.
    #[must_use]
    pub fn aes_256(name: Option<&str>) -> Self {
        Self {
            algorithm: CryptographicAlgorithm::Aes,
            length: 256,
            usage_mask: crate::spec::usage_mask::ENCRYPT | crate::spec::usage_mask::DECRYPT,
            name: name.map(str::to_owned),
        }
    }
}

/// Create payload for a symmetric key.
#[must_use]
pub fn create_payload(template: &SymmetricKeyTemplate) -> Vec<Item> {
    let mut attributes = vec![
        Attribute::cryptographic_algorithm(template.algorithm),
        Attribute::cryptographic_length(template.length),
        Attribute::cryptographic_usage_mask(template.usage_mask),
    ];
    if let Some(name) = &template.name {
        attributes.push(Attribute::name(name));
    }
    vec![
        Item::new(
            tag::OBJECT_TYPE,
            Value::Enumeration(ObjectType::SymmetricKey.value()),
        ),
        Item::structure(
            tag::TEMPLATE_ATTRIBUTE,
            attributes.iter().map(Attribute::to_item).collect(),
        ),
    ]
}

/// The identifier a Create, Activate, Revoke or Destroy response names.
///
/// # Errors
/// When the payload has no Unique Identifier.
pub fn identifier_response(payload: &Item) -> Result<String, Violation> {
    unique_identifier(payload)
}

/// A payload holding only a Unique Identifier (Activate, Destroy, Get).
#[must_use]
pub fn identifier_payload(id: &str) -> Vec<Item> {
    vec![uid_item(id)]
}

/// Revoke payload.
#[must_use]
pub fn revoke_payload(id: &str, code: RevocationReasonCode, message: Option<&str>) -> Vec<Item> {
    let mut reason = vec![Item::new(
        tag::REVOCATION_REASON_CODE,
        Value::Enumeration(code.value()),
    )];
    if let Some(message) = message {
        reason.push(Item::new(
            tag::REVOCATION_MESSAGE,
            Value::TextString(message.to_owned()),
        ));
    }
    vec![
        uid_item(id),
        Item::structure(tag::REVOCATION_REASON, reason),
    ]
}

/// DiscoverVersions payload: the versions the client speaks, preferred first.
#[must_use]
pub fn discover_versions_payload(versions: &[ProtocolVersion]) -> Vec<Item> {
    versions.iter().map(|v| v.to_item()).collect()
}

/// The versions a DiscoverVersions response lists, server's preference first.
///
/// # Errors
/// When a Protocol Version is malformed.
pub fn discover_versions_response(payload: &Item) -> Result<Vec<ProtocolVersion>, Violation> {
    payload
        .children(tag::PROTOCOL_VERSION)
        .map(ProtocolVersion::from_item)
        .collect()
}

/// Query payload.
#[must_use]
pub fn query_payload(functions: &[QueryFunction]) -> Vec<Item> {
    functions
        .iter()
        .map(|f| Item::new(tag::QUERY_FUNCTION, Value::Enumeration(f.value())))
        .collect()
}

/// What a Query response says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryResult {
    pub operations: Vec<Operation>,
    pub object_types: Vec<ObjectType>,
    pub vendor_identification: Option<String>,
}

/// Reads a Query response.
///
/// # Errors
/// When a listed operation or object type is not an enumeration.
pub fn query_response(payload: &Item) -> Result<QueryResult, Violation> {
    let enums = |tag: Tag| -> Result<Vec<u32>, Violation> {
        payload
            .children(tag)
            .map(|i| match i.value {
                Value::Enumeration(v) => Ok(v),
                _ => Err(missing(payload, tag, "enumeration")),
            })
            .collect()
    };
    let vendor_identification = match payload.child(tag::VENDOR_IDENTIFICATION) {
        Some(_) => Some(text(payload, tag::VENDOR_IDENTIFICATION)?),
        None => None,
    };
    Ok(QueryResult {
        operations: enums(tag::OPERATION)?
            .into_iter()
            .map(Operation::from_value)
            .collect(),
        object_types: enums(tag::OBJECT_TYPE)?
            .into_iter()
            .map(ObjectType::from_value)
            .collect(),
        vendor_identification,
    })
}

/// Locate payload: objects that match every attribute.
#[must_use]
pub fn locate_payload(attributes: &[Attribute], maximum_items: Option<i32>) -> Vec<Item> {
    let mut items = Vec::new();
    if let Some(max) = maximum_items {
        items.push(Item::new(tag::MAXIMUM_ITEMS, Value::Integer(max)));
    }
    items.extend(attributes.iter().map(Attribute::to_item));
    items
}

/// The identifiers a Locate response lists.
///
/// # Errors
/// When one is not a text string.
pub fn locate_response(payload: &Item) -> Result<Vec<String>, Violation> {
    payload
        .children(tag::UNIQUE_IDENTIFIER)
        .map(|i| match &i.value {
            Value::TextString(id) => Ok(id.clone()),
            _ => Err(missing(payload, tag::UNIQUE_IDENTIFIER, "text string")),
        })
        .collect()
}

/// GetAttributes payload; no names asks for every attribute.
#[must_use]
pub fn get_attributes_payload(id: &str, names: &[&str]) -> Vec<Item> {
    let mut items = vec![uid_item(id)];
    items.extend(
        names
            .iter()
            .map(|n| Item::new(tag::ATTRIBUTE_NAME, Value::TextString((*n).to_owned()))),
    );
    items
}

/// The attributes a GetAttributes response lists.
///
/// # Errors
/// When an Attribute is malformed.
pub fn get_attributes_response(payload: &Item) -> Result<Vec<Attribute>, Violation> {
    payload
        .children(tag::ATTRIBUTE)
        .map(Attribute::from_item)
        .collect()
}

/// The State in a list of attributes.
///
/// # Errors
/// When there is none.
pub fn state_of(attributes: &[Attribute]) -> Result<State, Violation> {
    find_enumeration(attributes, attribute::STATE)
        .map(State::from_value)
        .ok_or_else(|| Violation("no State attribute in the GetAttributes response".into()))
}

/// A symmetric key as Get returns it. `Debug` does not show the material, which is zeroed when
/// dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct SymmetricKey {
    pub id: String,
    pub algorithm: CryptographicAlgorithm,
    /// In bits.
    pub length: i32,
    pub material: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for SymmetricKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SymmetricKey")
            .field("id", &self.id)
            .field("algorithm", &self.algorithm)
            .field("length", &self.length)
            .field("material", &format_args!("{} bytes", self.material.len()))
            .finish()
    }
}

/// Reads a Get response that must hold an unwrapped symmetric key in Raw or Transparent
/// Symmetric Key format.
///
/// # Errors
/// Another object type, a wrapped key, another format, or a missing field.
pub fn get_symmetric_key_response(payload: &Item) -> Result<SymmetricKey, Violation> {
    let object_type = ObjectType::from_value(enumeration(payload, tag::OBJECT_TYPE)?);
    if object_type != ObjectType::SymmetricKey {
        return Err(Violation(format!(
            "expected a Symmetric Key, the key server returned {object_type:?}"
        )));
    }
    let id = unique_identifier(payload)?;
    let key = structure(payload, tag::SYMMETRIC_KEY)?;
    let block = structure(key, tag::KEY_BLOCK)?;
    if block.child(tag::KEY_WRAPPING_DATA).is_some() {
        return Err(Violation("the key server returned a wrapped key".into()));
    }
    let format = KeyFormatType::from_value(enumeration(block, tag::KEY_FORMAT_TYPE)?);
    let value = structure(block, tag::KEY_VALUE)?;
    let material = match format {
        KeyFormatType::Raw => bytes(value, tag::KEY_MATERIAL)?,
        KeyFormatType::TransparentSymmetricKey => bytes(structure(value, tag::KEY_MATERIAL)?, KEY)?,
        other => {
            return Err(Violation(format!(
                "unsupported key format {other:?} for a symmetric key"
            )));
        }
    };
    Ok(SymmetricKey {
        id,
        algorithm: CryptographicAlgorithm::from_value(enumeration(
            block,
            tag::CRYPTOGRAPHIC_ALGORITHM,
        )?),
        length: integer(block, tag::CRYPTOGRAPHIC_LENGTH)?,
        material: Zeroizing::new(material),
    })
}

/// The Key tag inside a Transparent Symmetric Key's Key Material.
const KEY: Tag = Tag::known(0x42_003F);

/// Cryptographic Parameters for Encrypt and Decrypt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CryptographicParameters {
    pub algorithm: Option<CryptographicAlgorithm>,
    pub block_cipher_mode: Option<BlockCipherMode>,
    pub padding_method: Option<PaddingMethod>,
    /// The authentication tag's length in bytes (GCM).
    pub tag_length: Option<i32>,
}

impl CryptographicParameters {
    /// AES-GCM with a 16-byte tag.
    #[must_use]
    pub const fn aes_gcm() -> Self {
        Self {
            algorithm: Some(CryptographicAlgorithm::Aes),
            block_cipher_mode: Some(BlockCipherMode::Gcm),
            padding_method: None,
            tag_length: Some(16),
        }
    }

    /// AES-CBC with PKCS#5 padding.
    #[must_use]
    pub const fn aes_cbc_pkcs5() -> Self {
        Self {
            algorithm: Some(CryptographicAlgorithm::Aes),
            block_cipher_mode: Some(BlockCipherMode::Cbc),
            padding_method: Some(PaddingMethod::Pkcs5),
            tag_length: None,
        }
    }

    fn to_item(self) -> Item {
        let mut items = Vec::new();
        if let Some(mode) = self.block_cipher_mode {
            items.push(Item::new(
                tag::BLOCK_CIPHER_MODE,
                Value::Enumeration(mode.value()),
            ));
        }
        if let Some(padding) = self.padding_method {
            items.push(Item::new(
                tag::PADDING_METHOD,
                Value::Enumeration(padding.value()),
            ));
        }
        if let Some(algorithm) = self.algorithm {
            items.push(Item::new(
                tag::CRYPTOGRAPHIC_ALGORITHM,
                Value::Enumeration(algorithm.value()),
            ));
        }
        if let Some(length) = self.tag_length {
            items.push(Item::new(tag::TAG_LENGTH, Value::Integer(length)));
        }
        Item::structure(tag::CRYPTOGRAPHIC_PARAMETERS, items)
    }
}

/// The inputs of Encrypt or Decrypt beyond the key.
#[derive(Debug, Clone, Copy)]
pub struct CipherInput<'a> {
    pub parameters: CryptographicParameters,
    pub data: &'a [u8],
    /// IV / counter / nonce; on Encrypt the server makes one when absent (and returns it).
    pub iv: Option<&'a [u8]>,
    /// Additional authenticated data (GCM; KMIP 1.4).
    pub aad: Option<&'a [u8]>,
    /// The authentication tag (Decrypt with GCM; KMIP 1.4).
    pub tag: Option<&'a [u8]>,
}

/// Encrypt or Decrypt payload.
#[must_use]
pub fn cipher_payload(id: &str, input: &CipherInput<'_>) -> Vec<Item> {
    let mut items = vec![uid_item(id), input.parameters.to_item()];
    items.push(Item::new(tag::DATA, Value::ByteString(input.data.to_vec())));
    if let Some(iv) = input.iv {
        items.push(Item::new(
            tag::IV_COUNTER_NONCE,
            Value::ByteString(iv.to_vec()),
        ));
    }
    if let Some(aad) = input.aad {
        items.push(Item::new(
            tag::AUTHENTICATED_ENCRYPTION_ADDITIONAL_DATA,
            Value::ByteString(aad.to_vec()),
        ));
    }
    if let Some(t) = input.tag {
        items.push(Item::new(
            tag::AUTHENTICATED_ENCRYPTION_TAG,
            Value::ByteString(t.to_vec()),
        ));
    }
    items
}

/// What Encrypt returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encrypted {
    pub data: Vec<u8>,
    /// The IV the server made, when the request had none.
    pub iv: Option<Vec<u8>>,
    /// The authentication tag (GCM).
    pub tag: Option<Vec<u8>>,
}

/// Reads an Encrypt response.
///
/// # Errors
/// When Data is missing.
pub fn encrypt_response(payload: &Item) -> Result<Encrypted, Violation> {
    Ok(Encrypted {
        data: bytes(payload, tag::DATA)?,
        iv: optional_bytes(payload, tag::IV_COUNTER_NONCE)?,
        tag: optional_bytes(payload, tag::AUTHENTICATED_ENCRYPTION_TAG)?,
    })
}

/// Reads a Decrypt response: the plaintext.
///
/// # Errors
/// When Data is missing.
pub fn decrypt_response(payload: &Item) -> Result<Zeroizing<Vec<u8>>, Violation> {
    bytes(payload, tag::DATA).map(Zeroizing::new)
}
