//! A plexd killed with SIGKILL under a running guest, restarted with the same config, resumes
//! the guest's in-flight requests (INFLIGHT_SHMFD): QEMU reconnects (`reconnect-ms`), and the
//! guest's fio crc32c verify finishes without an I/O error.
//!
//! The export sits on a delay bdev (5 ms) over a uring file bdev, so requests are in flight at
//! the moment of the kill and the data outlives the process.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use plexd_tests::{bin_dir, Plexd, PlexdOpts};
use serde_json::json;

const GUEST_SCRIPT: &str = r#"#!/bin/sh
fio --name=v --filename=/dev/vda --rw=randwrite --bs=4k --size=8M --ioengine=libaio \
    --iodepth=16 --verify=crc32c --do_verify=1 --direct=1 --loops=4 > /tmp/fio.out 2>&1
rc=$?
grep -E "err=|verify|error" /tmp/fio.out | head -5
echo "guest: fio rc=$rc"
exit $rc
"#;

fn repo_root() -> std::path::PathBuf {
    bin_dir()
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

fn start(dir: &Path, cfg: &Path) -> Plexd {
    Plexd::start_with(PlexdOpts {
        args: vec![
            "-m".into(),
            "0x3".into(),
            "-S".into(),
            dir.display().to_string(),
            "--config".into(),
            cfg.display().to_string(),
        ],
        ..Default::default()
    })
}

#[test]
fn guest_survives_plexd_sigkill_and_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = dir.path().join("disk.img");
    std::fs::File::create(&disk)
        .and_then(|f| f.set_len(64 << 20))
        .expect("backing file");
    let cfg = dir.path().join("cfg.json");
    let config = json!({"subsystems": [
        {"subsystem": "bdev", "config": [
            {"method": "bdev_uring_create", "params": {"name": "U0", "filename": disk, "block_size": 512}},
            {"method": "bdev_delay_create", "params": {"name": "D0", "base_bdev_name": "U0",
                "avg_read_latency": 5000, "p99_read_latency": 8000,
                "avg_write_latency": 5000, "p99_write_latency": 8000}}]},
        {"subsystem": "vhost_blk", "config": [
            {"method": "vhost_create_blk_controller", "params": {"ctrlr": "vhost.0", "dev_name": "D0"}}]}]});
    std::fs::write(&cfg, serde_json::to_vec_pretty(&config).expect("json")).expect("config");
    let script = dir.path().join("guest.sh");
    std::fs::write(&script, GUEST_SCRIPT).expect("guest script");

    let mut first = start(dir.path(), &cfg);
    let sock = dir.path().join("vhost.0");
    let root = repo_root();
    let guest = Command::new(root.join("tests/guest/run-guest.sh"))
        .arg(&script)
        .arg("-chardev")
        .arg(format!(
            "socket,id=vub0,path={},reconnect-ms=500",
            sock.display()
        ))
        .arg("-device")
        .arg("vhost-user-blk-pci,chardev=vub0,num-queues=2")
        .env("GUEST_TIMEOUT", "300")
        .current_dir(&root)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the guest");

    // Wait until the guest is writing, then kill plexd mid-stream.
    let end = Instant::now() + Duration::from_secs(240);
    loop {
        let st = first.call("bdev_get_iostat", json!({"name": "D0"}));
        if st["bdevs"][0]["num_write_ops"].as_u64().unwrap_or(0) > 300 {
            break;
        }
        assert!(Instant::now() < end, "the guest never started writing");
        std::thread::sleep(Duration::from_millis(200));
    }
    first.stop(libc::SIGKILL);
    std::thread::sleep(Duration::from_millis(800));
    let mut second = start(dir.path(), &cfg);

    let out = guest.wait_with_output().expect("guest output");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    second.stop(libc::SIGTERM);
    let plexd_log = second.stderr();
    assert!(
        out.status.success() && log.contains("guest: fio rc=0"),
        "guest failed across the restart:\n{log}\nplexd after restart:\n{plexd_log}"
    );
    assert!(
        !log.contains("I/O error"),
        "the guest saw an I/O error:\n{log}"
    );
    if !plexd_log.contains("resubmitted requests in flight") {
        eprintln!("note: nothing was in flight at the moment of the kill this time");
    }
}
