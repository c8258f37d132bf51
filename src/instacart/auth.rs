//! Bearer tokens for Connect: a static token, or OAuth tokens cached per identity, renewed
//! shortly before they expire or after Connect rejects them, one token request at a time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use reqwest::header::ACCEPT;
use secrecy::{ExposeSecret, SecretString};
use url::Url;

use super::answer::Answer;
use super::error::{Endpoint, InstacartError};
use super::models::{TokenRequest, TokenResponse};
use crate::config::InstacartAuth;
use crate::domain::UserId;

/// Renewal starts when a tenth of a token's life remains, but no earlier than this before expiry.
const MAX_RENEWAL_MARGIN: Duration = Duration::from_secs(300);
/// Keeps `Instant` arithmetic safe whatever `expires_in` says.
const MAX_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);
/// Below this many identities expired tokens are not worth sweeping.
const MIN_SWEEP_SIZE: usize = 256;

/// Whom a token speaks for. Orders registered with a user id need that user's token.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Identity {
    Client,
    User(UserId),
}

impl Identity {
    pub(crate) fn for_order(user_id: Option<&UserId>) -> Self {
        user_id.map_or(Self::Client, |user| Self::User(user.clone()))
    }

    fn grant_type(&self) -> &'static str {
        match self {
            Self::Client => "client_credentials",
            Self::User(_) => "fulfillment_user_assertion",
        }
    }
}

#[derive(Debug)]
pub(crate) enum Authenticator {
    Static(SecretString),
    OAuth(OAuthTokens),
}

impl Authenticator {
    /// `request_timeout` is the least margin before expiry at which a token is renewed: a token
    /// must outlive the request it is sent with.
    pub(crate) fn new(
        auth: InstacartAuth,
        http: reqwest::Client,
        token_url: Url,
        request_timeout: Duration,
    ) -> Self {
        match auth {
            InstacartAuth::StaticToken(token) => Self::Static(token),
            InstacartAuth::OAuth {
                client_id,
                client_secret,
            } => Self::OAuth(OAuthTokens {
                http,
                token_url,
                client_id,
                client_secret,
                min_margin: request_timeout,
                slots: Mutex::default(),
            }),
        }
    }

    pub(crate) async fn bearer(&self, identity: &Identity) -> Result<SecretString, InstacartError> {
        match self {
            Self::Static(token) => Ok(token.clone()),
            Self::OAuth(oauth) => oauth.token(identity, None).await,
        }
    }

    /// A token to retry with after Connect answered 401 to `rejected`; `None` when there is no
    /// other token to try.
    pub(crate) async fn renew_rejected(
        &self,
        identity: &Identity,
        rejected: &SecretString,
    ) -> Result<Option<SecretString>, InstacartError> {
        match self {
            Self::Static(_) => Ok(None),
            Self::OAuth(oauth) => oauth.token(identity, Some(rejected)).await.map(Some),
        }
    }
}

pub(crate) struct OAuthTokens {
    /// The client's pooled HTTP client.
    http: reqwest::Client,
    token_url: Url,
    client_id: String,
    client_secret: SecretString,
    min_margin: Duration,
    slots: Mutex<Slots>,
}

impl std::fmt::Debug for OAuthTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthTokens")
            .field("token_url", &self.token_url.as_str())
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// One per identity. Its lock makes concurrent callers wait for a single token request.
type Slot = Arc<tokio::sync::Mutex<Option<CachedToken>>>;

#[derive(Default)]
struct Slots {
    by_identity: HashMap<Identity, Slot>,
    /// Size at which expired entries are next swept; it doubles, so sweeping is O(1) amortized.
    sweep_at: usize,
}

struct CachedToken {
    token: SecretString,
    renew_at: Instant,
    expires_at: Instant,
}

impl OAuthTokens {
    fn slot(&self, identity: &Identity) -> Slot {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = slots.by_identity.get(identity) {
            return slot.clone();
        }
        slots.sweep_expired(Instant::now());
        let slot = Slot::default();
        slots.by_identity.insert(identity.clone(), slot.clone());
        slot
    }

    /// The cached token while it is fresh and not `rejected`; otherwise a new one. When renewal
    /// fails, a token that is merely due for renewal is still used until it expires.
    async fn token(
        &self,
        identity: &Identity,
        rejected: Option<&SecretString>,
    ) -> Result<SecretString, InstacartError> {
        let slot = self.slot(identity);
        let mut cached = slot.lock().await;
        let now = Instant::now();
        let reusable = cached.as_ref().filter(|current| {
            rejected.is_none_or(|r| r.expose_secret() != current.token.expose_secret())
        });
        if let Some(current) = reusable.filter(|current| now < current.renew_at) {
            return Ok(current.token.clone());
        }
        let unexpired = reusable
            .filter(|current| now < current.expires_at)
            .map(|current| current.token.clone());
        match self.fetch(identity).await {
            Ok(fresh) => {
                let token = fresh.token.clone();
                *cached = Some(fresh);
                Ok(token)
            }
            Err(error) => match unexpired {
                Some(token) => {
                    tracing::warn!(%error, "access token renewal failed; using the current token until it expires");
                    Ok(token)
                }
                None => {
                    *cached = None;
                    Err(error)
                }
            },
        }
    }

    #[tracing::instrument(skip_all, fields(grant_type = identity.grant_type()))]
    async fn fetch(&self, identity: &Identity) -> Result<CachedToken, InstacartError> {
        // Measured before the request, so the token is never thought to live longer than it does.
        let requested_at = Instant::now();
        let request = self
            .http
            .post(self.token_url.clone())
            .header(ACCEPT, "application/json")
            .json(&self.token_request(identity));
        let answer: TokenResponse = async { Answer::read(request).await?.json(Endpoint::Token) }
            .await
            .map_err(|error| InstacartError::Auth(Box::new(error)))?;
        let lifetime = Duration::from_secs(answer.expires_in).min(MAX_LIFETIME);
        let margin = (lifetime / 10).min(MAX_RENEWAL_MARGIN).max(self.min_margin);
        tracing::debug!(expires_in = answer.expires_in, "access token obtained");
        Ok(CachedToken {
            token: SecretString::from(answer.access_token),
            renew_at: requested_at + lifetime.saturating_sub(margin),
            expires_at: requested_at + lifetime,
        })
    }

    fn token_request(&self, identity: &Identity) -> TokenRequest {
        let (scope, assertion) = match identity {
            Identity::Client => ("connect:fulfillment", None),
            Identity::User(user) => {
                let claim = serde_json::json!({ "user_id": user.as_str() }).to_string();
                ("connect:post_checkout", Some(BASE64.encode(claim)))
            }
        };
        TokenRequest {
            client_id: self.client_id.clone(),
            client_secret: self.client_secret.expose_secret().to_owned(),
            grant_type: identity.grant_type().to_owned(),
            scope: scope.to_owned(),
            assertion,
        }
    }
}

impl Slots {
    /// Forgets identities whose token has expired and that nobody is using: their token would
    /// have to be fetched again anyway, and users come and go with their orders.
    fn sweep_expired(&mut self, now: Instant) {
        if self.by_identity.len() < self.sweep_at {
            return;
        }
        self.by_identity.retain(|_, slot| {
            Arc::strong_count(slot) > 1
                || slot
                    .try_lock()
                    .is_ok_and(|cached| cached.as_ref().is_some_and(|c| now < c.expires_at))
        });
        self.sweep_at = (self.by_identity.len() * 2).max(MIN_SWEEP_SIZE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot_expiring_at(expires_at: Instant) -> Slot {
        Arc::new(tokio::sync::Mutex::new(Some(CachedToken {
            token: SecretString::from("t"),
            renew_at: expires_at,
            expires_at,
        })))
    }

    #[test]
    fn sweep_forgets_expired_identities_nobody_uses_once_the_map_is_large() {
        let t0 = Instant::now();
        let mut slots = Slots::default();
        let user = |i: usize| Identity::User(UserId::parse("user_id", &format!("u{i}")).unwrap());
        for i in 0..MIN_SWEEP_SIZE {
            slots.by_identity.insert(user(i), slot_expiring_at(t0));
        }
        slots
            .by_identity
            .insert(Identity::Client, slot_expiring_at(t0 + MAX_LIFETIME));
        let in_use = slots.by_identity[&user(0)].clone();

        slots.sweep_expired(t0 + Duration::from_secs(1));

        assert_eq!(slots.by_identity.len(), 2);
        assert!(slots.by_identity.contains_key(&Identity::Client));
        assert!(Arc::ptr_eq(&slots.by_identity[&user(0)], &in_use));
        assert_eq!(slots.sweep_at, MIN_SWEEP_SIZE);
    }
}
