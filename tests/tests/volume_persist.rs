//! Volumes outlive the process: a disk group's configuration lives on its disks, so a plexd
//! restarted on the same file bdevs finds the same volumes with the same data.
//!
//! - After SIGKILL, every volume comes back with the same objects (names, sizes, uuids,
//!   plexes, subdisks) and data; mirrored volumes, which were ACTIVE (dirty) at the kill, are
//!   resynced (a `resync` task each), the others are not.
//! - After SIGTERM, the newest configuration copy on the disks records every volume CLEAN;
//!   the restart brings them back ACTIVE with no resync at all.
//! - A deported group moves to another plexd with `dg_import`, data intact; a deported group
//!   is not imported behind the administrator's back when a plexd starts (VxVM's rule).
//! - A config saved with `plexctl save-config` while volumes are exported brings plexd back
//!   with the exports.
//! - A group holding a stripe-mirror (layered) volume deports after a restart from its saved
//!   config (the volume's columns go with it) and imports again with the data intact.
//! - A raid5f made with SPDK's `bdev_raid_create` comes back from the saved config after
//!   SIGKILL: re-assembled from its base bdevs with its uuid, shape and data.
//!
//! Data goes through the real vhost-user-blk path (`plexd_tests::vhost_client`); the disks
//! are aio bdevs on 64 MiB files in a temporary directory.

use std::collections::BTreeMap;
use std::path::Path;

use plexd_tests::rig::{
    check_patterns, newest_config_on_disk, tasks_of, volume_states, volumes_sans_state,
    write_patterns, Rig, Written, SECTOR,
};
use plexd_tests::Plexd;
use serde_json::{json, Value};

const VOL_BYTES: u64 = 8 << 20;

const DISKS: [&str; 4] = ["d0", "d1", "d2", "d3"];
/// (volume, layout, vhost controller).
const VOLUMES: [(&str, &str, &str); 4] = [
    ("cat", "concat", "vcat"),
    ("str", "stripe", "vstr"),
    ("mir", "mirror", "vmir"),
    ("mst", "mirror-stripe", "vmst"),
];

/// Creates group `pdg` on the rig's disks with one volume of each layout, exports them and
/// writes distinct data to each; returns what was written, by volume.
fn populate(rig: &Rig, plexd: &Plexd) -> BTreeMap<String, Written> {
    plexd.call("dg_create", json!({"name": "pdg", "disks": DISKS}));
    let mut written = BTreeMap::new();
    for (i, (name, layout, ctrlr)) in VOLUMES.iter().enumerate() {
        let bdev = plexd.call(
            "volume_create",
            json!({"dg": "pdg", "name": name, "size": VOL_BYTES, "layout": layout}),
        );
        assert_eq!(bdev, json!(format!("pdg/{name}")));
        let mut c = rig.export(plexd, ctrlr, &format!("pdg/{name}"));
        let w = write_patterns(&mut c, i as u64 + 1, VOL_BYTES);
        check_patterns(&mut c, &format!("{name} before the restart"), &w);
        written.insert(name.to_string(), w);
    }
    written
}

/// Exports every volume again and checks its data.
fn check_all(rig: &Rig, plexd: &Plexd, written: &BTreeMap<String, Written>, when: &str) {
    for (name, _, ctrlr) in VOLUMES {
        let mut c = rig.export(plexd, ctrlr, &format!("pdg/{name}"));
        check_patterns(&mut c, &format!("{name} {when}"), &written[name]);
        rig.unexport(plexd, ctrlr, c);
    }
}

/// Both plexes of the mirror volume hold the volume's data byte for byte: read them from the
/// disk files at the subdisks' offsets.
fn check_mirror_plexes_equal(rig: &Rig, plexd: &Plexd, written: &Written) {
    let v = &plexd.call("volume_list", json!({"dg": "pdg", "name": "mir"}))[0];
    let disks: BTreeMap<String, u64> = plexd
        .call("disk_list", json!({"dg": "pdg"}))
        .as_array()
        .expect("disk_list")
        .iter()
        .map(|d| {
            (
                d["name"].as_str().expect("disk name").to_string(),
                d["public_offset_blocks"].as_u64().expect("public offset"),
            )
        })
        .collect();
    let plexes = v["plexes"].as_array().expect("plexes");
    assert_eq!(plexes.len(), 2, "mirror volume has two plexes: {v}");
    for p in plexes {
        let sds = p["subdisks"].as_array().expect("subdisks");
        assert_eq!(sds.len(), 1, "8 MiB plex on one subdisk: {p}");
        let sd = &sds[0];
        let file = rig.file(sd["device"].as_str().expect("subdisk device"));
        let start = (disks[sd["disk"].as_str().expect("disk")]
            + sd["disk_offset"].as_u64().expect("offset"))
            * SECTOR;
        let bytes = std::fs::read(&file).expect("read disk file");
        for (s, data) in written {
            let at = (start + s * SECTOR) as usize;
            assert!(
                &bytes[at..at + data.len()] == data.as_slice(),
                "plex {} on {}: sector {s} does not hold the volume's data",
                p["name"],
                file.display()
            );
        }
    }
}

#[test]
fn volumes_and_data_survive_sigkill_and_sigterm() {
    let rig = Rig::new(&DISKS);
    let mut first = rig.start();
    let written = populate(&rig, &first);
    let before = volumes_sans_state(&first, "pdg");
    assert_eq!(before.len(), 4, "four volumes: {before:?}");
    for (name, v) in &before {
        assert_eq!(v["num_blocks"], json!(VOL_BYTES / SECTOR), "{name}: {v}");
        assert_eq!(v["started"], json!(true), "{name}: {v}");
    }
    assert_eq!(
        volume_states(&first, "pdg").values().collect::<Vec<_>>(),
        ["ACTIVE"; 4],
        "every started volume is recorded ACTIVE"
    );
    // ... and on the disks, so a crash is noticed at the next import.
    for d in DISKS {
        let cfg = newest_config_on_disk(&rig.file(d));
        for v in cfg["volumes"].as_array().expect("volumes in config") {
            assert_eq!(
                v["state"], "ACTIVE",
                "{d}: started volume {} is recorded {} on disk",
                v["name"], v["state"]
            );
        }
    }
    let dg_before = first.call("dg_list", json!({}));

    // Crash: nothing is stopped cleanly.
    first.stop(libc::SIGKILL);
    drop(first);

    let mut second = rig.start();
    let dg_after = second.call("dg_list", json!({}));
    assert_eq!(
        dg_after[0]["name"], "pdg",
        "group imported at start: {dg_after}"
    );
    assert_eq!(dg_after[0]["id"], dg_before[0]["id"], "same group");
    assert_eq!(dg_after[0]["disks"], dg_before[0]["disks"]);
    assert_eq!(dg_after[0]["volumes"], dg_before[0]["volumes"]);
    let after = volumes_sans_state(&second, "pdg");
    assert_eq!(
        after, before,
        "the volumes' objects changed across SIGKILL + restart"
    );
    for (name, st) in volume_states(&second, "pdg") {
        let ok: &[&str] = if name.starts_with('m') {
            &["SYNC", "ACTIVE"]
        } else {
            &["ACTIVE"]
        };
        assert!(
            ok.contains(&st.as_str()),
            "{name} is {st} after a crash; expected one of {ok:?}"
        );
    }
    let resyncs = tasks_of(&second, "resync");
    assert_eq!(
        resyncs.keys().collect::<Vec<_>>(),
        ["mir", "mst"],
        "exactly the mirrored volumes, dirty at the crash, are resynced"
    );
    for (vol, id) in &resyncs {
        let t = second.call("task_wait", json!({"id": id, "timeout_ms": 30000}));
        assert_eq!(t["state"], "done", "resync of {vol}: {t}");
        assert_eq!(t["dg"], "pdg");
    }
    assert_eq!(
        volume_states(&second, "pdg").values().collect::<Vec<_>>(),
        ["ACTIVE"; 4],
        "every volume ACTIVE once the resyncs are done"
    );
    check_all(&rig, &second, &written, "after SIGKILL + restart");
    check_mirror_plexes_equal(&rig, &second, &written["mir"]);

    // Clean stop: the volumes are recorded CLEAN on the disks.
    assert_eq!(second.stop(libc::SIGTERM), Some(0), "clean exit");
    drop(second);
    for d in DISKS {
        let cfg = newest_config_on_disk(&rig.file(d));
        let vols = cfg["volumes"].as_array().expect("volumes in config");
        assert_eq!(vols.len(), 4, "{d}: {cfg}");
        for v in vols {
            assert_eq!(
                v["state"], "CLEAN",
                "{d}: after SIGTERM volume {} is recorded {}",
                v["name"], v["state"]
            );
        }
    }

    let third = rig.start();
    assert_eq!(
        volumes_sans_state(&third, "pdg"),
        before,
        "the volumes' objects changed across SIGTERM + restart"
    );
    assert_eq!(
        volume_states(&third, "pdg").values().collect::<Vec<_>>(),
        ["ACTIVE"; 4],
        "clean volumes start ACTIVE"
    );
    let tasks = third.call("task_list", json!({}));
    assert_eq!(
        tasks,
        json!([]),
        "no resync after a clean shutdown: {tasks}"
    );
    check_all(&rig, &third, &written, "after SIGTERM + restart");
}

/// Group `mdg`: one mirror volume on two disks, with data; exported on `ctrlr` meanwhile.
fn deportable_group(rig: &Rig, plexd: &Plexd) -> Written {
    plexd.call("dg_create", json!({"name": "mdg", "disks": ["d0", "d1"]}));
    plexd.call(
        "volume_create",
        json!({"dg": "mdg", "name": "m", "size": VOL_BYTES, "layout": "mirror"}),
    );
    let mut c = rig.export(plexd, "vm", "mdg/m");
    let w = write_patterns(&mut c, 7, VOL_BYTES);
    // Deport refuses an exported volume (checked in volume_bad_input); release it.
    rig.unexport(plexd, "vm", c);
    w
}

#[test]
fn deported_group_moves_to_another_plexd() {
    let rig = Rig::new(&["d0", "d1"]);
    let mut first = rig.start();
    let written = deportable_group(&rig, &first);
    let objects = first.call("volume_list", json!({"dg": "mdg"}));
    let id = first.call("dg_list", json!({}))[0]["id"].clone();

    first.call("dg_deport", json!({"name": "mdg"}));
    assert_eq!(first.call("dg_list", json!({})), json!([]), "deported");
    assert!(
        !first.names().iter().any(|n| n == "mdg/m"),
        "the deported group's volume is gone: {:?}",
        first.names()
    );
    // Its disks are free for another owner (here: a claim by this plexd's vhost).
    first.call(
        "vhost_create_blk_controller",
        json!({"ctrlr": "raw", "dev_name": "d0"}),
    );
    first.call("vhost_delete_controller", json!({"ctrlr": "raw"}));
    assert_eq!(first.stop(libc::SIGTERM), Some(0));
    drop(first);

    // A second plexd, with the bdevs created after start-up: nothing is imported until asked.
    let second = rig.start_bare();
    for d in ["d0", "d1"] {
        second.call(
            "bdev_aio_create",
            json!({"name": d, "filename": rig.file(d), "block_size": 512}),
        );
    }
    assert_eq!(second.call("dg_list", json!({})), json!([]));
    let imported = second.call("dg_import", json!({"name": "mdg"}));
    assert_eq!(imported, json!(["mdg"]));
    let dg = &second.call("dg_list", json!({}))[0];
    assert_eq!(dg["id"], id, "the same group: {dg}");
    let disks = second.call("disk_list", json!({"dg": "mdg"}));
    for d in disks.as_array().expect("disks") {
        assert_eq!(d["condition"], "OK", "{d}");
    }
    let v = &second.call("volume_list", json!({"dg": "mdg", "name": "m"}))[0];
    if v["started"] != json!(true) {
        // Deport stopped the volume; as with VxVM, it is started after the import.
        second.call("volume_start", json!({"dg": "mdg", "name": "m"}));
    }
    let mut now = second.call("volume_list", json!({"dg": "mdg"}));
    let mut then = objects.clone();
    for l in [&mut now, &mut then] {
        for v in l.as_array_mut().expect("volumes") {
            v.as_object_mut().expect("volume").remove("state");
        }
    }
    assert_eq!(
        now, then,
        "the volume's objects changed across deport/import"
    );
    assert_eq!(
        second.call("volume_list", json!({"dg": "mdg", "name": "m"}))[0]["state"],
        "ACTIVE"
    );
    assert_eq!(
        tasks_of(&second, "resync"),
        BTreeMap::new(),
        "a deported volume was stopped cleanly: no resync"
    );
    let mut c = rig.export(&second, "vm", "mdg/m");
    check_patterns(&mut c, "after deport + import", &written);
}

#[test]
fn deported_group_is_not_imported_at_start_up() {
    let rig = Rig::new(&["d0", "d1"]);
    let mut first = rig.start();
    let written = deportable_group(&rig, &first);
    first.call("dg_deport", json!({"name": "mdg"}));
    assert_eq!(first.stop(libc::SIGTERM), Some(0));
    drop(first);

    // Started on the same disks, plexd must leave the deported group alone (VxVM: a deported
    // group is imported only by an explicit `vxdg import <name>`; it may be meant for
    // another host).
    let second = rig.start();
    assert_eq!(
        second.call("dg_list", json!({})),
        json!([]),
        "a deported group was imported at start-up"
    );
    assert!(
        !second.names().iter().any(|n| n == "mdg/m"),
        "a deported group's volume was started: {:?}",
        second.names()
    );
    // An import of everything found (no name) leaves it alone too; by name it comes back.
    assert_eq!(second.call("dg_import", json!({})), json!([]));
    assert_eq!(
        second.call("dg_import", json!({"name": "mdg"})),
        json!(["mdg"])
    );
    let v = &second.call("volume_list", json!({"dg": "mdg", "name": "m"}))[0];
    if v["started"] != json!(true) {
        second.call("volume_start", json!({"dg": "mdg", "name": "m"}));
    }
    let mut c = rig.export(&second, "vm", "mdg/m");
    check_patterns(&mut c, "after deport + restart + import", &written);
}

#[test]
fn saved_config_with_exported_volumes_restarts() {
    let rig = Rig::new(&["d0", "d1"]);
    let mut first = rig.start();
    first.call("dg_create", json!({"name": "sdg", "disks": ["d0", "d1"]}));
    first.call(
        "volume_create",
        json!({"dg": "sdg", "name": "s", "size": VOL_BYTES, "layout": "stripe"}),
    );
    let mut c = rig.export(&first, "vs", "sdg/s");
    let written = write_patterns(&mut c, 9, VOL_BYTES);
    drop(c);
    // What an operator does to make the running setup the boot config.
    let out = first.plexctl(&["save-config"]);
    assert!(out.status.success(), "plexctl save-config: {out:?}");
    let saved: Value = serde_json::from_slice(&out.stdout).expect("save-config prints JSON");
    assert!(
        saved.to_string().contains("sdg/s"),
        "the saved config holds the volume's export: {saved}"
    );
    let cfg = rig.dir.path().join("saved.json");
    std::fs::write(&cfg, &out.stdout).expect("write the saved config");
    first.stop(libc::SIGKILL);
    drop(first);

    let second = rig.start_with_config(&cfg);
    let ctrls = second.call("vhost_get_controllers", json!({}));
    assert!(
        ctrls
            .as_array()
            .expect("controllers")
            .iter()
            .any(|c| c["ctrlr"] == "vs"),
        "the export of sdg/s did not come back: {ctrls}"
    );
    let mut c = rig.connect("vs");
    check_patterns(&mut c, "after restart from the saved config", &written);
}

/// Starts plexd from `cfg`, deports group `ldg` (stripe-mirror volume `vsm`), imports it again
/// and checks objects and data; stops plexd with SIGTERM.
fn deport_and_import_stripe_mirror(rig: &Rig, cfg: &Path, written: &Written, when: &str) {
    let mut plexd = rig.start_with_config(cfg);
    assert!(
        plexd.names().iter().any(|n| n == "ldg/vsm"),
        "{when}: the stripe-mirror volume did not start at import: {:?}",
        plexd.names()
    );
    let objects = plexd.call("volume_list", json!({"dg": "ldg"}));
    let r = plexd
        .client()
        .call("dg_deport", Some(json!({"name": "ldg"})));
    assert!(
        r.is_ok(),
        "{when}: dg_deport of a group with a stripe-mirror volume: {r:?}"
    );
    assert_eq!(plexd.call("dg_list", json!({})), json!([]), "deported");
    for n in ["ldg/vsm", "ldg/vsm-L01", "ldg/vsm-L02"] {
        assert!(
            !plexd.names().iter().any(|b| b == n),
            "{when}: {n} still registered after the deport: {:?}",
            plexd.names()
        );
    }
    assert_eq!(
        plexd.call("dg_import", json!({"name": "ldg"})),
        json!(["ldg"])
    );
    let v = &plexd.call("volume_list", json!({"dg": "ldg", "name": "vsm"}))[0];
    if v["started"] != json!(true) {
        plexd.call("volume_start", json!({"dg": "ldg", "name": "vsm"}));
    }
    let mut now = plexd.call("volume_list", json!({"dg": "ldg"}));
    let mut then = objects;
    for l in [&mut now, &mut then] {
        for v in l.as_array_mut().expect("volumes") {
            // After a SIGKILL the columns resync: their state and progress move on.
            let v = v.as_object_mut().expect("volume");
            v.remove("state");
            v.remove("resync_offset");
        }
    }
    assert_eq!(
        now, then,
        "{when}: the objects changed across deport/import"
    );
    let mut c = rig.export(&plexd, "vl", "ldg/vsm");
    check_patterns(&mut c, when, written);
    rig.unexport(&plexd, "vl", c);
    assert_eq!(plexd.stop(libc::SIGTERM), Some(0));
}

/// A group with a stripe-mirror volume deports after plexd restarts from its saved config,
/// after a SIGKILL (the columns resync meanwhile) and after a SIGTERM.
#[test]
fn stripe_mirror_group_deports_after_restart_from_saved_config() {
    let rig = Rig::new(&["d0", "d1", "d2", "d3"]);
    let mut first = rig.start();
    first.call(
        "dg_create",
        json!({"name": "ldg", "disks": ["d0", "d1", "d2", "d3"]}),
    );
    first.call(
        "volume_create",
        json!({"dg": "ldg", "name": "vsm", "size": VOL_BYTES, "layout": "stripe-mirror",
               "ncol": 2}),
    );
    let mut c = rig.export(&first, "vl", "ldg/vsm");
    let written = write_patterns(&mut c, 11, VOL_BYTES);
    rig.unexport(&first, "vl", c);
    let out = first.plexctl(&["save-config"]);
    assert!(out.status.success(), "plexctl save-config: {out:?}");
    let cfg = rig.dir.path().join("saved.json");
    std::fs::write(&cfg, &out.stdout).expect("write the saved config");
    first.stop(libc::SIGKILL);
    drop(first);
    deport_and_import_stripe_mirror(&rig, &cfg, &written, "after SIGKILL and restart");
    deport_and_import_stripe_mirror(&rig, &cfg, &written, "after SIGTERM and restart");
}

/// A raid5f (SPDK's `bdev_raid_create`, plexd's RAID-5 engine) exported and written with
/// partial-stripe writes comes back from `plexctl save-config` after SIGKILL: the config's
/// `bdev_raid_create` re-assembles it from the labels on its base bdevs (not formatting
/// them), with the same uuid, size, `bdev_raid_get_bdevs` entry, export and data.
#[test]
fn raid5f_restarts_from_its_saved_config() {
    let rig = Rig::new(&["b0", "b1", "b2", "b3"]);
    let mut first = rig.start();
    first.call(
        "bdev_raid_create",
        json!({"name": "R5", "raid_level": "raid5f", "strip_size_kb": 64,
               "base_bdevs": ["b0", "b1", "b2", "b3"]}),
    );
    let before = first.call("bdev_raid_get_bdevs", json!({"category": "all"}));
    assert_eq!(before[0]["raid_level"], "raid5f", "{before}");
    assert_eq!(before[0]["num_base_bdevs_operational"], 4, "{before}");
    let bdev = first.call("bdev_get_bdevs", json!({"name": "R5"}));
    let bytes = bdev[0]["num_blocks"].as_u64().expect("num_blocks") * SECTOR;
    // 3 data columns of each 64 MiB file's 60 MiB data area.
    assert_eq!(bytes, 3 * (60 << 20), "{bdev}");
    // 192 KiB writes at unaligned places: each covers parts of two stripes.
    let mut c = rig.export(&first, "v5", "R5");
    let written = write_patterns(&mut c, 11, bytes);
    drop(c);
    let out = first.plexctl(&["save-config"]);
    assert!(out.status.success(), "plexctl save-config: {out:?}");
    let saved: Value = serde_json::from_slice(&out.stdout).expect("save-config prints JSON");
    let create = saved["subsystems"]
        .as_array()
        .expect("subsystems")
        .iter()
        .filter_map(|sub| sub["config"].as_array())
        .flatten()
        .find(|c| c["method"] == "bdev_raid_create")
        .unwrap_or_else(|| panic!("no bdev_raid_create in the saved config: {saved}"));
    assert_eq!(create["params"]["raid_level"], "raid5f", "{create}");
    assert_eq!(create["params"]["strip_size_kb"], 64, "{create}");
    let cfg = rig.dir.path().join("saved.json");
    std::fs::write(&cfg, &out.stdout).expect("write the saved config");
    first.stop(libc::SIGKILL);
    drop(first);

    let second = rig.start_with_config(&cfg);
    let after = second.call("bdev_raid_get_bdevs", json!({"category": "all"}));
    assert_eq!(
        after, before,
        "bdev_raid_get_bdevs changed across the restart"
    );
    let bdev_after = second.call("bdev_get_bdevs", json!({"name": "R5"}));
    assert_eq!(bdev_after[0]["uuid"], bdev[0]["uuid"], "{bdev_after}");
    assert_eq!(bdev_after[0]["num_blocks"], bdev[0]["num_blocks"]);
    let mut c = rig.connect("v5");
    check_patterns(
        &mut c,
        "raid5f after restart from the saved config",
        &written,
    );
}
