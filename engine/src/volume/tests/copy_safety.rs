//! Copies that must stop, restart or be abandoned when plexes fail or plexd dies.

use std::time::Duration;

use super::*;
use crate::drivers::delay::{self, Latencies};
use crate::volume::driver::VolumeEvent;
use crate::volume::objects::{KernelState, VolumeState};
use crate::volume::task::TaskState;

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
    let resync = vm2
        .tasks()
        .list()
        .into_iter()
        .find(|t| t.kind == "resync")
        .unwrap();
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
    let t = vm3
        .tasks()
        .list()
        .into_iter()
        .find(|t| t.kind == "resync")
        .unwrap();
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
    let shared = crate::volume::driver::shared_of(&vol).unwrap();
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
