use chrono::{TimeDelta, Utc};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;

use shopper_bridge::domain::{AttemptRecord, AttemptResolution};
use shopper_bridge::domain::{SigningSecret, SubscriberId};

use crate::harness::{errors, json_body, single_error, spawn_app, timestamp, TestApp};

fn field_errors(found: &[crate::harness::ErrorItem]) -> Vec<(String, String)> {
    found
        .iter()
        .map(|e| {
            assert_eq!(e.code, "invalid_field");
            (e.field.clone().unwrap_or_default(), e.message.clone())
        })
        .collect()
}

#[tokio::test]
async fn creating_a_webhook_subscriber_shows_its_secret_only_then() {
    let app = spawn_app().await;
    let created = app
        .create_subscriber(json!({
            "kind": "webhook",
            "url": "https://hooks.example.com/instacart",
            "event_types": ["chat_message.created", "order.chat_expired"],
            "order_ids": ["122233"],
            "description": "ops channel",
        }))
        .await;

    let secret = created["secret"].as_str().expect("secret on creation");
    SigningSecret::parse("secret", secret).expect("a whsec_ secret");
    let id = created["id"].as_str().unwrap();
    SubscriberId::parse("id", id).expect("a subscriber id");
    assert_eq!(created["kind"], "webhook");
    assert_eq!(created["url"], "https://hooks.example.com/instacart");
    assert_eq!(
        created["event_types"],
        json!(["chat_message.created", "order.chat_expired"])
    );
    assert_eq!(created["order_ids"], json!(["122233"]));
    assert_eq!(created["description"], "ops channel");
    assert_eq!(created["status"], "active");
    assert_eq!(created["disabled_reason"], json!(null));
    assert_eq!(created["signing_secrets"].as_array().unwrap().len(), 1);
    assert_eq!(created["signing_secrets"][0]["expires_at"], json!(null));

    let fetched = app.get(&format!("/v1/subscribers/{id}")).await;
    let fetched_text = fetched.text().await.unwrap();
    let listed_text = app.get("/v1/subscribers").await.text().await.unwrap();
    for text in [&fetched_text, &listed_text] {
        assert!(!text.contains(secret), "secret leaked: {text}");
        assert!(!text.contains("whsec_"), "secret leaked: {text}");
    }
    let fetched: Value = serde_json::from_str(&fetched_text).unwrap();
    let mut without_secret = created.clone();
    without_secret.as_object_mut().unwrap().remove("secret");
    assert_eq!(fetched, without_secret);
    let listed: Value = serde_json::from_str(&listed_text).unwrap();
    assert_eq!(listed["data"], json!([without_secret]));
}

#[tokio::test]
async fn filters_are_optional_and_null_means_everything() {
    let app = spawn_app().await;
    let created = app
        .create_subscriber(json!({
            "kind": "webhook",
            "url": "https://hooks.example.com/a",
            "event_types": null,
        }))
        .await;
    assert_eq!(created["event_types"], json!(null));
    assert_eq!(created["order_ids"], json!(null));
    assert_eq!(created["description"], json!(null));
}

#[tokio::test]
async fn invalid_subscribers_are_a_422_naming_every_bad_field() {
    let app = spawn_app().await;
    let response = app
        .post(
            "/v1/subscribers",
            &json!({
                "kind": "webhook",
                "url": "ftp://hooks.example.com/x",
                "event_types": ["chat_message.created", "chat.created"],
                "order_ids": ["ok", "no/slash"],
            }),
        )
        .await;
    let found = errors(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    let found = field_errors(&found);
    assert_eq!(found.len(), 3, "{found:?}");
    assert_eq!(
        found[0],
        ("url".to_owned(), "`url` must use http or https".to_owned())
    );
    assert_eq!(found[1].0, "event_types[1]");
    assert!(
        found[1].1.contains("must be one of chat_message.created"),
        "{found:?}"
    );
    assert_eq!(found[2].0, "order_ids[1]");

    // Nothing was created.
    let listed = json_body(app.get("/v1/subscribers").await, StatusCode::OK).await;
    assert_eq!(listed["data"], json!([]));
}

#[tokio::test]
async fn unknown_kinds_missing_urls_and_empty_filters_are_refused() {
    let app = spawn_app().await;
    let cases = [
        (
            json!({"kind": "carrier_pigeon", "url": "https://a.example"}),
            "kind",
            "`kind` must be one of webhook, slack, email",
        ),
        (
            json!({"kind": "webhook"}),
            "url",
            "`url` is required for webhook subscribers",
        ),
        (
            json!({"kind": "webhook", "url": "https://a.example", "event_types": []}),
            "event_types",
            "`event_types` must not be empty (leave it out, or null, to match everything)",
        ),
        (
            json!({"kind": "webhook", "url": "https://a.example", "description": "x".repeat(501)}),
            "description",
            "`description` must be at most 500 characters long",
        ),
    ];
    for (body, field, message) in cases {
        let found = errors(
            app.post("/v1/subscribers", &body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert_eq!(
            field_errors(&found),
            [(field.to_owned(), message.to_owned())],
            "{body}"
        );
    }
}

#[tokio::test]
async fn private_targets_are_refused_unless_the_deployment_allows_them() {
    let app = TestApp::builder()
        .configure(|s| s.delivery.allow_private_targets = false)
        .spawn()
        .await;
    let response = app
        .post(
            "/v1/subscribers",
            &json!({"kind": "webhook", "url": "http://169.254.169.254/latest"}),
        )
        .await;
    let found = errors(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    let found = field_errors(&found);
    assert_eq!(found[0].0, "url");
    assert!(found[0].1.contains("private"), "{found:?}");

    let allowed = TestApp::builder()
        .configure(|s| s.delivery.allow_private_targets = true)
        .spawn()
        .await;
    allowed
        .create_subscriber(json!({"kind": "webhook", "url": "http://169.254.169.254/latest"}))
        .await;
}

#[tokio::test]
async fn patch_changes_what_it_names_and_null_clears_a_filter() {
    let app = spawn_app().await;
    let created = app
        .create_subscriber(json!({
            "kind": "webhook",
            "url": "https://hooks.example.com/a",
            "event_types": ["chat_message.created"],
            "order_ids": ["122233"],
            "description": "first",
        }))
        .await;
    let path = format!("/v1/subscribers/{}", created["id"].as_str().unwrap());

    let response = app
        .patch(
            &path,
            &json!({
                "url": "https://hooks.example.com/b",
                "event_types": ["chat_message.read", "chat_message.read"],
                "order_ids": null,
            }),
        )
        .await;
    let updated = json_body(response, StatusCode::OK).await;
    assert_eq!(updated["url"], "https://hooks.example.com/b");
    assert_eq!(updated["event_types"], json!(["chat_message.read"]));
    assert_eq!(updated["order_ids"], json!(null));
    assert_eq!(updated["description"], "first", "absent fields stay");
    assert!(timestamp(&updated["updated_at"]) >= timestamp(&created["updated_at"]));
    assert!(updated.get("secret").is_none());

    let fetched = json_body(app.get(&path).await, StatusCode::OK).await;
    assert_eq!(fetched, updated);

    let response = app.patch(&path, &json!({"description": null})).await;
    assert_eq!(
        json_body(response, StatusCode::OK).await["description"],
        json!(null)
    );
}

#[tokio::test]
async fn patch_validates_like_create() {
    let app = spawn_app().await;
    let created = app.create_webhook().await;
    let path = format!("/v1/subscribers/{}", created["id"].as_str().unwrap());
    let response = app
        .patch(
            &path,
            &json!({"url": "not a url", "status": "paused", "order_ids": []}),
        )
        .await;
    let found = errors(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    let fields: Vec<_> = field_errors(&found).into_iter().map(|(f, _)| f).collect();
    assert_eq!(fields, ["url", "order_ids", "status"]);

    let response = app.patch(&path, &json!({"kind": "webhook"})).await;
    let error = single_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    assert!(error.message.contains("unknown field `kind`"), "{error:?}");

    // Unchanged.
    let fetched = json_body(app.get(&path).await, StatusCode::OK).await;
    assert_eq!(fetched["url"], created["url"]);
}

#[tokio::test]
async fn a_subscriber_disabled_by_a_410_is_re_enabled_through_patch() {
    let app = spawn_app().await;
    let created = app.create_webhook().await;
    let id = created["id"].as_str().unwrap();
    app.watch_order("122233").await;
    app.seed_chat_message("122233", 1).await;
    // The dispatcher's record of a receiver answering 410 Gone.
    let now = Utc::now();
    let claimed = app
        .store
        .claim_due_deliveries(now, now + TimeDelta::seconds(30), 10)
        .await
        .unwrap();
    let reason = "receiver answered 410 Gone";
    app.store
        .record_attempts(&[AttemptRecord {
            delivery_id: claimed[0].id.clone(),
            claim: claimed[0].claim.clone(),
            at: now,
            resolution: AttemptResolution::Failed,
            status_code: Some(410),
            response_excerpt: None,
            error: None,
            disable_subscriber: Some((SubscriberId::parse("id", id).unwrap(), reason.to_owned())),
        }])
        .await
        .unwrap();

    let path = format!("/v1/subscribers/{id}");
    let disabled = json_body(app.get(&path).await, StatusCode::OK).await;
    assert_eq!(disabled["status"], "disabled");
    assert_eq!(disabled["disabled_reason"], reason);

    let response = app.patch(&path, &json!({"status": "active"})).await;
    let enabled = json_body(response, StatusCode::OK).await;
    assert_eq!(enabled["status"], "active");
    assert_eq!(enabled["disabled_reason"], json!(null));

    let response = app.patch(&path, &json!({"status": "disabled"})).await;
    assert_eq!(
        json_body(response, StatusCode::OK).await["status"],
        "disabled"
    );
}

#[tokio::test]
async fn deleting_a_subscriber_makes_it_unknown() {
    let app = spawn_app().await;
    let created = app.create_webhook().await;
    let id = created["id"].as_str().unwrap();
    let path = format!("/v1/subscribers/{id}");

    assert_eq!(app.delete(&path).await.status(), StatusCode::NO_CONTENT);
    let error = single_error(app.get(&path).await, StatusCode::NOT_FOUND, "not_found").await;
    assert_eq!(error.message, format!("subscriber `{id}` was not found"));
    single_error(app.delete(&path).await, StatusCode::NOT_FOUND, "not_found").await;
    let response = app.patch(&path, &json!({"description": "x"})).await;
    single_error(response, StatusCode::NOT_FOUND, "not_found").await;
    let response = app.post(&format!("{path}/secret/rotate"), &json!({})).await;
    single_error(response, StatusCode::NOT_FOUND, "not_found").await;
    single_error(
        app.get("/v1/subscribers/sub_not-an-id").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn rotating_returns_a_new_secret_and_the_old_one_signs_through_the_grace() {
    let grace = Duration::from_secs(3600);
    let app = TestApp::builder()
        .configure(|s| s.delivery.secret_rotation_grace = grace)
        .spawn()
        .await;
    let created = app.create_webhook().await;
    let id = created["id"].as_str().unwrap();
    let old_secret = created["secret"].as_str().unwrap();

    let before = Utc::now();
    let response = app
        .post(&format!("/v1/subscribers/{id}/secret/rotate"), &json!({}))
        .await;
    let rotated = json_body(response, StatusCode::OK).await;
    let new_secret = rotated["secret"].as_str().expect("the new secret");
    SigningSecret::parse("secret", new_secret).unwrap();
    assert_ne!(new_secret, old_secret);

    let fetched = json_body(
        app.get(&format!("/v1/subscribers/{id}")).await,
        StatusCode::OK,
    )
    .await;
    assert!(fetched.get("secret").is_none());
    let secrets = fetched["signing_secrets"].as_array().unwrap();
    assert_eq!(secrets.len(), 2, "{fetched}");
    assert_eq!(secrets[0]["expires_at"], json!(null), "newest first");
    let expires = timestamp(&secrets[1]["expires_at"]);
    let grace = TimeDelta::from_std(grace).unwrap();
    assert!(
        expires >= before + grace - TimeDelta::seconds(1),
        "{expires}"
    );
    assert!(expires <= Utc::now() + grace, "{expires}");

    // Both sign, as the dispatcher sees them.
    let stored = app
        .store
        .get_subscriber(&SubscriberId::parse("id", id).unwrap())
        .await
        .unwrap()
        .unwrap();
    let signing: Vec<_> = stored
        .signing_secrets(Utc::now())
        .iter()
        .map(|s| s.expose().to_owned())
        .collect();
    assert_eq!(signing, [new_secret, old_secret]);
}

/// An app whose e-mail is configured (nothing connects to the SMTP server in these tests).
async fn spawn_app_with_email() -> crate::harness::TestApp {
    TestApp::builder()
        .with_email(
            "smtp://127.0.0.1:2525".parse().unwrap(),
            "Store 42 <chat@store.example>",
        )
        .spawn()
        .await
}

#[tokio::test]
async fn an_email_subscriber_has_recipients_and_no_signing_secret() {
    let app = spawn_app_with_email().await;
    let created = app
        .create_subscriber(json!({
            "kind": "email",
            "to": ["staff@store.example", "ops@store.example", "STAFF@store.example"],
            "digest_seconds": 300,
            "event_types": ["chat_message.created"],
        }))
        .await;
    assert_eq!(created["kind"], "email");
    assert_eq!(
        created["to"],
        json!(["staff@store.example", "ops@store.example"]),
        "repeats dropped"
    );
    assert_eq!(created["digest_seconds"], 300);
    assert!(created.get("secret").is_none(), "{created}");
    assert!(created.get("signing_secrets").is_none(), "{created}");
    assert!(created.get("url").is_none(), "{created}");

    let id = created["id"].as_str().unwrap();
    let fetched = json_body(
        app.get(&format!("/v1/subscribers/{id}")).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(fetched, created);

    let response = app
        .post(&format!("/v1/subscribers/{id}/secret/rotate"), &json!({}))
        .await;
    let error = single_error(response, StatusCode::CONFLICT, "conflict").await;
    assert_eq!(
        error.message,
        "only webhook subscribers have signing secrets"
    );
}

#[tokio::test]
async fn a_bad_email_address_is_a_422_naming_it() {
    let app = spawn_app_with_email().await;
    let response = app
        .post(
            "/v1/subscribers",
            &json!({
                "kind": "email",
                "to": ["staff@store.example", "staff at store", "Ops <ops@store.example>"],
                "digest_seconds": 0,
                "url": "https://hooks.example.com/a",
            }),
        )
        .await;
    let found = field_errors(&errors(response, StatusCode::UNPROCESSABLE_ENTITY).await);
    assert_eq!(
        found,
        [
            (
                "url".to_owned(),
                "`url` applies to webhook subscribers only".to_owned()
            ),
            (
                "to[1]".to_owned(),
                "`to[1]` must be an e-mail address like staff@store.example, \
                 not \"staff at store\""
                    .to_owned()
            ),
            (
                "to[2]".to_owned(),
                "`to[2]` must be an e-mail address like staff@store.example, \
                 not \"Ops <ops@store.example>\""
                    .to_owned()
            ),
            (
                "digest_seconds".to_owned(),
                "`digest_seconds` must be between 1 and 86400 (or left out, or null)".to_owned()
            ),
        ]
    );

    for (body, field, message) in [
        (
            json!({"kind": "email"}),
            "to",
            "`to` is required for email subscribers",
        ),
        (
            json!({"kind": "email", "to": []}),
            "to",
            "`to` must list at least one address",
        ),
        (
            json!({"kind": "webhook", "url": "https://a.example", "to": ["a@store.example"]}),
            "to",
            "`to` applies to email subscribers only",
        ),
    ] {
        let found = errors(
            app.post("/v1/subscribers", &body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert_eq!(
            field_errors(&found),
            [(field.to_owned(), message.to_owned())],
            "{body}"
        );
    }
    let listed = json_body(app.get("/v1/subscribers").await, StatusCode::OK).await;
    assert_eq!(listed["data"], json!([]));
}

#[tokio::test]
async fn email_subscribers_are_refused_while_email_is_not_configured() {
    let app = spawn_app().await;
    let response = app
        .post(
            "/v1/subscribers",
            &json!({"kind": "email", "to": ["staff@store.example"]}),
        )
        .await;
    let found = field_errors(&errors(response, StatusCode::UNPROCESSABLE_ENTITY).await);
    assert_eq!(
        found,
        [(
            "kind".to_owned(),
            "`kind` email needs e-mail set up on this server (email.smtp_url)".to_owned()
        )]
    );
}

#[tokio::test]
async fn patching_an_email_subscriber_changes_only_its_own_fields() {
    let app = spawn_app_with_email().await;
    let created = app
        .create_subscriber(json!({
            "kind": "email",
            "to": ["staff@store.example"],
            "digest_seconds": 60,
        }))
        .await;
    let path = format!("/v1/subscribers/{}", created["id"].as_str().unwrap());

    let response = app
        .patch(
            &path,
            &json!({"to": ["ops@store.example", "night@store.example"]}),
        )
        .await;
    let updated = json_body(response, StatusCode::OK).await;
    assert_eq!(
        updated["to"],
        json!(["ops@store.example", "night@store.example"])
    );
    assert_eq!(updated["digest_seconds"], 60, "absent fields stay");

    let response = app.patch(&path, &json!({"digest_seconds": null})).await;
    let updated = json_body(response, StatusCode::OK).await;
    assert_eq!(updated["digest_seconds"], json!(null));
    assert_eq!(
        updated["to"],
        json!(["ops@store.example", "night@store.example"])
    );

    let response = app
        .patch(
            &path,
            &json!({"to": ["fine@store.example", "nope"], "url": "https://a.example"}),
        )
        .await;
    let fields: Vec<_> = field_errors(&errors(response, StatusCode::UNPROCESSABLE_ENTITY).await)
        .into_iter()
        .map(|(f, _)| f)
        .collect();
    assert_eq!(fields, ["url"], "a field of another kind is refused first");
    let response = app
        .patch(&path, &json!({"to": ["fine@store.example", "nope"]}))
        .await;
    let found = field_errors(&errors(response, StatusCode::UNPROCESSABLE_ENTITY).await);
    assert_eq!(found[0].0, "to[1]");
    let fetched = json_body(app.get(&path).await, StatusCode::OK).await;
    assert_eq!(
        fetched["to"],
        json!(["ops@store.example", "night@store.example"])
    );

    let webhook = app.create_webhook().await;
    let response = app
        .patch(
            &format!("/v1/subscribers/{}", webhook["id"].as_str().unwrap()),
            &json!({"digest_seconds": 60}),
        )
        .await;
    let found = field_errors(&errors(response, StatusCode::UNPROCESSABLE_ENTITY).await);
    assert_eq!(
        found,
        [(
            "digest_seconds".to_owned(),
            "`digest_seconds` applies to email subscribers only".to_owned()
        )]
    );
}
