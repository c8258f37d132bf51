//! The Connect post-checkout client: one pooled HTTP client, shared by cheap clones.

use std::sync::Arc;

use reqwest::header::ACCEPT;
use reqwest::{Method, RequestBuilder, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use url::Url;

use super::answer::Answer;
use super::auth::{Authenticator, Identity};
use super::error::{Endpoint, InstacartError};
use super::models::{
    ChatMessagesResponse, MarkReadResponse, OrderMessagesResponse, SendMessageRequest,
    SendMessageResponse,
};
use crate::config::{InstacartAuth, InstacartSettings};
use crate::domain::{OrderId, UserId};

const TREAT_IDS_AS_INTERNAL: &str = "X-Treat-Ids-As-Internal";

#[derive(Debug, Clone)]
pub struct InstacartClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    base_url: Url,
    treat_ids_as_internal: bool,
    auth: Authenticator,
}

impl InstacartClient {
    pub fn new(settings: &InstacartSettings, auth: InstacartAuth) -> Result<Self, InstacartError> {
        let base_url = settings.base_url.clone();
        if base_url.cannot_be_a_base() || !matches!(base_url.scheme(), "http" | "https") {
            return Err(InstacartError::InvalidBaseUrl {
                url: base_url.to_string(),
            });
        }
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(crate::USER_AGENT)
            .build()
            .map_err(InstacartError::HttpClient)?;
        let auth = Authenticator::new(
            auth,
            http.clone(),
            endpoint_url(&base_url, &["v2", "oauth", "token"]),
            settings.timeout,
        );
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                base_url,
                treat_ids_as_internal: settings.treat_ids_as_internal,
                auth,
            }),
        })
    }

    /// `GET /v2/post_checkout/orders/{order_id}/order_messages`: chat plus lifecycle messages.
    #[tracing::instrument(skip_all, fields(order_id = %order_id, endpoint = "order_messages"))]
    pub async fn order_messages(
        &self,
        order_id: &OrderId,
        user_id: Option<&UserId>,
    ) -> Result<OrderMessagesResponse, InstacartError> {
        let url = self.url(&["orders", order_id.as_str(), "order_messages"]);
        self.call(Method::GET, url, user_id, None).await
    }

    /// `GET /v2/post_checkout/chat/{order_id}/messages`: the customer-shopper chat.
    #[tracing::instrument(skip_all, fields(order_id = %order_id, endpoint = "chat_messages"))]
    pub async fn chat_messages(
        &self,
        order_id: &OrderId,
        user_id: Option<&UserId>,
    ) -> Result<ChatMessagesResponse, InstacartError> {
        self.call(Method::GET, self.chat_url(order_id), user_id, None)
            .await
    }

    /// `POST /v2/post_checkout/chat/{order_id}/messages`: sends `body` to the shopper.
    #[tracing::instrument(skip_all, fields(order_id = %order_id, endpoint = "send_message"))]
    pub async fn send_message(
        &self,
        order_id: &OrderId,
        user_id: Option<&UserId>,
        body: &str,
    ) -> Result<SendMessageResponse, InstacartError> {
        let payload = SendMessageRequest {
            body: body.to_owned(),
        };
        self.call(
            Method::POST,
            self.chat_url(order_id),
            user_id,
            Some(&payload),
        )
        .await
    }

    /// `PUT /v2/post_checkout/chat/{order_id}/messages`: marks the shopper's messages as read.
    #[tracing::instrument(skip_all, fields(order_id = %order_id, endpoint = "mark_read"))]
    pub async fn mark_read(
        &self,
        order_id: &OrderId,
        user_id: Option<&UserId>,
    ) -> Result<MarkReadResponse, InstacartError> {
        self.call(Method::PUT, self.chat_url(order_id), user_id, None)
            .await
    }

    fn chat_url(&self, order_id: &OrderId) -> Url {
        self.url(&["chat", order_id.as_str(), "messages"])
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = endpoint_url(&self.inner.base_url, &["v2", "post_checkout"]);
        url.path_segments_mut()
            .expect("base URL checked in new()")
            .extend(segments);
        url
    }

    /// Sends the request with the identity's token; after a 401 a renewable token is renewed
    /// and the request sent once more.
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        user_id: Option<&UserId>,
        body: Option<&SendMessageRequest>,
    ) -> Result<T, InstacartError> {
        let identity = Identity::for_order(user_id);
        let auth = &self.inner.auth;
        let token = auth.bearer(&identity).await?;
        let mut answer = Answer::read(self.request(&method, &url, &token, body)).await?;
        if answer.status == StatusCode::UNAUTHORIZED {
            if let Some(renewed) = auth.renew_rejected(&identity, &token).await? {
                tracing::debug!("access token rejected, retrying with a renewed one");
                answer = Answer::read(self.request(&method, &url, &renewed, body)).await?;
            }
        }
        answer.json(Endpoint::PostCheckout)
    }

    fn request(
        &self,
        method: &Method,
        url: &Url,
        token: &SecretString,
        body: Option<&SendMessageRequest>,
    ) -> RequestBuilder {
        let mut request = self
            .inner
            .http
            .request(method.clone(), url.clone())
            .header(ACCEPT, "application/json")
            // Marks the header sensitive, so it is never shown by `Debug`.
            .bearer_auth(token.expose_secret());
        if self.inner.treat_ids_as_internal {
            request = request.header(TREAT_IDS_AS_INTERNAL, "true");
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        request
    }
}

/// `segments` appended to the base URL's path, whatever its trailing slash.
pub(crate) fn endpoint_url(base: &Url, segments: &[&str]) -> Url {
    let mut url = base.clone();
    url.path_segments_mut()
        .expect("base URL checked in InstacartClient::new()")
        .pop_if_empty()
        .extend(segments);
    url
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::AUTHORIZATION;

    #[test]
    fn the_bearer_token_is_a_sensitive_header() {
        let settings = InstacartSettings::default();
        let token = SecretString::from("connect-token-value".to_owned());
        let client =
            InstacartClient::new(&settings, InstacartAuth::StaticToken(token.clone())).unwrap();
        let url = client.chat_url(&OrderId::parse("order_id", "1").unwrap());
        let request = client
            .request(&Method::GET, &url, &token, None)
            .build()
            .unwrap();
        let authorization = &request.headers()[AUTHORIZATION];
        assert_eq!(authorization, "Bearer connect-token-value");
        assert!(authorization.is_sensitive());
        assert!(!format!("{request:?}").contains("connect-token-value"));
    }
}
