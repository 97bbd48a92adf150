//! `plexperf -w verify` as the real binary: every bdev type that stores data (in-process, from a
//! tiny `--json` config), and `--vhost-user` against a real plexd exporting a RAM bdev. Each
//! run must finish with requests done, no failed request and no miscompare; a run over an
//! error bdev that corrupts reads must report the miscompares (so the check can fail).
//!
//! The vhost tests start `plexd` from the same build directory as this test (or
//! `$PLEXD_BIN_DIR`): run `cargo build --workspace --bins` first (scripts/test.sh does).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

fn plexperf(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_plexperf"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run plexperf")
}

/// Runs plexperf with `--output json` and returns (success, report).
fn plexperf_json(args: &[&str]) -> (bool, Value) {
    let mut all = args.to_vec();
    all.extend(["--output", "json", "--no-progress"]);
    let out = plexperf(&all);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let v: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!("plexperf {args:?}: no JSON report ({e})\nstdout: {stdout}\nstderr: {stderr}")
    });
    (out.status.success(), v)
}

/// Asserts a verify run did requests on every job and none failed or miscompared.
fn assert_clean(what: &str, ok: bool, v: &Value) {
    let jobs = v["jobs"].as_array().expect("jobs");
    assert!(!jobs.is_empty(), "{what}: no job ran: {v}");
    for j in jobs {
        assert_eq!(j["workload"], "verify", "{what}: {j}");
        assert!(
            j["ios"].as_u64().unwrap_or(0) > 0,
            "{what}: no request completed: {j}"
        );
        assert!(
            j["iops"].as_f64().unwrap_or(0.0) > 0.0,
            "{what}: IOPS is 0: {j}"
        );
        assert_eq!(j["errors"], 0, "{what}: failed requests: {j}");
        assert_eq!(j["miscompares"], 0, "{what}: miscompares: {j}");
    }
    assert!(ok, "{what}: plexperf exited with failure: {v}");
}

fn write_config(dir: &Path, entries: Vec<Value>) -> PathBuf {
    let p = dir.join("bdevs.json");
    let cfg = json!({"subsystems": [{"subsystem": "bdev", "config": entries}]});
    std::fs::write(&p, cfg.to_string()).expect("write config");
    p
}

fn backing_file(dir: &Path, name: &str, bytes: u64) -> String {
    let p = dir.join(name);
    let f = std::fs::File::create(&p).expect("create backing file");
    f.set_len(bytes).expect("size backing file");
    p.display().to_string()
}

#[test]
fn verify_passes_on_every_bdev_type() {
    let dir = tempfile::tempdir().expect("tempdir");
    let uring = backing_file(dir.path(), "uring.img", 8 << 20);
    let aio = backing_file(dir.path(), "aio.img", 8 << 20);
    let cfg = write_config(
        dir.path(),
        vec![
            json!({"method": "bdev_malloc_create", "params": {"name": "Malloc0", "num_blocks": 16384, "block_size": 512}}),
            json!({"method": "bdev_malloc_create", "params": {"name": "Malloc1", "num_blocks": 16384, "block_size": 512}}),
            json!({"method": "bdev_malloc_create", "params": {"name": "Malloc2", "num_blocks": 16384, "block_size": 512}}),
            json!({"method": "bdev_malloc_create", "params": {"name": "Malloc4k", "num_blocks": 2048, "block_size": 4096}}),
            json!({"method": "bdev_uring_create", "params": {"name": "Uring0", "filename": uring}}),
            json!({"method": "bdev_aio_create", "params": {"name": "Aio0", "filename": aio}}),
            json!({"method": "bdev_error_create", "params": {"base_name": "Malloc1"}}),
            json!({"method": "bdev_delay_create", "params": {"name": "Delay0", "base_bdev_name": "Malloc2",
                "avg_read_latency": 20, "p99_read_latency": 40, "avg_write_latency": 20, "p99_write_latency": 40}}),
        ],
    );
    let cfg = cfg.display().to_string();
    for bdev in [
        "Malloc0",
        "Malloc4k",
        "Uring0",
        "Aio0",
        "EE_Malloc1",
        "Delay0",
    ] {
        for (q, o) in [("1", "4096"), ("16", "8192")] {
            let (ok, v) = plexperf_json(&[
                "--json", &cfg, "-T", bdev, "-w", "verify", "-q", q, "-o", o, "--ios", "3000",
            ]);
            assert_clean(&format!("{bdev} -q {q} -o {o}"), ok, &v);
            assert_eq!(
                v["jobs"][0]["ios"], 3000,
                "{bdev}: --ios 3000 not honoured: {v}"
            );
        }
    }
    // Two reactors driving the same bdev (-C) work on disjoint halves.
    let (ok, v) = plexperf_json(&[
        "--json", &cfg, "-T", "Malloc0", "-w", "verify", "-q", "8", "-m", "0x3", "-C", "-t", "0.5",
    ]);
    assert_clean("Malloc0 -m 0x3 -C", ok, &v);
    assert_eq!(v["jobs"].as_array().map(Vec::len), Some(2), "{v}");
}

#[test]
fn verify_reports_corrupted_reads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(
        dir.path(),
        vec![
            json!({"method": "bdev_malloc_create", "params": {"name": "Malloc1", "num_blocks": 16384, "block_size": 512}}),
            json!({"method": "bdev_error_create", "params": {"base_name": "Malloc1"}}),
            json!({"method": "bdev_error_inject_error", "params": {"name": "EE_Malloc1", "io_type": "read",
                "error_type": "corrupt_data", "num": 5, "corrupt_offset": 100, "corrupt_value": 1}}),
        ],
    );
    let (ok, v) = plexperf_json(&[
        "--json",
        &cfg.display().to_string(),
        "-T",
        "EE_Malloc1",
        "-w",
        "verify",
        "-q",
        "4",
        "--ios",
        "2000",
    ]);
    assert!(!ok, "plexperf exited 0 although reads were corrupted: {v}");
    assert_eq!(v["jobs"][0]["miscompares"], 5, "{v}");
}

// ---- vhost-user ----------------------------------------------------------------------------

fn bin_dir() -> PathBuf {
    if let Ok(d) = std::env::var("PLEXD_BIN_DIR") {
        return PathBuf::from(d);
    }
    Path::new(env!("CARGO_BIN_EXE_plexperf"))
        .parent()
        .expect("build directory")
        .to_path_buf()
}

/// A plexd exporting RAM bdevs over vhost-user from a private directory; killed on drop.
struct Plexd {
    child: Child,
    dir: tempfile::TempDir,
}

impl Plexd {
    /// Starts plexd with `ctrlrs` = [(controller, bdev name, blocks, block size)].
    fn start(ctrlrs: &[(&str, &str, u64, u32)]) -> Plexd {
        let plexd = bin_dir().join("plexd");
        assert!(
            plexd.exists(),
            "{} not found: run `cargo build --workspace --bins` first",
            plexd.display()
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let bdevs: Vec<Value> = ctrlrs
            .iter()
            .map(|(_, b, n, bs)| json!({"method": "bdev_malloc_create", "params": {"name": b, "num_blocks": n, "block_size": bs}}))
            .collect();
        let vhost: Vec<Value> = ctrlrs
            .iter()
            .map(|(c, b, _, _)| json!({"method": "vhost_create_blk_controller", "params": {"ctrlr": c, "dev_name": b}}))
            .collect();
        let cfg = dir.path().join("plexd.json");
        std::fs::write(
            &cfg,
            json!({"subsystems": [{"subsystem": "bdev", "config": bdevs},
                                  {"subsystem": "vhost_blk", "config": vhost}]})
            .to_string(),
        )
        .expect("write plexd config");
        let child = Command::new(&plexd)
            .arg("-r")
            .arg(dir.path().join("rpc.sock"))
            .arg("-S")
            .arg(dir.path())
            .arg("--config")
            .arg(&cfg)
            .env("PLEXD_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start plexd");
        let mut p = Plexd { child, dir };
        let end = Instant::now() + Duration::from_secs(20);
        for (c, ..) in ctrlrs {
            while !p.socket(c).exists() {
                if let Ok(Some(st)) = p.child.try_wait() {
                    panic!("plexd exited at start: {st}");
                }
                assert!(
                    Instant::now() < end,
                    "plexd did not create its vhost socket {c}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        p
    }

    fn socket(&self, ctrlr: &str) -> PathBuf {
        self.dir.path().join(ctrlr)
    }
}

impl Drop for Plexd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn vhost_user_verify_against_plexd() {
    let plexd = Plexd::start(&[
        ("vm", "Malloc0", 32768, 512),
        ("v4k", "Malloc4k", 4096, 4096),
    ]);
    let vm = plexd.socket("vm").display().to_string();
    let v4k = plexd.socket("v4k").display().to_string();
    for (sock, queues, q, o) in [
        (&vm, "1", "1", "4096"),
        (&vm, "1", "32", "4096"),
        (&vm, "2", "16", "16384"),
        (&v4k, "1", "32", "4096"),
    ] {
        let (ok, v) = plexperf_json(&[
            "--vhost-user",
            sock,
            "--queues",
            queues,
            "-w",
            "verify",
            "-q",
            q,
            "-o",
            o,
            "--ios",
            "3000",
        ]);
        let what = format!("vhost {sock} --queues {queues} -q {q} -o {o}");
        assert_clean(&what, ok, &v);
        let jobs = v["jobs"].as_array().expect("jobs");
        assert_eq!(
            jobs.len().to_string(),
            queues,
            "{what}: one job per queue: {v}"
        );
        for j in jobs {
            assert_eq!(j["ios"], 3000, "{what}: {j}");
        }
    }
    // The other workloads run clean too (read-back is not checked, failures are).
    for w in [
        "randread",
        "randwrite",
        "randrw",
        "read",
        "write",
        "flush",
        "write_zeroes",
        "unmap",
    ] {
        let (ok, v) = plexperf_json(&["--vhost-user", &vm, "-w", w, "-q", "8", "--ios", "500"]);
        assert!(ok, "vhost -w {w}: {v}");
        assert_eq!(v["jobs"][0]["ios"], 500, "vhost -w {w}: {v}");
        assert_eq!(v["jobs"][0]["errors"], 0, "vhost -w {w}: {v}");
    }
}

/// `--count-allocs` measures a window and finds no allocation on the I/O threads: the reactors
/// in-process, the queue threads of the vhost-user client.
#[test]
fn count_allocs_finds_none_on_the_io_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(
        dir.path(),
        vec![
            json!({"method": "bdev_malloc_create", "params": {"name": "Malloc0", "num_blocks": 16384, "block_size": 512}}),
        ],
    );
    let (ok, v) = plexperf_json(&[
        "--json",
        &cfg.display().to_string(),
        "-w",
        "randrw",
        "-q",
        "16",
        "-t",
        "1",
        "--count-allocs",
    ]);
    assert!(ok, "{v}");
    assert!(
        v["allocations"]["ios"].as_u64().unwrap_or(0) > 0,
        "no window measured: {v}"
    );
    assert_eq!(v["allocations"]["count"], 0, "in-process: {v}");

    let plexd = Plexd::start(&[("vm", "Malloc0", 32768, 512)]);
    let vm = plexd.socket("vm").display().to_string();
    let (ok, v) = plexperf_json(&[
        "--vhost-user",
        &vm,
        "--queues",
        "2",
        "-w",
        "randrw",
        "-q",
        "16",
        "-t",
        "1",
        "--count-allocs",
    ]);
    assert!(ok, "{v}");
    assert!(
        v["allocations"]["ios"].as_u64().unwrap_or(0) > 0,
        "no window measured: {v}"
    );
    assert_eq!(v["allocations"]["count"], 0, "vhost-user client: {v}");
}

#[test]
fn vhost_user_reports_a_missing_socket() {
    let out = plexperf(&["--vhost-user", "/nonexistent/plexperf.sock", "-t", "0.1"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/plexperf.sock"), "{err}");
}

/// vhost-user front-ends may add memory regions in any address order (libblkio maps its
/// rings first, and the kernel usually puts a later mapping below them). plexd once refused an
/// ADD_MEM_REG below an existing region ("regions haven't been sorted"); plexperf maps its
/// buffers above the rings by default, so this test runs the other layout.
#[test]
fn vhost_user_buffers_below_the_rings() {
    let plexd = Plexd::start(&[("vm", "Malloc0", 32768, 512)]);
    let vm = plexd.socket("vm").display().to_string();
    let (ok, v) = plexperf_json(&[
        "--vhost-user",
        &vm,
        "--buffer-placement",
        "anywhere",
        "-w",
        "verify",
        "-q",
        "8",
        "--ios",
        "1000",
    ]);
    assert_clean("vhost, buffers below the rings", ok, &v);
}
