//! Asks the host for random bytes without end, as many at a time as it
//! allows (1 MiB): all the time is spent in host calls, none in the
//! guest's own code. With `too-many`, asks for more than that once.

fn main() {
    if std::env::args().nth(1).as_deref() == Some("too-many") {
        let _ = wasi::random::random::get_random_bytes((1 << 20) + 1);
        println!("got more than 1 MiB");
        return;
    }
    println!("asking");
    let mut total = 0u64;
    loop {
        let bytes = wasi::random::random::get_random_bytes(1 << 20);
        total = total.wrapping_add(u64::from(bytes[0]));
        std::hint::black_box(total);
    }
}
