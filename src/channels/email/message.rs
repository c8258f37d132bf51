//! What an e-mail carries besides its rendered text: a Message-ID derived from the events, so
//! retries and mail clients dedupe, and the threading headers that keep an order's mails
//! together.

use lettre::message::{Mailbox, Mailboxes, MultiPart};
use lettre::Message;
use sha2::{Digest, Sha256};

use crate::domain::EventId;

/// The right-hand side of every Message-ID this service makes.
const MESSAGE_ID_DOMAIN: &str = "shopper-bridge";

/// `<evt_…@shopper-bridge>` for one event; a digest's is derived from all of its events (in
/// order), so retrying the same digest repeats it.
pub fn message_id<'a>(event_ids: impl IntoIterator<Item = &'a EventId>) -> String {
    let ids: Vec<&EventId> = event_ids.into_iter().collect();
    match ids.as_slice() {
        [single] => format!("<{single}@{MESSAGE_ID_DOMAIN}>"),
        many => {
            let mut hasher = Sha256::new();
            for id in many {
                hasher.update(id.as_str());
                hasher.update([0]);
            }
            let digest = hasher.finalize();
            format!(
                "<digest_{}@{MESSAGE_ID_DOMAIN}>",
                hex::encode(&digest[..16])
            )
        }
    }
}

/// Who a message is from and to, from the settings and the subscriber.
pub struct Addressing<'a> {
    pub from: &'a Mailbox,
    pub reply_to: Option<&'a Mailbox>,
    pub to: Mailboxes,
}

/// The parts a template rendered.
pub struct Content {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// A multipart/alternative message (plain text first, HTML preferred). `thread_root` is the
/// Message-ID of the order's first mail, when this one is not it.
pub fn compose(
    addressing: Addressing<'_>,
    content: Content,
    message_id: &str,
    thread_root: Option<&str>,
) -> Result<Message, lettre::error::Error> {
    let mut builder = Message::builder()
        .from(addressing.from.clone())
        .message_id(Some(message_id.to_owned()))
        .subject(one_line(&content.subject));
    if let Some(reply_to) = addressing.reply_to {
        builder = builder.reply_to(reply_to.clone());
    }
    for to in addressing.to {
        builder = builder.to(to);
    }
    if let Some(root) = thread_root {
        builder = builder
            .in_reply_to(root.to_owned())
            .references(root.to_owned());
    }
    builder.multipart(MultiPart::alternative_plain_html(
        content.text,
        content.html,
    ))
}

/// A subject is one header line: whatever a template or a shopper put in it, line breaks and
/// other control characters become single spaces.
fn one_line(subject: &str) -> String {
    subject
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|word| !word.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{EventType, OrderId};

    fn event(n: i64) -> EventId {
        let order = OrderId::parse("order_id", "122233").unwrap();
        EventId::derive(EventType::ChatMessageCreated, &order, Some(n))
    }

    #[test]
    fn one_event_keeps_its_id_and_a_digest_hashes_its_ordered_ids() {
        let (a, b) = (event(1), event(2));
        assert_eq!(message_id([&a]), format!("<{a}@shopper-bridge>"));
        let digest = message_id([&a, &b]);
        assert!(digest.starts_with("<digest_") && digest.ends_with("@shopper-bridge>"));
        assert_eq!(digest, message_id([&a, &b]), "stable across retries");
        assert_ne!(digest, message_id([&b, &a]));
        assert_ne!(digest, message_id([&a, &b, &event(3)]));
    }

    #[test]
    fn a_subject_cannot_smuggle_a_header() {
        let from: Mailbox = "Store <chat@store.example>".parse().unwrap();
        let message = compose(
            Addressing {
                from: &from,
                reply_to: None,
                to: "staff@store.example".parse().unwrap(),
            },
            Content {
                subject: "Hi\r\nBcc: thief@evil.example\n\tthere".to_owned(),
                text: "text".to_owned(),
                html: "<p>html</p>".to_owned(),
            },
            "<evt_1@shopper-bridge>",
            Some("<evt_0@shopper-bridge>"),
        )
        .unwrap();
        let raw = String::from_utf8(message.formatted()).unwrap();
        assert!(
            raw.contains("Subject: Hi Bcc: thief@evil.example there\r\n"),
            "{raw}"
        );
        assert!(!raw.contains("\r\nBcc:"), "{raw}");
        assert!(
            raw.contains("In-Reply-To: <evt_0@shopper-bridge>\r\n"),
            "{raw}"
        );
        assert!(
            raw.contains("References: <evt_0@shopper-bridge>\r\n"),
            "{raw}"
        );
    }
}
