//! The tests that need something from outside Rust: the wasmtime CLI,
//! componentize-py and componentize-js (guests from other toolchains),
//! Prometheus and promtool (the metrics), systemd's tools,
//! kubernetes-validate, podman and the static host (the deployment files),
//! root (a network namespace for the container image), Wine, MinGW and
//! the host cross-built for Windows.
//!
//! A test whose needs are missing is shown as ignored, saying what it
//! needs, and counted in the summary (`cargo test` prints "N ignored");
//! run anyway, it fails. `.ci/run` installs everything and sets
//! REQUIRE_TOOLCHAINS=1, which makes a missing need a failure instead
//! (`support/harness.rs`).

#[path = "../support/mod.rs"]
#[allow(dead_code)]
mod support;

mod activation;
mod deploy;
mod elsewhere;
mod observe;
mod windows;

use libtest_mimic::Trial;
use std::path::PathBuf;
use support::guests::find_tool;
use support::{harness, need};

/// Something a test needs: found (its path), or what to say it lacks.
type Need = Result<PathBuf, &'static str>;

fn tool(name: &'static str, var: &str) -> Need {
    find_tool(name, var).ok_or(name)
}

fn main() {
    let python = || tool("componentize-py", "COMPONENTIZE_PY");
    // 254 or later: the units' RestartSteps= and RestartMaxDelaySec=.
    let analyze = || {
        tool("systemd-analyze", "SYSTEMD_ANALYZE")
            .ok()
            .filter(|analyze| deploy::systemd_version(analyze).is_some_and(|v| v >= 254))
            .ok_or("systemd-analyze 254 or later (.ci/run unpacks Debian's backport)")
    };
    let js = || elsewhere::componentize_js().ok_or("componentize-js (npm ci in guests/js)");
    let static_host = || {
        deploy::static_host()
            .ok_or("the static host (cargo build --target x86_64-unknown-linux-musl -p host)")
    };
    let program = |name: &'static str| need::on_path(name).ok_or(name);
    // clang that can build for WASI: Debian's clang, lld and wasi-libc.
    let wasi_clang = || match std::path::Path::new("/usr/include/wasm32-wasi/stdio.h").exists() {
        true => tool("clang", "CLANG"),
        false => Err("clang for WASI (Debian: clang lld wasi-libc libclang-rt-dev-wasm32)"),
    };
    let root = || need::root().map(|()| PathBuf::new()).map_err(|_| "root");
    let windows = || {
        [
            windows::wine64().ok_or("wine64 (Debian: wine wine64)"),
            windows::windows_host()
                .ok_or("the Windows host (cargo build -p host --target x86_64-pc-windows-gnu)"),
            tool("x86_64-w64-mingw32-gcc", "MINGW_GCC")
                .map_err(|_| "x86_64-w64-mingw32-gcc (Debian: gcc-mingw-w64-x86-64)"),
        ]
    };
    let mut trials = vec![
        trial("elsewhere::the_python_guest_echoes", [python()], |[p]| {
            elsewhere::the_python_guest_echoes(&p)
        }),
        trial("elsewhere::sigint_while_a_large_guest_compiles_stops_at_once", [python()], |[p]| {
            elsewhere::sigint_while_a_large_guest_compiles_stops_at_once(&p)
        }),
        trial(
            "elsewhere::the_javascript_guest_echoes",
            [tool("node", "NODE"), js()],
            |[node, _]| elsewhere::the_javascript_guest_echoes(&node),
        ),
        trial(
            "elsewhere::the_python_stdio_guest_serves_one_instance_per_client",
            [python()],
            |[p]| elsewhere::the_python_stdio_guest_serves_one_instance_per_client(&p),
        ),
        trial(
            "elsewhere::the_javascript_stdio_guest_serves_one_instance_per_client",
            [tool("node", "NODE"), js()],
            |[node, _]| elsewhere::the_javascript_stdio_guest_serves_one_instance_per_client(&node),
        ),
        trial(
            "elsewhere::the_per_client_guest_is_a_plain_command_on_the_wasmtime_cli",
            [tool("wasmtime", "WASMTIME")],
            |[w]| elsewhere::the_per_client_guest_is_a_plain_command_on_the_wasmtime_cli(&w),
        ),
        trial("elsewhere::a_textbook_cat_in_c_serves_unchanged", [wasi_clang()], |[clang]| {
            elsewhere::a_textbook_cat_in_c_serves_unchanged(&clang)
        }),
        trial(
            "elsewhere::our_guests_run_unchanged_on_the_wasmtime_cli",
            [tool("wasmtime", "WASMTIME")],
            |[w]| elsewhere::our_guests_run_unchanged_on_the_wasmtime_cli(&w),
        ),
        trial(
            "activation::systemd_socket_activate_starts_the_host_on_the_first_client",
            [tool("systemd-socket-activate", "SYSTEMD_SOCKET_ACTIVATE")],
            |[a]| activation::systemd_socket_activate_starts_the_host_on_the_first_client(&a),
        ),
        trial(
            "observe::prometheus_scrapes_the_host_and_promtool_accepts_its_metrics",
            [tool("prometheus", "PROMETHEUS"), tool("promtool", "PROMTOOL")],
            |[prometheus, promtool]| {
                observe::prometheus_scrapes_the_host_and_promtool_accepts_its_metrics(
                    &prometheus,
                    &promtool,
                )
            },
        ),
        trial(
            "observe::the_alert_rules_fire_on_a_real_hosts_series_when_they_should",
            [tool("promtool", "PROMTOOL")],
            |[promtool]| {
                observe::the_alert_rules_fire_on_a_real_hosts_series_when_they_should(&promtool)
            },
        ),
        trial("deploy::the_systemd_units_verify_clean", [analyze()], |[a]| {
            deploy::the_systemd_units_verify_clean(&a)
        }),
        trial(
            "deploy::the_service_is_exposed_no_more_than_the_docs_say_and_at_most_2",
            [analyze()],
            |[a]| deploy::the_service_is_exposed_no_more_than_the_docs_say_and_at_most_2(&a),
        ),
        trial(
            "deploy::the_kubernetes_objects_render_and_are_valid_for_the_named_version",
            [tool("kubernetes-validate", "KUBERNETES_VALIDATE"), tool("kubectl", "KUBECTL")],
            |[k, kubectl]| {
                deploy::the_kubernetes_objects_render_and_are_valid_for_the_named_version(
                    &k, &kubectl,
                )
            },
        ),
        trial(
            "deploy::the_container_image_holds_the_host_alone_and_serves",
            [
                tool("podman", "PODMAN"),
                static_host(),
                root(),
                program("unshare"),
                program("ip"),
                program("chroot"),
                program("python3"),
                program("strip"),
            ],
            |[podman, host, ..]| {
                deploy::the_container_image_holds_the_host_alone_and_serves(&podman, &host)
            },
        ),
    ];
    type WindowsTest = (&'static str, fn(windows::Needs<'_>));
    let on_windows: [WindowsTest; 9] = [
        (
            "windows::the_built_in_guest_echoes_and_ctrl_c_stops_it",
            windows::the_built_in_guest_echoes_and_ctrl_c_stops_it,
        ),
        (
            "windows::a_guest_file_is_cached_under_localappdata",
            windows::a_guest_file_is_cached_under_localappdata,
        ),
        (
            "windows::denied_bind_and_connect_and_the_lessons_step_1_and_3",
            windows::denied_bind_and_connect_and_the_lessons_step_1_and_3,
        ),
        (
            "windows::restart_on_failure_brings_a_crashing_guest_back",
            windows::restart_on_failure_brings_a_crashing_guest_back,
        ),
        (
            "windows::clients_outside_allow_client_are_reset",
            windows::clients_outside_allow_client_are_reset,
        ),
        (
            "windows::watch_swaps_the_guest_and_waits_for_a_whole_file",
            windows::watch_swaps_the_guest_and_waits_for_a_whole_file,
        ),
        ("windows::listen_fds_is_refused_in_one_line", windows::listen_fds_is_refused_in_one_line),
        ("windows::reload_points_to_watch", windows::reload_points_to_watch),
        (
            "windows::a_second_host_on_the_same_port_is_refused",
            windows::a_second_host_on_the_same_port_is_refused,
        ),
    ];
    for (name, test) in on_windows {
        trials.push(trial(name, windows(), move |[w, h, g]| test((&w, &h, &g))));
    }
    let [wine, host, gcc] = windows();
    let port_9000 = need::port_free(9000).map(|()| PathBuf::new()).map_err(|_| "port 9000 free");
    trials.push(trial(
        "windows::the_study_notes_server_in_c_compiles_and_echoes",
        [wine, host, gcc, port_9000],
        |[w, h, g, _]| windows::the_study_notes_server_in_c_compiles_and_echoes((&w, &h, &g)),
    ));
    libtest_mimic::run(&harness::arguments(), trials).exit();
}

/// A test that runs with what it needs (each found at a path), under the
/// time limit; or is skipped, saying what is missing (`harness::trial`).
fn trial<const N: usize>(
    name: &str,
    needs: [Need; N],
    test: impl FnOnce([PathBuf; N]) + Send + 'static,
) -> Trial {
    let checked = needs.iter().map(|need| need.as_ref().map(drop).map_err(|m| m.to_string()));
    let checked = checked.collect();
    let found = needs.map(|need| need.unwrap_or_default());
    harness::trial(name, checked, move || test(found))
}
