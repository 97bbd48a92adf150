//! Edge cases of the volume manager: zero-length requests, a map that cannot be published,
//! read repairs under load, split brain settled by a selected copy, raid parameters that
//! overflow, and the block sizes VM disks accept.

use std::time::Duration;

use super::*;
use crate::bdev::blocking::{run_io, BlockingIoError};
use crate::bdev::IoType;
use crate::volume::task::TaskState;

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
    use crate::volume::objects::{KernelState, PlexState};
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
    let shared = crate::volume::driver::shared_of(&vol).unwrap();
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
