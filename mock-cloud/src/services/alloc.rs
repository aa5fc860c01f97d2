//! Allocators: a bitmap with upstream's static/dynamic band split, for NodePorts
//! and ClusterIP ranges.

use super::*;
use ipnet::IpNet;

/// Offsets `0..max` of a range; dynamic allocation tries the upper band
/// `[offset, max)` first, then the lower band (KEP-3070 / KEP-3668).
#[derive(Debug, Clone)]
pub(super) struct Bitmap {
    pub(super) max: u64,
    offset: u64,
    /// Offsets below this are never handed out dynamically (the `kubernetes` ClusterIP).
    min_dynamic: u64,
    pub(super) used: BTreeSet<u64>,
}

impl Bitmap {
    pub(super) fn take(&mut self, off: u64) -> bool {
        off < self.max && self.used.insert(off)
    }

    pub(super) fn release(&mut self, off: u64) {
        self.used.remove(&off);
    }

    pub(super) fn next_free(&mut self) -> Option<u64> {
        let upper = self.offset.max(self.min_dynamic)..self.max;
        let lower = self.min_dynamic..self.offset.min(self.max);
        let found = self.scan_band(upper).or_else(|| self.scan_band(lower))?;
        self.used.insert(found);
        Some(found)
    }

    /// Random start, then a circular scan of the band.
    pub(super) fn scan_band(&self, band: std::ops::Range<u64>) -> Option<u64> {
        if band.is_empty() {
            return None;
        }
        let start = rand::rng().random_range(band.clone());
        (start..band.end)
            .chain(band.start..start)
            .find(|o| !self.used.contains(o))
    }
}

/// `min(max(16, size/step), cap)`, 0 for ranges of at most 16 (upstream `calculateRangeOffset`).
pub(super) fn range_offset(size: u128, step: u128, cap: u128) -> u64 {
    if size <= 16 {
        return 0;
    }
    u64::try_from((size / step).clamp(16, cap)).unwrap_or(0)
}

#[derive(Debug, Clone)]
pub(super) enum AllocError {
    Allocated,
    NotInRange(String),
    Full,
}

#[derive(Debug, Clone)]
pub(super) struct PortAllocator {
    base: u16,
    last: u16,
    pub(super) bits: Bitmap,
}

impl PortAllocator {
    pub(super) fn new(range: &RangeInclusive<u16>) -> Result<Self, String> {
        let (base, last) = (*range.start(), *range.end());
        if base > last || base == 0 {
            return Err(format!("invalid node port range {base}-{last}"));
        }
        let size = u128::from(last - base) + 1;
        let bits = Bitmap {
            max: size as u64,
            offset: range_offset(size, 32, 128),
            min_dynamic: 0,
            used: BTreeSet::new(),
        };
        Ok(Self { base, last, bits })
    }

    pub(super) fn range_text(&self) -> String {
        format!("{}-{}", self.base, self.last)
    }

    pub(super) fn offset_of(&self, port: i64) -> Option<u64> {
        (i64::from(self.base)..=i64::from(self.last))
            .contains(&port)
            .then(|| (port - i64::from(self.base)) as u64)
    }

    pub(super) fn allocate(&mut self, port: i64) -> Result<(), AllocError> {
        let off = self
            .offset_of(port)
            .ok_or_else(|| AllocError::NotInRange(self.range_text()))?;
        if self.bits.take(off) {
            Ok(())
        } else {
            Err(AllocError::Allocated)
        }
    }

    pub(super) fn allocate_next(&mut self) -> Result<i64, AllocError> {
        let off = self.bits.next_free().ok_or(AllocError::Full)?;
        Ok(i64::from(self.base) + off as i64)
    }

    pub(super) fn release(&mut self, port: i64) {
        if let Some(off) = self.offset_of(port) {
            self.bits.release(off);
        }
    }

    pub(super) fn port_error_text(&self, e: &AllocError) -> String {
        match e {
            AllocError::Allocated => "provided port is already allocated".into(),
            AllocError::NotInRange(r) => {
                format!("provided port is not in the valid range. The range of valid ports is {r}")
            }
            AllocError::Full => "range is full".into(),
        }
    }
}

#[derive(Debug, Clone)]
pub(super) struct IpRange {
    pub(super) family: &'static str,
    /// The service CIDR, host bits cleared.
    net: IpNet,
    /// First usable address (network + 1); offset 0 is reserved for the `kubernetes` Service.
    base: u128,
    pub(super) bits: Bitmap,
}

pub(super) fn ip_to_u128(ip: IpAddr) -> (bool, u128) {
    match ip {
        IpAddr::V4(a) => (false, u128::from(u32::from(a))),
        IpAddr::V6(a) => (true, u128::from(a)),
    }
}

pub(super) fn u128_to_ip(v6: bool, n: u128) -> IpAddr {
    if v6 {
        IpAddr::V6(n.into())
    } else {
        IpAddr::V4(u32::try_from(n).unwrap_or(0).into())
    }
}

impl IpRange {
    pub(super) fn new(cidr: &str) -> Result<Self, String> {
        let net = cidr
            .parse::<IpNet>()
            .map_err(|_| format!("invalid service CIDR {cidr:?}"))?
            .trunc();
        let (v6, network) = ip_to_u128(net.network());
        let host_bits = u32::from(net.max_prefix_len() - net.prefix_len());
        let size: u128 = if host_bits >= 127 {
            u128::MAX
        } else {
            1u128 << host_bits
        };
        // IPv6 ranges are capped at 65536 (upstream keeps a bitmap); IPv4 loses the broadcast address.
        let mut max = if v6 {
            size.min(65536)
        } else {
            size.saturating_sub(1)
        };
        max = max.saturating_sub(1); // the network address
        let max = u64::try_from(max).unwrap_or(u64::MAX);
        let bits = Bitmap {
            max,
            offset: range_offset(size, 16, 256),
            min_dynamic: 1,
            used: BTreeSet::new(),
        };
        let family = if v6 { IPV6 } else { IPV4 };
        Ok(Self {
            family,
            net,
            base: network + 1,
            bits,
        })
    }

    pub(super) fn cidr_text(&self) -> String {
        self.net.to_string()
    }

    pub(super) fn offset_of(&self, ip: &str) -> Option<u64> {
        let ip: IpAddr = ip.parse().ok()?;
        if !self.net.contains(&ip) {
            return None;
        }
        let (_, n) = ip_to_u128(ip);
        let off = n.checked_sub(self.base)?;
        u64::try_from(off).ok().filter(|&o| o < self.bits.max)
    }

    pub(super) fn allocate(&mut self, ip: &str) -> Result<(), AllocError> {
        let off = self
            .offset_of(ip)
            .ok_or_else(|| AllocError::NotInRange(ip.to_string()))?;
        if self.bits.take(off) {
            Ok(())
        } else {
            Err(AllocError::Allocated)
        }
    }

    pub(super) fn allocate_next(&mut self, wants_reserved: bool) -> Result<String, AllocError> {
        let off = if wants_reserved && self.bits.take(0) {
            Some(0)
        } else {
            self.bits.next_free()
        };
        let off = off.ok_or(AllocError::Full)?;
        Ok(u128_to_ip(self.family == IPV6, self.base + u128::from(off)).to_string())
    }

    pub(super) fn release(&mut self, ip: &str) {
        if let Some(off) = self.offset_of(ip) {
            self.bits.release(off);
        }
    }
}

pub(super) fn ip_error_text(e: &AllocError) -> String {
    match e {
        AllocError::Allocated => "provided IP is already allocated".into(),
        AllocError::NotInRange(ip) => format!("provided IP {ip} is not in the valid range"),
        AllocError::Full => "range is full".into(),
    }
}

pub(super) fn family_of(ip: &str) -> Option<&'static str> {
    match ip.parse::<IpAddr>().ok()? {
        IpAddr::V4(_) => Some(IPV4),
        IpAddr::V6(_) => Some(IPV6),
    }
}

pub(super) fn other_family(f: &str) -> &'static str {
    if f == IPV4 { IPV6 } else { IPV4 }
}
