//! Prints "spinning", then computes forever without calling the host: only
//! epoch interruption lets the host stop it.
//!
//! With the argument `after-a-client`, it first listens on LISTEN_ADDR and
//! waits for one client, so that the host has been idle (its epoch ticker
//! asleep) before the spinning starts.

fn main() {
    if std::env::args().any(|arg| arg == "after-a-client") {
        let addr = std::env::var("LISTEN_ADDR").expect("LISTEN_ADDR");
        let listener = std::net::TcpListener::bind(&addr).expect("bind");
        let _client = listener.accept().expect("accept");
    }
    println!("spinning");
    let mut x: u64 = 1;
    loop {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
}
