//! Allocates memory without end, 1 MiB at a time, touching every page.
//!
//! `alloc-forever`: a plain Vec push, so the first refused growth aborts the
//! guest (a trap). `alloc-forever --gently`: stops at the first refusal,
//! says how far it got, then waits (so that the host's memory can be
//! looked at), still holding everything.

const MIB: usize = 1 << 20;

fn main() {
    let gently = std::env::args().any(|a| a == "--gently");
    let mut held: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut chunk = Vec::new();
        if gently && chunk.try_reserve_exact(MIB).is_err() {
            println!("allocation refused after {} MiB", held.len());
            loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            }
        }
        chunk.resize(MIB, 1);
        held.push(chunk);
    }
}
