//! Slack's request signatures: `X-Slack-Signature: v0=` + hex HMAC-SHA256, keyed with the app's
//! signing secret, of `v0:{X-Slack-Request-Timestamp}:{raw body}`; requests stamped more than
//! five minutes from now are refused as possible replays.

use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const HEADER_SIGNATURE: &str = "x-slack-signature";
pub const HEADER_TIMESTAMP: &str = "x-slack-request-timestamp";
/// How far a request's timestamp may be from now, either way.
pub const TOLERANCE_SECS: i64 = 5 * 60;
const VERSION: &str = "v0";

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing X-Slack-Request-Timestamp or X-Slack-Signature")]
    Missing,
    #[error("X-Slack-Request-Timestamp is not a unix time")]
    BadTimestamp,
    #[error("the request is stamped more than 5 minutes away from now")]
    Stale,
    #[error("the signature does not match")]
    Mismatch,
}

fn mac(secret: &[u8], timestamp: &str, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(VERSION.as_bytes());
    mac.update(b":");
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac.update(body);
    mac
}

/// Checks a request's signature headers against `body` at `now` (unix seconds). The comparison
/// takes the same time wherever the signatures differ.
pub fn verify(
    secret: &[u8],
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
) -> Result<(), SignatureError> {
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(timestamp), Some(signature)) = (header(HEADER_TIMESTAMP), header(HEADER_SIGNATURE))
    else {
        return Err(SignatureError::Missing);
    };
    let stamped: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| SignatureError::BadTimestamp)?;
    if now.abs_diff(stamped) > TOLERANCE_SECS.unsigned_abs() {
        return Err(SignatureError::Stale);
    }
    let digest = signature
        .strip_prefix("v0=")
        .and_then(|hex_digest| hex::decode(hex_digest).ok())
        .ok_or(SignatureError::Mismatch)?;
    mac(secret, timestamp, body)
        .verify_slice(&digest)
        .map_err(|_| SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    /// The `X-Slack-Signature` value Slack sends with `body` at `timestamp`.
    fn sign(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
        let digest = mac(secret, timestamp, body).finalize().into_bytes();
        format!("{VERSION}={}", hex::encode(digest))
    }

    /// The worked example of Slack's "Verifying requests from Slack" page.
    const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const TIMESTAMP: &str = "1531420618";
    const BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&\
        channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&\
        command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2F\
        T1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.\
        803a0bc887a14d10d2c447fce8b6703c";
    const SIGNATURE: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

    fn headers(timestamp: &str, signature: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(HEADER_TIMESTAMP, HeaderValue::from_str(timestamp).unwrap());
        headers.insert(HEADER_SIGNATURE, HeaderValue::from_str(signature).unwrap());
        headers
    }

    fn check(headers: &HeaderMap, body: &str, now: i64) -> Result<(), SignatureError> {
        verify(SECRET.as_bytes(), headers, body.as_bytes(), now)
    }

    #[test]
    fn slacks_worked_example_signs_and_verifies() {
        assert_eq!(
            sign(SECRET.as_bytes(), TIMESTAMP, BODY.as_bytes()),
            SIGNATURE
        );
        let now = TIMESTAMP.parse::<i64>().unwrap();
        assert_eq!(check(&headers(TIMESTAMP, SIGNATURE), BODY, now), Ok(()));
    }

    #[test]
    fn any_change_of_body_timestamp_or_signature_is_refused() {
        let now = TIMESTAMP.parse::<i64>().unwrap();
        let tampered = BODY.replace("roadrunner", "coyote");
        assert_eq!(
            check(&headers(TIMESTAMP, SIGNATURE), &tampered, now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            check(&headers("1531420619", SIGNATURE), BODY, now),
            Err(SignatureError::Mismatch)
        );
        let flipped = format!("{}4", &SIGNATURE[..SIGNATURE.len() - 1]);
        for bad in [flipped.as_str(), "v1=a2114d57", "v0=not-hex", ""] {
            assert_eq!(
                check(&headers(TIMESTAMP, bad), BODY, now),
                Err(SignatureError::Mismatch),
                "{bad:?}"
            );
        }
        assert_eq!(
            check(&HeaderMap::new(), BODY, now),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            check(&headers("yesterday", SIGNATURE), BODY, now),
            Err(SignatureError::BadTimestamp)
        );
    }

    #[test]
    fn timestamps_up_to_five_minutes_away_either_way_are_accepted() {
        let stamped = TIMESTAMP.parse::<i64>().unwrap();
        let valid = headers(TIMESTAMP, SIGNATURE);
        for now in [stamped - 300, stamped + 300] {
            assert_eq!(check(&valid, BODY, now), Ok(()), "{now}");
        }
        for now in [stamped - 301, stamped + 301, stamped + 6 * 60] {
            assert_eq!(
                check(&valid, BODY, now),
                Err(SignatureError::Stale),
                "{now}"
            );
        }
    }
}
