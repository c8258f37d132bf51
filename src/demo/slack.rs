//! The demo's stand-in for a Slack incoming webhook: it takes the JSON the bridge posts, answers
//! as Slack does (`ok`, or a 400 naming what Slack would refuse), and prints the message's
//! `text` fallback and a compact rendering of its Block Kit blocks.

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use rand::distributions::{Alphanumeric, DistString};
use serde_json::Value;

use super::Receiver;

/// Slack refuses a message with more blocks than this, or a section text longer than that.
const MAX_BLOCKS: usize = 50;
const MAX_SECTION_CHARS: usize = 3000;

/// A path shaped like a real incoming webhook's, `/services/T…/B…/<token>`.
pub fn webhook_path() -> String {
    let token = Alphanumeric.sample_string(&mut rand::thread_rng(), 24);
    format!("/services/TDEMO0000/BDEMO0000/{token}")
}

/// Only `path` is a webhook; like Slack, anything else is answered 404 `no_service`.
pub fn router(path: &str) -> Router {
    Router::new()
        .route(path, post(receive))
        .fallback(|| async { (StatusCode::NOT_FOUND, "no_service") })
}

async fn receive(body: Bytes) -> (StatusCode, &'static str) {
    let message = match serde_json::from_slice::<Value>(&body) {
        Ok(message) if message.is_object() => message,
        _ => return refuse("invalid_payload", "the body is not a JSON object"),
    };
    let text = message["text"].as_str().unwrap_or_default();
    let blocks = message["blocks"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    if text.is_empty() && blocks.is_empty() {
        return refuse("no_text", "neither text nor blocks");
    }
    if blocks.len() > MAX_BLOCKS {
        return refuse("invalid_blocks", "more than 50 blocks");
    }
    let too_long = |block: &Value| {
        block["type"] == "section"
            && block["text"]["text"]
                .as_str()
                .unwrap_or_default()
                .chars()
                .count()
                > MAX_SECTION_CHARS
    };
    if blocks.iter().any(too_long) {
        return refuse("invalid_blocks", "a text over 3000 characters");
    }
    let mut lines = vec![format!(
        "✓ {} block{}, {} bytes of JSON · text: {}",
        blocks.len(),
        if blocks.len() == 1 { "" } else { "s" },
        body.len(),
        one_line(text)
    )];
    lines.extend(blocks.iter().flat_map(render));
    Receiver::Slack.print(&lines);
    (StatusCode::OK, "ok")
}

fn refuse(error: &'static str, why: &str) -> (StatusCode, &'static str) {
    Receiver::Slack.print(&[format!("✗ refused a message ({why}): {error}")]);
    (StatusCode::BAD_REQUEST, error)
}

/// A block as a few indented lines: its type, then its text as Slack would show it (mrkdwn
/// left as written); types the templates do not use are shown as JSON.
fn render(block: &Value) -> Vec<String> {
    let kind = block["type"].as_str().unwrap_or("?");
    let tag = format!("    [{kind}] ");
    let text = match kind {
        "section" | "header" => {
            let mut text = block["text"]["text"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if let Some(accessory) = block.get("accessory") {
                text.push_str(&format!("  {}", element(accessory)));
            }
            text
        }
        "context" => block["elements"]
            .as_array()
            .map(|elements| elements.iter().map(element).collect::<Vec<_>>().join(" · "))
            .unwrap_or_default(),
        "image" => element(block),
        "divider" => String::new(),
        _ => block.to_string(),
    };
    let continued = " ".repeat(tag.chars().count());
    let mut lines: Vec<String> = text
        .lines()
        .enumerate()
        .map(|(n, line)| format!("{}{line}", if n == 0 { &tag } else { &continued }))
        .collect();
    if lines.is_empty() {
        lines.push(tag.trim_end().to_owned());
    }
    lines
}

/// A text or image element, inline.
fn element(element: &Value) -> String {
    match element["type"].as_str() {
        Some("image") => format!(
            "⟨image {} “{}”⟩",
            element["image_url"].as_str().unwrap_or("?"),
            element["alt_text"].as_str().unwrap_or_default()
        ),
        _ => element["text"].as_str().unwrap_or_default().to_owned(),
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    async fn answer(message: Value) -> (StatusCode, &'static str) {
        receive(Bytes::from(message.to_string())).await
    }

    fn section(text: &str) -> Value {
        json!({"type": "section", "text": {"type": "mrkdwn", "text": text}})
    }

    #[tokio::test]
    async fn a_message_within_slacks_limits_is_answered_ok() {
        let blocks: Vec<Value> = (0..MAX_BLOCKS)
            .map(|_| section(&"x".repeat(3000)))
            .collect();
        let answered = answer(json!({"text": "fallback", "blocks": blocks})).await;
        assert_eq!(answered, (StatusCode::OK, "ok"));
    }

    #[tokio::test]
    async fn what_slack_refuses_is_refused_with_slacks_error() {
        let too_many: Vec<Value> = (0..=MAX_BLOCKS).map(|_| section("x")).collect();
        let cases = [
            (json!(["not", "an", "object"]), "invalid_payload"),
            (json!({"text": ""}), "no_text"),
            (json!({"text": "t", "blocks": too_many}), "invalid_blocks"),
            (
                json!({"text": "t", "blocks": [section(&"x".repeat(3001))]}),
                "invalid_blocks",
            ),
        ];
        for (message, error) in cases {
            assert_eq!(answer(message).await, (StatusCode::BAD_REQUEST, error));
        }
        let not_json = receive(Bytes::from_static(b"text=hello")).await;
        assert_eq!(not_json, (StatusCode::BAD_REQUEST, "invalid_payload"));
    }

    #[test]
    fn blocks_render_as_indented_lines_with_their_type() {
        let mut with_avatar = section("*Robert* wrote:");
        with_avatar["accessory"] =
            json!({"type": "image", "image_url": "https://a.example/r.jpg", "alt_text": "Robert"});
        let context = json!({"type": "context", "elements": [
            {"type": "mrkdwn", "text": "Order *1*"},
            {"type": "mrkdwn", "text": "customer Jo"},
        ]});
        let rendered: Vec<String> = [
            with_avatar,
            section("two\nlines"),
            context,
            json!({"type": "divider"}),
            json!({"type": "video", "title": "v"}),
        ]
        .iter()
        .flat_map(render)
        .collect();
        assert_eq!(
            rendered,
            [
                "    [section] *Robert* wrote:  ⟨image https://a.example/r.jpg “Robert”⟩",
                "    [section] two",
                "              lines",
                "    [context] Order *1* · customer Jo",
                "    [divider]",
                r#"    [video] {"title":"v","type":"video"}"#,
            ]
        );
    }
}
