//! Limits on what clients may do: connections per address and in all, the
//! client's address behind trusted proxies, and a token bucket for the
//! message rate of one connection.

use ipnet::IpNet;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A token bucket: `rate` tokens a second, holding at most one second's worth
/// (and at least one), so a burst up to the rate passes and a steady flood
/// is held to it. Single precision: every connection keeps one, and a
/// rate needs no more than seven digits.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f32,
    tokens: f32,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket refilled at `rate` tokens a second; a rate of 0 never runs dry.
    pub fn new(rate: f64, now: Instant) -> Self {
        let rate = rate as f32;
        TokenBucket { rate, tokens: rate.max(1.0), last: now }
    }

    /// Takes a token if there is one at `now`.
    pub fn take(&mut self, now: Instant) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        let refill = now.saturating_duration_since(self.last).as_secs_f32() * self.rate;
        self.tokens = (self.tokens + refill).min(self.rate.max(1.0));
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// How long until the next token, for telling a client when to retry.
    pub fn wait(&self) -> Duration {
        if self.rate <= 0.0 || self.tokens >= 1.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f32((1.0 - self.tokens) / self.rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_up_to_the_rate_then_the_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10.0, start);
        assert_eq!((0..15).filter(|_| bucket.take(start)).count(), 10);
        assert!(bucket.wait() > Duration::ZERO);
        // A tenth of a second later, one more token; a second later, ten (not more).
        assert!(bucket.take(start + Duration::from_millis(100)));
        assert!(!bucket.take(start + Duration::from_millis(100)));
        let later = start + Duration::from_secs(5);
        assert_eq!((0..15).filter(|_| bucket.take(later)).count(), 10);
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
        let start = Instant::now();
        let mut unlimited = TokenBucket::new(0.0, start);
        assert!((0..10_000).all(|_| unlimited.take(start)));
        let mut slow = TokenBucket::new(0.5, start);
        assert!(slow.take(start));
        assert!(!slow.take(start + Duration::from_secs(1)));
        assert!(slow.take(start + Duration::from_secs(2)));
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
    address: IpAddr,
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
        Ok(Permit { limits: self.clone(), address })
    }

    /// The connections open now.
    pub fn count(&self) -> usize {
        self.open().0
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut open = self.limits.open();
        open.0 -= 1;
        if let Some(count) = open.1.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                open.1.remove(&self.address);
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
