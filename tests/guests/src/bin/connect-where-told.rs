//! Connects to the test's control address (the first argument), reads an
//! address from it (a line), tries to connect there, and says how it went:
//! for an address the test learns only once the host runs (a port the
//! system picked).

use std::io::{BufRead, BufReader};
use std::net::TcpStream;

fn main() {
    let control = std::env::args().nth(1).expect("the control address");
    let mut control = BufReader::new(TcpStream::connect(control).expect("the control connection"));
    let mut target = String::new();
    control.read_line(&mut target).unwrap();
    let target = target.trim();
    match TcpStream::connect(target) {
        Ok(_) => println!("connect {target}: connected"),
        Err(e) => println!("connect {target}: refused ({e})"),
    }
}
