//! A guest that tries to get around the host's bounds on its output, by
//! the argument it is given:
//!
//! - `dels N`: N lines of 4 096 DEL characters on stdout (each grows six
//!   times when escaped), then says so on stderr and waits for ever; for a
//!   stdout nobody reads;
//! - `stderr-dels`: one line of 4 096 DEL characters on stderr;
//! - `huge-stderr`: 100 MiB on stderr in one `write_all`, no newline (std
//!   splits it as check-write allows), then `still here`;
//! - `huge-raw-write`: 100 MiB in one `write` call, check-write ignored (the
//!   spec says that is a trap);
//! - `forge`: lines with CR, ESC and newlines that pass for log lines,
//!   on stderr and stdout, one of them starting with a journal priority
//!   (`<0>`, emergency).

use std::io::Write;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("dels") => {
            let n: usize = args[2].parse().unwrap();
            let mut line = vec![0x7f; 4096];
            line.push(b'\n');
            let mut stdout = std::io::stdout().lock();
            for _ in 0..n {
                stdout.write_all(&line).unwrap();
            }
            eprintln!("output-tricks: wrote {n} lines");
            loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            }
        }
        Some("stderr-dels") => {
            let mut line = vec![0x7f; 4096];
            line.push(b'\n');
            std::io::stderr().write_all(&line).unwrap();
            println!("done");
        }
        Some("huge-stderr") => {
            let huge = vec![b'h'; 100 << 20];
            std::io::stderr().write_all(&huge).unwrap();
            println!("still here");
        }
        Some("huge-raw-write") => {
            let stderr = wasi::cli::stderr::get_stderr();
            let huge = vec![b'h'; 100 << 20];
            let _ = stderr.write(&huge);
            println!("still here");
        }
        Some("forge") => {
            eprintln!(
                "innocent\rWARN forged over it\n2026-12-06T00:00:00.000000Z ERROR forged line"
            );
            eprintln!("escape \x1b[2J\x1b[31mred\x1b[0m");
            println!("<0>emergency from the guest");
            println!("done");
        }
        other => panic!("unknown mode {other:?}"),
    }
}
