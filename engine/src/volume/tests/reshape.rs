//! Grow and subdisk move while guests write.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::*;
use crate::volume::copy::task::TaskState;

#[test]
fn volumes_grow_keeping_their_data_and_reading_zeroes_beyond() {
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    let d = disks(&e, 4, 32);
    vm.dg_create("dg01", &d, false).unwrap();
    // Old data everywhere in the public regions: grown space must not show it.
    for n in &d {
        let b = e.bdevs().get(n).unwrap();
        write(&e, &b, 4 << 20, &vec![0xab; 28 << 20]).unwrap();
    }
    for (i, layout) in ["concat", "stripe", "mirror", "mirror-stripe"]
        .iter()
        .enumerate()
    {
        let name = format!("g{i}");
        let vol = create(&vm, &name, 2 << 20, layout);
        let data = pattern(i as u64 + 40, 2 << 20);
        write(&e, &vol, 0, &data).unwrap();
        let err = vm.volume_resize("dg01", &name, 1 << 20).unwrap_err();
        assert!(err.to_string().contains("shrinking"), "{err}");
        let blocks = vm.volume_resize("dg01", &name, 5 << 20).unwrap();
        assert_eq!(blocks, 5 << 11);
        assert_eq!(vol.num_blocks(), 5 << 11, "{layout}: the bdev grew");
        assert_eq!(read(&e, &vol, 0, 2 << 20).unwrap(), data, "{layout}");
        assert!(read(&e, &vol, 2 << 20, 3 << 20)
            .unwrap()
            .iter()
            .all(|&b| b == 0));
        let tail = pattern(i as u64 + 50, 64 << 10);
        write(&e, &vol, (5 << 20) - (64 << 10), &tail).unwrap();
        let mut want = data.clone();
        want.resize(5 << 20, 0);
        want[(5 << 20) - (64 << 10)..].copy_from_slice(&tail);
        for p in plex_names(&vm, "dg01", &name) {
            assert!(
                plex_read(&vm, &vol, &p, 0, 5 << 11) == want,
                "{layout}: plex {p}"
            );
        }
        let (cfg, _) = vm.config("dg01").unwrap();
        cfg.validate().unwrap();
    }
    vm.crash();
    let vm2 = VolumeManager::new(e.clone());
    vm2.dg_import(Some("dg01"), None, None).unwrap();
    let vol = e.bdevs().get("dg01/g3").unwrap();
    assert_eq!(vol.num_blocks(), 5 << 11);
    drop(vol);
    vm2.shutdown();
    e.shutdown();
}

fn move_under_writes(layout: &str, ndisks: usize) {
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    let d = disks(&e, ndisks, 16);
    vm.dg_create("dg01", &d, false).unwrap();
    let vol = create(&vm, "vol01", 8 << 20, layout);
    let model = Arc::new(std::sync::Mutex::new(pattern(1, 8 << 20)));
    write(&e, &vol, 0, &model.lock().unwrap()).unwrap();
    let (cfg, _) = vm.config("dg01").unwrap();
    let plex = plex_names(&vm, "dg01", "vol01")[0].clone();
    let sd = cfg.subdisks_of(&plex)[0].clone();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (e, vol, model, stop) = (e.clone(), vol.clone(), model.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut seed = 5u64;
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) || n < 30 {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                let block = (seed >> 33) % ((8 << 11) - 8);
                let data = pattern(seed, 4096);
                write(&e, &vol, block * 512, &data).unwrap();
                model.lock().unwrap()[(block * 512) as usize..(block * 512) as usize + 4096]
                    .copy_from_slice(&data);
                n += 1;
            }
        })
    };
    let id = vm
        .subdisk_move("dg01", &sd.name, None, Duration::from_millis(2))
        .unwrap();
    let t = vm.tasks().wait(id, Duration::from_secs(60)).unwrap();
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert_eq!(t.state(), TaskState::Done, "{layout}");
    let (cfg, _) = vm.config("dg01").unwrap();
    cfg.validate().unwrap();
    assert!(
        cfg.subdisks.iter().all(|s| s.name != sd.name),
        "old subdisk gone"
    );
    let moved = cfg
        .subdisks_of(&plex)
        .into_iter()
        .find(|s| s.column == sd.column && s.column_offset == sd.column_offset)
        .unwrap()
        .clone();
    assert_ne!(moved.disk, sd.disk, "{layout}: on another disk");
    let other_disks: Vec<String> = cfg
        .plexes_of("vol01")
        .iter()
        .flat_map(|p| cfg.subdisks_of(&p.name))
        .filter(|s| s.name != moved.name)
        .map(|s| s.disk.clone())
        .collect();
    assert!(
        !other_disks.contains(&moved.disk),
        "{layout}: redundancy kept"
    );
    let model = model.lock().unwrap().clone();
    assert!(
        read(&e, &vol, 0, 8 << 20).unwrap() == model,
        "{layout}: volume data"
    );
    for p in plex_names(&vm, "dg01", "vol01") {
        assert!(
            plex_read(&vm, &vol, &p, 0, 8 << 11) == model,
            "{layout}: plex {p}"
        );
    }
    drop(vol);
    vm.shutdown();
    e.shutdown();
}

#[test]
fn concat_subdisk_moves_under_writes() {
    move_under_writes("concat", 2);
}

#[test]
fn mirror_stripe_column_moves_under_writes() {
    move_under_writes("mirror-stripe", 5);
}

/// A guest write that fails on a move's new place while the copy is already finished: the
/// move must not swap before that failure is handled (it would then find no move, and the
/// write would be acknowledged over a plex that now maps to the new place without it). The
/// test holds the failure's handling until the move thread has either swapped or is waiting
/// for the write.
#[test]
fn a_shadow_write_failing_as_the_move_swaps_is_never_lost() {
    use crate::drivers::error::InjectTarget;
    use crate::volume::copy::task::HookPoint;
    use std::sync::Mutex;
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    let m = disks(&e, 2, 16);
    let ee = crate::drivers::error::create(&e, &m[1], None)
        .unwrap()
        .name()
        .to_string();
    vm.dg_create("dg01", &[m[0].clone(), ee.clone()], false)
        .unwrap();
    let vol = vm
        .volume_create(&VolumeCreate {
            dg: "dg01".into(),
            name: "vol01".into(),
            size: 4 << 20,
            layout: "concat".into(),
            alloc: Some(vec!["disk01".into()]),
            ..Default::default()
        })
        .unwrap();
    let vol = e.bdevs().get(&vol).unwrap();
    let data = pattern(31, 4 << 20);
    write(&e, &vol, 0, &data).unwrap();
    let shared = crate::volume::io::driver::shared_of(&vol).unwrap();
    let copied = Gate::new();
    let failed_seen = Arc::new(AtomicBool::new(false));
    // The move task, once known: the failure's handling waits until it ended (swapped) or
    // its thread holds the barrier (waits for the failed write).
    let moving: Arc<Mutex<Option<Arc<crate::volume::copy::task::Task>>>> = Arc::default();
    {
        let (copied, failed_seen, moving, shared) = (
            copied.clone(),
            failed_seen.clone(),
            moving.clone(),
            shared.clone(),
        );
        set_hook(&vm, move |p| match p {
            HookPoint::MoveCopied => copied.block(),
            HookPoint::WriteFailed => {
                failed_seen.store(true, Ordering::SeqCst);
                let t = moving.lock().unwrap().clone().expect("the move task");
                wait_until("the move to swap or to wait for the write", || {
                    t.state() != TaskState::Running || shared.barrier().any_raised()
                });
            }
            _ => {}
        });
    }
    let (cfg, _) = vm.config("dg01").unwrap();
    let sd = cfg.subdisks_of("vol01-01")[0].clone();
    let id = vm
        .subdisk_move("dg01", &sd.name, Some("disk02"), Duration::ZERO)
        .unwrap();
    let task = vm.tasks().get(id).unwrap();
    *moving.lock().unwrap() = Some(task.clone());
    copied.wait_reached("the move's copy to finish");
    // The next write to the new place fails: the guest's, on the shadow.
    inject(&e, &ee, InjectTarget::Write, 1);
    let late = pattern(32, 64 << 10);
    let writer = {
        let (e, vol, late) = (e.clone(), vol.clone(), late.clone());
        std::thread::spawn(move || write(&e, &vol, 0, &late))
    };
    wait_until("the shadow write to fail", || {
        failed_seen.load(Ordering::SeqCst)
    });
    copied.open();
    writer
        .join()
        .unwrap()
        .expect("the write reached the real plex");
    vm.tasks().wait(id, Duration::from_secs(60)).unwrap();
    assert!(
        read(&e, &vol, 0, late.len() as u64).unwrap() == late,
        "an acknowledged write was lost (move ended {:?})",
        task.state()
    );
    assert_eq!(task.state(), TaskState::Cancelled, "the move was abandoned");
    let (cfg, _) = vm.config("dg01").unwrap();
    assert_eq!(cfg.subdisks_of("vol01-01")[0].name, sd.name);
    drop((vol, shared));
    vm.shutdown();
    e.shutdown();
}

/// The engine, the manager, the volume, the flush's outcome and the data written before it.
type FlushAtSwap = (
    Arc<Engine>,
    Arc<VolumeManager>,
    Arc<crate::bdev::Bdev>,
    Result<(), String>,
    Vec<u8>,
);

/// Moves the subdisk of plex `plex` of a `layout` volume (created on disk01.., `ndata`
/// disks) to the last disk, an error bdev, and has a guest flush fail there while the move
/// swaps: flushes never enter the write barrier, so the swap does not wait for them, and the
/// failure is handled (the test holds it until then) only once the plex maps to the new
/// place. Returns the flush's outcome, with the manager and the volume for more checks.
fn shadow_flush_fails_as_the_move_swaps(layout: &str, ndata: usize, plex: &str) -> FlushAtSwap {
    use crate::bdev::blocking::run_io;
    use crate::bdev::IoType;
    use crate::drivers::error::InjectTarget;
    use crate::volume::copy::task::HookPoint;
    use std::sync::Mutex;
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    let mut m = disks(&e, ndata + 1, 16);
    let ee = crate::drivers::error::create(&e, &m[ndata], None)
        .unwrap()
        .name()
        .to_string();
    m[ndata] = ee.clone();
    vm.dg_create("dg01", &m, false).unwrap();
    let vol = vm
        .volume_create(&VolumeCreate {
            dg: "dg01".into(),
            name: "vol01".into(),
            size: 4 << 20,
            layout: layout.into(),
            alloc: Some((1..=ndata).map(|i| format!("disk{i:02}")).collect()),
            ..Default::default()
        })
        .unwrap();
    let vol = e.bdevs().get(&vol).unwrap();
    write(&e, &vol, 0, &pattern(31, 4 << 20)).unwrap();
    let copied = Gate::new();
    let failed_seen = Arc::new(AtomicBool::new(false));
    let moving: Arc<Mutex<Option<Arc<crate::volume::copy::task::Task>>>> = Arc::default();
    {
        let (copied, failed_seen, moving) = (copied.clone(), failed_seen.clone(), moving.clone());
        set_hook(&vm, move |p| match p {
            HookPoint::MoveCopied => copied.block(),
            HookPoint::WriteFailed => {
                failed_seen.store(true, Ordering::SeqCst);
                let t = moving.lock().unwrap().clone().expect("the move task");
                wait_until("the move to end", || t.state() != TaskState::Running);
            }
            _ => {}
        });
    }
    let (cfg, _) = vm.config("dg01").unwrap();
    let sd = cfg.subdisks_of(plex)[0].clone();
    let to = format!("disk{:02}", ndata + 1);
    let id = vm
        .subdisk_move("dg01", &sd.name, Some(&to), Duration::ZERO)
        .unwrap();
    let task = vm.tasks().get(id).unwrap();
    *moving.lock().unwrap() = Some(task.clone());
    copied.wait_reached("the move's copy to finish");
    // A guest write lands on both places; then the guest flushes, and the new place fails it.
    let data = pattern(32, 64 << 10);
    write(&e, &vol, 0, &data).unwrap();
    inject(&e, &ee, InjectTarget::Flush, 1);
    let flusher = {
        let (e, vol) = (e.clone(), vol.clone());
        std::thread::spawn(move || {
            run_io(
                &e,
                0,
                &vol,
                IoType::Flush,
                0,
                0,
                None,
                Duration::from_secs(60),
            )
            .map(|_| ())
            .map_err(|e| e.to_string())
        })
    };
    wait_until("the shadow flush to fail", || {
        failed_seen.load(Ordering::SeqCst)
    });
    copied.open();
    let r = flusher.join().unwrap();
    vm.tasks().wait(id, Duration::from_secs(60)).unwrap();
    assert_eq!(task.state(), TaskState::Done, "the move swapped");
    let (cfg, _) = vm.config("dg01").unwrap();
    assert_eq!(
        cfg.subdisks_of(plex)[0].disk,
        to,
        "the plex now maps to the new place"
    );
    (e, vm, vol, r, data)
}

/// The one plex of a concat volume fails a flush on its new place as the move swaps: the
/// flush is not acknowledged (the disk now holding the data failed it); the plex being the
/// last with current data, the volume goes offline.
#[test]
fn a_shadow_flush_failing_as_the_move_swaps_is_not_acknowledged() {
    let (e, vm, vol, r, _) = shadow_flush_fails_as_the_move_swaps("concat", 1, "vol01-01");
    assert!(
        r.is_err(),
        "a flush the plex's new disk failed was acknowledged as a success after the swap"
    );
    assert!(read(&e, &vol, 0, 4096).is_err(), "the volume is offline");
    drop(vol);
    vm.shutdown();
    e.shutdown();
}

/// A mirror's plex fails a flush on its new place as the move swaps: that plex is detached
/// (IOFAIL, recorded before the flush is acknowledged), and the other plex serves the data.
#[test]
fn a_shadow_flush_failing_after_the_swap_detaches_the_moved_plex() {
    use crate::volume::model::objects::{KernelState, PlexState};
    let (e, vm, vol, r, data) = shadow_flush_fails_as_the_move_swaps("mirror", 2, "vol01-02");
    r.expect("the other plex took the flush");
    assert_eq!(
        plex_state(&vm, "vol01-02"),
        (PlexState::Iofail, KernelState::Detached),
        "the plex whose new disk failed the flush is still in use"
    );
    assert!(read(&e, &vol, 0, data.len() as u64).unwrap() == data);
    drop(vol);
    vm.shutdown();
    e.shutdown();
}

/// Group dg01 on a RAM disk (disk01, the only config holder) and, as disk02, an error bdev over
/// a RAM disk without write-zeroes (so zeroing writes buffers of zeroes, which the error bdev
/// can hold); zeroing gives up after 200 ms.
fn zeroing_setup(e: &Arc<Engine>, vm: &VolumeManager) -> String {
    malloc(e, "M0", 16);
    let spec = BdevSpec {
        name: "P0".into(),
        aliases: vec![],
        uuid: None,
        block_size: 512,
        num_blocks: 16 * 2048,
        io_types: IoTypeSet::all()
            .without(crate::bdev::IoType::WriteZeroes)
            .without(crate::bdev::IoType::Unmap),
    };
    e.add_bdev(spec, Box::new(MallocBdev::new(16 << 20).unwrap()))
        .unwrap();
    let ee = crate::drivers::error::create(e, "P0", None)
        .unwrap()
        .name()
        .to_string();
    vm.dg_create("dg01", &["M0".into(), ee.clone()], false)
        .unwrap();
    vm.dg_set("dg01", 1).unwrap();
    vm.set_zero_wait(Duration::from_millis(200));
    ee
}

/// Holds the first zeroing write of `vm`'s next create or grow on error bdev `name` (the
/// commit before it writes the disk's label too).
fn hold_next_zeroing(vm: &VolumeManager, e: &Arc<Engine>, name: &str) {
    use crate::drivers::error::{Arming, ErrorKind, InjectTarget};
    let (e, name) = (e.clone(), name.to_string());
    let armed = AtomicBool::new(false);
    *vm.before_zeroing.lock().unwrap() = Some(Box::new(move || {
        if !armed.swap(true, Ordering::SeqCst) {
            err_state(&e, &name)
                .inject(InjectTarget::Write, &Arming::new(ErrorKind::Hold, 1))
                .unwrap();
        }
    }));
}

/// Lets the writes held on error bdev `name` go down to its disk.
fn release_held(e: &Engine, name: &str) {
    let disk = e.bdevs().get(name).unwrap();
    crate::bdev::blocking::run_io(
        e,
        0,
        &disk,
        crate::bdev::IoType::Reset,
        0,
        0,
        None,
        Duration::from_secs(30),
    )
    .unwrap();
}

fn orphans(vm: &VolumeManager) -> usize {
    let (cfg, _) = vm.config("dg01").unwrap();
    cfg.subdisks.iter().filter(|s| s.plex.is_none()).count()
}

/// A volume create whose zeroing write times out fails, but the zero write may still land:
/// its space stays allocated (orphan subdisks) until that write completed, so a volume
/// created meanwhile is placed elsewhere and never gets zeroed by it. (The space used to be
/// freed at once, and the late zeroes wiped the next volume created there.)
#[test]
fn a_create_whose_zeroing_timed_out_keeps_its_space_until_the_zeroes_landed() {
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    let ee = zeroing_setup(&e, &vm);
    let req = |name: &str| VolumeCreate {
        dg: "dg01".into(),
        name: name.into(),
        size: 4 << 20,
        layout: "concat".into(),
        alloc: Some(vec!["disk02".into()]),
        ..Default::default()
    };
    hold_next_zeroing(&vm, &e, &ee);
    let err = vm.volume_create(&req("a")).unwrap_err();
    assert!(vm.config("dg01").unwrap().0.volume("a").is_none(), "{err}");
    // Nor can the group be destroyed under the late write.
    let err = vm.dg_destroy("dg01").unwrap_err();
    assert_eq!(err.errno(), libc::EBUSY, "{err}");
    let c = e
        .bdevs()
        .get(&vm.volume_create(&req("c")).unwrap())
        .unwrap();
    let cdata = pattern(40, 4 << 20);
    write(&e, &c, 0, &cdata).unwrap();
    release_held(&e, &ee);
    wait_until("the late zeroing's space to be freed", || orphans(&vm) == 0);
    assert!(
        read(&e, &c, 0, 4 << 20).unwrap() == cdata,
        "volume c was overwritten by the late zeroes of the failed create of a"
    );
    drop(c);
    vm.shutdown();
    e.shutdown();
}

/// The same for a grow: the new space whose zeroing timed out stays allocated until the late
/// zeroes landed; the volume keeps its size and data, and a volume created meanwhile is not
/// wiped.
#[test]
fn a_grow_whose_zeroing_timed_out_keeps_the_new_space_until_the_zeroes_landed() {
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    let ee = zeroing_setup(&e, &vm);
    let req = |name: &str, size: u64, disk: &str| VolumeCreate {
        dg: "dg01".into(),
        name: name.into(),
        size,
        layout: "concat".into(),
        alloc: Some(vec![disk.into()]),
        ..Default::default()
    };
    // disk01 is full: the grow can only take space on disk02.
    let free: u64 = vm
        .config("dg01")
        .unwrap()
        .0
        .free_space("disk01")
        .iter()
        .map(|(_, l)| l)
        .sum();
    vm.volume_create(&req("fill", free * 512, "disk01"))
        .unwrap();
    let g = e
        .bdevs()
        .get(&vm.volume_create(&req("g", 1 << 20, "disk02")).unwrap())
        .unwrap();
    let gdata = pattern(7, 1 << 20);
    write(&e, &g, 0, &gdata).unwrap();
    hold_next_zeroing(&vm, &e, &ee);
    vm.volume_resize("dg01", "g", 5 << 20).unwrap_err();
    assert_eq!(g.num_blocks(), 2048, "the volume kept its size");
    let c = e
        .bdevs()
        .get(&vm.volume_create(&req("c", 4 << 20, "disk02")).unwrap())
        .unwrap();
    let cdata = pattern(40, 4 << 20);
    write(&e, &c, 0, &cdata).unwrap();
    release_held(&e, &ee);
    wait_until("the late zeroing's space to be freed", || orphans(&vm) == 0);
    assert!(
        read(&e, &c, 0, 4 << 20).unwrap() == cdata,
        "volume c was overwritten by the late zeroes of the failed grow of g"
    );
    assert!(
        read(&e, &g, 0, 1 << 20).unwrap() == gdata,
        "g kept its data"
    );
    drop((c, g));
    vm.shutdown();
    e.shutdown();
}
