//! The volume manager refuses bad requests with a clear JSON-RPC error and changes nothing:
//! after each refusal `vm_print`, `volume_list`, `dg_list` (with the configuration's sequence
//! number), `disk_list`, the bdev names and the bytes of every disk's private region are
//! exactly what they were before.
//!
//! Also: a foreign label is only overwritten with `force`; a disk whose label is destroyed
//! while plexd is down does not stop its group from importing (it is reported NODEVICE and
//! the volume is served from the other mirror); a destroyed primary label copy is repaired
//! from the backup.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use plexd_tests::vhost_client::{
    data_pattern, Client, ClientOpts, VIRTIO_BLK_S_OK, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
};
use plexd_tests::{write_bdev_config, Plexd, PlexdOpts};
use serde_json::{json, Value};

const DISK_BYTES: u64 = 64 << 20;
const PRIVATE_BYTES: usize = 4 << 20;
const EINVAL: i64 = -libc::EINVAL as i64;
const ENOENT: i64 = -libc::ENOENT as i64;
const EEXIST: i64 = -libc::EEXIST as i64;
const EBUSY: i64 = -libc::EBUSY as i64;
const ENOSPC: i64 = -libc::ENOSPC as i64;
const INVALID_PARAMS: i64 = -32602;

/// Backing files and the vhost socket directory.
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Files {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("vhost")).expect("vhost dir");
        Files { dir }
    }

    fn path(&self, disk: &str) -> PathBuf {
        self.dir.path().join(format!("{disk}.img"))
    }

    fn sockets(&self) -> PathBuf {
        self.dir.path().join("vhost")
    }

    /// A 64 MiB file starting with `head`.
    fn create(&self, disk: &str, head: &[u8]) {
        let f = self.path(disk);
        std::fs::write(&f, head).expect("write backing file");
        std::fs::OpenOptions::new()
            .write(true)
            .open(&f)
            .and_then(|h| h.set_len(DISK_BYTES))
            .expect("size backing file");
    }

    fn aio(&self, disk: &str) -> Value {
        json!({"name": disk, "filename": self.path(disk), "block_size": 512})
    }

    /// Overwrites `len` bytes at `offset` of `disk`'s file.
    fn scribble(&self, disk: &str, offset: u64, bytes: &[u8]) {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(self.path(disk))
            .expect("open backing file");
        f.seek(SeekFrom::Start(offset)).expect("seek");
        f.write_all(bytes).expect("scribble");
        f.sync_all().expect("sync");
    }

    fn private_region(&self, disk: &str) -> Vec<u8> {
        use std::io::Read;
        let mut b = vec![0u8; PRIVATE_BYTES];
        std::fs::File::open(self.path(disk))
            .and_then(|mut f| f.read_exact(&mut b))
            .expect("read the private region");
        b
    }

    fn plexd(&self, config: Option<&Path>) -> Plexd {
        let mut args = vec!["-S".to_string(), self.sockets().display().to_string()];
        if let Some(c) = config {
            args.push("--config".into());
            args.push(c.display().to_string());
        }
        Plexd::start_with(PlexdOpts {
            args,
            ..Default::default()
        })
    }

    fn export(&self, plexd: &Plexd, ctrlr: &str, bdev: &str) -> Client {
        plexd.call(
            "vhost_create_blk_controller",
            json!({"ctrlr": ctrlr, "dev_name": bdev}),
        );
        Client::connect(&self.sockets().join(ctrlr), &ClientOpts::default())
            .unwrap_or_else(|e| panic!("vhost client on {ctrlr}: {e}"))
    }

    /// Disconnects, waits until plexd saw it, deletes the controller.
    fn unexport(&self, plexd: &Plexd, ctrlr: &str, c: Client) {
        drop(c);
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            let v = plexd.call("vhost_get_controllers", json!({"name": ctrlr}));
            if v[0]["sessions"].as_array().is_none_or(Vec::is_empty) {
                break;
            }
            assert!(Instant::now() < end, "{ctrlr} keeps its session: {v}");
            std::thread::sleep(Duration::from_millis(20));
        }
        plexd.call("vhost_delete_controller", json!({"ctrlr": ctrlr}));
    }
}

/// Everything a refused request must leave alone.
#[derive(Debug, PartialEq)]
struct Snapshot {
    vm_print: Value,
    volumes: Value,
    groups: Value,
    disks: Value,
    bdevs: Vec<String>,
    private_regions: Vec<(String, Vec<u8>)>,
}

fn snapshot(plexd: &Plexd, files: &Files, disks: &[&str]) -> Snapshot {
    Snapshot {
        vm_print: plexd.call("vm_print", json!({})),
        volumes: plexd.call("volume_list", json!({})),
        groups: plexd.call("dg_list", json!({})),
        disks: plexd.call("disk_list", json!({})),
        bdevs: plexd.names(),
        private_regions: disks
            .iter()
            .map(|d| (d.to_string(), files.private_region(d)))
            .collect(),
    }
}

/// Asserts nothing changed, naming what did (the private regions are too big to print).
fn assert_unchanged(case: &str, before: &Snapshot, after: &Snapshot) {
    assert_eq!(after.vm_print, before.vm_print, "{case}: vm_print changed");
    assert_eq!(after.volumes, before.volumes, "{case}: volume_list changed");
    assert_eq!(after.groups, before.groups, "{case}: dg_list changed");
    assert_eq!(after.disks, before.disks, "{case}: disk_list changed");
    assert_eq!(after.bdevs, before.bdevs, "{case}: the bdevs changed");
    for ((d, a), (_, b)) in after.private_regions.iter().zip(&before.private_regions) {
        assert!(a == b, "{case}: the private region of {d} was written");
    }
}

/// Calls `method` expecting error `code` with a message containing `needle`, and checks that
/// nothing changed.
fn refused(
    plexd: &Plexd,
    files: &Files,
    disks: &[&str],
    method: &str,
    params: Value,
    code: i64,
    needle: &str,
) {
    let case = format!("{method} {params}");
    let before = snapshot(plexd, files, disks);
    let (got, msg) = plexd.call_err(method, params);
    assert_eq!(got, code, "{case}: wrong error code; message: {msg}");
    assert!(
        msg.to_lowercase().contains(&needle.to_lowercase()),
        "{case}: the message does not say '{needle}': {msg}"
    );
    assert_unchanged(&case, &before, &snapshot(plexd, files, disks));
}

const DISKS: [&str; 4] = ["b0", "b1", "b2", "x0"];

/// plexd with group `bdg` on b0..b2 (x0 is left free) holding mirror volume `v0`.
fn group_env() -> (Files, Plexd) {
    let files = Files::new();
    for d in DISKS {
        files.create(d, &[]);
    }
    let plexd = files.plexd(None);
    for d in DISKS {
        plexd.call("bdev_aio_create", files.aio(d));
    }
    plexd.call(
        "dg_create",
        json!({"name": "bdg", "disks": ["b0", "b1", "b2"]}),
    );
    plexd.call(
        "volume_create",
        json!({"dg": "bdg", "name": "v0", "size": "8M", "layout": "mirror"}),
    );
    (files, plexd)
}

#[test]
fn volume_create_refusals_change_nothing() {
    let (files, plexd) = group_env();
    let vc = |extra: Value| {
        let mut p = json!({"dg": "bdg", "name": "nv", "size": "8M"});
        for (k, v) in extra.as_object().expect("object") {
            if v.is_null() {
                p.as_object_mut().expect("object").remove(k);
            } else {
                p[k] = v.clone();
            }
        }
        p
    };
    let cases: Vec<(Value, i64, &str)> = vec![
        // Sizes.
        (vc(json!({"size": "1G"})), ENOSPC, "free"),
        (
            vc(json!({"size": "1G", "layout": "stripe"})),
            ENOSPC,
            "free",
        ),
        (vc(json!({"size": 0})), EINVAL, "size"),
        (vc(json!({"size": "12 parsecs"})), INVALID_PARAMS, "size"),
        (
            vc(json!({"size": "99999999999999999999T"})),
            INVALID_PARAMS,
            "size",
        ),
        (vc(json!({"size": -1})), INVALID_PARAMS, ""),
        // More disks than the group has.
        (
            vc(json!({"layout": "stripe", "ncol": 8})),
            ENOSPC,
            "at least 8 disks",
        ),
        (
            vc(json!({"layout": "mirror", "nmirror": 4})),
            ENOSPC,
            "at least 4 disks",
        ),
        (
            vc(json!({"layout": "mirror-stripe", "ncol": 2, "nmirror": 2})),
            ENOSPC,
            "at least 4 disks",
        ),
        (
            vc(json!({"layout": "stripe-mirror", "ncol": 2})),
            ENOSPC,
            "at least 4 disks",
        ),
        // Layout parameters that make no sense.
        (vc(json!({"layout": "raid6"})), EINVAL, "unknown layout"),
        // RAID-5: columns, stripe unit, mirrors, disks.
        (
            vc(json!({"layout": "raid5", "ncol": 2})),
            EINVAL,
            "at least 3 columns",
        ),
        (
            vc(json!({"layout": "raid5", "ncol": 4})),
            EINVAL,
            "4 columns needs 4 disks",
        ),
        (
            vc(json!({"layout": "raid5", "stripe_unit_kb": 12})),
            EINVAL,
            "power of two",
        ),
        (
            vc(json!({"layout": "raid5", "stripe_unit_kb": 2048})),
            EINVAL,
            "4 KiB to 1 MiB",
        ),
        (
            vc(json!({"layout": "raid5", "nmirror": 2})),
            EINVAL,
            "not mirrored",
        ),
        (
            vc(json!({"layout": "raid5", "alloc": ["b0", "b1"]})),
            EINVAL,
            "alloc list names only 2",
        ),
        (
            vc(json!({"layout": "raid5", "size": "1G"})),
            ENOSPC,
            "RAID-5",
        ),
        (
            vc(json!({"layout": "mirror", "skip_copy": true})),
            EINVAL,
            "skip_copy applies to RAID-5 volumes only",
        ),
        (
            vc(json!({"layout": "raid5", "skip_copy": "yes"})),
            INVALID_PARAMS,
            "",
        ),
        (
            vc(json!({"layout": "stripe-mirror", "ncol": 1, "nmirror": 2})),
            EINVAL,
            "2 columns",
        ),
        (
            vc(json!({"layout": "stripe", "ncol": 1})),
            EINVAL,
            "2 columns",
        ),
        (vc(json!({"layout": "concat", "ncol": 3})), EINVAL, "ncol"),
        (
            vc(json!({"layout": "mirror", "nmirror": 0})),
            EINVAL,
            "nmirror",
        ),
        (
            vc(json!({"layout": "mirror", "nmirror": 33})),
            EINVAL,
            "nmirror",
        ),
        (
            vc(json!({"layout": "stripe", "stripe_unit_kb": 0})),
            EINVAL,
            "stripe_unit_kb",
        ),
        (vc(json!({"alloc": ["nosuchdisk"]})), EINVAL, "nosuchdisk"),
        // Read policies.
        (
            vc(json!({"layout": "mirror", "read_policy": "fastest"})),
            EINVAL,
            "read_policy",
        ),
        (
            vc(json!({"layout": "mirror", "read_policy": "prefer"})),
            EINVAL,
            "prefer_plex",
        ),
        (
            vc(json!({"layout": "mirror", "read_policy": "prefer", "prefer_plex": "nv-09"})),
            EINVAL,
            "nv-09",
        ),
        (
            vc(json!({"layout": "mirror", "prefer_plex": "nv-01"})),
            EINVAL,
            "prefer",
        ),
        // Names.
        (vc(json!({"name": "v0"})), EEXIST, "v0"),
        (vc(json!({"name": "a/b"})), EINVAL, "name"),
        (vc(json!({"name": ""})), EINVAL, "name"),
        (vc(json!({"dg": "nosuchdg"})), ENOENT, "nosuchdg"),
        // Malformed parameters.
        (vc(json!({"size": true})), INVALID_PARAMS, ""),
        (
            vc(json!({"ncol": "two", "layout": "stripe"})),
            INVALID_PARAMS,
            "",
        ),
        (
            vc(json!({"nmirror": 2.5, "layout": "mirror"})),
            INVALID_PARAMS,
            "",
        ),
        (vc(json!({"colour": "blue"})), INVALID_PARAMS, "colour"),
        (vc(json!({"dg": null})), INVALID_PARAMS, "dg"),
        (vc(json!({"name": 7})), INVALID_PARAMS, ""),
        (json!(["bdg", "nv", "8M"]), INVALID_PARAMS, ""),
    ];
    for (params, code, needle) in cases {
        refused(
            &plexd,
            &files,
            &DISKS,
            "volume_create",
            params,
            code,
            needle,
        );
    }
    // And the group still works: the refusals left no half-made volume behind.
    assert_eq!(
        plexd.call("volume_create", vc(json!({"layout": "stripe"}))),
        json!("bdg/nv")
    );
}

#[test]
fn other_refusals_change_nothing() {
    let (files, plexd) = group_env();
    let cases: Vec<(&str, Value, i64, &str)> = vec![
        (
            "dg_create",
            json!({"name": "bdg", "disks": ["x0"]}),
            EEXIST,
            "bdg",
        ),
        (
            "dg_create",
            json!({"name": "", "disks": ["x0"]}),
            EINVAL,
            "name",
        ),
        (
            "dg_create",
            json!({"name": "ng", "disks": []}),
            EINVAL,
            "disk",
        ),
        (
            "dg_create",
            json!({"name": "ng", "disks": ["x0", "x0"]}),
            EINVAL,
            "twice",
        ),
        (
            "dg_create",
            json!({"name": "ng", "disks": ["nosuch"]}),
            ENOENT,
            "nosuch",
        ),
        (
            "dg_create",
            json!({"name": "ng", "disks": ["bdg/v0"]}),
            EINVAL,
            "volume",
        ),
        (
            "dg_create",
            json!({"name": "ng", "disks": "x0"}),
            INVALID_PARAMS,
            "",
        ),
        (
            "dg_create",
            json!({"name": "ng", "disks": ["x0"], "force": "yes"}),
            INVALID_PARAMS,
            "",
        ),
        (
            "dg_create",
            json!({"name": "ng", "disk": ["x0"]}),
            INVALID_PARAMS,
            "",
        ),
        ("dg_create", Value::Null, INVALID_PARAMS, ""),
        (
            "volume_delete",
            json!({"dg": "bdg", "name": "nosuch"}),
            ENOENT,
            "nosuch",
        ),
        (
            "volume_delete",
            json!({"dg": "bdg", "volume": "v0"}),
            INVALID_PARAMS,
            "volume",
        ),
        (
            "volume_stop",
            json!({"dg": "nosuchdg", "name": "v0"}),
            ENOENT,
            "nosuchdg",
        ),
        (
            "volume_start",
            json!({"dg": "bdg", "name": "v0"}),
            EBUSY,
            "already started",
        ),
        (
            "volume_list",
            json!({"dg": "bdg", "name": "nosuch"}),
            ENOENT,
            "nosuch",
        ),
        (
            "dg_remove_disk",
            json!({"dg": "bdg", "name": "disk01"}),
            EBUSY,
            "subdisks",
        ),
        ("dg_deport", json!({"name": "nosuchdg"}), ENOENT, "nosuchdg"),
        ("dg_import", json!({"name": "nosuchdg"}), ENOENT, "nosuchdg"),
        ("dg_import", json!({"disks": ["b0"]}), EBUSY, "b0"),
        (
            "plex_detach",
            json!({"dg": "bdg", "plex": "nosuch"}),
            ENOENT,
            "nosuch",
        ),
        (
            "volume_set",
            json!({"dg": "bdg", "name": "v0"}),
            EINVAL,
            "give at least one property to change (skip_copy)",
        ),
        (
            "volume_set",
            json!({"dg": "bdg", "name": "v0", "skip_copy": true}),
            EINVAL,
            "skip_copy applies to RAID-5 volumes only",
        ),
        (
            "volume_set",
            json!({"dg": "bdg", "name": "nosuch", "skip_copy": true}),
            ENOENT,
            "bdg/nosuch",
        ),
        (
            "volume_set",
            json!({"dg": "nosuchdg", "name": "v0", "skip_copy": true}),
            ENOENT,
            "nosuchdg",
        ),
        (
            "volume_set",
            json!({"dg": "bdg", "name": "v0", "skip_copy": "on"}),
            INVALID_PARAMS,
            "",
        ),
        (
            "volume_set",
            json!({"dg": "bdg", "name": "v0", "colour": "blue"}),
            INVALID_PARAMS,
            "colour",
        ),
        ("task_wait", json!({"id": 4242}), ENOENT, "4242"),
        ("task_wait", json!({"id": "one"}), INVALID_PARAMS, ""),
    ];
    for (method, params, code, needle) in cases {
        refused(&plexd, &files, &DISKS, method, params, code, needle);
    }
}

#[test]
fn failed_dg_create_leaves_the_other_disks_alone() {
    let (files, plexd) = group_env();
    // 2 MiB: too small for the 4 MiB private region.
    plexd.call(
        "bdev_malloc_create",
        json!({"name": "tiny", "num_blocks": 4096, "block_size": 512}),
    );
    refused(
        &plexd,
        &files,
        &DISKS,
        "dg_create",
        json!({"name": "ng", "disks": ["tiny"]}),
        EINVAL,
        "small",
    );
    // x0 comes first and is fine; the group as a whole cannot be made, so x0 is not touched.
    refused(
        &plexd,
        &files,
        &DISKS,
        "dg_create",
        json!({"name": "ng", "disks": ["x0", "tiny"]}),
        EINVAL,
        "small",
    );
    refused(
        &plexd,
        &files,
        &DISKS,
        "dg_add_disk",
        json!({"dg": "bdg", "disk": "tiny"}),
        EINVAL,
        "small",
    );
}

#[test]
fn exported_volume_cannot_be_stopped_deleted_or_deported() {
    let (files, plexd) = group_env();
    let mut c = files.export(&plexd, "ev", "bdg/v0");
    let data = data_pattern(5, 64 << 10);
    c.write_read_check(100, &data)
        .unwrap_or_else(|e| panic!("exported volume: {e}"));
    for (method, params) in [
        ("volume_delete", json!({"dg": "bdg", "name": "v0"})),
        ("volume_stop", json!({"dg": "bdg", "name": "v0"})),
        ("dg_deport", json!({"name": "bdg"})),
    ] {
        refused(&plexd, &files, &DISKS, method, params, EBUSY, "in use");
    }
    // The guest never noticed.
    let mut r = vec![0u8; data.len()];
    let (st, _) = c.io(VIRTIO_BLK_T_IN, 100, &mut r).expect("read");
    assert_eq!(st, VIRTIO_BLK_S_OK);
    assert!(r == data, "the exported volume's data changed");
    c.write_read_check(200, &data)
        .unwrap_or_else(|e| panic!("exported volume after the refusals: {e}"));

    // Released, the same requests succeed: it was the export that blocked them.
    files.unexport(&plexd, "ev", c);
    plexd.call("volume_stop", json!({"dg": "bdg", "name": "v0"}));
    plexd.call("volume_delete", json!({"dg": "bdg", "name": "v0"}));
    assert_eq!(plexd.call("volume_list", json!({"dg": "bdg"})), json!([]));
    assert!(!plexd.names().iter().any(|n| n == "bdg/v0"));
}

#[test]
fn disk_of_another_group_is_refused() {
    let (files, plexd) = group_env();
    plexd.call("dg_create", json!({"name": "g2", "disks": ["x0"]}));
    let cases: Vec<(&str, Value)> = vec![
        ("dg_create", json!({"name": "g3", "disks": ["b0"]})),
        ("dg_create", json!({"name": "g3", "disks": ["x0"]})),
        ("dg_add_disk", json!({"dg": "bdg", "disk": "x0"})),
        ("dg_add_disk", json!({"dg": "g2", "disk": "b1"})),
        ("dg_add_disk", json!({"dg": "bdg", "disk": "b2"})),
    ];
    for (method, params) in cases {
        refused(&plexd, &files, &DISKS, method, params, EBUSY, "disk group");
    }
    // A deported group's disk is unclaimed but still belongs to it: refused without force.
    plexd.call("dg_deport", json!({"name": "g2"}));
    refused(
        &plexd,
        &files,
        &DISKS,
        "dg_create",
        json!({"name": "g3", "disks": ["x0"]}),
        EBUSY,
        "g2",
    );
    refused(
        &plexd,
        &files,
        &DISKS,
        "dg_add_disk",
        json!({"dg": "bdg", "disk": "x0"}),
        EBUSY,
        "g2",
    );
}

#[test]
fn foreign_label_is_overwritten_only_with_force() {
    let files = Files::new();
    // Something else's data where the label would go (not a PLEXDVM label, not zeros).
    files.create("y0", &data_pattern(99, 1 << 20));
    // And a PLEXDVM label whose checksum is wrong (a damaged disk, not ours to guess about).
    let mut bad = vec![0u8; 8192];
    bad[..8].copy_from_slice(b"PLEXDVM\0");
    bad[8..12].copy_from_slice(&1u32.to_le_bytes());
    bad[12..16].copy_from_slice(&4096u32.to_le_bytes());
    bad[4096..4104].copy_from_slice(b"PLEXDVM\0");
    files.create("y1", &bad);
    files.create("y2", &[]);
    let plexd = files.plexd(None);
    let disks = ["y0", "y1", "y2"];
    for d in disks {
        plexd.call("bdev_aio_create", files.aio(d));
    }
    refused(
        &plexd,
        &files,
        &disks,
        "dg_create",
        json!({"name": "fg", "disks": ["y0"]}),
        EBUSY,
        "force",
    );
    refused(
        &plexd,
        &files,
        &disks,
        "dg_create",
        json!({"name": "fg", "disks": ["y1"]}),
        EBUSY,
        "force",
    );
    // One bad disk in the list refuses the whole group, the blank one included.
    refused(
        &plexd,
        &files,
        &disks,
        "dg_create",
        json!({"name": "fg", "disks": ["y2", "y0"]}),
        EBUSY,
        "force",
    );
    plexd.call("dg_create", json!({"name": "fg", "disks": ["y2"]}));
    refused(
        &plexd,
        &files,
        &disks,
        "dg_add_disk",
        json!({"dg": "fg", "disk": "y0"}),
        EBUSY,
        "force",
    );

    plexd.call(
        "dg_create",
        json!({"name": "ff", "disks": ["y0", "y1"], "force": true}),
    );
    let g = plexd.call("dg_list", json!({"name": "ff"}));
    assert_eq!(g[0]["disks"], json!(["disk01", "disk02"]), "{g}");
    assert_eq!(
        &files.private_region("y0")[..8],
        b"PLEXDVM\0",
        "y0 now carries a label"
    );
    plexd.call(
        "volume_create",
        json!({"dg": "ff", "name": "fv", "size": "4M", "layout": "mirror"}),
    );
    let mut c = files.export(&plexd, "fv", "ff/fv");
    c.write_read_check(0, &data_pattern(3, 4096))
        .unwrap_or_else(|e| panic!("volume on the forced disks: {e}"));
}

/// A two-disk mirror group `cdg` (c0, c1) with data, left by a clean SIGTERM; returns the
/// files, the config recreating the bdevs, and the data.
fn stopped_mirror_group() -> (Files, PathBuf, Vec<u8>) {
    let files = Files::new();
    let mut entries = Vec::new();
    for d in ["c0", "c1"] {
        files.create(d, &[]);
        entries.push(json!({"method": "bdev_aio_create", "params": files.aio(d)}));
    }
    let cfg = write_bdev_config(files.dir.path(), "bdevs.json", &entries);
    let mut plexd = files.plexd(Some(&cfg));
    plexd.call("dg_create", json!({"name": "cdg", "disks": ["c0", "c1"]}));
    plexd.call(
        "volume_create",
        json!({"dg": "cdg", "name": "m", "size": "8M", "layout": "mirror"}),
    );
    let disks = plexd.call("disk_list", json!({"dg": "cdg"}));
    assert_eq!(disks[0]["device"], "c0", "{disks}");
    let mut c = files.export(&plexd, "cm", "cdg/m");
    let data = data_pattern(11, 256 << 10);
    let mut w = data.clone();
    let (st, _) = c.io(VIRTIO_BLK_T_OUT, 2048, &mut w).expect("write");
    assert_eq!(st, VIRTIO_BLK_S_OK);
    files.unexport(&plexd, "cm", c);
    assert_eq!(plexd.stop(libc::SIGTERM), Some(0));
    (files, cfg, data)
}

fn read_back(files: &Files, plexd: &Plexd, data: &[u8], what: &str) {
    let mut c = files.export(plexd, "cm", "cdg/m");
    let mut r = vec![0u8; data.len()];
    let (st, _) = c.io(VIRTIO_BLK_T_IN, 2048, &mut r).expect("read");
    assert_eq!(st, VIRTIO_BLK_S_OK, "{what}: read status");
    assert!(r == data, "{what}: the volume's data changed");
}

#[test]
fn corrupt_label_at_import_leaves_the_disk_nodevice() {
    let (files, cfg, data) = stopped_mirror_group();
    // Both label copies of c0 (disk01) destroyed while plexd is down.
    files.scribble("c0", 0, &data_pattern(13, 8192));

    let plexd = files.plexd(Some(&cfg));
    let g = plexd.call("dg_list", json!({}));
    assert_eq!(g[0]["name"], "cdg", "imported from c1 alone: {g}");
    let disks = plexd.call("disk_list", json!({"dg": "cdg"}));
    let d = disks.as_array().expect("disks");
    assert_eq!(d.len(), 2, "{disks}");
    assert_eq!(d[0]["name"], "disk01");
    assert_eq!(d[0]["condition"], "NODEVICE", "{disks}");
    assert_eq!(d[0]["device"], Value::Null, "{disks}");
    assert_eq!(d[1]["condition"], "OK", "{disks}");
    assert_eq!(d[1]["device"], "c1", "{disks}");
    let print = plexd.call("vm_print", json!({"dg": "cdg"}));
    let dm = print
        .as_str()
        .expect("vm_print text")
        .lines()
        .find(|l| l.starts_with("dm disk01"))
        .unwrap_or_else(|| panic!("no dm line for disk01: {print}"))
        .to_string();
    assert!(dm.contains("NODEVICE"), "vm_print: {dm}");

    let v = &plexd.call("volume_list", json!({"dg": "cdg", "name": "m"}))[0];
    assert_eq!(v["started"], true, "{v}");
    assert_eq!(v["state"], "ACTIVE", "{v}");
    for p in v["plexes"].as_array().expect("plexes") {
        let on_c0 = p["subdisks"][0]["disk"] == "disk01";
        let want = if on_c0 {
            ("STALE", "DETACHED")
        } else {
            ("ACTIVE", "ENABLED")
        };
        assert_eq!(
            (p["state"].as_str(), p["kstate"].as_str()),
            (Some(want.0), Some(want.1)),
            "plex {}: {p}",
            p["name"]
        );
    }
    read_back(&files, &plexd, &data, "served by the surviving mirror");
    // Nothing wrote to the unrecognised disk's label area behind the administrator's back.
    assert_eq!(
        &files.private_region("c0")[..8192],
        data_pattern(13, 8192).as_slice()
    );
}

#[test]
fn corrupt_primary_label_is_repaired_from_the_backup() {
    let (files, cfg, data) = stopped_mirror_group();
    files.scribble("c0", 0, &data_pattern(17, 4096));

    let plexd = files.plexd(Some(&cfg));
    let disks = plexd.call("disk_list", json!({"dg": "cdg"}));
    for d in disks.as_array().expect("disks") {
        assert_eq!(
            d["condition"], "OK",
            "the backup label still names c0: {disks}"
        );
    }
    let v = &plexd.call("volume_list", json!({"dg": "cdg", "name": "m"}))[0];
    for p in v["plexes"].as_array().expect("plexes") {
        assert_eq!(p["state"], "ACTIVE", "{v}");
    }
    assert_eq!(
        plexd.call("task_list", json!({})),
        json!([]),
        "clean volume: no resync"
    );
    read_back(
        &files,
        &plexd,
        &data,
        "after the primary label was destroyed",
    );
    let region = files.private_region("c0");
    assert_eq!(
        region[..4096],
        region[4096..8192],
        "the import rewrote the primary label from the backup"
    );
}
