//! Gateway benchmark (being written).
fn main() {}
