//! Who may connect to a TCP service: addresses banned for what they did, and caps on
//! inbound connections per address and per network — for the swarm's peer listener
//! and RTMP ingest alike.
//!
//! A swarm peer id is the peer's own choice, so a ban by id alone lets a forger
//! reconnect at once under a new one; a ban here holds the address out for
//! [`GuardConfig::ban_for`]. Caps keep a few hosts from holding a service's slots
//! (Sybils, slow-connection floods): at most `per_ip` inbound connections from one
//! address and `per_net` from one network — a /24 for IPv4, a /48 for IPv6 (what one
//! site is usually given). The host's own address (127.0.0.1, ::1) is neither capped
//! nor banned: `shoal up` runs a broadcaster, its encoder and local viewers on one
//! machine.

use std::collections::HashMap;
use std::net::IpAddr;

/// µs on the caller's clock.
pub type Micros = u64;

#[derive(Debug, Clone, Copy)]
pub struct GuardConfig {
    /// Inbound connections from one address at once.
    pub per_ip: u32,
    /// Inbound connections from one /24 (IPv4) or /48 (IPv6) at once.
    pub per_net: u32,
    /// How long a ban lasts, µs.
    pub ban_for: Micros,
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig { per_ip: 8, per_net: 32, ban_for: 10 * 60 * 1_000_000 }
    }
}

/// Why an inbound connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    Banned,
    PerIp,
    PerNet,
}

/// Counters for the node's metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GuardStats {
    pub bans: u64,
    pub refused_banned: u64,
    pub refused_capped: u64,
}

#[derive(Debug, Default)]
pub struct AddrGuard {
    cfg: GuardConfig,
    bans: HashMap<IpAddr, Micros>,
    per_ip: HashMap<IpAddr, u32>,
    per_net: HashMap<u128, u32>,
    pub stats: GuardStats,
}

/// Bans held before expired ones are swept out.
const SWEEP_AT: usize = 4_096;

impl AddrGuard {
    pub fn new(cfg: GuardConfig) -> Self {
        AddrGuard { cfg, ..Default::default() }
    }

    /// An inbound connection from `ip`: counted if admitted.
    pub fn admit(&mut self, ip: IpAddr, now: Micros) -> Result<(), Refused> {
        let ip = ip.to_canonical();
        if is_host(ip) {
            return Ok(());
        }
        if self.banned(ip, now) {
            self.stats.refused_banned += 1;
            return Err(Refused::Banned);
        }
        let (n_ip, n_net) =
            (self.per_ip.get(&ip).copied().unwrap_or(0), self.per_net.get(&net(ip)).copied().unwrap_or(0));
        if n_ip >= self.cfg.per_ip || n_net >= self.cfg.per_net {
            self.stats.refused_capped += 1;
            return Err(if n_ip >= self.cfg.per_ip { Refused::PerIp } else { Refused::PerNet });
        }
        *self.per_ip.entry(ip).or_default() += 1;
        *self.per_net.entry(net(ip)).or_default() += 1;
        Ok(())
    }

    /// An admitted inbound connection from `ip` ended.
    pub fn release(&mut self, ip: IpAddr) {
        let ip = ip.to_canonical();
        if is_host(ip) {
            return;
        }
        count_out(&mut self.per_ip, ip);
        count_out(&mut self.per_net, net(ip));
    }

    /// Keeps `ip` out until `now + ban_for`.
    pub fn ban(&mut self, ip: IpAddr, now: Micros) {
        let ip = ip.to_canonical();
        if is_host(ip) {
            return;
        }
        if self.bans.len() >= SWEEP_AT {
            self.bans.retain(|_, until| *until > now);
        }
        self.bans.insert(ip, now.saturating_add(self.cfg.ban_for));
        self.stats.bans += 1;
    }

    pub fn banned(&self, ip: IpAddr, now: Micros) -> bool {
        self.bans.get(&ip.to_canonical()).is_some_and(|until| *until > now)
    }
}

/// One connection fewer under `key` (the entry goes at zero).
fn count_out<K: std::hash::Hash + Eq>(counts: &mut HashMap<K, u32>, key: K) {
    if let Some(n) = counts.get_mut(&key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            counts.remove(&key);
        }
    }
}

/// The network `ip` is on — its /24 (IPv4) or /48 (IPv6) — as a key; `None` for the
/// host's own address, which stands for no one network (local peers are told apart
/// by connection). What the swarm peer weighs vouches and seed slots by.
pub fn network(ip: IpAddr) -> Option<u128> {
    let ip = ip.to_canonical();
    (!is_host(ip)).then(|| net(ip))
}

fn is_host(ip: IpAddr) -> bool {
    ip == IpAddr::from([127, 0, 0, 1]) || ip == IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1])
}

/// The network an address is counted in: its /24 (IPv4) or /48 (IPv6).
fn net(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4) & 0xffff_ff00),
        IpAddr::V6(v6) => (u128::from(v6) & !((1u128 << 80) - 1)) | 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn caps_count_per_address_and_per_network() {
        let mut g = AddrGuard::new(GuardConfig { per_ip: 2, per_net: 3, ban_for: 1_000 });
        assert_eq!(g.admit(ip("10.0.0.1"), 0), Ok(()));
        assert_eq!(g.admit(ip("10.0.0.1"), 0), Ok(()));
        assert_eq!(g.admit(ip("10.0.0.1"), 0), Err(Refused::PerIp));
        assert_eq!(g.admit(ip("10.0.0.2"), 0), Ok(()));
        assert_eq!(g.admit(ip("10.0.0.3"), 0), Err(Refused::PerNet), "a fourth from the /24");
        assert_eq!(g.admit(ip("10.0.1.3"), 0), Ok(()), "another /24");
        g.release(ip("10.0.0.1"));
        assert_eq!(g.admit(ip("10.0.0.3"), 0), Ok(()), "room again once one closed");
        // IPv6 by /48; an IPv4-mapped address is its IPv4 one.
        assert_eq!(g.admit(ip("2001:db8:1:1::1"), 0), Ok(()));
        assert_eq!(g.admit(ip("2001:db8:1:2::1"), 0), Ok(()));
        assert_eq!(g.admit(ip("2001:db8:1:3::1"), 0), Ok(()));
        assert_eq!(g.admit(ip("2001:db8:1:4::1"), 0), Err(Refused::PerNet));
        assert_eq!(g.admit(ip("::ffff:10.0.1.3"), 0), Ok(()));
        assert_eq!(g.admit(ip("10.0.1.3"), 0), Err(Refused::PerIp));
        assert_eq!(g.stats.refused_capped, 4);
        // The host itself is never capped.
        for _ in 0..10 {
            assert_eq!(g.admit(ip("127.0.0.1"), 0), Ok(()));
        }
    }

    #[test]
    fn a_ban_holds_an_address_out_until_it_expires() {
        let mut g = AddrGuard::new(GuardConfig { per_ip: 8, per_net: 32, ban_for: 1_000 });
        g.ban(ip("192.0.2.7"), 100);
        assert_eq!(g.admit(ip("192.0.2.7"), 500), Err(Refused::Banned));
        assert_eq!(g.admit(ip("::ffff:192.0.2.7"), 500), Err(Refused::Banned));
        assert_eq!(g.admit(ip("192.0.2.8"), 500), Ok(()), "only that address");
        assert_eq!(g.admit(ip("192.0.2.7"), 1_100), Ok(()), "expired");
        g.ban(ip("127.0.0.1"), 0);
        assert!(!g.banned(ip("127.0.0.1"), 1));
        assert_eq!(g.stats, GuardStats { bans: 1, refused_banned: 2, refused_capped: 0 });
    }
}
