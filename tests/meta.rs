//! Tests of the tests: the table of promises (docs/tests.md) names only
//! tests that run, and the runner keeps its word (a skipped test fails
//! when run anyway; a test that overruns its time limit fails, saying
//! what it was waiting for).

use crate::support::harness;
use libtest_mimic::{Arguments, Trial};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Each test the table of promises in docs/tests.md names is one that
/// runs: a test of this target, registered with the runner (and, if
/// ignored, only for a need this machine lacks); a trial the toolchains
/// target registers; or a unit test of the host, marked `#[test]` and not
/// `#[ignore]`. A helper, an unregistered or ignored test, or a name that
/// was changed, fails it.
fn the_promise_table_names_only_tests_that_run() {
    let page = std::fs::read_to_string(root().join("docs/tests.md")).unwrap();
    let table = &page[page.find("## Which test keeps which promise").unwrap()..];
    let table = &table[..table.find("\n#").unwrap_or(table.len())];
    let named: Vec<&str> = table
        .lines()
        .filter(|line| line.starts_with("| ") && !line.starts_with("| Promise"))
        .filter_map(|line| line.rsplit(" | ").next())
        .flat_map(|tests| tests.split('`').skip(1).step_by(2))
        .filter(|name| {
            name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_:".contains(c))
        })
        .collect();
    assert!(named.len() > 80, "{named:?}");
    let runs =
        |name: &str| registered_here(name) || registered_in_toolchains(name) || unit_test(name);
    let missing: Vec<_> = named.into_iter().filter(|name| !runs(name)).collect();
    assert!(missing.is_empty(), "docs/tests.md names tests that do not run: {missing:?}");
}

/// A test of this target by its full name (`module::function`) or its
/// function's name, registered, and not ignored but for a missing need.
fn registered_here(name: &str) -> bool {
    crate::all().iter().any(|trial| {
        let full = trial.name();
        let matches = full == name || full.rsplit("::").next() == Some(name);
        matches && (!trial.has_ignored_flag() || trial.kind().starts_with("needs "))
    })
}

/// A trial `tests/toolchains/main.rs` registers (by its quoted name).
fn registered_in_toolchains(name: &str) -> bool {
    let main = std::fs::read_to_string(root().join("tests/toolchains/main.rs")).unwrap();
    main.split('"').skip(1).step_by(2).any(|quoted| {
        quoted.contains("::") && (quoted == name || quoted.rsplit("::").next() == Some(name))
    })
}

/// A unit test in the host's sources: `#[test]` on the line before its
/// `fn` (or before a `#[cfg]` that is), and no `#[ignore]`.
fn unit_test(name: &str) -> bool {
    let mut files = vec![root().join("host/src")];
    let mut sources = Vec::new();
    while let Some(path) = files.pop() {
        match std::fs::read_dir(&path) {
            Ok(entries) => files.extend(entries.map(|e| e.unwrap().path())),
            Err(_) if path.extension().is_some_and(|e| e == "rs") => {
                sources.push(std::fs::read_to_string(&path).unwrap())
            }
            Err(_) => {}
        }
    }
    let declaration = format!("fn {name}(");
    sources.iter().any(|source| {
        let lines: Vec<&str> = source.lines().map(str::trim).collect();
        lines.iter().enumerate().any(|(at, line)| {
            let attributes = lines[..at].iter().rev().take_while(|l| l.starts_with("#["));
            let attributes: Vec<&&str> = attributes.collect();
            line.starts_with(&declaration)
                && attributes.iter().any(|a| **a == "#[test]")
                && !attributes.iter().any(|a| a.starts_with("#[ignore"))
        })
    })
}

/// Runs `trials` on the runner as `cargo test -- --include-ignored` would
/// (its report written nowhere), and says how many failed.
fn failures_when_run(trials: Vec<Trial>) -> u64 {
    let args = ["meta", "--include-ignored", "--test-threads", "1", "--logfile", "/dev/null"];
    libtest_mimic::run(&Arguments::from_iter(args), trials).num_failed
}

fn a_skipped_test_fails_when_run_anyway() {
    let skipped = harness::trial("meta::skipped", vec![Err("a thing".into())], || {});
    assert_eq!(failures_when_run(vec![skipped]), 1);
    let runs = harness::trial("meta::runs", vec![Ok(())], || {});
    assert_eq!(failures_when_run(vec![runs]), 0);
}

fn a_test_that_overruns_its_time_limit_fails_saying_what_it_waited_for() {
    let overrun = harness::run_within("meta::overrun".into(), Duration::from_millis(200), || {
        harness::waiting_for(|| "a reply that never comes".to_string());
        std::thread::sleep(Duration::from_secs(5));
    });
    let failure = overrun.expect_err("a test past its time limit passed");
    let message = failure.message().unwrap_or_default();
    assert!(message.contains("still running after 200ms"), "{message}");
    assert!(message.contains("waiting for a reply that never comes"), "{message}");
}

/// A line of bytes that are not UTF-8 in a host's output does not end
/// the reading of it: the lines after it are seen.
fn the_output_collector_reads_past_bytes_that_are_not_utf8() {
    let mut shell = std::process::Command::new("sh");
    crate::support::prepare(&mut shell).args(["-c", "printf 'bad \\377\\n'; echo after"]);
    let host = crate::support::Host::start_command(&mut shell);
    host.wait_for("after");
    assert!(host.output().contains("bad \u{fffd}"), "{}", host.output());
}

/// REQUIRE_TOOLCHAINS turns missing needs into failures only when it is
/// exactly 1 (a 0, an empty value or a word leave them skips).
fn only_require_toolchains_1_requires_them() {
    let before = std::env::var_os("REQUIRE_TOOLCHAINS");
    let mut seen = Vec::new();
    for value in ["1", "0", "", "yes", "true"] {
        std::env::set_var("REQUIRE_TOOLCHAINS", value);
        seen.push((value, harness::needs_required()));
    }
    match before {
        Some(before) => std::env::set_var("REQUIRE_TOOLCHAINS", before),
        None => std::env::remove_var("REQUIRE_TOOLCHAINS"),
    }
    let expected = [("1", true), ("0", false), ("", false), ("yes", false), ("true", false)];
    assert_eq!(seen, expected);
}

pub fn tests() -> Vec<Trial> {
    crate::tests![
        only_require_toolchains_1_requires_them,
        the_output_collector_reads_past_bytes_that_are_not_utf8,
        the_promise_table_names_only_tests_that_run,
        a_skipped_test_fails_when_run_anyway,
        a_test_that_overruns_its_time_limit_fails_saying_what_it_waited_for,
    ]
}
