use serde::Serialize;
use std::fmt;
use std::str::FromStr;

use super::ValidationError;

/// The longest address SMTP can carry in a path (RFC 5321 §4.5.3.1.3, less the brackets).
const MAX_LEN: usize = 254;

/// A bare e-mail address (`staff@store.example`, no display name), as the SMTP envelope takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub struct EmailAddress(lettre::Address);

impl EmailAddress {
    pub fn parse(field: &str, value: &str) -> Result<Self, ValidationError> {
        let refused = || {
            ValidationError::new(
                field,
                format!("must be an e-mail address like staff@store.example, not {value:?}"),
            )
        };
        if value.len() > MAX_LEN {
            return Err(ValidationError::new(
                field,
                format!("must be an e-mail address of at most {MAX_LEN} characters"),
            ));
        }
        lettre::Address::from_str(value)
            .map(Self)
            .map_err(|_| refused())
    }

    pub fn as_str(&self) -> &str {
        self.0.as_ref()
    }

    pub fn into_address(self) -> lettre::Address {
        self.0
    }
}

impl From<EmailAddress> for String {
    fn from(address: EmailAddress) -> Self {
        address.0.to_string()
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_addresses_pass_and_anything_else_names_the_field() {
        let ok = EmailAddress::parse("to[0]", "staff@store.example").unwrap();
        assert_eq!(ok.as_str(), "staff@store.example");
        for bad in [
            "",
            "staff",
            "staff@",
            "@store.example",
            "Staff <staff@store.example>",
            "staff@store.example\r\nBcc: x@y.example",
            "a b@store.example",
        ] {
            let err = EmailAddress::parse("to[1]", bad).unwrap_err();
            assert_eq!(err.field, "to[1]", "{bad:?}");
            assert!(err.rule.starts_with("must be an e-mail address"), "{bad:?}");
        }
        let long = format!("{}@store.example", "a".repeat(250));
        assert!(EmailAddress::parse("to[0]", &long).is_err());
    }
}
