//! What people see: e-mail and Slack messages rendered from the Jinja templates in the repo's
//! `templates/` folder (embedded at compile time), overridable file by file from a folder read at
//! start-up, so a retailer can restyle without rebuilding. `templates/README.md` documents the
//! variables.

mod builtin;
mod context;
mod sample;
mod slack;

use minijinja::syntax::SyntaxConfig;
use minijinja::value::{Serde, Value};
use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde::Serialize;
use serde_json::{json, Value as Json};
use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::domain::{EventId, EventType, OrderId};
pub use context::EventContext;
pub use slack::{remove_action, MARK_READ_ACTION};

/// The loaded, parsed templates; cheap to clone.
#[derive(Clone)]
pub struct Templates {
    inner: Arc<Inner>,
}

impl fmt::Debug for Templates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut files: Vec<_> = self.inner.origins.values().collect();
        files.sort();
        f.debug_struct("Templates").field("files", &files).finish()
    }
}

struct Inner {
    env: Environment<'static>,
    /// Where each template came from (an override's path, or the built-in name), for errors.
    origins: HashMap<String, String>,
}

/// An e-mail's three parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedEmail {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// A Slack message: `text` is the notification / fallback text, `blocks` the Block Kit blocks,
/// both within Slack's limits. Serializes as `{"text","blocks"}`, the core of a Slack payload.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SlackMessage {
    pub text: String,
    pub blocks: Vec<Json>,
}

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("templates folder {} does not exist or is not a folder", dir.display())]
    DirNotFound { dir: PathBuf },
    #[error("could not read template file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{file}:{line}: template syntax error: {detail}")]
    Syntax {
        file: String,
        line: usize,
        detail: String,
        #[source]
        source: minijinja::Error,
    },
    #[error("{file}:{line}: could not render: {detail}")]
    Render {
        file: String,
        line: usize,
        detail: String,
        #[source]
        source: minijinja::Error,
    },
    #[error("{file} did not render to a JSON array of Slack blocks")]
    SlackBlocks {
        file: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("event {event_id} has a payload that is not an event")]
    Payload {
        event_id: EventId,
        #[source]
        source: serde_json::Error,
    },
    #[error("event {event_id} ({event_type}) has no `{field}`")]
    MissingField {
        event_id: EventId,
        event_type: EventType,
        field: &'static str,
    },
    #[error("a digest needs at least one event")]
    EmptyDigest,
    #[error("a digest is about one order, but got events of {first} and {other}")]
    MixedOrders { first: OrderId, other: OrderId },
}

impl Templates {
    /// Built-in defaults (the repo's templates/ embedded at compile time) overridden file by file
    /// by `dir` when given. Every template is parsed now, and then rendered once against sample
    /// events of every type, so a syntax error, a missing include or invalid Slack JSON is
    /// reported here with the file name and line, never at the first event. An explicitly given
    /// dir that does not exist is an error.
    #[tracing::instrument(skip_all, fields(dir = ?dir))]
    pub fn load(dir: Option<&Path>) -> Result<Templates, TemplateError> {
        let mut sources: Vec<Source> = builtin::TEMPLATES
            .iter()
            .map(|(name, text)| Source {
                name: name.to_string(),
                origin: format!("built-in templates/{name}"),
                text: text.to_string(),
            })
            .collect();
        if let Some(dir) = dir {
            if !dir.is_dir() {
                return Err(TemplateError::DirNotFound {
                    dir: dir.to_path_buf(),
                });
            }
            read_overrides(dir, dir, &mut sources)?;
        }

        let mut env = environment();
        let mut origins = HashMap::new();
        // Later entries (overrides) replace earlier ones (built-ins) of the same name.
        for Source { name, origin, text } in sources {
            env.add_template_owned(name.clone(), text)
                .map_err(|source| TemplateError::Syntax {
                    file: origin.clone(),
                    line: source.line().unwrap_or(0),
                    detail: source.detail().unwrap_or_default().to_owned(),
                    source,
                })?;
            origins.insert(name, origin);
        }
        let templates = Templates {
            inner: Arc::new(Inner { env, origins }),
        };
        templates.check()?;
        tracing::debug!(count = templates.inner.origins.len(), "templates loaded");
        Ok(templates)
    }

    pub fn email(&self, event: &EventContext) -> Result<RenderedEmail, TemplateError> {
        let ctx = Value::from(Serde(single_context(event)));
        // The frames include `email/<event type>.html` / `.txt` for the content.
        let subject = format!("email/{}.subject.txt", event.event_type());
        let parts = EmailParts {
            subject: &subject,
            text: "email/base.txt",
            html: "email/base.html",
        };
        self.render_email(parts, &ctx, event.order_id())
    }

    /// Several events of ONE order, oldest first, as one e-mail (digest).
    pub fn email_digest(&self, events: &[EventContext]) -> Result<RenderedEmail, TemplateError> {
        let (first, last) = match events {
            [first, .., last] => (first, last),
            [only] => (only, only),
            [] => return Err(TemplateError::EmptyDigest),
        };
        if let Some(other) = events.iter().find(|e| e.order_id() != first.order_id()) {
            return Err(TemplateError::MixedOrders {
                first: first.order_id().clone(),
                other: other.order_id().clone(),
            });
        }
        let views: Vec<_> = events.iter().map(EventContext::view).collect();
        let parties = last.view();
        let ctx = Value::from(Serde(json!({
            "digest": true,
            "events": views,
            "count": events.len(),
            "order_id": first.order_id(),
            "customer": parties.customer,
            "current_shopper": parties.current_shopper,
            "customer_name": parties.customer_name,
            "shopper_name": parties.shopper_name,
        })));
        let parts = EmailParts {
            subject: "email/digest.subject.txt",
            text: "email/digest.txt",
            html: "email/digest.html",
        };
        self.render_email(parts, &ctx, first.order_id())
    }

    pub fn slack(&self, event: &EventContext) -> Result<SlackMessage, TemplateError> {
        let mut ctx = single_context(event);
        slack::escape_context(&mut ctx);
        let ctx = Value::from(Serde(ctx));
        let prefix = format!("slack/{}", event.event_type());
        let blocks_name = format!("{prefix}.json");
        let rendered = self.render(&blocks_name, &ctx)?;
        let mut blocks: Vec<Json> =
            serde_json::from_str(&rendered).map_err(|source| TemplateError::SlackBlocks {
                file: self.origin(&blocks_name),
                source,
            })?;
        slack::enforce_limits(&mut blocks);
        let text = self.render(&format!("{prefix}.txt"), &ctx)?;
        let text = match text.trim() {
            "" => fallback(event.order_id()),
            text => slack::truncate(text, slack::MAX_MESSAGE_TEXT_CHARS)
                .unwrap_or_else(|| text.to_owned()),
        };
        Ok(SlackMessage { text, blocks })
    }

    fn render_email(
        &self,
        parts: EmailParts<'_>,
        ctx: &Value,
        order_id: &OrderId,
    ) -> Result<RenderedEmail, TemplateError> {
        // A subject is one header line, whatever the template or the text in it.
        let subject = self.render(parts.subject, ctx)?;
        let subject = subject.split_whitespace().collect::<Vec<_>>().join(" ");
        Ok(RenderedEmail {
            subject: if subject.is_empty() {
                fallback(order_id)
            } else {
                subject
            },
            text: self.render(parts.text, ctx)?,
            html: self.render(parts.html, ctx)?,
        })
    }

    fn render(&self, name: &str, ctx: &Value) -> Result<String, TemplateError> {
        let render_error = |source: minijinja::Error| {
            // An error in an included template arrives wrapped ("error in ..."): name the
            // innermost template, where the author has to look.
            let mut at = &source;
            while let Some(inner) = std::error::Error::source(at)
                .and_then(|e| e.downcast_ref::<minijinja::Error>())
                .filter(|e| e.name().is_some())
            {
                at = inner;
            }
            TemplateError::Render {
                file: self.origin(at.name().unwrap_or(name)),
                line: at.line().unwrap_or(0),
                detail: at.detail().unwrap_or_default().to_owned(),
                source,
            }
        };
        self.inner
            .env
            .get_template(name)
            .and_then(|t| t.render(ctx))
            .map_err(render_error)
    }

    fn origin(&self, name: &str) -> String {
        self.inner
            .origins
            .get(name)
            .cloned()
            .unwrap_or_else(|| name.to_owned())
    }

    /// Renders every entry point once against sample events, so errors that parsing cannot see
    /// (a missing include, an unknown filter, an undefined variable, invalid Slack JSON) stop
    /// start-up instead of the first delivery.
    fn check(&self) -> Result<(), TemplateError> {
        let events = sample::events();
        for event in &events {
            self.email(event)?;
            self.slack(event)?;
        }
        self.email_digest(&events)?;
        Ok(())
    }
}

/// One template file before parsing.
struct Source {
    /// Relative to the templates folder, `/`-separated: `email/base.html`.
    name: String,
    /// What errors call it: the override's path or the built-in's name.
    origin: String,
    text: String,
}

/// The entry templates of one kind of e-mail.
struct EmailParts<'a> {
    subject: &'a str,
    text: &'a str,
    html: &'a str,
}

fn fallback(order_id: &OrderId) -> String {
    format!("New event for order {order_id}")
}

fn single_context(event: &EventContext) -> Json {
    let view = event.view();
    json!({
        "digest": false,
        "event": view,
        "order_id": view.order_id,
        "customer": view.customer,
        "current_shopper": view.current_shopper,
        "customer_name": view.customer_name,
        "shopper_name": view.shopper_name,
    })
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_syntax(
        SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .expect("default delimiters are valid"),
    );
    // Printing an undefined variable is an error, caught by `Templates::check` at start-up,
    // instead of a silently empty spot in a message; `{% if x %}` still works for optional ones.
    env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
    env.set_auto_escape_callback(|name| {
        if name.starts_with("slack/") && name.ends_with(".json") {
            AutoEscape::Custom(slack::JSON_STRING.into())
        } else if name.ends_with(".html") {
            AutoEscape::Html
        } else {
            AutoEscape::None
        }
    });
    env.set_formatter(slack::formatter);
    env.add_filter("datetime", datetime);
    env.add_filter("truncate", |value: String, length: Option<usize>| {
        slack::truncate(&value, length.unwrap_or(80).max(1)).unwrap_or(value)
    });
    env
}

/// `{{ event.timestamp|datetime }}` → "2021-01-01 00:10 UTC"; takes a chrono format string.
fn datetime(value: String, format: Option<String>) -> Result<String, minijinja::Error> {
    let parsed = chrono::DateTime::parse_from_rfc3339(&value).map_err(|err| {
        minijinja::Error::new(
            minijinja::ErrorKind::InvalidOperation,
            format!("{value:?} is not an RFC 3339 time"),
        )
        .with_source(err)
    })?;
    let format = format.as_deref().unwrap_or("%Y-%m-%d %H:%M UTC");
    Ok(parsed
        .with_timezone(&chrono::Utc)
        .format(format)
        .to_string())
}

/// Adds every template file under `dir` (`.html`, `.txt`, `.json`) named by its path relative
/// to `root` with `/` separators, as the built-ins are.
fn read_overrides(root: &Path, dir: &Path, out: &mut Vec<Source>) -> Result<(), TemplateError> {
    let read_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TemplateError::Read { path, source }
    };
    let mut entries = std::fs::read_dir(dir)
        .and_then(|entries| entries.collect::<Result<Vec<_>, _>>())
        .map_err(read_error(dir))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        if path.is_dir() {
            read_overrides(root, &path, out)?;
            continue;
        }
        let is_template = path
            .extension()
            .is_some_and(|ext| ext == "html" || ext == "txt" || ext == "json");
        if !is_template {
            continue;
        }
        let text = std::fs::read_to_string(&path).map_err(read_error(&path))?;
        let name = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        out.push(Source {
            name,
            origin: path.display().to_string(),
            text,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_can_be_shared_across_tasks() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<Templates>();
        assert_send_sync::<EventContext>();
    }

    #[test]
    fn none_prints_as_nothing_in_every_kind_of_template() {
        let env = environment();
        for name in ["a.txt", "a.html", "slack/a.json"] {
            let out = env
                .render_named_str(name, "[{{ x }}]", Value::from(Serde(json!({"x": null}))))
                .unwrap();
            assert_eq!(out, "[]", "{name}");
        }
    }

    #[test]
    fn slack_json_values_are_written_as_string_content() {
        let ctx = Value::from(Serde(json!({"x": "a \"b\" \\ c\n", "n": 3})));
        let out = environment()
            .render_named_str("slack/a.json", r#"["{{ x }}", "{{ n }}"]"#, ctx)
            .unwrap();
        let parsed: Vec<String> = serde_json::from_str(&out).unwrap();
        assert_eq!(parsed, ["a \"b\" \\ c\n", "3"]);
    }
}
