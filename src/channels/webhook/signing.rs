//! Standard Webhooks signatures (<https://www.standardwebhooks.com/>): HMAC-SHA256 over
//! `{id}.{timestamp}.{body}`, sent as `v1,<base64>`; several space-separated during rotation.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use reqwest::header::HeaderMap;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::domain::SigningSecret;

pub const HEADER_ID: &str = "webhook-id";
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
pub const HEADER_SIGNATURE: &str = "webhook-signature";

/// How far a timestamp may be from the verifier's clock, either way (replay protection).
pub const TIMESTAMP_TOLERANCE_SECS: i64 = 5 * 60;

const VERSION_PREFIX: &str = "v1,";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("missing or non-ASCII `{0}` header")]
    MissingHeader(&'static str),
    #[error("`webhook-timestamp` is not unix seconds")]
    InvalidTimestamp,
    #[error("`webhook-timestamp` is more than 5 minutes away from now")]
    TimestampOutOfTolerance,
    #[error("no signature matches")]
    NoMatchingSignature,
}

fn mac(secret: &SigningSecret, msg_id: &str, timestamp: i64, body: &[u8]) -> [u8; 32] {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.key()).expect("HMAC accepts keys of any length");
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().into()
}

/// One `v1,<base64>` signature of `body` as message `msg_id` sent at `timestamp`.
pub fn sign(secret: &SigningSecret, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    format!(
        "{VERSION_PREFIX}{}",
        STANDARD.encode(mac(secret, msg_id, timestamp, body))
    )
}

/// The `webhook-signature` value: one signature per secret, space-separated.
pub fn signature_header(
    secrets: &[SigningSecret],
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    secrets
        .iter()
        .map(|secret| sign(secret, msg_id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Checks a received message the way a receiver should: the timestamp is within
/// [`TIMESTAMP_TOLERANCE_SECS`] of `now`, and any one of the space-separated `v1` signatures
/// matches (compared in constant time). Unknown signature versions are ignored.
pub fn verify(
    secret: &SigningSecret,
    msg_id: &str,
    timestamp: &str,
    signatures: &str,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<(), VerifyError> {
    let timestamp: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| VerifyError::InvalidTimestamp)?;
    if (now.timestamp() - timestamp).abs() > TIMESTAMP_TOLERANCE_SECS {
        return Err(VerifyError::TimestampOutOfTolerance);
    }
    let expected = mac(secret, msg_id, timestamp, body);
    let matched = signatures
        .split_ascii_whitespace()
        .filter_map(|sig| sig.strip_prefix(VERSION_PREFIX))
        .filter_map(|b64| STANDARD.decode(b64).ok())
        .any(|candidate| bool::from(candidate.as_slice().ct_eq(&expected)));
    if matched {
        Ok(())
    } else {
        Err(VerifyError::NoMatchingSignature)
    }
}

/// [`verify`] reading the three `webhook-*` headers.
pub fn verify_headers(
    secret: &SigningSecret,
    headers: &HeaderMap,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<(), VerifyError> {
    let header = |name: &'static str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .ok_or(VerifyError::MissingHeader(name))
    };
    verify(
        secret,
        header(HEADER_ID)?,
        header(HEADER_TIMESTAMP)?,
        header(HEADER_SIGNATURE)?,
        body,
        now,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC_ID: &str = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
    const SPEC_TS: i64 = 1649367553;
    const SPEC_BODY: &[u8] = br#"{"email":"test@example.com","username":"test_user"}"#;

    fn spec_secret() -> SigningSecret {
        SigningSecret::parse("secret", "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap()
    }

    fn spec_now() -> DateTime<Utc> {
        DateTime::from_timestamp(SPEC_TS, 0).unwrap()
    }

    #[test]
    fn sign_matches_the_standard_webhooks_test_vector() {
        assert_eq!(
            sign(&spec_secret(), SPEC_ID, SPEC_TS, SPEC_BODY),
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
        );
    }

    #[test]
    fn signature_header_holds_one_verifiable_signature_per_secret() {
        let other = SigningSecret::generate();
        let header = signature_header(&[spec_secret(), other.clone()], SPEC_ID, SPEC_TS, SPEC_BODY);
        let parts: Vec<_> = header.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], sign(&spec_secret(), SPEC_ID, SPEC_TS, SPEC_BODY));
        for secret in [spec_secret(), other] {
            verify(
                &secret,
                SPEC_ID,
                "1649367553",
                &header,
                SPEC_BODY,
                spec_now(),
            )
            .unwrap();
        }
        let stranger = SigningSecret::generate();
        assert_eq!(
            verify(
                &stranger,
                SPEC_ID,
                "1649367553",
                &header,
                SPEC_BODY,
                spec_now()
            ),
            Err(VerifyError::NoMatchingSignature)
        );
    }

    #[test]
    fn verify_rejects_tampered_body_id_and_unknown_versions() {
        let sig = sign(&spec_secret(), SPEC_ID, SPEC_TS, SPEC_BODY);
        let check = |id: &str, sigs: &str, body: &[u8]| {
            verify(&spec_secret(), id, "1649367553", sigs, body, spec_now())
        };
        assert_eq!(check(SPEC_ID, &sig, SPEC_BODY), Ok(()));
        assert_eq!(
            check(
                SPEC_ID,
                &sig,
                br#"{"email":"evil@example.com","username":"test_user"}"#
            ),
            Err(VerifyError::NoMatchingSignature)
        );
        assert_eq!(
            check("msg_other", &sig, SPEC_BODY),
            Err(VerifyError::NoMatchingSignature)
        );
        let v2 = sig.replacen("v1,", "v2,", 1);
        assert_eq!(
            check(SPEC_ID, &v2, SPEC_BODY),
            Err(VerifyError::NoMatchingSignature)
        );
        assert_eq!(
            check(SPEC_ID, &format!("v1,not-base64 {sig}"), SPEC_BODY),
            Ok(())
        );
    }

    #[test]
    fn verify_enforces_the_five_minute_tolerance_both_ways() {
        let sig = sign(&spec_secret(), SPEC_ID, SPEC_TS, SPEC_BODY);
        let at = |offset: i64| {
            verify(
                &spec_secret(),
                SPEC_ID,
                "1649367553",
                &sig,
                SPEC_BODY,
                DateTime::from_timestamp(SPEC_TS + offset, 0).unwrap(),
            )
        };
        assert_eq!(at(300), Ok(()));
        assert_eq!(at(-300), Ok(()));
        assert_eq!(at(301), Err(VerifyError::TimestampOutOfTolerance));
        assert_eq!(at(-301), Err(VerifyError::TimestampOutOfTolerance));
        assert_eq!(
            verify(
                &spec_secret(),
                SPEC_ID,
                "yesterday",
                &sig,
                SPEC_BODY,
                spec_now()
            ),
            Err(VerifyError::InvalidTimestamp)
        );
    }

    #[test]
    fn verify_headers_names_the_missing_header() {
        let mut headers = HeaderMap::new();
        headers.insert(HEADER_ID, SPEC_ID.parse().unwrap());
        headers.insert(HEADER_TIMESTAMP, "1649367553".parse().unwrap());
        assert_eq!(
            verify_headers(&spec_secret(), &headers, SPEC_BODY, spec_now()),
            Err(VerifyError::MissingHeader(HEADER_SIGNATURE))
        );
        let sig = sign(&spec_secret(), SPEC_ID, SPEC_TS, SPEC_BODY);
        headers.insert(HEADER_SIGNATURE, sig.parse().unwrap());
        assert_eq!(
            verify_headers(&spec_secret(), &headers, SPEC_BODY, spec_now()),
            Ok(())
        );
    }
}
