//! Read errors on mirrors: served elsewhere, repaired, budget.

use super::*;
use crate::drivers::error::InjectTarget;
use crate::volume::manager::resync::READ_ERROR_BUDGET;
use crate::volume::model::objects::{KernelState, PlexState};

fn setup() -> (
    Arc<Engine>,
    Arc<VolumeManager>,
    Vec<String>,
    Arc<Bdev>,
    String,
) {
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    let d = error_disks(&e, 2, 16);
    vm.dg_create("dg01", &d, false).unwrap();
    let vol = create(&vm, "vol01", 4 << 20, "mirror");
    let victim = plex_on(&vm, "disk02");
    (e, vm, d, vol, victim)
}

fn errors_of(vm: &VolumeManager, plex: &str) -> u64 {
    let list = serde_json::to_value(vm.volume_list(Some("dg01"), Some("vol01")).unwrap()).unwrap();
    list[0]["plexes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == plex)
        .map_or(0, |p| p["read_errors"].as_u64().unwrap())
}

/// Scenario 1: a read error on one mirror is served from the other, the block is rewritten
/// on the failing plex, which stays in with its error count raised.
#[test]
fn a_read_error_is_served_from_the_other_mirror_and_repaired() {
    let (e, vm, d, vol, victim) = setup();
    let data = pattern(1, 64 << 10);
    write(&e, &vol, 0, &data).unwrap();
    let raw = e.bdevs().get(&d[1]).unwrap();
    let writes_before = raw.iostat().num_write_ops;
    // The next read on disk02 fails: it is retried on the other plex.
    inject(&e, &d[1], InjectTarget::Read, 1);
    for _ in 0..4 {
        assert_eq!(read(&e, &vol, 0, 64 << 10).unwrap(), data);
    }
    wait_until("the repair", || errors_of(&vm, &victim) == 1);
    assert_eq!(
        plex_state(&vm, &victim),
        (PlexState::Active, KernelState::Enabled)
    );
    assert!(
        raw.iostat().num_write_ops > writes_before,
        "the range was rewritten"
    );
    assert_eq!(plex_read(&vm, &vol, &victim, 0, 128), data);
    drop(vol);
    vm.shutdown();
    e.shutdown();
}

/// Scenario 2: the rewrite fails too: the plex is detached and the volume keeps serving.
#[test]
fn a_read_error_whose_rewrite_fails_detaches_the_plex() {
    let (e, vm, d, vol, victim) = setup();
    let data = pattern(2, 8192);
    write(&e, &vol, 4096, &data).unwrap();
    inject(&e, &d[1], InjectTarget::All, 1000);
    for _ in 0..4 {
        assert_eq!(read(&e, &vol, 4096, 8192).unwrap(), data);
    }
    wait_until("the detach", || {
        plex_state(&vm, &victim).1 == KernelState::Detached
    });
    assert_eq!(plex_state(&vm, &victim).0, PlexState::Iofail);
    assert_eq!(read(&e, &vol, 4096, 8192).unwrap(), data);
    let more = pattern(3, 4096);
    write(&e, &vol, 0, &more).unwrap();
    assert_eq!(read(&e, &vol, 0, 4096).unwrap(), more);
    drop(vol);
    vm.shutdown();
    e.shutdown();
}

/// Past the read-error budget the plex is detached even though each repair worked.
#[test]
fn a_plex_past_its_read_error_budget_is_detached() {
    let (e, vm, d, vol, victim) = setup();
    let data = pattern(4, 4096);
    write(&e, &vol, 0, &data).unwrap();
    for i in 0..=READ_ERROR_BUDGET {
        if plex_state(&vm, &victim).1 == KernelState::Detached {
            break;
        }
        inject(&e, &d[1], InjectTarget::Read, 1);
        // Read until the failing plex has been hit and repaired.
        wait_until("a repaired read error", || {
            assert_eq!(read(&e, &vol, 0, 4096).unwrap(), data);
            errors_of(&vm, &victim) > i as u64
                || plex_state(&vm, &victim).1 == KernelState::Detached
        });
    }
    wait_until("the detach", || {
        plex_state(&vm, &victim).1 == KernelState::Detached
    });
    assert_eq!(read(&e, &vol, 0, 4096).unwrap(), data);
    drop(vol);
    vm.shutdown();
    e.shutdown();
}

/// During a crash resync, a read error on the resync source in a range the resync has not
/// reached yet is not served from the other plex (which may hold older data there), and the
/// source is not "repaired" from it: the read fails, the source keeps its data, and after the
/// resync every plex holds it.
#[test]
fn a_read_error_on_the_resync_source_never_serves_or_copies_unsynced_data() {
    use crate::volume::copy::task::TaskState;
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    let d = error_disks(&e, 2, 16);
    vm.dg_create("dg01", &d, false).unwrap();
    let vol = create(&vm, "vol01", 4 << 20, "mirror");
    let data = pattern(41, 4 << 20);
    write(&e, &vol, 0, &data).unwrap();
    let plexes = plex_names(&vm, "dg01", "vol01");
    let (cfg, _) = vm.config("dg01").unwrap();
    drop(vol);
    vm.crash();
    // The crash tore a write: plex 2 holds older bytes in the volume's third MiB.
    let sd = cfg.subdisks_of(&plexes[1])[0].clone();
    let disk = cfg.disk(&sd.disk).unwrap();
    let raw = e.bdevs().get(&disk.device).unwrap();
    let at = 2u64 << 20;
    write(
        &e,
        &raw,
        (disk.public_offset + sd.disk_offset) * 512 + at,
        &vec![0xee; 1 << 20],
    )
    .unwrap();
    let source_dev = {
        let s = cfg.subdisks_of(&plexes[0])[0].disk.clone();
        cfg.disk(&s).unwrap().device.clone()
    };
    let vm2 = VolumeManager::new(e.clone());
    let gate = hold_resync_at(&vm2, 0);
    vm2.dg_import(Some("dg01"), None, None).unwrap();
    gate.wait_reached("the resync");
    let vol = e.bdevs().get("dg01/vol01").unwrap();
    let resync = task_of_kind(&vm2, "resync");
    assert_eq!(resync.source.as_deref(), Some(plexes[0].as_str()));
    inject(&e, &source_dev, InjectTarget::Read, 1);
    // An error is a fair answer; the unsynced plex's bytes are not.
    if let Ok(got) = read(&e, &vol, at, 64 << 10) {
        assert!(
            got == data[at as usize..(at + (64 << 10)) as usize],
            "a read during the resync returned the unsynced plex's data"
        );
    }
    gate.open();
    assert_eq!(
        vm2.tasks()
            .wait(resync.id, std::time::Duration::from_secs(60))
            .unwrap()
            .state(),
        TaskState::Done
    );
    assert!(
        read(&e, &vol, 0, 4 << 20).unwrap() == data,
        "the source was overwritten with the unsynced plex's data"
    );
    for p in &plexes {
        assert!(plex_read(&vm2, &vol, p, 0, 4 << 11) == data, "plex {p}");
    }
    drop(vol);
    vm2.shutdown();
    e.shutdown();
}

/// A read repair whose rewrite the disk never answers: dissociating the plex it rewrites
/// returns, and the range under the hung write is not handed to a new volume, which keeps its
/// data when the late write lands.
#[test]
fn a_hung_repair_write_neither_blocks_a_dissociate_nor_lands_in_a_new_volume() {
    use crate::drivers::error::{Arming, ErrorKind};
    use std::time::Duration;
    let (e, vm, d, vol, victim) = setup();
    // (`pattern` seeds differ in more than their lowest bit.)
    let data = pattern(6, 64 << 10);
    write(&e, &vol, 0, &data).unwrap();
    let shared = crate::volume::io::driver::shared_of(&vol).unwrap();
    shared.barrier().set_io_timeout(Duration::from_millis(200));
    // The read on disk02 fails, and the rewrite the repair sends there hangs.
    err_state(&e, &d[1])
        .inject(InjectTarget::Write, &Arming::new(ErrorKind::Hold, 1))
        .unwrap();
    inject(&e, &d[1], InjectTarget::Read, 1);
    for _ in 0..4 {
        assert_eq!(read(&e, &vol, 0, 64 << 10).unwrap(), data);
    }
    wait_until("the repair write to outlive its timeout", || {
        shared.barrier().slow_ios() >= 1
    });
    drop((vol, shared));
    let (tx, rx) = std::sync::mpsc::channel();
    let m = vm.clone();
    let v = victim.clone();
    std::thread::spawn(move || {
        let _ = tx.send(m.plex_detach("dg01", &v, true));
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("plex_detach -dissociate did not return within 20 s")
        .expect("plex_detach");
    let new = vm
        .volume_create(&VolumeCreate {
            dg: "dg01".into(),
            name: "new".into(),
            size: 4 << 20,
            layout: "concat".into(),
            alloc: Some(vec!["disk02".into()]),
            ..Default::default()
        })
        .unwrap();
    let new = e.bdevs().get(&new).unwrap();
    let mine = pattern(9, 4 << 20);
    write(&e, &new, 0, &mine).unwrap();
    err_state(&e, &d[1]).clear();
    wait_until("the repair to end", || vm.repair_stats().done >= 1);
    wait_until("the fenced write to land", || vm.fenced_copy_writes() == 0);
    assert!(
        read(&e, &new, 0, 4 << 20).unwrap() == mine,
        "the late repair write to {victim} landed in volume new"
    );
    drop(new);
    vm.shutdown();
    e.shutdown();
}

/// Two mirrored volumes `a` (disk01+disk02) and `b` (disk03+disk04) on five error disks; `a`'s
/// read repair write hangs on disk02 (held), so the one repair worker is busy, and a read
/// error on `b`'s plex on disk03 leaves `b`'s repair waiting in the queue behind it.
struct QueuedRepair {
    e: Arc<Engine>,
    vm: Arc<VolumeManager>,
    d: Vec<String>,
    bdata: Vec<u8>,
}

fn mirror_on(vm: &VolumeManager, name: &str, alloc: &[&str], layout: &str) -> Arc<Bdev> {
    let b = vm
        .volume_create(&VolumeCreate {
            dg: "dg01".into(),
            name: name.into(),
            size: 4 << 20,
            layout: layout.into(),
            alloc: Some(alloc.iter().map(|s| s.to_string()).collect()),
            ..Default::default()
        })
        .unwrap();
    vm.engine().bdevs().get(&b).unwrap()
}

fn queued_repair(ndisks: usize) -> QueuedRepair {
    use crate::drivers::error::{Arming, ErrorKind};
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    let d = error_disks(&e, ndisks, 16);
    vm.dg_create("dg01", &d, false).unwrap();
    let a = mirror_on(&vm, "a", &["disk01", "disk02"], "mirror");
    let b = mirror_on(&vm, "b", &["disk03", "disk04"], "mirror");
    write(&e, &a, 0, &pattern(1, 1 << 20)).unwrap();
    let bdata = pattern(2, 1 << 20);
    write(&e, &b, 0, &bdata).unwrap();
    let sa = crate::volume::io::driver::shared_of(&a).unwrap();
    let sb = crate::volume::io::driver::shared_of(&b).unwrap();
    sa.barrier()
        .set_io_timeout(std::time::Duration::from_millis(50));
    err_state(&e, &d[1])
        .inject(InjectTarget::Write, &Arming::new(ErrorKind::Hold, 1))
        .unwrap();
    inject(&e, &d[1], InjectTarget::Read, 1);
    while sa.read_errors() < 1 {
        read(&e, &a, 0, 4096).unwrap();
    }
    wait_until("a's repair write to hang", || sa.barrier().slow_ios() >= 1);
    inject(&e, &d[2], InjectTarget::Read, 1);
    while sb.read_errors() < 1 {
        assert!(read(&e, &b, 0, 4096).unwrap() == bdata[..4096]);
    }
    wait_until("b's repair to be queued", || {
        vm.repair_stats().requested >= 2
    });
    assert_eq!(
        vm.repair_stats().done,
        0,
        "the worker is busy with a's repair"
    );
    // No request of the test's stays in flight (a stop would wait for it).
    drop((a, b, sa, sb));
    QueuedRepair { e, vm, d, bdata }
}

/// Lets `a`'s held repair write through: the worker then runs `b`'s queued repair.
fn release_held_repair(q: &QueuedRepair) {
    let disk = q.e.bdevs().get(&q.d[1]).unwrap();
    crate::bdev::blocking::run_io(
        &q.e,
        0,
        &disk,
        crate::bdev::IoType::Reset,
        0,
        0,
        None,
        std::time::Duration::from_secs(30),
    )
    .unwrap();
    wait_until("both repairs", || q.vm.repair_stats().done >= 2);
}

/// A read repair that waited in the queue while its volume was deleted must not run: the
/// freed space now belongs to another volume (it used to be rewritten with the deleted
/// volume's data, from the map the repair was queued with).
#[test]
fn a_queued_read_repair_never_writes_a_deleted_volumes_freed_space() {
    let q = queued_repair(4);
    let (e, vm) = (&q.e, &q.vm);
    vm.volume_delete("dg01", "b").unwrap();
    let c = mirror_on(vm, "c", &["disk03"], "concat");
    let cdata = pattern(40, 1 << 20);
    write(e, &c, 0, &cdata).unwrap();
    assert_eq!(vm.repair_stats().done, 0, "b's repair has not run yet");
    release_held_repair(&q);
    let got = read(e, &c, 0, 1 << 20).unwrap();
    assert!(
        got == cdata,
        "volume c was overwritten by a read repair of deleted volume b (first 4 KiB now b's: {})",
        got[..4096] == q.bdata[..4096]
    );
    drop(c);
    q.vm.shutdown();
    q.e.shutdown();
}

/// A read repair that waited in the queue while a subdisk move swapped its plex onto a new
/// place writes the plex where it is now, never its old (freed, reused) place.
#[test]
fn a_queued_read_repair_writes_a_moved_subdisks_new_place_not_its_old_one() {
    use crate::volume::copy::task::TaskState;
    let q = queued_repair(5);
    let (e, vm) = (&q.e, &q.vm);
    let victim = plex_on(vm, "disk03");
    let (cfg, _) = vm.config("dg01").unwrap();
    let sd = cfg.subdisks_of(&victim)[0].clone();
    let id = vm
        .subdisk_move("dg01", &sd.name, Some("disk05"), std::time::Duration::ZERO)
        .unwrap();
    vm.tasks()
        .wait(id, std::time::Duration::from_secs(60))
        .unwrap();
    assert_eq!(vm.tasks().get(id).unwrap().state(), TaskState::Done);
    let c = mirror_on(vm, "c", &["disk03"], "concat");
    let (cfg, _) = vm.config("dg01").unwrap();
    let csd = cfg.subdisks_of("c-01")[0].clone();
    assert_eq!(
        (csd.disk.as_str(), csd.disk_offset),
        (sd.disk.as_str(), sd.disk_offset),
        "c took the moved subdisk's old place"
    );
    let cdata = pattern(40, 1 << 20);
    write(e, &c, 0, &cdata).unwrap();
    assert_eq!(vm.repair_stats().done, 0, "b's repair has not run yet");
    release_held_repair(&q);
    let got = read(e, &c, 0, 1 << 20).unwrap();
    assert!(
        got == cdata,
        "volume c was overwritten by a read repair of volume b (first 4 KiB now b's: {})",
        got[..4096] == q.bdata[..4096]
    );
    assert_eq!(
        read(e, &e.bdevs().get("dg01/b").unwrap(), 0, 1 << 20).unwrap(),
        q.bdata,
        "volume b kept its data"
    );
    drop(c);
    q.vm.shutdown();
    q.e.shutdown();
}

/// A read repair whose write the disk does not answer: deleting its volume must neither hang
/// nor free the space under that pending write for reuse. The delete goes through (the write
/// is fenced) and the allocator skips the range until the write lands, so a volume created on
/// the same disk meanwhile keeps its data when it does.
#[test]
fn space_under_a_hung_read_repair_write_is_not_freed() {
    let q = queued_repair(4);
    let (e, vm) = (&q.e, &q.vm);
    vm.set_stop_wait(std::time::Duration::from_millis(200));
    let (cfg, _) = vm.config("dg01").unwrap();
    let held = cfg.subdisks_of(&plex_on(vm, "disk02"))[0].clone();
    vm.volume_delete("dg01", "a").unwrap();
    assert!(vm.fenced_copy_writes() >= 1, "a's repair write is fenced");
    let c = mirror_on(vm, "c", &["disk02"], "concat");
    let (cfg, _) = vm.config("dg01").unwrap();
    let csd = cfg.subdisks_of("c-01")[0].clone();
    assert!(
        !(csd.disk_offset..csd.disk_offset + csd.len).contains(&held.disk_offset),
        "c was given the range under a's pending repair write ({csd:?} over {held:?})"
    );
    let cdata = pattern(40, 4 << 20);
    write(e, &c, 0, &cdata).unwrap();
    release_held_repair(&q);
    wait_until("the fenced write to land", || vm.fenced_copy_writes() == 0);
    assert!(
        read(e, &c, 0, 4 << 20).unwrap() == cdata,
        "the late repair write of deleted volume a landed in volume c"
    );
    drop(c);
    q.vm.shutdown();
    q.e.shutdown();
}
