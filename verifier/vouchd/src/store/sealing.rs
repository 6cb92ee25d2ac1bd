//! Secrets the store keeps sealed: AES-256-GCM under a key-encryption key that lives outside
//! the database (a file of mode 0600, or the environment), so the database, its WAL and their
//! backups do not hold them in clear. Today: the key servers' client private keys.
//!
//! A sealed value is `vouch-sealed-v1:<key id>:<hex of nonce ‖ ciphertext ‖ tag>`; the key id
//! (the first 16 hex digits of SHA-256 of the key) says which key sealed it, and the
//! associated data names the field and the row, so a sealed value cannot be moved to another.
//! A value without the prefix is one stored before sealing existed; it is read as it is and
//! sealed on the next start ([`super::sqlite::SqliteStore::reseal_secrets`]).
//!
//! Rotation: write a new key file, point `key_encryption_key_file` at it and
//! `previous_key_encryption_key_file` at the old one, and restart vouchd: every sealed value
//! is opened with either and sealed again under the new key. Then drop the previous key.

use std::path::Path;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use zeroize::Zeroizing;

use super::{StoreError, StoreResult};

/// The prefix of a sealed value.
const PREFIX: &str = "vouch-sealed-v1:";

/// A key-encryption key.
pub struct SealingKey {
    key: Zeroizing<[u8; 32]>,
    id: String,
}

impl std::fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealingKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

fn invalid(why: String) -> StoreError {
    StoreError::Backend(format!("key-encryption key: {why}"))
}

impl SealingKey {
    /// The key of these 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        let digest = crate::sha256(&bytes);
        let id = crate::hex(digest.get(..8).unwrap_or_default());
        Self {
            key: Zeroizing::new(bytes),
            id,
        }
    }

    /// The key from 64 hex digits (surrounding white space ignored).
    pub fn from_hex(text: &str) -> StoreResult<Self> {
        let bytes = Zeroizing::new(
            hex::decode(text.trim()).map_err(|_| invalid("not 64 hex digits".into()))?,
        );
        let key: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| invalid("not 32 bytes".into()))?;
        Ok(Self::from_bytes(key))
    }

    /// The key in the file at `path` (64 hex digits), made with a random key (mode 0600) when
    /// `create` and it does not exist.
    pub fn load(path: &Path, create: bool) -> StoreResult<Self> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        if !path.exists() && create {
            let key = Zeroizing::new(
                crate::random::<32>().map_err(|_| invalid("random generator".into()))?,
            );
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| invalid(format!("{}: {e}", path.display())))?;
            let text = Zeroizing::new(crate::hex(key.as_slice()));
            writeln!(file, "{}", text.as_str())
                .and_then(|()| file.sync_all())
                .map_err(|e| invalid(format!("{}: {e}", path.display())))?;
        }
        let text = Zeroizing::new(
            std::fs::read_to_string(path)
                .map_err(|e| invalid(format!("{}: {e}", path.display())))?,
        );
        Self::from_hex(&text).map_err(|e| invalid(format!("{}: {e}", path.display())))
    }

    /// Its id, as sealed values name it.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn aead(&self) -> StoreResult<LessSafeKey> {
        UnboundKey::new(&AES_256_GCM, self.key.as_slice())
            .map(LessSafeKey::new)
            .map_err(|_| invalid("unusable".into()))
    }

    /// Seals `plaintext`, bound to `label` (the field and the row).
    pub fn seal(&self, label: &str, plaintext: &str) -> StoreResult<String> {
        let nonce = crate::random::<NONCE_LEN>().map_err(|_| invalid("random generator".into()))?;
        let mut data = Zeroizing::new(plaintext.as_bytes().to_vec());
        self.aead()?
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(label.as_bytes()),
                &mut *data,
            )
            .map_err(|_| invalid("seal failed".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        Ok(format!("{PREFIX}{}:{}", self.id, crate::hex(&out)))
    }
}

/// `plain` sealed under the first (current) of `keys`; as is when none is configured.
pub fn seal_current(keys: &[SealingKey], label: &str, plain: &str) -> StoreResult<String> {
    match keys.first() {
        Some(key) => key.seal(label, plain),
        None => Ok(plain.to_owned()),
    }
}

/// Whether `stored` was sealed by `key`.
pub fn sealed_by(stored: &str, key: &SealingKey) -> bool {
    stored
        .strip_prefix(PREFIX)
        .and_then(|rest| rest.split_once(':'))
        .is_some_and(|(id, _)| id == key.id)
}

/// Opens a stored value with whichever of `keys` sealed it; a value without the prefix is
/// returned as it is (stored before sealing existed).
pub fn open(keys: &[SealingKey], label: &str, stored: &str) -> StoreResult<Zeroizing<String>> {
    let Some(rest) = stored.strip_prefix(PREFIX) else {
        return Ok(Zeroizing::new(stored.to_owned()));
    };
    let corrupt = |why: &str| StoreError::Backend(format!("sealed {label}: {why}"));
    let (id, body) = rest.split_once(':').ok_or_else(|| corrupt("malformed"))?;
    let key = keys.iter().find(|k| k.id == id).ok_or_else(|| {
        corrupt(&format!(
            "sealed with key {id}, which is not configured (key_encryption_key_file, previous_key_encryption_key_file or VOUCHD_KEY_ENCRYPTION_KEY)"
        ))
    })?;
    let mut bytes = Zeroizing::new(hex::decode(body).map_err(|_| corrupt("malformed"))?);
    if bytes.len() < NONCE_LEN {
        return Err(corrupt("malformed"));
    }
    let (nonce, data) = bytes.split_at_mut(NONCE_LEN);
    let nonce: [u8; NONCE_LEN] = (&*nonce).try_into().map_err(|_| corrupt("malformed"))?;
    let plain = key
        .aead()?
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(label.as_bytes()),
            data,
        )
        .map_err(|_| corrupt("does not open: changed, or moved from another row"))?;
    let text = std::str::from_utf8(plain).map_err(|_| corrupt("not UTF-8"))?;
    Ok(Zeroizing::new(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_with_their_key_and_label_only() {
        let (a, b) = (
            SealingKey::from_bytes([1; 32]),
            SealingKey::from_bytes([2; 32]),
        );
        let sealed = a
            .seal("client_key:kms", "-----BEGIN PRIVATE KEY-----")
            .unwrap();
        assert!(sealed.starts_with(PREFIX) && !sealed.contains("PRIVATE"));
        assert!(sealed_by(&sealed, &a) && !sealed_by(&sealed, &b));
        assert_eq!(
            open(&[b, a], "client_key:kms", &sealed).unwrap().as_str(),
            "-----BEGIN PRIVATE KEY-----"
        );
        let (a, b) = (
            SealingKey::from_bytes([1; 32]),
            SealingKey::from_bytes([2; 32]),
        );
        assert!(open(std::slice::from_ref(&b), "client_key:kms", &sealed).is_err());
        assert!(open(std::slice::from_ref(&a), "client_key:other", &sealed).is_err());
        let mut changed = sealed.clone();
        let last = changed.pop();
        changed.push(if last == Some('0') { '1' } else { '0' });
        assert!(open(std::slice::from_ref(&a), "client_key:kms", &changed).is_err());
        // A value from before sealing reads as it is.
        assert_eq!(
            open(std::slice::from_ref(&a), "x", "legacy")
                .unwrap()
                .as_str(),
            "legacy"
        );
    }

    #[test]
    fn a_key_file_is_made_once_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kek");
        assert!(SealingKey::load(&path, false).is_err());
        let made = SealingKey::load(&path, true).unwrap();
        let again = SealingKey::load(&path, true).unwrap();
        assert_eq!(made.id(), again.id());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
