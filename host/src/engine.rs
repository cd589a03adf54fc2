//! The one wasmtime configuration, shared by the host and by `build.rs`.
//!
//! The build script precompiles the embedded guest with this configuration;
//! wasmtime only loads precompiled code made by an identical one, so both
//! sides must call this same function.

use wasmtime::{Config, WasmBacktraceDetails};

pub fn config() -> Config {
    let mut config = Config::new();
    // Compiled code checks an "epoch" counter, so a guest that spins in a
    // loop still yields to the host, which can then stop it (Ctrl-C).
    config.epoch_interruption(true);
    // Trap messages name the guest's functions (from the wasm name
    // section); DWARF line details would need the guest's debug info and
    // would make the result depend on WASMTIME_BACKTRACE_DETAILS.
    config.wasm_backtrace_details(WasmBacktraceDetails::Disable);
    config
}
