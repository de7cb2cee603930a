//! vessel-protocol (being built).
#![warn(missing_docs)]
