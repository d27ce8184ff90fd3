//! firecracker-sim (being written).
fn main() {}
