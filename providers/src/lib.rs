//! The provider trait and its implementations.
