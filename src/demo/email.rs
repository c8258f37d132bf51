//! Prints what arrives in the demo's mailbox: each message is parsed from the raw bytes the
//! bridge sent over SMTP, as a mail client would, and summed up in a few lines.

use mail_parser::{Address, HeaderValue, MessageParser, MimeHeaders, PartType};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio_util::sync::CancellationToken;

use super::mailbox::Mail;
use super::Receiver;

/// How much of the plain-text part is shown.
const TEXT_LINES: usize = 6;

pub async fn print_arrivals(
    mut arrivals: broadcast::Receiver<Mail>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    loop {
        let arrived = tokio::select! {
            () = stop.cancelled() => return Ok(()),
            arrived = arrivals.recv() => arrived,
        };
        match arrived {
            Ok(mail) => Receiver::Email.print(&summary(&mail)),
            Err(RecvError::Lagged(missed)) => Receiver::Email.print(&[format!(
                "… {missed} e-mails arrived faster than they could be shown"
            )]),
            Err(RecvError::Closed) => return Ok(()),
        }
    }
}

fn summary(mail: &Mail) -> Vec<String> {
    let envelope = format!("{} → {}", mail.mail_from, mail.rcpt_to.join(", "));
    let Some(message) = MessageParser::default().parse(&mail.data) else {
        return vec![format!(
            "✗ {} bytes that do not parse as a message (envelope {envelope})",
            mail.data.len()
        )];
    };
    let mut lines = vec![
        format!("✉ {:?}", message.subject().unwrap_or("(no subject)")),
        format!(
            "    From: {} · To: {} · envelope {envelope}",
            addresses(message.from()),
            addresses(message.to())
        ),
    ];
    let mut ids = format!(
        "    Message-ID: <{}>",
        message.message_id().unwrap_or("none")
    );
    if let Some(root) = first_id(message.in_reply_to()) {
        ids.push_str(&format!(" · In-Reply-To: <{root}>"));
    }
    lines.push(ids);
    let leaves: Vec<String> = message
        .parts
        .iter()
        .filter(|part| !matches!(part.body, PartType::Multipart(_)))
        .map(|part| content_type(part.content_type()))
        .collect();
    lines.push(format!(
        "    {}: {}",
        content_type(message.root_part().content_type()),
        leaves.join(" + ")
    ));
    match message.body_text(0) {
        Some(text) => {
            let shown: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
            lines.extend(shown.iter().take(TEXT_LINES).map(|l| format!("    ▏ {l}")));
            if shown.len() > TEXT_LINES {
                lines.push(format!("    ▏ … {} more lines", shown.len() - TEXT_LINES));
            }
        }
        None => lines.push("    (no plain-text part)".to_owned()),
    }
    lines
}

fn addresses(address: Option<&Address>) -> String {
    let Some(address) = address else {
        return "(none)".to_owned();
    };
    address
        .iter()
        .map(|addr| match (addr.name(), addr.address()) {
            (Some(name), Some(email)) => format!("{name} <{email}>"),
            (None, Some(email)) => email.to_owned(),
            (name, None) => name.unwrap_or("?").to_owned(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn first_id<'a>(value: &'a HeaderValue<'_>) -> Option<&'a str> {
    match value {
        HeaderValue::Text(id) => Some(id),
        HeaderValue::TextList(ids) => ids.first().map(|id| id.as_ref()),
        _ => None,
    }
}

fn content_type(ct: Option<&mail_parser::ContentType>) -> String {
    match ct {
        Some(ct) => match ct.subtype() {
            Some(subtype) => format!("{}/{subtype}", ct.ctype()),
            None => ct.ctype().to_owned(),
        },
        // RFC 2045's default.
        None => "text/plain".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lettre::message::MultiPart;
    use lettre::Message;

    #[test]
    fn a_mail_is_summed_up_from_its_raw_bytes() {
        let body: String = (1..=8).map(|n| format!("line {n}\n\n")).collect();
        let message = Message::builder()
            .from("Store 42 <chat@store.example>".parse().unwrap())
            .to("staff@store.example".parse().unwrap())
            .subject("Order 1: 2 updates")
            .message_id(Some("<second@shopper-bridge>".to_owned()))
            .in_reply_to("<first@shopper-bridge>".to_owned())
            .multipart(MultiPart::alternative_plain_html(
                body,
                "<p>html</p>".to_owned(),
            ))
            .unwrap();
        let mail = Mail {
            mail_from: "chat@store.example".to_owned(),
            rcpt_to: vec!["staff@store.example".to_owned()],
            data: message.formatted(),
        };
        assert_eq!(
            summary(&mail),
            [
                "✉ \"Order 1: 2 updates\"",
                "    From: Store 42 <chat@store.example> · To: staff@store.example · \
                 envelope chat@store.example → staff@store.example",
                "    Message-ID: <second@shopper-bridge> · In-Reply-To: <first@shopper-bridge>",
                "    multipart/alternative: text/plain + text/html",
                "    ▏ line 1",
                "    ▏ line 2",
                "    ▏ line 3",
                "    ▏ line 4",
                "    ▏ line 5",
                "    ▏ line 6",
                "    ▏ … 2 more lines",
            ]
        );
    }

    #[test]
    fn bytes_that_are_no_message_say_so() {
        let mail = Mail {
            mail_from: "a@example.com".to_owned(),
            rcpt_to: vec!["b@example.com".to_owned()],
            data: Vec::new(),
        };
        assert_eq!(
            summary(&mail),
            ["✗ 0 bytes that do not parse as a message (envelope a@example.com → b@example.com)"]
        );
    }
}
