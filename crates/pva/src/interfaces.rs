//! The host's network interfaces as PVA discovery needs them: the broadcast address of every
//! interface that is up and can broadcast (the automatic address lists), and the addresses
//! that are the host's own.

use std::net::Ipv4Addr;

use nix::ifaddrs::getifaddrs;
use nix::net::if_::InterfaceFlags;

/// One IPv4 address of an interface that is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interface {
    /// The interface's address.
    pub address: Ipv4Addr,
    /// Its broadcast address, when the interface can broadcast.
    pub broadcast: Option<Ipv4Addr>,
    /// True for a loopback interface.
    pub loopback: bool,
}

/// Every IPv4 address of every interface that is up (empty when the OS will not say).
pub fn up_interfaces() -> Vec<Interface> {
    let Ok(addrs) = getifaddrs() else {
        return Vec::new();
    };
    addrs
        .filter(|a| a.flags.contains(InterfaceFlags::IFF_UP))
        .filter_map(|a| {
            let address = a.address.as_ref()?.as_sockaddr_in()?.ip();
            let broadcast = a
                .broadcast
                .as_ref()
                .filter(|_| a.flags.contains(InterfaceFlags::IFF_BROADCAST))
                .and_then(|b| b.as_sockaddr_in())
                .map(|b| b.ip())
                .filter(|b| !b.is_unspecified());
            Some(Interface {
                address,
                broadcast,
                loopback: a.flags.contains(InterfaceFlags::IFF_LOOPBACK),
            })
        })
        .collect()
}

/// The broadcast addresses of the interfaces in `interfaces` that can broadcast, limited to
/// those whose address is in `only` (all of them when `only` is empty or holds 0.0.0.0), in
/// order and without repeats. This is what pvxs adds for an automatic address list.
pub fn broadcast_addresses(interfaces: &[Interface], only: &[Ipv4Addr]) -> Vec<Ipv4Addr> {
    let all = only.is_empty() || only.iter().any(|a| a.is_unspecified());
    let mut out = Vec::new();
    for i in interfaces {
        if let Some(b) = i.broadcast {
            if (all || only.contains(&i.address)) && !out.contains(&b) {
                out.push(b);
            }
        }
    }
    out
}

/// True when `ip` is a broadcast address of one of `interfaces`, or 255.255.255.255.
pub fn is_broadcast(interfaces: &[Interface], ip: Ipv4Addr) -> bool {
    ip.is_broadcast() || interfaces.iter().any(|i| i.broadcast == Some(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(address: [u8; 4], broadcast: Option<[u8; 4]>) -> Interface {
        Interface {
            address: address.into(),
            broadcast: broadcast.map(Into::into),
            loopback: address[0] == 127,
        }
    }

    #[test]
    fn broadcasts_of_every_broadcasting_interface_or_only_the_listed_ones() {
        let ifs = [
            iface([127, 0, 0, 1], None),
            iface([10, 0, 1, 2], Some([10, 0, 1, 255])),
            iface([10, 0, 2, 2], Some([10, 0, 2, 255])),
            iface([10, 0, 2, 3], Some([10, 0, 2, 255])),
        ];
        let all: Vec<Ipv4Addr> = vec![[10, 0, 1, 255].into(), [10, 0, 2, 255].into()];
        assert_eq!(broadcast_addresses(&ifs, &[]), all);
        assert_eq!(broadcast_addresses(&ifs, &[Ipv4Addr::UNSPECIFIED]), all);
        assert_eq!(
            broadcast_addresses(&ifs, &[[10, 0, 2, 3].into()]),
            vec![Ipv4Addr::from([10, 0, 2, 255])]
        );
        assert!(is_broadcast(&ifs, [10, 0, 1, 255].into()));
        assert!(is_broadcast(&ifs, Ipv4Addr::BROADCAST));
        assert!(!is_broadcast(&ifs, [10, 0, 1, 2].into()));
    }

    #[test]
    fn this_host_has_a_loopback_interface() {
        assert!(up_interfaces()
            .iter()
            .any(|i| i.loopback && i.address == Ipv4Addr::LOCALHOST));
    }
}
