//! RAID-5 tasks end to end: the parity resync after a crash (the write hole closed without a
//! log), the refusal to start a crashed degraded volume unless forced, the rebuild of a stale
//! column while guests write, and the scrub that finds and repairs silent corruption.

use super::raid5_io::{create_req, parity_mismatch, raid5, stale_columns};
use super::*;
use crate::drivers::error::InjectTarget;
use crate::volume::copy::task::TaskState;
use crate::volume::model::objects::VolumeState;
use std::time::Duration;

/// Writes `data` straight to unit `row` of column `col` of `vol`'s RAID-5 plex (behind the
/// volume's back: a torn write, or silent corruption).
fn write_unit(vm: &VolumeManager, vol: &Bdev, row: u64, col: usize, data: &[u8]) {
    let shared = crate::volume::io::driver::shared_of(vol).unwrap();
    let map = shared.map();
    let g = &map.raid5.as_ref().unwrap().geometry;
    let bs = vol.block_size() as u64;
    let mut pieces = Vec::new();
    g.locate(row, col, 0, data.len() as u64 / bs, |p| pieces.push(p));
    for p in pieces {
        let at = (p.piece_offset * bs) as usize;
        write(
            vm.engine(),
            &map.disks[p.target as usize],
            p.target_offset * bs,
            &data[at..at + (p.len * bs) as usize],
        )
        .unwrap();
    }
}

/// The column holding data unit 0 of `row`.
fn data_column(vol: &Bdev, row: u64) -> usize {
    let shared = crate::volume::io::driver::shared_of(vol).unwrap();
    let map = shared.map();
    let g = &map.raid5.as_ref().unwrap().geometry;
    (g.parity_column(row) + 1) % g.ncol()
}

fn wait_task(vm: &VolumeManager, kind: &str) -> Arc<crate::volume::copy::task::Task> {
    wait_until(&format!("a {kind} task"), || {
        vm.tasks().list().iter().any(|t| t.kind == kind)
    });
    let t = task_of_kind(vm, kind);
    let t = vm.tasks().wait(t.id, Duration::from_secs(60)).unwrap();
    assert_eq!(t.state(), TaskState::Done, "{kind}");
    t
}

/// A crash while a write had reached only some columns leaves rows whose parity does not
/// match their data; without a log, the next start resynchronises every row's parity.
#[test]
fn a_crashed_raid5_volume_resyncs_its_parity() {
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    let d = disks(&e, 3, 16);
    vm.dg_create("dg01", &d, false).unwrap();
    let vol = raid5(&vm, "r5", 8 << 20, 3, 8);
    let len = vol.num_blocks() * 512;
    let mut model = pattern(1, len as usize);
    write(&e, &vol, 0, &model).unwrap();
    // Torn writes: new data reached one column of rows 3 and 40, not their parity.
    for row in [3u64, 40] {
        let torn = pattern(100 + row, 8 << 10);
        let c = data_column(&vol, row);
        write_unit(&vm, &vol, row, c, &torn);
        // Where that unit sits in the volume: data unit k of the row.
        let shared = crate::volume::io::driver::shared_of(&vol).unwrap();
        let g = shared.map().raid5.as_ref().unwrap().geometry.clone();
        let k = match g.role(row, c) {
            crate::volume::model::raid5::Role::Data(k) => k as u64,
            _ => unreachable!(),
        };
        let at = ((row * 2 + k) * (8 << 10)) as usize;
        model[at..at + torn.len()].copy_from_slice(&torn);
    }
    assert_eq!(parity_mismatch(&vm, &vol), Some(3));
    drop(vol);
    vm.crash();
    let vm = VolumeManager::new(e.clone());
    vm.dg_import(Some("dg01"), None, None).unwrap();
    wait_task(&vm, "parity_resync");
    let vol = e.bdevs().get("dg01/r5").unwrap();
    assert_eq!(parity_mismatch(&vm, &vol), None, "parity resynchronised");
    assert!(read(&e, &vol, 0, len).unwrap() == model);
    let (cfg, _) = vm.config("dg01").unwrap();
    assert_eq!(cfg.volume("r5").unwrap().state, VolumeState::Active);
    drop(vol);
    vm.shutdown();
    e.shutdown();
}

/// While the parity resync after a crash has not reached a row, a small write there
/// reconstructs the row's parity from the data (read-modify-write would keep a wrong parity
/// wrong, and a column lost before the resync gets there would read back garbage).
#[test]
fn writes_ahead_of_a_parity_resync_reconstruct_the_parity() {
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    let d = disks(&e, 4, 16);
    vm.dg_create("dg01", &d, false).unwrap();
    let vol = raid5(&vm, "r5", 8 << 20, 4, 8);
    let len = vol.num_blocks() * 512;
    write(&e, &vol, 0, &pattern(1, len as usize)).unwrap();
    // Torn writes: the first 4 KiB of data unit 0 of rows 100 and 300 changed, not the parity.
    for row in [100u64, 300] {
        let c = data_column(&vol, row);
        write_unit(&vm, &vol, row, c, &pattern(100 + row, 4 << 10));
    }
    assert_eq!(super::raid5_io::mismatching_rows(&vm, &vol), vec![100, 300]);
    drop(vol);
    vm.crash();
    let vm = VolumeManager::new(e.clone());
    // The resync waits before its first chunk.
    let gate = hold_task_at(&vm, "parity_resync", 0);
    vm.dg_import(Some("dg01"), None, None).unwrap();
    gate.wait_reached("the parity resync");
    let vol = e.bdevs().get("dg01/r5").unwrap();
    // The first 4 KiB of data unit 1 of row 100: one unit of three, read-modify-write if the
    // parity were trusted (which would keep the mismatch at those offsets).
    write(&e, &vol, 100 * 3 * 8192 + 8192, &pattern(7, 4096)).unwrap();
    assert_eq!(
        super::raid5_io::mismatching_rows(&vm, &vol),
        vec![300],
        "the written row's parity was rebuilt from its data"
    );
    gate.open();
    wait_task(&vm, "parity_resync");
    assert_eq!(parity_mismatch(&vm, &vol), None);
    drop(vol);
    vm.shutdown();
    e.shutdown();
}

/// A RAID-5 volume that crashed while degraded does not start by itself (its missing column
/// could read back wrong where a write was torn); forced, it starts and serves its data.
#[test]
fn a_crashed_degraded_raid5_volume_starts_only_by_force() {
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    let d = error_disks(&e, 3, 16);
    vm.dg_create("dg01", &d, false).unwrap();
    let vol = raid5(&vm, "r5", 4 << 20, 3, 8);
    let len = vol.num_blocks() * 512;
    let model = pattern(2, len as usize);
    inject(&e, &d[1], InjectTarget::Write, 1_000_000);
    write(&e, &vol, 0, &model).unwrap();
    assert_eq!(stale_columns(&vm, "r5").len(), 1);
    drop(vol);
    vm.crash();
    let vm = VolumeManager::new(e.clone());
    vm.dg_import(Some("dg01"), None, None).unwrap();
    assert!(!vm.is_started("dg01", "r5"), "not started at import");
    let err = vm.volume_start("dg01", "r5").unwrap_err().to_string();
    assert!(err.contains("force"), "{err}");
    vm.volume_start_with("dg01", "r5", true).unwrap();
    let vol = e.bdevs().get("dg01/r5").unwrap();
    assert!(read(&e, &vol, 0, len).unwrap() == model);
    drop(vol);
    vm.shutdown();
    e.shutdown();
}

/// A column that failed and came back is rebuilt from the others while the guest writes; at
/// the end it is current (parity of every row right, every block as written) and no longer
/// stale, also after a re-import.
#[test]
fn a_stale_column_is_rebuilt_while_guests_write() {
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    let d = error_disks(&e, 4, 32);
    vm.dg_create("dg01", &d, false).unwrap();
    let vol = raid5(&vm, "r5", 24 << 20, 4, 16);
    let len = vol.num_blocks() * 512;
    let mut model = pattern(3, len as usize);
    write(&e, &vol, 0, &model).unwrap();
    // One write fails on disk 2: its column is stale; the disk then works again.
    inject(&e, &d[2], InjectTarget::Write, 1);
    let w = pattern(4, 64 << 10);
    write(&e, &vol, 0, &w).unwrap();
    model[..w.len()].copy_from_slice(&w);
    assert_eq!(stale_columns(&vm, "r5").len(), 1);
    // Degraded writes meanwhile (the column misses them).
    for i in 0..20u64 {
        let off = (i * 1_048_583 * 512 / 512) % (len - 8192) / 512 * 512;
        let w = pattern(50 + i, 8192);
        write(&e, &vol, off, &w).unwrap();
        model[off as usize..off as usize + w.len()].copy_from_slice(&w);
    }
    let id = vm
        .volume_recover("dg01", "r5", None, Duration::from_millis(30))
        .unwrap();
    // Guest writes while the rebuild runs, behind and ahead of it.
    let task = vm.tasks().get(id).unwrap();
    let mut i = 0u64;
    while task.state() == TaskState::Running || i < 10 {
        let off = (i * 7_340_033) % (len - 20_000) / 512 * 512;
        let w = pattern(200 + i, 12_288);
        write(&e, &vol, off, &w).unwrap();
        model[off as usize..off as usize + w.len()].copy_from_slice(&w);
        i += 1;
    }
    assert!(i > 10, "writes ran during the rebuild");
    let t = vm.tasks().wait(id, Duration::from_secs(60)).unwrap();
    assert_eq!(t.state(), TaskState::Done);
    assert_eq!(stale_columns(&vm, "r5"), Vec::<u32>::new());
    assert_eq!(parity_mismatch(&vm, &vol), None, "every column current");
    assert!(read(&e, &vol, 0, len).unwrap() == model);
    drop(vol);
    vm.crash();
    let vm = VolumeManager::new(e.clone());
    vm.dg_import(Some("dg01"), None, None).unwrap();
    let vol = e.bdevs().get("dg01/r5").unwrap();
    assert_eq!(stale_columns(&vm, "r5"), Vec::<u32>::new());
    assert!(read(&e, &vol, 0, len).unwrap() == model);
    drop(vol);
    vm.shutdown();
    e.shutdown();
}

/// Silent corruption of one unit on one disk is found by a check (the row is reported,
/// nothing changed) and fixed by a check with repair.
#[test]
fn a_check_finds_and_repairs_silent_corruption() {
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    let d = disks(&e, 3, 16);
    vm.dg_create("dg01", &d, false).unwrap();
    let vol = raid5(&vm, "r5", 4 << 20, 3, 8);
    let len = vol.num_blocks() * 512;
    write(&e, &vol, 0, &pattern(5, len as usize)).unwrap();
    let mut bad = pattern(6, 8 << 10);
    bad.truncate(8 << 10);
    write_unit(&vm, &vol, 17, data_column(&vol, 17), &bad);
    let id = vm.volume_check("dg01", "r5", false).unwrap();
    let t = vm.tasks().wait(id, Duration::from_secs(60)).unwrap();
    assert_eq!(t.state(), TaskState::Done);
    let r = t.result().unwrap();
    assert_eq!(r["mismatch_rows"], 1, "{r}");
    assert_eq!(r["mismatch_ranges"], serde_json::json!([[17, 18]]), "{r}");
    assert_eq!(
        parity_mismatch(&vm, &vol),
        Some(17),
        "a check changes nothing"
    );
    let id = vm.volume_check("dg01", "r5", true).unwrap();
    let t = vm.tasks().wait(id, Duration::from_secs(60)).unwrap();
    assert_eq!(t.result().unwrap()["mismatch_rows"], 1);
    assert_eq!(parity_mismatch(&vm, &vol), None, "repaired");
    drop(vol);
    vm.shutdown();
    e.shutdown();
}

/// Scenario 10: another column fails while a column is rebuilt: the data of the rows it held
/// is gone, so the volume goes offline with both columns recorded (requests fail, nothing
/// wrong is returned).
#[test]
fn a_failure_during_a_rebuild_takes_the_volume_offline() {
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    let d = error_disks(&e, 3, 16);
    vm.dg_create("dg01", &d, false).unwrap();
    let vol = raid5(&vm, "r5", 4 << 20, 3, 8);
    let len = vol.num_blocks() * 512;
    write(&e, &vol, 0, &pattern(1, len as usize)).unwrap();
    inject(&e, &d[1], InjectTarget::Write, 1);
    write(&e, &vol, 0, &pattern(2, 16 << 10)).unwrap();
    assert_eq!(stale_columns(&vm, "r5").len(), 1);
    // The rebuild reads the other two columns: one of them fails.
    inject(&e, &d[0], InjectTarget::Read, 1_000_000);
    let id = vm
        .volume_recover("dg01", "r5", None, Duration::ZERO)
        .unwrap();
    let t = vm.tasks().wait(id, Duration::from_secs(60)).unwrap();
    assert!(matches!(t.state(), TaskState::Failed(_)), "{:?}", t.state());
    wait_until("both columns recorded", || {
        stale_columns(&vm, "r5").len() == 2
    });
    assert!(
        read(&e, &vol, 0, 4096).is_err(),
        "offline: nothing is returned"
    );
    assert!(write(&e, &vol, 0, &pattern(3, 4096)).is_err());
    drop(vol);
    vm.shutdown();
    e.shutdown();
}

/// Scenario 17: a unit silently corrupted on its disk, then a read-modify-write to another
/// unit of the same row (which keeps the corruption out of the parity): the scrub reports the
/// row.
#[test]
fn silent_corruption_under_a_read_modify_write_is_found_by_the_scrub() {
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    let d = disks(&e, 4, 16);
    vm.dg_create("dg01", &d, false).unwrap();
    let vol = raid5(&vm, "r5", 4 << 20, 4, 8);
    let len = vol.num_blocks() * 512;
    write(&e, &vol, 0, &pattern(1, len as usize)).unwrap();
    let row = 9u64;
    write_unit(&vm, &vol, row, data_column(&vol, row), &pattern(9, 8 << 10));
    // 4 KiB into data unit 2 of the row: read-modify-write (one unit of three).
    write(&e, &vol, row * 3 * 8192 + 2 * 8192, &pattern(10, 4096)).unwrap();
    let id = vm.volume_check("dg01", "r5", false).unwrap();
    let t = vm.tasks().wait(id, Duration::from_secs(60)).unwrap();
    let r = t.result().unwrap();
    assert_eq!(
        r["mismatch_ranges"],
        serde_json::json!([[row, row + 1]]),
        "{r}"
    );
    drop(vol);
    vm.shutdown();
    e.shutdown();
}

/// Scenario 18: write-zeroes and unmaps keep the parity right, so a degraded read of the
/// zeroed range (and of the rest) returns what was written.
#[test]
fn zeroes_and_unmaps_then_a_degraded_read() {
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    let d = error_disks(&e, 3, 16);
    vm.dg_create("dg01", &d, false).unwrap();
    let vol = raid5(&vm, "r5", 4 << 20, 3, 8);
    let len = vol.num_blocks() * 512;
    let mut model = pattern(1, len as usize);
    write(&e, &vol, 0, &model).unwrap();
    for (t, off, n) in [
        (crate::bdev::IoType::WriteZeroes, 4096u64, 20_480u64),
        (crate::bdev::IoType::Unmap, 100 << 10, 64 << 10),
    ] {
        crate::bdev::blocking::run_io(&e, 0, &vol, t, off, n, None, Duration::from_secs(10))
            .unwrap();
        model[off as usize..(off + n) as usize].fill(0);
    }
    assert_eq!(parity_mismatch(&vm, &vol), None);
    // Lose a column: everything reads back through the parity.
    inject(&e, &d[2], InjectTarget::Write, 1_000_000);
    write(&e, &vol, 0, &model[..16 << 10]).unwrap();
    assert_eq!(stale_columns(&vm, "r5").len(), 1);
    assert!(read(&e, &vol, 0, len).unwrap() == model);
    drop(vol);
    vm.shutdown();
    e.shutdown();
}

/// How long a rebuild of one RAID-5 column takes against a plain copy of the same size (a
/// mirror plex attach), in one engine on RAM disks. Not run by default (it needs a few GiB of
/// RAM and a release build): `cargo test --release -p plexd-engine rebuild_time -- --ignored
/// --nocapture` (set `PLEXD_REBUILD_MIB`, default 1024, for the column size).
#[test]
#[ignore]
fn rebuild_time_against_a_plain_copy() {
    let mib: u64 = std::env::var("PLEXD_REBUILD_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    // Rebuild: 4 columns of `mib` MiB; one fails a write, comes back, is rebuilt.
    let d = error_disks(&e, 4, mib + 8);
    vm.dg_create("dg01", &d, false).unwrap();
    let vol = create_req(
        &vm,
        &VolumeCreate {
            dg: "dg01".into(),
            name: "r5".into(),
            size: 3 * (mib << 20),
            layout: "raid5".into(),
            ncol: Some(4),
            nlog: Some(0),
            ..Default::default()
        },
    );
    inject(&e, &d[2], InjectTarget::Write, 1);
    write(&e, &vol, 0, &pattern(1, (3 * 16) << 10)).unwrap();
    assert_eq!(stale_columns(&vm, "r5").len(), 1);
    let id = vm
        .volume_recover("dg01", "r5", None, Duration::ZERO)
        .unwrap();
    let t = vm.tasks().wait(id, Duration::from_secs(3600)).unwrap();
    assert_eq!(t.state(), TaskState::Done);
    let rebuild = t.progress_report().elapsed_secs;
    drop(vol);
    vm.volume_delete("dg01", "r5").unwrap();
    // Copy: a concat volume of `mib` MiB gets a second plex (read one disk, write another).
    let bdev = vm
        .volume_create(&VolumeCreate {
            dg: "dg01".into(),
            name: "c".into(),
            size: mib << 20,
            layout: "concat".into(),
            ..Default::default()
        })
        .unwrap();
    let id = vm
        .plex_attach("dg01", "c", None, None, Duration::ZERO)
        .unwrap();
    let t = vm.tasks().wait(id, Duration::from_secs(3600)).unwrap();
    assert_eq!(t.state(), TaskState::Done);
    let copy = t.progress_report().elapsed_secs;
    eprintln!(
        "rebuild of a {mib} MiB RAID-5 column: {rebuild:.2} s; plain copy of {mib} MiB (plex attach): {copy:.2} s; ratio {:.2}",
        rebuild / copy
    );
    drop(bdev);
    vm.shutdown();
    e.shutdown();
}

/// A column whose disk keeps failing is rebuilt on another disk (`volume_recover` with a
/// disk): its old subdisk is freed, the new one holds the column, the volume is whole again
/// (also after a re-import), and a disk holding another column is refused.
#[test]
fn a_column_is_rebuilt_on_another_disk() {
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    let d = error_disks(&e, 5, 16);
    vm.dg_create("dg01", &d, false).unwrap();
    // Four columns, no log: the fifth disk is free.
    let vol = create_req(
        &vm,
        &VolumeCreate {
            dg: "dg01".into(),
            name: "r5".into(),
            size: 6 << 20,
            layout: "raid5".into(),
            ncol: Some(4),
            nlog: Some(0),
            ..Default::default()
        },
    );
    let len = vol.num_blocks() * 512;
    let mut model = pattern(1, len as usize);
    write(&e, &vol, 0, &model).unwrap();
    let members = vm.member_bdevs("dg01").unwrap();
    let (cfg, _) = vm.config("dg01").unwrap();
    let on = |disk: &str| {
        cfg.subdisks
            .iter()
            .find(|s| s.disk == disk)
            .map(|s| s.column)
    };
    let free = members.keys().find(|n| on(n).is_none()).unwrap().clone();
    let (bad, bad_col) = members
        .keys()
        .find_map(|n| on(n).map(|c| (n.clone(), c)))
        .unwrap();
    let other = members
        .keys()
        .find(|n| on(n).is_some() && **n != bad)
        .unwrap()
        .clone();
    inject(&e, &members[&bad], InjectTarget::Write, 1_000_000);
    let w = pattern(2, 48 << 10);
    write(&e, &vol, 0, &w).unwrap();
    model[..w.len()].copy_from_slice(&w);
    assert_eq!(stale_columns(&vm, "r5"), vec![bad_col]);
    let refused = vm
        .volume_recover("dg01", "r5", Some(&other), Duration::ZERO)
        .unwrap_err()
        .to_string();
    assert!(refused.contains("another column"), "{refused}");
    let id = vm
        .volume_recover("dg01", "r5", Some(&free), Duration::from_millis(5))
        .unwrap();
    // The guest writes on meanwhile.
    let w = pattern(3, 100 << 10);
    write(&e, &vol, 200 << 10, &w).unwrap();
    model[200 << 10..(200 << 10) + w.len()].copy_from_slice(&w);
    let t = vm.tasks().wait(id, Duration::from_secs(60)).unwrap();
    assert_eq!(t.state(), TaskState::Done);
    let (cfg, _) = vm.config("dg01").unwrap();
    assert!(cfg.plex("r5-01").unwrap().stale_columns.is_empty());
    assert!(
        cfg.subdisks_on(&bad).is_empty(),
        "the failed disk's subdisk is freed"
    );
    assert_eq!(cfg.subdisks_on(&free)[0].column, bad_col);
    assert_eq!(parity_mismatch(&vm, &vol), None);
    assert!(read(&e, &vol, 0, len).unwrap() == model);
    drop(vol);
    vm.crash();
    let vm = VolumeManager::new(e.clone());
    vm.dg_import(Some("dg01"), None, None).unwrap();
    wait_until("the parity resync", || !vm.tasks().busy("dg01", "r5"));
    let vol = e.bdevs().get("dg01/r5").unwrap();
    assert!(read(&e, &vol, 0, len).unwrap() == model);
    drop(vol);
    vm.shutdown();
    e.shutdown();
}

/// A RAID-5 volume grows by whole rows on disks no other column or log uses: the old data
/// stays, the new blocks read as zeroes and take writes, every row's parity is right, and it
/// comes back from the disks so.
#[test]
fn a_raid5_volume_grows() {
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    let d = disks(&e, 5, 32);
    vm.dg_create("dg01", &d, false).unwrap();
    let vol = raid5(&vm, "r5", 4 << 20, 4, 16);
    let old = vol.num_blocks() * 512;
    let mut model = pattern(1, old as usize);
    write(&e, &vol, 0, &model).unwrap();
    let new = vm.volume_resize("dg01", "r5", 10 << 20).unwrap() * 512;
    assert_eq!(new, 10 << 20);
    assert_eq!(vol.num_blocks() * 512, new);
    model.resize(new as usize, 0);
    assert!(
        read(&e, &vol, 0, new).unwrap() == model,
        "old data kept, new space zeroes"
    );
    assert_eq!(parity_mismatch(&vm, &vol), None);
    // Writes across the old end, and into the new rows.
    let w = pattern(2, 300 << 10);
    let at = old as usize - (100 << 10);
    write(&e, &vol, at as u64, &w).unwrap();
    model[at..at + w.len()].copy_from_slice(&w);
    assert!(read(&e, &vol, 0, new).unwrap() == model);
    assert_eq!(parity_mismatch(&vm, &vol), None);
    let (cfg, _) = vm.config("dg01").unwrap();
    // No two columns (nor the log) share a disk.
    let mut seen = std::collections::BTreeMap::new();
    for p in cfg.plexes_of("r5") {
        for s in cfg.subdisks_of(&p.name) {
            let owner = (p.name.clone(), s.column);
            assert_eq!(*seen.entry(s.disk.clone()).or_insert(owner.clone()), owner);
        }
    }
    drop(vol);
    vm.shutdown();
    let vm = VolumeManager::new(e.clone());
    vm.dg_import(Some("dg01"), None, None).unwrap();
    let vol = e.bdevs().get("dg01/r5").unwrap();
    assert!(read(&e, &vol, 0, new).unwrap() == model);
    drop(vol);
    vm.shutdown();
    e.shutdown();
}

/// The disk (bdev name) holding column `col` of `vol`'s RAID-5 plex.
fn column_disk(vol: &Bdev, col: usize) -> String {
    let shared = crate::volume::io::driver::shared_of(vol).unwrap();
    let map = shared.map();
    let t = map.raid5.as_ref().unwrap().geometry.columns()[col].extents[0].target as usize;
    map.disks[t].name().to_string()
}

/// Column 1's units in rows 5..15 where it holds data are overwritten with garbage behind
/// the volume's back, and its disk fails the next read: the read is answered from the other
/// columns, and what it rebuilt is written back to column 1, so the garbage is gone from the
/// disk (parity matches the data again) and the column stays in service.
#[test]
fn a_read_error_is_rewritten_from_the_other_columns() {
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    let d = error_disks(&e, 3, 16);
    vm.dg_create("dg01", &d, false).unwrap();
    let vol = raid5(&vm, "r5", 4 << 20, 3, 8);
    let len = vol.num_blocks() * 512;
    let model = pattern(4, len as usize);
    write(&e, &vol, 0, &model).unwrap();
    let g = crate::volume::io::driver::shared_of(&vol).unwrap();
    let geometry = g.map().raid5.as_ref().unwrap().geometry.clone();
    let rows: Vec<u64> = (5..15)
        .filter(|&r| geometry.parity_column(r) != 1)
        .collect();
    for &row in &rows {
        write_unit(&vm, &vol, row, 1, &pattern(1000 + row, 8192));
    }
    assert!(
        parity_mismatch(&vm, &vol).is_some(),
        "the garbage is on the disk"
    );
    inject(&e, &column_disk(&vol, 1), InjectTarget::Read, 1);
    assert!(
        read(&e, &vol, 0, len).unwrap() == model,
        "the read is rebuilt"
    );
    assert!(
        g.read_repairs() >= 1,
        "the rebuilt ranges were written back"
    );
    assert_eq!(
        parity_mismatch(&vm, &vol),
        None,
        "column 1 holds its data again"
    );
    assert!(read(&e, &vol, 0, len).unwrap() == model);
    assert_eq!(stale_columns(&vm, "r5"), Vec::<u32>::new());
    drop(vol);
    vm.shutdown();
    e.shutdown();
}

/// A read error whose rewrite fails too: the read still returns the data (rebuilt), and the
/// column is recorded stale as for any failed write.
#[test]
fn a_read_error_whose_rewrite_fails_detaches_the_column() {
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    let d = error_disks(&e, 3, 16);
    vm.dg_create("dg01", &d, false).unwrap();
    let vol = raid5(&vm, "r5", 4 << 20, 3, 8);
    let len = vol.num_blocks() * 512;
    let model = pattern(5, len as usize);
    write(&e, &vol, 0, &model).unwrap();
    let disk = column_disk(&vol, 1);
    inject(&e, &disk, InjectTarget::Read, 1);
    inject(&e, &disk, InjectTarget::Write, 1_000_000);
    assert!(
        read(&e, &vol, 0, len).unwrap() == model,
        "the read is rebuilt"
    );
    assert_eq!(stale_columns(&vm, "r5"), vec![1]);
    assert!(read(&e, &vol, 0, len).unwrap() == model, "degraded reads");
    drop(vol);
    vm.shutdown();
    e.shutdown();
}

/// During a parity resync, a read error in a row the resync has not reached fails the read
/// (EIO) instead of returning what the row's unverified parity would rebuild; once the
/// resync has passed, the same read works.
#[test]
fn a_read_error_ahead_of_a_parity_resync_fails_rather_than_guess() {
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    let d = error_disks(&e, 3, 16);
    vm.dg_create("dg01", &d, false).unwrap();
    let vol = raid5(&vm, "r5", 4 << 20, 3, 8);
    let len = vol.num_blocks() * 512;
    let model = pattern(6, len as usize);
    write(&e, &vol, 0, &model).unwrap();
    let disk = column_disk(&vol, 1);
    drop(vol);
    vm.crash();
    let vm = VolumeManager::new(e.clone());
    let gate = hold_task_at(&vm, "parity_resync", 0);
    vm.dg_import(Some("dg01"), None, None).unwrap();
    gate.wait_reached("the parity resync");
    let vol = e.bdevs().get("dg01/r5").unwrap();
    inject(&e, &disk, InjectTarget::Read, 1);
    assert!(
        read(&e, &vol, 0, len).is_err(),
        "a read error ahead of the resync fails the read: no guessing"
    );
    gate.open();
    wait_task(&vm, "parity_resync");
    inject(&e, &disk, InjectTarget::Read, 1);
    assert!(
        read(&e, &vol, 0, len).unwrap() == model,
        "rebuilt once resynced"
    );
    assert_eq!(stale_columns(&vm, "r5"), Vec::<u32>::new());
    drop(vol);
    vm.shutdown();
    e.shutdown();
}

/// A write whose planned read fails on one column takes the other plan, which does not read
/// that range, instead of giving the column up: a read-modify-write whose old data (or old
/// parity) read fails becomes a reconstruct-write (which rewrites the failed range, counted
/// as a repair), and a reconstruct-write whose read of an unwritten unit fails becomes a
/// read-modify-write. No column goes stale; data and parity stay right.
#[test]
fn a_write_whose_read_fails_takes_the_other_plan() {
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    let d = error_disks(&e, 4, 16);
    vm.dg_create("dg01", &d, false).unwrap();
    let vol = raid5(&vm, "r5", 4 << 20, 4, 8);
    let len = vol.num_blocks() * 512;
    let mut model = pattern(7, len as usize);
    write(&e, &vol, 0, &model).unwrap();
    let g = crate::volume::io::driver::shared_of(&vol).unwrap();
    let geometry = g.map().raid5.as_ref().unwrap().geometry.clone();
    let row_bytes = 3 * 8192u64;
    let mut step = |row: u64, fail_col: usize, off_in_row: u64, n: u64, seed: u64| {
        inject(&e, &column_disk(&vol, fail_col), InjectTarget::Read, 1);
        let before = g.read_errors();
        let off = row * row_bytes + off_in_row;
        let data = pattern(seed, n as usize);
        write(&e, &vol, off, &data).expect("the write goes on");
        model[off as usize..(off + n) as usize].copy_from_slice(&data);
        assert!(
            g.read_errors() > before,
            "row {row}: the injected read error happened"
        );
        assert_eq!(
            stale_columns(&vm, "r5"),
            Vec::<u32>::new(),
            "row {row}: no column given up"
        );
        assert_eq!(parity_mismatch(&vm, &vol), None, "row {row}: parity right");
    };
    // Read-modify-write (4 KiB of one of three units): its old data read fails, then (another
    // row) its old parity read.
    let p = geometry.parity_column(7);
    step(7, (p + 1) % 4, 0, 4096, 70);
    let p = geometry.parity_column(9);
    step(9, p, 0, 4096, 90);
    assert!(g.read_repairs() >= 2, "the failed ranges were rewritten");
    // Reconstruct-write (two whole units of three): the read of the third unit fails.
    let p = geometry.parity_column(11);
    step(11, (p + 3) % 4, 0, 2 * 8192, 110);
    assert!(
        read(&e, &vol, 0, len).unwrap() == model,
        "every write reads back"
    );
    drop(vol);
    vm.shutdown();
    e.shutdown();
}
