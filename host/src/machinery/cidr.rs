//! IPv4 ranges as the node-IPAM controller and the node agent use them: the cluster CIDR
//! cut into node CIDRs, a node CIDR's addresses (`.1` the node's own, the rest its pods').

use std::net::Ipv4Addr;

/// An IPv4 network: its first address and prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ipv4Net {
    base: u32,
    prefix: u8,
}

impl Ipv4Net {
    /// 127.0.0.0/16: the loopback addresses a machine itself uses (127.0.0.1, 127.0.0.53, 127.0.1.1).
    pub const RESERVED_LOOPBACK: Ipv4Net = Ipv4Net { base: 0x7f00_0000, prefix: 16 };

    /// Parse `a.b.c.d/n`; host bits must be zero.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (address, prefix) =
            text.split_once('/').ok_or_else(|| format!("{text:?} is not a CIDR such as 127.64.0.0/12"))?;
        let address: Ipv4Addr = address.parse().map_err(|_| format!("{text:?}: {address:?} is not an IPv4 address"))?;
        let prefix: u8 =
            prefix.parse().ok().filter(|p| *p <= 32).ok_or_else(|| format!("{text:?}: the prefix must be 0 to 32"))?;
        let net = Self { base: u32::from(address) & mask(prefix), prefix };
        if net.base != u32::from(address) {
            return Err(format!("{text:?} has host bits set; did you mean {net}?"));
        }
        Ok(net)
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// How many subnets of `prefix` this holds.
    pub fn subnets(&self, prefix: u8) -> u64 {
        if prefix < self.prefix || prefix > 32 {
            0
        } else {
            1u64 << (prefix - self.prefix)
        }
    }

    /// The `index`th subnet of `prefix`.
    pub fn subnet(&self, prefix: u8, index: u64) -> Option<Ipv4Net> {
        (index < self.subnets(prefix))
            .then(|| Ipv4Net { base: self.base + ((index as u32) << (32 - u32::from(prefix))), prefix })
    }

    /// Which subnet of `prefix` `inner` is, if it is one of this range's.
    pub fn index_of(&self, prefix: u8, inner: &Ipv4Net) -> Option<u64> {
        (inner.prefix == prefix && self.contains(Ipv4Addr::from(inner.base)))
            .then(|| u64::from((inner.base - self.base) >> (32 - u32::from(prefix))))
    }

    pub fn contains(&self, address: Ipv4Addr) -> bool {
        u32::from(address) & mask(self.prefix) == self.base
    }

    /// Address `n` of the range (0 is the network's own).
    pub fn host(&self, n: u32) -> Option<Ipv4Addr> {
        let size = if self.prefix == 0 { u64::from(u32::MAX) + 1 } else { 1u64 << (32 - self.prefix) };
        (u64::from(n) < size).then(|| Ipv4Addr::from(self.base + n))
    }

    /// How many addresses it holds.
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix))
    }

    /// Whether the two ranges share an address.
    pub fn overlaps(&self, other: &Ipv4Net) -> bool {
        let prefix = self.prefix.min(other.prefix);
        self.base & mask(prefix) == other.base & mask(prefix)
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

impl std::fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_cidr_cuts_into_node_cidrs() {
        let cluster = Ipv4Net::parse("127.64.0.0/12").unwrap();
        assert_eq!(cluster.subnets(24), 4096);
        let third = cluster.subnet(24, 2).unwrap();
        assert_eq!(third.to_string(), "127.64.2.0/24");
        assert_eq!(cluster.index_of(24, &third), Some(2));
        assert_eq!(cluster.subnet(24, 4095).unwrap().to_string(), "127.79.255.0/24");
        assert_eq!(cluster.subnet(24, 4096), None);
        assert_eq!(third.host(1), Some(Ipv4Addr::new(127, 64, 2, 1)));
        assert!(Ipv4Net::parse("127.64.0.1/12").unwrap_err().contains("127.64.0.0/12"));
        assert!(Ipv4Net::parse("127.0.0.0/8").unwrap().overlaps(&third));
        assert!(!Ipv4Net::parse("127.96.0.0/12").unwrap().overlaps(&cluster));
    }
}
