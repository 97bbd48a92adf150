//! The vhost-user-blk export against a real guest: QEMU (TCG) boots the test guest of
//! `tests/guest/` (a Debian kernel, busybox and fio) with a `vhost-user-blk-pci` device on a
//! plexd controller socket, and a guest-side script checks the disk.
//!
//! - a malloc bdev passes the guest self-test (size, GET_ID serial, two queues, fio crc32c
//!   verify with one and two jobs, flush, discard);
//! - a uring bdev on a file carries data both ways: the host's pattern is read by the guest,
//!   the guest's pattern is found in the file after plexd stops, nothing else is touched;
//! - a read-only controller is read-only in the guest, and the file is unchanged;
//! - a controller cannot be deleted while a guest is connected, and can be afterwards.
//! - a mirror-stripe volume of the volume manager (two plexes of two columns on four aio
//!   file disks) passes the self-test, then keeps a guest's patterns and fio data; after a
//!   clean stop both plexes, rebuilt from the disk files, hold the same bytes, with the
//!   guest's data where the stripe mapping puts it and zeros (the discard) everywhere else.
//!
//! Each test starts its own plexd (`-m 0x3`, two reactors) and one guest; guests run one at a
//! time (they are CPU-bound under TCG). A failing guest script fails the test with the guest's
//! serial log and plexd's log in the message. Needs `qemu-system-x86_64` and the guest image:
//! `scripts/install-test-deps.sh` (or `tests/guest/build-guest.sh`) provides both.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use plexd_tests::guest::{
    guest_command, one_guest_at_a_time, path_str, run_guest, BackgroundGuest, Target, CTRLR,
};
use serde_json::{json, Value};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const DISK: u64 = 64 * MIB;

/// Deterministic bytes for the host's pattern (xorshift64*, seeded by the offset), so every
/// 8 bytes of the disk differ.
fn host_pattern(off: u64, len: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len as usize);
    let mut x = off ^ 0x9e37_79b9_7f4a_7c15;
    while (out.len() as u64) < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len as usize);
    out
}

/// The guest's pattern, as `data-check.sh` writes it: a 64-byte record per 64 bytes, the one
/// at absolute offset O being `"{tag} {O:016x} "` padded with '.' to 63 bytes, plus '\n'.
fn guest_pattern(off: u64, len: u64, tag: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(len as usize);
    for o in (off..off + len).step_by(64) {
        let rec = format!("{tag} {o:016x} ");
        out.extend_from_slice(format!("{rec:.<63}\n").as_bytes());
    }
    assert_eq!(out.len() as u64, len, "{len} is not a multiple of 64");
    out
}

/// SHA-256 (hex) of `data`, by the host's `sha256sum` (coreutils).
fn sha256(data: &[u8]) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run sha256sum");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().expect("sha256sum output");
    writer
        .join()
        .expect("writer thread")
        .expect("write to sha256sum");
    let s = String::from_utf8(out.stdout).expect("utf-8");
    let hex = s.split_whitespace().next().expect("sha256sum output");
    assert_eq!(hex.len(), 64, "bad sha256sum output: {s}");
    hex.to_string()
}

/// Creates a `len`-byte file whose `(offset, length)` regions hold the host pattern; the rest
/// is zeros.
fn disk_file(dir: &Path, len: u64, regions: &[(u64, u64)]) -> PathBuf {
    let path = dir.join("disk.img");
    let f = std::fs::File::create(&path).expect("create disk file");
    f.set_len(len).expect("size disk file");
    for &(off, n) in regions {
        f.write_all_at(&host_pattern(off, n), off)
            .expect("write host pattern");
    }
    f.sync_all().expect("sync disk file");
    path
}

/// `plexd_check=OFF:LEN:SHA256` words for the host pattern in `regions`.
fn check_words(regions: &[(u64, u64)]) -> Vec<String> {
    regions
        .iter()
        .map(|&(off, n)| format!("plexd_check={off}:{n}:{}", sha256(&host_pattern(off, n))))
        .collect()
}

/// Asserts `data[off..off + expected.len()] == expected`, naming the first differing byte.
fn assert_region(data: &[u8], off: u64, expected: &[u8], what: &str) {
    let got = &data[off as usize..off as usize + expected.len()];
    if let Some(i) = got.iter().zip(expected).position(|(a, b)| a != b) {
        let at = off as usize + i;
        let ctx = &data[at - (i % 64)..(at - (i % 64) + 64).min(data.len())];
        panic!(
            "{what} [{off}, +{}): first difference at byte {at}: {:#04x}, expected {:#04x}; \
             the 64 bytes there: {:?}",
            expected.len(),
            got[i],
            expected[i],
            String::from_utf8_lossy(ctx)
        );
    }
}

#[test]
fn malloc_export_passes_the_guest_selftest() {
    let _one = one_guest_at_a_time();
    let mut t = Target::start();
    t.call(
        "bdev_malloc_create",
        json!({"name": "Malloc0", "num_blocks": DISK / 512, "block_size": 512}),
    );
    t.call(
        "vhost_create_blk_controller",
        json!({"ctrlr": CTRLR, "dev_name": "Malloc0"}),
    );

    let g = run_guest(
        "selftest.sh",
        &format!("plexd_disk_size={DISK} plexd_disk_serial=Malloc0 plexd_disk_queues=2"),
        &t.vhost_socket(),
    );
    t.expect_pass("selftest.sh", &g);
    for step in [
        "selftest: serial 'Malloc0'",
        "selftest: queues 2,",
        "selftest: flush ok",
        "selftest: blkdiscard ok",
        "selftest: PASS",
    ] {
        assert!(
            g.log.contains(step),
            "no '{step}' in the guest log:\n{}",
            g.log
        );
    }

    // The guest's requests reached the bdev: both queues' writes, the flushes and the discard.
    let s = t.iostat("Malloc0");
    assert!(s["num_write_ops"].as_u64() > Some(0), "{s}");
    assert!(s["num_read_ops"].as_u64() > Some(0), "{s}");
    assert!(s["num_flush_ops"].as_u64() > Some(0), "no flush: {s}");
    assert!(s["num_unmap_ops"].as_u64() > Some(0), "no discard: {s}");
    assert_eq!(s["bytes_unmapped"].as_u64(), Some(DISK), "{s}");
    assert_eq!(s["io_error"].as_u64(), Some(0), "{s}");
    assert_eq!(t.plexd.stop(libc::SIGTERM), Some(0));
}

#[test]
fn uring_export_carries_data_between_host_and_guest() {
    let _one = one_guest_at_a_time();
    let files = tempfile::tempdir().expect("tempdir");
    // Host pattern, guest writes right after each host region (catches writes that spill over
    // a boundary), the last block included; fio gets [32 MiB, 48 MiB) to itself.
    let host = [(0, 4 * KIB), (MIB, 64 * KIB), (DISK - 260 * KIB, 256 * KIB)];
    let guest = [
        (4 * KIB, 4 * KIB, "g-first"),
        (MIB + 64 * KIB, MIB, "g-middle"),
        (DISK - 4 * KIB, 4 * KIB, "g-last"),
    ];
    let fio = (32 * MIB, 16 * MIB);
    let path = disk_file(files.path(), DISK, &host);

    let mut t = Target::start();
    t.call(
        "bdev_uring_create",
        json!({"name": "Uring0", "filename": path_str(&path), "block_size": 4096}),
    );
    t.call(
        "vhost_create_blk_controller",
        json!({"ctrlr": CTRLR, "dev_name": "Uring0"}),
    );

    let mut words = vec![
        format!("plexd_disk_size={DISK}"),
        "plexd_lbs=4096".to_string(),
        "plexd_ro=0".to_string(),
    ];
    words.extend(check_words(&host));
    words.extend(
        guest
            .iter()
            .map(|(off, n, tag)| format!("plexd_write={off}:{n}:{tag}")),
    );
    words.push(format!("plexd_fio={}:{}", fio.0, fio.1));
    let g = run_guest("data-check.sh", &words.join(" "), &t.vhost_socket());
    t.expect_pass("data-check.sh", &g);
    assert!(g.log.contains("data-check: PASS"), "{}", g.log);
    assert_eq!(t.plexd.stop(libc::SIGTERM), Some(0), "plexd exit status");

    let data = std::fs::read(&path).expect("read disk file");
    assert_eq!(data.len() as u64, DISK);
    for &(off, n) in &host {
        assert_region(&data, off, &host_pattern(off, n), "host pattern");
    }
    for &(off, n, tag) in &guest {
        assert_region(&data, off, &guest_pattern(off, n, tag), "guest pattern");
    }
    // Nobody wrote anywhere else.
    let mut used: Vec<(u64, u64)> = host.to_vec();
    used.extend(guest.iter().map(|&(o, n, _)| (o, n)));
    used.push(fio);
    used.sort_unstable();
    let mut pos = 0;
    for (off, n) in used.into_iter().chain([(DISK, 0)]) {
        if off > pos {
            assert_region(&data, pos, &vec![0; (off - pos) as usize], "untouched");
        }
        pos = pos.max(off + n);
    }
}

#[test]
fn readonly_export_is_read_only_in_the_guest() {
    let _one = one_guest_at_a_time();
    let files = tempfile::tempdir().expect("tempdir");
    let len = 16 * MIB;
    let host = [(0, MIB), (8 * MIB, 64 * KIB)];
    let path = disk_file(files.path(), len, &host);
    let before = std::fs::read(&path).expect("read disk file");

    let mut t = Target::start();
    t.call(
        "bdev_uring_create",
        json!({"name": "Uring0", "filename": path_str(&path), "block_size": 512}),
    );
    t.call(
        "vhost_create_blk_controller",
        json!({"ctrlr": CTRLR, "dev_name": "Uring0", "readonly": true}),
    );
    assert_eq!(
        t.controller()["backend_specific"]["block"]["readonly"],
        true
    );

    let mut words = vec![
        format!("plexd_disk_size={len}"),
        "plexd_lbs=512".to_string(),
        "plexd_ro=1".to_string(),
    ];
    words.extend(check_words(&host));
    words.push("plexd_write_fails=0".to_string());
    words.push(format!("plexd_write_fails={}", 8 * MIB));
    let g = run_guest("data-check.sh", &words.join(" "), &t.vhost_socket());
    t.expect_pass("data-check.sh (read-only)", &g);
    assert!(g.log.contains("data-check: PASS"), "{}", g.log);

    let s = t.iostat("Uring0");
    assert!(s["num_read_ops"].as_u64() > Some(0), "{s}");
    assert_eq!(s["num_write_ops"].as_u64(), Some(0), "{s}");
    assert_eq!(t.plexd.stop(libc::SIGTERM), Some(0), "plexd exit status");
    let after = std::fs::read(&path).expect("read disk file");
    assert!(after == before, "the read-only export changed the file");
}

#[test]
fn controller_cannot_be_deleted_while_a_guest_is_connected() {
    let _one = one_guest_at_a_time();
    let mut t = Target::start();
    t.call(
        "bdev_malloc_create",
        json!({"name": "Malloc0", "num_blocks": DISK / 512, "block_size": 512}),
    );
    t.call(
        "vhost_create_blk_controller",
        json!({"ctrlr": CTRLR, "dev_name": "Malloc0"}),
    );
    assert_eq!(t.sessions(), 0, "{}", t.controller());

    // The guest does I/O, prints PLEXD-GUEST-READY, and waits for "release" on its second
    // serial port before more I/O: the host's checks run while it is surely connected.
    let ctl = t.sockets.path().join("ctl.sock");
    let mut cmd = guest_command(
        "data-check.sh",
        &format!(
            "plexd_disk_size={DISK} plexd_fio=0:{} plexd_handshake=1",
            8 * MIB
        ),
        &t.vhost_socket(),
    );
    cmd.env("GUEST_CTL_SOCKET", &ctl);
    let mut guest = BackgroundGuest::spawn(cmd, t.sockets.path().join("qemu.pid"));
    if !guest.collect_until(Some("PLEXD-GUEST-READY")) {
        let g = guest.finish();
        t.expect_pass("data-check.sh (handshake)", &g);
        panic!("the guest ended without PLEXD-GUEST-READY:\n{}", g.log);
    }

    let c = t.controller();
    assert_eq!(t.sessions(), 1, "no session while the guest runs: {c}");
    assert_eq!(c["sessions"][0]["started"], true, "{c}");
    let (code, msg) = t
        .plexd
        .call_err("vhost_delete_controller", json!({"ctrlr": CTRLR}));
    assert_eq!(code, -16, "{msg}");
    let (code, msg) = t
        .plexd
        .call_err("bdev_malloc_delete", json!({"name": "Malloc0"}));
    assert_eq!(
        code, -16,
        "a bdev exported to a running guest was deleted: {msg}"
    );
    assert!(t.vhost_socket().exists());

    // Release the guest: it does I/O again (the refused delete left the device working).
    let mut s = UnixStream::connect(&ctl).expect("connect to the guest's control serial port");
    s.write_all(b"release\n").expect("write release");
    let g = guest.finish();
    drop(s);
    t.expect_pass("data-check.sh (handshake)", &g);
    assert!(g.log.contains("data-check: released"), "{}", g.log);
    assert!(g.log.contains("fio after-release"), "{}", g.log);

    // QEMU has exited; the session ends once plexd has seen the disconnect.
    let end = Instant::now() + Duration::from_secs(30);
    while t.sessions() != 0 {
        assert!(
            Instant::now() < end,
            "the session outlived the guest by 30 s: {}",
            t.controller()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    t.call("vhost_delete_controller", json!({"ctrlr": CTRLR}));
    assert_eq!(t.call("vhost_get_controllers", json!({})), json!([]));
    assert!(
        !t.vhost_socket().exists(),
        "the controller's socket is left"
    );
    t.call("bdev_malloc_delete", json!({"name": "Malloc0"}));
    assert!(t.plexd.names().is_empty());
    assert_eq!(t.plexd.stop(libc::SIGTERM), Some(0), "plexd exit status");
}

/// Disk group, volume and bdev of the mirror-stripe test.
const DG: &str = "dg01";
const VOL: &str = "vol01";
const VOL_BDEV: &str = "dg01/vol01";
/// 96 MiB: two columns of 48 MiB fit in each disk's 60 MiB public region.
const VOL_LEN: u64 = 96 * MIB;
const STRIPE_UNIT: u64 = 64 * KIB;
const SECTOR: u64 = 512;

/// A JSON number field (panics naming the object if it is missing).
fn num(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no number '{key}' in {v}"))
}

/// A JSON string field.
fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("no string '{key}' in {v}"))
}

/// The host's view of one disk of the group: where its public region starts and its bytes.
struct HostDisk {
    public_offset: u64,
    bytes: Vec<u8>,
}

/// Rebuilds a striped plex's first `len` blocks from its subdisks on the disk files: logical
/// block b lives in column (b / su) % ncol at column offset (b / (su * ncol)) * su + b % su,
/// in the column's subdisk covering that offset, at disk block public_offset + disk_offset +
/// (column offset - subdisk column_offset).
fn plex_image(plex: &Value, disks: &BTreeMap<String, HostDisk>, len: u64) -> Vec<u8> {
    assert_eq!(plex["layout"], "stripe", "{plex}");
    let ncol = num(plex, "ncol");
    let su = num(plex, "stripe_unit_blocks");
    let sds = plex["subdisks"].as_array().expect("subdisks");
    let mut out = vec![0u8; (len * SECTOR) as usize];
    let mut b = 0;
    while b < len {
        let col = (b / su) % ncol;
        let co = (b / (su * ncol)) * su + b % su;
        let sd = sds
            .iter()
            .find(|s| {
                num(s, "column") == col
                    && (num(s, "column_offset")..num(s, "column_offset") + num(s, "len"))
                        .contains(&co)
            })
            .unwrap_or_else(|| panic!("no subdisk of {plex} holds column {col} offset {co}"));
        let within = co - num(sd, "column_offset");
        let n = (su - b % su).min(num(sd, "len") - within).min(len - b);
        let disk = &disks[text(sd, "disk")];
        let from = ((disk.public_offset + num(sd, "disk_offset") + within) * SECTOR) as usize;
        let to = (b * SECTOR) as usize;
        let bytes = (n * SECTOR) as usize;
        out[to..to + bytes].copy_from_slice(&disk.bytes[from..from + bytes]);
        b += n;
    }
    out
}

/// Reads the group's disk files (by bdev name in `files`) and rebuilds both plexes of the
/// volume; asserts the layout asked for: two stripe plexes of two columns with a 64 KiB stripe
/// unit, on four different disks.
fn mirror_images(
    vol: &Value,
    disk_list: &Value,
    files: &BTreeMap<String, PathBuf>,
) -> [Vec<u8>; 2] {
    let disks: BTreeMap<String, HostDisk> = disk_list
        .as_array()
        .expect("disk_list")
        .iter()
        .map(|d| {
            let path = &files[text(d, "device")];
            let bytes = std::fs::read(path).expect("read disk file");
            assert_eq!(bytes.len() as u64, DISK);
            let public_offset = num(d, "public_offset_blocks");
            (
                text(d, "name").to_string(),
                HostDisk {
                    public_offset,
                    bytes,
                },
            )
        })
        .collect();
    let len = num(vol, "num_blocks");
    assert_eq!(len * SECTOR, VOL_LEN, "{vol}");
    let plexes = vol["plexes"].as_array().expect("plexes");
    assert_eq!(plexes.len(), 2, "two plexes: {vol}");
    let mut used = Vec::new();
    for p in plexes {
        assert_eq!(num(p, "ncol"), 2, "{p}");
        assert_eq!(num(p, "stripe_unit_blocks"), STRIPE_UNIT / SECTOR, "{p}");
        for sd in p["subdisks"].as_array().expect("subdisks") {
            used.push(text(sd, "disk").to_string());
        }
    }
    used.sort_unstable();
    used.dedup();
    assert_eq!(
        used.len(),
        4,
        "the plexes do not use four different disks: {vol}"
    );
    [
        plex_image(&plexes[0], &disks, len),
        plex_image(&plexes[1], &disks, len),
    ]
}

/// Asserts the two plexes hold the same bytes, naming the first difference.
fn assert_plexes_equal(images: &[Vec<u8>; 2], vol: &Value, when: &str) {
    let [a, b] = images;
    if let Some(i) = a.iter().zip(b).position(|(x, y)| x != y) {
        let row = i - i % 64;
        panic!(
            "{when}: the plexes differ first at volume byte {i} (block {}): {:#04x} vs {:#04x}; \
             the 64 bytes there: {:?} vs {:?}\nvolume: {vol}",
            i as u64 / SECTOR,
            a[i],
            b[i],
            String::from_utf8_lossy(&a[row..row + 64]),
            String::from_utf8_lossy(&b[row..row + 64]),
        );
    }
}

/// `vm_print` shows the volume and both its plexes ENABLED ACTIVE; `volume_list` agrees and
/// no task (resync) is running. Returns the `volume_list` entry.
fn assert_volume_active(t: &Target, when: &str) -> Value {
    let print = t.call("vm_print", json!({"dg": DG}));
    let print = print.as_str().expect("vm_print text");
    let rows: Vec<Vec<&str>> = print
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .collect();
    // v NAME RVG KSTATE STATE ...; pl NAME VOLUME KSTATE STATE ...
    let v: Vec<_> = rows
        .iter()
        .filter(|r| r.len() > 4 && r[0] == "v" && r[1] == VOL)
        .collect();
    assert_eq!(
        v.len(),
        1,
        "{when}: no one 'v {VOL}' line in vm_print:\n{print}"
    );
    assert_eq!(
        (v[0][3], v[0][4]),
        ("ENABLED", "ACTIVE"),
        "{when}: volume state in vm_print:\n{print}"
    );
    let pl: Vec<_> = rows
        .iter()
        .filter(|r| r.len() > 4 && r[0] == "pl" && r[2] == VOL)
        .collect();
    assert_eq!(pl.len(), 2, "{when}: plexes of {VOL} in vm_print:\n{print}");
    for p in pl {
        assert_eq!(
            (p[3], p[4]),
            ("ENABLED", "ACTIVE"),
            "{when}: plex {} in vm_print:\n{print}",
            p[1]
        );
    }

    let vol = t.call("volume_list", json!({"dg": DG, "name": VOL}))[0].clone();
    assert_eq!(vol["state"], "ACTIVE", "{when}: {vol}");
    assert_eq!(vol["kstate"], "ENABLED", "{when}: {vol}");
    for p in vol["plexes"].as_array().expect("plexes") {
        assert_eq!(p["state"], "ACTIVE", "{when}: {p}");
        assert_eq!(p["kstate"], "ENABLED", "{when}: {p}");
        assert!(p["sync_offset"].is_null(), "{when}: {p}");
    }
    let tasks = t.call("task_list", json!({}));
    assert!(
        tasks
            .as_array()
            .expect("task_list")
            .iter()
            .all(|k| k["state"] != "running"),
        "{when}: a task is running: {tasks}"
    );
    vol
}

#[test]
fn mirror_stripe_volume_passes_fio_verify_in_a_guest() {
    let _one = one_guest_at_a_time();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut t = Target::start();
    // Four 64 MiB files as aio disks; fallocate gives them (and so the volume) discard.
    let mut files = BTreeMap::new();
    for i in 0..4 {
        let name = format!("aio{i}");
        let path = dir.path().join(format!("{name}.img"));
        let f = std::fs::File::create(&path).expect("create disk file");
        f.set_len(DISK).expect("size disk file");
        t.call(
            "bdev_aio_create",
            json!({"name": name, "filename": path_str(&path), "block_size": 512,
                   "fallocate": true}),
        );
        files.insert(name, path);
    }
    let names: Vec<&String> = files.keys().collect();
    t.call("dg_create", json!({"name": DG, "disks": names}));
    let bdev = t.call(
        "volume_create",
        json!({"dg": DG, "name": VOL, "size": VOL_LEN, "layout": "mirror-stripe",
               "ncol": 2, "nmirror": 2, "stripe_unit_kb": STRIPE_UNIT / KIB}),
    );
    assert_eq!(bdev, json!(VOL_BDEV));
    t.call(
        "vhost_create_blk_controller",
        json!({"ctrlr": CTRLR, "dev_name": VOL_BDEV}),
    );

    // 1. The self-test: size, serial, two queues, fio verify (one job, then two), flush and
    //    a discard of the whole volume (write-zeroes on both plexes).
    let g = run_guest(
        "selftest.sh",
        &format!("plexd_disk_size={VOL_LEN} plexd_disk_serial={VOL_BDEV} plexd_disk_queues=2"),
        &t.vhost_socket(),
    );
    t.expect_pass("selftest.sh", &g);
    for step in [
        &format!("selftest: /dev/vda size {VOL_LEN} bytes") as &str,
        &format!("selftest: serial '{VOL_BDEV}'"),
        "selftest: queues 2,",
        "selftest: flush ok",
        "selftest: blkdiscard ok",
        "selftest: PASS",
    ] {
        assert!(
            g.log.contains(step),
            "no '{step}' in the guest log:\n{}",
            g.log
        );
    }
    let s = t.iostat(VOL_BDEV);
    assert!(s["num_write_ops"].as_u64() > Some(0), "{s}");
    assert!(s["num_read_ops"].as_u64() > Some(0), "{s}");
    assert!(s["num_flush_ops"].as_u64() > Some(0), "no flush: {s}");
    assert!(s["num_unmap_ops"].as_u64() > Some(0), "no discard: {s}");
    assert_eq!(s["bytes_unmapped"].as_u64(), Some(VOL_LEN), "{s}");
    assert_eq!(s["io_error"].as_u64(), Some(0), "{s}");
    let vol = assert_volume_active(&t, "after selftest.sh");
    // The discard zeroed every block of both plexes (the guest is gone, its I/O complete).
    let disk_list = t.call("disk_list", json!({"dg": DG}));
    let images = mirror_images(&vol, &disk_list, &files);
    assert_plexes_equal(&images, &vol, "after selftest.sh");
    if let Some(i) = images[0].iter().position(|&x| x != 0) {
        panic!(
            "after the guest's discard, volume byte {i} is {:#04x}, not 0",
            images[0][i]
        );
    }

    // 2. Data that stays: guest patterns at the first block, across a stripe unit boundary
    //    (column 0 -> 1), across a stripe row boundary (column 1 -> 0 of the next row) and at
    //    the last block, and fio verify on [32 MiB, 48 MiB).
    let guest = [
        (0, 4 * KIB, "g-first"),
        (STRIPE_UNIT - 4 * KIB, 8 * KIB, "g-unit"),
        (2 * STRIPE_UNIT - 4 * KIB, 8 * KIB, "g-row"),
        (VOL_LEN - 4 * KIB, 4 * KIB, "g-last"),
    ];
    let fio = (32 * MIB, 16 * MIB);
    let mut words = vec![
        format!("plexd_disk_size={VOL_LEN}"),
        "plexd_lbs=512".to_string(),
        "plexd_ro=0".to_string(),
    ];
    words.extend(
        guest
            .iter()
            .map(|(off, n, tag)| format!("plexd_write={off}:{n}:{tag}")),
    );
    words.push(format!("plexd_fio={}:{}", fio.0, fio.1));
    let g = run_guest("data-check.sh", &words.join(" "), &t.vhost_socket());
    t.expect_pass("data-check.sh", &g);
    assert!(g.log.contains("data-check: PASS"), "{}", g.log);
    assert_eq!(t.iostat(VOL_BDEV)["io_error"].as_u64(), Some(0));

    // 3. Still ENABLED ACTIVE; then a clean stop, and both plexes from the disk files.
    let vol = assert_volume_active(&t, "after data-check.sh");
    let disk_list = t.call("disk_list", json!({"dg": DG}));
    assert_eq!(t.plexd.stop(libc::SIGTERM), Some(0), "plexd exit status");
    let images = mirror_images(&vol, &disk_list, &files);
    assert_plexes_equal(&images, &vol, "after data-check.sh");
    let data = &images[0];
    for &(off, n, tag) in &guest {
        assert_region(
            data,
            off,
            &guest_pattern(off, n, tag),
            "guest pattern in the plexes",
        );
    }
    let fio_bytes = &data[fio.0 as usize..(fio.0 + fio.1) as usize];
    let nonzero = fio_bytes
        .chunks(4096)
        .filter(|c| c.iter().any(|&x| x != 0))
        .count();
    assert!(
        nonzero * 4096 * 10 >= fio.1 as usize * 9,
        "fio's range holds only {nonzero} non-zero 4 KiB blocks"
    );
    // Nothing else was written since the discard.
    let mut used: Vec<(u64, u64)> = guest.iter().map(|&(o, n, _)| (o, n)).collect();
    used.push(fio);
    used.sort_unstable();
    let mut pos = 0;
    for (off, n) in used.into_iter().chain([(VOL_LEN, 0)]) {
        if off > pos {
            assert_region(data, pos, &vec![0; (off - pos) as usize], "untouched");
        }
        pos = pos.max(off + n);
    }
}
