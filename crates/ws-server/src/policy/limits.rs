//! Limits on what clients may do: connections per address and in all, the
//! client's address behind trusted proxies, and a token bucket for the
//! message rate of one connection.

use ipnet::IpNet;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// A token bucket of `rate` tokens a second, holding at most one second's
/// worth (and at least one), so a burst up to the rate passes and a steady
/// flood is held to it; a rate of 0 never runs dry. Every connection keeps
/// one, so it is kept in one word, as the generic cell rate algorithm
/// does: the time at which the bucket is full again. Times are durations
/// since any fixed start, the same for every call.
#[derive(Debug, Clone, Default)]
pub struct TokenBucket {
    /// When the bucket is full again, in nanoseconds since the start.
    full_at: u64,
}

impl TokenBucket {
    /// Takes a token if there is one at `now`.
    pub fn take(&mut self, rate: f64, now: Duration) -> bool {
        let Some((interval, window)) = Self::spans(rate) else { return true };
        let now = nanos(now);
        // In 128 bits: a rate low enough makes a token take longer than 64 bits of nanoseconds.
        let full_at = u128::from(self.full_at.max(now)) + u128::from(interval);
        if full_at > u128::from(now) + u128::from(window) {
            return false;
        }
        self.full_at = u64::try_from(full_at).unwrap_or(u64::MAX);
        true
    }

    /// How long from `now` until the next token, for telling a client when to retry.
    pub fn wait(&self, rate: f64, now: Duration) -> Duration {
        let Some((interval, window)) = Self::spans(rate) else { return Duration::ZERO };
        let wait = (u128::from(self.full_at) + u128::from(interval))
            .saturating_sub(u128::from(nanos(now)) + u128::from(window));
        Duration::from_nanos(u64::try_from(wait).unwrap_or(u64::MAX))
    }

    /// Nanoseconds a token takes to come back, and that a full bucket takes to fill.
    fn spans(rate: f64) -> Option<(u64, u64)> {
        (rate > 0.0).then(|| (1e9 / rate, rate.max(1.0) * 1e9 / rate)).map(|(i, w)| (i as u64, w as u64))
    }
}

fn nanos(time: Duration) -> u64 {
    u64::try_from(time.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_up_to_the_rate_then_the_rate() {
        let start = Duration::from_secs(1000);
        let mut bucket = TokenBucket::default();
        assert_eq!((0..15).filter(|_| bucket.take(10.0, start)).count(), 10);
        assert_eq!(bucket.wait(10.0, start), Duration::from_millis(100));
        // A tenth of a second later, one more token; a second later, ten (not more).
        assert!(bucket.take(10.0, start + Duration::from_millis(100)));
        assert!(!bucket.take(10.0, start + Duration::from_millis(100)));
        let later = start + Duration::from_secs(5);
        assert_eq!((0..15).filter(|_| bucket.take(10.0, later)).count(), 10);
        assert_eq!(bucket.wait(10.0, later + Duration::from_secs(1)), Duration::ZERO);
    }

    #[test]
    fn connections_are_counted_per_address_and_in_all() {
        let limits = Arc::new(ConnectionLimits::new(3, 2));
        let (a, b, c): (IpAddr, IpAddr, IpAddr) =
            ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap(), "::1".parse().unwrap());
        let first = limits.admit(a).unwrap();
        let _second = limits.admit(a).unwrap();
        assert_eq!(limits.admit(a).unwrap_err(), Refusal::TooManyFromAddress);
        let _third = limits.admit(b).unwrap();
        assert_eq!(limits.admit(c).unwrap_err(), Refusal::TooMany);
        drop(first);
        assert_eq!(limits.count(), 2);
        let _again = limits.admit(c).unwrap();
        let unlimited = Arc::new(ConnectionLimits::new(0, 0));
        let permits: Vec<_> = (0..100).map(|_| unlimited.admit(a).unwrap()).collect();
        assert_eq!(unlimited.count(), permits.len());
        drop(permits);
        assert_eq!(unlimited.count(), 0);
    }

    #[test]
    fn an_ipv4_client_on_a_dual_stack_socket_counts_as_its_ipv4_address() {
        let limits = Arc::new(ConnectionLimits::new(0, 1));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        let permit = limits.admit(mapped).unwrap();
        assert_eq!(limits.admit("10.0.0.1".parse().unwrap()).unwrap_err(), Refusal::TooManyFromAddress);
        drop(permit);
        let _again = limits.admit("10.0.0.1".parse().unwrap()).unwrap();
    }

    #[test]
    fn the_client_address_behind_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // Not from a proxy: the header is the client's word and is ignored.
        assert_eq!(client_address(ip("203.0.113.9"), Some("1.2.3.4"), &trusted), ip("203.0.113.9"));
        // From a proxy: the nearest untrusted hop, not what the client put first.
        let chain = Some("6.6.6.6, 198.51.100.7, 10.1.1.1");
        assert_eq!(client_address(ip("10.0.0.5"), chain, &trusted), ip("198.51.100.7"));
        assert_eq!(client_address(ip("::1"), Some("2001:db8::7"), &trusted), ip("2001:db8::7"));
        assert_eq!(client_address(ip("10.0.0.5"), Some("10.2.2.2"), &trusted), ip("10.2.2.2"));
        assert_eq!(client_address(ip("10.0.0.5"), Some("garbage"), &trusted), ip("10.0.0.5"));
        assert_eq!(client_address(ip("10.0.0.5"), None, &trusted), ip("10.0.0.5"));
    }

    #[test]
    fn rate_zero_is_unlimited_and_fractions_work() {
        let start = Duration::ZERO;
        let mut unlimited = TokenBucket::default();
        assert!((0..10_000).all(|_| unlimited.take(0.0, start)));
        let mut slow = TokenBucket::default();
        assert!(slow.take(0.5, start));
        assert!(!slow.take(0.5, start + Duration::from_secs(1)));
        assert_eq!(slow.wait(0.5, start + Duration::from_secs(1)), Duration::from_secs(1));
        assert!(slow.take(0.5, start + Duration::from_secs(2)));
        // A rate so low that a token takes longer than u64 nanoseconds hold: one, then none.
        let mut stalled = TokenBucket::default();
        assert!(stalled.take(1e-12, start));
        assert!(!stalled.take(1e-12, start + Duration::from_secs(3600)));
        assert!(stalled.wait(1e-12, start) > Duration::ZERO);
    }
}

/// Why a connection was refused at the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The client's address has `--max-connections-per-ip` open already: 429.
    TooManyFromAddress,
    /// The server has `--max-connections` open already: 503.
    TooMany,
}

impl Refusal {
    /// The HTTP status the handshake is answered with.
    pub fn status(self) -> u16 {
        match self {
            Refusal::TooManyFromAddress => 429,
            Refusal::TooMany => 503,
        }
    }

    /// The reason's label in the metrics.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::TooManyFromAddress => "per_ip",
            Refusal::TooMany => "full",
        }
    }

    /// The reason, for the response body and the log.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::TooManyFromAddress => "too many connections from this address",
            Refusal::TooMany => "the server is full",
        }
    }
}

/// Counts the open hub connections, in all and per client address.
#[derive(Debug)]
pub struct ConnectionLimits {
    max_total: usize,
    max_per_address: usize,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// One counted connection; dropping it counts it out.
#[derive(Debug)]
pub struct Permit {
    limits: Arc<ConnectionLimits>,
    /// The address counted, IPv4 as mapped into IPv6 (24 bytes for the permit, not 32).
    address: Ipv6Addr,
}

impl ConnectionLimits {
    /// Limits of `max_total` connections and `max_per_address` from one
    /// address; 0 means no limit.
    pub fn new(max_total: usize, max_per_address: usize) -> Self {
        ConnectionLimits { max_total, max_per_address, open: Mutex::default() }
    }

    fn open(&self) -> MutexGuard<'_, (usize, HashMap<IpAddr, usize>)> {
        // Every change under the lock is one step: a poisoned map is still whole.
        self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts a connection from `address` in, if both limits allow it.
    pub fn admit(self: &Arc<Self>, address: IpAddr) -> Result<Permit, Refusal> {
        // An IPv4 client on a dual-stack socket counts as the same IPv4 address.
        let address = address.to_canonical();
        let mut open = self.open();
        let from_address = open.1.get(&address).copied().unwrap_or(0);
        if self.max_per_address > 0 && from_address >= self.max_per_address {
            return Err(Refusal::TooManyFromAddress);
        }
        if self.max_total > 0 && open.0 >= self.max_total {
            return Err(Refusal::TooMany);
        }
        open.0 += 1;
        open.1.insert(address, from_address + 1);
        let address = match address {
            IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            IpAddr::V6(v6) => v6,
        };
        Ok(Permit { limits: self.clone(), address })
    }

    /// The connections open now.
    pub fn count(&self) -> usize {
        self.open().0
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let address = self.address.to_canonical();
        let mut open = self.limits.open();
        open.0 -= 1;
        if let Some(count) = open.1.get_mut(&address) {
            *count -= 1;
            if *count == 0 {
                open.1.remove(&address);
            }
        }
    }
}

/// The client's address: the peer's, or, when the peer is a trusted proxy,
/// the nearest address in `X-Forwarded-For` that is not one (read from the
/// right, as each proxy appends the address it saw).
pub fn client_address(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<IpAddr> =
        forwarded_for.into_iter().flat_map(|v| v.split(',')).filter_map(|hop| hop.trim().parse().ok()).collect();
    hops.iter().rev().find(|ip| !is_trusted(ip)).or(hops.first()).copied().unwrap_or(peer)
}
