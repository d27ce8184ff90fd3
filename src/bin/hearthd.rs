//! hearthd: the hearth daemon (being wired up).
fn main() {}
