//! Host infrastructure the verbs and the monitor stand on: the bundle and its validation, the
//! state store under `--root`, container IDs, the host cgroup, OCI hooks, signals, terminals and
//! output relays on the host side, the monitor's capabilities, `/proc` parsing and timestamps.

pub mod bundle;
pub mod capabilities;
pub mod cgroup;
pub mod console;
pub mod hooks;
pub mod id;
pub mod net;
pub mod output;
pub mod procfs;
pub mod signal;
pub mod state;
pub mod time;
pub mod validate;
