//! vessel-devices (being built).
#![warn(missing_docs)]
