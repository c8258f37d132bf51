//! Reading Connect's answers, shared by the token requests and the post-checkout calls.

use std::time::Duration;

use reqwest::{RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;

use super::error::{Endpoint, InstacartError};

/// An answer read to the end, so its connection goes back to the pool whatever it says.
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    retry_after: Option<Duration>,
    body: Vec<u8>,
}

impl Answer {
    pub(crate) async fn read(request: RequestBuilder) -> Result<Self, InstacartError> {
        let response = request.send().await.map_err(InstacartError::from_reqwest)?;
        let status = response.status();
        let retry_after = crate::time::retry_after(response.headers(), chrono::Utc::now());
        // `Bytes` into `Vec` reuses the buffer: no copy.
        let body = response
            .bytes()
            .await
            .map(Vec::from)
            .map_err(InstacartError::from_reqwest)?;
        Ok(Self {
            status,
            retry_after,
            body,
        })
    }

    pub(crate) fn json<T: DeserializeOwned>(self, endpoint: Endpoint) -> Result<T, InstacartError> {
        if self.status.is_success() {
            serde_json::from_slice(&self.body).map_err(|source| InstacartError::MalformedBody {
                status: self.status.as_u16(),
                source,
            })
        } else {
            Err(InstacartError::from_response(
                self.status,
                self.retry_after,
                &self.body,
                endpoint,
            ))
        }
    }
}
