//! Sealing shared cache entries: AES-256-GCM (aws-lc-rs) under a data key, the data key wrapped
//! by a key-encryption key (envelope encryption).
//!
//! # Layouts
//!
//! A sealed entry is `"idbc" | 0x01 | len(data key id) | data key id | nonce (12) | ciphertext
//! and tag`. Its associated data is the header (everything before the nonce) followed by the
//! length-prefixed (`u32`, big-endian) purpose (`credential` or `error`), namespace, route and
//! cache key. So an entry opens only under the data key it names, for the purpose, namespace,
//! route and key it was written for: a tampered byte, another key's ciphertext copied over, or a
//! data key from another key-encryption key all fail the tag check, and the reader refetches.
//!
//! A wrapped data key is `"idbk" | 0x01 | len(KEK id) | KEK id | nonce (12) | ciphertext and
//! tag`, with the header, the namespace and the data key's id as associated data.
//!
//! # Keys
//!
//! [`KeyEncryptionKey`] is the seam for a key service (wrap and unwrap, like a KMS's `Encrypt`
//! and `Decrypt`); [`LocalKek`] is the one implementation: 32 bytes, base64 or hex, from a file
//! or an environment variable. Data keys are random, 32 bytes, held in [`Zeroizing`] memory and
//! printed by `Debug` as their id only.

use std::fmt;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;

use aws_lc_rs::aead::{AES_256_GCM, Aad, NONCE_LEN, Nonce, RandomizedNonceKey};
use base64::Engine as _;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Bytes in every key (AES-256).
pub const KEY_LEN: usize = 32;

const ENTRY_MAGIC: &[u8; 4] = b"idbc";
const WRAP_MAGIC: &[u8; 4] = b"idbk";
const VERSION: u8 = 1;
/// The longest key id in a header (ids are short hex strings; this bounds what a reader
/// accepts from the store).
const MAX_ID_LEN: usize = 64;

/// Why an entry or a key did not seal or open. Holds no secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The bytes are not a sealed entry or wrapped key of this version.
    #[error("not a sealed value of this version")]
    Malformed,
    /// The tag check failed: tampered, written for another route or key, or under another key.
    #[error("the sealed value does not open under this key for this route and key")]
    Rejected,
    /// The data key it names is unknown (expired from the store, or never published).
    #[error("data key {0:?} is unknown")]
    UnknownDataKey(String),
    /// A key could not be read or is not 32 bytes.
    #[error("{0}")]
    Key(String),
    /// The crypto library failed (randomness, key setup).
    #[error("the crypto library failed")]
    Crypto,
}

/// What an entry is bound to: its purpose and the namespace, route and cache key it is for.
#[derive(Debug, Clone, Copy)]
pub struct Binding<'a> {
    /// `credential` or `error`.
    pub purpose: &'a str,
    /// The store's namespace (its key prefix).
    pub namespace: &'a str,
    /// The route's name.
    pub route: &'a str,
    /// The cache key within the route (audience, scopes), as text.
    pub key: &'a str,
}

fn push_field(out: &mut Vec<u8>, field: &[u8]) {
    let len = u32::try_from(field.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(field);
}

impl Binding<'_> {
    fn aad(&self, header: &[u8]) -> Vec<u8> {
        let mut aad = header.to_vec();
        for field in [self.purpose, self.namespace, self.route, self.key] {
            push_field(&mut aad, field.as_bytes());
        }
        aad
    }
}

/// A data key: an id and 32 secret bytes. `Debug` prints the id only.
pub struct DataKey {
    id: String,
    key: RandomizedNonceKey,
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl DataKey {
    /// A data key from its bytes (which the caller zeroizes; aws-lc-rs keeps its own copy and
    /// clears it on drop).
    pub fn from_bytes(id: impl Into<String>, bytes: &[u8]) -> Result<Self, SealError> {
        let id = id.into();
        if bytes.len() != KEY_LEN || id.is_empty() || id.len() > MAX_ID_LEN {
            return Err(SealError::Key(format!(
                "a data key must be {KEY_LEN} bytes with a short id"
            )));
        }
        let key = RandomizedNonceKey::new(&AES_256_GCM, bytes).map_err(|_| SealError::Crypto)?;
        Ok(Self { id, key })
    }

    /// A fresh random data key, returned with its bytes (for wrapping).
    pub fn generate() -> Result<(Self, Zeroizing<[u8; KEY_LEN]>), SealError> {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        aws_lc_rs::rand::fill(&mut bytes[..]).map_err(|_| SealError::Crypto)?;
        let mut id = [0u8; 8];
        aws_lc_rs::rand::fill(&mut id).map_err(|_| SealError::Crypto)?;
        let key = Self::from_bytes(hex::encode(id), &bytes[..])?;
        Ok((key, bytes))
    }

    /// The key's id (not secret).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Seals `plaintext` for `binding`.
    pub fn seal(&self, binding: &Binding<'_>, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        let header = header(ENTRY_MAGIC, &self.id);
        seal_with(&self.key, &header, &binding.aad(&header), plaintext)
    }

    /// Opens an entry sealed for `binding` under this key.
    pub fn open(
        &self,
        binding: &Binding<'_>,
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let (id, header, rest) = parse_header(ENTRY_MAGIC, sealed)?;
        if id != self.id {
            return Err(SealError::Rejected);
        }
        open_with(&self.key, &binding.aad(header), rest)
    }
}

/// The data key id an entry names, to look the key up before opening it.
pub fn entry_key_id(sealed: &[u8]) -> Result<&str, SealError> {
    parse_header(ENTRY_MAGIC, sealed).map(|(id, _, _)| id)
}

fn header(magic: &[u8; 4], id: &str) -> Vec<u8> {
    let mut h = Vec::with_capacity(6 + id.len());
    h.extend_from_slice(magic);
    h.push(VERSION);
    h.push(u8::try_from(id.len()).unwrap_or(u8::MAX));
    h.extend_from_slice(id.as_bytes());
    h
}

/// Splits `bytes` into (id, header, nonce + ciphertext).
fn parse_header<'a>(
    magic: &[u8; 4],
    bytes: &'a [u8],
) -> Result<(&'a str, &'a [u8], &'a [u8]), SealError> {
    let rest = bytes.strip_prefix(&magic[..]).ok_or(SealError::Malformed)?;
    let (&version, rest) = rest.split_first().ok_or(SealError::Malformed)?;
    let (&len, rest) = rest.split_first().ok_or(SealError::Malformed)?;
    let len = usize::from(len);
    if version != VERSION || len == 0 || len > MAX_ID_LEN || rest.len() < len + NONCE_LEN {
        return Err(SealError::Malformed);
    }
    let id = std::str::from_utf8(&rest[..len]).map_err(|_| SealError::Malformed)?;
    let header_len = magic.len() + 2 + len;
    Ok((id, &bytes[..header_len], &rest[len..]))
}

fn seal_with(
    key: &RandomizedNonceKey,
    header: &[u8],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, SealError> {
    // Sealed in a zeroized buffer: the plaintext is a credential until the seal overwrites it.
    let mut buf = Zeroizing::new(Vec::with_capacity(plaintext.len() + 16));
    buf.extend_from_slice(plaintext);
    let nonce = key
        .seal_in_place_append_tag(Aad::from(aad), &mut *buf)
        .map_err(|_| SealError::Crypto)?;
    let mut out = Vec::with_capacity(header.len() + NONCE_LEN + buf.len());
    out.extend_from_slice(header);
    out.extend_from_slice(nonce.as_ref());
    out.extend_from_slice(&buf);
    Ok(out)
}

fn open_with(
    key: &RandomizedNonceKey,
    aad: &[u8],
    nonce_and_ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, SealError> {
    let (nonce, ciphertext) = nonce_and_ciphertext.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Malformed)?;
    let mut buf = Zeroizing::new(ciphertext.to_vec());
    let len = key
        .open_in_place(nonce, Aad::from(aad), &mut buf[..])
        .map_err(|_| SealError::Rejected)?
        .len();
    buf.truncate(len);
    Ok(buf)
}

/// A boxed future, so [`KeyEncryptionKey`] stays dyn-compatible.
pub type KekFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, SealError>> + Send + 'a>>;

/// A key-encryption key: wraps and unwraps data keys, like a KMS's `Encrypt` and `Decrypt`.
/// `context` is associated data the unwrap must be given again.
pub trait KeyEncryptionKey: fmt::Debug + Send + Sync {
    /// The key's id, written beside every key it wraps.
    fn id(&self) -> &str;
    /// Wraps a data key's bytes.
    fn wrap<'a>(&'a self, data_key: &'a [u8], context: &'a [u8]) -> KekFuture<'a, Vec<u8>>;
    /// Unwraps what [`wrap`](Self::wrap) returned.
    fn unwrap<'a>(
        &'a self,
        wrapped: &'a [u8],
        context: &'a [u8],
    ) -> KekFuture<'a, Zeroizing<Vec<u8>>>;
}

/// A key-encryption key held in memory: 32 bytes read from a file or an environment variable.
/// Its id is derived from the key (`local-` and 16 hex digits of its SHA-256), so a reader with
/// another key knows at once that a wrapped key is not its own.
pub struct LocalKek {
    id: String,
    key: RandomizedNonceKey,
}

impl fmt::Debug for LocalKek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalKek")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl LocalKek {
    /// A key from its text: 32 bytes in standard base64 or hex, surrounding whitespace ignored.
    /// `origin` names where the text came from, for the error.
    pub fn from_text(text: &str, origin: &str) -> Result<Self, SealError> {
        let text = text.trim();
        let bytes = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .ok()
                .filter(|b| b.len() == KEY_LEN)
                .or_else(|| hex::decode(text).ok())
                .filter(|b| b.len() == KEY_LEN)
                .ok_or_else(|| {
                    SealError::Key(format!(
                        "{origin}: the key must be {KEY_LEN} bytes in base64 or hex"
                    ))
                })?,
        );
        Self::from_bytes(&bytes)
    }

    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SealError> {
        if bytes.len() != KEY_LEN {
            return Err(SealError::Key(format!("the key must be {KEY_LEN} bytes")));
        }
        let digest = Sha256::digest(bytes);
        let id = format!("local-{}", hex::encode(&digest[..8]));
        let key = RandomizedNonceKey::new(&AES_256_GCM, bytes).map_err(|_| SealError::Crypto)?;
        Ok(Self { id, key })
    }

    /// Reads the key from a file (which should be readable by its owner only).
    pub fn from_file(path: &Path) -> Result<Self, SealError> {
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
            SealError::Key(format!(
                "cannot read key file {}: {}",
                path.display(),
                e.kind()
            ))
        })?);
        Self::from_text(&text, &path.display().to_string())
    }
}

impl KeyEncryptionKey for LocalKek {
    fn id(&self) -> &str {
        &self.id
    }

    fn wrap<'a>(&'a self, data_key: &'a [u8], context: &'a [u8]) -> KekFuture<'a, Vec<u8>> {
        Box::pin(async move {
            let header = header(WRAP_MAGIC, &self.id);
            let mut aad = header.clone();
            push_field(&mut aad, context);
            seal_with(&self.key, &header, &aad, data_key)
        })
    }

    fn unwrap<'a>(
        &'a self,
        wrapped: &'a [u8],
        context: &'a [u8],
    ) -> KekFuture<'a, Zeroizing<Vec<u8>>> {
        Box::pin(async move {
            let (id, header, rest) = parse_header(WRAP_MAGIC, wrapped)?;
            if id != self.id {
                return Err(SealError::Rejected);
            }
            let mut aad = header.to_vec();
            push_field(&mut aad, context);
            open_with(&self.key, &aad, rest)
        })
    }
}

/// The context a data key is wrapped under: its namespace and id.
pub fn data_key_context(namespace: &str, id: &str) -> Vec<u8> {
    let mut c = Vec::new();
    push_field(&mut c, b"data-key");
    push_field(&mut c, namespace.as_bytes());
    push_field(&mut c, id.as_bytes());
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding<'a>(route: &'a str, key: &'a str) -> Binding<'a> {
        Binding {
            purpose: "credential",
            namespace: "ns",
            route,
            key,
        }
    }

    #[test]
    fn an_entry_opens_only_for_its_route_key_and_data_key() {
        let (dk, _) = DataKey::generate().unwrap();
        let sealed = dk.seal(&binding("r", "k"), b"secret").unwrap();
        assert_eq!(
            &dk.open(&binding("r", "k"), &sealed).unwrap()[..],
            b"secret"
        );
        assert_eq!(entry_key_id(&sealed).unwrap(), dk.id());
        for other in [binding("r", "k2"), binding("r2", "k")] {
            assert_eq!(dk.open(&other, &sealed), Err(SealError::Rejected));
        }
        let error_purpose = Binding {
            purpose: "error",
            ..binding("r", "k")
        };
        assert_eq!(dk.open(&error_purpose, &sealed), Err(SealError::Rejected));
        for i in 0..sealed.len() {
            let mut t = sealed.clone();
            t[i] ^= 1;
            assert!(dk.open(&binding("r", "k"), &t).is_err(), "byte {i}");
        }
        let (other, _) = DataKey::generate().unwrap();
        assert!(other.open(&binding("r", "k"), &sealed).is_err());
        assert!(!String::from_utf8_lossy(&sealed).contains("secret"));
    }

    #[tokio::test]
    async fn data_keys_unwrap_only_under_their_kek_and_context() {
        let kek = LocalKek::from_text(&"ab".repeat(32), "test").unwrap();
        let other = LocalKek::from_text(
            &base64::engine::general_purpose::STANDARD.encode([7u8; 32]),
            "t",
        )
        .unwrap();
        let (_, bytes) = DataKey::generate().unwrap();
        let ctx = data_key_context("ns", "id1");
        let wrapped = kek.wrap(&bytes[..], &ctx).await.unwrap();
        assert_eq!(&kek.unwrap(&wrapped, &ctx).await.unwrap()[..], &bytes[..]);
        assert!(
            kek.unwrap(&wrapped, &data_key_context("ns", "id2"))
                .await
                .is_err()
        );
        assert!(other.unwrap(&wrapped, &ctx).await.is_err());
        assert!(LocalKek::from_text("short", "KEY").is_err());
        assert!(!format!("{kek:?}").contains("abab"));
        let (dk, _) = DataKey::generate().unwrap();
        assert!(format!("{dk:?}").contains(dk.id()));
    }
}
