//! The lifecycle verbs: one module per runc operation, each the one library call a `vessel`
//! subcommand makes. Each checks the container's live status first and persists state
//! atomically under the container's lock (docs/design.md "State lock"). [`guest`] holds the
//! requests other processes make of a running container's guest agent (`ps`, `events`, the
//! guest half of `update`, the address `exec` dials).

pub mod create;
pub mod delete;
pub mod exec;
pub mod features;
pub mod guest;
pub mod kill;
pub mod list;
pub mod pause;
pub mod run;
pub mod spec;
pub mod start;
pub mod update;
