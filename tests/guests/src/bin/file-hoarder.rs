//! Opens files under its one granted directory without end, keeping each
//! open through a stream after dropping its descriptor (so that a count
//! of descriptors alone would miss them), and says when and how it was
//! refused; then tries 99 times more.

use wasi::filesystem::preopens::get_directories;
use wasi::filesystem::types::{DescriptorFlags, OpenFlags, PathFlags};

fn main() {
    let (dir, _) = get_directories().into_iter().next().expect("a granted directory");
    let mut held = Vec::new();
    loop {
        let name = format!("f{}", held.len());
        let opened =
            dir.open_at(PathFlags::empty(), &name, OpenFlags::CREATE, DescriptorFlags::WRITE);
        match opened {
            Ok(file) => {
                held.push(file.write_via_stream(0).expect("a stream"));
                drop(file);
            }
            Err(e) => {
                println!("refused after {} files: {}", held.len(), e.name());
                let again = (0..99).filter(|i| {
                    let name = format!("g{i}");
                    dir.open_at(
                        PathFlags::empty(),
                        &name,
                        OpenFlags::CREATE,
                        DescriptorFlags::WRITE,
                    )
                    .is_err()
                });
                println!("refused {} times more", again.count());
                return;
            }
        }
    }
}
