//! Integration tests: the real `host` binary, real guest components, real
//! TCP clients on loopback. Every host listens on a system-picked port
//! (`--listen 127.0.0.1:0`), and a test waits for readiness by connecting.

mod support;

mod concurrency;
mod echo;
mod errors;
mod floods;
mod hostile;
mod inspect;
mod lesson;
#[cfg(target_os = "linux")]
mod nodelay;
mod operate;
mod sandbox;
mod shutdown;
mod sockets;
mod swap;
mod swaps_and_drains;
mod totals;
