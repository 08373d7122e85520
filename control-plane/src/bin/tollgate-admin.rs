//! Admin CLI (placeholder until the CLI lands).
fn main() {}
