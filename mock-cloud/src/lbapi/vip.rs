//! Allocation of load balancer addresses: `127.{block}.200.1 ..= .254`.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

/// The third octet every VIP has.
pub const VIP_OCTET: u8 = 200;

/// The VIP pool of one block, allocating next-fit so a just-released address is not handed
/// out again at once (clients holding a stale status would reach the wrong service).
#[derive(Debug)]
pub struct VipPool {
    block: u8,
    used: BTreeSet<u8>,
    next: u8,
}

impl VipPool {
    pub fn new(block: u8) -> VipPool {
        VipPool {
            block,
            used: BTreeSet::new(),
            next: 1,
        }
    }

    /// The host byte of `ip` if it is one of this pool's addresses.
    pub fn host(&self, ip: Ipv4Addr) -> Option<u8> {
        match ip.octets() {
            [127, b, VIP_OCTET, h] if b == self.block && (1..=254).contains(&h) => Some(h),
            _ => None,
        }
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.host(ip).is_some()
    }

    pub fn is_used(&self, ip: Ipv4Addr) -> bool {
        self.host(ip).is_some_and(|h| self.used.contains(&h))
    }

    /// Takes a free address, or None when all 254 are in use.
    pub fn alloc(&mut self) -> Option<Ipv4Addr> {
        for i in 0..254u16 {
            let h = ((u16::from(self.next) - 1 + i) % 254 + 1) as u8;
            if self.used.insert(h) {
                self.next = h % 254 + 1;
                return Some(self.addr(h));
            }
        }
        None
    }

    /// Takes a specific address; false if it is outside the pool or taken.
    pub fn claim(&mut self, ip: Ipv4Addr) -> bool {
        match self.host(ip) {
            Some(h) => self.used.insert(h),
            None => false,
        }
    }

    pub fn release(&mut self, ip: Ipv4Addr) {
        if let Some(h) = self.host(ip) {
            self.used.remove(&h);
        }
    }

    fn addr(&self, h: u8) -> Ipv4Addr {
        Ipv4Addr::new(127, self.block, VIP_OCTET, h)
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
        assert!(!p.claim(Ipv4Addr::new(127, 30, 201, 9)));
        assert_eq!(p.alloc(), Some(Ipv4Addr::new(127, 30, 200, 2)));
    }

    #[test]
    fn exhausts_after_254_and_wraps() {
        let mut p = VipPool::new(7);
        let all: Vec<_> = (0..254).map(|_| p.alloc().expect("free")).collect();
        assert_eq!(all.last(), Some(&Ipv4Addr::new(127, 7, 200, 254)));
        assert_eq!(p.alloc(), None);
        p.release(Ipv4Addr::new(127, 7, 200, 100));
        assert_eq!(p.alloc(), Some(Ipv4Addr::new(127, 7, 200, 100)));
    }
}
