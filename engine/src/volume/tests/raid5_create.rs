//! RAID-5 volumes on the control side: `volume_create` layout `raid5` (one RAID-5 plex, its
//! columns on distinct disks, zeroed), how `vm_print` and `volume_list` show it, bad input
//! refused with nothing changed, and the operations refused on RAID-5 volumes. The data path
//! has its own tests.

use std::collections::BTreeSet;
use std::time::Duration;

use super::*;
use crate::volume::error::VolumeError;
use crate::volume::model::objects::{DgConfig, KernelState, PlexLayout, PlexState};

fn raid5(name: &str, size: u64) -> VolumeCreate {
    VolumeCreate {
        dg: "dg01".into(),
        name: name.into(),
        size,
        layout: "raid5".into(),
        ..Default::default()
    }
}

/// Group dg01 on four 16 MiB RAM disks (12 MiB public each) that were full of a pattern
/// (forced over it), so zeroing shows.
fn group_of_four(e: &Engine, vm: &VolumeManager) -> Vec<String> {
    let d = disks(e, 4, 16);
    for (i, name) in d.iter().enumerate() {
        let b = e.bdevs().get(name).unwrap();
        write(e, &b, 0, &pattern(i as u64 + 1, 16 << 20)).unwrap();
    }
    vm.dg_create("dg01", &d, true).unwrap();
    d
}

/// The columns of plex `plex`: each column's disks and total length.
fn columns(cfg: &DgConfig, plex: &str) -> Vec<(BTreeSet<String>, u64)> {
    let mut cols: Vec<(BTreeSet<String>, u64)> = Vec::new();
    for s in cfg.subdisks_of(plex) {
        let c = s.column as usize;
        if cols.len() <= c {
            cols.resize(c + 1, (BTreeSet::new(), 0));
        }
        cols[c].0.insert(s.disk.clone());
        cols[c].1 += s.len;
    }
    cols
}

/// The `vm_print` line starting with `prefix`, split in columns.
fn row(listing: &str, prefix: &str) -> Vec<String> {
    listing
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line '{prefix}' in\n{listing}"))
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// Commits `change` to dg01's configuration (what a failure or a rebuild would record).
fn record(vm: &VolumeManager, change: impl FnOnce(&mut DgConfig)) {
    let mut groups = vm.lock();
    let g = groups.get_mut("dg01").unwrap();
    let mut cfg = g.cfg.clone();
    change(&mut cfg);
    g.commit(vm.engine(), cfg).unwrap();
}

/// 3 MiB + 512 bytes on 4 disks: one RAID-5 plex of 4 columns (the default: one per usable
/// disk), each on its own disk, each 65 stripe units of 16 KiB (the default) long, which hold
/// 3 × 65 × 32 = 6240 blocks of data ≥ the volume's 6145; every subdisk zeroed (zeroes are
/// their own parity); the bdev as long as asked (not the plex's capacity). The configuration
/// survives a crash and re-import, and the volume stops, starts and is deleted like others.
#[test]
fn raid5_volume_is_one_plex_of_columns_on_distinct_disks() {
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    group_of_four(&e, &vm);
    let bdev = vm.volume_create(&raid5("r5", (3 << 20) + 512)).unwrap();
    assert_eq!(bdev, "dg01/r5");
    assert_eq!(e.bdevs().get(&bdev).unwrap().num_blocks(), 6145);
    let (cfg, _) = vm.config("dg01").unwrap();
    let v = cfg.volume("r5").unwrap();
    assert_eq!((v.len, v.layout.as_str()), (6145, "raid5"));
    let plexes = cfg.plexes_of("r5");
    assert_eq!(plexes.len(), 1, "a RAID-5 volume has one plex");
    let p = plexes[0];
    assert_eq!(
        p.layout,
        PlexLayout::Raid5 {
            ncol: 4,
            stripe_unit: 32
        }
    );
    assert_eq!(
        (p.state, p.kstate),
        (PlexState::Active, KernelState::Enabled)
    );
    assert!(p.stale_columns.is_empty());
    let cols = columns(&cfg, &p.name);
    assert_eq!(cols.len(), 4);
    let mut seen = BTreeSet::new();
    for (c, (disks, len)) in cols.iter().enumerate() {
        assert_eq!(*len, 65 * 32, "column {c}");
        for d in disks {
            assert!(seen.insert(d.clone()), "disk {d} holds two columns");
        }
    }
    // Every subdisk reads as zeroes on its disk (the pattern is gone).
    for s in cfg.subdisks_of(&p.name) {
        let d = cfg.disk(&s.disk).unwrap();
        let b = e.bdevs().get(&d.device).unwrap();
        let raw = read(&e, &b, (d.public_offset + s.disk_offset) * 512, s.len * 512).unwrap();
        assert!(raw.iter().all(|&x| x == 0), "subdisk {} not zeroed", s.name);
    }

    // The configuration comes back from the disks as it was.
    vm.crash();
    let vm = VolumeManager::new(e.clone());
    vm.dg_import(Some("dg01"), None, None).unwrap();
    let (back, _) = vm.config("dg01").unwrap();
    assert_eq!(back.plexes_of("r5")[0].layout, p.layout);
    assert_eq!(columns(&back, &p.name), cols);
    assert!(vm.is_started("dg01", "r5"));
    // It crashed without a log: its parity is resynchronised first.
    wait_until("the parity resync", || !vm.tasks().busy("dg01", "r5"));
    vm.volume_stop("dg01", "r5").unwrap();
    assert_eq!(
        vm.config("dg01").unwrap().0.volume("r5").unwrap().state,
        crate::volume::model::objects::VolumeState::Clean
    );
    vm.volume_start("dg01", "r5").unwrap();
    assert!(e.bdevs().get("dg01/r5").is_ok());
    vm.volume_delete("dg01", "r5").unwrap();
    let (cfg, _) = vm.config("dg01").unwrap();
    assert!(cfg.subdisks.is_empty() && cfg.plexes.is_empty());
    vm.shutdown();
    e.shutdown();
}

/// `vm_print` shows a RAID-5 volume as `vxprint -ht` does: read policy RAID and usage type
/// raid5 on the `v` row, layout RAID with NCOL/WID and the data length (parity not counted)
/// on the `pl` row, `column/offset` on the `sd` rows; a column recorded stale makes the volume
/// DEGRADED and its subdisks `dS`. `volume_list` gives layout `raid`, the columns, the stripe
/// unit and the stale columns. Two stale columns are not "degraded" (the plex cannot serve).
#[test]
fn raid5_volume_in_vm_print_and_volume_list() {
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    group_of_four(&e, &vm);
    vm.volume_create(&VolumeCreate {
        ncol: Some(3),
        stripe_unit_kb: Some(32),
        ..raid5("r5", 1 << 20)
    })
    .unwrap();
    let listing = vm.vm_print(Some("dg01")).unwrap();
    assert_eq!(
        row(&listing, "v  r5 "),
        ["v", "r5", "-", "ENABLED", "ACTIVE", "2048", "RAID", "-", "raid5"]
    );
    // 1 MiB = 2048 blocks over 2 data columns of 64-block units: 16 rows, 2 × 16 × 64 of data.
    assert_eq!(
        row(&listing, "pl r5-01 "),
        ["pl", "r5-01", "r5", "ENABLED", "ACTIVE", "2048", "RAID", "3/64", "RW"]
    );
    let (cfg, _) = vm.config("dg01").unwrap();
    let sds = cfg.subdisks_of("r5-01");
    assert_eq!(sds.len(), 3);
    for s in &sds {
        let r = row(&listing, &format!("sd {} ", s.name));
        assert_eq!(r[2], "r5-01");
        assert_eq!(r[5], "1024", "{}", s.name);
        assert_eq!(r[6], format!("{}/0", s.column));
        assert_eq!(r[8], "ENA");
    }

    let list = vm.volume_list(Some("dg01"), Some("r5")).unwrap();
    let v = &list[0];
    assert_eq!(v.layout.get().map(String::as_str), Some("raid5"));
    assert_eq!(v.num_blocks.copied(), Some(2048));
    let plexes = v.plexes.get().unwrap();
    // The RAID-5 plex and its log (on the fourth disk, which no column uses).
    assert_eq!(plexes.len(), 2);
    assert_eq!(plexes[1].state.as_str(), "LOG");
    let log_disk = &plexes[1].subdisks[0].disk;
    assert!(plexes[0].subdisks.iter().all(|s| &s.disk != log_disk));
    let log_row = row(&listing, "pl r5-02 ");
    assert_eq!(
        log_row,
        [
            "pl",
            "r5-02",
            "r5",
            "ENABLED",
            "LOG",
            &(64 * (1 + 3 * 64)).to_string(),
            "CONCAT",
            "-",
            "RW"
        ],
        "{listing}"
    );
    let p = &plexes[0];
    assert_eq!(
        (p.layout.as_str(), p.ncol, p.stripe_unit_blocks),
        ("raid", 3, Some(64))
    );
    assert!(p.stale_columns.is_empty());
    assert_eq!(p.subdisks.len(), 3);
    let json = serde_json::to_value(&list).unwrap();
    assert!(json[0]["plexes"][0].get("stale_columns").is_none());

    // Column 1 recorded stale: degraded.
    record(&vm, |cfg| {
        cfg.plex_mut("r5-01").unwrap().stale_columns = vec![1]
    });
    let listing = vm.vm_print(Some("dg01")).unwrap();
    assert_eq!(row(&listing, "v  r5 ")[4], "DEGRADED", "{listing}");
    for s in &sds {
        let mode = &row(&listing, &format!("sd {} ", s.name))[8];
        let want = if s.column == 1 { "dS" } else { "ENA" };
        assert_eq!(mode, want, "{}", s.name);
    }
    let list = vm.volume_list(Some("dg01"), Some("r5")).unwrap();
    assert_eq!(list[0].plexes.get().unwrap()[0].stale_columns, [1]);
    let json = serde_json::to_value(&list).unwrap();
    assert_eq!(
        json[0]["plexes"][0]["stale_columns"],
        serde_json::json!([1])
    );
    // Two stale columns: not degraded but without its data; the volume shows its recorded
    // state, both columns' subdisks dS.
    record(&vm, |cfg| {
        cfg.plex_mut("r5-01").unwrap().stale_columns = vec![0, 2]
    });
    let listing = vm.vm_print(Some("dg01")).unwrap();
    assert_eq!(row(&listing, "v  r5 ")[4], "ACTIVE", "{listing}");
    for s in &sds {
        let mode = &row(&listing, &format!("sd {} ", s.name))[8];
        let want = if s.column == 1 { "ENA" } else { "dS" };
        assert_eq!(mode, want, "{}", s.name);
    }
    vm.shutdown();
    e.shutdown();
}

/// Checks that `req` is refused with an error containing `want` and changes nothing: the
/// configuration, its sequence number and the bdevs are as before.
fn refused(e: &Engine, vm: &VolumeManager, req: &VolumeCreate, want: &str) -> VolumeError {
    let before = vm.config(&req.dg).unwrap();
    let err = vm
        .volume_create(req)
        .expect_err(&format!("{req:?} was accepted"));
    assert!(
        err.to_string().contains(want),
        "{req:?}: '{err}' does not say '{want}'"
    );
    assert_eq!(
        vm.config(&req.dg).unwrap(),
        before,
        "{req:?} changed the group"
    );
    assert!(e.bdevs().get(&format!("{}/{}", req.dg, req.name)).is_err());
    err
}

/// Bad RAID-5 parameters get an error naming what is wrong, before anything is allocated or
/// recorded.
#[test]
fn bad_raid5_parameters_are_refused_and_change_nothing() {
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    group_of_four(&e, &vm);
    let bad = |change: fn(&mut VolumeCreate), want: &str| {
        let mut req = raid5("bad", 1 << 20);
        change(&mut req);
        refused(&e, &vm, &req, want)
    };
    let err = bad(|r| r.ncol = Some(2), "at least 3 columns");
    assert_eq!(err.errno(), libc::EINVAL);
    bad(|r| r.ncol = Some(5), "5 columns needs 5 disks");
    bad(|r| r.ncol = Some(5), "only 4 usable disk(s)");
    bad(|r| r.stripe_unit_kb = Some(3), "4 KiB to 1 MiB");
    bad(|r| r.stripe_unit_kb = Some(2048), "4 KiB to 1 MiB");
    bad(|r| r.stripe_unit_kb = Some(0), "4 KiB to 1 MiB");
    bad(|r| r.stripe_unit_kb = Some(12), "power of two");
    bad(|r| r.nmirror = Some(2), "not mirrored");
    bad(|r| r.read_policy = Some("round".into()), "read_policy");
    bad(
        |r| r.alloc = Some(vec!["disk01".into(), "M1".into()]),
        "the alloc list names only 2 usable disk(s)",
    );
    bad(
        |r| {
            r.alloc = Some(vec!["disk01".into(), "disk02".into(), "disk03".into()]);
            r.ncol = Some(4);
        },
        "4 columns needs 4 disks",
    );
    bad(
        |r| r.alloc = Some(vec!["nope".into()]),
        "'nope' is not a disk",
    );
    // Too large for the disks: ENOSPC, and the message names the layout.
    let err = bad(|r| r.size = 64 << 20, "a 4-column RAID-5 volume needs");
    assert_eq!(err.errno(), libc::ENOSPC);
    // nmirror 1 and read policy select are what a RAID-5 volume has: accepted.
    vm.volume_create(&VolumeCreate {
        nmirror: Some(1),
        read_policy: Some("select".into()),
        alloc: Some(vec!["disk01".into(), "disk02".into(), "disk03".into()]),
        ..raid5("ok", 1 << 20)
    })
    .unwrap();
    let (cfg, _) = vm.config("dg01").unwrap();
    assert_eq!(
        cfg.plexes_of("ok")[0].layout.ncol(),
        3,
        "ncol from the alloc list"
    );
    vm.shutdown();

    // A stripe unit smaller than the block size (8 KiB blocks) is refused for that reason.
    let vm = VolumeManager::new(e.clone());
    let d: Vec<String> = (0..3)
        .map(|i| {
            let name = format!("B{i}");
            e.add_bdev(
                BdevSpec {
                    name: name.clone(),
                    aliases: vec![],
                    uuid: None,
                    block_size: 8192,
                    num_blocks: 16 << 7,
                    io_types: IoTypeSet::all(),
                },
                Box::new(MallocBdev::new(16 << 20).expect("ram")),
            )
            .expect("malloc");
            name
        })
        .collect();
    vm.dg_create("dg02", &d, false).unwrap();
    let req = VolumeCreate {
        dg: "dg02".into(),
        stripe_unit_kb: Some(4),
        ..raid5("bad", 1 << 20)
    };
    refused(
        &e,
        &vm,
        &req,
        "multiple of the disk group's block size (8192 bytes)",
    );
    vm.shutdown();
    e.shutdown();
}

/// What RAID-5 volumes do not support (yet) is refused at once, naming why, and changes
/// nothing: attaching a plex (a mirror, or re-attaching its own), moving one of its subdisks,
/// detaching its only plex.
#[test]
fn operations_raid5_volumes_do_not_support_are_refused() {
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    group_of_four(&e, &vm);
    vm.volume_create(&VolumeCreate {
        ncol: Some(3),
        alloc: Some(vec!["disk01".into(), "disk02".into(), "disk03".into()]),
        ..raid5("r5", 1 << 20)
    })
    .unwrap();
    let before = vm.config("dg01").unwrap();
    let sd = before.0.subdisks_of("r5-01")[0].name.clone();
    let unchanged = |what: &str, r: Result<u64, VolumeError>, want: &str| {
        let err = r.expect_err(&format!("{what} was accepted"));
        assert!(err.to_string().contains(want), "{what}: '{err}'");
        assert_eq!(
            vm.config("dg01").unwrap(),
            before,
            "{what} changed the group"
        );
    };
    let mirrors = "a RAID-5 volume has one RAID-5 plex; mirrors of it are not supported";
    unchanged(
        "plex_attach",
        vm.plex_attach("dg01", "r5", None, None, Duration::ZERO),
        mirrors,
    );
    unchanged(
        "plex_attach disk04",
        vm.plex_attach(
            "dg01",
            "r5",
            None,
            Some(&["disk04".to_string()]),
            Duration::ZERO,
        ),
        mirrors,
    );
    unchanged(
        "plex_attach r5-01",
        vm.plex_attach("dg01", "r5", Some("r5-01"), None, Duration::ZERO),
        mirrors,
    );
    unchanged(
        "subdisk_move",
        vm.subdisk_move("dg01", &sd, Some("disk04"), Duration::ZERO),
        "not supported yet for RAID-5 plexes",
    );
    unchanged(
        "plex_detach",
        vm.plex_detach("dg01", "r5-01", false).map(|()| 0),
        "last plex of volume dg01/r5 with current data",
    );
    assert!(vm.tasks().list().is_empty(), "no task was started");
    vm.shutdown();
    e.shutdown();
}
