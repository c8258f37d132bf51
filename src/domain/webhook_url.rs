use serde::Serialize;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
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

impl From<WebhookUrl> for Url {
    fn from(url: WebhookUrl) -> Self {
        url.0
    }
}

impl fmt::Display for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

/// Whether an address is routable on the public internet (the SSRF guard). IPv6 forms that
/// embed an IPv4 address and are translated to it (mapped, NAT64, 6to4) are judged by that
/// address; tunnelling and deprecated forms that could reach one less visibly are refused.
pub fn is_public_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(v4: Ipv4Addr) -> bool {
    let [a, b, c, _] = v4.octets();
    !(v4.is_private()
        || v4.is_loopback()
        || v4.is_link_local()
        || v4.is_unspecified()
        || v4.is_broadcast()
        || v4.is_documentation()
        || v4.is_multicast()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b & 0xfe) == 18) // benchmarking, 198.18.0.0/15
        || a >= 240)
}

fn is_public_v6(v6: Ipv6Addr) -> bool {
    if let Some(v4) = v6.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    // An IPv4 address carried in two segments.
    let v4 = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    match v6.segments() {
        // ::/96, IPv4-compatible (deprecated), with :: and ::1.
        [0, 0, 0, 0, 0, 0, _, _] => false,
        // NAT64 well-known prefix: the gateway connects to the embedded address.
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => is_public_v4(v4(hi, lo)),
        // Local-use NAT64 (RFC 8215): never global.
        [0x64, 0xff9b, 1, ..] => false,
        // 6to4: the relay connects to the embedded address.
        [0x2002, hi, lo, ..] => is_public_v4(v4(hi, lo)),
        // Teredo tunnels, and documentation.
        [0x2001, 0, ..] | [0x2001, 0xdb8, ..] => false,
        // Discard-only.
        [0x100, 0, 0, 0, ..] => false,
        [first, ..] => {
            !((first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link-local
                || (first & 0xffc0) == 0xfec0 // site-local (deprecated)
                || (first & 0xff00) == 0xff00) // multicast
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_globally_routable_addresses_are_public() {
        let table: &[(&str, bool)] = &[
            ("93.184.216.34", true),
            ("8.8.8.8", true),
            ("127.0.0.1", false),
            ("10.0.0.1", false),
            ("172.16.0.1", false),
            ("192.168.1.1", false),
            ("169.254.169.254", false),
            ("100.64.0.1", false),
            ("0.0.0.0", false),
            ("192.0.0.1", false), // IETF protocol assignments
            ("192.0.0.255", false),
            ("192.0.1.1", true),
            ("192.0.2.1", false),  // documentation
            ("198.18.0.1", false), // benchmarking
            ("198.19.255.254", false),
            ("198.17.255.255", true),
            ("198.20.0.1", true),
            ("224.0.0.1", false), // multicast
            ("239.255.255.250", false),
            ("240.0.0.1", false),
            ("255.255.255.255", false),
            ("2606:4700::1111", true),
            ("2001:4860:4860::8888", true),
            ("::1", false),
            ("::", false),
            ("::ffff:127.0.0.1", false),
            ("::ffff:8.8.8.8", true),
            ("::7f00:1", false), // IPv4-compatible (deprecated)
            ("::808:808", false),
            ("64:ff9b::7f00:1", false),    // NAT64 of 127.0.0.1
            ("64:ff9b::a00:1", false),     // NAT64 of 10.0.0.1
            ("64:ff9b::808:808", true),    // NAT64 of 8.8.8.8
            ("64:ff9b:1::808:808", false), // local-use NAT64
            ("2002:7f00:1::1", false),     // 6to4 of 127.0.0.1
            ("2002:c0a8:101::1", false),   // 6to4 of 192.168.1.1
            ("2002:808:808::1", true),     // 6to4 of 8.8.8.8
            ("2001::1", false),            // Teredo
            ("2001:0:4136:e378:8000:63bf:3fff:fdd2", false),
            ("2001:db8::1", false), // documentation
            ("100::1", false),      // discard-only
            ("fc00::1", false),
            ("fd12:3456::1", false),
            ("fe80::1", false),
            ("fec0::1", false), // site-local
            ("feff::1", false),
            ("ff02::1", false), // multicast
            ("ff0e::1", false),
        ];
        for (ip, public) in table {
            let addr: IpAddr = ip.parse().unwrap();
            assert_eq!(is_public_ip(addr), *public, "{ip}");
        }
    }

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
