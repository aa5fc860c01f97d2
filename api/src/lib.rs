//! berth's contract with its users: the custom resources ([`crd`], and [`bgp`] for BGP mode) and the names berth
//! reads and writes on Kubernetes objects ([`names`]), plus pure helpers both the controller
//! and the speaker need ([`nodes`], [`duration`], [`exposition`] — the /metrics formats). No I/O.

pub mod bgp;
pub mod crd;
pub mod duration;
pub mod exposition;
pub mod names;
pub mod nodes;
pub mod rules;
