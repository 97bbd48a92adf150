//! Edge cases of the volume manager: zero-length requests, a map that cannot be published,
//! read repairs under load, split brain settled by a selected copy, raid parameters that
//! overflow, and the block sizes VM disks accept.

use std::time::Duration;

use super::*;
use crate::bdev::blocking::{run_io, BlockingIoError};
use crate::bdev::IoType;
use crate::volume::copy::task::TaskState;

/// A zero-length write-zeroes completes at once with success and a zero-length unmap is
/// refused with EINVAL (as SPDK's bdev layer does), on a single plex and on a mirror; neither
/// keeps a barrier bucket, so a later copy over the same chunk and an overlapping write still
/// complete.
#[test]
fn zero_length_write_zeroes_and_unmap_complete_and_hold_no_barrier() {
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    let d = disks(&e, 3, 16);
    vm.dg_create("dg01", &d, false).unwrap();
    let concat = create(&vm, "plain", 1 << 20, "concat");
    let mirror = vm
        .volume_create(&VolumeCreate {
            dg: "dg01".into(),
            name: "mir".into(),
            size: 2 << 20,
            layout: "mirror".into(),
            alloc: Some(vec!["disk02".into(), "disk03".into()]),
            ..Default::default()
        })
        .unwrap();
    let mirror = e.bdevs().get(&mirror).unwrap();
    let wait = Duration::from_secs(5);
    for vol in [&concat, &mirror] {
        let name = vol.name().to_string();
        let r = run_io(&e, 0, vol, IoType::WriteZeroes, 4096, 0, None, wait);
        assert_eq!(r.map(|_| ()), Ok(()), "{name}: zero-length write-zeroes");
        let r = run_io(&e, 0, vol, IoType::Unmap, 4096, 0, None, wait);
        assert!(
            matches!(r, Err(BlockingIoError::Failed { errno, .. }) if errno == libc::EINVAL),
            "{name}: zero-length unmap: {r:?}"
        );
    }
    // A copy over chunk 0 (a plex attach) gets the chunk, and a write there completes.
    let id = vm
        .plex_attach(
            "dg01",
            "plain",
            None,
            Some(&["disk03".to_string()]),
            Duration::ZERO,
        )
        .unwrap();
    let t = vm.tasks().wait(id, Duration::from_secs(15)).unwrap();
    assert_eq!(t.state(), TaskState::Done, "the attach over chunk 0");
    let data = pattern(11, 8192);
    for vol in [&concat, &mirror] {
        write(&e, vol, 0, &data).unwrap();
        assert_eq!(read(&e, vol, 0, 8192).unwrap(), data);
    }
    drop((concat, mirror));
    vm.shutdown();
    e.shutdown();
}

/// A mirrored write fails on one plex; the detach is committed but the new map cannot be
/// published. The held write must not be acknowledged over the old map (which still has the
/// failed plex): it fails, and the volume goes offline until it is restarted.
#[test]
fn a_map_that_cannot_be_published_disables_the_volume() {
    use crate::drivers::error::InjectTarget;
    use crate::volume::model::objects::{KernelState, PlexState};
    use std::sync::atomic::Ordering;
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    let d = error_disks(&e, 2, 16);
    vm.dg_create("dg01", &d, false).unwrap();
    let vol = create(&vm, "vol01", 2 << 20, "mirror");
    let old = pattern(21, 64 << 10);
    write(&e, &vol, 0, &old).unwrap();
    let victim = plex_on(&vm, "disk02");
    vm.fail_publishes.store(1, Ordering::SeqCst);
    inject(&e, &d[1], InjectTarget::Write, 1);
    let new = pattern(22, 4096);
    let r = write(&e, &vol, 0, &new);
    assert!(
        matches!(r, Err(BlockingIoError::Failed { errno, .. }) if errno == libc::EIO),
        "the held write was acknowledged over the old map: {r:?}"
    );
    assert_eq!(
        plex_state(&vm, &victim),
        (PlexState::Iofail, KernelState::Detached),
        "the detach itself was committed"
    );
    let shared = crate::volume::io::driver::shared_of(&vol).unwrap();
    assert!(!shared.map().enabled, "the volume is offline");
    let r = read(&e, &vol, 8192, 4096);
    assert!(
        matches!(r, Err(BlockingIoError::Failed { errno, .. }) if errno == libc::ENXIO),
        "reads fail while the volume is offline: {r:?}"
    );
    drop((vol, shared));
    // The administrator's way back: restart it; it serves from the plex left.
    vm.volume_stop("dg01", "vol01").unwrap();
    vm.volume_start("dg01", "vol01").unwrap();
    let vol = e.bdevs().get("dg01/vol01").unwrap();
    assert_eq!(read(&e, &vol, 8192, 8192).unwrap(), old[8192..16384]);
    drop(vol);
    vm.shutdown();
    e.shutdown();
}

/// A mirror whose plex on disk02 fails the next `n` reads, with the barrier over the first
/// MiB held (so every repair there waits), read until `n` reads have failed and been served
/// by the other plex. Returns the volume and its plex on disk02.
fn read_errors_with_repairs_held(
    e: &Arc<Engine>,
    vm: &VolumeManager,
    n: u64,
) -> (Arc<Bdev>, String, Vec<u8>) {
    use crate::drivers::error::InjectTarget;
    let d = error_disks(e, 2, 16);
    vm.dg_create("dg01", &d, false).unwrap();
    let vol = create(vm, "vol01", 4 << 20, "mirror");
    let data = pattern(31, 4096);
    write(e, &vol, 0, &data).unwrap();
    let shared = crate::volume::io::driver::shared_of(&vol).unwrap();
    assert!(shared.barrier().enter(0, 8), "nothing copies yet");
    inject(e, &d[1], InjectTarget::Read, n);
    while shared.read_errors() < n {
        assert_eq!(read(e, &vol, 0, 4096).unwrap(), data);
    }
    assert_eq!(shared.read_errors(), n);
    wait_until("the event thread to hand over every repair", || {
        vm.repair_stats().requested == n
    });
    (vol, plex_on(vm, "disk02"), data)
}

/// Read errors whose repairs must wait (a write holds their chunk) run on one worker, not
/// on a thread each, and each is still done once the chunk is free.
#[test]
fn read_repairs_run_on_one_bounded_worker() {
    use crate::volume::model::objects::{KernelState, PlexState};
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    let n = 6;
    let (vol, victim, data) = read_errors_with_repairs_held(&e, &vm, n);
    let st = vm.repair_stats();
    assert!(
        st.threads <= 1,
        "{} repair threads for {n} read errors",
        st.threads
    );
    crate::volume::io::driver::shared_of(&vol)
        .unwrap()
        .barrier()
        .leave(0, 8);
    wait_until("every repair", || {
        let st = vm.repair_stats();
        st.done + st.dropped == n
    });
    let st = vm.repair_stats();
    assert_eq!(st.dropped, 0, "the queue had room for all: {st:?}");
    assert_eq!(
        vm.lock()["dg01"].read_errors.get(&victim).copied(),
        Some(n as u32),
        "each repair rewrote the range and counted"
    );
    assert_eq!(
        plex_state(&vm, &victim),
        (PlexState::Active, KernelState::Enabled)
    );
    assert_eq!(plex_read(&vm, &vol, &victim, 0, 8), data);
    drop(vol);
    vm.shutdown();
    e.shutdown();
}

/// More read errors than the repair queue holds: the worker stays one thread, the repairs
/// that do not fit are dropped and counted (never lost silently), and the guest keeps
/// reading the right data.
#[test]
fn a_full_repair_queue_drops_repairs_and_counts_them() {
    use crate::volume::copy::repair::REPAIR_QUEUE;
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    let n = REPAIR_QUEUE as u64 + 4;
    let (vol, _victim, data) = read_errors_with_repairs_held(&e, &vm, n);
    let st = vm.repair_stats();
    assert!(
        st.threads <= 1,
        "{} repair threads for {n} read errors",
        st.threads
    );
    assert!(
        st.dropped >= n - REPAIR_QUEUE as u64 - 1,
        "repairs past the queue are dropped: {st:?}"
    );
    let shared = crate::volume::io::driver::shared_of(&vol).unwrap();
    assert_eq!(shared.read_repairs_dropped(), st.dropped);
    shared.barrier().leave(0, 8);
    wait_until("every repair run or dropped", || {
        let st = vm.repair_stats();
        st.done + st.dropped == n
    });
    assert_eq!(read(&e, &vol, 0, 4096).unwrap(), data);
    drop((vol, shared));
    vm.shutdown();
    e.shutdown();
}

/// Split brain settled with `select_copy`: the import's commit must be newer than every copy
/// on the disks, the rejected half's included, or the next import finds the rejected copy
/// again (same sequence number: split brain once more; higher: the rejected half wins).
/// The halves change disk flags, not volumes, so the import makes exactly one commit (a
/// volume start would commit again and happen to bury the rejected copy).
#[test]
fn a_selected_copy_stays_chosen_at_the_next_import() {
    for extra in [0, 1, 3] {
        let e = engine();
        let vm = VolumeManager::new(e.clone());
        let d = disks(&e, 2, 16);
        vm.dg_create("dg01", &d, false).unwrap();
        vm.dg_deport("dg01").unwrap();
        // Each half changes alone; half B commits `extra` times more.
        vm.dg_import(Some("dg01"), Some(&d[..1]), None).unwrap();
        vm.disk_set("dg01", "disk01", Some(true), None).unwrap();
        let (_, seq_a) = vm.config("dg01").unwrap();
        vm.dg_deport("dg01").unwrap();
        vm.dg_import(Some("dg01"), Some(&d[1..]), None).unwrap();
        vm.disk_set("dg01", "disk02", Some(true), None).unwrap();
        for _ in 0..extra {
            vm.dg_set("dg01", 0).unwrap();
        }
        let (_, seq_b) = vm.config("dg01").unwrap();
        assert_eq!(seq_b, seq_a + extra, "the halves' histories as planned");
        vm.dg_deport("dg01").unwrap();
        let err = vm.dg_import(Some("dg01"), None, None).unwrap_err();
        assert!(err.to_string().contains("split brain"), "{err}");
        // The administrator keeps half A (never newer than B).
        vm.dg_import(Some("dg01"), None, Some(&d[0])).unwrap();
        let (cfg, seq) = vm.config("dg01").unwrap();
        let chosen = |cfg: &crate::volume::model::objects::DgConfig| {
            cfg.disk("disk01").unwrap().spare && !cfg.disk("disk02").unwrap().spare
        };
        assert!(chosen(&cfg), "extra {extra}: half A imported");
        // Power loss right after: the next import must find half A again, with no split
        // brain, and so must one after a clean deport.
        vm.crash();
        for round in 0..2 {
            let vm2 = VolumeManager::new(e.clone());
            let r = vm2.dg_import(Some("dg01"), None, None);
            assert!(
                r.is_ok(),
                "extra {extra}, import {round} after the one at seq {seq}: {r:?}"
            );
            let (cfg, _) = vm2.config("dg01").unwrap();
            assert!(
                chosen(&cfg),
                "extra {extra}, import {round}: the chosen copy won"
            );
            vm2.dg_deport("dg01").unwrap();
        }
        e.shutdown();
    }
}

/// `bdev_raid_create` with a strip size whose byte count overflows (or that no base bdev
/// can hold) is refused with a clear error, and leaves nothing behind: no group, no raid
/// bdev, base bdevs unclaimed and still blank; a valid create on them then works.
#[test]
fn raid0_strip_size_overflow_is_refused_and_creates_nothing() {
    use serde_json::json;
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    let d = disks(&e, 2, 16);
    let mut t = plexd_control::MethodTable::new();
    crate::volume::api::raid::register(&mut t, &vm);
    let create = t.get("bdev_raid_create").unwrap().handler.clone();
    for strip in [u64::MAX / 512, 1 << 54, 16 << 10] {
        let params = json!({
            "name": "R0", "raid_level": "raid0", "strip_size_kb": strip, "base_bdevs": d,
        });
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| create(Some(params))));
        assert!(
            vm.group_names().is_empty(),
            "strip_size_kb {strip}: a group was left"
        );
        assert!(e.bdevs().get("R0").is_err());
        for n in &d {
            let b = e.bdevs().get(n).unwrap();
            assert!(b.claimed_by().is_none(), "{n} left claimed");
            assert!(
                crate::volume::ondisk::disk::read_label(&e, &b).is_err(),
                "strip_size_kb {strip}: {n} was labelled"
            );
        }
        let err = match r {
            Ok(Err(err)) => err,
            Ok(Ok(v)) => panic!("strip_size_kb {strip} accepted: {v}"),
            Err(_) => panic!("strip_size_kb {strip}: bdev_raid_create panicked"),
        };
        assert!(
            err.message.contains("strip_size_kb"),
            "strip_size_kb {strip}: {}",
            err.message
        );
    }
    let ok = json!({
        "name": "R0", "raid_level": "raid0", "strip_size_kb": 64, "base_bdevs": d,
    });
    create(Some(ok)).unwrap();
    assert!(e.bdevs().get("R0").is_ok());
    vm.shutdown();
    e.shutdown();
}

/// A malloc bdev of `mib` MiB with `block_size`-byte blocks.
fn malloc_bs(e: &Engine, name: &str, mib: u64, block_size: u32) -> Arc<Bdev> {
    let spec = BdevSpec {
        name: name.into(),
        aliases: vec![],
        uuid: None,
        block_size,
        num_blocks: (mib << 20) / block_size as u64,
        io_types: IoTypeSet::all(),
    };
    e.add_bdev(spec, Box::new(MallocBdev::new(mib << 20).expect("ram")))
        .expect("malloc")
}

/// The block sizes docs/on-disk-format.md promises are the ones the code takes: every power
/// of two from 512 to 65536 makes a group whose mirror keeps its data across a deport and
/// import (labels and config copies written and read back in whole blocks); sizes the bdev
/// layer allows but the format does not (multiples of 512 that are not powers of two) are
/// refused before anything is written. (The bdev layer itself stops at 65536.)
#[test]
fn documented_block_sizes_are_the_supported_ones() {
    let doc = include_str!("../../../../docs/on-disk-format.md");
    assert!(
        doc.contains("power-of-two block sizes from 512 to 65536 bytes"),
        "the format document no longer states the range this test checks"
    );
    for bs in [512u32, 1024, 4096, 8192, 16384, 65536] {
        let e = engine();
        let vm = VolumeManager::new(e.clone());
        let d: Vec<String> = (0..2)
            .map(|i| malloc_bs(&e, &format!("B{i}"), 16, bs).name().to_string())
            .collect();
        vm.dg_create("dg01", &d, false)
            .unwrap_or_else(|err| panic!("block size {bs}: {err}"));
        let vol = create(&vm, "vol01", 4 << 20, "mirror");
        assert_eq!(vol.block_size(), bs);
        let data = pattern(bs as u64, 256 << 10);
        write(&e, &vol, 1 << 20, &data).unwrap();
        let stripe = create(&vm, "vol02", 2 << 20, "stripe");
        write(&e, &stripe, 0, &data).unwrap();
        assert_eq!(
            read(&e, &stripe, 0, 256 << 10).unwrap(),
            data,
            "block size {bs}"
        );
        drop((vol, stripe));
        vm.dg_deport("dg01").unwrap();
        vm.dg_import(Some("dg01"), None, None)
            .unwrap_or_else(|err| panic!("block size {bs}: import: {err}"));
        let vol = e.bdevs().get("dg01/vol01").unwrap();
        assert_eq!(
            read(&e, &vol, 1 << 20, 256 << 10).unwrap(),
            data,
            "block size {bs}"
        );
        for p in plex_names(&vm, "dg01", "vol01") {
            let bpb = (256 << 10) / bs as u64;
            let at = (1 << 20) / bs as u64;
            assert_eq!(
                plex_read(&vm, &vol, &p, at, bpb),
                data,
                "block size {bs}, plex {p}"
            );
        }
        drop(vol);
        vm.shutdown();
        e.shutdown();
    }
    for bs in [1536u32, 12288] {
        let e = engine();
        let vm = VolumeManager::new(e.clone());
        let b = malloc_bs(&e, "B0", 24, bs);
        let err = vm
            .dg_create("dg01", &["B0".to_string()], false)
            .unwrap_err();
        assert!(
            err.to_string().contains("block size"),
            "block size {bs}: {err}"
        );
        assert!(b.claimed_by().is_none());
        let raw = read(&e, &b, 0, bs as u64).unwrap();
        assert!(
            raw.iter().all(|&x| x == 0),
            "block size {bs}: something was written"
        );
        drop(b);
        e.shutdown();
    }
}
