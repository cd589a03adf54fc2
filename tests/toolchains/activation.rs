//! Socket activation by systemd's own tool: it listens, and starts the
//! host (with the socket) when the first client connects.

use crate::support::{connect, prepare, Host, HOST_BIN};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;

pub fn systemd_socket_activate_starts_the_host_on_the_first_client(activate: &Path) {
    let addr = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut cmd = Command::new(activate);
    prepare(&mut cmd).args(["--listen", &addr.to_string(), HOST_BIN]);
    let host = Host::start_command(&mut cmd);
    host.wait_for(&format!("Listening on {addr}"));
    let mut client = connect(addr);
    client.write_all(b"activated").unwrap();
    let mut back = [0u8; 9];
    client.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"activated", "{}", host.report());
    host.wait_for(&format!("granted: listen on {addr};"));
}
