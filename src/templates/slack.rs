//! Slack safety and limits: mrkdwn escaping of the context, JSON-string escaping of `.json`
//! templates, and Block Kit limits applied after rendering.

use minijinja::value::Value;
use minijinja::{AutoEscape, Error, Output, State};
use serde_json::Value as Json;

/// Auto-escape mode of `slack/*.json`: every `{{ value }}` is written as the content of a JSON
/// string (quotes, backslashes and control characters escaped), so authors write
/// `"text": "*{{ event.sender_name }}*"` and the document stays valid whatever the text.
pub(super) const JSON_STRING: &str = "json-string";

/// Fields holding URLs (already restricted to http(s), see `context::web_url`): they are used as
/// `image_url`s and link targets, where an HTML entity would break them.
const URL_KEYS: [&str; 3] = ["avatar_url", "sender_avatar", "image"];

/// Slack's limit is 3000 characters for section and context texts; staying below it leaves no
/// room for counting differences.
pub(super) const MAX_TEXT_CHARS: usize = 2999;
const MAX_HEADER_CHARS: usize = 150;
/// Slack cuts a message's top-level `text` beyond 40,000 characters; cut it cleanly first.
pub(super) const MAX_MESSAGE_TEXT_CHARS: usize = 40_000;
pub(super) const MAX_BLOCKS: usize = 50;

/// Slack's escaping for mrkdwn: `&`, `<` and `>` are the only control characters
/// (`<!channel>`, `<url|label>`, `<@U123>`), and entities for them are always shown as text.
pub(super) fn escape_mrkdwn(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes every string of a serialized context for mrkdwn, except URL fields, so no template
/// can forget to.
pub(super) fn escape_context(value: &mut Json) {
    match value {
        Json::String(s) => *s = escape_mrkdwn(s),
        Json::Array(items) => items.iter_mut().for_each(escape_context),
        Json::Object(map) => {
            for (key, item) in map.iter_mut() {
                if !URL_KEYS.contains(&key.as_str()) {
                    escape_context(item);
                }
            }
        }
        Json::Null | Json::Bool(_) | Json::Number(_) => {}
    }
}

/// The formatter of every template: `none` prints as nothing (an absent image is an empty spot,
/// not the word "none"), [`JSON_STRING`] escaping for Slack `.json` templates, minijinja's
/// default otherwise.
pub(super) fn formatter(out: &mut Output, state: &mut State, value: &Value) -> Result<(), Error> {
    if value.is_none() {
        return Ok(());
    }
    match state.auto_escape() {
        AutoEscape::Custom(name) if name == JSON_STRING && !value.is_safe() => {
            let quoted = Json::String(value.to_string()).to_string();
            out.write_str(&quoted[1..quoted.len() - 1])
                .map_err(Error::from)
        }
        _ => minijinja::escape_formatter(out, state, value),
    }
}

/// Applies Slack's limits to rendered blocks: at most [`MAX_BLOCKS`] blocks (later ones dropped)
/// and text objects cut to fit.
pub(super) fn enforce_limits(blocks: &mut Vec<Json>) {
    blocks.truncate(MAX_BLOCKS);
    for block in blocks.iter_mut() {
        let max = match block.get("type").and_then(Json::as_str) {
            Some("header") => MAX_HEADER_CHARS,
            _ => MAX_TEXT_CHARS,
        };
        if let Some(text) = block.get_mut("text") {
            truncate_text_object(text, max);
        }
        for list in ["fields", "elements"] {
            if let Some(Json::Array(items)) = block.get_mut(list) {
                items
                    .iter_mut()
                    .for_each(|item| truncate_text_object(item, max));
            }
        }
    }
}

fn truncate_text_object(object: &mut Json, max: usize) {
    if let Some(Json::String(text)) = object.get_mut("text") {
        if let Some(cut) = truncate(text, max) {
            *text = cut;
        }
    }
}

/// Cuts `text` to at most `max` characters ending in "…", at a character boundary and never
/// inside an entity (`&amp;`) or an unclosed `<...>` sequence, which Slack would show raw.
/// `None` when it already fits.
pub(super) fn truncate(text: &str, max: usize) -> Option<String> {
    if text.chars().count() <= max {
        return None;
    }
    let end = text
        .char_indices()
        .nth(max - 1)
        .map_or(text.len(), |(i, _)| i);
    let mut kept = &text[..end];
    if let Some(amp) = kept.rfind('&') {
        if !kept[amp..].contains(';') {
            kept = &kept[..amp];
        }
    }
    if let Some(open) = kept.rfind('<') {
        if !kept[open..].contains('>') {
            kept = &kept[..open];
        }
    }
    Some(format!("{}…", kept.trim_end()))
}

/// The `action_id` of the "Mark as read" button (see `templates/slack/chat_message.created.json`).
pub const MARK_READ_ACTION: &str = "mark_read";

/// Takes the buttons of `action_id` out of `blocks`, and the actions blocks that held only them.
pub fn remove_action(blocks: &mut Vec<Json>, action_id: &str) {
    for block in blocks.iter_mut() {
        if let Some(Json::Array(elements)) = block.get_mut("elements") {
            elements.retain(|element| element["action_id"] != action_id);
        }
    }
    blocks.retain(|block| {
        block["type"] != "actions" || block["elements"].as_array().is_some_and(|e| !e.is_empty())
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mrkdwn_control_characters_are_escaped() {
        assert_eq!(
            escape_mrkdwn("<!channel> & <https://evil|click>"),
            "&lt;!channel&gt; &amp; &lt;https://evil|click&gt;"
        );
    }

    #[test]
    fn url_fields_are_left_usable() {
        let mut ctx = serde_json::json!({
            "body": "a&b",
            "sender_avatar": "https://x.example/a?b=1&c=2",
            "customer": {"display_name": "<b>", "avatar_url": "https://x.example/?a&b"},
        });
        escape_context(&mut ctx);
        assert_eq!(ctx["body"], "a&amp;b");
        assert_eq!(ctx["sender_avatar"], "https://x.example/a?b=1&c=2");
        assert_eq!(ctx["customer"]["display_name"], "&lt;b&gt;");
        assert_eq!(ctx["customer"]["avatar_url"], "https://x.example/?a&b");
    }

    #[test]
    fn truncation_counts_characters_and_never_splits_an_entity() {
        assert_eq!(truncate("short", 10), None);
        assert_eq!(truncate("ééééé", 3).as_deref(), Some("éé…"));
        assert_eq!(truncate("ab&amp;cd", 5).as_deref(), Some("ab…"));
        assert_eq!(truncate("ab <https://x|y> z", 8).as_deref(), Some("ab…"));
    }

    #[test]
    fn removing_an_action_keeps_other_buttons_and_every_other_block() {
        let button = |id: &str| serde_json::json!({"type": "button", "action_id": id});
        let mut blocks = vec![
            serde_json::json!({"type": "section", "text": {"type": "mrkdwn", "text": "hi"}}),
            serde_json::json!({"type": "actions", "elements": [button(MARK_READ_ACTION)]}),
            serde_json::json!({"type": "actions", "elements": [button("other"), button(MARK_READ_ACTION)]}),
            serde_json::json!({"type": "context", "elements": [{"type": "mrkdwn", "text": "footer"}]}),
        ];
        remove_action(&mut blocks, MARK_READ_ACTION);
        assert_eq!(
            blocks,
            vec![
                serde_json::json!({"type": "section", "text": {"type": "mrkdwn", "text": "hi"}}),
                serde_json::json!({"type": "actions", "elements": [button("other")]}),
                serde_json::json!({"type": "context", "elements": [{"type": "mrkdwn", "text": "footer"}]}),
            ]
        );
    }
}
