//! The membership wire format: authenticated, replay-safe datagrams.
//!
//! A datagram is `k (1 byte) ‖ k MACs (32 bytes each) ‖ payload`, the payload a JSON
//! [`Envelope`], each MAC an HMAC-SHA256 of the payload. The first key of the [`Keyring`]
//! signs; a receiver accepts a datagram when any MAC verifies under any of its keys. While
//! the file lists more than one key (a rotation in progress) the second key signs too, so a
//! peer that has not re-read its file yet still verifies: add the new key as the first line
//! everywhere, then remove the old one, and no two speakers ever stop understanding each
//! other. Nothing of the payload is parsed before a MAC verifies. With
//! `--membership-insecure` there is no MAC (k = 0) and nothing is checked.
//!
//! Replays: every envelope carries the sender's *epoch* (its start time in ms, fresh at every
//! start), a sequence number that only grows within an epoch, and the sender's wall-clock
//! time. A [`ReplayGuard`] keeps, per sender, the newest epoch and a 64-wide window of
//! sequence numbers seen; it drops a datagram seen before, one from an older epoch, and one
//! whose timestamp is more than [`MAX_SKEW`] away from our clock (so a datagram captured
//! minutes ago is dead even for a receiver that restarted since). A restarted sender has a
//! newer epoch and is accepted at once; a sender whose clock went backwards across a restart
//! is accepted once its old epoch has been silent for [`MAX_SKEW`].

use ring::hmac;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Largest datagram sent (fits an Ethernet MTU with IPv6 and UDP headers).
pub const MAX_DATAGRAM: usize = 1400;
/// Larger datagrams are dropped unread.
pub const MAX_RECEIVED: usize = 2048;
/// How far a sender's clock may be from ours (and how old a datagram may be).
pub const MAX_SKEW: Duration = Duration::from_secs(30);
/// The highest incarnation accepted: refutations and readiness changes bump it by one, so a
/// real speaker never gets near; a bigger number is a forgery or a bug.
pub const MAX_INC: u64 = 1 << 32;
/// Shortest key accepted.
pub const MIN_KEY_LEN: usize = 32;
const MAC_LEN: usize = 32;

/// Milliseconds since the Unix epoch by the wall clock.
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("Cannot read the membership key file {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("The membership key file {path} holds no key")]
    Empty { path: String },
    #[error("Membership key on line {line} of {path} is shorter than {MIN_KEY_LEN} characters")]
    Short { path: String, line: usize },
}

/// The shared keys: the first signs, every one verifies.
#[derive(Clone)]
pub struct Keyring {
    keys: Vec<hmac::Key>,
    /// A short fingerprint per key, for logs (never the key).
    pub fingerprints: Vec<String>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("fingerprints", &self.fingerprints)
            .finish()
    }
}

impl Keyring {
    /// Keys one per line, used as written; blank lines ignored.
    pub fn parse(text: &str, path: &str) -> Result<Keyring, KeyError> {
        let mut keys = Vec::new();
        let mut fingerprints = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            if line.len() < MIN_KEY_LEN {
                return Err(KeyError::Short {
                    path: path.into(),
                    line: i + 1,
                });
            }
            keys.push(hmac::Key::new(hmac::HMAC_SHA256, line.as_bytes()));
            let d = ring::digest::digest(&ring::digest::SHA256, line.as_bytes());
            fingerprints.push(d.as_ref()[..4].iter().map(|b| format!("{b:02x}")).collect());
        }
        if keys.is_empty() {
            return Err(KeyError::Empty { path: path.into() });
        }
        Ok(Keyring { keys, fingerprints })
    }

    pub fn load(path: &Path) -> Result<Keyring, KeyError> {
        let p = path.display().to_string();
        let meta = std::fs::metadata(path).map_err(|e| KeyError::Read {
            path: p.clone(),
            reason: e.to_string(),
        })?;
        if meta.len() > 64 * 1024 {
            return Err(KeyError::Read {
                path: p,
                reason: "larger than 64 KiB".into(),
            });
        }
        let text = std::fs::read_to_string(path).map_err(|e| KeyError::Read {
            path: p.clone(),
            reason: e.to_string(),
        })?;
        Keyring::parse(&text, &p)
    }
}

/// How datagrams are signed and checked.
#[derive(Clone, Debug)]
pub enum Auth {
    Keys(Keyring),
    /// `--membership-insecure`: nothing signed, nothing checked.
    Insecure,
}

/// One protocol message with what every datagram says about its sender.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Sender's node name.
    pub from: String,
    /// Sender's start time (ms since the Unix epoch): a new process, a new epoch.
    pub epoch: u64,
    /// Sender's incarnation within the epoch (bumped to refute a suspicion).
    pub inc: u64,
    /// Whether the sender takes part in elections.
    pub ready: bool,
    /// Only grows within an epoch.
    pub seq: u64,
    /// Sender's wall clock, ms since the Unix epoch.
    pub ts: u64,
    pub msg: super::membership::Msg,
    /// Piggybacked membership news.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub updates: Vec<super::membership::Update>,
}

/// Why a datagram was dropped (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reject {
    Size,
    Mac,
    Malformed,
    UnknownSender,
    Stale,
    Replay,
    Bounds,
}

impl Reject {
    pub fn as_str(self) -> &'static str {
        match self {
            Reject::Size => "size",
            Reject::Mac => "mac",
            Reject::Malformed => "malformed",
            Reject::UnknownSender => "unknown_sender",
            Reject::Stale => "stale",
            Reject::Replay => "replay",
            Reject::Bounds => "bounds",
        }
    }
}

/// Most MACs a datagram may carry.
const MAX_MACS: usize = 2;

/// Serialises and signs `env`; None if it does not fit [`MAX_DATAGRAM`].
pub fn seal(auth: &Auth, env: &Envelope) -> Option<Vec<u8>> {
    let payload = serde_json::to_vec(env).ok()?;
    let keys: &[hmac::Key] = match auth {
        Auth::Keys(k) => &k.keys[..k.keys.len().min(MAX_MACS)],
        Auth::Insecure => &[],
    };
    let len = 1 + keys.len() * MAC_LEN + payload.len();
    if len > MAX_DATAGRAM {
        return None;
    }
    let mut out = Vec::with_capacity(len);
    out.push(keys.len() as u8);
    for k in keys {
        out.extend_from_slice(hmac::sign(k, &payload).as_ref());
    }
    out.extend_from_slice(&payload);
    Some(out)
}

/// Checks the MACs and parses; the replay and sender checks are the [`ReplayGuard`]'s.
pub fn open(auth: &Auth, datagram: &[u8]) -> Result<Envelope, Reject> {
    if datagram.len() > MAX_RECEIVED || datagram.is_empty() {
        return Err(Reject::Size);
    }
    let k = datagram[0] as usize;
    if k > MAX_MACS || datagram.len() <= 1 + k * MAC_LEN {
        return Err(Reject::Malformed);
    }
    let (macs, payload) = datagram[1..].split_at(k * MAC_LEN);
    if let Auth::Keys(keys) = auth {
        let ok = macs.chunks(MAC_LEN).any(|mac| {
            keys.keys
                .iter()
                .any(|key| hmac::verify(key, payload, mac).is_ok())
        });
        if !ok {
            return Err(Reject::Mac);
        }
    }
    serde_json::from_slice(payload).map_err(|_| Reject::Malformed)
}

/// Width of the window of sequence numbers remembered below the highest.
const WINDOW: u64 = 64;

#[derive(Debug, Clone)]
struct Seen {
    epoch: u64,
    top: u64,
    /// Bit i: `top - i` was seen.
    bits: u64,
    last: Instant,
}

/// Per-sender replay state (only for names that are Nodes: bounded by the cluster).
#[derive(Debug, Default)]
pub struct ReplayGuard {
    seen: HashMap<String, Seen>,
}

impl ReplayGuard {
    /// Accepts `env` (and records it) or says why not. `now_ms` is our wall clock.
    pub fn check(&mut self, env: &Envelope, now: Instant, now_ms: u64) -> Result<(), Reject> {
        let skew = MAX_SKEW.as_millis() as u64;
        if env.ts.abs_diff(now_ms) > skew {
            return Err(Reject::Stale);
        }
        if env.epoch > now_ms + skew || env.epoch == 0 || env.inc > MAX_INC {
            return Err(Reject::Bounds);
        }
        match self.seen.get_mut(&env.from) {
            Some(s) if env.epoch == s.epoch => {
                if env.seq > s.top {
                    let shift = env.seq - s.top;
                    s.bits = if shift >= WINDOW { 0 } else { s.bits << shift };
                    s.bits |= 1;
                    s.top = env.seq;
                } else {
                    let back = s.top - env.seq;
                    if back >= WINDOW || s.bits & (1 << back) != 0 {
                        return Err(Reject::Replay);
                    }
                    s.bits |= 1 << back;
                }
                s.last = now;
                Ok(())
            }
            Some(s) if env.epoch < s.epoch && now.duration_since(s.last) < MAX_SKEW => {
                Err(Reject::Replay)
            }
            _ => {
                self.seen.insert(
                    env.from.clone(),
                    Seen {
                        epoch: env.epoch,
                        top: env.seq,
                        bits: 1,
                        last: now,
                    },
                );
                Ok(())
            }
        }
    }

    /// Forgets senders that are no longer Nodes.
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.seen.retain(|k, _| keep(k));
    }
}

#[cfg(test)]
mod tests {
    use super::super::membership::Msg;
    use super::*;

    const K1: &str = "0123456789abcdef0123456789abcdef-one";
    const K2: &str = "0123456789abcdef0123456789abcdef-two";

    fn env(from: &str, epoch: u64, seq: u64, ts: u64) -> Envelope {
        Envelope {
            from: from.into(),
            epoch,
            inc: 0,
            ready: true,
            seq,
            ts,
            msg: Msg::Ping { probe: 1 },
            updates: vec![],
        }
    }

    fn keys(text: &str) -> Auth {
        Auth::Keys(Keyring::parse(text, "test").unwrap())
    }

    #[test]
    fn keys_parse_as_written() {
        assert_eq!(
            Keyring::parse("\n\n", "f").unwrap_err(),
            KeyError::Empty { path: "f".into() }
        );
        assert_eq!(
            Keyring::parse(&format!("{K1}\nshort\n"), "f").unwrap_err(),
            KeyError::Short {
                path: "f".into(),
                line: 2
            }
        );
        let k = Keyring::parse(&format!("\n{K1}\n\n{K2}\n"), "f").unwrap();
        assert_eq!(k.fingerprints.len(), 2);
        // Whitespace is part of a key: " K1" is another key.
        let spaced = keys(&format!(" {K1}"));
        let d = seal(&keys(K1), &env("a", 1, 1, 1)).unwrap();
        assert_eq!(open(&spaced, &d), Err(Reject::Mac));
    }

    #[test]
    fn the_first_key_signs_and_every_key_verifies() {
        let e = env("a", 5, 1, 9);
        let old = keys(K1);
        let both = keys(&format!("{K2}\n{K1}"));
        let new = keys(K2);
        let from_old = seal(&old, &e).unwrap();
        let from_both = seal(&both, &e).unwrap();
        // Every step of a rotation understands the step before and after it.
        assert_eq!(open(&both, &from_old).unwrap(), e);
        assert_eq!(open(&old, &from_both).unwrap(), e);
        assert_eq!(open(&new, &from_both).unwrap(), e);
        assert_eq!(open(&both, &seal(&new, &e).unwrap()).unwrap(), e);
        // Only the old and the new key never meet.
        assert_eq!(open(&new, &from_old), Err(Reject::Mac));
        assert_eq!(open(&old, &seal(&new, &e).unwrap()), Err(Reject::Mac));
        // A third key only verifies.
        let three = keys(&format!("{K2}\n{K1}\n{}", "z".repeat(40)));
        assert_eq!(seal(&three, &e).unwrap()[0], 2);
        // Unsigned (insecure) datagrams do not verify under a key; a flipped bit does not.
        let unsigned = seal(&Auth::Insecure, &e).unwrap();
        assert_eq!(open(&old, &unsigned), Err(Reject::Mac));
        assert_eq!(open(&Auth::Insecure, &unsigned).unwrap(), e);
        let mut bad = from_old.clone();
        let last = bad.len() - 2;
        bad[last] ^= 1;
        assert_eq!(open(&old, &bad), Err(Reject::Mac));
        assert_eq!(open(&old, &[0u8; 3000]), Err(Reject::Size));
        // Plain JSON (no MAC count byte) is not a datagram.
        let json = br#"{"t":"leave","from":"n1","inc":18446744073709551615}"#;
        assert!(open(&old, json).is_err());
    }

    #[test]
    fn replays_are_rejected_and_restarts_accepted() {
        let mut g = ReplayGuard::default();
        let t = Instant::now();
        let now = 1_000_000_000;
        assert_eq!(g.check(&env("a", 100, 1, now), t, now), Ok(()));
        assert_eq!(g.check(&env("a", 100, 1, now), t, now), Err(Reject::Replay));
        assert_eq!(g.check(&env("a", 100, 3, now), t, now), Ok(()));
        // Out of order within the window is fine, once.
        assert_eq!(g.check(&env("a", 100, 2, now), t, now), Ok(()));
        assert_eq!(g.check(&env("a", 100, 2, now), t, now), Err(Reject::Replay));
        assert_eq!(g.check(&env("a", 100, 200, now), t, now), Ok(()));
        // Below the window: too old to tell, so dropped.
        assert_eq!(g.check(&env("a", 100, 4, now), t, now), Err(Reject::Replay));
        // A restart (newer epoch) starts over; the old epoch is dead.
        assert_eq!(g.check(&env("a", 200, 1, now), t, now), Ok(()));
        assert_eq!(
            g.check(&env("a", 100, 201, now), t, now),
            Err(Reject::Replay)
        );
        // Captured long ago: stale whatever the guard remembers.
        let old = now - 31_000;
        assert_eq!(g.check(&env("b", 100, 1, old), t, now), Err(Reject::Stale));
        // Bounded epochs and incarnations.
        assert_eq!(
            g.check(&env("c", now + 3_600_000, 1, now), t, now),
            Err(Reject::Bounds)
        );
        let mut e = env("c", 100, 1, now);
        e.inc = u64::MAX;
        assert_eq!(g.check(&e, t, now), Err(Reject::Bounds));
        // A clock that went backwards across a restart: accepted once the old epoch is
        // silent for MAX_SKEW.
        let later = t + MAX_SKEW + Duration::from_secs(1);
        assert_eq!(g.check(&env("a", 150, 1, now), later, now), Ok(()));
    }
}
