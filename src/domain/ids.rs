use serde::{Deserialize, Serialize};
use std::fmt;

use super::ValidationError;

/// An Instacart order id. Kept as a string: the upstream path parameter is a string, and ids
/// become part of URLs and event ids, so only a conservative character set is accepted.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct OrderId(String);

impl OrderId {
    pub fn parse(field: &str, value: &str) -> Result<Self, ValidationError> {
        if value.is_empty() || value.len() > 64 {
            return Err(ValidationError::new(
                field,
                "must be 1 to 64 characters long",
            ));
        }
        if !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(ValidationError::new(
                field,
                "may only contain letters, digits, '-' and '_'",
            ));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for OrderId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        OrderId::parse("order_id", &raw).map_err(serde::de::Error::custom)
    }
}

/// The Instacart user an order belongs to, used for the user-assertion token.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct UserId(String);

impl UserId {
    pub fn parse(field: &str, value: &str) -> Result<Self, ValidationError> {
        if value.is_empty() || value.len() > 128 {
            return Err(ValidationError::new(
                field,
                "must be 1 to 128 characters long",
            ));
        }
        if value.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(ValidationError::new(
                field,
                "must not contain whitespace or control characters",
            ));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for UserId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        UserId::parse("user_id", &raw).map_err(serde::de::Error::custom)
    }
}

/// Generates the prefixed, time-ordered identifiers the store hands out.
macro_rules! generated_id {
    ($name:ident, $prefix:literal) => {
        #[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn generate() -> Self {
                Self(format!(
                    concat!($prefix, "{}"),
                    uuid::Uuid::now_v7().simple()
                ))
            }

            pub fn parse(field: &str, value: &str) -> Result<Self, ValidationError> {
                let rest = value.strip_prefix($prefix).ok_or_else(|| {
                    ValidationError::new(field, concat!("must start with `", $prefix, "`"))
                })?;
                if rest.len() != 32 || !rest.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(ValidationError::new(
                        field,
                        concat!("must be `", $prefix, "` followed by 32 hex digits"),
                    ));
                }
                Ok(Self(value.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

generated_id!(SubscriberId, "sub_");
generated_id!(DeliveryId, "dlv_");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_id_rejects_path_characters() {
        assert!(OrderId::parse("order_id", "122233").is_ok());
        let err = OrderId::parse("order_id", "12/../3").unwrap_err();
        assert_eq!(err.field, "order_id");
        assert!(OrderId::parse("order_id", "").is_err());
    }

    #[test]
    fn generated_ids_round_trip_through_parse() {
        let id = SubscriberId::generate();
        assert_eq!(SubscriberId::parse("id", id.as_str()).unwrap(), id);
        assert!(SubscriberId::parse("id", "dlv_0123").is_err());
    }
}
