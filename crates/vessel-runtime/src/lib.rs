//! Vessel's container lifecycle on the host: bundle loading and validation, the state store
//! under `--root`, one module per runc operation, and the monitor process that owns a
//! container's sandbox (the microVM) for the container's whole life.
//!
//! The behaviour follows runc's command-line contract (see `docs/runc-compat.md`); each
//! operation checks the live status first and persists state atomically under a lock.
#![warn(missing_docs)]

pub mod host;
pub mod monitor;
pub mod sandbox;
pub mod verbs;

pub use host::state::{StateStore, Status};
