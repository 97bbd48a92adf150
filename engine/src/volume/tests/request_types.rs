//! A volume's request types are fixed when it starts: a plex attached, moved or grown onto a
//! disk without write-zeroes or unmap must still take the guest's write-zeroes (written as
//! zero buffers) and unmaps (nothing to do on one plex, zeroes on mirrors), not fail.

use std::time::Duration;

use super::*;
use crate::bdev::blocking::run_io;
use crate::bdev::IoType;
use crate::volume::copy::task::TaskState;
use crate::volume::model::objects::{KernelState, PlexState};

const MIB: u64 = 1 << 20;

/// A RAM disk that offers neither write-zeroes nor unmap (as an aio bdev without
/// `fallocate`).
fn plain_disk(e: &Engine, name: &str, mib: u64) -> String {
    let spec = BdevSpec {
        name: name.into(),
        aliases: vec![],
        uuid: None,
        block_size: 512,
        num_blocks: mib * 2048,
        io_types: IoTypeSet::all()
            .without(IoType::WriteZeroes)
            .without(IoType::Unmap),
    };
    e.add_bdev(spec, Box::new(MallocBdev::new(mib << 20).expect("ram")))
        .expect("plain disk");
    name.into()
}

/// Group dg01 on a full-featured disk (disk01) and a plain one (disk02) of `mib` MiB each,
/// and volume `vol01` of `size` bytes on disk01 only, filled with a pattern.
fn setup(e: &Arc<Engine>, vm: &VolumeManager, mib: u64, size: u64) -> (Arc<Bdev>, Vec<u8>) {
    malloc(e, "M0", mib);
    plain_disk(e, "P0", mib);
    vm.dg_create("dg01", &["M0".into(), "P0".into()], false)
        .unwrap();
    let vol = vm
        .volume_create(&VolumeCreate {
            dg: "dg01".into(),
            name: "vol01".into(),
            size,
            layout: "concat".into(),
            alloc: Some(vec!["disk01".into()]),
            ..Default::default()
        })
        .unwrap();
    let vol = e.bdevs().get(&vol).unwrap();
    for t in [IoType::WriteZeroes, IoType::Unmap] {
        assert!(vol.io_types().contains(t), "the volume starts with {t:?}");
    }
    let data = pattern(3, size as usize);
    write(e, &vol, 0, &data).unwrap();
    (vol, data)
}

fn wait_task(vm: &VolumeManager, id: u64) {
    let t = vm.tasks().wait(id, Duration::from_secs(60)).unwrap();
    assert_eq!(t.state(), TaskState::Done, "{}", t.kind);
}

/// Issues `t` on `[off, off + len)` of `vol`.
fn zero_op(e: &Engine, vol: &Arc<Bdev>, t: IoType, off: u64, len: u64) {
    run_io(e, 0, vol, t, off, len, None, Duration::from_secs(20))
        .unwrap_or_else(|err| panic!("{t:?} of {len} bytes at {off}: {err}"));
}

fn assert_plexes_active(vm: &VolumeManager) {
    for p in plex_names(vm, "dg01", "vol01") {
        assert_eq!(
            plex_state(vm, &p),
            (PlexState::Active, KernelState::Enabled),
            "plex {p} after write-zeroes/unmap"
        );
    }
}

/// A mirror attached on a disk without write-zeroes/unmap stays attached through the guest's
/// write-zeroes (one larger than a single emulated write) and unmaps, and holds zeroes where
/// they went, like the other mirror.
#[test]
fn a_mirror_attached_on_a_plain_disk_takes_write_zeroes_and_unmap() {
    const SIZE: u64 = 40 * MIB;
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    let (vol, mut want) = setup(&e, &vm, 48, SIZE);
    let id = vm
        .plex_attach(
            "dg01",
            "vol01",
            None,
            Some(&["disk02".into()]),
            Duration::ZERO,
        )
        .unwrap();
    wait_task(&vm, id);
    let new = plex_on(&vm, "disk02");
    assert_plexes_active(&vm);
    zero_op(&e, &vol, IoType::WriteZeroes, MIB, MIB + 4096);
    want[MIB as usize..(2 * MIB + 4096) as usize].fill(0);
    zero_op(
        &e,
        &vol,
        IoType::WriteZeroes,
        3 * MIB + 512,
        20 * MIB + 4096,
    );
    want[(3 * MIB + 512) as usize..(23 * MIB + 4608) as usize].fill(0);
    zero_op(&e, &vol, IoType::Unmap, 30 * MIB, MIB / 2);
    // On mirrors an unmap writes zeroes, so the copies stay equal.
    want[30 * MIB as usize..(30 * MIB + MIB / 2) as usize].fill(0);
    assert_plexes_active(&vm);
    assert!(read(&e, &vol, 0, SIZE).unwrap() == want, "volume data");
    for p in plex_names(&vm, "dg01", "vol01") {
        assert!(
            plex_read(&vm, &vol, &p, 0, SIZE / 512) == want,
            "plex {p} (new: {new}) differs"
        );
    }
    drop(vol);
    vm.shutdown();
    e.shutdown();
}

/// A subdisk moved onto a disk without write-zeroes/unmap: write-zeroes still leave zeroes
/// and unmaps still succeed (a single plex: nothing to do on that disk).
#[test]
fn a_subdisk_moved_onto_a_plain_disk_takes_write_zeroes_and_unmap() {
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    let (vol, mut want) = setup(&e, &vm, 16, 4 * MIB);
    let (cfg, _) = vm.config("dg01").unwrap();
    let sd = cfg.subdisks[0].name.clone();
    let id = vm
        .subdisk_move("dg01", &sd, Some("disk02"), Duration::ZERO)
        .unwrap();
    wait_task(&vm, id);
    let (cfg, _) = vm.config("dg01").unwrap();
    assert!(cfg.subdisks.iter().all(|s| s.disk == "disk02"), "moved");
    zero_op(&e, &vol, IoType::WriteZeroes, 512, 2 * MIB);
    want[512..(2 * MIB + 512) as usize].fill(0);
    zero_op(&e, &vol, IoType::Unmap, 3 * MIB, MIB);
    assert_plexes_active(&vm);
    // What an unmapped range reads back as is not promised on one plex; the rest is exact.
    let got = read(&e, &vol, 0, 4 * MIB).unwrap();
    assert_eq!(got[..3 * MIB as usize], want[..3 * MIB as usize]);
    drop(vol);
    vm.shutdown();
    e.shutdown();
}

/// A volume grown onto a disk without write-zeroes/unmap: write-zeroes across both disks
/// leave zeroes, unmaps succeed.
#[test]
fn a_volume_grown_onto_a_plain_disk_takes_write_zeroes_and_unmap() {
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    let (vol, mut want) = setup(&e, &vm, 16, 4 * MIB);
    // Fill disk01 so the growth must go to disk02.
    let (cfg, _) = vm.config("dg01").unwrap();
    let free: u64 = cfg.free_space("disk01").iter().map(|(_, l)| l).sum();
    vm.volume_create(&VolumeCreate {
        dg: "dg01".into(),
        name: "filler".into(),
        size: free * 512,
        layout: "concat".into(),
        alloc: Some(vec!["disk01".into()]),
        ..Default::default()
    })
    .unwrap();
    vm.volume_resize("dg01", "vol01", 8 * MIB).unwrap();
    let (cfg, _) = vm.config("dg01").unwrap();
    let plex = plex_names(&vm, "dg01", "vol01")[0].clone();
    assert!(
        cfg.subdisks_of(&plex).iter().any(|s| s.disk == "disk02"),
        "grown onto disk02"
    );
    want.resize(8 * MIB as usize, 0);
    let more = pattern(4, 4 * MIB as usize);
    write(&e, &vol, 4 * MIB, &more).unwrap();
    want[4 * MIB as usize..].copy_from_slice(&more);
    // Across the boundary of the two disks.
    zero_op(&e, &vol, IoType::WriteZeroes, 3 * MIB, 2 * MIB);
    want[3 * MIB as usize..5 * MIB as usize].fill(0);
    zero_op(&e, &vol, IoType::Unmap, 6 * MIB, MIB);
    assert_plexes_active(&vm);
    let got = read(&e, &vol, 0, 8 * MIB).unwrap();
    assert_eq!(got[..6 * MIB as usize], want[..6 * MIB as usize]);
    assert_eq!(got[7 * MIB as usize..], want[7 * MIB as usize..]);
    drop(vol);
    vm.shutdown();
    e.shutdown();
}
