use serde::Serialize;
use std::fmt;
use std::net::IpAddr;
use url::{Host, Url};

use super::ValidationError;

/// A webhook target: http(s) only, and not a private, loopback or link-local address unless the
/// deployment allows private targets. Host names are re-checked at connect time by the webhook
/// channel's resolver, since DNS can point anywhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct WebhookUrl(Url);

impl WebhookUrl {
    pub fn parse(field: &str, value: &str, allow_private: bool) -> Result<Self, ValidationError> {
        let url = Url::parse(value)
            .map_err(|e| ValidationError::new(field, format!("must be an absolute URL ({e})")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ValidationError::new(field, "must use http or https"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(ValidationError::new(field, "must not embed credentials"));
        }
        let ip = match url.host() {
            None => return Err(ValidationError::new(field, "must have a host")),
            Some(Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
            Some(Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
            Some(Host::Domain(d)) if d.eq_ignore_ascii_case("localhost") => {
                Some(IpAddr::from([127, 0, 0, 1]))
            }
            Some(Host::Domain(_)) => None,
        };
        if let Some(ip) = ip {
            if !allow_private && !is_public_ip(ip) {
                return Err(ValidationError::new(
                    field,
                    "must not target a private, loopback or link-local address \
                     (set delivery.allow_private_targets to allow it)",
                ));
            }
        }
        Ok(Self(url))
    }

    pub fn as_url(&self) -> &Url {
        &self.0
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Display for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

/// Whether an address is routable on the public internet (the SSRF guard).
pub fn is_public_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_ip(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80) // link-local
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_non_http_and_private_targets() {
        assert!(WebhookUrl::parse("url", "https://hooks.example.com/x", false).is_ok());
        assert_eq!(
            WebhookUrl::parse("url", "ftp://example.com", false)
                .unwrap_err()
                .rule,
            "must use http or https"
        );
        for private in [
            "http://127.0.0.1:9000/",
            "http://localhost/",
            "http://10.1.2.3/",
            "http://169.254.169.254/latest",
            "http://[::1]/",
            "http://[fe80::1]/",
        ] {
            assert!(
                WebhookUrl::parse("url", private, false).is_err(),
                "{private}"
            );
            assert!(WebhookUrl::parse("url", private, true).is_ok(), "{private}");
        }
    }
}
