//! The e-mail channel end to end: orders polled from the in-process Connect simulator, subscribers
//! created through the admin API, mails sent by the dispatcher through lettre to a real SMTP
//! server on loopback (the demo's mailbox), then parsed as a mail client would.

use mail_parser::{HeaderValue, MessageParser, MimeHeaders};
use reqwest::StatusCode;
use secrecy::SecretString;
use serde_json::{json, Value};
use std::time::Duration;

use shopper_bridge::channels::email::message_id;
use shopper_bridge::config::{Settings, SmtpTls};
use shopper_bridge::demo::mailbox::{Mail, Mailbox};
use shopper_bridge::domain::EventId;
use shopper_bridge::simulator::SimulatorConfig;

use crate::harness::{
    json_body, start_simulator, wait_for, wait_until, within, RunningSimulator, TestApp,
};

const TOKEN: &str = "simulator-static-token";
const FROM: &str = "Store 42 <chat@store.example>";
const REPLY_TO: &str = "help@store.example";
async fn mailbox() -> Mailbox {
    Mailbox::start().await.expect("the mailbox listens")
}

/// The bridge polling a simulator and mailing through `smtp`.
struct World {
    app: TestApp,
    sim: RunningSimulator,
}

async fn world(smtp: &Mailbox, configure: impl FnOnce(&mut Settings)) -> World {
    let sim = start_simulator(SimulatorConfig {
        orders: Vec::new(),
        static_token: Some(TOKEN.to_owned()),
        seed: Some(7),
        ..SimulatorConfig::default()
    })
    .await;
    let app = TestApp::builder()
        .with_simulator(&sim)
        // Every order is due again almost at once, so each test step can poll for news.
        .polling_continuously()
        .with_email(smtp.url(), FROM)
        .configure(|s| {
            s.delivery.retry_schedule = vec![Duration::from_millis(20); 3];
            s.delivery.retry_jitter = 0.0;
            s.email.tls = Some(SmtpTls::None);
            s.email.reply_to = Some(REPLY_TO.to_owned());
            s.email.timeout = Duration::from_secs(5);
        })
        .configure(configure)
        .spawn()
        .await;
    World { app, sim }
}

impl World {
    /// An e-mail subscriber to chat messages, with `extra` fields; returns its id.
    async fn subscribe(&self, to: &[&str], extra: Value) -> String {
        let mut body = json!({
            "kind": "email",
            "to": to,
            "event_types": ["chat_message.created"],
        });
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let created = self.app.create_subscriber(body).await;
        created["id"].as_str().unwrap().to_owned()
    }

    /// Watches a new order (the simulator greets the customer in it) and polls it.
    async fn start_order(&self, order: &str) {
        self.sim.handle.add_order(order);
        self.app.watch_order(order).await;
        self.poll_news().await;
    }

    /// A shopper's chat message in `order`, polled.
    async fn shopper_writes(&self, order: &str, body: &str) {
        self.sim.handle.add_chat_message(order, body);
        self.poll_news().await;
    }

    async fn poll_news(&self) {
        wait_until("a poll finds news", || async {
            self.app.poll_once().await.events_created > 0
        })
        .await;
    }

    /// The subscriber's deliveries, oldest first, with their attempts (through the API).
    async fn deliveries(&self, subscriber: &str) -> Vec<Value> {
        let path = format!("/v1/deliveries?subscriber_id={subscriber}");
        let listed = json_body(self.app.get(&path).await, StatusCode::OK).await;
        let mut data = listed["data"].as_array().unwrap().clone();
        data.reverse();
        data
    }

    /// Delivery rounds until none of the subscriber's deliveries is pending.
    async fn deliver_until_settled(&self, subscriber: &str) -> Vec<Value> {
        wait_for("no delivery is pending", || async {
            self.app.deliver_next().await;
            let deliveries = self.deliveries(subscriber).await;
            deliveries
                .iter()
                .all(|d| d["status"] != "pending")
                .then_some(deliveries)
        })
        .await
    }
}

fn event_id(delivery: &Value) -> EventId {
    EventId::from_stored(delivery["event_id"].as_str().unwrap().to_owned())
}

/// A received mail as a mail client reads it.
#[derive(Debug)]
struct Email {
    mail_from: String,
    rcpt_to: Vec<String>,
    from: Vec<(Option<String>, String)>,
    to: Vec<String>,
    reply_to: Vec<String>,
    subject: String,
    message_id: String,
    in_reply_to: Vec<String>,
    references: Vec<String>,
    root_type: String,
    text_type: String,
    html_type: String,
    text: String,
    html: String,
}

fn ids(value: &HeaderValue) -> Vec<String> {
    match value {
        HeaderValue::Text(id) => vec![format!("<{id}>")],
        HeaderValue::TextList(ids) => ids.iter().map(|id| format!("<{id}>")).collect(),
        _ => Vec::new(),
    }
}

fn addresses(address: Option<&mail_parser::Address>) -> Vec<(Option<String>, String)> {
    address
        .map(|a| {
            a.iter()
                .map(|addr| {
                    (
                        addr.name().map(str::to_owned),
                        addr.address().unwrap().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn content_type(part: &mail_parser::MessagePart) -> String {
    let ct = part.content_type().expect("a content type");
    format!("{}/{}", ct.c_type, ct.c_subtype.as_deref().unwrap_or(""))
}

fn parse(mail: &Mail) -> Email {
    let message = MessageParser::default()
        .parse(&mail.data)
        .expect("a parseable message");
    let text_part = message.text_part(0).expect("a text part");
    let html_part = message.html_part(0).expect("an HTML part");
    let only = |list: Vec<(Option<String>, String)>| list.into_iter().map(|(_, a)| a).collect();
    Email {
        mail_from: mail.mail_from.clone(),
        rcpt_to: mail.rcpt_to.clone(),
        from: addresses(message.from()),
        to: only(addresses(message.to())),
        reply_to: only(addresses(message.reply_to())),
        subject: message.subject().expect("a subject").to_owned(),
        message_id: format!("<{}>", message.message_id().expect("a Message-ID")),
        in_reply_to: ids(message.in_reply_to()),
        references: ids(message.references()),
        root_type: content_type(message.root_part()),
        text_type: content_type(text_part),
        html_type: content_type(html_part),
        text: text_part.text_contents().unwrap().to_owned(),
        html: html_part.text_contents().unwrap().to_owned(),
    }
}

// ---------------------------------------------------------------- the tests

#[tokio::test]
async fn an_event_is_mailed_as_plain_text_and_html_with_a_message_id_from_its_event_id() {
    let smtp = mailbox().await;
    let world = world(&smtp, |_| {}).await;
    let subscriber = world
        .subscribe(&["staff@store.example", "ops@store.example"], json!({}))
        .await;
    world.start_order("300001").await;
    world.deliver_until_settled(&subscriber).await;
    let body = r#"Bananas are <b>ripe</b> & "cheap" today"#;
    world.shopper_writes("300001", body).await;

    let deliveries = world.deliver_until_settled(&subscriber).await;
    assert_eq!(deliveries.len(), 2, "the greeting and the message");
    for delivery in &deliveries {
        assert_eq!(delivery["status"], "delivered", "{delivery}");
        assert_eq!(delivery["attempts"][0]["status_code"], 250, "{delivery}");
    }
    let mails = smtp.mails();
    assert_eq!(mails.len(), 2, "one e-mail per event");
    let email = parse(&mails[1]);

    assert_eq!(email.mail_from, "chat@store.example");
    assert_eq!(email.rcpt_to, ["staff@store.example", "ops@store.example"]);
    assert_eq!(
        email.from,
        [(Some("Store 42".to_owned()), "chat@store.example".to_owned())]
    );
    assert_eq!(email.to, ["staff@store.example", "ops@store.example"]);
    assert_eq!(email.reply_to, [REPLY_TO]);
    assert_eq!(
        email.message_id,
        format!("<{}@shopper-bridge>", event_id(&deliveries[1]))
    );
    assert!(email.subject.contains("300001"), "{email:?}");
    assert!(
        email.subject.contains("Bananas are <b>ripe</b>"),
        "{email:?}"
    );

    assert_eq!(email.root_type, "multipart/alternative");
    assert_eq!(email.text_type, "text/plain");
    assert_eq!(email.html_type, "text/html");
    assert!(email.text.contains(body), "{}", email.text);
    // What the shopper typed is text in the HTML part, never markup.
    assert!(
        email.html.contains("Bananas are &lt;b&gt;ripe"),
        "{}",
        email.html
    );
    assert!(!email.html.contains("<b>ripe"), "{}", email.html);
}

#[tokio::test]
async fn later_emails_about_an_order_reply_to_its_first_email() {
    let smtp = mailbox().await;
    let world = world(&smtp, |_| {}).await;
    let subscriber = world.subscribe(&["staff@store.example"], json!({})).await;

    world.start_order("300001").await;
    world.deliver_until_settled(&subscriber).await;
    world.shopper_writes("300001", "Out of oat milk").await;
    world.deliver_until_settled(&subscriber).await;
    world
        .shopper_writes("300001", "Took almond milk instead")
        .await;
    world.deliver_until_settled(&subscriber).await;
    world.start_order("300002").await;
    world.deliver_until_settled(&subscriber).await;

    let emails: Vec<Email> = within("four mails arrive", smtp.wait_for_mails(4))
        .await
        .iter()
        .map(parse)
        .collect();
    let root = &emails[0];
    assert!(root.in_reply_to.is_empty(), "{root:?}");
    assert!(root.references.is_empty(), "{root:?}");
    for reply in &emails[1..3] {
        assert_eq!(reply.in_reply_to, [root.message_id.as_str()], "{reply:?}");
        assert_eq!(reply.references, [root.message_id.as_str()], "{reply:?}");
        assert_ne!(reply.message_id, root.message_id);
    }
    let other_order = &emails[3];
    assert!(
        other_order.in_reply_to.is_empty(),
        "a new order, a new thread"
    );
    assert!(other_order.subject.contains("300002"), "{other_order:?}");
}

#[tokio::test]
async fn a_digest_sends_an_orders_events_within_its_window_as_one_email_in_order() {
    let smtp = mailbox().await;
    let world = world(&smtp, |_| {}).await;
    let digest = world
        .subscribe(&["digest@store.example"], json!({"digest_seconds": 2}))
        .await;
    let each = world.subscribe(&["each@store.example"], json!({})).await;

    world.start_order("300001").await;
    world
        .shopper_writes("300001", "Second: out of oat milk")
        .await;
    world
        .shopper_writes("300001", "Third: took almond milk")
        .await;

    // The fan-out made the window's deliveries due together, at its end.
    let pending = world.deliveries(&digest).await;
    assert_eq!(pending.len(), 3);
    for delivery in &pending {
        assert_eq!(
            delivery["next_attempt_at"], pending[0]["next_attempt_at"],
            "{delivery}"
        );
    }
    let first_created = crate::harness::timestamp(&pending[0]["created_at"]);
    let due_at = crate::harness::timestamp(&pending[0]["next_attempt_at"]);
    assert_eq!(due_at - first_created, chrono::TimeDelta::seconds(2));

    let delivered = world.deliver_until_settled(&digest).await;
    world.deliver_until_settled(&each).await;
    assert!(
        delivered.iter().all(|d| d["status"] == "delivered"),
        "{delivered:?}"
    );
    let attempts: Vec<&Value> = delivered.iter().map(|d| &d["attempts"][0]["at"]).collect();
    assert!(
        attempts.iter().all(|at| *at == attempts[0]),
        "one send for all three"
    );

    let emails: Vec<Email> = smtp.mails().iter().map(parse).collect();
    let (digests, singles): (Vec<&Email>, Vec<&Email>) = emails
        .iter()
        .partition(|e| e.rcpt_to == ["digest@store.example"]);
    assert_eq!(digests.len(), 1, "{digests:?}");
    assert_eq!(singles.len(), 3, "without a digest, one e-mail per event");

    let email = digests[0];
    let event_ids: Vec<EventId> = delivered.iter().map(event_id).collect();
    assert_eq!(email.message_id, message_id(&event_ids));
    assert!(email.subject.contains("3 updates"), "{email:?}");
    for part in [&email.text, &email.html] {
        let greeting = part.find("shopping for your order").expect("the greeting");
        let second = part.find("Second: out of oat milk").expect("the second");
        let third = part.find("Third: took almond milk").expect("the third");
        assert!(greeting < second && second < third, "in order: {part}");
    }
}

#[tokio::test]
async fn a_refused_recipient_parks_the_delivery_with_the_servers_reply() {
    let smtp = mailbox().await;
    smtp.refuse_recipient(
        "gone@store.example",
        "550 5.1.1 <gone@store.example>: Recipient address rejected: User unknown",
    );
    let world = world(&smtp, |_| {}).await;
    let subscriber = world
        .subscribe(&["staff@store.example", "gone@store.example"], json!({}))
        .await;
    world.start_order("300001").await;

    let deliveries = world.deliver_until_settled(&subscriber).await;
    let delivery = &deliveries[0];
    assert_eq!(delivery["status"], "failed", "{delivery}");
    assert_eq!(delivery["attempt_count"], 1, "not retried");
    let attempt = &delivery["attempts"][0];
    assert_eq!(attempt["outcome"], "failed");
    assert_eq!(attempt["status_code"], 550);
    let error = attempt["error"].as_str().unwrap();
    assert!(
        error.contains("Recipient address rejected: User unknown"),
        "{error}"
    );
    assert!(
        attempt["response_excerpt"]
            .as_str()
            .unwrap()
            .contains("User unknown"),
        "{attempt}"
    );
    assert!(smtp.mails().is_empty());
}

#[tokio::test]
async fn a_transient_451_is_retried_and_the_retry_delivers_the_same_message() {
    let smtp = mailbox().await;
    smtp.reply_to_next_data("451 4.3.0 Mail server temporarily rejected message");
    let world = world(&smtp, |_| {}).await;
    let subscriber = world.subscribe(&["staff@store.example"], json!({})).await;
    world.start_order("300001").await;

    world.app.deliver_next().await;
    let delivery = world.deliveries(&subscriber).await.remove(0);
    assert_eq!(delivery["status"], "pending", "{delivery}");
    assert_eq!(delivery["attempts"][0]["outcome"], "retry");
    assert_eq!(delivery["attempts"][0]["status_code"], 451);
    assert!(delivery["attempts"][0]["error"]
        .as_str()
        .unwrap()
        .contains("temporarily rejected"));

    let delivery = world.deliver_until_settled(&subscriber).await.remove(0);
    assert_eq!(delivery["status"], "delivered", "{delivery}");
    let outcomes: Vec<&Value> = delivery["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| &a["outcome"])
        .collect();
    assert_eq!(outcomes, [&json!("retry"), &json!("delivered")]);
    let mails = smtp.mails();
    assert_eq!(mails.len(), 1);
    assert_eq!(
        parse(&mails[0]).message_id,
        format!("<{}@shopper-bridge>", event_id(&delivery))
    );
}

#[tokio::test]
async fn an_unreachable_smtp_server_is_retried() {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let smtp = mailbox().await;
    let world = world(&smtp, |s| {
        s.email.smtp_url = Some(format!("smtp://{closed}").parse().unwrap());
    })
    .await;
    let subscriber = world.subscribe(&["staff@store.example"], json!({})).await;
    world.start_order("300001").await;

    world.app.deliver_next().await;
    let delivery = world.deliveries(&subscriber).await.remove(0);
    assert_eq!(delivery["status"], "pending", "{delivery}");
    let attempt = &delivery["attempts"][0];
    assert_eq!(attempt["outcome"], "retry");
    assert_eq!(attempt["status_code"], json!(null));
    assert!(
        attempt["error"].as_str().unwrap().contains("onnection"),
        "{attempt}"
    );
}

/// A mailbox that takes `bridge` with `password` only, and the bridge logging in with `given`:
/// the first chat message's delivery to an e-mail subscriber, once settled.
async fn deliver_logging_in(password: &str, given: &str) -> (Mailbox, World, Value) {
    let smtp = mailbox().await;
    smtp.require_login("bridge", password);
    let world = world(&smtp, |s| {
        s.email.username = Some("bridge".to_owned());
        s.email.password = Some(SecretString::from(given.to_owned()));
    })
    .await;
    let subscriber = world.subscribe(&["staff@store.example"], json!({})).await;
    world.start_order("300001").await;
    let delivery = world.deliver_until_settled(&subscriber).await.remove(0);
    (smtp, world, delivery)
}

#[tokio::test]
async fn the_configured_credentials_log_in_and_a_refused_login_never_shows_the_password() {
    let (smtp, _accepting, delivery) =
        deliver_logging_in("correct horse battery", "correct horse battery").await;
    assert_eq!(delivery["status"], "delivered", "{delivery}");
    assert_eq!(
        smtp.logins(),
        [("bridge".to_owned(), "correct horse battery".to_owned())]
    );

    let (_refusing, refusing_world, delivery) =
        deliver_logging_in("the real one", "a wrong guess").await;
    assert_eq!(delivery["status"], "failed", "{delivery}");
    assert_eq!(delivery["attempts"][0]["status_code"], 535);
    let listed = refusing_world
        .app
        .get("/v1/deliveries")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        listed.contains("Authentication credentials invalid"),
        "{listed}"
    );
    assert!(!listed.contains("a wrong guess"), "{listed}");
}

/// Makes valid settings invalid one way.
type Breaks = fn(&mut Settings);

#[test]
fn email_settings_are_checked_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let valid = || {
        let mut settings = crate::harness::test_settings(dir.path());
        settings.email.smtp_url = Some("smtp://mail.store.example".parse().unwrap());
        settings.email.from = Some(FROM.to_owned());
        settings
    };
    valid().validate().expect("a complete [email] section");
    assert_eq!(valid().email.tls_mode(), SmtpTls::Starttls);
    let mut implicit = valid();
    implicit.email.smtp_url = Some("smtps://mail.store.example".parse().unwrap());
    assert_eq!(implicit.email.tls_mode(), SmtpTls::Tls);
    let mut unset = crate::harness::test_settings(dir.path());
    unset.email.from = Some("not checked while e-mail is off".to_owned());
    unset.validate().expect("no smtp_url: e-mail is off");

    let cases: [(&str, Breaks); 7] = [
        ("`email.smtp_url` must use smtp:// or smtps://", |s| {
            s.email.smtp_url = Some("https://mail.store.example".parse().unwrap());
        }),
        ("`email.smtp_url` must not embed credentials", |s| {
            s.email.smtp_url = Some("smtp://me:pw@mail.store.example".parse().unwrap());
        }),
        ("`email.from` is required when email.smtp_url is set", |s| {
            s.email.from = None;
        }),
        ("`email.from` must be a mailbox", |s| {
            s.email.from = Some("Store 42".to_owned());
        }),
        ("`email.reply_to` must be a mailbox", |s| {
            s.email.reply_to = Some("help at store".to_owned());
        }),
        (
            "`email.tls` must be tls (or left out) with an smtps:// URL",
            |s| {
                s.email.smtp_url = Some("smtps://mail.store.example".parse().unwrap());
                s.email.tls = Some(SmtpTls::Starttls);
            },
        ),
        (
            "`email.password` is required when email.username is set",
            |s| {
                s.email.username = Some("bridge".to_owned());
            },
        ),
    ];
    for (expected, break_it) in cases {
        let mut settings = valid();
        break_it(&mut settings);
        let error = settings.validate().unwrap_err().to_string();
        assert!(error.contains(expected), "{error} lacks {expected}");
    }
}
