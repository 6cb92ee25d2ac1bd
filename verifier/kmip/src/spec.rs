//! The numbers of the KMIP 1.2 / 1.4 specification this client uses: tags (section 9.1.3.1)
//! and enumerations (section 9.1.3.2). Values cross-checked against PyKMIP 0.11's
//! `kmip.core.enums`.

/// Tags (KMIP 1.4, section 9.1.3.1).
pub mod tag {
    use crate::ttlv::Tag;

    macro_rules! tags {
        ($($name:ident = $value:expr,)*) => {
            $(pub const $name: Tag = Tag::known($value);)*
            #[cfg(test)]
            pub(crate) const ALL: &[u32] = &[$($value,)*];
        };
    }

    tags! {
        ATTRIBUTE = 0x42_0008,
        ATTRIBUTE_INDEX = 0x42_0009,
        ATTRIBUTE_NAME = 0x42_000A,
        ATTRIBUTE_VALUE = 0x42_000B,
        BATCH_COUNT = 0x42_000D,
        BATCH_ITEM = 0x42_000F,
        BLOCK_CIPHER_MODE = 0x42_0011,
        COMPROMISE_OCCURRENCE_DATE = 0x42_0021,
        CRYPTOGRAPHIC_ALGORITHM = 0x42_0028,
        CRYPTOGRAPHIC_LENGTH = 0x42_002A,
        CRYPTOGRAPHIC_PARAMETERS = 0x42_002B,
        CRYPTOGRAPHIC_USAGE_MASK = 0x42_002C,
        HASHING_ALGORITHM = 0x42_0038,
        IV_COUNTER_NONCE = 0x42_003D,
        KEY_BLOCK = 0x42_0040,
        KEY_COMPRESSION_TYPE = 0x42_0041,
        KEY_FORMAT_TYPE = 0x42_0042,
        KEY_MATERIAL = 0x42_0043,
        KEY_VALUE = 0x42_0045,
        KEY_WRAPPING_DATA = 0x42_0046,
        MAXIMUM_ITEMS = 0x42_004F,
        MAXIMUM_RESPONSE_SIZE = 0x42_0050,
        NAME = 0x42_0053,
        NAME_TYPE = 0x42_0054,
        NAME_VALUE = 0x42_0055,
        OBJECT_TYPE = 0x42_0057,
        OPERATION = 0x42_005C,
        PADDING_METHOD = 0x42_005F,
        PROTOCOL_VERSION = 0x42_0069,
        PROTOCOL_VERSION_MAJOR = 0x42_006A,
        PROTOCOL_VERSION_MINOR = 0x42_006B,
        QUERY_FUNCTION = 0x42_0074,
        REQUEST_HEADER = 0x42_0077,
        REQUEST_MESSAGE = 0x42_0078,
        REQUEST_PAYLOAD = 0x42_0079,
        RESPONSE_HEADER = 0x42_007A,
        RESPONSE_MESSAGE = 0x42_007B,
        RESPONSE_PAYLOAD = 0x42_007C,
        RESULT_MESSAGE = 0x42_007D,
        RESULT_REASON = 0x42_007E,
        RESULT_STATUS = 0x42_007F,
        REVOCATION_MESSAGE = 0x42_0080,
        REVOCATION_REASON = 0x42_0081,
        REVOCATION_REASON_CODE = 0x42_0082,
        SERVER_INFORMATION = 0x42_0088,
        STATE = 0x42_008D,
        SYMMETRIC_KEY = 0x42_008F,
        TEMPLATE_ATTRIBUTE = 0x42_0091,
        TIME_STAMP = 0x42_0092,
        UNIQUE_BATCH_ITEM_ID = 0x42_0093,
        UNIQUE_IDENTIFIER = 0x42_0094,
        VENDOR_IDENTIFICATION = 0x42_009D,
        DATA = 0x42_00C2,
        TAG_LENGTH = 0x42_00CE,
        LOCATED_ITEMS = 0x42_00D5,
        AUTHENTICATED_ENCRYPTION_ADDITIONAL_DATA = 0x42_00FE,
        AUTHENTICATED_ENCRYPTION_TAG = 0x42_00FF,
    }
}

/// Defines a KMIP enumeration: named variants and `Other(u32)` for values this crate does not
/// name (a server may answer with any). Compare with the named variants, never `Other(n)` of a
/// named value: [`from_value`] never produces one.
macro_rules! kmip_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $value:expr,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($variant,)*
            /// A value this crate has no name for.
            Other(u32),
        }

        impl $name {
            /// The value on the wire.
            #[must_use]
            pub const fn value(self) -> u32 {
                match self {
                    $(Self::$variant => $value,)*
                    Self::Other(value) => value,
                }
            }

            /// The variant for a value on the wire.
            #[must_use]
            pub const fn from_value(value: u32) -> Self {
                match value {
                    $($value => Self::$variant,)*
                    other => Self::Other(other),
                }
            }
        }
    };
}

kmip_enum! {
    /// Operation (9.1.3.2.27), the ones this client sends.
    Operation {
        Create = 0x01,
        Locate = 0x08,
        Get = 0x0A,
        GetAttributes = 0x0B,
        Activate = 0x12,
        Revoke = 0x13,
        Destroy = 0x14,
        Query = 0x18,
        DiscoverVersions = 0x1E,
        Encrypt = 0x1F,
        Decrypt = 0x20,
    }
}

kmip_enum! {
    /// Object Type (9.1.3.2.12).
    ObjectType {
        Certificate = 0x01,
        SymmetricKey = 0x02,
        PublicKey = 0x03,
        PrivateKey = 0x04,
        SplitKey = 0x05,
        Template = 0x06,
        SecretData = 0x07,
        OpaqueObject = 0x08,
        PgpKey = 0x09,
    }
}

kmip_enum! {
    /// State (9.1.3.2.17): the life cycle of a managed object.
    State {
        PreActive = 0x01,
        Active = 0x02,
        Deactivated = 0x03,
        Compromised = 0x04,
        Destroyed = 0x05,
        DestroyedCompromised = 0x06,
    }
}

kmip_enum! {
    /// Cryptographic Algorithm (9.1.3.2.13), the symmetric ones.
    CryptographicAlgorithm {
        Des = 0x01,
        TripleDes = 0x02,
        Aes = 0x03,
        Rsa = 0x04,
        HmacSha256 = 0x08,
    }
}

kmip_enum! {
    /// Block Cipher Mode (9.1.3.2.14).
    BlockCipherMode {
        Cbc = 0x01,
        Ecb = 0x02,
        Cfb = 0x04,
        Ofb = 0x05,
        Ctr = 0x06,
        Gcm = 0x09,
        NistKeyWrap = 0x0D,
    }
}

kmip_enum! {
    /// Padding Method (9.1.3.2.15).
    PaddingMethod {
        None = 0x01,
        Pkcs5 = 0x03,
        AnsiX923 = 0x06,
    }
}

kmip_enum! {
    /// Key Format Type (9.1.3.2.3).
    KeyFormatType {
        Raw = 0x01,
        Opaque = 0x02,
        TransparentSymmetricKey = 0x07,
    }
}

kmip_enum! {
    /// Revocation Reason Code (9.1.3.2.19).
    RevocationReasonCode {
        Unspecified = 0x01,
        KeyCompromise = 0x02,
        CaCompromise = 0x03,
        AffiliationChanged = 0x04,
        Superseded = 0x05,
        CessationOfOperation = 0x06,
        PrivilegeWithdrawn = 0x07,
    }
}

kmip_enum! {
    /// Query Function (9.1.3.2.24).
    QueryFunction {
        QueryOperations = 0x01,
        QueryObjects = 0x02,
        QueryServerInformation = 0x03,
    }
}

kmip_enum! {
    /// Name Type (9.1.3.2.11).
    NameType {
        UninterpretedTextString = 0x01,
        Uri = 0x02,
    }
}

kmip_enum! {
    /// Result Status (9.1.3.2.28).
    ResultStatus {
        Success = 0x00,
        OperationFailed = 0x01,
        OperationPending = 0x02,
        OperationUndone = 0x03,
    }
}

kmip_enum! {
    /// Result Reason (9.1.3.2.29).
    ResultReason {
        ItemNotFound = 0x01,
        ResponseTooLarge = 0x02,
        AuthenticationNotSuccessful = 0x03,
        InvalidMessage = 0x04,
        OperationNotSupported = 0x05,
        MissingData = 0x06,
        InvalidField = 0x07,
        FeatureNotSupported = 0x08,
        OperationCanceledByRequester = 0x09,
        CryptographicFailure = 0x0A,
        IllegalOperation = 0x0B,
        PermissionDenied = 0x0C,
        ObjectArchived = 0x0D,
        IndexOutOfBounds = 0x0E,
        ApplicationNamespaceNotSupported = 0x0F,
        KeyFormatTypeNotSupported = 0x10,
        KeyCompressionTypeNotSupported = 0x11,
        EncodingOptionError = 0x12,
        KeyValueNotPresent = 0x13,
        AttestationRequired = 0x14,
        AttestationFailed = 0x15,
        Sensitive = 0x16,
        NotExtractable = 0x17,
        ObjectAlreadyExists = 0x18,
        GeneralFailure = 0x100,
    }
}

/// Cryptographic Usage Mask bits (9.1.3.3.1).
pub mod usage_mask {
    pub const SIGN: i32 = 0x0000_0001;
    pub const VERIFY: i32 = 0x0000_0002;
    pub const ENCRYPT: i32 = 0x0000_0004;
    pub const DECRYPT: i32 = 0x0000_0008;
    pub const WRAP_KEY: i32 = 0x0000_0010;
    pub const UNWRAP_KEY: i32 = 0x0000_0020;
    pub const EXPORT: i32 = 0x0000_0040;
}

/// Attribute names (section 3) as KMIP 1.x spells them in Attribute Name.
pub mod attribute {
    pub const CRYPTOGRAPHIC_ALGORITHM: &str = "Cryptographic Algorithm";
    pub const CRYPTOGRAPHIC_LENGTH: &str = "Cryptographic Length";
    pub const CRYPTOGRAPHIC_USAGE_MASK: &str = "Cryptographic Usage Mask";
    pub const NAME: &str = "Name";
    pub const OBJECT_TYPE: &str = "Object Type";
    pub const STATE: &str = "State";
    pub const UNIQUE_IDENTIFIER: &str = "Unique Identifier";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tag_fits_in_three_bytes_and_is_unique() {
        let mut seen = std::collections::BTreeSet::new();
        for value in tag::ALL {
            assert!(crate::ttlv::Tag::new(*value).is_some(), "{value:#x}");
            assert!(seen.insert(*value), "duplicate {value:#x}");
        }
    }

    #[test]
    fn enums_round_trip_and_keep_unknown_values() {
        assert_eq!(State::from_value(5), State::Destroyed);
        assert_eq!(State::Destroyed.value(), 5);
        assert_eq!(State::from_value(99), State::Other(99));
        assert_eq!(
            ResultReason::from_value(0x100),
            ResultReason::GeneralFailure
        );
        assert_eq!(Operation::from_value(0x1E), Operation::DiscoverVersions);
    }
}
