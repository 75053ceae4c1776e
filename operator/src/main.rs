//! The `flmon-operator` binary.

fn main() {}
