//! Failure scenarios: failing mirror disks, torn config writes, split brain, crash resync, attach under writes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::*;
use crate::drivers::error::{Arming, CrashMode, ErrorKind, InjectTarget};
use crate::volume::model::objects::{KernelState, PlexState, VolumeState};

/// A plex whose disk fails a write is detached (IOFAIL/DETACHED), recorded on the disks
/// before the write is acknowledged, and the volume keeps serving from the other plex.
#[test]
fn failing_mirror_disk_detaches_its_plex_and_the_volume_keeps_serving() {
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    let d = error_disks(&e, 2, 16);
    vm.dg_create("dg01", &d, false).unwrap();
    let vol = create(&vm, "vol01", 4 << 20, "mirror");
    let before = pattern(1, 64 << 10);
    write(&e, &vol, 0, &before).unwrap();
    let victim = plex_on(&vm, "disk02");
    err_state(&e, &d[1])
        .inject(InjectTarget::Write, &Arming::new(ErrorKind::Failure, 1))
        .unwrap();
    let data = pattern(2, 8 << 10);
    write(&e, &vol, 1 << 20, &data).expect("the write succeeds on the surviving plex");
    // Recorded durably: a fresh import of the disks sees the plex IOFAIL.
    assert_eq!(
        plex_state(&vm, &victim),
        (PlexState::Iofail, KernelState::Detached)
    );
    assert_eq!(read(&e, &vol, 1 << 20, 8 << 10).unwrap(), data);
    assert_eq!(read(&e, &vol, 0, 64 << 10).unwrap(), before);
    // Later writes and reads go to the survivor only.
    err_state(&e, &d[1])
        .inject(InjectTarget::All, &Arming::new(ErrorKind::Failure, 1000))
        .unwrap();
    let more = pattern(3, 4096);
    write(&e, &vol, 2 << 20, &more).unwrap();
    assert_eq!(read(&e, &vol, 2 << 20, 4096).unwrap(), more);
    err_state(&e, &d[1]).clear();
    drop(vol);
    vm.crash();
    let vm2 = VolumeManager::new(e.clone());
    assert_eq!(
        vm2.dg_import(Some("dg01"), None, None).unwrap(),
        vec!["dg01"]
    );
    assert_eq!(
        plex_state(&vm2, &victim).0,
        PlexState::Iofail,
        "the detach is on disk"
    );
    let vol = e.bdevs().get("dg01/vol01").unwrap();
    assert_eq!(read(&e, &vol, 1 << 20, 8 << 10).unwrap(), data);
    assert_eq!(read(&e, &vol, 2 << 20, 4096).unwrap(), more);
    // Reattaching the plex copies the missed writes back.
    let task = vm2
        .plex_attach("dg01", "vol01", Some(&victim), None, Duration::ZERO)
        .unwrap();
    let t = vm2.tasks().wait(task, Duration::from_secs(60)).unwrap();
    assert_eq!(t.state(), crate::volume::copy::task::TaskState::Done);
    assert_eq!(plex_state(&vm2, &victim).0, PlexState::Active);
    assert_eq!(plex_read(&vm2, &vol, &victim, 2048, 8), more);
    vm2.shutdown();
    e.shutdown();
}

/// When every plex fails a write, the write fails (nothing is detached: the data is
/// still where it was).
#[test]
fn a_write_no_plex_took_fails() {
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    let d = error_disks(&e, 2, 16);
    vm.dg_create("dg01", &d, false).unwrap();
    let vol = create(&vm, "vol01", 4 << 20, "mirror");
    for n in &d {
        err_state(&e, n)
            .inject(InjectTarget::Write, &Arming::new(ErrorKind::Failure, 1))
            .unwrap();
    }
    assert!(write(&e, &vol, 0, &[7u8; 4096]).is_err());
    let (cfg, _) = vm.config("dg01").unwrap();
    assert!(cfg.plexes.iter().all(|p| p.kstate == KernelState::Enabled));
    drop(vol);
    vm.shutdown();
    e.shutdown();
}

/// A config write torn part-way on every disk (the disks acknowledge but drop the rest)
/// still imports: the previous configuration, from each disk's other slot.
#[test]
fn torn_config_write_imports_the_previous_config() {
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    let d = error_disks(&e, 3, 16);
    vm.dg_create("dg01", &d, false).unwrap();
    let vol = create(&vm, "vol01", 4 << 20, "mirror");
    let data = pattern(9, 32 << 10);
    write(&e, &vol, 0, &data).unwrap();
    drop(vol);
    let (good, seq) = vm.config("dg01").unwrap();
    // The next commit's first 4 KiB piece (the copy's header) lands on every disk,
    // everything after is lost.
    for n in &d {
        err_state(&e, n)
            .set_crash_mode(CrashMode::DropWritesAfter, 1)
            .unwrap();
    }
    vm.disk_set("dg01", "disk03", Some(true), None).unwrap();
    vm.crash();
    for n in &d {
        err_state(&e, n).set_crash_mode(CrashMode::None, 0).unwrap();
    }
    // What the torn commit left: on every disk the copy of the last good commit is intact
    // (the new copy went to the other slot), and the torn copy is not valid.
    for n in &d {
        let b = e.bdevs().get(n).unwrap();
        let l = crate::volume::ondisk::disk::read_label(&e, &b).unwrap();
        let seqs: Vec<u64> = crate::volume::ondisk::disk::read_copies(&e, &b, &l)
            .into_iter()
            .filter_map(|(_, c)| c.ok())
            .map(|c| c.header.seq)
            .collect();
        assert!(seqs.contains(&seq), "{n}: last good copy gone: {seqs:?}");
        assert!(!seqs.contains(&(seq + 1)), "{n}: torn copy taken as valid");
    }
    let vm2 = VolumeManager::new(e.clone());
    vm2.dg_import(Some("dg01"), None, None).unwrap();
    let (cfg, seq2) = vm2.config("dg01").unwrap();
    assert!(
        !cfg.disk("disk03").unwrap().spare,
        "the torn change is not there"
    );
    assert_eq!(cfg.volumes.len(), good.volumes.len());
    assert!(
        seq2 > seq,
        "the import repaired the copies with a new commit"
    );
    let vol = e.bdevs().get("dg01/vol01").unwrap();
    assert_eq!(read(&e, &vol, 0, 32 << 10).unwrap(), data);
    drop(vol);
    vm2.shutdown();
    e.shutdown();
}

/// Two halves of a group imported and changed separately: the import of both is refused
/// as split brain until a copy is chosen.
#[test]
fn split_brain_is_refused_until_a_copy_is_chosen() {
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    let d = disks(&e, 2, 16);
    vm.dg_create("dg01", &d, false).unwrap();
    vm.dg_deport("dg01").unwrap();
    // Half A changes alone.
    vm.dg_import(Some("dg01"), Some(&d[..1]), None).unwrap();
    create(&vm, "only_a", 1 << 20, "concat");
    vm.dg_deport("dg01").unwrap();
    // Half B changes alone.
    vm.dg_import(Some("dg01"), Some(&d[1..]), None).unwrap();
    create(&vm, "only_b", 1 << 20, "concat");
    vm.dg_deport("dg01").unwrap();
    let err = vm.dg_import(Some("dg01"), None, None).unwrap_err();
    assert!(err.to_string().contains("split brain"), "{err}");
    assert!(vm.group_names().is_empty(), "nothing imported");
    assert!(d
        .iter()
        .all(|n| e.bdevs().get(n).unwrap().claimed_by().is_none()));
    vm.dg_import(Some("dg01"), None, Some(&d[1])).unwrap();
    let (cfg, _) = vm.config("dg01").unwrap();
    assert!(cfg.volume("only_b").is_some() && cfg.volume("only_a").is_none());
    vm.shutdown();
    e.shutdown();
}

/// Only one half changed: the other half is lagging, not in split brain.
#[test]
fn a_disk_that_missed_changes_is_lagging_not_split_brain() {
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    let d = disks(&e, 2, 16);
    vm.dg_create("dg01", &d, false).unwrap();
    vm.dg_deport("dg01").unwrap();
    vm.dg_import(Some("dg01"), Some(&d[..1]), None).unwrap();
    create(&vm, "v", 1 << 20, "concat");
    vm.dg_deport("dg01").unwrap();
    vm.dg_import(Some("dg01"), None, None).unwrap();
    let (cfg, _) = vm.config("dg01").unwrap();
    assert!(cfg.volume("v").is_some());
    vm.shutdown();
    e.shutdown();
}

/// A mirror running at a crash comes back in SYNC: reads never differ between mirrors
/// (they come from one plex while the resync copies it), and afterwards the plexes are
/// identical.
#[test]
fn crashed_mirror_resyncs_and_never_returns_divergent_data() {
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    let d = disks(&e, 2, 16);
    vm.dg_create("dg01", &d, false).unwrap();
    let vol = create(&vm, "vol01", 8 << 20, "mirror");
    let data = pattern(5, 8 << 20);
    write(&e, &vol, 0, &data).unwrap();
    let plexes = plex_names(&vm, "dg01", "vol01");
    drop(vol);
    vm.crash();
    // The crash tore a write: the second plex holds other bytes in its first MiB.
    let (cfg, _) = {
        let vm_probe = VolumeManager::new(e.clone());
        vm_probe.dg_import(Some("dg01"), None, None).unwrap();
        let c = vm_probe.config("dg01").unwrap();
        vm_probe.crash();
        c
    };
    let sd = cfg.subdisks_of(&plexes[1])[0].clone();
    let disk = cfg.disk(&sd.disk).unwrap();
    let bdev = e.bdevs().get(&disk.device).unwrap();
    write(
        &e,
        &bdev,
        (disk.public_offset + sd.disk_offset) * 512,
        &vec![0xee; 1 << 20],
    )
    .unwrap();
    let vm2 = VolumeManager::new(e.clone());
    vm2.dg_import(Some("dg01"), None, None).unwrap();
    let vol = e.bdevs().get("dg01/vol01").unwrap();
    for _ in 0..4 {
        assert_eq!(
            read(&e, &vol, 0, 1 << 20).unwrap(),
            data[..1 << 20],
            "reads come from one plex"
        );
    }
    let tasks = vm2.tasks().list();
    let t = tasks
        .iter()
        .find(|t| t.kind == "resync")
        .expect("a resync task");
    let t = vm2.tasks().wait(t.id, Duration::from_secs(60)).unwrap();
    assert_eq!(t.state(), crate::volume::copy::task::TaskState::Done);
    let (cfg, _) = vm2.config("dg01").unwrap();
    assert_eq!(cfg.volume("vol01").unwrap().state, VolumeState::Active);
    for p in &plexes {
        assert!(
            plex_read(&vm2, &vol, p, 0, 8 << 11) == data,
            "plex {p} equals the source"
        );
    }
    drop(vol);
    vm2.shutdown();
    e.shutdown();
}

/// Plex attach while a writer keeps writing: afterwards every plex equals what was
/// written, block by block.
#[test]
fn plex_attach_under_concurrent_writes_ends_with_identical_mirrors() {
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    let d = disks(&e, 2, 32);
    vm.dg_create("dg01", &d, false).unwrap();
    let vol = create(&vm, "vol01", 16 << 20, "concat");
    let model = Arc::new(std::sync::Mutex::new(vec![0u8; 16 << 20]));
    let init = pattern(11, 16 << 20);
    write(&e, &vol, 0, &init).unwrap();
    model.lock().unwrap().copy_from_slice(&init);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (e, vol, model, stop) = (e.clone(), vol.clone(), model.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut seed = 77u64;
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) || n < 50 {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let block = (seed >> 33) % ((16 << 11) - 16);
                let data = pattern(seed, 8192);
                write(&e, &vol, block * 512, &data).unwrap();
                model.lock().unwrap()[(block * 512) as usize..(block * 512) as usize + 8192]
                    .copy_from_slice(&data);
                n += 1;
            }
            n
        })
    };
    let task = vm
        .plex_attach("dg01", "vol01", None, None, Duration::from_millis(2))
        .unwrap();
    let t = vm.tasks().wait(task, Duration::from_secs(120)).unwrap();
    stop.store(true, Ordering::Relaxed);
    let writes = writer.join().unwrap();
    assert_eq!(t.state(), crate::volume::copy::task::TaskState::Done);
    assert!(writes >= 50);
    let model = model.lock().unwrap().clone();
    let plexes = plex_names(&vm, "dg01", "vol01");
    assert_eq!(plexes.len(), 2);
    for p in &plexes {
        assert!(
            plex_read(&vm, &vol, p, 0, 16 << 11) == model,
            "plex {p} differs from what was written"
        );
    }
    let (cfg, _) = vm.config("dg01").unwrap();
    let disks_used: Vec<&str> = plexes
        .iter()
        .map(|p| cfg.subdisks_of(p)[0].disk.as_str())
        .collect();
    assert_ne!(disks_used[0], disks_used[1], "mirrors never share a disk");
    drop(vol);
    vm.shutdown();
    e.shutdown();
}
