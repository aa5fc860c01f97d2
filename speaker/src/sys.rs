//! The only `unsafe` in berth: building a `sockaddr_ll`.
//!
//! An AF_PACKET socket is bound to one interface and sends frames out of it through a
//! `struct sockaddr_ll`. socket2 (like nix) offers no safe constructor for that address, only
//! a zeroed `sockaddr_storage` viewed as the platform type and `SockAddr::new` over it, both
//! `unsafe fn`s. Everything else about the socket goes through socket2's safe API.
#![allow(unsafe_code)]

use socket2::{SockAddr, SockAddrStorage};

/// `sockaddr_ll` for interface `ifindex` and EtherType `protocol` (host order).
pub fn packet_addr(ifindex: u32, protocol: u16) -> SockAddr {
    let mut storage = SockAddrStorage::zeroed();
    // SAFETY: `sockaddr_ll` is one of this platform's `sockaddr_*` types and fits in the
    // storage (view_as asserts the size); a zeroed storage is a valid `sockaddr_ll`.
    let ll = unsafe { storage.view_as::<libc::sockaddr_ll>() };
    ll.sll_family = libc::AF_PACKET as libc::sa_family_t;
    ll.sll_protocol = protocol.to_be();
    ll.sll_ifindex = ifindex as libc::c_int;
    let len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    // SAFETY: the storage holds a fully initialised `sockaddr_ll` of `len` bytes.
    unsafe { SockAddr::new(storage, len) }
}
