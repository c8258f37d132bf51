use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rand::RngCore;
use std::fmt;

use super::ValidationError;

const PREFIX: &str = "whsec_";

/// A Standard Webhooks signing secret: `whsec_` + base64 of the key bytes.
/// `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningSecret {
    encoded: String,
    key: Vec<u8>,
}

impl SigningSecret {
    pub fn generate() -> Self {
        let mut key = vec![0u8; 24];
        rand::thread_rng().fill_bytes(&mut key);
        Self {
            encoded: format!("{PREFIX}{}", STANDARD.encode(&key)),
            key,
        }
    }

    pub fn parse(field: &str, value: &str) -> Result<Self, ValidationError> {
        let b64 = value
            .strip_prefix(PREFIX)
            .ok_or_else(|| ValidationError::new(field, "must start with `whsec_`"))?;
        let key = STANDARD
            .decode(b64)
            .map_err(|_| ValidationError::new(field, "must be `whsec_` followed by base64"))?;
        if !(24..=64).contains(&key.len()) {
            return Err(ValidationError::new(field, "must hold 24 to 64 key bytes"));
        }
        Ok(Self {
            encoded: value.to_owned(),
            key,
        })
    }

    /// The `whsec_...` form, to show its owner once and to store.
    pub fn expose(&self) -> &str {
        &self.encoded
    }

    pub fn key(&self) -> &[u8] {
        &self.key
    }
}

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningSecret(whsec_***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secret_parses_back_and_hides_in_debug() {
        let secret = SigningSecret::generate();
        let parsed = SigningSecret::parse("secret", secret.expose()).unwrap();
        assert_eq!(parsed.key(), secret.key());
        assert!(!format!("{secret:?}").contains(&secret.expose()[6..]));
    }
}
