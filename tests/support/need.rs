//! What some tests need of the machine, checked before they run: a test
//! whose need is missing is skipped, saying which (`harness.rs`). Both test
//! targets use this module, each some of it.
#![allow(dead_code)]

use super::harness::Need;
use std::path::PathBuf;

/// IPv6 on loopback: `::1` can be bound.
pub fn ipv6() -> Need {
    std::net::TcpListener::bind("[::1]:0")
        .map(drop)
        .map_err(|e| format!("IPv6 on loopback (binding [::1]: {e})"))
}

/// Port `port` free on every address (for the host's default, 0.0.0.0:9000).
pub fn port_free(port: u16) -> Need {
    std::net::TcpListener::bind(("0.0.0.0", port))
        .map(drop)
        .map_err(|e| format!("port {port} free (it is taken: {e})"))
}

/// Root (a network namespace, chroot).
pub fn root() -> Need {
    // SAFETY: geteuid only reads the process's credentials.
    match unsafe { libc::geteuid() } {
        0 => Ok(()),
        _ => Err("root".to_string()),
    }
}

/// A program on PATH.
pub fn program(name: &str) -> Need {
    on_path(name).map(drop).ok_or_else(|| name.to_string())
}

pub fn on_path(name: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths).map(|dir| dir.join(name)).find(|p| p.is_file())
}

/// The right to copy a descriptor out of a child process (`pidfd_getfd`),
/// which a ptrace policy (Yama's ptrace_scope, a container's seccomp) may
/// refuse: tried on a child of this process.
#[cfg(target_os = "linux")]
pub fn pidfd_getfd() -> Need {
    let missing = |why: String| format!("permission for pidfd_getfd on a child ({why})");
    let mut child = std::process::Command::new("sleep")
        .arg("60")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| missing(format!("starting sleep: {e}")))?;
    // SAFETY: pidfd_open and pidfd_getfd take integers and return a new
    // descriptor (closed here) or -1.
    let copied = unsafe {
        let pidfd = libc::syscall(libc::SYS_pidfd_open, child.id() as libc::c_int, 0);
        let copy = match pidfd {
            -1 => -1,
            _ => libc::syscall(libc::SYS_pidfd_getfd, pidfd as libc::c_int, 0, 0),
        };
        let error = std::io::Error::last_os_error();
        for fd in [copy, pidfd].into_iter().filter(|fd| *fd >= 0) {
            libc::close(fd as libc::c_int);
        }
        (copy >= 0).then_some(()).ok_or(error)
    };
    let _ = child.kill();
    let _ = child.wait();
    copied.map_err(|e| missing(e.to_string()))
}

/// A kernel that names where a thread sleeps (`/proc/.../wchan`), so that a
/// test can tell a parked thread (a futex) from a sleeping one: looked at
/// on a thread parked here.
#[cfg(target_os = "linux")]
pub fn wchan() -> Need {
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let parked = std::thread::spawn(move || {
        // SAFETY: gettid only returns the calling thread's id.
        let _ = tid_tx.send(unsafe { libc::gettid() });
        std::thread::park();
    });
    let tid = tid_rx.recv().map_err(|e| e.to_string())?;
    let path = format!("/proc/self/task/{tid}/wchan");
    let mut seen = String::new();
    for _ in 0..200 {
        seen = std::fs::read_to_string(&path).unwrap_or_default();
        if seen.contains("futex") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    parked.thread().unpark();
    let _ = parked.join();
    match seen.contains("futex") {
        true => Ok(()),
        false => Err(format!("a kernel that shows where threads wait ({path} said {seen:?})")),
    }
}
