//! The webhook channel: a Standard-Webhooks-signed JSON POST of the event payload.

mod resolver;
mod signing;

pub use signing::{
    sign, signature_header, verify, verify_headers, VerifyError, HEADER_ID, HEADER_SIGNATURE,
    HEADER_TIMESTAMP, TIMESTAMP_TOLERANCE_SECS,
};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use reqwest::header::CONTENT_TYPE;
use reqwest::redirect::Policy;
use reqwest::StatusCode;
use std::net::IpAddr;
use std::sync::Arc;
use url::{Host, Url};

use super::http::{find_cause, read_excerpt, transport_error_text};
use super::{ChannelSender, SendOutcome};
use crate::config::DeliverySettings;
use crate::domain::is_public_ip;
use crate::domain::{Channel, ClaimedDelivery};
use crate::time::retry_after;
use resolver::{BlockedTarget, PublicOnlyResolver};

/// Sends webhooks through one pooled client. Redirects are not followed: a receiver must answer
/// itself, and a redirect could lead the request past the SSRF guard.
#[derive(Debug, Clone)]
pub struct WebhookSender {
    client: reqwest::Client,
    allow_private_targets: bool,
}

impl WebhookSender {
    pub fn new(settings: &DeliverySettings) -> Result<Self, reqwest::Error> {
        let mut builder = reqwest::Client::builder()
            .redirect(Policy::none())
            .timeout(settings.timeout)
            .user_agent(crate::USER_AGENT);
        if !settings.allow_private_targets {
            // A proxy would resolve host names itself, out of the guard's sight.
            builder = builder
                .no_proxy()
                .dns_resolver(Arc::new(PublicOnlyResolver));
        }
        Ok(Self {
            client: builder.build()?,
            allow_private_targets: settings.allow_private_targets,
        })
    }

    /// The pooled, guarded client; the Slack channel posts through it too.
    pub(super) fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// IP literals never reach the resolver, so the guard checks them here: the URL was checked
    /// when the subscriber was saved, but `allow_private_targets` may have been turned off since.
    pub(super) fn refuses_literal(&self, url: &Url) -> bool {
        let ip = match url.host() {
            Some(Host::Ipv4(v4)) => IpAddr::V4(v4),
            Some(Host::Ipv6(v6)) => IpAddr::V6(v6),
            Some(Host::Domain(_)) | None => return false,
        };
        !self.allow_private_targets && !is_public_ip(ip)
    }
}

/// An event's payload as a request body without copying it: every subscriber's request shares it.
struct SharedPayload(Arc<str>);

impl AsRef<[u8]> for SharedPayload {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

fn permanent(error: &str) -> SendOutcome {
    SendOutcome::Permanent {
        status: None,
        excerpt: None,
        error: Some(error.to_owned()),
        disable_subscriber: None,
    }
}

#[async_trait]
impl ChannelSender for WebhookSender {
    async fn send(
        &self,
        deliveries: &[ClaimedDelivery],
        _thread: Option<&str>,
        now: DateTime<Utc>,
    ) -> SendOutcome {
        match deliveries {
            [delivery] => self.post(delivery, now).await,
            _ => permanent("webhooks carry one event each"),
        }
    }
}

impl WebhookSender {
    #[tracing::instrument(skip_all, fields(
        delivery_id = %delivery.id,
        event_id = %delivery.event_id,
        subscriber_id = %delivery.subscriber.id,
    ))]
    async fn post(&self, delivery: &ClaimedDelivery, now: DateTime<Utc>) -> SendOutcome {
        let Channel::Webhook { url } = &delivery.subscriber.channel else {
            return permanent("not a webhook subscriber");
        };
        if self.refuses_literal(url) {
            return permanent("refused: the target is a private, loopback or link-local address");
        }
        let secrets = delivery.subscriber.signing_secrets(now);
        if secrets.is_empty() {
            return permanent("the subscriber has no active signing secret");
        }

        let msg_id = delivery.event_id.as_str();
        let timestamp = now.timestamp();
        let body = delivery.payload.as_bytes();
        let request = self
            .client
            .post(url.clone())
            .header(HEADER_ID, msg_id)
            .header(HEADER_TIMESTAMP, timestamp)
            .header(
                HEADER_SIGNATURE,
                signature_header(&secrets, msg_id, timestamp, body),
            )
            .header(CONTENT_TYPE, "application/json")
            .body(Bytes::from_owner(SharedPayload(Arc::clone(
                &delivery.payload,
            ))));

        let response = match request.send().await {
            Ok(response) => response,
            // A refused host name is parked like a refused literal: retrying would only ask the
            // resolver the same question for the rest of the schedule.
            Err(err) => {
                if let Some(blocked) = find_cause::<BlockedTarget>(&err) {
                    return permanent(&blocked.to_string());
                }
                return SendOutcome::Retry {
                    after: None,
                    status: None,
                    excerpt: None,
                    error: Some(transport_error_text(err)),
                };
            }
        };

        let status = response.status();
        let retry_after = retry_after(response.headers(), now);
        let excerpt = read_excerpt(response).await;
        let code = Some(status.as_u16());
        if status.is_success() {
            SendOutcome::Delivered {
                status: code,
                excerpt,
                thread_started: None,
            }
        } else if status == StatusCode::GONE {
            SendOutcome::Permanent {
                status: code,
                excerpt,
                error: None,
                disable_subscriber: Some("the receiver answered 410 Gone".to_owned()),
            }
        } else {
            SendOutcome::Retry {
                after: retry_after,
                status: code,
                excerpt,
                error: status
                    .is_redirection()
                    .then(|| "redirects are not followed".to_owned()),
            }
        }
    }
}
