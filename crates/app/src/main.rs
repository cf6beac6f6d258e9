//! The `spool` binary.

fn main() {
    println!(
        "spool {} — backends: memory, redis",
        env!("CARGO_PKG_VERSION")
    );
}
