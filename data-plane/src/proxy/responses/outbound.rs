//! Where the data plane may connect upstream. An account `base_url` is checked by the
//! control plane only as written; a DNS name can still point at loopback or the cloud
//! metadata address. So the rule is enforced again at connection time: literal IP hosts
//! here before sending, names through [`GuardedResolver`] (hyper never resolves a
//! literal, so both paths are needed). `TOLLGATE_ALLOW_PRIVATE_UPSTREAMS` lifts it.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Loopback, private, link-local (incl. the 169.254.169.254 metadata address), shared
/// (CGNAT, where some clouds put metadata), unspecified or broadcast — and the IPv6
/// forms of each, including IPv4-mapped/compatible addresses.
pub fn is_forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        // 0.0.0.0/8 "this network": connecting to 0.0.0.0 reaches the local host.
        || a == 0
        // 100.64.0.0/10 shared address space (Alibaba's metadata is 100.100.100.200).
        || (a == 100 && (64..128).contains(&b))
}

fn forbidden_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return forbidden_v4(v4);
    }
    let seg = ip.segments();
    // Deprecated IPv4-compatible form ::a.b.c.d (but not :: and ::1, handled below).
    if seg[..6] == [0; 6] && !(ip.is_unspecified() || ip.is_loopback()) {
        let [hi, lo] = [seg[6], seg[7]];
        let v4 = Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
        return forbidden_v4(v4);
    }
    ip.is_loopback()
        || ip.is_unspecified()
        // fc00::/7 unique local (AWS's IPv6 metadata fd00:ec2::254 is one).
        || (seg[0] & 0xfe00) == 0xfc00
        // fe80::/10 link-local.
        || (seg[0] & 0xffc0) == 0xfe80
}

/// A connection refused by the outbound address rule. Travels inside reqwest's error
/// chain, so the sender can tell it from an ordinary connect failure.
#[derive(Debug)]
pub struct AddressRefused {
    pub host: String,
    pub addrs: Vec<IpAddr>,
}

impl fmt::Display for AddressRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let addrs: Vec<String> = self.addrs.iter().map(IpAddr::to_string).collect();
        write!(
            f,
            "upstream host {} is loopback, private or link-local ({}); refused \
             (TOLLGATE_ALLOW_PRIVATE_UPSTREAMS allows it)",
            self.host,
            addrs.join(", ")
        )
    }
}

impl std::error::Error for AddressRefused {}

/// The refusal somewhere in `err`'s source chain, if that is why it failed.
pub fn refusal_in<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a AddressRefused> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(r) = e.downcast_ref::<AddressRefused>() {
            return Some(r);
        }
        cur = e.source();
    }
    None
}

/// The URL's host if it is a literal IP the rule forbids.
pub fn literal_refusal(url: &str) -> Option<AddressRefused> {
    let parsed = reqwest::Url::parse(url).ok()?;
    // IPv6 literals come bracketed; a name does not parse as an address.
    let host = parsed.host_str()?;
    let ip: IpAddr = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()?;
    is_forbidden(ip).then(|| AddressRefused {
        host: ip.to_string(),
        addrs: vec![ip],
    })
}

/// The system resolver, minus forbidden addresses; a name left with none is refused.
/// Dropping only the bad answers (rather than failing on any) keeps a dual-stack name
/// usable while a rebinding answer mixing in 127.0.0.1 can never be dialled.
#[derive(Debug, Clone, Copy, Default)]
pub struct GuardedResolver;

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let (allowed, refused): (Vec<SocketAddr>, Vec<SocketAddr>) =
                all.into_iter().partition(|a| !is_forbidden(a.ip()));
            if allowed.is_empty() && !refused.is_empty() {
                let addrs = refused.iter().map(SocketAddr::ip).collect();
                return Err(Box::new(AddressRefused { host, addrs }) as _);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn v4_classes() {
        for s in [
            "127.0.0.1",
            "127.8.9.10",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "169.254.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "100.64.0.1",
            "100.100.100.200",
            "255.255.255.255",
        ] {
            assert!(is_forbidden(ip(s)), "{s}");
        }
        for s in [
            "8.8.8.8",
            "104.18.33.45",
            "172.32.0.1",
            "172.15.255.255",
            "192.169.0.1",
            "100.128.0.1",
            "169.255.0.1",
        ] {
            assert!(!is_forbidden(ip(s)), "{s}");
        }
    }

    #[test]
    fn v6_classes() {
        for s in [
            "::1",
            "::",
            "fc00::1",
            "fd00:ec2::254",
            "fe80::1",
            "febf::1",
        ] {
            assert!(is_forbidden(ip(s)), "{s}");
        }
        for s in ["2606:4700::6810:212d", "2001:4860:4860::8888", "fec0::1"] {
            assert!(!is_forbidden(ip(s)), "{s}");
        }
    }

    #[test]
    fn mapped_and_compatible_forms_follow_their_v4_address() {
        for s in [
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.1.2.3",
            "::ffff:0.0.0.0",
            "::127.0.0.1",
            "::169.254.169.254",
        ] {
            assert!(is_forbidden(ip(s)), "{s}");
        }
        assert!(!is_forbidden(ip("::ffff:8.8.8.8")));
        assert!(!is_forbidden(ip("::8.8.8.8")));
    }

    #[test]
    fn literal_hosts_in_urls() {
        assert!(literal_refusal("http://127.0.0.1:9/v1").is_some());
        assert!(literal_refusal("https://169.254.169.254/latest").is_some());
        assert!(literal_refusal("https://[::ffff:127.0.0.1]/v1").is_some());
        assert!(literal_refusal("https://[fd00::1]:443/v1").is_some());
        assert!(literal_refusal("https://8.8.8.8/v1").is_none());
        // Names are left to the resolver.
        assert!(literal_refusal("https://localhost/v1").is_none());
        assert!(literal_refusal("https://api.openai.com/v1").is_none());
    }

    #[tokio::test]
    async fn resolver_refuses_a_name_with_only_loopback_answers() {
        let err = GuardedResolver
            .resolve("localhost".parse().unwrap())
            .await
            .err()
            .expect("localhost must be refused");
        let refusal = refusal_in(err.as_ref()).expect("typed refusal");
        assert_eq!(refusal.host, "localhost");
        assert!(refusal.addrs.iter().all(|a| a.is_loopback()));
        assert!(err.to_string().contains("TOLLGATE_ALLOW_PRIVATE_UPSTREAMS"));
    }
}
