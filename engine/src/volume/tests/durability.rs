//! What the disks hold after a power loss at the worst moment of a commit: data flushed
//! before the configuration that vouches for it, config copies kept on healthy disks, and
//! no CLEAN record over I/O that never finished.

use std::time::Duration;

use super::*;
use crate::bdev::blocking::run_io;
use crate::bdev::IoType;
use crate::drivers::error::{Arming, CrashMode, ErrorKind, InjectTarget, MAX_NUM};
use crate::volume::copy::task::TaskState;
use crate::volume::model::objects::{DgConfig, PlexState, VolumeState};

/// Requests of kind `kind` still armed on error bdev `name` (0 once the injection was used).
fn armed(e: &Engine, name: &str, kind: &str) -> u64 {
    let b = e.bdevs().get(name).unwrap();
    let (_, info) = b.driver().driver_specific().unwrap();
    info["injections"][kind]["remaining"].as_u64().unwrap_or(0)
}

/// Holds the next write to error bdev `name` (it waits in the bdev until released).
fn hold_next_write(e: &Engine, name: &str) {
    err_state(e, name)
        .inject(InjectTarget::Write, &Arming::new(ErrorKind::Pending, 1))
        .unwrap();
}

/// Pulls the plug on every disk of `d`: what their volatile caches hold is lost, and every
/// request from now on fails (nothing written after the power loss may reach a disk). The
/// request held on `held` is then let go (it fails).
fn power_loss(e: &Engine, d: &[String], held: &str) {
    for n in d {
        err_state(e, n)
            .inject(InjectTarget::All, &Arming::new(ErrorKind::Failure, MAX_NUM))
            .unwrap();
        err_state(e, n).crash();
    }
    let b = e.bdevs().get(held).unwrap();
    run_io(e, 0, &b, IoType::Reset, 0, 0, None, Duration::from_secs(10)).unwrap();
}

/// Power is back: the disks work again, with what reached their media.
fn power_on(e: &Engine, d: &[String]) {
    for n in d {
        err_state(e, n).clear();
        err_state(e, n).set_crash_mode(CrashMode::None, 0).unwrap();
    }
}

/// The newest configuration copy on any of the bdevs `d` (what an import would read).
fn newest_config(e: &Engine, d: &[String]) -> (DgConfig, u64) {
    let mut best: Option<(DgConfig, u64)> = None;
    for n in d {
        let b = e.bdevs().get(n).unwrap();
        let l = crate::volume::ondisk::disk::read_label(e, &b).unwrap();
        for (_, c) in crate::volume::ondisk::disk::read_copies(e, &b, &l) {
            let Ok(c) = c else { continue };
            if best.as_ref().is_none_or(|(_, s)| c.header.seq > *s) {
                let cfg: DgConfig = serde_json::from_slice(&c.payload).unwrap();
                best = Some((cfg, c.header.seq));
            }
        }
    }
    best.expect("a config copy")
}

/// Reads `len` bytes at byte `offset` of plex `plex` of `cfg` straight from its (single)
/// subdisk's bdev.
fn raw_plex_read(e: &Engine, cfg: &DgConfig, plex: &str, offset: u64, len: u64) -> Vec<u8> {
    let sd = cfg.subdisks_of(plex)[0].clone();
    let disk = cfg.disk(&sd.disk).unwrap();
    let b = e.bdevs().get(&disk.device).unwrap();
    let at = (disk.public_offset + sd.disk_offset) * cfg.block_size as u64;
    read(e, &b, at + offset, len).unwrap()
}

/// A clean stop whose power fails right after the first config holder flushed the CLEAN
/// record: the mirrors' writes (acknowledged from volatile caches, never flushed by the
/// guest) must be on every disk by then, or the import trusts a CLEAN volume whose plexes
/// differ.
#[test]
fn power_loss_during_a_clean_stop_never_leaves_clean_over_unflushed_mirror_writes() {
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    let d = error_disks(&e, 2, 16);
    vm.dg_create("dg01", &d, false).unwrap();
    let vol = create(&vm, "vol01", 4 << 20, "mirror");
    for n in &d {
        err_state(&e, n)
            .set_crash_mode(CrashMode::VolatileCache, 0)
            .unwrap();
    }
    let data = pattern(5, 256 << 10);
    write(&e, &vol, 0, &data).unwrap();
    drop(vol);
    // disk01 holds the first copy: the stop's commit writes and flushes it, then reaches
    // disk02, whose first write is held: the power fails right there.
    hold_next_write(&e, &d[1]);
    let stopper = {
        let vm = vm.clone();
        std::thread::spawn(move || vm.volume_stop("dg01", "vol01"))
    };
    wait_until("the stop's commit to reach disk02", || {
        armed(&e, &d[1], "write") == 0
    });
    power_loss(&e, &d, &d[1]);
    stopper.join().unwrap().unwrap();
    vm.crash();
    power_on(&e, &d);
    let vm2 = VolumeManager::new(e.clone());
    vm2.dg_import(Some("dg01"), None, None).unwrap();
    let (cfg, _) = vm2.config("dg01").unwrap();
    assert_eq!(
        cfg.volume("vol01").unwrap().state,
        VolumeState::Clean,
        "disk01 holds the stop's record"
    );
    vm2.volume_start("dg01", "vol01").unwrap();
    let vol = e.bdevs().get("dg01/vol01").unwrap();
    for p in plex_names(&vm2, "dg01", "vol01") {
        assert!(
            plex_read(&vm2, &vol, &p, 0, 512) == data,
            "plex {p} lost writes made before the stop, yet the volume is recorded CLEAN (no resync)"
        );
    }
    drop(vol);
    vm2.shutdown();
    e.shutdown();
}

/// A plex attach whose completion is recorded, then the power fails right after the first
/// config holder's flush: the copied data must have been flushed to the new plex's disk
/// before, or the configuration calls the plex in sync over blocks that are gone.
#[test]
fn power_loss_after_an_attach_completes_never_leaves_the_plex_in_sync_over_lost_data() {
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    let d = error_disks(&e, 3, 16);
    vm.dg_create("dg01", &d, false).unwrap();
    vm.volume_create(&VolumeCreate {
        dg: "dg01".into(),
        name: "vol01".into(),
        size: 2 << 20,
        layout: "mirror".into(),
        alloc: Some(vec!["disk01".into(), "disk02".into()]),
        ..Default::default()
    })
    .unwrap();
    let vol = e.bdevs().get("dg01/vol01").unwrap();
    let data = pattern(8, 2 << 20);
    write(&e, &vol, 0, &data).unwrap();
    drop(vol);
    // The new plex's disk keeps what the copy writes in its volatile cache.
    err_state(&e, &d[2])
        .set_crash_mode(CrashMode::VolatileCache, 0)
        .unwrap();
    // Two chunks, 400 ms apart: no checkpoint in between (they come once a second).
    let id = vm
        .plex_attach(
            "dg01",
            "vol01",
            None,
            Some(&["disk03".to_string()]),
            Duration::from_millis(400),
        )
        .unwrap();
    let task = vm.tasks().get(id).unwrap();
    wait_until("the first chunk to be copied", || task.done() >= 2048);
    // The completion's commit writes disk01's copy, flushes it, then reaches disk02.
    hold_next_write(&e, &d[1]);
    wait_until("the completion's commit to reach disk02", || {
        armed(&e, &d[1], "write") == 0
    });
    power_loss(&e, &d, &d[1]);
    let t = vm.tasks().wait(id, Duration::from_secs(30)).unwrap();
    assert_eq!(
        t.state(),
        TaskState::Done,
        "the completion was recorded on disk01"
    );
    vm.crash();
    power_on(&e, &d);
    let (cfg, _) = newest_config(&e, &d);
    let new = cfg
        .subdisks
        .iter()
        .find(|s| s.disk == "disk03")
        .and_then(|s| s.plex.clone())
        .expect("the attached plex");
    let p = cfg.plex(&new).unwrap();
    if p.state.is_in_sync() && p.sync_offset.is_none() {
        assert!(
            raw_plex_read(&e, &cfg, &new, 0, 2 << 20) == data,
            "plex {new} is recorded in sync ({:?}) but the data copied into it is gone",
            p.state
        );
    } else {
        assert_eq!(p.state, PlexState::Stale);
    }
}

/// The newest config sequence number among the copies on bdev `name`.
fn newest_copy_on(e: &Engine, name: &str) -> u64 {
    let b = e.bdevs().get(name).unwrap();
    let l = crate::volume::ondisk::disk::read_label(e, &b).unwrap();
    crate::volume::ondisk::disk::read_copies(e, &b, &l)
        .into_iter()
        .filter_map(|(_, c)| c.ok())
        .map(|c| c.header.seq)
        .max()
        .unwrap_or(0)
}

/// `nconfig` copies on three disks; a mirror on disk01 (the first holder) and disk02. disk01
/// fails: its plex's detach is recorded on the next healthy disks instead (still `nconfig`
/// current copies), the volume keeps serving from disk02, and a new manager over the same
/// disks (disk01 back, with its older copy) imports the recorded failure.
fn failing_holder_is_replaced(nconfig: u32) {
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    let d = error_disks(&e, 3, 16);
    vm.dg_create("dg01", &d, false).unwrap();
    vm.dg_set("dg01", nconfig).unwrap();
    vm.volume_create(&VolumeCreate {
        dg: "dg01".into(),
        name: "vol01".into(),
        size: 4 << 20,
        layout: "mirror".into(),
        alloc: Some(vec!["disk01".into(), "disk02".into()]),
        ..Default::default()
    })
    .unwrap();
    let vol = e.bdevs().get("dg01/vol01").unwrap();
    let victim = plex_on(&vm, "disk01");
    let before = pattern(1, 64 << 10);
    write(&e, &vol, 0, &before).unwrap();
    err_state(&e, &d[0])
        .inject(InjectTarget::All, &Arming::new(ErrorKind::Failure, MAX_NUM))
        .unwrap();
    let data = pattern(2, 64 << 10);
    write(&e, &vol, 1 << 20, &data).unwrap_or_else(|err| {
        panic!("nconfig {nconfig}: the write must succeed on the healthy mirror: {err}")
    });
    assert_eq!(
        plex_state(&vm, &victim),
        (
            PlexState::Iofail,
            crate::volume::model::objects::KernelState::Detached
        )
    );
    assert_eq!(read(&e, &vol, 1 << 20, 64 << 10).unwrap(), data);
    let (_, seq) = vm.config("dg01").unwrap();
    let current = d[1..]
        .iter()
        .filter(|n| newest_copy_on(&e, n) == seq)
        .count();
    assert_eq!(
        current, nconfig as usize,
        "nconfig {nconfig}: healthy disks holding the newest copy (seq {seq})"
    );
    drop(vol);
    vm.crash();
    err_state(&e, &d[0]).clear();
    let vm2 = VolumeManager::new(e.clone());
    vm2.dg_import(Some("dg01"), None, None).unwrap();
    assert_eq!(
        plex_state(&vm2, &victim).0,
        PlexState::Iofail,
        "nconfig {nconfig}: the import sees the recorded failure"
    );
    let vol = e.bdevs().get("dg01/vol01").unwrap();
    assert_eq!(read(&e, &vol, 0, 64 << 10).unwrap(), before);
    assert_eq!(read(&e, &vol, 1 << 20, 64 << 10).unwrap(), data);
    drop(vol);
    vm2.shutdown();
    e.shutdown();
}

#[test]
fn nconfig_1_failing_holder_is_replaced_by_the_next_healthy_disk() {
    failing_holder_is_replaced(1);
}

#[test]
fn nconfig_2_failing_holder_is_replaced_by_the_next_healthy_disk() {
    failing_holder_is_replaced(2);
}

/// A stop whose wait for the volume's requests runs out while a write is still in flight
/// (held in disk01) must not record the volume CLEAN: that write may reach one mirror and
/// not the other, so the volume stays ACTIVE and resyncs at its next start.
#[test]
fn a_stop_with_a_write_still_in_flight_leaves_the_volume_active() {
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    vm.set_stop_wait(Duration::from_millis(200));
    let d = error_disks(&e, 2, 16);
    vm.dg_create("dg01", &d, false).unwrap();
    let vol = create(&vm, "vol01", 4 << 20, "mirror");
    hold_next_write(&e, &d[0]);
    let writer = {
        let (e, vol) = (e.clone(), vol.clone());
        std::thread::spawn(move || write(&e, &vol, 0, &pattern(3, 4096)))
    };
    wait_until("the write to be held in disk01", || {
        armed(&e, &d[0], "write") == 0
    });
    drop(vol);
    vm.volume_stop("dg01", "vol01").unwrap();
    vm.crash();
    let vm2 = VolumeManager::new(e.clone());
    vm2.dg_import(Some("dg01"), None, None).unwrap();
    let (cfg, _) = vm2.config("dg01").unwrap();
    let state = cfg.volume("vol01").unwrap().state;
    assert!(
        crate::volume::manager::was_running(state),
        "a write was still in flight when the stop gave up waiting, yet the volume is recorded {state:?}"
    );
    // Let the held write go (it fails on disk01; the old manager can only fail it).
    err_state(&e, &d[0]).clear();
    let _ = writer.join().unwrap();
    vm2.shutdown();
    e.shutdown();
}

/// Shutdown while a mirrored write has failed on disk01 and its failure event waits for the
/// manager (which the shutdown holds): the failure is never recorded, so the volume must not
/// be recorded CLEAN. At the next start it resyncs, and the mirrors read the same again.
/// (The write stays held until its failure is recorded, so the stop sees it in flight: this
/// covers the "requests did not drain" check. A failure event that is never acknowledged
/// while the volume does drain is covered by
/// `a_stop_after_a_failure_the_event_thread_never_got_leaves_the_volume_to_resync`.)
#[test]
fn a_shutdown_with_a_failure_unrecorded_leaves_the_volume_to_resync() {
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    vm.set_stop_wait(Duration::from_millis(500));
    let d = error_disks(&e, 2, 16);
    vm.dg_create("dg01", &d, false).unwrap();
    let vol = create(&vm, "vol01", 4 << 20, "mirror");
    let before = pattern(4, 4096);
    write(&e, &vol, 0, &before).unwrap();
    hold_next_write(&e, &d[0]);
    let writer = {
        let (e, vol) = (e.clone(), vol.clone());
        std::thread::spawn(move || write(&e, &vol, 0, &pattern(5, 4096)))
    };
    wait_until("the write to be held in disk01", || {
        armed(&e, &d[0], "write") == 0
    });
    drop(vol);
    let stopper = {
        let vm = vm.clone();
        std::thread::spawn(move || vm.shutdown())
    };
    // The shutdown is stopping the volume: fail the held write now (on disk01 only).
    wait_until("the shutdown to delete the volume's bdev", || {
        e.bdevs().get("dg01/vol01").is_err()
    });
    err_state(&e, &d[0]).clear();
    stopper.join().unwrap();
    let _ = writer.join().unwrap();
    let vm2 = VolumeManager::new(e.clone());
    vm2.dg_import(Some("dg01"), None, None).unwrap();
    let (cfg, _) = vm2.config("dg01").unwrap();
    assert_eq!(
        cfg.volume("vol01").unwrap().state,
        VolumeState::Sync,
        "the volume was recorded CLEAN over a write failure nobody recorded: no resync"
    );
    wait_until("the resync", || {
        vm2.config("dg01").unwrap().0.volume("vol01").unwrap().state == VolumeState::Active
    });
    let vol = e.bdevs().get("dg01/vol01").unwrap();
    let plexes = plex_names(&vm2, "dg01", "vol01");
    assert!(
        plex_read(&vm2, &vol, &plexes[0], 0, 8) == plex_read(&vm2, &vol, &plexes[1], 0, 8),
        "the mirrors differ"
    );
    drop(vol);
    vm2.shutdown();
    e.shutdown();
}

/// A clean stop of a layered volume with nothing in flight records it and its sub-volumes
/// CLEAN (the parent lets go of its columns before they are stopped, so their wait for
/// requests in flight ends at once).
#[test]
fn a_clean_stop_of_a_stripe_mirror_records_every_sub_volume_clean() {
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    // A stop holding a reference to its columns would wait this out, then mark them unclean.
    vm.set_stop_wait(Duration::from_secs(10));
    let d = disks(&e, 4, 16);
    vm.dg_create("dg01", &d, false).unwrap();
    vm.volume_create(&VolumeCreate {
        dg: "dg01".into(),
        name: "vol01".into(),
        size: 8 << 20,
        layout: "stripe-mirror".into(),
        ncol: Some(2),
        ..Default::default()
    })
    .unwrap();
    let vol = e.bdevs().get("dg01/vol01").unwrap();
    write(&e, &vol, 0, &pattern(9, 1 << 20)).unwrap();
    drop(vol);
    vm.volume_stop("dg01", "vol01").unwrap();
    let (cfg, _) = vm.config("dg01").unwrap();
    for v in &cfg.volumes {
        assert_eq!(v.state, VolumeState::Clean, "{}", v.name);
    }
    vm.shutdown();
    e.shutdown();
}

/// A subdisk move whose swap is recorded, then the power fails right after the first config
/// holder's flush: the copied data must have been flushed to the new place before, or the
/// volume now maps to blocks that never got it.
#[test]
fn power_loss_after_a_move_swap_never_maps_the_volume_to_lost_data() {
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    let d = error_disks(&e, 2, 16);
    vm.dg_create("dg01", &d, false).unwrap();
    vm.volume_create(&VolumeCreate {
        dg: "dg01".into(),
        name: "vol01".into(),
        size: 1 << 20,
        layout: "concat".into(),
        alloc: Some(vec!["disk01".into()]),
        ..Default::default()
    })
    .unwrap();
    let vol = e.bdevs().get("dg01/vol01").unwrap();
    let data = pattern(10, 1 << 20);
    write(&e, &vol, 0, &data).unwrap();
    drop(vol);
    err_state(&e, &d[1])
        .set_crash_mode(CrashMode::VolatileCache, 0)
        .unwrap();
    let (cfg, _) = vm.config("dg01").unwrap();
    let sd = cfg.subdisks_of("vol01-01")[0].name.clone();
    // One chunk, then 400 ms before the swap.
    let id = vm
        .subdisk_move("dg01", &sd, Some("disk02"), Duration::from_millis(400))
        .unwrap();
    let task = vm.tasks().get(id).unwrap();
    wait_until("the copy", || task.done() >= 2048);
    // The swap's commit writes disk01's copy, flushes it, then reaches disk02.
    hold_next_write(&e, &d[1]);
    wait_until("the swap's commit to reach disk02", || {
        armed(&e, &d[1], "write") == 0
    });
    power_loss(&e, &d, &d[1]);
    let t = vm.tasks().wait(id, Duration::from_secs(30)).unwrap();
    assert_eq!(
        t.state(),
        TaskState::Done,
        "the swap was recorded on disk01"
    );
    vm.crash();
    power_on(&e, &d);
    let (cfg, _) = newest_config(&e, &d);
    let now = cfg.subdisks_of("vol01-01")[0].clone();
    assert_eq!(now.disk, "disk02", "the recorded swap");
    assert!(
        raw_plex_read(&e, &cfg, "vol01-01", 0, 1 << 20) == data,
        "the volume maps to {} on disk02, which lost the data copied into it",
        now.name
    );
}

/// The event thread is gone (it died on a panic; or it could not be started): a mirrored
/// write that then fails on one plex gets its failure event id but cannot send the event, so
/// it fails at once (EIO) and leaves the mirrors different, with nothing recorded. The volume
/// drains, is not disabled, yet one failure event was never acknowledged: the stop must not
/// record it CLEAN (the mirrors differ), it stays ACTIVE and resyncs at its next start.
#[test]
fn a_stop_after_a_failure_the_event_thread_never_got_leaves_the_volume_to_resync() {
    use crate::volume::copy::task::HookPoint;
    use crate::volume::io::driver::{shared_of, VolumeEvent};
    use std::sync::atomic::{AtomicBool, Ordering};
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    let d = error_disks(&e, 4, 16);
    vm.dg_create("dg01", &d, false).unwrap();
    let mk = |name: &str, alloc: [&str; 2]| {
        let b = vm
            .volume_create(&VolumeCreate {
                dg: "dg01".into(),
                name: name.into(),
                size: 4 << 20,
                layout: "mirror".into(),
                alloc: Some(alloc.iter().map(|s| s.to_string()).collect()),
                ..Default::default()
            })
            .unwrap();
        e.bdevs().get(&b).unwrap()
    };
    let (a, b) = (mk("a", ["disk01", "disk02"]), mk("b", ["disk03", "disk04"]));
    let device = |disk: &str| {
        vm.config("dg01")
            .unwrap()
            .0
            .disk(disk)
            .unwrap()
            .device
            .clone()
    };
    write(&e, &b, 0, &pattern(6, 4096)).unwrap();
    // Volume a's failed write kills the event thread (its write stays held).
    let died = Arc::new(AtomicBool::new(false));
    {
        let died = died.clone();
        set_hook(&vm, move |p| {
            if let HookPoint::WriteFailed = p {
                died.store(true, Ordering::SeqCst);
                panic!("test: the volume manager's event thread dies");
            }
        });
    }
    inject(&e, &device("disk02"), InjectTarget::Write, 1);
    let held = {
        let (e, a) = (e.clone(), a.clone());
        std::thread::spawn(move || write(&e, &a, 0, &pattern(7, 4096)))
    };
    wait_until("the event thread to take a's failure", || {
        died.load(Ordering::SeqCst)
    });
    let sb = shared_of(&b).unwrap();
    wait_until("the event thread to be gone", || {
        sb.events
            .send(VolumeEvent::ReadRepair {
                volume: sb.clone(),
                map: sb.map(),
                bad: 0,
                good: 0,
                offset: 0,
                num: 0,
            })
            .is_err()
    });
    // Volume b: a write fails on disk04 only; nobody can record it.
    inject(&e, &device("disk04"), InjectTarget::Write, 1);
    assert!(
        write(&e, &b, 0, &pattern(8, 4096)).is_err(),
        "a failure nobody can record is not acknowledged"
    );
    drop((b, sb));
    vm.volume_stop("dg01", "b").unwrap();
    let (cfg, _) = vm.config("dg01").unwrap();
    let state = cfg.volume("b").unwrap().state;
    assert!(
        crate::volume::manager::was_running(state),
        "volume b was recorded {state:?} (no resync at its next start) although its mirrors differ after a write failure nobody recorded"
    );
    // Let a's held write go: a disabled map fails it.
    let sa = shared_of(&a).unwrap();
    let m = sa.map();
    sa.publish(m.disabled(m.generation + 1));
    assert!(held.join().unwrap().is_err());
    drop((a, sa));
    vm.shutdown();
    e.shutdown();
}
