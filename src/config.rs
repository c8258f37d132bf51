//! Configuration: the embedded defaults ([`DEFAULTS`]), then a TOML file, every key overridable
//! by `SHOPPER_BRIDGE_`-prefixed environment variables (`__` separates sections:
//! `SHOPPER_BRIDGE_SERVER__ADMIN_TOKEN`). Validated once at start-up; errors name the key and the
//! rule.

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use secrecy::{ExposeSecret, SecretString};
use serde::de::Visitor;
use serde::Deserialize;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use url::Url;

pub const ENV_PREFIX: &str = "SHOPPER_BRIDGE_";

/// The default of every key that has one: the only place defaults are written down (the example
/// file and the README repeat them; tests/cli.rs checks they agree).
pub const DEFAULTS: &str = include_str!("config.default.toml");

/// The embedded defaults, the layer every other source goes on top of.
fn defaults() -> Figment {
    Figment::from(Toml::string(DEFAULTS))
}

/// The keys holding secrets. Their environment values are taken exactly as written: figment would
/// otherwise read `0012` as the number 12 (or `[x]` as an array) before the secret sees it.
const SECRET_KEYS: [&str; 4] = [
    "server.admin_token",
    "instacart.token",
    "instacart.client_secret",
    "email.password",
];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path} not found")]
    FileNotFound { path: String },
    #[error("invalid configuration: {}", describe(.0))]
    Parse(Box<figment::Error>),
    #[error("invalid configuration: `{key}` {rule}")]
    Invalid { key: &'static str, rule: String },
}

/// Each problem as "`key` rule (from SOURCE)", naming the exact variable for environment values.
fn describe(error: &figment::Error) -> String {
    let problems: Vec<String> = error
        .clone()
        .into_iter()
        .map(|e| {
            let origin = match &e.metadata {
                Some(m) if m.name.contains("environment") => {
                    let var: Vec<String> = e.path.iter().map(|p| p.to_uppercase()).collect();
                    format!(" (from {ENV_PREFIX}{})", var.join("__"))
                }
                Some(m) => m
                    .source
                    .as_ref()
                    .map(|source| format!(" (in {source})"))
                    .unwrap_or_default(),
                None => String::new(),
            };
            match e.path.is_empty() {
                true => format!("{}{origin}", e.kind),
                false => format!("`{}` {}{origin}", e.path.join("."), e.kind),
            }
        })
        .collect();
    problems.join("; ")
}

impl ConfigError {
    fn invalid(key: &'static str, rule: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key,
            rule: rule.into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub store: StoreSettings,
    pub instacart: InstacartSettings,
    pub poller: PollerSettings,
    pub delivery: DeliverySettings,
    pub templates: TemplateSettings,
    pub email: EmailSettings,
    pub slack: SlackSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    /// Bearer token for every `/v1` route. Required.
    #[serde(default, deserialize_with = "secret")]
    pub admin_token: Option<SecretString>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSettings {
    /// `sqlite://path/to/file.db`.
    pub url: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstacartSettings {
    pub base_url: Url,
    /// A static bearer token; or leave it out and give `client_id` + `client_secret` for OAuth.
    #[serde(default, deserialize_with = "secret")]
    pub token: Option<SecretString>,
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default, deserialize_with = "secret")]
    pub client_secret: Option<SecretString>,
    /// Sends `X-Treat-Ids-As-Internal: true`.
    pub treat_ids_as_internal: bool,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PollerSettings {
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Upstream calls in flight at once.
    pub concurrency: usize,
    /// Each next poll is spread by up to this share of the interval, either way.
    pub jitter: f64,
    /// Ceiling of the exponential back-off after 429/5xx/transport errors.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Consecutive 404s before an order is given up as not found.
    pub not_found_confirmations: u32,
    /// An order still watched this long after its watch started is stopped (orders on the
    /// chat-messages fallback never see `is_expired`).
    #[serde(with = "humantime_serde")]
    pub max_watch: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliverySettings {
    /// Waits before each retry; after the last one a delivery is parked as failed.
    #[serde(deserialize_with = "duration_list")]
    pub retry_schedule: Vec<Duration>,
    /// Each wait is spread by up to this share, either way.
    pub retry_jitter: f64,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Deliveries in flight at once.
    pub concurrency: usize,
    /// Lets webhooks target private, loopback and link-local addresses.
    pub allow_private_targets: bool,
    /// How long a rotated-out secret keeps signing beside the new one.
    #[serde(with = "humantime_serde")]
    pub secret_rotation_grace: Duration,
    /// How long shutdown waits for in-flight deliveries.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateSettings {
    /// Folder of e-mail and Slack templates, read at start-up (restyle without rebuilding).
    /// Files in it override the built-in defaults file by file; unset means built-ins only.
    #[serde(default)]
    pub dir: Option<PathBuf>,
}

/// How TLS is used towards the SMTP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    /// Plain text: only for a local relay.
    None,
    /// Upgrade with STARTTLS, which the server must offer.
    Starttls,
    /// TLS from the first byte (usually port 465).
    Tls,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailSettings {
    /// `smtp://host:port` or `smtps://host:port`; e-mail subscribers need it.
    #[serde(default)]
    pub smtp_url: Option<Url>,
    /// Defaults to `tls` for smtps:// and `starttls` for smtp://.
    #[serde(default)]
    pub tls: Option<SmtpTls>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default, deserialize_with = "secret")]
    pub password: Option<SecretString>,
    /// The `From` address, e.g. `Store 42 <shopper-chat@store.example>`.
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub reply_to: Option<String>,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackSettings {
    /// The Web API base (tests point it elsewhere).
    pub api_base_url: Url,
    /// Messages per second per Slack subscriber (Slack allows about one per channel).
    pub messages_per_second: f64,
    /// The Slack app's signing secret: with it, `/slack/events` and `/slack/interactions` take
    /// thread replies and button clicks (each request verified with it); without, they are off.
    #[serde(default)]
    pub signing_secret: Option<SecretString>,
}

impl SlackSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        if !matches!(self.api_base_url.scheme(), "http" | "https") {
            return Err(ConfigError::invalid(
                "slack.api_base_url",
                "must use http or https",
            ));
        }
        if !(self.messages_per_second.is_finite() && self.messages_per_second > 0.0) {
            return Err(ConfigError::invalid(
                "slack.messages_per_second",
                "must be a number greater than 0",
            ));
        }
        if self
            .signing_secret
            .as_ref()
            .is_some_and(|s| s.expose_secret().trim().is_empty())
        {
            return Err(ConfigError::invalid(
                "slack.signing_secret",
                "must not be empty (leave it out to turn the Slack endpoints off)",
            ));
        }
        Ok(())
    }

    /// The least time between two messages to one Slack subscriber.
    pub fn send_interval(&self) -> Duration {
        // Saturates for a rate too small to express (and for an unvalidated one).
        Duration::try_from_secs_f64(1.0 / self.messages_per_second).unwrap_or(Duration::MAX)
    }
}

/// The settings the embedded defaults alone give: not valid until an admin token and Instacart
/// credentials are added.
impl Default for Settings {
    fn default() -> Self {
        defaults()
            .extract()
            .expect("the embedded defaults give every section")
    }
}

macro_rules! section_defaults {
    ($($section:ident: $t:ty),*) => {$(
        impl Default for $t {
            fn default() -> Self {
                Settings::default().$section
            }
        }
    )*};
}
section_defaults!(
    server: ServerSettings,
    store: StoreSettings,
    instacart: InstacartSettings,
    poller: PollerSettings,
    delivery: DeliverySettings,
    templates: TemplateSettings,
    email: EmailSettings,
    slack: SlackSettings
);

/// How requests to Instacart authenticate.
#[derive(Debug, Clone)]
pub enum InstacartAuth {
    StaticToken(SecretString),
    OAuth {
        client_id: String,
        client_secret: SecretString,
    },
}

impl Settings {
    /// Reads the defaults, `path` (which must exist when `required`), then the environment, then
    /// validates.
    pub fn load(path: &Path, required: bool) -> Result<Self, ConfigError> {
        if required && !path.exists() {
            return Err(ConfigError::FileNotFound {
                path: path.display().to_string(),
            });
        }
        let env = Env::prefixed(ENV_PREFIX).split("__");
        let mut figment = Figment::new()
            .merge(Toml::file(path))
            .merge(env.clone().ignore(&SECRET_KEYS));
        for (key, value) in env.only(&SECRET_KEYS).iter() {
            figment = figment.merge(Serialized::default(key.as_str(), value));
        }
        Self::from_figment(figment)
    }

    /// `figment` on top of the embedded defaults, validated.
    pub fn from_figment(figment: Figment) -> Result<Self, ConfigError> {
        let settings: Settings = defaults()
            .merge(figment)
            .extract()
            .map_err(|e| ConfigError::Parse(Box::new(e)))?;
        settings.validate()?;
        Ok(settings)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        match &self.server.admin_token {
            None => {
                return Err(ConfigError::invalid(
                    "server.admin_token",
                    "is required (or set SHOPPER_BRIDGE_SERVER__ADMIN_TOKEN)",
                ))
            }
            Some(t) if t.expose_secret().len() < 16 => {
                return Err(ConfigError::invalid(
                    "server.admin_token",
                    "must be at least 16 characters long",
                ))
            }
            Some(_) => {}
        }
        if !self.store.url.starts_with("sqlite:") {
            return Err(ConfigError::invalid(
                "store.url",
                "must be a sqlite: URL such as sqlite://shopper-bridge.db",
            ));
        }
        if !matches!(self.instacart.base_url.scheme(), "http" | "https") {
            return Err(ConfigError::invalid(
                "instacart.base_url",
                "must use http or https",
            ));
        }
        self.instacart_auth()?;
        self.slack.validate()?;
        positive("instacart.timeout", self.instacart.timeout)?;
        positive("poller.interval", self.poller.interval)?;
        positive("poller.max_backoff", self.poller.max_backoff)?;
        positive("poller.max_watch", self.poller.max_watch)?;
        positive("delivery.timeout", self.delivery.timeout)?;
        if self.poller.concurrency == 0 {
            return Err(ConfigError::invalid(
                "poller.concurrency",
                "must be at least 1",
            ));
        }
        if self.delivery.concurrency == 0 {
            return Err(ConfigError::invalid(
                "delivery.concurrency",
                "must be at least 1",
            ));
        }
        if self.poller.not_found_confirmations == 0 {
            return Err(ConfigError::invalid(
                "poller.not_found_confirmations",
                "must be at least 1",
            ));
        }
        self.email.validate()?;
        for (key, jitter) in [
            ("poller.jitter", self.poller.jitter),
            ("delivery.retry_jitter", self.delivery.retry_jitter),
        ] {
            if !(0.0..=0.5).contains(&jitter) {
                return Err(ConfigError::invalid(key, "must be between 0.0 and 0.5"));
            }
        }
        Ok(())
    }

    pub fn instacart_auth(&self) -> Result<InstacartAuth, ConfigError> {
        let i = &self.instacart;
        match (&i.token, &i.client_id, &i.client_secret) {
            (Some(token), None, None) => Ok(InstacartAuth::StaticToken(token.clone())),
            (None, Some(id), Some(secret)) => Ok(InstacartAuth::OAuth {
                client_id: id.clone(),
                client_secret: secret.clone(),
            }),
            (Some(_), _, _) => Err(ConfigError::invalid(
                "instacart.token",
                "cannot be combined with instacart.client_id / instacart.client_secret",
            )),
            (None, None, _) => Err(ConfigError::invalid(
                "instacart.client_id",
                "is required, with instacart.client_secret, unless instacart.token is set",
            )),
            (None, Some(_), None) => Err(ConfigError::invalid(
                "instacart.client_secret",
                "is required when instacart.client_id is set",
            )),
        }
    }
}

impl EmailSettings {
    /// Checks the section when `smtp_url` is set (otherwise e-mail is off and the rest unused).
    fn validate(&self) -> Result<(), ConfigError> {
        let Some(url) = &self.smtp_url else {
            return Ok(());
        };
        if !matches!(url.scheme(), "smtp" | "smtps") {
            return Err(ConfigError::invalid(
                "email.smtp_url",
                "must use smtp:// or smtps://",
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(ConfigError::invalid("email.smtp_url", "must have a host"));
        }
        // A URL ends up in logs and error texts: credentials have their own (secret) keys.
        if !url.username().is_empty() || url.password().is_some() {
            return Err(ConfigError::invalid(
                "email.smtp_url",
                "must not embed credentials (use email.username and email.password)",
            ));
        }
        if url.scheme() == "smtps" && matches!(self.tls, Some(SmtpTls::None | SmtpTls::Starttls)) {
            return Err(ConfigError::invalid(
                "email.tls",
                "must be tls (or left out) with an smtps:// URL",
            ));
        }
        match (&self.username, &self.password) {
            (Some(_), None) => {
                return Err(ConfigError::invalid(
                    "email.password",
                    "is required when email.username is set",
                ))
            }
            (None, Some(_)) => {
                return Err(ConfigError::invalid(
                    "email.username",
                    "is required when email.password is set",
                ))
            }
            _ => {}
        }
        match &self.from {
            None => {
                return Err(ConfigError::invalid(
                    "email.from",
                    "is required when email.smtp_url is set",
                ))
            }
            Some(from) => parse_mailbox("email.from", from)?,
        };
        if let Some(reply_to) = &self.reply_to {
            parse_mailbox("email.reply_to", reply_to)?;
        }
        positive("email.timeout", self.timeout)
    }

    /// The TLS mode in force: the configured one, or what the URL's scheme implies.
    pub fn tls_mode(&self) -> SmtpTls {
        match (self.tls, self.smtp_url.as_ref().map(Url::scheme)) {
            (Some(mode), _) => mode,
            (None, Some("smtps")) => SmtpTls::Tls,
            (None, _) => SmtpTls::Starttls,
        }
    }
}

/// `Name <address>` or a bare address.
pub fn parse_mailbox(
    key: &'static str,
    value: &str,
) -> Result<lettre::message::Mailbox, ConfigError> {
    value.parse().map_err(|_| {
        ConfigError::invalid(
            key,
            "must be a mailbox such as `Store 42 <chat@store.example>` or chat@store.example",
        )
    })
}

/// A secret from a string or an integer (TOML reads a digits-only token unquoted as one). Other
/// values are refused without being quoted: serde's own "invalid type" errors would show them.
fn secret<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<SecretString>, D::Error> {
    struct SecretVisitor;

    impl SecretVisitor {
        fn refuse<E: serde::de::Error>(what: &str) -> Result<Option<SecretString>, E> {
            Err(E::custom(format!(
                "must be a string, not {what} (quote the value)"
            )))
        }
    }

    impl<'de> Visitor<'de> for SecretVisitor {
        type Value = Option<SecretString>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(SecretString::from(v)))
        }
        fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Self::Value, E> {
            Ok(Some(SecretString::from(v)))
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(SecretString::from(v.to_string())))
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(SecretString::from(v.to_string())))
        }
        fn visit_u128<E: serde::de::Error>(self, v: u128) -> Result<Self::Value, E> {
            Ok(Some(SecretString::from(v.to_string())))
        }
        fn visit_i128<E: serde::de::Error>(self, v: i128) -> Result<Self::Value, E> {
            Ok(Some(SecretString::from(v.to_string())))
        }
        // A float's text cannot be recovered exactly (`1.50` reads as 1.5).
        fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Self::refuse("a number with a fraction")
        }
        fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Self::refuse("a boolean")
        }
        fn visit_bytes<E: serde::de::Error>(self, _: &[u8]) -> Result<Self::Value, E> {
            Self::refuse("bytes")
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(self)
        }
    }

    d.deserialize_option(SecretVisitor)
}

/// `["5s", "5m", "2h"]`: humantime strings, like every other duration here.
fn duration_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|s| humantime::parse_duration(s).map_err(serde::de::Error::custom))
        .collect()
}

fn positive(key: &'static str, d: Duration) -> Result<(), ConfigError> {
    if d.is_zero() {
        Err(ConfigError::invalid(key, "must be greater than zero"))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The only test of this crate that touches the environment, and only its secret keys.
    #[test]
    fn secrets_from_the_environment_are_kept_exactly_as_written() {
        let vars = [
            ("SHOPPER_BRIDGE_SERVER__ADMIN_TOKEN", "0001234567890123456"),
            ("SHOPPER_BRIDGE_INSTACART__TOKEN", "[1.50]"),
        ];
        for (name, value) in vars {
            std::env::set_var(name, value);
        }
        let loaded = Settings::load(Path::new("no-such-config.toml"), false);
        for (name, _) in vars {
            std::env::remove_var(name);
        }
        let settings = loaded.unwrap();
        let exposed = |s: &Option<SecretString>| s.as_ref().unwrap().expose_secret().to_owned();
        assert_eq!(exposed(&settings.server.admin_token), "0001234567890123456");
        assert_eq!(exposed(&settings.instacart.token), "[1.50]");
    }
}
