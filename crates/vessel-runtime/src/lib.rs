//! vessel-runtime (being built).
#![warn(missing_docs)]
