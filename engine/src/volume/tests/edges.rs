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
