//! The SSRF guard for host names: resolves through the system resolver, then keeps only public
//! addresses. Checking the addresses actually connected to (rather than the name at creation
//! time) also defeats DNS rebinding.

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::net::SocketAddr;

use crate::domain::is_public_ip;

/// A host name that resolved to no public address.
#[derive(Debug, thiserror::Error)]
#[error("refused: `{host}` resolves only to private, loopback or link-local addresses")]
pub struct BlockedTarget {
    pub host: String,
}

#[derive(Debug, Default)]
pub struct PublicOnlyResolver;

impl Resolve for PublicOnlyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let public: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|addr| is_public_ip(addr.ip()))
                .collect();
            if public.is_empty() {
                return Err(BlockedTarget { host }.into());
            }
            Ok(Box::new(public.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn resolver_refuses_a_name_resolving_to_loopback() {
        let err = PublicOnlyResolver
            .resolve("localhost".parse().unwrap())
            .await
            .err()
            .expect("localhost must be refused");
        let blocked = err
            .downcast_ref::<BlockedTarget>()
            .expect("a BlockedTarget");
        assert_eq!(blocked.host, "localhost");
    }
}
