//! The Kubernetes API server: [`core`] holds the semantics, [`http`] the wire protocol.

pub mod convert;
pub mod core;
pub mod error;
pub mod http;
pub mod protobuf;
pub mod rbac;

pub use self::core::{ApiCore, CoreConfig, DeleteOptions, ListOptions, WriteOptions};
pub use self::error::ApiError;
