//! Standard Webhooks signatures (spec v1, symmetric `v1` scheme).
//!
//! The signed content is `{webhook-id}.{webhook-timestamp}.{body}` over the exact bytes sent, the
//! MAC is HMAC-SHA256 keyed with the secret's bytes, and the header value is `v1,` followed by the
//! standard (padded) base64 of the MAC. With several secrets (key rotation) the header carries one
//! `v1,<sig>` per secret, separated by single spaces; a receiver accepts the message when any of
//! them verifies with a key it knows.
//!
//! Secrets are written the way Standard Webhooks shows them, `whsec_` followed by the base64 of
//! the key bytes; anything without that prefix is used as raw bytes (its UTF-8 encoding).

use std::fmt;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The prefix of a Standard Webhooks symmetric secret: `whsec_<base64 of the key>`.
pub const SECRET_PREFIX: &str = "whsec_";

/// Why a configured secret cannot be used as a signing key. Never contains the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// The secret (after any `whsec_` prefix) is empty.
    #[error("the secret is empty")]
    Empty,
    /// The text after `whsec_` is not valid standard base64.
    #[error("the text after `whsec_` is not valid base64")]
    InvalidBase64,
}

/// Turns a configured secret into key bytes: `whsec_<base64>` is base64-decoded (standard
/// alphabet, padding optional); any other text is used as its raw UTF-8 bytes.
pub fn decode_secret(s: &str) -> Result<Vec<u8>, SecretError> {
    let key = match s.strip_prefix(SECRET_PREFIX) {
        Some(encoded) => base64::engine::general_purpose::GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            base64::engine::GeneralPurposeConfig::new()
                .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
        )
        .decode(encoded.trim())
        .map_err(|_| SecretError::InvalidBase64)?,
        None => s.as_bytes().to_vec(),
    };
    if key.is_empty() {
        return Err(SecretError::Empty);
    }
    Ok(key)
}

/// One signature: `v1,<base64 HMAC-SHA256(secret, "{id}.{timestamp}.{body}")>`.
pub fn sign(secret: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail here.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(tag)
    )
}

/// The decoded key bytes of one secret; prints as `***`.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct SigningKey(Vec<u8>);

impl SigningKey {
    /// Wraps decoded key bytes.
    pub(crate) fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// The key bytes, for signing.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(***)")
    }
}

/// The `webhook-signature` header value: one `v1,<sig>` per key, space-separated, in key order.
pub(crate) fn signature_header(
    keys: &[SigningKey],
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    keys.iter()
        .map(|key| sign(key.bytes(), id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether `header` (a `webhook-signature` value) holds a valid `v1` signature by `secret` for
/// this message, compared in constant time. What a receiver does; used by tests and redrive
/// tooling.
pub fn verify(secret: &[u8], id: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
    let expected = sign(secret, id, timestamp, body);
    let expected = expected.as_bytes();
    header.split(' ').any(|candidate| {
        let candidate = candidate.as_bytes();
        candidate.len() == expected.len()
            && candidate
                .iter()
                .zip(expected)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The published vector of the Standard Webhooks reference libraries:
    /// `standard-webhooks/standard-webhooks`, `libraries/go/webhook_test.go`, `TestWebhookSign`
    /// (commit 449485caf9c0303530c19524fbe4096680aafcf1).
    #[test]
    fn standard_webhooks_go_library_vector() {
        let key = decode_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("valid secret");
        let signature = sign(
            &key,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    /// The second published vector: `standard-webhooks/standard-webhooks`,
    /// `libraries/rust/src/lib.rs`, `test_sign` (commit 1e88c9ce08bb2c605fea9a2a540b4a91d31c7a62).
    #[test]
    fn standard_webhooks_rust_library_vector() {
        let key = decode_secret("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").expect("valid secret");
        let signature = sign(
            &key,
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            1649367553,
            br#"{"email":"test@example.com","username":"test_user"}"#,
        );
        assert_eq!(signature, "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=");
    }

    #[test]
    fn raw_secrets_are_their_bytes_and_whsec_is_base64() {
        assert_eq!(decode_secret("hunter2").unwrap(), b"hunter2".to_vec());
        assert_eq!(decode_secret("whsec_aGk=").unwrap(), b"hi".to_vec());
        assert_eq!(decode_secret("whsec_aGk").unwrap(), b"hi".to_vec());
        assert_eq!(decode_secret("whsec_!!!"), Err(SecretError::InvalidBase64));
        assert_eq!(decode_secret("whsec_"), Err(SecretError::Empty));
        assert_eq!(decode_secret(""), Err(SecretError::Empty));
        // The error text never carries the secret.
        let err = decode_secret("whsec_sec!ret").unwrap_err().to_string();
        assert!(!err.contains("sec!ret"), "{err}");
    }

    #[test]
    fn rotation_header_carries_one_signature_per_key_and_each_verifies() {
        let old = SigningKey::new(b"old-key-0123456789abcdef".to_vec());
        let new = SigningKey::new(b"new-key-0123456789abcdef".to_vec());
        let header = signature_header(&[old.clone(), new.clone()], "id1", 42, b"{}");
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert!(parts.iter().all(|p| p.starts_with("v1,")));
        assert!(verify(old.bytes(), "id1", 42, b"{}", &header));
        assert!(verify(new.bytes(), "id1", 42, b"{}", &header));
        assert!(!verify(b"other", "id1", 42, b"{}", &header));
        assert!(!verify(old.bytes(), "id1", 43, b"{}", &header));
        assert!(!verify(old.bytes(), "id2", 42, b"{}", &header));
        assert!(!verify(old.bytes(), "id1", 42, b"{ }", &header));
        assert_eq!(format!("{old:?}"), "SigningKey(***)");
    }
}
