//! A plexd killed with SIGKILL under a running guest, restarted with the same config, resumes
//! the guest's in-flight requests (INFLIGHT_SHMFD): QEMU reconnects (`reconnect-ms`), and the
//! guest's fio crc32c verify finishes without an I/O error.
//!
//! The export sits on a delay bdev (5 ms) over a uring file bdev, so requests are in flight at
//! the moment of the kill and the data outlives the process.
//!
//! QEMU logs "vhost VQ N ring restore failed: -22" after the kill in every run: it stops the
//! rings with GET_VRING_BASE on a socket whose peer is gone, and falls back to the used index.
//! That is expected; what matters is what happens on the new connection.
//!
//! `PLEXD_TEST_KEEP_LOGS=DIR` keeps the serial console with QEMU's vhost traces
//! (`guest.log`), both plexds' logs (`plexd-1.log`, `plexd-2.log`) and the test's view
//! (`test-output.log`) in DIR; `PLEXD_TEST_LOG=debug` raises plexd's log level.

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
    let keep = std::env::var_os("PLEXD_TEST_KEEP_LOGS").map(std::path::PathBuf::from);
    let mut qemu = Command::new(root.join("tests/guest/run-guest.sh"));
    qemu.arg(&script);
    if let Some(k) = &keep {
        std::fs::create_dir_all(k).expect("log dir");
        qemu.env("GUEST_LOG", k.join("guest.log"));
        qemu.args(["-trace", "vhost_user_*", "-trace", "vhost_dev_*"]);
    }
    let guest = qemu
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
    let first_log = first.stderr();
    if let Some(k) = &keep {
        std::fs::write(k.join("plexd-1.log"), &first_log).expect("log");
    }
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
    if let Some(k) = &keep {
        std::fs::write(k.join("plexd-2.log"), &plexd_log).expect("log");
        std::fs::write(k.join("test-output.log"), &log).expect("log");
    }
    // run-guest.sh exits 124 when QEMU hit GUEST_TIMEOUT: say whether the guest hung on a
    // reconnected device or QEMU never came back, and show the killed plexd's last words.
    let hint = match (out.status.code(), plexd_log.contains("front-end connected")) {
        (Some(124), true) => {
            " (the guest hung: QEMU reconnected to the restarted plexd, but \
             the guest's I/O never finished before QEMU's timeout)"
        }
        (Some(124), false) => " (QEMU never reconnected to the restarted plexd before its timeout)",
        _ => "",
    };
    let first_lines: Vec<&str> = first_log.lines().collect();
    let first_tail = first_lines[first_lines.len().saturating_sub(40)..].join("\n");
    assert!(
        out.status.success() && log.contains("guest: fio rc=0"),
        "guest failed across the restart{hint}:\n{log}\nkilled plexd (last lines):\n{first_tail}\n\
         plexd after restart:\n{plexd_log}"
    );
    assert!(
        !log.contains("I/O error"),
        "the guest saw an I/O error:\n{log}"
    );
    if !plexd_log.contains("resubmitted requests in flight") {
        eprintln!("note: nothing was in flight at the moment of the kill this time");
    }
}

/// A back-end that dies between publishing a used entry and interrupting the guest (the
/// SIGKILL above can land there: completions are signalled once per reactor iteration)
/// leaves the guest waiting for an interrupt. With EVENT_IDX the next back-end would never
/// send it: its `needs_notification` fires only for completions that cross the guest's
/// `used_event`, which the dead back-end's entry already crossed. So every ring start must
/// interrupt the guest once (libvhost-user does the same on SET_VRING_CALL, "in case of I/O
/// hang after reconnecting"). Here plexd runs in this process and the test plays QEMU, the
/// guest and the dead back-end: it stops the ring (GET_VRING_BASE, as a restarted back-end
/// sees the ring the same way), publishes one more completion without an interrupt, restarts
/// the ring and waits for the interrupt.
#[test]
fn ring_start_interrupts_guest_for_completions_published_without_one() {
    use plexd_engine::reactor::PollMode;
    use plexd_engine::Engine;
    use plexd_tests::vhost_client::*;
    use vhost::VhostBackend;

    let engine = Engine::start(&[0], PollMode::Adaptive).expect("engine");
    let mut methods = plexd_control::MethodTable::new();
    let volumes = plexd_engine::volume::VolumeManager::new(engine.clone());
    plexd_engine::register_rpcs(&mut methods, &engine, &volumes);
    let create = methods
        .get("bdev_malloc_create")
        .expect("bdev_malloc_create");
    (create.handler)(Some(
        json!({"name": "M0", "num_blocks": 2048, "block_size": 512}),
    ))
    .unwrap_or_else(|e| panic!("bdev_malloc_create: {}", e.message));
    let dir = tempfile::tempdir().expect("socket dir");
    let ctrls = plexd::vhost::controller::Controllers::new(engine.clone(), dir.path().into());
    ctrls
        .create("vhost.0", "M0", false, None, "0x1".into())
        .expect("create controller");
    let mut c =
        Client::connect(&dir.path().join("vhost.0"), &ClientOpts::default()).expect("connect");
    assert!(c.vq.event_idx, "EVENT_IDX not negotiated");
    let mem = c.mem.clone();
    // The ring has run: two requests completed and the guest consumed both.
    c.write_read_check(0, &data_pattern(7, 512))
        .expect("I/O before the stop");
    let base = c.stop_queue().expect("GET_VRING_BASE");
    assert_eq!(base, 2, "GET_VRING_BASE after two requests");

    // The guest submits a GET_ID; the dying back-end completes it (status, used element,
    // used index) but is killed before it interrupts. The guest, having consumed everything
    // up to 2, asked for an interrupt once the used index passes 2 (used_event = 2).
    let h = c.heap.put(&mem, &blk_header(VIRTIO_BLK_T_GET_ID, 0));
    let id = c.heap.alloc(20);
    let s = c.heap.alloc(1);
    let head = c.vq.set_chain(
        &mem,
        0,
        &[Desc::ro(h, 16), Desc::wo(id, 20), Desc::wo(s, 1)],
    );
    c.vq.push(&mem, head);
    mem.write(s, &[VIRTIO_BLK_S_OK]);
    let slot = (base % c.vq.size as u32) as u64;
    mem.write(c.vq.used + 4 + 8 * slot, &(head as u32).to_le_bytes());
    mem.write(c.vq.used + 8 + 8 * slot, &1u32.to_le_bytes());
    mem.put_u16(c.vq.avail + 4 + 2 * c.vq.size as u64, c.vq.last_used());
    mem.put_u16(c.vq.used + 2, 3);
    while c.vq.call.read().is_ok() {}

    // The next back-end resumes the ring after the dead one's last entry (QEMU sends the
    // call fd again: GET_VRING_BASE dropped it).
    let i = c.vq.index as usize;
    c.fe.set_vring_base(i, 3).expect("SET_VRING_BASE");
    c.fe.set_vring_call(i, &c.vq.call).expect("SET_VRING_CALL");
    c.fe.set_vring_kick(i, &c.vq.kick).expect("SET_VRING_KICK");
    c.fe_set_vring_enable(true).expect("SET_VRING_ENABLE");
    let mut pfd = libc::pollfd {
        fd: std::os::fd::AsRawFd::as_raw_fd(&c.vq.call),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd on the stack, count 1.
    let ready = unsafe { libc::poll(&mut pfd, 1, IO_TIMEOUT.as_millis() as i32) };
    let used = c.vq.pop_used(&mem);
    drop(c);
    ctrls.shutdown_all();
    engine.shutdown();
    assert!(
        ready == 1,
        "the restarted ring never interrupted the guest (waited {IO_TIMEOUT:?}): a guest \
         waiting for the completion the previous back-end published hangs"
    );
    assert_eq!(
        used,
        Some(Used {
            id: head as u32,
            len: 1
        }),
        "the completion the guest was waiting for"
    );
}
