//! Where a Slack subscriber posts, checked when it is created or changed. Both forms are
//! credentials, so no rule's message repeats the value it refused.

use secrecy::{ExposeSecret, SecretString};

use serde::{Deserialize, Serialize};

use super::{ValidationError, WebhookUrl};

/// Where a Slack subscriber posts. Both forms are secrets (a webhook URL is a credential), so
/// `Debug` redacts them: a logged subscriber or delivery never shows one.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum SlackTarget {
    /// An incoming webhook: posts only, no threads.
    IncomingWebhook { webhook_url: String },
    /// The Web API (`chat.postMessage`): one thread per order.
    Bot { bot_token: String, channel: String },
}

impl std::fmt::Debug for SlackTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SlackTarget::IncomingWebhook { .. } => f
                .debug_struct("IncomingWebhook")
                .field("webhook_url", &"[redacted]")
                .finish(),
            SlackTarget::Bot { channel, .. } => f
                .debug_struct("Bot")
                .field("bot_token", &"[redacted]")
                .field("channel", channel)
                .finish(),
        }
    }
}

/// Longest accepted bot token and channel (Slack's channel names stop at 80 characters; IDs are
/// shorter still).
const MAX_TOKEN_CHARS: usize = 255;
const MAX_CHANNEL_CHARS: usize = 80;

/// An incoming-webhook URL: https, or http too where the deployment allows private targets (a
/// local stand-in for Slack). Whoever holds it can post, so it is kept as a secret.
struct SlackWebhookUrl(SecretString);

impl SlackWebhookUrl {
    fn parse(field: &str, value: &str, allow_private: bool) -> Result<Self, ValidationError> {
        let url = WebhookUrl::parse(field, value, allow_private)?;
        if url.as_url().scheme() != "https" && !allow_private {
            return Err(ValidationError::new(field, "must use https"));
        }
        Ok(Self(SecretString::from(url.to_string())))
    }
}

/// A bot user OAuth token, `xoxb-` and then letters, digits and dashes.
struct BotToken(SecretString);

impl BotToken {
    fn parse(field: &str, value: &str) -> Result<Self, ValidationError> {
        let well_formed = value.strip_prefix("xoxb-").is_some_and(|rest| {
            !rest.is_empty() && rest.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        }) && value.len() <= MAX_TOKEN_CHARS;
        if !well_formed {
            return Err(ValidationError::new(
                field,
                format!(
                    "must be a Slack bot token: `xoxb-` followed by letters, digits and dashes, \
                     at most {MAX_TOKEN_CHARS} characters"
                ),
            ));
        }
        Ok(Self(SecretString::from(value.to_owned())))
    }
}

/// The channel a bot posts in: its ID (`C0123ABCD`, preferred: it survives renames) or name.
struct SlackChannel(String);

impl SlackChannel {
    fn parse(field: &str, value: &str) -> Result<Self, ValidationError> {
        if value.is_empty()
            || value.chars().count() > MAX_CHANNEL_CHARS
            || value.chars().any(char::is_whitespace)
        {
            return Err(ValidationError::new(
                field,
                format!(
                    "must be a channel ID such as C0123ABCD or a name such as #orders: \
                     1 to {MAX_CHANNEL_CHARS} characters, no spaces"
                ),
            ));
        }
        Ok(Self(value.to_owned()))
    }
}

/// The Slack fields of a request, as given (each `None` when absent).
#[derive(Clone, Copy, Default)]
pub struct TargetFields<'a> {
    pub webhook_url: Option<&'a str>,
    pub bot_token: Option<&'a str>,
    pub channel: Option<&'a str>,
}

impl TargetFields<'_> {
    pub fn is_empty(&self) -> bool {
        self.webhook_url.is_none() && self.bot_token.is_none() && self.channel.is_none()
    }

    /// The first field given, for naming it when it does not apply.
    pub fn first_given(&self) -> Option<&'static str> {
        [
            ("webhook_url", self.webhook_url.is_some()),
            ("bot_token", self.bot_token.is_some()),
            ("channel", self.channel.is_some()),
        ]
        .into_iter()
        .find_map(|(field, given)| given.then_some(field))
    }

    /// A new subscriber's target: `webhook_url` alone, or `bot_token` with `channel`.
    pub fn target(&self, allow_private: bool) -> Result<SlackTarget, ValidationError> {
        match (self.webhook_url, self.bot_token, self.channel) {
            (None, None, None) => Err(ValidationError::new(
                "webhook_url",
                "is required for slack subscribers, unless bot_token and channel are given",
            )),
            (None, Some(_), None) => Err(ValidationError::new(
                "channel",
                "is required with bot_token",
            )),
            (None, None, Some(_)) => Err(ValidationError::new(
                "bot_token",
                "is required with channel",
            )),
            _ => self.change(None, allow_private),
        }
    }

    /// The target after a partial update of `current`: `webhook_url` switches to an incoming
    /// webhook; `bot_token` and/or `channel` change the bot's (both are needed to switch from an
    /// incoming webhook to a bot). `None` when no Slack field was given.
    pub fn patch(
        &self,
        current: &SlackTarget,
        allow_private: bool,
    ) -> Result<Option<SlackTarget>, ValidationError> {
        if self.is_empty() {
            return Ok(None);
        }
        self.change(Some(current), allow_private).map(Some)
    }

    fn change(
        &self,
        current: Option<&SlackTarget>,
        allow_private: bool,
    ) -> Result<SlackTarget, ValidationError> {
        if let Some(url) = self.webhook_url {
            if self.bot_token.is_some() || self.channel.is_some() {
                return Err(ValidationError::new(
                    "webhook_url",
                    "cannot be combined with bot_token or channel: \
                     a slack subscriber posts through one or the other",
                ));
            }
            let SlackWebhookUrl(url) = SlackWebhookUrl::parse("webhook_url", url, allow_private)?;
            return Ok(SlackTarget::IncomingWebhook {
                webhook_url: url.expose_secret().to_owned(),
            });
        }
        let (current_token, current_channel) = match current {
            Some(SlackTarget::Bot { bot_token, channel }) => {
                (Some(bot_token.as_str()), Some(channel.as_str()))
            }
            Some(SlackTarget::IncomingWebhook { .. }) | None => (None, None),
        };
        let switching = "is required to switch an incoming-webhook subscriber to a bot token";
        let bot_token = match self.bot_token {
            Some(raw) => BotToken::parse("bot_token", raw)?
                .0
                .expose_secret()
                .to_owned(),
            None => current_token
                .ok_or_else(|| ValidationError::new("bot_token", switching))?
                .to_owned(),
        };
        let channel = match self.channel {
            Some(raw) => SlackChannel::parse("channel", raw)?.0,
            None => current_channel
                .ok_or_else(|| ValidationError::new("channel", switching))?
                .to_owned(),
        };
        Ok(SlackTarget::Bot { bot_token, channel })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "xoxb-1234-5678-AbCdEf";
    const HOOK: &str = "https://hooks.slack.com/services/T0/B0/SeCrEt";

    fn fields<'a>(
        webhook_url: Option<&'a str>,
        bot_token: Option<&'a str>,
        channel: Option<&'a str>,
    ) -> TargetFields<'a> {
        TargetFields {
            webhook_url,
            bot_token,
            channel,
        }
    }

    fn refused_field(result: Result<impl Sized, ValidationError>) -> String {
        match result {
            Ok(_) => panic!("accepted"),
            Err(e) => e.field,
        }
    }

    #[test]
    fn a_target_is_a_webhook_url_or_a_bot_token_with_a_channel() {
        assert_eq!(
            fields(Some(HOOK), None, None).target(false).unwrap(),
            SlackTarget::IncomingWebhook {
                webhook_url: HOOK.to_owned()
            }
        );
        assert_eq!(
            fields(None, Some(TOKEN), Some("C0123ABCD"))
                .target(false)
                .unwrap(),
            SlackTarget::Bot {
                bot_token: TOKEN.to_owned(),
                channel: "C0123ABCD".to_owned()
            }
        );
        let cases = [
            (fields(None, None, None), "webhook_url"),
            (fields(None, Some(TOKEN), None), "channel"),
            (fields(None, None, Some("C1")), "bot_token"),
            (fields(Some(HOOK), Some(TOKEN), Some("C1")), "webhook_url"),
        ];
        for (given, field) in cases {
            assert_eq!(refused_field(given.target(false)), field);
        }
    }

    #[test]
    fn refusals_never_repeat_the_credential() {
        let long = format!("xoxb-SeCrEt{}", "0".repeat(250));
        for token in [
            "xoxp-SeCrEt-user-token",
            "xoxb-SeCrEt has space",
            "xoxb-SeCrEt_underscore",
            &long,
        ] {
            let err = fields(None, Some(token), Some("C1"))
                .target(false)
                .unwrap_err();
            assert_eq!(err.field, "bot_token");
            assert!(!err.to_string().contains("SeCrEt"), "{err}");
        }
        assert_eq!(
            refused_field(fields(None, Some("xoxb-"), Some("C1")).target(false)),
            "bot_token"
        );
        let plain = "http://hooks.slack.com/services/T0/B0/SeCrEt";
        let err = fields(Some(plain), None, None).target(false).unwrap_err();
        assert_eq!(err.to_string(), "`webhook_url` must use https");
        assert!(fields(Some(plain), None, None).target(true).is_ok());
        let err = fields(Some("not a url SeCrEt"), None, None)
            .target(false)
            .unwrap_err();
        assert!(!err.to_string().contains("SeCrEt"), "{err}");
    }

    #[test]
    fn channels_are_non_empty_and_unspaced() {
        for bad in ["", "two words", &"c".repeat(81)] {
            let result = fields(None, Some(TOKEN), Some(bad)).target(false);
            assert_eq!(refused_field(result), "channel", "{bad:?}");
        }
        assert!(fields(None, Some(TOKEN), Some("#orders"))
            .target(false)
            .is_ok());
    }

    #[test]
    fn a_patch_changes_what_it_names_and_keeps_the_rest() {
        let bot = SlackTarget::Bot {
            bot_token: TOKEN.to_owned(),
            channel: "C1".to_owned(),
        };
        let hook = SlackTarget::IncomingWebhook {
            webhook_url: HOOK.to_owned(),
        };
        assert_eq!(fields(None, None, None).patch(&bot, false).unwrap(), None);
        assert_eq!(
            fields(None, None, Some("C2")).patch(&bot, false).unwrap(),
            Some(SlackTarget::Bot {
                bot_token: TOKEN.to_owned(),
                channel: "C2".to_owned()
            })
        );
        assert_eq!(
            fields(Some(HOOK), None, None).patch(&bot, false).unwrap(),
            Some(hook.clone())
        );
        // Switching from a webhook to a bot needs both halves.
        assert_eq!(
            refused_field(fields(None, Some(TOKEN), None).patch(&hook, false)),
            "channel"
        );
        assert_eq!(
            fields(None, Some(TOKEN), Some("C3"))
                .patch(&hook, false)
                .unwrap(),
            Some(SlackTarget::Bot {
                bot_token: TOKEN.to_owned(),
                channel: "C3".to_owned()
            })
        );
    }

    #[test]
    fn first_given_names_a_misplaced_field() {
        assert_eq!(fields(None, None, None).first_given(), None);
        assert_eq!(
            fields(None, Some(TOKEN), Some("C1")).first_given(),
            Some("bot_token")
        );
    }
}
