//! The outbound-address guard: RunConvert fetches URLs that strangers give it, so it must
//! not become a way into the network it runs in.
//!
//! - only http and https (compared case-insensitively);
//! - every address a host name resolves to is checked, and the connection is made only to
//!   checked addresses (the resolver hands the HTTP client just those: no second lookup
//!   that could answer differently);
//! - refused: loopback, private (RFC 1918), link-local (incl. 169.254.169.254, the cloud
//!   metadata address), CGNAT, unique-local, multicast, unspecified, broadcast,
//!   reserved and documentation ranges, and IPv6 forms that embed such an IPv4 address
//!   (IPv4-mapped, IPv4-compatible, NAT64 64:ff9b::/96, 6to4 2002::/16);
//! - every redirect is checked again, and at most a few are followed.
//!
//! `allow_private_networks` (the server's `--allow-private-networks`) is the only way to
//! relax it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, Default)]
pub struct Guard {
    pub allow_private_networks: bool,
}

/// Why an address or URL was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

pub const MAX_REDIRECTS: usize = 5;

impl Guard {
    pub fn new(allow_private_networks: bool) -> Self {
        Guard { allow_private_networks }
    }

    /// Checks a URL's scheme, and its host when that is an IP address.
    pub fn check_url(&self, url: &url::Url) -> Result<(), Refused> {
        match url.scheme() {
            "http" | "https" => {}
            other => return Err(Refused(format!("only http and https URLs may be fetched, not {other}"))),
        }
        match url.host() {
            None => Err(Refused("the URL has no host".into())),
            Some(url::Host::Ipv4(ip)) => self.check_ip(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => self.check_ip(IpAddr::V6(ip)),
            Some(url::Host::Domain(_)) => Ok(()),
        }
    }

    pub fn check_ip(&self, ip: IpAddr) -> Result<(), Refused> {
        if self.allow_private_networks {
            return Ok(());
        }
        match forbidden_reason(ip) {
            Some(why) => Err(Refused(format!(
                "{ip} is a {why} address; this server does not connect to such addresses"
            ))),
            None => Ok(()),
        }
    }

    /// Resolves `host` and keeps only the addresses the guard allows.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, Refused> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| Refused(format!("cannot resolve {host}: {e}")))?
            .collect();
        let mut last_refusal = None;
        let allowed: Vec<SocketAddr> = addrs
            .into_iter()
            .filter(|a| match self.check_ip(a.ip()) {
                Ok(()) => true,
                Err(r) => {
                    last_refusal = Some(r);
                    false
                }
            })
            .collect();
        if allowed.is_empty() {
            return Err(match last_refusal {
                Some(Refused(why)) => Refused(format!("{host} resolves to {why}")),
                None => Refused(format!("{host} has no address")),
            });
        }
        Ok(allowed)
    }

    /// An HTTP client whose every connection and redirect passes the guard.
    pub fn http_client(&self) -> reqwest::ClientBuilder {
        let guard = *self;
        let policy = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= MAX_REDIRECTS {
                return attempt.error(Refused(format!("more than {MAX_REDIRECTS} redirects")));
            }
            match guard.check_url(attempt.url()) {
                Ok(()) => attempt.follow(),
                Err(refused) => attempt.error(refused),
            }
        });
        reqwest::Client::builder()
            .no_proxy()
            .redirect(policy)
            .dns_resolver(Arc::new(GuardedResolver { guard }))
    }
}

#[async_trait::async_trait]
impl runconvert_core::ports::OutboundGuard for Guard {
    async fn check_url(&self, url: &str) -> Result<(), String> {
        let parsed = url::Url::parse(url.trim()).map_err(|e| format!("{url:?} is not a valid URL: {e}"))?;
        Guard::check_url(self, &parsed).map_err(|r| r.0)?;
        if let Some(url::Host::Domain(host)) = parsed.host() {
            // A name that does not resolve yet is let through (its deliveries are retried
            // and checked again); one that resolves only to inner addresses is not.
            let port = parsed.port_or_known_default().unwrap_or(443);
            if let Ok(addrs) = tokio::net::lookup_host((host, port)).await {
                let addrs: Vec<SocketAddr> = addrs.collect();
                if !addrs.is_empty() && addrs.iter().all(|a| self.check_ip(a.ip()).is_err()) {
                    return Err(self
                        .check_ip(addrs[0].ip())
                        .map_err(|r| format!("{host} resolves to {}", r.0))
                        .unwrap_err());
                }
            }
        }
        Ok(())
    }
}

struct GuardedResolver {
    guard: Guard,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = self.guard;
        Box::pin(async move {
            let addrs = guard.resolve(name.as_str(), 0).await?;
            let iter: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(iter)
        })
    }
}

/// Why an address is not to be connected to, or `None` if it is a public unicast address.
pub fn forbidden_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_reason(v4),
        IpAddr::V6(v6) => v6_reason(v6),
    }
}

fn v4_reason(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    Some(match o {
        [0, ..] => "unspecified (\"this network\")",
        [127, ..] => "loopback",
        [10, ..] => "private",
        [172, b, ..] if (16..=31).contains(&b) => "private",
        [192, 168, ..] => "private",
        [169, 254, ..] => "link-local (cloud metadata)",
        [100, b, ..] if (64..=127).contains(&b) => "carrier-grade NAT",
        [192, 0, 0, _] => "IETF protocol assignment",
        [192, 0, 2, _] | [198, 51, 100, _] | [203, 0, 113, _] => "documentation",
        [198, b, ..] if b == 18 || b == 19 => "benchmarking",
        [a, ..] if (224..240).contains(&a) => "multicast",
        [255, 255, 255, 255] => "broadcast",
        [a, ..] if a >= 240 => "reserved",
        _ => return None,
    })
}

fn v6_reason(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    // Forms that carry an IPv4 address: judge the IPv4 address.
    let embedded = |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    if s[0..6] == [0, 0, 0, 0, 0, 0xffff] {
        // ::ffff:a.b.c.d, IPv4-mapped
        return v4_reason(embedded(s[6], s[7]));
    }
    if s[0..6] == [0, 0, 0, 0, 0, 0] {
        // ::a.b.c.d, IPv4-compatible (deprecated, never routed)
        return Some(v4_reason(embedded(s[6], s[7])).unwrap_or("deprecated IPv4-compatible"));
    }
    if s[0] == 0x64 && s[1] == 0xff9b {
        // NAT64 64:ff9b::/96 and the local-use 64:ff9b:1::/48
        return v4_reason(embedded(s[6], s[7])).or(if s[2] == 1 { Some("NAT64 local-use") } else { None });
    }
    if s[0] == 0x2002 {
        // 6to4: 2002:AABB:CCDD::/48 carries AA.BB.CC.DD
        return v4_reason(embedded(s[1], s[2]));
    }
    Some(match s[0] {
        x if x & 0xfe00 == 0xfc00 => "unique-local",
        x if x & 0xffc0 == 0xfe80 => "link-local",
        x if x & 0xffc0 == 0xfec0 => "site-local",
        x if x & 0xff00 == 0xff00 => "multicast",
        0x2001 if s[1] == 0xdb8 => "documentation",
        // Teredo tunnels carry an IPv4 address (obfuscated) too.
        0x2001 if s[1] == 0 => "Teredo",
        0x0100 if s[1..4] == [0, 0, 0] => "discard-only",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_every_inner_address_form() {
        let bad = [
            "127.0.0.1",
            "127.1.2.3",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::7f00:1",
            "2002:7f00:1::",
            "2002:a9fe:a9fe::1",
            "2001:db8::1",
            "2001:0:4136:e378:8000:63bf:80ff:fffe",
        ];
        for ip in bad {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(forbidden_reason(ip).is_some(), "{ip} should be refused");
            assert!(Guard::new(false).check_ip(ip).is_err());
            assert!(Guard::new(true).check_ip(ip).is_ok());
        }
        for ip in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "172.32.0.1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(forbidden_reason(ip), None, "{ip} is public");
        }
    }

    #[test]
    fn checks_schemes_and_literal_hosts() {
        let g = Guard::new(false);
        let check = |u: &str| g.check_url(&url::Url::parse(u).unwrap());
        assert!(check("HTTPS://example.com/a").is_ok());
        assert!(check("file:///etc/passwd").is_err());
        assert!(check("ftp://example.com/a").is_err());
        assert!(check("http://127.0.0.1:8080/").is_err());
        assert!(check("http://2130706433/").is_err(), "decimal form of 127.0.0.1");
        assert!(check("http://0x7f.1/").is_err(), "hex form of 127.0.0.1");
        assert!(check("http://[::ffff:127.0.0.1]/").is_err());
    }

    #[tokio::test]
    async fn resolution_drops_inner_addresses() {
        let err = Guard::new(false).resolve("localhost", 80).await.unwrap_err();
        assert!(err.0.contains("loopback"), "{err}");
        assert!(!Guard::new(true).resolve("localhost", 80).await.unwrap().is_empty());
    }
}
