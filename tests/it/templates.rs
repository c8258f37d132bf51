//! The templates rendered against real event payloads: the ones the differ produces from the
//! seed response, and hostile variants of them.

use chrono::{DateTime, Utc};
use figment::providers::Serialized;
use figment::Figment;
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;

use shopper_bridge::config::Settings;
use shopper_bridge::domain::{
    Channel, ClaimToken, ClaimedDelivery, MarkReadPolicy, NewEvent, SeenState, Subscriber,
    SubscriberFilter, SubscriberStatus,
};
use shopper_bridge::domain::{DeliveryId, EventType, OrderId, SubscriberId};
use shopper_bridge::instacart::models::{OrderMessagesResponse, ParticipantType, PollSnapshot};
use shopper_bridge::poller::differ::diff;
use shopper_bridge::startup::{Application, StartupError};
use shopper_bridge::templates::{EventContext, SlackMessage, TemplateError, Templates};

fn seed_snapshot() -> PollSnapshot {
    let seed = crate::harness::fixture_text("order_messages");
    serde_json::from_str::<OrderMessagesResponse>(&seed)
        .unwrap()
        .into()
}

fn order() -> OrderId {
    OrderId::parse("order_id", "122233").unwrap()
}

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

/// One event of each type, in the order the poller emits them over two polls: the seed's chat
/// message and notification, then the message being read and the chat expiring.
fn seed_events_with(edit: impl FnOnce(&mut PollSnapshot)) -> Vec<NewEvent> {
    let mut snapshot = seed_snapshot();
    edit(&mut snapshot);
    let first = diff(
        &order(),
        &SeenState::default(),
        &snapshot,
        at("2021-01-01T00:10:00Z"),
    );
    let mut seen = SeenState::default();
    seen.chat.extend(first.new_chat.iter().copied());
    seen.lifecycle.extend(first.new_lifecycle.iter().copied());
    snapshot.chat_messages[0].read = true;
    snapshot.chat_messages[0].read_at = Some(at("2021-01-01T00:20:00Z"));
    snapshot.is_expired = Some(true);
    let second = diff(&order(), &seen, &snapshot, at("2021-01-01T00:30:00Z"));
    first.events.into_iter().chain(second.events).collect()
}

fn contexts(events: &[NewEvent]) -> Vec<EventContext> {
    events
        .iter()
        .map(|e| EventContext::parse(e.id.clone(), &e.payload).unwrap())
        .collect()
}

fn seed_contexts() -> Vec<EventContext> {
    contexts(&seed_events_with(|_| {}))
}

/// The `chat_message.created` event for the seed message with `edit` applied.
fn chat_created_with(edit: impl FnOnce(&mut PollSnapshot)) -> EventContext {
    let events = seed_events_with(edit);
    assert_eq!(events[0].event_type, EventType::ChatMessageCreated);
    contexts(&events[..1]).remove(0)
}

fn claimed(event: &NewEvent) -> ClaimedDelivery {
    let now = event.created_at;
    ClaimedDelivery {
        id: DeliveryId::generate(),
        claim: ClaimToken::generate(),
        event_id: event.id.clone(),
        event_type: event.event_type,
        order_id: event.order_id.clone(),
        event_created_at: now,
        payload: event.payload.as_str().into(),
        attempts_made: 0,
        subscriber: Arc::new(Subscriber {
            id: SubscriberId::generate(),
            channel: Channel::Email {
                to: vec!["staff@store.example".into()],
                digest_seconds: None,
            },
            filter: SubscriberFilter::default(),
            description: None,
            status: SubscriberStatus::Active,
            disabled_reason: None,
            mark_read: MarkReadPolicy::Never,
            created_at: now,
            updated_at: now,
            secrets: Vec::new(),
        }),
    }
}

/// Every mrkdwn text in the blocks: section texts and fields, context elements.
fn block_texts(message: &SlackMessage) -> Vec<String> {
    let mut texts = Vec::new();
    for block in &message.blocks {
        let objects = std::iter::once(&block["text"])
            .chain(block["fields"].as_array().into_iter().flatten())
            .chain(block["elements"].as_array().into_iter().flatten());
        texts.extend(objects.filter_map(|o| o["text"].as_str().map(str::to_owned)));
    }
    texts
}

fn write(dir: &Path, name: &str, source: &str) {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, source).unwrap();
}

fn load_with(files: &[(&str, &str)]) -> Result<Templates, TemplateError> {
    let dir = tempfile::tempdir().unwrap();
    for (name, source) in files {
        write(dir.path(), name, source);
    }
    Templates::load(Some(dir.path()))
}

#[test]
fn every_default_template_renders_for_the_seed_events() {
    let templates = Templates::load(None).unwrap();
    let events = seed_events_with(|_| {});
    let types: Vec<_> = events.iter().map(|e| e.event_type).collect();
    assert_eq!(types, EventType::ALL);

    for event in &events {
        let ctx = EventContext::from_delivery(&claimed(event)).unwrap();
        assert_eq!(ctx.event_id(), &event.id);
        assert_eq!(ctx.event_type(), event.event_type);
        assert_eq!(ctx.order_id(), &order());

        let email = templates.email(&ctx).unwrap();
        assert!(email.subject.contains("122233"), "{}", email.subject);
        assert!(!email.subject.contains('\n'));
        assert!(email.text.contains("122233") && email.html.contains("122233"));
        assert!(
            email.html.contains(event.id.as_str()),
            "footer names the event"
        );
        assert!(email.html.starts_with("<!DOCTYPE html>"));

        let slack = templates.slack(&ctx).unwrap();
        assert!(slack.text.contains("122233"), "{}", slack.text);
        assert!(!slack.blocks.is_empty());
        let footer = slack.blocks.last().unwrap();
        assert_eq!(footer["type"], "context");
        assert!(footer["elements"][0]["text"]
            .as_str()
            .unwrap()
            .contains("shopper Robert"));

        let (subject, body) = match event.event_type {
            EventType::ChatMessageCreated => {
                ("SomeFirstName on order 122233: MessageBody", "MessageBody")
            }
            EventType::LifecycleMessageCreated => (
                "Order 122233: Your order has been picked up.",
                "Your order has been picked up.",
            ),
            EventType::ChatMessageRead => {
                ("Order 122233: SomeFirstName's message was read", "was read")
            }
            EventType::OrderChatExpired => ("Order 122233: the chat has closed", "has closed"),
        };
        assert_eq!(email.subject, subject);
        for part in [&email.text, &email.html] {
            assert!(part.contains(body), "{part}");
        }
        assert!(
            block_texts(&slack).iter().any(|t| t.contains(body)),
            "{slack:?}"
        );
    }
}

#[test]
fn a_message_the_store_sent_through_the_bridge_says_so_in_every_template() {
    let templates = Templates::load(None).unwrap();
    let mut snapshot = seed_snapshot();
    snapshot.chat_messages[0].sender_type = ParticipantType::User;
    let mut seen = SeenState::default();
    seen.sent.insert(snapshot.chat_messages[0].id, None);
    let events = diff(&order(), &seen, &snapshot, at("2021-01-01T00:10:00Z")).events;
    let sent = &contexts(&events[..1])[0];
    assert_eq!(sent.event_type(), EventType::ChatMessageCreated);
    let email = templates.email(sent).unwrap();
    let slack = templates.slack(sent).unwrap();
    for part in [
        &email.text,
        &email.html,
        &slack.text,
        &block_texts(&slack).join("\n"),
    ] {
        assert!(part.contains("sent by the store"), "{part}");
    }

    // Any other message does not.
    let customer = chat_created_with(|s| s.chat_messages[0].sender_type = ParticipantType::User);
    let email = templates.email(&customer).unwrap();
    let slack = templates.slack(&customer).unwrap();
    for part in [
        &email.text,
        &email.html,
        &slack.text,
        &block_texts(&slack).join("\n"),
    ] {
        assert!(!part.contains("sent by the store"), "{part}");
    }
    assert!(email.text.contains("(customer)"), "{}", email.text);
}

#[test]
fn lifecycle_messages_show_the_medium_and_timestamps() {
    let templates = Templates::load(None).unwrap();
    let lifecycle = &seed_contexts()[1];
    assert_eq!(lifecycle.event_type(), EventType::LifecycleMessageCreated);
    let email = templates.email(lifecycle).unwrap();
    for part in [&email.text, &email.html] {
        assert!(part.contains("sms"), "{part}");
        assert!(part.contains("2021-01-01 00:00 UTC"), "{part}");
    }
}

#[test]
fn a_hostile_body_is_escaped_in_the_html_part_and_kept_verbatim_in_the_text_part() {
    let body = r#"<script>alert("x")</script> <b>bold</b> & <img src=x onerror=alert(1)>"#;
    let event = chat_created_with(|s| {
        s.chat_messages[0].body = body.into();
        s.shoppers[0].display_name = "<i>Eve</i>".into();
    });
    let email = Templates::load(None).unwrap().email(&event).unwrap();

    assert!(!email.html.contains("<script>"));
    assert!(!email.html.contains("<b>bold"));
    assert!(!email.html.contains("<img src=x"));
    assert!(!email.html.contains("<i>Eve"));
    assert!(email.html.contains("&lt;script&gt;"));
    assert!(email
        .html
        .contains("&lt;b&gt;bold&lt;&#x2f;b&gt; &amp; &lt;img"));
    assert!(email.html.contains("&lt;i&gt;Eve"));
    assert!(email.text.contains(body), "{}", email.text);
}

#[test]
fn shopper_text_cannot_inject_slack_mrkdwn_and_the_json_stays_valid() {
    let body =
        "<!channel> look: <https://evil.example|click here> Tom & \"Jerry\" \\ \n\t\u{7} end";
    let event = chat_created_with(|s| {
        s.chat_messages[0].body = body.into();
        s.shoppers[0].display_name = "<@U123> \"Bob\"".into();
    });
    let message = Templates::load(None).unwrap().slack(&event).unwrap();

    let escaped_body = body
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    assert_eq!(message.blocks[1]["text"]["text"], escaped_body.as_str());
    assert_eq!(
        message.blocks[0]["text"]["text"],
        "*&lt;@U123&gt; \"Bob\"* (shopper) wrote:"
    );
    for text in block_texts(&message).iter().chain([&message.text]) {
        assert!(!text.contains("<!channel>"), "{text}");
        assert!(!text.contains("<https://evil"), "{text}");
        assert!(!text.contains("<@U123>"), "{text}");
    }
    assert!(
        message.text.contains("&lt;!channel&gt;"),
        "{}",
        message.text
    );

    // What the channel posts: the blocks re-serialized must read back identically.
    let posted = serde_json::json!({"text": message.text, "blocks": message.blocks}).to_string();
    let parsed: Value = serde_json::from_str(&posted).unwrap();
    assert_eq!(parsed["blocks"][1]["text"]["text"], escaped_body.as_str());
}

#[test]
fn url_fields_stay_usable_in_slack_while_non_urls_are_dropped() {
    let avatar = "https://cdn.example/avatar.png?w=40&h=40";
    let with_avatar = chat_created_with(|s| s.shoppers[0].avatar_url = Some(avatar.into()));
    let templates = Templates::load(None).unwrap();
    let message = templates.slack(&with_avatar).unwrap();
    assert_eq!(message.blocks[0]["accessory"]["image_url"], avatar);

    // The seed's avatar is "SomeURL": not a URL, so no image is attempted anywhere.
    let seed = &seed_contexts()[0];
    assert!(templates.slack(seed).unwrap().blocks[0]
        .get("accessory")
        .is_none());
    assert!(!templates.email(seed).unwrap().html.contains("SomeURL"));
}

#[test]
fn long_slack_texts_are_cut_below_3000_characters_with_an_ellipsis() {
    let body = format!("{}&{}", "é".repeat(2996), "x".repeat(2000));
    let event = chat_created_with(|s| s.chat_messages[0].body = body.clone());
    let message = Templates::load(None).unwrap().slack(&event).unwrap();

    let text = message.blocks[1]["text"]["text"].as_str().unwrap();
    assert!(text.chars().count() < 3000, "{}", text.chars().count());
    assert!(text.ends_with('…'));
    // The cut lands inside "&amp;", which is dropped whole rather than shown broken.
    assert!(
        text == format!("{}…", "é".repeat(2996)),
        "cut at {:?}",
        text.chars().rev().take(5).collect::<String>()
    );
    for text in block_texts(&message) {
        assert!(text.chars().count() < 3000);
    }
    // The notification text has Slack's larger message limit.
    assert!(message.text.ends_with(&"x".repeat(2000)));
}

#[test]
fn slack_messages_keep_at_most_50_blocks() {
    let many = r#"[{% for i in range(60) %}{"type": "section", "text": {"type": "mrkdwn", "text": "block {{ i }}"}}{% if not loop.last %},{% endif %}{% endfor %}]"#;
    let templates = load_with(&[("slack/chat_message.created.json", many)]).unwrap();
    let message = templates.slack(&seed_contexts()[0]).unwrap();
    assert_eq!(message.blocks.len(), 50);
    assert_eq!(message.blocks[49]["text"]["text"], "block 49");
}

#[test]
fn an_empty_slack_text_falls_back_to_naming_the_order() {
    let templates =
        load_with(&[("slack/chat_message.created.txt", "  \n{# nothing #}\n")]).unwrap();
    let message = templates.slack(&seed_contexts()[0]).unwrap();
    assert_eq!(message.text, "New event for order 122233");
}

#[test]
fn a_syntax_error_in_an_override_is_reported_at_load_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "email/chat_message.created.html",
        "<p>fine</p>\n<p>{{ event.body }}</p>\n<p>{% if %}broken{% endif %}</p>\n",
    );
    let err = Templates::load(Some(dir.path())).err().unwrap();
    let path = dir.path().join("email/chat_message.created.html");
    assert!(
        matches!(err, TemplateError::Syntax { line: 3, .. }),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with(&format!("{}:3: template syntax error", path.display())),
        "{err}"
    );
}

#[test]
fn an_undefined_variable_in_an_override_is_reported_at_load() {
    let err = load_with(&[(
        "email/order.chat_expired.txt",
        "line one\n{{ sender_nme }}\n",
    )])
    .err()
    .unwrap();
    assert!(
        matches!(err, TemplateError::Render { line: 2, .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("email/order.chat_expired.txt:2:"),
        "{err}"
    );
}

#[test]
fn invalid_slack_json_in_an_override_is_reported_at_load() {
    let err = load_with(&[(
        "slack/order.chat_expired.json",
        r#"[{"type": "section", "text": }]"#,
    )])
    .err()
    .unwrap();
    assert!(matches!(err, TemplateError::SlackBlocks { .. }), "{err:?}");
    assert!(
        err.to_string().contains("slack/order.chat_expired.json"),
        "{err}"
    );
}

#[test]
fn a_templates_dir_that_does_not_exist_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let err = Templates::load(Some(&missing)).err().unwrap();
    assert!(matches!(err, TemplateError::DirNotFound { .. }), "{err:?}");
    assert!(err.to_string().contains("nope"), "{err}");
}

#[test]
fn an_edited_template_on_disk_changes_the_output_without_a_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let name = "email/chat_message.created.subject.txt";
    let event = &seed_contexts()[0];

    write(dir.path(), name, "Hello from {{ event.sender_name }}\n");
    let email = Templates::load(Some(dir.path()))
        .unwrap()
        .email(event)
        .unwrap();
    assert_eq!(email.subject, "Hello from SomeFirstName");
    // Files not overridden keep their built-in content.
    assert!(email.html.contains("MessageBody"));

    write(dir.path(), name, "Order {{ order_id }} changed");
    let email = Templates::load(Some(dir.path()))
        .unwrap()
        .email(event)
        .unwrap();
    assert_eq!(email.subject, "Order 122233 changed");
}

#[test]
fn the_digest_lists_the_events_in_order() {
    let templates = Templates::load(None).unwrap();
    let events = seed_contexts();
    let digest = templates.email_digest(&events).unwrap();

    assert_eq!(digest.subject, "Order 122233: 4 updates");
    let markers = [
        "New chat message",
        "Order notification",
        "Message read",
        "Chat closed",
    ];
    for part in [&digest.text, &digest.html] {
        let positions: Vec<usize> = markers
            .iter()
            .map(|m| {
                part.find(m)
                    .unwrap_or_else(|| panic!("{m} missing in {part}"))
            })
            .collect();
        assert!(positions.is_sorted(), "{positions:?} in {part}");
        assert!(part.find("MessageBody") < part.find("Your order has been picked up."));
    }
    assert!(digest.text.contains("1. New chat message"));
    assert!(digest.text.contains("4. Chat closed"));

    let single = templates.email_digest(&events[..1]).unwrap();
    assert_eq!(single.subject, "Order 122233: 1 update");
}

#[test]
fn a_digest_is_about_one_order() {
    let templates = Templates::load(None).unwrap();
    let raw = seed_events_with(|_| {});
    let mut events = contexts(&raw);
    let other_order = OrderId::parse("order_id", "99").unwrap();
    let payload = raw[0].payload.replace("\"122233\"", "\"99\"");
    events.push(EventContext::parse(raw[0].id.clone(), &payload).unwrap());
    assert_eq!(events.last().unwrap().order_id(), &other_order);

    let err = templates.email_digest(&events).unwrap_err();
    assert!(matches!(err, TemplateError::MixedOrders { .. }), "{err:?}");
    assert!(matches!(
        templates.email_digest(&[]),
        Err(TemplateError::EmptyDigest)
    ));
}

#[tokio::test]
async fn a_broken_override_stops_the_application_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let templates_dir = dir.path().join("templates");
    write(
        &templates_dir,
        "slack/chat_message.read.txt",
        "{{ event.body",
    );
    let settings = Settings::from_figment(Figment::from(Serialized::defaults(serde_json::json!({
        "server": {"listen": "127.0.0.1:0", "admin_token": "an-admin-token-long-enough-for-tests"},
        "store": {"url": format!("sqlite://{}", dir.path().join("bridge.db").display())},
        "instacart": {"token": "unused-connect-token"},
        "templates": {"dir": templates_dir},
    }))))
    .unwrap();

    let err = Application::build(settings).await.err().unwrap();
    assert!(
        matches!(
            &err,
            StartupError::Templates(TemplateError::Syntax { line: 1, .. })
        ),
        "{err:?}"
    );
    let source = std::error::Error::source(&err).unwrap().to_string();
    assert!(
        source.contains("slack/chat_message.read.txt:1:"),
        "{source}"
    );
}
