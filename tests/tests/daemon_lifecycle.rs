//! The plexd process: start-up from a config file (good, bad, not JSON), shutdown signals,
//! a file-backed bdev across restarts, reactors from the cpumask, poll modes, and refusing a
//! socket another plexd serves.

use std::path::Path;
use std::time::Duration;

use plexd_tests::{run_plexd, write_bdev_config, Plexd, PlexdOpts};
use serde_json::{json, Value};

const M0_UUID: &str = "0b7f3c1a-9d2e-4f5a-8b6c-1d2e3f4a5b6c";
const U0_UUID: &str = "6e5d4c3b-2a19-4807-9f6e-5d4c3b2a1908";

fn malloc_entry(name: &str, block_size: u32, num_blocks: u64) -> Value {
    json!({"method": "bdev_malloc_create",
           "params": {"name": name, "block_size": block_size, "num_blocks": num_blocks}})
}

fn null_entry(name: &str) -> Value {
    json!({"method": "bdev_null_create", "params": {"name": name, "block_size": 4096, "num_blocks": 1024}})
}

/// Starts plexd with `args`, expecting it to fail at start-up; returns (exit code, stderr).
fn start_fails(args: &[&str]) -> (Plexd, Option<i32>, String) {
    let mut p = Plexd::start_with(PlexdOpts {
        args: args.iter().map(|s| s.to_string()).collect(),
        no_wait: true,
        ..Default::default()
    });
    let (code, stderr) = p.wait_exit(Duration::from_secs(30));
    assert_ne!(code, Some(0), "plexd {args:?} should have failed: {stderr}");
    assert!(!p.socket.exists(), "plexd {args:?} left its socket behind");
    (p, code, stderr)
}

fn dir_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn config_file_creates_its_bdevs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut m0 = malloc_entry("M0", 512, 2048);
    m0["params"]["uuid"] = json!(M0_UUID);
    let cfg = write_bdev_config(dir.path(), "cfg.json", &[m0, null_entry("N0")]);
    let p = Plexd::start_args(&["--config", dir_str(&cfg)]);
    let bdevs = p.bdevs();
    assert_eq!(p.names(), ["M0", "N0"]);
    assert_eq!(bdevs[0]["uuid"], M0_UUID);
    assert_eq!(bdevs[0]["num_blocks"], 2048);
    assert_eq!(bdevs[0]["product_name"], "Malloc disk");
    assert_eq!(bdevs[1]["block_size"], 4096);
    assert_eq!(bdevs[1]["product_name"], "Null disk");
}

#[test]
fn bad_config_entry_stops_start_up_and_ignore_config_errors_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let entries = [
        malloc_entry("M0", 512, 2048),
        malloc_entry("Bad", 700, 64),
        null_entry("N0"),
    ];
    let cfg = write_bdev_config(dir.path(), "cfg.json", &entries);

    let (_p, code, stderr) = start_fails(&["--config", dir_str(&cfg)]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("bdev_malloc_create"),
        "method not named: {stderr}"
    );
    assert!(
        stderr.contains("block_size 700"),
        "problem not named: {stderr}"
    );
    assert!(stderr.contains("entry 1"), "entry not located: {stderr}");

    let p = Plexd::start_args(&["--config", dir_str(&cfg), "--ignore-config-errors"]);
    assert_eq!(p.names(), ["M0", "N0"]);
}

#[test]
fn unusable_config_files_are_clear_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let not_json = dir.path().join("not.json");
    std::fs::write(&not_json, "this is { not json").expect("write");
    let (_p, _, stderr) = start_fails(&["--config", dir_str(&not_json)]);
    assert!(
        stderr.contains(dir_str(&not_json)),
        "path not named: {stderr}"
    );
    assert!(stderr.contains("not a valid"), "{stderr}");

    let no_subsystems = dir.path().join("empty.json");
    std::fs::write(&no_subsystems, r#"{"bdevs": []}"#).expect("write");
    let (_p, _, stderr) = start_fails(&["--config", dir_str(&no_subsystems)]);
    assert!(stderr.contains("subsystems"), "{stderr}");

    let missing = dir.path().join("missing.json");
    let (_p, _, stderr) = start_fails(&["--config", dir_str(&missing)]);
    assert!(
        stderr.contains(dir_str(&missing)),
        "path not named: {stderr}"
    );
    assert!(
        stderr.contains("No such file or directory"),
        "reason not given: {stderr}"
    );
}

#[test]
fn sigterm_and_sigint_exit_zero_and_remove_the_socket() {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let mut p = Plexd::start();
        p.call(
            "bdev_malloc_create",
            json!({"name": "M0", "block_size": 512, "num_blocks": 64}),
        );
        assert_eq!(p.stop(sig), Some(0), "signal {sig}: {}", p.stderr());
        assert!(!p.socket.exists(), "signal {sig}: socket left behind");
    }
}

#[test]
fn uring_bdev_from_config_survives_restarts_without_touching_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("disk.img");
    let pattern: Vec<u8> = (0..4u32 << 20)
        .map(|i| (i.wrapping_mul(7) % 251) as u8)
        .collect();
    std::fs::write(&file, &pattern).expect("write pattern");
    let entry = json!({"method": "bdev_uring_create",
        "params": {"name": "U0", "filename": dir_str(&file), "block_size": 512, "uuid": U0_UUID}});
    let cfg = write_bdev_config(dir.path(), "cfg.json", &[entry]);

    for round in 0..2 {
        let mut p = Plexd::start_args(&["--config", dir_str(&cfg)]);
        let u0 = p.call("bdev_get_bdevs", json!({"name": "U0"}));
        assert_eq!(
            u0[0]["num_blocks"],
            pattern.len() as u64 / 512,
            "round {round}"
        );
        assert_eq!(u0[0]["block_size"], 512);
        assert_eq!(u0[0]["uuid"], U0_UUID);
        assert_eq!(
            u0[0]["driver_specific"]["uring"]["filename"],
            dir_str(&file)
        );
        assert_eq!(p.stop(libc::SIGTERM), Some(0), "round {round}");
        let now = std::fs::read(&file).expect("read back");
        assert!(now == pattern, "round {round}: backing file changed");
    }
}

#[test]
fn cpumask_0x3_runs_two_reactors() {
    let p = Plexd::start_args(&["-m", "0x3"]);
    let r = p.call("framework_get_reactors", json!({}));
    let lcores: Vec<&Value> = r["reactors"]
        .as_array()
        .expect("reactors")
        .iter()
        .map(|x| &x["lcore"])
        .collect();
    assert_eq!(lcores, [&json!(0), &json!(1)], "{r}");
    assert_eq!(r["pid"], p.child.id());
    assert!(r["tick_rate"].as_u64().is_some_and(|t| t > 0), "{r}");
    let t = p.call("thread_get_stats", json!({}));
    assert_eq!(t["threads"].as_array().expect("threads").len(), 2, "{t}");
}

#[test]
fn poll_modes_are_accepted() {
    for mode in ["busy", "interrupt", "adaptive"] {
        let mut p = Plexd::start_args(&["--poll-mode", mode]);
        let r = p.call("framework_get_reactors", json!({}));
        assert_eq!(r["poll_mode"], mode, "{r}");
        p.call(
            "bdev_malloc_create",
            json!({"name": "M0", "block_size": 512, "num_blocks": 64}),
        );
        assert_eq!(p.stop(libc::SIGTERM), Some(0), "{mode}");
    }
}

#[test]
fn bad_poll_mode_or_cpumask_exits_with_a_clear_message() {
    let (_p, code, stderr) = start_fails(&["--poll-mode", "sometimes"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("sometimes") && stderr.contains("poll-mode"),
        "{stderr}"
    );

    let (_p, code, stderr) = start_fails(&["-m", "0xZZ"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("invalid cpumask '0xZZ'"), "{stderr}");

    let (_p, _, stderr) = start_fails(&["-m", "0x0"]);
    assert!(stderr.contains("selects no core"), "{stderr}");
}

#[test]
fn second_plexd_on_the_same_socket_refuses_to_start() {
    let p = Plexd::start();
    p.call(
        "bdev_malloc_create",
        json!({"name": "M0", "block_size": 512, "num_blocks": 64}),
    );
    let socket = dir_str(&p.socket);
    let (code, stderr) = run_plexd(&["-r", socket], Duration::from_secs(30));
    assert!(code.is_some(), "the second plexd kept running: {stderr}");
    assert_ne!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!("another plexd is listening on {socket}")),
        "{stderr}"
    );
    // The first one is untouched.
    assert!(p.socket.exists());
    assert_eq!(p.names(), ["M0"]);
}

#[test]
fn unusable_socket_paths_are_clear_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let in_missing_dir = dir.path().join("no-such-dir").join("plexd.sock");
    let (code, stderr) = run_plexd(&["-r", dir_str(&in_missing_dir)], Duration::from_secs(30));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(dir_str(&in_missing_dir)),
        "path not named: {stderr}"
    );
    assert!(
        stderr.contains("No such file or directory"),
        "reason not given: {stderr}"
    );

    let regular = dir.path().join("keep-me");
    std::fs::write(&regular, b"data").expect("write");
    let (code, stderr) = run_plexd(&["-r", dir_str(&regular)], Duration::from_secs(30));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("is not a socket"), "{stderr}");
    assert_eq!(std::fs::read(&regular).expect("still there"), b"data");
}

#[test]
fn config_with_wait_for_rpc_applies_runtime_entries_at_start_init() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_bdev_config(
        dir.path(),
        "cfg.json",
        &[malloc_entry("M0", 512, 2048), null_entry("N0")],
    );
    let p = Plexd::start_args(&["--config", dir_str(&cfg), "--wait-for-rpc"]);
    let (code, _) = p.call_err("bdev_get_bdevs", json!({}));
    assert_eq!(
        code, -32601,
        "runtime methods must wait for framework_start_init"
    );
    assert_eq!(p.call("framework_start_init", json!({})), true);
    assert_eq!(p.names(), ["M0", "N0"]);
}
