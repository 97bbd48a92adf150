//! Read errors on mirrors: served elsewhere, repaired, budget.

use super::*;
use crate::drivers::error::InjectTarget;
use crate::volume::objects::{KernelState, PlexState};
use crate::volume::resync::READ_ERROR_BUDGET;

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
    let list = vm.volume_list(Some("dg01"), Some("vol01")).unwrap();
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
    use crate::volume::task::TaskState;
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
    let resync = vm2
        .tasks()
        .list()
        .into_iter()
        .find(|t| t.kind == "resync")
        .unwrap();
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
    let shared = crate::volume::driver::shared_of(&vol).unwrap();
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
