//! hearth-agent (being written).
fn main() {}
