//! What the exercises' solutions share.

use wasi::io::poll::Pollable;
use wasi::sockets::network::ErrorCode;

/// A `finish-X` call (bind, listen, connect) until it stops answering
/// `would-block` ("not yet"), sleeping on the socket's pollable meanwhile:
/// the one step a blocking WinSock call does by itself.
pub fn finish<T>(
    ready: &Pollable,
    mut finish: impl FnMut() -> Result<T, ErrorCode>,
) -> Result<T, ErrorCode> {
    loop {
        match finish() {
            Err(ErrorCode::WouldBlock) => ready.block(),
            done => return done,
        }
    }
}
