//! `vessel-agent`: PID 1 inside every Vessel microVM (being built).

fn main() {
    println!("vessel-agent {}", env!("CARGO_PKG_VERSION"));
}
