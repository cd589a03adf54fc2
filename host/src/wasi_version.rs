//! The WASI 0.2 version whose interfaces the host registers functions of
//! its own for (its TCP, `poll`, `write`, and the calls it refuses or
//! counts). It must be the version wasmtime-wasi implements: a guest built
//! against a newer 0.2 release resolves each import to the newest version
//! the linker has, so if wasmtime-wasi moved ahead, its TCP would be the
//! one the guest reaches, past every grant. A test checks the two agree.
//!
//! The one other spelling is the `bindgen!` call in `sockets/mod.rs`
//! (a macro takes no constant); a test checks that one too.

pub const WASI_VERSION: &str = "0.2.12";

/// The wasmtime the host is built on (Cargo.toml pins the 48 LTS line).
pub const WASMTIME_VERSION: &str = "48";

/// An interface's name with the version: `wasi:sockets/tcp@0.2.12`.
pub fn versioned(interface: &str) -> String {
    format!("{interface}@{WASI_VERSION}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::component::Linker;
    use wasmtime::Engine;
    use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

    struct State(WasiCtx, wasmtime::component::ResourceTable);

    impl WasiView for State {
        fn ctx(&mut self) -> WasiCtxView<'_> {
            WasiCtxView { ctx: &mut self.0, table: &mut self.1 }
        }
    }

    /// Defining, without shadowing, a function wasmtime-wasi already
    /// defined fails ("defined twice"); under another version it would not.
    #[test]
    fn wasmtime_wasi_implements_the_version_the_host_registers() {
        let engine = Engine::default();
        let mut linker = Linker::<State>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).unwrap();
        for (interface, function) in [
            ("wasi:sockets/tcp", "[method]tcp-socket.start-bind"),
            ("wasi:io/streams", "[method]output-stream.write"),
            ("wasi:io/poll", "poll"),
            ("wasi:cli/environment", "get-environment"),
        ] {
            let mut instance = linker.instance(&versioned(interface)).unwrap();
            let again = instance.func_wrap(function, |_, (): ()| Ok(()));
            let error = again.expect_err(&format!(
                "wasmtime-wasi does not define {interface}@{WASI_VERSION}: \
                 update WASI_VERSION to the version it implements"
            ));
            assert!(format!("{error:#}").contains("defined twice"), "{error:#}");
        }
    }
}
