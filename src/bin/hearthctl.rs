//! hearthctl: the hearth CLI (being written).
fn main() {}
