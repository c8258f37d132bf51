use super::ValidationError;

/// A message for an order's shopper, held to Connect's own rules (seed 002): not blank, at most
/// [`MessageBody::MAX_CHARS`] characters. Refusals use Connect's wording, so a caller reads the
/// same whether the bridge or Connect said no. The text is kept as given, surrounding whitespace
/// included: it is the author's, and the length is counted on what is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageBody(String);

impl MessageBody {
    /// Counted in Unicode scalar values (as Connect's Ruby `String#length` counts), not bytes.
    pub const MAX_CHARS: usize = 1000;

    pub fn parse(field: &str, value: &str) -> Result<Self, ValidationError> {
        if value.trim().is_empty() {
            return Err(ValidationError::new(field, "can't be blank"));
        }
        // Stops counting at the first character too many, whatever the body's size.
        if value.chars().nth(Self::MAX_CHARS).is_some() {
            return Err(ValidationError::new(
                field,
                format!("is too long (maximum is {} characters)", Self::MAX_CHARS),
            ));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(value: &str) -> Option<String> {
        MessageBody::parse("body", value).err().map(|e| e.rule)
    }

    #[test]
    fn blank_bodies_are_refused_in_connects_words() {
        for blank in ["", " ", "\n\t ", "\u{3000}"] {
            assert_eq!(rule(blank).as_deref(), Some("can't be blank"), "{blank:?}");
        }
    }

    #[test]
    fn length_is_counted_in_characters_not_bytes() {
        for unit in ["a", "é", "🥛"] {
            let longest = unit.repeat(MessageBody::MAX_CHARS);
            assert_eq!(
                MessageBody::parse("body", &longest).unwrap().as_str(),
                longest
            );
            assert_eq!(
                rule(&format!("{longest}{unit}")).as_deref(),
                Some("is too long (maximum is 1000 characters)"),
                "{unit}"
            );
        }
    }

    #[test]
    fn the_text_is_kept_as_given() {
        let body = MessageBody::parse("body", "  oat milk?\n").unwrap();
        assert_eq!(body.as_str(), "  oat milk?\n");
    }
}
