//! Copies that must stop, restart or be abandoned when plexes fail or plexd dies.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::*;
use crate::drivers::delay::{self, Latencies};
use crate::volume::copy::task::TaskState;
use crate::volume::io::driver::VolumeEvent;
use crate::volume::model::objects::{KernelState, VolumeState};

/// `n` malloc bdevs behind delay bdevs (each request takes `ms`), so copies run long
/// enough to act on them midway.
fn slow_disks(e: &Engine, n: usize, mib: u64, ms: u64) -> Vec<String> {
    let us = ms * 1000;
    disks(e, n, mib)
        .iter()
        .map(|m| {
            let name = format!("D_{m}");
            let l = Latencies {
                avg_read: us,
                p99_read: us,
                avg_write: us,
                p99_write: us,
            };
            delay::create(e, &name, m, l, None).unwrap();
            name
        })
        .collect()
}

fn sd_offset(vm: &VolumeManager, plex: &str) -> (String, u64) {
    let (cfg, _) = vm.config("dg01").unwrap();
    let sd = cfg.subdisks_of(plex)[0].clone();
    let d = cfg.disk(&sd.disk).unwrap();
    (d.device.clone(), (d.public_offset + sd.disk_offset) * 512)
}

/// Detaching the plex a resync copies from stops that copy before the map changes, and
/// the resync goes on from another plex: writes made after the detach are never
/// overwritten with the detached plex's older data.
#[test]
fn detaching_the_resync_source_restarts_the_resync_elsewhere() {
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    let d = slow_disks(&e, 3, 16, 10);
    vm.dg_create("dg01", &d, false).unwrap();
    let vol = vm
        .volume_create(&VolumeCreate {
            dg: "dg01".into(),
            name: "vol01".into(),
            size: 12 << 20,
            layout: "mirror".into(),
            nmirror: Some(3),
            ..Default::default()
        })
        .unwrap();
    let vol = e.bdevs().get(&vol).unwrap();
    let mut model = pattern(1, 12 << 20);
    write(&e, &vol, 0, &model).unwrap();
    let plexes = plex_names(&vm, "dg01", "vol01");
    drop(vol);
    vm.crash();
    let vm2 = VolumeManager::new(e.clone());
    vm2.dg_import(Some("dg01"), None, None).unwrap();
    let vol = e.bdevs().get("dg01/vol01").unwrap();
    let resync = task_of_kind(&vm2, "resync");
    assert_eq!(resync.source.as_deref(), Some(plexes[0].as_str()));
    // While it copies: new data at the end, then the source leaves.
    let tail = pattern(2, 1 << 20);
    write(&e, &vol, 11 << 20, &tail).unwrap();
    model[11 << 20..].copy_from_slice(&tail);
    vm2.plex_detach("dg01", &plexes[0], false).unwrap();
    assert_eq!(
        vm2.tasks()
            .wait(resync.id, Duration::from_secs(60))
            .unwrap()
            .state(),
        TaskState::Cancelled
    );
    let again = vm2
        .tasks()
        .list()
        .into_iter()
        .find(|t| t.kind == "resync" && t.id != resync.id)
        .expect("the resync restarts from another plex");
    assert_ne!(again.source.as_deref(), Some(plexes[0].as_str()));
    assert_eq!(
        vm2.tasks()
            .wait(again.id, Duration::from_secs(60))
            .unwrap()
            .state(),
        TaskState::Done
    );
    assert!(read(&e, &vol, 0, 12 << 20).unwrap() == model);
    for p in &plexes[1..] {
        assert!(plex_read(&vm2, &vol, p, 0, 12 << 11) == model, "plex {p}");
    }
    drop(vol);
    vm2.shutdown();
    e.shutdown();
}

/// A crash while a resync runs restarts it from the beginning: what the first resync
/// had already made equal may differ again (a write torn by the second crash).
#[test]
fn a_crash_during_resync_restarts_it_from_the_beginning() {
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    let d = slow_disks(&e, 2, 24, 60);
    vm.dg_create("dg01", &d, false).unwrap();
    let vol = create(&vm, "vol01", 20 << 20, "mirror");
    let data = pattern(3, 20 << 20);
    write(&e, &vol, 0, &data).unwrap();
    let plexes = plex_names(&vm, "dg01", "vol01");
    let (dev, off) = sd_offset(&vm, &plexes[1]);
    drop(vol);
    vm.crash();
    let vm2 = VolumeManager::new(e.clone());
    vm2.dg_import(Some("dg01"), None, None).unwrap();
    wait_until("a resync checkpoint", || {
        vm2.config("dg01")
            .unwrap()
            .0
            .volume("vol01")
            .unwrap()
            .resync_offset
            .unwrap_or(0)
            > 0
    });
    vm2.crash();
    // The second crash tore a write in the already-resynced start: plex 2 differs there.
    let raw = e.bdevs().get(&dev).unwrap();
    write(&e, &raw, off, &[0x5a; 4096]).unwrap();
    let vm3 = VolumeManager::new(e.clone());
    vm3.dg_import(Some("dg01"), None, None).unwrap();
    let (cfg, _) = vm3.config("dg01").unwrap();
    assert_eq!(
        cfg.volume("vol01").unwrap().resync_offset,
        Some(0),
        "starts over"
    );
    let t = task_of_kind(&vm3, "resync");
    assert_eq!(
        vm3.tasks()
            .wait(t.id, Duration::from_secs(120))
            .unwrap()
            .state(),
        TaskState::Done
    );
    let vol = e.bdevs().get("dg01/vol01").unwrap();
    assert_eq!(
        plex_read(&vm3, &vol, &plexes[1], 0, 8),
        plex_read(&vm3, &vol, &plexes[0], 0, 8)
    );
    drop(vol);
    vm3.shutdown();
    e.shutdown();
}

/// Failures that would leave no in-sync plex take the volume offline instead (sticky
/// until it is restarted); the last good plex is never detached.
#[test]
fn losing_every_plex_disables_the_volume_until_restarted() {
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    let d = disks(&e, 2, 16);
    vm.dg_create("dg01", &d, false).unwrap();
    let vol = create(&vm, "vol01", 4 << 20, "mirror");
    let shared = crate::volume::io::driver::shared_of(&vol).unwrap();
    let map = shared.map();
    let id = shared
        .next_event
        .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    vm.events
        .send(VolumeEvent::WriteFailed {
            volume: shared.clone(),
            map,
            plexes: 0b11,
            id,
        })
        .unwrap();
    wait_until("the volume to go offline", || !shared.map().enabled);
    assert!(read(&e, &vol, 0, 4096).is_err(), "no I/O while disabled");
    let (cfg, _) = vm.config("dg01").unwrap();
    assert!(
        cfg.plexes.iter().all(|p| p.kstate == KernelState::Enabled),
        "nothing detached"
    );
    drop(vol);
    vm.volume_stop("dg01", "vol01").unwrap();
    vm.volume_start("dg01", "vol01").unwrap();
    let vol = e.bdevs().get("dg01/vol01").unwrap();
    assert!(read(&e, &vol, 0, 4096).is_ok());
    // The failure was never recorded, so the stop left it ACTIVE: it resyncs, then runs.
    wait_until("the resync after the restart", || {
        vm.config("dg01").unwrap().0.volume("vol01").unwrap().state == VolumeState::Active
    });
    drop(vol);
    vm.shutdown();
    e.shutdown();
}

/// The device and the byte offset of plex `plex`'s first subdisk, and its disk's name.
fn plex_disk(vm: &VolumeManager, plex: &str) -> String {
    let (cfg, _) = vm.config("dg01").unwrap();
    cfg.subdisks_of(plex)[0].disk.clone()
}

/// A crashed mirror comes back with `n` plexes in SYNC, its resync held before block `at`.
/// Returns the new manager, the gate holding the resync, the data written and the plexes.
fn crashed_mirror(
    e: &Arc<Engine>,
    d: &[String],
    n: u32,
    at: u64,
) -> (Arc<VolumeManager>, Arc<Gate>, Vec<u8>, Vec<String>) {
    let vm = VolumeManager::new(e.clone());
    vm.dg_create("dg01", d, false).unwrap();
    let vol = vm
        .volume_create(&VolumeCreate {
            dg: "dg01".into(),
            name: "vol01".into(),
            size: 4 << 20,
            layout: "mirror".into(),
            nmirror: Some(n),
            ..Default::default()
        })
        .unwrap();
    let vol = e.bdevs().get(&vol).unwrap();
    let data = pattern(21, 4 << 20);
    write(e, &vol, 0, &data).unwrap();
    let plexes = plex_names(&vm, "dg01", "vol01");
    drop(vol);
    vm.crash();
    let vm2 = VolumeManager::new(e.clone());
    let gate = hold_resync_at(&vm2, at);
    vm2.dg_import(Some("dg01"), None, None).unwrap();
    gate.wait_reached("the resync");
    (vm2, gate, data, plexes)
}

/// Dissociating a plex a crash resync writes stops that resync before the plex's space is
/// freed: a volume created on that space keeps its data when the resync would have gone on.
#[test]
fn dissociating_a_resync_target_stops_its_writes_before_the_space_is_reused() {
    let e = engine();
    let d = disks(&e, 2, 16);
    let (vm, gate, _, plexes) = crashed_mirror(&e, &d, 2, 2048);
    let resync = task_of_kind(&vm, "resync");
    assert_eq!(resync.source.as_deref(), Some(plexes[0].as_str()));
    let disk = plex_disk(&vm, &plexes[1]);
    vm.plex_detach("dg01", &plexes[1], true).unwrap();
    // The freed space holds a new volume now.
    let new = vm
        .volume_create(&VolumeCreate {
            dg: "dg01".into(),
            name: "new".into(),
            size: 4 << 20,
            layout: "concat".into(),
            alloc: Some(vec![disk]),
            ..Default::default()
        })
        .unwrap();
    let new = e.bdevs().get(&new).unwrap();
    let mine = pattern(22, 4 << 20);
    write(&e, &new, 0, &mine).unwrap();
    gate.open();
    wait_until("the first resync to end", || {
        resync.state() != TaskState::Running
    });
    assert!(
        read(&e, &new, 0, 4 << 20).unwrap() == mine,
        "the resync of {} wrote over volume new",
        plexes[1]
    );
    assert_eq!(resync.state(), TaskState::Cancelled);
    let (cfg, _) = vm.config("dg01").unwrap();
    assert_eq!(cfg.volume("vol01").unwrap().state, VolumeState::Active);
    drop(new);
    vm.shutdown();
    e.shutdown();
}

/// A crash resync of a 3-way mirror whose one target fails: that plex is detached (IOFAIL)
/// and the other target is still brought in sync; the volume leaves SYNC.
#[test]
fn a_failing_resync_target_is_detached_and_the_others_complete() {
    use crate::drivers::error::InjectTarget;
    use crate::volume::model::objects::PlexState;
    let e = engine();
    let d = error_disks(&e, 3, 16);
    let (vm, gate, data, plexes) = crashed_mirror(&e, &d, 3, 0);
    let bad = plex_disk(&vm, &plexes[2]);
    let (cfg, _) = vm.config("dg01").unwrap();
    let dev = cfg.disk(&bad).unwrap().device.clone();
    inject(&e, &dev, InjectTarget::Write, 1 << 20);
    gate.open();
    wait_until("every resync to end", || {
        vm.tasks()
            .list()
            .iter()
            .all(|t| t.kind != "resync" || t.state() != TaskState::Running)
    });
    let (cfg, _) = vm.config("dg01").unwrap();
    assert_eq!(
        cfg.volume("vol01").unwrap().state,
        VolumeState::Active,
        "the resync completed for the healthy plexes: {:?}",
        vm.tasks()
            .list()
            .iter()
            .map(|t| t.state())
            .collect::<Vec<_>>()
    );
    assert_eq!(
        plex_state(&vm, &plexes[2]),
        (PlexState::Iofail, KernelState::Detached)
    );
    assert_eq!(
        plex_state(&vm, &plexes[1]),
        (PlexState::Active, KernelState::Enabled)
    );
    let vol = e.bdevs().get("dg01/vol01").unwrap();
    assert!(plex_read(&vm, &vol, &plexes[1], 0, 4 << 11) == data);
    err_state(&e, &dev).clear();
    drop(vol);
    vm.shutdown();
    e.shutdown();
}

/// A resync write the target disk answers only after the copier's I/O timeout: the chunk
/// stays locked until the write really completed, so a guest write to it lands after the
/// copy's (older) data, never under it. The error bdev holds the copy write and lets it down
/// to the disk when reset; the timeout is shortened so the test is quick.
#[test]
fn a_copy_write_that_outlives_its_timeout_keeps_its_chunk_locked() {
    use crate::bdev::blocking::run_io;
    use crate::bdev::IoType;
    use crate::drivers::error::{Arming, ErrorKind, InjectTarget};
    let e = engine();
    let d = error_disks(&e, 2, 16);
    let (vm, gate, data, plexes) = crashed_mirror(&e, &d, 2, 0);
    let vol = e.bdevs().get("dg01/vol01").unwrap();
    let shared = crate::volume::io::driver::shared_of(&vol).unwrap();
    shared.barrier().set_io_timeout(Duration::from_millis(200));
    let resync = task_of_kind(&vm, "resync");
    assert_eq!(resync.source.as_deref(), Some(plexes[0].as_str()));
    let (cfg, _) = vm.config("dg01").unwrap();
    let target = cfg
        .disk(&plex_disk(&vm, &plexes[1]))
        .unwrap()
        .device
        .clone();
    // The resync's first write to the target hangs in the disk.
    err_state(&e, &target)
        .inject(InjectTarget::Write, &Arming::new(ErrorKind::Hold, 1))
        .unwrap();
    gate.open();
    wait_until("the copy write to outlive its timeout", || {
        shared.barrier().slow_ios() >= 1
    });
    let new = pattern(51, 64 << 10);
    let writer = {
        let (e, vol, new) = (e.clone(), vol.clone(), new.clone());
        std::thread::spawn(move || write(&e, &vol, 0, &new))
    };
    // Either the guest write got through (the chunk was released), or the copier is still
    // waiting for its write a timeout later (the chunk is held).
    wait_until("the guest write to finish or the copier to wait on", || {
        writer.is_finished() || shared.barrier().slow_ios() >= 2
    });
    // The disk answers: the held copy write lands now.
    let disk = e.bdevs().get(&target).unwrap();
    run_io(
        &e,
        0,
        &disk,
        IoType::Reset,
        0,
        0,
        None,
        Duration::from_secs(30),
    )
    .unwrap();
    writer.join().unwrap().expect("the guest write");
    wait_until("the resync to end", || resync.state() != TaskState::Running);
    let mut want = data;
    want[..new.len()].copy_from_slice(&new);
    for p in &plexes {
        assert!(
            plex_read(&vm, &vol, p, 0, 4 << 11) == want,
            "plex {p} does not hold the guest write (a late copy write landed over it; resync {:?})",
            resync.state()
        );
    }
    assert_eq!(resync.state(), TaskState::Done);
    drop((vol, shared));
    vm.shutdown();
    e.shutdown();
}

/// Runs `f` on another thread and returns what it returned; fails the test if it has not
/// returned within 20 s (it hung behind a copy I/O the disk never answers).
fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(20)).unwrap_or_else(|_| {
        panic!("{what} did not return within 20 s: it hangs behind a copy write the disk never answers")
    })
}

/// A crashed `n`-way mirror whose resync's first write to `plexes[1]` hangs in the disk (the
/// error bdev's `hold`, released only by a clear) and has outlived the copier's (shortened)
/// I/O timeout. Returns the manager, the data written before the crash, the plexes and the
/// held error bdev.
fn hung_resync_write(
    e: &Arc<Engine>,
    n: u32,
) -> (Arc<VolumeManager>, Vec<u8>, Vec<String>, String) {
    use crate::drivers::error::{Arming, ErrorKind, InjectTarget};
    let d = error_disks(e, n as usize, 16);
    let (vm, gate, data, plexes) = crashed_mirror(e, &d, n, 0);
    let vol = e.bdevs().get("dg01/vol01").unwrap();
    let shared = crate::volume::io::driver::shared_of(&vol).unwrap();
    shared.barrier().set_io_timeout(Duration::from_millis(200));
    let (cfg, _) = vm.config("dg01").unwrap();
    let held = cfg
        .disk(&plex_disk(&vm, &plexes[1]))
        .unwrap()
        .device
        .clone();
    err_state(e, &held)
        .inject(InjectTarget::Write, &Arming::new(ErrorKind::Hold, 1))
        .unwrap();
    gate.open();
    wait_until("the copy write to outlive its timeout", || {
        shared.barrier().slow_ios() >= 1
    });
    (vm, data, plexes, held)
}

/// Calls JSON-RPC method `method` of `vm` (on another thread, bounded by [`within`]).
fn rpc(
    vm: &Arc<VolumeManager>,
    method: &'static str,
    params: serde_json::Value,
) -> serde_json::Value {
    let vm = vm.clone();
    within(method, move || {
        let mut t = plexd_control::MethodTable::new();
        crate::volume::api::rpc::register(&mut t, &vm);
        let m = t.get(method).unwrap();
        (m.handler)(Some(params))
    })
    .unwrap_or_else(|e| panic!("{method}: {e:?}"))
}

/// A resync whose copy write the disk never answers: stopping the volume returns (the write
/// is fenced), and JSON-RPC operations on another volume keep working meanwhile. The volume
/// restarted while the write still hangs keeps that chunk locked: a guest write to it waits
/// until the late copy write landed, so both plexes read back the guest write.
#[test]
fn a_hung_copy_write_does_not_freeze_stop_or_other_volumes() {
    let e = engine();
    let (vm, data, plexes, held) = hung_resync_write(&e, 2);
    // The stop gives up waiting for the fenced write quickly.
    vm.set_stop_wait(Duration::from_millis(300));
    let m = vm.clone();
    within("volume_stop of the resyncing volume", move || {
        m.volume_stop("dg01", "vol01")
    })
    .expect("volume_stop");
    assert_eq!(vm.fenced_copy_writes(), 1, "the held copy write is fenced");
    // Another volume, through JSON-RPC, while the copy write still hangs.
    rpc(
        &vm,
        "volume_create",
        serde_json::json!({"dg": "dg01", "name": "other", "size": "1M", "layout": "mirror"}),
    );
    let other = e.bdevs().get("dg01/other").unwrap();
    let mine = pattern(61, 1 << 20);
    write(&e, &other, 0, &mine).unwrap();
    assert!(read(&e, &other, 0, 1 << 20).unwrap() == mine);
    drop(other);
    rpc(
        &vm,
        "volume_stop",
        serde_json::json!({"dg": "dg01", "name": "other"}),
    );
    rpc(&vm, "volume_list", serde_json::json!({"dg": "dg01"}));
    rpc(
        &vm,
        "volume_delete",
        serde_json::json!({"dg": "dg01", "name": "other"}),
    );
    // Restarted while the write still hangs; its resync waits before its first chunk, so
    // it cannot copy over what the late write leaves until the plexes were checked.
    let again = hold_resync_at(&vm, 0);
    let m = vm.clone();
    within("volume_start", move || m.volume_start("dg01", "vol01")).expect("volume_start");
    let vol = e.bdevs().get("dg01/vol01").unwrap();
    let shared = crate::volume::io::driver::shared_of(&vol).unwrap();
    let parked = shared.writes_deferred.load(Ordering::Relaxed);
    let new = pattern(64, 64 << 10);
    let writer = {
        let (e, vol, new) = (e.clone(), vol.clone(), new.clone());
        std::thread::spawn(move || write(&e, &vol, 0, &new))
    };
    wait_until("the guest write to wait for its chunk or complete", || {
        shared.writes_deferred.load(Ordering::Relaxed) > parked || writer.is_finished()
    });
    // The disk answers: the late copy write lands, then the guest write may go.
    err_state(&e, &held).clear();
    writer.join().unwrap().expect("the guest write");
    wait_until("the fenced write to land", || vm.fenced_copy_writes() == 0);
    let mut want = data;
    want[..new.len()].copy_from_slice(&new);
    let check = |when: &str| {
        for p in &plexes {
            assert!(
                plex_read(&vm, &vol, p, 0, 4 << 11) == want,
                "{when}: plex {p} does not hold the guest write (the late copy write landed over it)"
            );
        }
    };
    check("once the late copy write landed");
    again.open();
    wait_until("the resync to end", || {
        vm.tasks()
            .list()
            .iter()
            .all(|t| t.kind != "resync" || t.state() != TaskState::Running)
    });
    check("after the resync");
    drop((vol, shared));
    vm.shutdown();
    e.shutdown();
}

/// Detaching another plex cancels a resync whose write to `plexes[1]` hangs: the detach
/// returns, and a guest write to the hung chunk made meanwhile waits until the late copy
/// write landed, so every plex left in the map reads back the guest write, never the copy's
/// older data.
#[test]
fn a_fenced_copy_write_never_lands_over_a_newer_guest_write() {
    let e = engine();
    let (vm, data, plexes, held) = hung_resync_write(&e, 3);
    // The resync the detach restarts waits before its first chunk, so it cannot copy over
    // what the late write leaves until the plexes were checked.
    let again = hold_resync_at(&vm, 0);
    let m = vm.clone();
    let p2 = plexes[2].clone();
    within("plex_detach of another plex", move || {
        m.plex_detach("dg01", &p2, false)
    })
    .expect("plex_detach");
    let vol = e.bdevs().get("dg01/vol01").unwrap();
    let shared = crate::volume::io::driver::shared_of(&vol).unwrap();
    let parked = shared.writes_deferred.load(Ordering::Relaxed);
    let new = pattern(62, 64 << 10);
    let writer = {
        let (e, vol, new) = (e.clone(), vol.clone(), new.clone());
        std::thread::spawn(move || write(&e, &vol, 0, &new))
    };
    // The guest write is made while the copy write hangs: it either waits for the chunk or
    // (were the chunk released) completes at once.
    wait_until("the guest write to wait for its chunk or complete", || {
        shared.writes_deferred.load(Ordering::Relaxed) > parked || writer.is_finished()
    });
    // The disk answers: the late copy write lands, then the guest write may go.
    err_state(&e, &held).clear();
    writer.join().unwrap().expect("the guest write");
    wait_until("the fenced write to land", || vm.fenced_copy_writes() == 0);
    let mut want = data;
    want[..new.len()].copy_from_slice(&new);
    let check = |when: &str| {
        for p in &plexes[..2] {
            assert!(
                plex_read(&vm, &vol, p, 0, 4 << 11) == want,
                "{when}: plex {p} does not hold the guest write (the late copy write landed over it)"
            );
        }
    };
    check("once the late copy write landed");
    again.open();
    wait_until("the resync to end", || {
        vm.tasks()
            .list()
            .iter()
            .all(|t| t.kind != "resync" || t.state() != TaskState::Running)
    });
    check("after the resync");
    drop((vol, shared));
    vm.shutdown();
    e.shutdown();
}

/// Dissociating a plex whose resync write hangs frees its subdisk in the configuration, but
/// the range under the fenced write is not handed out again until the write landed: a
/// volume created on that disk meanwhile keeps its data when the late write lands.
#[test]
fn space_under_a_fenced_copy_write_is_not_reused() {
    let e = engine();
    let (vm, _, plexes, held) = hung_resync_write(&e, 2);
    let disk = plex_disk(&vm, &plexes[1]);
    let m = vm.clone();
    let p1 = plexes[1].clone();
    within("plex_detach -dissociate of the hung target", move || {
        m.plex_detach("dg01", &p1, true)
    })
    .expect("plex_detach");
    let m = vm.clone();
    let new = within("volume_create on the freed disk", move || {
        m.volume_create(&VolumeCreate {
            dg: "dg01".into(),
            name: "new".into(),
            size: 4 << 20,
            layout: "concat".into(),
            alloc: Some(vec![disk]),
            ..Default::default()
        })
    })
    .expect("volume_create");
    let new = e.bdevs().get(&new).unwrap();
    let mine = pattern(63, 4 << 20);
    write(&e, &new, 0, &mine).unwrap();
    err_state(&e, &held).clear();
    wait_until("the fenced write to land", || vm.fenced_copy_writes() == 0);
    assert!(
        read(&e, &new, 0, 4 << 20).unwrap() == mine,
        "the late copy write of {} landed in volume new",
        plexes[1]
    );
    drop(new);
    vm.shutdown();
    e.shutdown();
}

/// Shutdown while a plex attach's copy write hangs in the disk ends (after its bounded wait)
/// instead of hanging, and does not record the volume CLEAN (a write it issued was still in
/// flight): the volume resyncs at the next import, and every plex ends with the data.
#[test]
fn shutdown_with_a_hung_copy_write_ends_and_leaves_the_volume_to_resync() {
    use crate::drivers::error::{Arming, ErrorKind, InjectTarget};
    use crate::volume::copy::task::HookPoint;
    let e = engine();
    let d = error_disks(&e, 3, 16);
    let vm = VolumeManager::new(e.clone());
    vm.dg_create("dg01", &d, false).unwrap();
    let vol = vm
        .volume_create(&VolumeCreate {
            dg: "dg01".into(),
            name: "vol01".into(),
            size: 4 << 20,
            layout: "mirror".into(),
            nmirror: Some(2),
            alloc: Some(d[..2].to_vec()),
            ..Default::default()
        })
        .unwrap();
    let vol = e.bdevs().get(&vol).unwrap();
    let data = pattern(65, 4 << 20);
    write(&e, &vol, 0, &data).unwrap();
    let shared = crate::volume::io::driver::shared_of(&vol).unwrap();
    shared.barrier().set_io_timeout(Duration::from_millis(200));
    // The attach's first write to the new plex's disk hangs.
    let state = err_state(&e, &d[2]);
    set_hook(&vm, move |p| {
        if let HookPoint::Chunk { task, at: 0 } = p {
            if task.kind == "plex_attach" {
                state
                    .inject(InjectTarget::Write, &Arming::new(ErrorKind::Hold, 1))
                    .unwrap();
            }
        }
    });
    vm.plex_attach("dg01", "vol01", None, Some(&d[2..]), Duration::ZERO)
        .unwrap();
    wait_until("the copy write to outlive its timeout", || {
        shared.barrier().slow_ios() >= 1
    });
    drop((vol, shared));
    vm.set_stop_wait(Duration::from_millis(300));
    let m = vm.clone();
    within("shutdown", move || m.shutdown());
    assert_eq!(vm.fenced_copy_writes(), 1, "the held copy write is fenced");
    err_state(&e, &d[2]).clear();
    wait_until("the fenced write to land", || vm.fenced_copy_writes() == 0);
    let vm2 = VolumeManager::new(e.clone());
    vm2.dg_import(Some("dg01"), None, None).unwrap();
    assert!(
        vm2.tasks().list().iter().any(|t| t.kind == "resync"),
        "the volume was recorded CLEAN with a copy write in flight: no resync at import"
    );
    wait_until("every copy to end", || {
        vm2.tasks()
            .list()
            .iter()
            .all(|t| t.state() != TaskState::Running)
    });
    let vol = e.bdevs().get("dg01/vol01").unwrap();
    for p in plex_names(&vm2, "dg01", "vol01") {
        assert!(plex_read(&vm2, &vol, &p, 0, 4 << 11) == data, "plex {p}");
    }
    drop(vol);
    vm2.shutdown();
    e.shutdown();
}

/// A crashed two-way mirror whose plex 1 holds older data in its first 4 KiB (the newest
/// write reached only plex 0 before the crash), back with its resync of plex 1 held on
/// `gate` before its first chunk. Returns the manager, the gate, the data written, plex 1's
/// stale block and the plexes.
fn crashed_mirror_diverged(
    e: &Arc<Engine>,
    d: &[String],
    gate: &Arc<Gate>,
    hook: impl Fn(crate::volume::copy::task::HookPoint<'_>) + Send + Sync + 'static,
) -> (Arc<VolumeManager>, Vec<u8>, Vec<u8>, Vec<String>) {
    let vm = VolumeManager::new(e.clone());
    vm.dg_create("dg01", d, false).unwrap();
    let vol = create(&vm, "vol01", 4 << 20, "mirror");
    let data = pattern(21, 4 << 20);
    write(e, &vol, 0, &data).unwrap();
    let plexes = plex_names(&vm, "dg01", "vol01");
    let stale = pattern(99, 4096);
    {
        let shared = crate::volume::io::driver::shared_of(&vol).unwrap();
        let map = shared.map();
        let i = map.plexes.iter().position(|p| p.name == plexes[1]).unwrap();
        let mut segs = Vec::new();
        map.plexes[i].geometry.map(0, 8, |s| segs.push(s)).unwrap();
        for s in segs {
            let (from, to) = (
                s.req_offset as usize * 512,
                (s.req_offset + s.len) as usize * 512,
            );
            write(
                e,
                &map.disks[s.target as usize],
                s.target_offset * 512,
                &stale[from..to],
            )
            .unwrap();
        }
    }
    drop(vol);
    vm.crash();
    let vm2 = VolumeManager::new(e.clone());
    let g = gate.clone();
    set_hook(&vm2, move |p| {
        if matches!(p, crate::volume::copy::task::HookPoint::Chunk { task, .. } if task.kind == "resync")
        {
            g.block();
        }
        hook(p);
    });
    vm2.dg_import(Some("dg01"), None, None).unwrap();
    gate.wait_reached("the resync");
    (vm2, data, stale, plexes)
}

/// A resync target whose copy write fails is not counted in sync over that chunk: until it is
/// detached, a read the source fails there is not served by it (it would return the stale
/// block as a success, and the read repair would then copy that block over the source).
#[test]
fn a_failed_resync_target_never_serves_the_chunk_it_failed_to_take() {
    use crate::drivers::error::InjectTarget;
    use crate::volume::copy::task::HookPoint;
    use crate::volume::model::objects::PlexState;
    let e = engine();
    let d = error_disks(&e, 2, 16);
    let (gate, failed) = (Gate::new(), Gate::new());
    let f = failed.clone();
    let (vm, data, stale, plexes) = crashed_mirror_diverged(&e, &d, &gate, move |p| {
        if matches!(p, HookPoint::CopyTargetFailed) {
            f.block();
        }
    });
    let resync = task_of_kind(&vm, "resync");
    assert_eq!(resync.source.as_deref(), Some(plexes[0].as_str()));
    let (cfg, _) = vm.config("dg01").unwrap();
    let dev = |p: &str| cfg.disk(&plex_disk(&vm, p)).unwrap().device.clone();
    let (src_dev, tgt_dev) = (dev(&plexes[0]), dev(&plexes[1]));
    inject(&e, &tgt_dev, InjectTarget::Write, 1);
    let vol = e.bdevs().get("dg01/vol01").unwrap();
    gate.open();
    // The copy of the first chunk failed on the target, which is not detached yet.
    failed.wait_reached("the resync write to fail");
    inject(&e, &src_dev, InjectTarget::Read, 1);
    let got = read(&e, &vol, 0, 4096);
    failed.open();
    wait_until("every resync to end", || {
        vm.tasks()
            .list()
            .iter()
            .all(|t| t.kind != "resync" || t.state() != TaskState::Running)
    });
    // Any read repair asked for has run.
    wait_until("the read repairs", || {
        let s = vm.repair_stats();
        s.done + s.dropped >= s.requested
    });
    // No plex in sync can serve it: the read fails, honestly (or returns the current data).
    if let Ok(g) = &got {
        assert!(
            g[..] == data[..4096],
            "a read the source failed was served {} by the target that failed to take the chunk",
            if g[..] == stale[..] {
                "STALE data"
            } else {
                "other data"
            }
        );
    }
    assert!(
        read(&e, &vol, 0, 4096).unwrap() == data[..4096],
        "the source was 'repaired' from the stale target"
    );
    assert_eq!(
        plex_state(&vm, &plexes[1]),
        (PlexState::Iofail, KernelState::Detached)
    );
    drop(vol);
    vm.shutdown();
    e.shutdown();
}

/// A volume stopped while one of its writes was still in flight (the stop's wait ran out)
/// keeps its space until that write completed: `volume_delete` is refused (EBUSY) meanwhile,
/// so a volume created on the same disk never receives the late write. (The delete used to
/// free the space at once, and the held write landed in the new volume.)
#[test]
fn a_volume_stopped_with_a_write_in_flight_keeps_its_space_until_the_write_completes() {
    use crate::drivers::error::{Arming, ErrorKind, InjectTarget};
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    vm.set_stop_wait(Duration::from_millis(200));
    let d = error_disks(&e, 1, 16);
    vm.dg_create("dg01", &d, false).unwrap();
    let vol = create(&vm, "vol01", 4 << 20, "concat");
    err_state(&e, &d[0])
        .inject(InjectTarget::Write, &Arming::new(ErrorKind::Hold, 1))
        .unwrap();
    let writer = {
        let (e, vol) = (e.clone(), vol.clone());
        std::thread::spawn(move || write(&e, &vol, 0, &pattern(3, 64 << 10)))
    };
    wait_until("the write to be held in disk01", || {
        let b = e.bdevs().get(&d[0]).unwrap();
        let (_, info) = b.driver().driver_specific().unwrap();
        info["injections"]["write"]["remaining"]
            .as_u64()
            .unwrap_or(0)
            == 0
    });
    drop(vol);
    // The stop gives up waiting for the held write (the volume stays ACTIVE).
    vm.volume_stop("dg01", "vol01").unwrap();
    let deleted = vm.volume_delete("dg01", "vol01");
    // A new volume on the same disk, written before the held write goes down to the disk.
    let c = create(&vm, "c", 4 << 20, "concat");
    let cdata = pattern(40, 1 << 20);
    write(&e, &c, 0, &cdata).unwrap();
    let disk = e.bdevs().get(&d[0]).unwrap();
    crate::bdev::blocking::run_io(
        &e,
        0,
        &disk,
        crate::bdev::IoType::Reset,
        0,
        0,
        None,
        Duration::from_secs(30),
    )
    .unwrap();
    writer.join().unwrap().unwrap();
    assert!(
        read(&e, &c, 0, 1 << 20).unwrap() == cdata,
        "volume c was overwritten by a write of volume vol01 still in flight when it was deleted (delete: {deleted:?})"
    );
    let err = deleted.expect_err("the delete freed space under a write in flight");
    assert_eq!(err.errno(), libc::EBUSY, "{err}");
    assert!(err.to_string().contains("in flight"), "{err}");
    // The write completed: now the delete goes through.
    vm.volume_delete("dg01", "vol01").unwrap();
    drop(c);
    vm.shutdown();
    e.shutdown();
}
