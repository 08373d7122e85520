//! Connection caps checked at accept: connections open overall and per socket peer
//! address. A connection over a cap is closed before any byte is read; the permit a
//! connection holds is given back when it ends, however it ends.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use ipnet::IpNet;

use crate::metrics::{Metrics, ReasonLabels};

pub struct ConnectionCaps {
    max_total: usize,
    max_per_ip: usize,
    /// Peers exempt from the per-IP cap: trusted proxies carry many clients.
    exempt: Vec<IpNet>,
    open: Mutex<Open>,
    metrics: Arc<Metrics>,
}

#[derive(Default)]
struct Open {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// One admitted connection; dropping it gives its place back.
pub struct Permit {
    caps: Arc<ConnectionCaps>,
    ip: Option<IpAddr>,
}

impl ConnectionCaps {
    pub fn new(
        max_total: usize,
        max_per_ip: usize,
        exempt: Vec<IpNet>,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Arc::new(Self {
            max_total,
            max_per_ip,
            exempt,
            open: Mutex::new(Open::default()),
            metrics,
        })
    }

    /// A place for a new connection from `peer`, or `None` when a cap is reached.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Option<Permit> {
        let peer = canonical(peer);
        let capped = !self.exempt.iter().any(|n| n.contains(&peer));
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let refused = if open.total >= self.max_total {
            Some("total")
        } else if capped && open.per_ip.get(&peer).copied().unwrap_or(0) >= self.max_per_ip {
            Some("per_ip")
        } else {
            None
        };
        if let Some(reason) = refused {
            drop(open);
            self.metrics
                .edge
                .connections_refused
                .get_or_create(&ReasonLabels { reason })
                .inc();
            return None;
        }
        open.total += 1;
        if capped {
            *open.per_ip.entry(peer).or_insert(0) += 1;
        }
        self.metrics.edge.connections_open.inc();
        Some(Permit {
            caps: self.clone(),
            ip: capped.then_some(peer),
        })
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut open = self
            .caps
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        open.total = open.total.saturating_sub(1);
        if let Some(ip) = self.ip
            && let Some(n) = open.per_ip.get_mut(&ip)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.per_ip.remove(&ip);
            }
        }
        self.caps.metrics.edge.connections_open.dec();
    }
}

/// IPv4 clients on a dual-stack socket arrive as `::ffff:a.b.c.d`; count them as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_total_and_per_ip_and_give_back_on_drop() {
        let metrics = Arc::new(Metrics::new());
        let caps = ConnectionCaps::new(3, 2, vec!["10.0.0.0/8".parse().unwrap()], metrics.clone());
        let a: IpAddr = "1.1.1.1".parse().unwrap();
        let b: IpAddr = "::ffff:2.2.2.2".parse().unwrap();
        let proxy: IpAddr = "10.1.1.1".parse().unwrap();
        let a1 = caps.admit(a).unwrap();
        let _a2 = caps.admit(a).unwrap();
        assert!(
            caps.admit(a).is_none(),
            "third from one IP is over the per-IP cap"
        );
        let _b1 = caps.admit(b).unwrap();
        assert!(caps.admit(proxy).is_none(), "total cap applies to everyone");
        drop(a1);
        let _p = caps.admit(proxy).unwrap();
        let text = metrics.encode();
        assert!(
            text.contains("tollgate_dp_connections_refused_total{reason=\"per_ip\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("tollgate_dp_connections_refused_total{reason=\"total\"} 1"),
            "{text}"
        );
        assert!(text.contains("tollgate_dp_connections_open 3"), "{text}");
    }

    #[test]
    fn trusted_proxies_are_exempt_from_the_per_ip_cap() {
        let caps = ConnectionCaps::new(
            10,
            1,
            vec!["10.0.0.0/8".parse().unwrap()],
            Arc::new(Metrics::new()),
        );
        let proxy: IpAddr = "10.1.1.1".parse().unwrap();
        let _held: Vec<_> = (0..5).map(|_| caps.admit(proxy).unwrap()).collect();
    }
}
