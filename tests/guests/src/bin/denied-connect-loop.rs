//! Tries a connect that is not granted, again and again, for the number of
//! seconds given (its first argument), then says how many times it tried.
//! The host's log must not grow with it.

use std::net::TcpStream;
use std::time::{Duration, Instant};

fn main() {
    let seconds: u64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(2);
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut tries = 0u64;
    while Instant::now() < until {
        let refused = TcpStream::connect("127.0.0.1:9").is_err();
        assert!(refused, "a connect that is not granted went through");
        tries += 1;
    }
    println!("tried {tries} denied connects");
}
