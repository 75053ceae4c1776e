//! The `flmon-agent` binary.

fn main() {}
