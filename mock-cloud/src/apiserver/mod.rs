//! The Kubernetes API server: [`core`] holds the semantics, [`http`] the wire protocol.

pub mod convert;
pub mod core;
pub mod error;
pub mod http;
mod kinds;
mod logs;
mod negotiate;
mod objmeta;
pub mod protobuf;
pub mod rbac;
mod route;
pub(crate) mod shared_encodings;
pub mod subresources;
mod watches;

pub use self::core::{ApiCore, CoreConfig, DeleteOptions, ListOptions, Propagation, WriteOptions};
pub use self::error::ApiError;
