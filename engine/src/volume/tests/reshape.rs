//! Grow and subdisk move while guests write.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::*;
use crate::volume::task::TaskState;

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
