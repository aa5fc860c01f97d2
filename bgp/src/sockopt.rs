//! The two socket options no safe wrapper offers: `TCP_MD5SIG` (RFC 2385) and the minimum
//! TTL / hop count options used for the BFD GTSM check. One `unsafe` call, checked here.

use std::net::IpAddr;
use std::os::fd::{AsRawFd, RawFd};

/// Largest TCP MD5 key Linux accepts (`TCP_MD5SIG_MAXKEYLEN`).
pub const MD5_MAX_KEY_LEN: usize = 80;

/// `struct tcp_md5sig` from `<linux/tcp.h>`.
#[repr(C)]
struct TcpMd5Sig {
    /// A `sockaddr_storage` (128 bytes) holding the peer's `sockaddr_in`/`sockaddr_in6`.
    addr: [u8; 128],
    flags: u8,
    prefixlen: u8,
    keylen: u16,
    ifindex: i32,
    key: [u8; MD5_MAX_KEY_LEN],
}

const _: () = assert!(std::mem::size_of::<TcpMd5Sig>() == 216);

#[allow(unsafe_code)]
fn setsockopt_raw<T>(fd: RawFd, level: i32, name: i32, value: &T) -> std::io::Result<()> {
    // SAFETY: `value` is a live, properly aligned `T` for the whole call and the length passed
    // is exactly `size_of::<T>()`, so the kernel reads only memory we own; `fd` is a socket
    // borrowed from a caller that keeps it open for the duration of the call.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (value as *const T).cast::<libc::c_void>(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Sets an integer socket option.
pub fn set_int(sock: &impl AsRawFd, level: i32, name: i32, value: i32) -> std::io::Result<()> {
    setsockopt_raw(sock.as_raw_fd(), level, name, &value)
}

/// Installs (or with an empty key, removes) the TCP MD5 key for segments to/from `peer`.
pub fn set_md5(sock: &impl AsRawFd, peer: IpAddr, key: &[u8]) -> std::io::Result<()> {
    if key.len() > MD5_MAX_KEY_LEN {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("TCP MD5 password longer than {MD5_MAX_KEY_LEN} bytes"),
        ));
    }
    let mut addr = [0u8; 128];
    match peer {
        IpAddr::V4(a) => {
            addr[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
            addr[4..8].copy_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            addr[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
            addr[8..24].copy_from_slice(&a.octets());
        }
    }
    let mut sig = TcpMd5Sig {
        addr,
        flags: 0,
        prefixlen: 0,
        keylen: key.len() as u16,
        ifindex: 0,
        key: [0; MD5_MAX_KEY_LEN],
    };
    sig.key[..key.len()].copy_from_slice(key);
    setsockopt_raw(sock.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_MD5SIG, &sig)
}
