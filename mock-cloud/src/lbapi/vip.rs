//! Allocation of load balancer addresses: `127.{block}.200.1` to `127.{block}.254.254`
//! (55 × 254 = 13,970 per mock-cloud), host bytes 0 and 255 skipped.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

/// The first third octet VIPs use.
pub const VIP_OCTET: u8 = 200;
/// The last third octet VIPs use.
pub const VIP_LAST_OCTET: u8 = 254;
const HOSTS: u16 = 254;
/// How many VIPs one block has.
pub const VIP_COUNT: u16 = (VIP_LAST_OCTET - VIP_OCTET + 1) as u16 * HOSTS;

/// Whether `ip` is in the VIP range of `block`.
pub fn in_range(block: u8, ip: Ipv4Addr) -> bool {
    matches!(ip.octets(), [127, b, o, h] if b == block && (VIP_OCTET..=VIP_LAST_OCTET).contains(&o) && (1..=254).contains(&h))
}

/// The VIP pool of one block, allocating next-fit so a just-released address is not handed
/// out again at once (clients holding a stale status would reach the wrong service).
#[derive(Debug)]
pub struct VipPool {
    block: u8,
    used: BTreeSet<u16>,
    next: u16,
}

impl VipPool {
    pub fn new(block: u8) -> VipPool {
        VipPool {
            block,
            used: BTreeSet::new(),
            next: 0,
        }
    }

    /// The index of `ip` if it is one of this pool's addresses.
    fn index(&self, ip: Ipv4Addr) -> Option<u16> {
        if !in_range(self.block, ip) {
            return None;
        }
        let [_, _, o, h] = ip.octets();
        Some(u16::from(o - VIP_OCTET) * HOSTS + u16::from(h) - 1)
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.index(ip).is_some()
    }

    pub fn is_used(&self, ip: Ipv4Addr) -> bool {
        self.index(ip).is_some_and(|i| self.used.contains(&i))
    }

    /// Takes a free address, or None when every one is in use.
    pub fn alloc(&mut self) -> Option<Ipv4Addr> {
        for k in 0..VIP_COUNT {
            let i = (self.next + k) % VIP_COUNT;
            if self.used.insert(i) {
                self.next = (i + 1) % VIP_COUNT;
                return Some(self.addr(i));
            }
        }
        None
    }

    /// Takes a specific address; false if it is outside the pool or taken.
    pub fn claim(&mut self, ip: Ipv4Addr) -> bool {
        match self.index(ip) {
            Some(i) => self.used.insert(i),
            None => false,
        }
    }

    pub fn release(&mut self, ip: Ipv4Addr) {
        if let Some(i) = self.index(ip) {
            self.used.remove(&i);
        }
    }

    fn addr(&self, i: u16) -> Ipv4Addr {
        Ipv4Addr::new(
            127,
            self.block,
            VIP_OCTET + (i / HOSTS) as u8,
            (i % HOSTS) as u8 + 1,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_next_fit_and_releases() {
        let mut p = VipPool::new(251);
        let a = p.alloc().expect("free");
        let b = p.alloc().expect("free");
        assert_eq!(a, Ipv4Addr::new(127, 251, 200, 1));
        assert_eq!(b, Ipv4Addr::new(127, 251, 200, 2));
        p.release(a);
        assert!(!p.is_used(a));
        // Next-fit: the released .1 is not reused before the rest of the pool.
        assert_eq!(p.alloc(), Some(Ipv4Addr::new(127, 251, 200, 3)));
    }

    #[test]
    fn claims_only_inside_the_pool_and_skips_claimed() {
        let mut p = VipPool::new(30);
        assert!(p.claim(Ipv4Addr::new(127, 30, 200, 1)));
        assert!(!p.claim(Ipv4Addr::new(127, 30, 200, 1)), "already taken");
        assert!(!p.claim(Ipv4Addr::new(127, 30, 200, 0)));
        assert!(!p.claim(Ipv4Addr::new(127, 30, 200, 255)));
        assert!(!p.claim(Ipv4Addr::new(127, 31, 200, 9)));
        assert!(!p.claim(Ipv4Addr::new(127, 30, 199, 9)));
        assert!(!p.claim(Ipv4Addr::new(127, 30, 255, 9)));
        assert!(p.claim(Ipv4Addr::new(127, 30, 201, 9)));
        assert_eq!(p.alloc(), Some(Ipv4Addr::new(127, 30, 200, 2)));
    }

    #[test]
    fn exhausts_after_every_address_and_wraps() {
        let mut p = VipPool::new(7);
        let all: Vec<_> = (0..VIP_COUNT).map(|_| p.alloc().expect("free")).collect();
        assert_eq!(all[253], Ipv4Addr::new(127, 7, 200, 254));
        assert_eq!(all[254], Ipv4Addr::new(127, 7, 201, 1));
        assert_eq!(all.last(), Some(&Ipv4Addr::new(127, 7, 254, 254)));
        assert_eq!(all.len(), 13_970);
        assert_eq!(p.alloc(), None);
        p.release(Ipv4Addr::new(127, 7, 200, 100));
        assert_eq!(p.alloc(), Some(Ipv4Addr::new(127, 7, 200, 100)));
    }
}
