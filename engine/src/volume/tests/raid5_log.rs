//! The RAID-5 write hole, with and without a log (failure scenarios 5, 6 and 19): a crash
//! tears a partial-stripe write (its data reached one column, its parity did not), and the
//! volume restarts with another column's disk missing. With a log the entry is replayed and
//! the untouched unit of the torn row reads back right; without one the start is refused,
//! and forced, that unit reads back wrong (the hole the log closes). A log plex that fails
//! is recorded BADLOG and the volume runs on without it.

use super::raid5_io::{create_req, mismatching_rows, raid5};
use super::*;
use crate::drivers::error::{Arming, ErrorKind, InjectTarget};
use crate::volume::model::objects::PlexState;
use std::time::Duration;

/// The bdev holding column `c` of `vol`'s RAID-5 plex.
fn column_bdev(vol: &Bdev, c: usize) -> String {
    let shared = crate::volume::io::driver::shared_of(vol).unwrap();
    let map = shared.map();
    let r5 = map.raid5.as_ref().unwrap();
    let t = r5.geometry.columns()[c].extents[0].target as usize;
    map.disks[t].name().to_string()
}

/// Reads `len` bytes at `off` straight from bdev `name`.
fn raw(e: &Engine, name: &str, off: u64, len: u64) -> Vec<u8> {
    read(e, &e.bdevs().get(name).unwrap(), off, len).unwrap()
}

struct Torn {
    /// The volume's contents before the torn write.
    before: Vec<u8>,
    /// Where the torn write went and what it wrote.
    off: u64,
    new: Vec<u8>,
    /// Volume bytes of the row's other data unit (never written by the torn write).
    untouched: std::ops::Range<usize>,
    /// The error bdev of that unit's column (removed before the restart).
    untouched_disk: String,
}

/// Creates RAID-5 volume `r5` (3 columns of 8 KiB, `nlog` logs) on 4 error disks, fills it,
/// and tears a 4 KiB write into unit 0 of row 5: the parity disk holds its write for ever,
/// the data lands. Then "crashes" the manager.
fn tear(e: &Arc<Engine>, vm: &VolumeManager, nlog: u32) -> Torn {
    tear_with(e, vm, nlog, false)
}

/// [`tear`], the log (if `late_log`) added to the running volume instead of at create.
fn tear_with(e: &Arc<Engine>, vm: &VolumeManager, nlog: u32, late_log: bool) -> Torn {
    let d = error_disks(e, 4, 16);
    vm.dg_create("dg01", &d, false).unwrap();
    let bdev = vm
        .volume_create(&VolumeCreate {
            dg: "dg01".into(),
            name: "r5".into(),
            size: 4 << 20,
            layout: "raid5".into(),
            ncol: Some(3),
            stripe_unit_kb: Some(8),
            nlog: Some(if late_log { 0 } else { nlog }),
            ..Default::default()
        })
        .unwrap();
    if late_log {
        for _ in 0..nlog {
            vm.log_attach("dg01", "r5", None).unwrap();
        }
    }
    let vol = e.bdevs().get(&bdev).unwrap();
    let len = vol.num_blocks() * 512;
    let before = pattern(1, len as usize);
    write(e, &vol, 0, &before).unwrap();
    let shared = crate::volume::io::driver::shared_of(&vol).unwrap();
    let g = shared.map().raid5.as_ref().unwrap().geometry.clone();
    let row = 5u64;
    let (p, c0, c1) = (
        g.parity_column(row),
        (g.parity_column(row) + 1) % 3,
        (g.parity_column(row) + 2) % 3,
    );
    let unit = 8192u64;
    let off = row * 2 * unit; // data unit 0 of row 5
    let new = pattern(2, 4096);
    // The parity write never completes; the data write lands.
    err_state(e, &column_bdev(&vol, p))
        .inject(InjectTarget::Write, &Arming::new(ErrorKind::Pending, 1))
        .unwrap();
    let pending = crate::bdev::blocking::start_io(
        e,
        0,
        &vol,
        crate::bdev::IoType::Write,
        off,
        new.len() as u64,
        Some(&new),
    )
    .unwrap();
    let data_disk = column_bdev(&vol, c0);
    let mut pieces = Vec::new();
    g.locate(row, c0, 0, 8, |pc| pieces.push(pc));
    let disk_off = pieces[0].target_offset * 512;
    wait_until("the torn write's data to land", || {
        raw(e, &data_disk, disk_off, 4096) == new
    });
    assert!(
        pending.wait(Duration::from_millis(50)).is_err(),
        "not acknowledged"
    );
    let untouched_disk = column_bdev(&vol, c1);
    drop(vol);
    drop(shared);
    vm.crash();
    Torn {
        before,
        off,
        new,
        untouched: (off + unit) as usize..(off + 2 * unit) as usize,
        untouched_disk,
    }
}

/// Restarts with the torn row's untouched column missing: its disk (an error bdev) deleted.
fn restart_without(e: &Arc<Engine>, t: &Torn) -> Arc<VolumeManager> {
    // The error bdev and the RAM disk under it (which carries the same label).
    e.delete_bdev(&t.untouched_disk, None).unwrap();
    let base = t.untouched_disk.trim_start_matches("EE_");
    e.delete_bdev(base, None).unwrap();
    let vm = VolumeManager::new(e.clone());
    vm.dg_import(Some("dg01"), None, None).unwrap();
    vm
}

/// With a log, the torn row is made whole by the replay: the volume starts degraded, and
/// the unit the torn write never touched reads back as it was (reconstructed from the
/// replayed data and parity); the torn write itself reads back whole, old or new.
#[test]
fn the_log_closes_the_write_hole() {
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    let t = tear(&e, &vm, 1);
    let vm = restart_without(&e, &t);
    assert!(
        vm.is_started("dg01", "r5"),
        "a logged volume restarts degraded"
    );
    let vol = e.bdevs().get("dg01/r5").unwrap();
    let all = read(&e, &vol, 0, vol.num_blocks() * 512).unwrap();
    assert!(
        all[t.untouched.clone()] == t.before[t.untouched.clone()],
        "the untouched unit of the torn row reads back as written"
    );
    let w = &all[t.off as usize..t.off as usize + t.new.len()];
    assert!(
        w == &t.new[..] || w == &t.before[t.off as usize..t.off as usize + t.new.len()],
        "the torn write reads back whole (old or new)"
    );
    let mut rest = all.clone();
    rest[t.off as usize..t.off as usize + t.new.len()]
        .copy_from_slice(&t.before[t.off as usize..t.off as usize + t.new.len()]);
    assert!(rest == t.before, "every other block as written");
    drop(vol);
    vm.shutdown();
    e.shutdown();
}

/// A log added to the running volume closes the hole the same way (its ring was sized
/// before the log existed: the entries say where they are).
#[test]
fn a_log_added_later_closes_the_write_hole() {
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    let t = tear_with(&e, &vm, 1, true);
    let vm = restart_without(&e, &t);
    assert!(
        vm.is_started("dg01", "r5"),
        "a logged volume restarts degraded"
    );
    let vol = e.bdevs().get("dg01/r5").unwrap();
    let got = read(&e, &vol, t.untouched.start as u64, 8192).unwrap();
    assert!(got == t.before[t.untouched.clone()]);
    drop(vol);
    vm.shutdown();
    e.shutdown();
}

/// Without a log the same crash leaves the volume stopped (a forced start is needed), and
/// forced, the untouched unit of the torn row reads back wrong: the write hole.
#[test]
fn without_a_log_the_write_hole_needs_a_forced_start_and_shows() {
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    let t = tear(&e, &vm, 0);
    let vm = restart_without(&e, &t);
    assert!(!vm.is_started("dg01", "r5"), "refused without force");
    vm.volume_start_with("dg01", "r5", true).unwrap();
    let vol = e.bdevs().get("dg01/r5").unwrap();
    let got = read(&e, &vol, t.untouched.start as u64, 8192).unwrap();
    assert!(
        got != t.before[t.untouched.clone()],
        "the hole: data nobody wrote reads back wrong"
    );
    drop(vol);
    vm.shutdown();
    e.shutdown();
}

/// A log plex whose disk fails is recorded BADLOG before the write goes on; the volume keeps
/// serving (without write-hole protection), every write reads back, parity stays right.
#[test]
fn a_failed_log_is_recorded_and_the_volume_runs_on() {
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    let d = error_disks(&e, 4, 16);
    vm.dg_create("dg01", &d, false).unwrap();
    let vol = raid5(&vm, "r5", 4 << 20, 3, 8);
    let (cfg, _) = vm.config("dg01").unwrap();
    let log = cfg
        .plexes_of("r5")
        .into_iter()
        .find(|p| p.state == PlexState::Log)
        .expect("a log plex")
        .clone();
    let log_disk = cfg.subdisks_of(&log.name)[0].disk.clone();
    let log_bdev = vm.member_bdevs("dg01").unwrap()[&log_disk].clone();
    let len = vol.num_blocks() * 512;
    let mut model = pattern(1, len as usize);
    write(&e, &vol, 0, &model).unwrap();
    inject(&e, &log_bdev, InjectTarget::Write, 1_000_000);
    let w = pattern(3, 12 << 10);
    write(&e, &vol, 40_960, &w).expect("the write goes on without the log");
    model[40_960..40_960 + w.len()].copy_from_slice(&w);
    let (cfg, _) = vm.config("dg01").unwrap();
    let p = cfg.plex(&log.name).unwrap();
    assert_eq!(p.state, PlexState::Badlog);
    assert!(vm.vm_print(Some("dg01")).unwrap().contains("BADLOG"));
    assert!(read(&e, &vol, 0, len).unwrap() == model);
    assert_eq!(mismatching_rows(&vm, &vol), Vec::<u64>::new());
    drop(vol);
    vm.shutdown();
    e.shutdown();
}

/// A log that would have to share a disk with a column is refused, and nothing changes;
/// without `nlog` and without room the volume is made without a log.
#[test]
fn a_log_on_a_column_disk_is_refused() {
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    let d = disks(&e, 4, 16);
    vm.dg_create("dg01", &d, false).unwrap();
    let (before, seq) = vm.config("dg01").unwrap();
    let req = VolumeCreate {
        dg: "dg01".into(),
        name: "r5".into(),
        size: 2 << 20,
        layout: "raid5".into(),
        ncol: Some(3),
        alloc: Some(vec!["disk01".into(), "disk02".into(), "disk03".into()]),
        nlog: Some(1),
        ..Default::default()
    };
    let err = vm.volume_create(&req).unwrap_err().to_string();
    assert!(err.contains("no column uses"), "{err}");
    assert_eq!(vm.config("dg01").unwrap(), (before, seq), "nothing changed");
    assert!(e.bdevs().get("dg01/r5").is_err());
    // Left to its default, the log is skipped when it has no room.
    vm.volume_create(&VolumeCreate { nlog: None, ..req })
        .unwrap();
    let (cfg, _) = vm.config("dg01").unwrap();
    assert_eq!(cfg.plexes_of("r5").len(), 1, "no log plex");
    vm.shutdown();
    e.shutdown();
}

/// A log plex added to a running RAID-5 volume that had none (`volume_addlog`) is zeroed,
/// takes every write from then on, and covers the next crash (no parity resync; the volume
/// restarts degraded without force). A log on a column's disk is refused.
#[test]
fn a_log_added_later_protects_the_next_crash() {
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    let d = disks(&e, 4, 16);
    vm.dg_create("dg01", &d, false).unwrap();
    let vol = create_req(
        &vm,
        &VolumeCreate {
            dg: "dg01".into(),
            name: "r5".into(),
            size: 2 << 20,
            layout: "raid5".into(),
            ncol: Some(3),
            nlog: Some(0),
            ..Default::default()
        },
    );
    let (cfg, seq) = vm.config("dg01").unwrap();
    let column_disk = cfg.subdisks_of("r5-01")[0].disk.clone();
    let err = vm
        .log_attach("dg01", "r5", Some(&[column_disk]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("disk of its own"), "{err}");
    assert_eq!(vm.config("dg01").unwrap().1, seq, "nothing changed");
    let log = vm.log_attach("dg01", "r5", None).unwrap();
    let (cfg, _) = vm.config("dg01").unwrap();
    assert_eq!(cfg.plex(&log).unwrap().state, PlexState::Log);
    let len = vol.num_blocks() * 512;
    let model = pattern(5, len as usize);
    write(&e, &vol, 0, &model).unwrap();
    drop(vol);
    vm.crash();
    let vm = VolumeManager::new(e.clone());
    vm.dg_import(Some("dg01"), None, None).unwrap();
    assert!(vm.is_started("dg01", "r5"));
    assert!(
        vm.tasks().list().iter().all(|t| t.kind != "parity_resync"),
        "the log was replayed: no parity resync"
    );
    let vol = e.bdevs().get("dg01/r5").unwrap();
    assert!(read(&e, &vol, 0, len).unwrap() == model);
    assert_eq!(mismatching_rows(&vm, &vol), Vec::<u64>::new());
    drop(vol);
    vm.shutdown();
    e.shutdown();
}

/// With `log_failure readonly`, losing the last log refuses writes (the write that found the
/// log failed included, nothing of it written) while reads go on; a new log plex lifts it.
#[test]
fn a_readonly_policy_refuses_writes_without_a_log() {
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    let d = error_disks(&e, 5, 16);
    vm.dg_create("dg01", &d, false).unwrap();
    let vol = create_req(
        &vm,
        &VolumeCreate {
            dg: "dg01".into(),
            name: "r5".into(),
            size: 2 << 20,
            layout: "raid5".into(),
            ncol: Some(3),
            nlog: Some(1),
            log_failure: Some("readonly".into()),
            ..Default::default()
        },
    );
    let bad = VolumeCreate {
        dg: "dg01".into(),
        name: "r5b".into(),
        size: 1 << 20,
        layout: "raid5".into(),
        log_failure: Some("sometimes".into()),
        ..Default::default()
    };
    assert!(vm
        .volume_create(&bad)
        .unwrap_err()
        .to_string()
        .contains("unknown log_failure"));
    let len = vol.num_blocks() * 512;
    let model = pattern(1, len as usize);
    write(&e, &vol, 0, &model).unwrap();
    let (cfg, _) = vm.config("dg01").unwrap();
    let log = cfg
        .plexes_of("r5")
        .into_iter()
        .find(|p| p.state == PlexState::Log)
        .unwrap()
        .clone();
    let log_disk = cfg.subdisks_of(&log.name)[0].disk.clone();
    let log_bdev = vm.member_bdevs("dg01").unwrap()[&log_disk].clone();
    inject(&e, &log_bdev, InjectTarget::Write, 1_000_000);
    assert!(
        write(&e, &vol, 8192, &pattern(2, 4096)).is_err(),
        "the write that lost the log"
    );
    assert!(
        write(&e, &vol, 0, &pattern(3, 4096)).is_err(),
        "later writes"
    );
    assert!(
        read(&e, &vol, 0, len).unwrap() == model,
        "reads go on, nothing was written"
    );
    // A new log (on a disk of its own) lifts it.
    vm.log_attach("dg01", "r5", None).unwrap();
    let w = pattern(4, 4096);
    write(&e, &vol, 0, &w).unwrap();
    assert_eq!(read(&e, &vol, 0, 4096).unwrap(), w);
    drop(vol);
    vm.shutdown();
    e.shutdown();
}

/// A column disk that fails the flush after which log entries would be retired (its cache
/// may have lost those rows) is recorded stale; the volume serves on degraded, every write
/// reads back, and the rows the log still covered are right.
#[test]
fn a_column_disk_failing_the_retire_flush_is_recorded_stale() {
    use super::raid5_io::{column_on, stale_columns};
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    let d = error_disks(&e, 4, 16);
    vm.dg_create("dg01", &d, false).unwrap();
    let vol = raid5(&vm, "r5", 4 << 20, 3, 8);
    let len = vol.num_blocks() * 512;
    let mut model = pattern(1, len as usize);
    write(&e, &vol, 0, &model).unwrap();
    let disk = d
        .iter()
        .find(|b| column_on(&vm, b) == Some(1))
        .expect("a disk holds column 1")
        .clone();
    inject(&e, &disk, InjectTarget::Flush, 1_000_000);
    // Small writes: read-modify-write, logged, then retired after a flush of the columns.
    for i in 0..4u64 {
        let off = 40_960 + i * 20_480;
        let w = pattern(10 + i, 4096);
        write(&e, &vol, off, &w).expect("the write goes on");
        model[off as usize..off as usize + w.len()].copy_from_slice(&w);
    }
    wait_until(
        "column 1 recorded stale after its disk failed a flush",
        || stale_columns(&vm, "r5") == vec![1],
    );
    assert!(read(&e, &vol, 0, len).unwrap() == model, "degraded reads");
    drop(vol);
    vm.shutdown();
    e.shutdown();
}
