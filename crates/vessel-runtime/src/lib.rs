//! Vessel's container lifecycle on the host: bundle loading and validation, the state store
//! under `--root`, one module per runc operation, and the monitor process that owns a
//! container's sandbox (the microVM) for the container's whole life.
//!
//! The behaviour follows runc's command-line contract (see `docs/runc-compat.md`); each
//! operation checks the live status first and persists state atomically under a lock.
#![warn(missing_docs)]

pub mod bundle;
pub mod cgroup;
pub mod console;
pub mod control;
pub mod create;
pub mod delete;
pub mod exec;
pub mod features;
pub mod guest;
pub mod hooks;
pub mod id;
pub mod kill;
pub mod list;
pub mod monitor;
pub mod output;
pub mod pause;
pub mod procfs;
pub mod proctitle;
pub mod run;
pub mod sandbox;
pub mod share;
pub mod signal;
pub mod sizing;
pub mod spec;
pub mod start;
pub mod state;
pub mod time;
pub mod update;
pub mod validate;

pub use state::{StateStore, Status};
