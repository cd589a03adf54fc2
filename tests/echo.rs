//! Echo is byte-exact, whatever the shape of the traffic, for every echo
//! guest: each check below runs against the built-in guest and against
//! the lesson's one-client-at-a-time guest.

use crate::support::guests::{default_guest, EchoGuest};
use crate::support::traffic::reset;
use crate::support::{assert_echoes, connect, pattern, Host};
use std::io::{Read, Write};
use std::net::SocketAddr;

/// One test per check and per guest, each with a fresh host. A traffic
/// check needs only the address; a server check also reads the host's
/// output.
macro_rules! for_each_echo_guest {
    (traffic: [$($traffic:ident),* $(,)?], server: [$($server:ident),* $(,)?] $(,)?) => {
        mod built_in {
            use super::EchoGuest::BuiltIn as GUEST;
            use crate::support::traffic;
            $( fn $traffic() { super::run(GUEST, |_, addr| traffic::$traffic(addr)) } )*
            $( fn $server() { super::run(GUEST, super::$server) } )*
            pub fn tests() -> Vec<libtest_mimic::Trial> {
                crate::tests![$($traffic,)* $($server,)*]
            }
        }
        mod iterative {
            use super::EchoGuest::Iterative as GUEST;
            use crate::support::traffic;
            $( fn $traffic() { super::run(GUEST, |_, addr| traffic::$traffic(addr)) } )*
            $( fn $server() { super::run(GUEST, super::$server) } )*
            pub fn tests() -> Vec<libtest_mimic::Trial> {
                crate::tests![$($traffic,)* $($server,)*]
            }
        }
    };
}

for_each_echo_guest!(
    traffic: [
        one_byte,
        a_line_of_text,
        binary_with_nul_bytes,
        one_mib_sent_in_one_go_while_reading_concurrently,
        many_small_sends,
        pipelined_messages_arriving_in_arbitrary_pieces,
        half_close_returns_every_byte_then_eof,
        clients_are_served_one_after_another,
    ],
    server: [
        a_client_that_resets_mid_stream_does_not_stop_the_server,
        a_client_that_resets_right_after_connecting_does_not_stop_the_server,
    ],
);

fn run(guest: EchoGuest, check: impl FnOnce(&Host, SocketAddr)) {
    let (host, addr) = Host::serve(guest.file().as_deref());
    check(&host, addr);
}

fn a_client_that_resets_mid_stream_does_not_stop_the_server(host: &Host, addr: SocketAddr) {
    let mut client = connect(addr);
    client.write_all(&pattern(10_000, 5)).unwrap();
    // Read some of the echo, so the guest is surely inside its echo loop...
    let mut some = [0u8; 100];
    client.read_exact(&mut some).unwrap();
    // ...then reset: SO_LINGER 0 turns close() into an RST.
    reset(client);
    host.wait_for("client disconnected");
    assert_echoes(addr, b"still here");
}

fn a_client_that_resets_right_after_connecting_does_not_stop_the_server(
    _host: &Host,
    addr: SocketAddr,
) {
    for _ in 0..5 {
        reset(connect(addr));
    }
    assert_echoes(addr, b"still here");
}

fn the_built_in_guest_from_a_file_echoes_the_same() {
    let guest = default_guest();
    let (_host, addr) = Host::serve(Some(&guest));
    assert_echoes(addr, &pattern(70_000, 6));
}

pub fn tests() -> Vec<libtest_mimic::Trial> {
    let this = crate::tests![the_built_in_guest_from_a_file_echoes_the_same];
    [built_in::tests(), iterative::tests(), this].into_iter().flatten().collect()
}
