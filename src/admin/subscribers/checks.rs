//! The rules a subscriber's fields must follow, each refusal naming the field.

use secrecy::{ExposeSecret, SecretString};

use crate::admin::error::Problems;
use crate::config::Settings;
use crate::domain::TargetFields;
use crate::domain::{Channel, MarkReadPolicy, SubscriberStatus};
use crate::domain::{EmailAddress, ValidationError, WebhookUrl};

/// Longest accepted filter list and description.
use super::views::{CreateSubscriberRequest, UpdateSubscriberRequest};

const MAX_FILTER_ENTRIES: usize = 1000;
const MAX_DESCRIPTION_CHARS: usize = 500;
/// Most recipients of an e-mail subscriber, and the longest digest window (a day).
const MAX_RECIPIENTS: usize = 50;
const MAX_DIGEST_SECONDS: u32 = 86_400;

pub(super) fn check_channel(
    problems: &mut Problems,
    request: &CreateSubscriberRequest,
    settings: &Settings,
) -> Option<Channel> {
    let allow_private = settings.delivery.allow_private_targets;
    match request.kind.as_str() {
        "email" => check_email(problems, request, settings),
        _ => problems.check(check_target(request, allow_private)),
    }
}

/// A webhook's or a Slack subscriber's target.
pub(super) fn check_target(
    request: &CreateSubscriberRequest,
    allow_private: bool,
) -> Result<Channel, ValidationError> {
    let slack = slack_fields(&request.webhook_url, &request.bot_token, &request.channel);
    if let Some(field) = email_field(request.to.is_some(), request.digest_seconds.is_some()) {
        if matches!(request.kind.as_str(), "webhook" | "slack") {
            return Err(foreign(field, "email"));
        }
    }
    match request.kind.as_str() {
        "webhook" => {
            if let Some(field) = slack.first_given() {
                return Err(foreign(field, "slack"));
            }
            let url = request.url.as_deref().ok_or_else(|| {
                ValidationError::new("url", "is required for webhook subscribers")
            })?;
            Ok(webhook(WebhookUrl::parse("url", url, allow_private)?))
        }
        "slack" => {
            if request.url.is_some() {
                return Err(foreign("url", "webhook"));
            }
            Ok(Channel::Slack {
                target: slack.target(allow_private)?,
            })
        }
        _ => Err(ValidationError::new(
            "kind",
            "must be one of webhook, slack, email",
        )),
    }
}

/// The first e-mail-only field given.
pub(super) fn email_field(to: bool, digest_seconds: bool) -> Option<&'static str> {
    [("to", to), ("digest_seconds", digest_seconds)]
        .into_iter()
        .find_map(|(field, given)| given.then_some(field))
}

/// An e-mail subscriber's recipients and digest window; every bad address is named.
pub(super) fn check_email(
    problems: &mut Problems,
    request: &CreateSubscriberRequest,
    settings: &Settings,
) -> Option<Channel> {
    let slack = slack_fields(&request.webhook_url, &request.bot_token, &request.channel);
    let others = problems.check(match (request.url.is_some(), slack.first_given()) {
        (true, _) => Err(foreign("url", "webhook")),
        (false, Some(field)) => Err(foreign(field, "slack")),
        (false, None) => Ok(()),
    });
    // Refused up front: its deliveries could only be parked.
    let configured = problems.check(match settings.email.smtp_url {
        Some(_) => Ok(()),
        None => Err(ValidationError::new(
            "kind",
            "email needs e-mail set up on this server (email.smtp_url)",
        )),
    });
    let to = match &request.to {
        Some(raw) => check_recipients(problems, raw),
        None => problems.check(Err(ValidationError::new(
            "to",
            "is required for email subscribers",
        ))),
    };
    let digest_seconds = problems.check(check_digest(request.digest_seconds));
    others?;
    configured?;
    Some(Channel::Email {
        to: to?,
        digest_seconds: digest_seconds?,
    })
}

/// The recipients: at least one, each a plain address (`to[i]` names a bad one), no repeats.
pub(super) fn check_recipients(problems: &mut Problems, raw: &[String]) -> Option<Vec<String>> {
    if raw.is_empty() {
        return problems.check(Err(ValidationError::new(
            "to",
            "must list at least one address",
        )));
    }
    if raw.len() > MAX_RECIPIENTS {
        return problems.check(Err(ValidationError::new(
            "to",
            format!("must list at most {MAX_RECIPIENTS} addresses"),
        )));
    }
    let parsed = problems.check_each(
        raw.iter()
            .enumerate()
            .map(|(i, value)| EmailAddress::parse(&format!("to[{i}]"), value)),
    )?;
    let mut unique: Vec<String> = Vec::with_capacity(parsed.len());
    for address in parsed {
        let address = String::from(address);
        if !unique.iter().any(|u| u.eq_ignore_ascii_case(&address)) {
            unique.push(address);
        }
    }
    Some(unique)
}

pub(super) fn check_digest(digest_seconds: Option<u32>) -> Result<Option<u32>, ValidationError> {
    match digest_seconds {
        Some(seconds) if !(1..=MAX_DIGEST_SECONDS).contains(&seconds) => Err(ValidationError::new(
            "digest_seconds",
            format!("must be between 1 and {MAX_DIGEST_SECONDS} (or left out, or null)"),
        )),
        _ => Ok(digest_seconds),
    }
}

/// An e-mail subscriber's channel after a PATCH of `to` and `digest_seconds` (`Some(None)`:
/// neither given; `None`: a problem was recorded).
pub(super) fn patch_email(
    problems: &mut Problems,
    (to, digest_seconds): (&[String], Option<u32>),
    request: &UpdateSubscriberRequest,
) -> Option<Option<Channel>> {
    if request.to.is_none() && request.digest_seconds.is_none() {
        return Some(None);
    }
    let new_to = match &request.to {
        Some(raw) => check_recipients(problems, raw),
        None => Some(to.to_vec()),
    };
    let new_digest = match request.digest_seconds {
        Some(seconds) => problems.check(check_digest(seconds)),
        None => Some(digest_seconds),
    };
    Some(Some(Channel::Email {
        to: new_to?,
        digest_seconds: new_digest?,
    }))
}

/// The channel after a partial update of `current` (`None`: unchanged). The kind stays: a field
/// of another kind is refused rather than silently turning, say, a Slack subscriber into a
/// webhook.
pub(super) fn patch_channel(
    current: &Channel,
    request: &UpdateSubscriberRequest,
    allow_private: bool,
) -> Result<Option<Channel>, ValidationError> {
    let slack = slack_fields(&request.webhook_url, &request.bot_token, &request.channel);
    if let Some(field) = email_field(request.to.is_some(), request.digest_seconds.is_some()) {
        if !matches!(current, Channel::Email { .. }) {
            return Err(foreign(field, "email"));
        }
    }
    match current {
        Channel::Webhook { .. } => {
            if let Some(field) = slack.first_given() {
                return Err(foreign(field, "slack"));
            }
            request
                .url
                .as_deref()
                .map(|raw| WebhookUrl::parse("url", raw, allow_private).map(webhook))
                .transpose()
        }
        Channel::Slack { target } => {
            if request.url.is_some() {
                return Err(foreign("url", "webhook"));
            }
            Ok(slack
                .patch(target, allow_private)?
                .map(|target| Channel::Slack { target }))
        }
        // Its own fields are `patch_email`'s, which reports every bad address.
        Channel::Email { .. } => match (request.url.is_some(), slack.first_given()) {
            (true, _) => Err(foreign("url", "webhook")),
            (false, Some(field)) => Err(foreign(field, "slack")),
            (false, None) => Ok(None),
        },
    }
}

pub(super) fn slack_fields<'a>(
    webhook_url: &'a Option<SecretString>,
    bot_token: &'a Option<SecretString>,
    channel: &'a Option<String>,
) -> TargetFields<'a> {
    TargetFields {
        webhook_url: webhook_url.as_ref().map(ExposeSecret::expose_secret),
        bot_token: bot_token.as_ref().map(ExposeSecret::expose_secret),
        channel: channel.as_deref(),
    }
}

pub(super) fn foreign(field: &str, kind: &str) -> ValidationError {
    ValidationError::new(field, format!("applies to {kind} subscribers only"))
}

pub(super) fn webhook(url: WebhookUrl) -> Channel {
    Channel::Webhook { url: url.into() }
}

/// A filter list: non-empty, bounded, each entry valid (`field[i]` names a bad one), no repeats.
pub(super) fn check_filter<T: PartialEq>(
    problems: &mut Problems,
    field: &str,
    raw: &[String],
    parse: impl Fn(&str, &str) -> Result<T, ValidationError>,
) -> Option<Vec<T>> {
    if raw.is_empty() {
        return problems.check(Err(ValidationError::new(
            field,
            "must not be empty (leave it out, or null, to match everything)",
        )));
    }
    if raw.len() > MAX_FILTER_ENTRIES {
        return problems.check(Err(ValidationError::new(
            field,
            format!("must have at most {MAX_FILTER_ENTRIES} entries"),
        )));
    }
    let parsed = problems.check_each(
        raw.iter()
            .enumerate()
            .map(|(i, value)| parse(&format!("{field}[{i}]"), value)),
    )?;
    let mut unique = Vec::with_capacity(parsed.len());
    for item in parsed {
        if !unique.contains(&item) {
            unique.push(item);
        }
    }
    Some(unique)
}

pub(super) fn check_description(description: String) -> Result<String, ValidationError> {
    if description.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(ValidationError::new(
            "description",
            format!("must be at most {MAX_DESCRIPTION_CHARS} characters long"),
        ));
    }
    Ok(description)
}

pub(super) fn check_status(status: &str) -> Result<SubscriberStatus, ValidationError> {
    match status {
        "active" => Ok(SubscriberStatus::Active),
        "disabled" => Ok(SubscriberStatus::Disabled),
        _ => Err(ValidationError::new(
            "status",
            "must be one of active, disabled",
        )),
    }
}

pub(super) fn check_mark_read(policy: &str) -> Result<MarkReadPolicy, ValidationError> {
    match policy {
        "never" => Ok(MarkReadPolicy::Never),
        "on_delivery" => Ok(MarkReadPolicy::OnDelivery),
        _ => Err(ValidationError::new(
            "mark_read",
            "must be one of never, on_delivery",
        )),
    }
}
