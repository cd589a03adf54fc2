//! Prints a line, then panics: a Rust panic in WebAssembly ends in an
//! `unreachable` trap, which the host must report with the wasm backtrace.

fn main() {
    println!("about to fail on purpose");
    fail_on_purpose(std::env::args().count());
}

#[inline(never)]
fn fail_on_purpose(n: usize) {
    if n < 1000 {
        panic!("this guest fails on purpose");
    }
}
