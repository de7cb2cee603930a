//! The monitor process: forked by `create`, it owns the container's sandbox (the microVM) for
//! the container's whole life ([`process`]), serves the control socket the other verbs speak
//! ([`control`]), and names itself after the container in `ps` ([`proctitle`]).

pub mod control;
pub mod process;
pub mod proctitle;

pub use process::{run, MonitorConfig, MonitorError, REPORT_CREATED};
