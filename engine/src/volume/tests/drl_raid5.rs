//! The RAID-5 write path with a dirty region log (`io::raid5::channel` over `io::drl_port`),
//! over a hand-built map as in `drl_port` (the manager does not make maps yet): a RAID-5
//! volume without a log plex, 3 columns of 16 KiB units (a row holds 32 KiB of data, a 64 KiB
//! region two rows), 8 MiB in 128 regions. What is on disk is read back with
//! `store::read_map`, the parity with `raid5_io::parity_mismatch`.

use std::time::Duration;

use crate::bdev::blocking::{read, run_io, PendingIo};
use crate::bdev::IoType;
use crate::drivers::error::{Arming, ErrorKind, InjectTarget, MAX_NUM};
use crate::volume::io::driver::{shared_of, VolumeMap};
use crate::volume::manager::ops::VolumeCreate;
use crate::volume::tests::drl_port::{armed, still_running, Rig, NO_CLEAR_MS, REGION};
use crate::volume::tests::raid5_io::parity_mismatch;
use crate::volume::tests::{engine, err_state, inject, pattern, wait_until};
use crate::Engine;

/// Five disks, the volume's columns on the first three; the map's copies on two of the
/// columns (`on_data`) or on the other two disks (whose writes are then all log writes).
fn rig(on_data: bool, clear_ms: u64) -> Rig {
    let req = VolumeCreate {
        layout: "raid5".into(),
        ncol: Some(3),
        stripe_unit_kb: Some(16),
        nlog: Some(0),
        ..Default::default()
    };
    let copy_on = if on_data { [0, 1] } else { [3, 4] };
    let rig = Rig::with(engine(), req, 3, 5, copy_on, clear_ms);
    let map = shared_of(&rig.vol).unwrap().map();
    let r5 = map.raid5.as_ref().expect("a RAID-5 map");
    assert!(r5.logs.is_empty(), "the volume has a log plex");
    rig
}

/// Writes completed on the copy disks (0 and 1 of the map).
fn log_writes(rig: &Rig) -> [u64; 2] {
    [rig.writes_on_copy(0), rig.writes_on_copy(1)]
}

#[test]
fn raid5_writes_mark_exactly_their_regions_on_both_copies() {
    let rig = rig(true, NO_CLEAR_MS);
    // Read-modify-write: 4 KiB of one unit.
    let a = pattern(1, 4096);
    rig.write(3, 4096, &a);
    // A full stripe: region 10's first row.
    let b = pattern(2, 32 << 10);
    rig.write(10, 0, &b);
    // Across two rows and the border of regions 20 and 21.
    let c = pattern(3, 48 << 10);
    rig.write(20, REGION - (24 << 10), &c);
    let zeroes_at = 100 * REGION + 8192;
    run_io(
        &rig.e,
        0,
        &rig.vol,
        IoType::WriteZeroes,
        zeroes_at,
        4096,
        None,
        Duration::from_secs(10),
    )
    .unwrap();
    let want = vec![3, 10, 20, 21, 100];
    assert_eq!(rig.on_disk(&[0]), want, "copy 0");
    assert_eq!(rig.on_disk(&[1]), want, "copy 1");
    assert_eq!(rig.drl.dirty(), 5);
    assert_eq!(rig.read(3, 4096, 4096), a);
    assert_eq!(rig.read(10, 0, 32 << 10), b);
    assert_eq!(rig.read(20, REGION - (24 << 10), 48 << 10), c);
    assert_eq!(
        read(&rig.e, &rig.vol, zeroes_at, 4096).unwrap(),
        vec![0u8; 4096]
    );
    assert_eq!(parity_mismatch(&rig.vm, &rig.vol), None);
    rig.shutdown();
}

#[test]
fn raid5_a_region_already_dirty_is_not_logged_again() {
    let rig = rig(false, NO_CLEAR_MS);
    let before = log_writes(&rig);
    rig.write(5, 0, &pattern(1, 4096));
    let after_first = log_writes(&rig);
    assert_eq!(after_first, [before[0] + 1, before[1] + 1]);
    for k in 1..10u64 {
        rig.write(5, k * 4096, &pattern(k, 4096));
    }
    // A full stripe into the same region.
    rig.write(5, 32 << 10, &pattern(50, 32 << 10));
    assert_eq!(
        log_writes(&rig),
        after_first,
        "writes into a region whose bit is durable wrote the log"
    );
    rig.write(6, 0, &pattern(11, 4096));
    assert_eq!(log_writes(&rig), [after_first[0] + 1, after_first[1] + 1]);
    assert_eq!(rig.on_disk(&[0, 1]), vec![5, 6]);
    for k in 1..8u64 {
        assert_eq!(rig.read(5, k * 4096, 4096), pattern(k, 4096));
    }
    assert_eq!(rig.read(5, 32 << 10, 32 << 10), pattern(50, 32 << 10));
    assert_eq!(parity_mismatch(&rig.vm, &rig.vol), None);
    rig.shutdown();
}

#[test]
fn raid5_writers_waiting_for_one_clean_region_share_one_log_write() {
    let rig = rig(false, NO_CLEAR_MS);
    let before = log_writes(&rig);
    for i in 0..2 {
        err_state(&rig.e, rig.copy_bdev(i))
            .inject(InjectTarget::Write, &Arming::new(ErrorKind::Hold, 1))
            .unwrap();
    }
    let writes: Vec<PendingIo> = (0..16u64)
        .map(|k| rig.start_write(9, k * 4096, &pattern(100 + k, 4096)))
        .collect();
    wait_until("the log write to be held on both copies", || {
        (0..2).all(|i| armed(&rig.e, rig.copy_bdev(i), "write") == 0)
    });
    for w in &writes {
        assert!(still_running(w), "a write went on before its region's bit");
    }
    for i in 0..2 {
        err_state(&rig.e, rig.copy_bdev(i)).clear();
    }
    for w in &writes {
        w.wait(Duration::from_secs(10)).unwrap();
    }
    assert_eq!(
        log_writes(&rig),
        [before[0] + 1, before[1] + 1],
        "16 writers into one clean region made more than one log write per copy"
    );
    assert_eq!(rig.on_disk(&[0]), vec![9]);
    assert_eq!(rig.on_disk(&[1]), vec![9]);
    for k in 0..16u64 {
        assert_eq!(rig.read(9, k * 4096, 4096), pattern(100 + k, 4096));
    }
    assert_eq!(parity_mismatch(&rig.vm, &rig.vol), None);
    rig.shutdown();
}

#[test]
fn raid5_quiet_regions_are_cleared_on_disk() {
    let rig = rig(false, 500);
    rig.write(2, 0, &pattern(1, 4096));
    rig.write(7, 0, &pattern(2, 32 << 10));
    assert_eq!(rig.on_disk(&[0, 1]), vec![2, 7]);
    // No I/O on the volume from now on: the channel's clock runs the clear passes.
    wait_until("every region to be cleared on disk", || {
        rig.on_disk(&[0, 1]).is_empty()
    });
    assert_eq!(rig.drl.dirty(), 0);
    assert_eq!(rig.read(2, 0, 4096), pattern(1, 4096));
    assert_eq!(rig.read(7, 0, 32 << 10), pattern(2, 32 << 10));
    // A region cleared is marked again by its next write.
    rig.write(7, 4096, &pattern(4, 4096));
    assert_eq!(rig.on_disk(&[0, 1]), vec![7]);
    assert_eq!(parity_mismatch(&rig.vm, &rig.vol), None);
    rig.shutdown();
}

#[test]
fn raid5_a_failing_log_copy_is_left_out_and_the_other_keeps_the_bits() {
    let rig = rig(false, NO_CLEAR_MS);
    inject(&rig.e, rig.copy_bdev(0), InjectTarget::Write, MAX_NUM);
    rig.write(4, 0, &pattern(1, 4096));
    assert_eq!(rig.on_disk(&[1]), vec![4], "copy 1 lacks the bit");
    assert_eq!(rig.on_disk(&[0]), Vec::<u64>::new());
    err_state(&rig.e, rig.copy_bdev(0)).clear();
    rig.write(8, 0, &pattern(2, 32 << 10));
    assert_eq!(rig.on_disk(&[1]), vec![4, 8]);
    assert_eq!(rig.read(4, 0, 4096), pattern(1, 4096));
    assert_eq!(rig.read(8, 0, 32 << 10), pattern(2, 32 << 10));
    assert_eq!(parity_mismatch(&rig.vm, &rig.vol), None);
    rig.shutdown();
}

#[test]
fn raid5_writes_wait_while_every_log_copy_fails_and_go_on_once_one_works() {
    let rig = rig(false, NO_CLEAR_MS);
    rig.write(1, 0, &pattern(1, 4096));
    for i in 0..2 {
        inject(&rig.e, rig.copy_bdev(i), InjectTarget::Write, MAX_NUM);
    }
    let a = rig.start_write(11, 0, &pattern(2, 4096));
    let b = rig.start_write(11, 32 << 10, &pattern(3, 32 << 10));
    assert!(still_running(&a), "a write went on with no copy of its bit");
    assert!(still_running(&b), "a write went on with no copy of its bit");
    // A region already durable is not held up by the failing log.
    rig.write(1, 4096, &pattern(4, 4096));
    assert_eq!(rig.on_disk(&[0, 1]), vec![1]);
    for i in 0..2 {
        err_state(&rig.e, rig.copy_bdev(i)).clear();
    }
    a.wait(Duration::from_secs(10)).unwrap();
    b.wait(Duration::from_secs(10)).unwrap();
    assert_eq!(rig.on_disk(&[0]), vec![1, 11]);
    assert_eq!(rig.on_disk(&[1]), vec![1, 11]);
    assert_eq!(rig.read(11, 0, 4096), pattern(2, 4096));
    assert_eq!(rig.read(11, 32 << 10, 32 << 10), pattern(3, 32 << 10));
    assert_eq!(rig.read(1, 4096, 4096), pattern(4, 4096));
    assert_eq!(parity_mismatch(&rig.vm, &rig.vol), None);
    rig.shutdown();
}

#[test]
fn raid5_waiters_go_on_without_the_log_once_a_map_without_it_is_published() {
    let rig = rig(false, NO_CLEAR_MS);
    for i in 0..2 {
        inject(&rig.e, rig.copy_bdev(i), InjectTarget::Write, MAX_NUM);
    }
    let a = rig.start_write(12, 0, &pattern(1, 4096));
    assert!(still_running(&a), "a write went on with no copy of its bit");
    // What the manager does once it recorded the log failed: a map without it.
    let shared = shared_of(&rig.vol).unwrap();
    let old = shared.map();
    shared.publish(VolumeMap {
        generation: old.generation + 1,
        disks: old.disks.clone(),
        plexes: old.plexes.clone(),
        read_policy: old.read_policy,
        read_source: old.read_source,
        enabled: old.enabled,
        raid5: old.raid5.clone(),
        drl: None,
    });
    a.wait(Duration::from_secs(10)).unwrap();
    assert_eq!(rig.read(12, 0, 4096), pattern(1, 4096));
    // Later writes go on without the log too.
    rig.write(13, 0, &pattern(2, 32 << 10));
    assert_eq!(rig.read(13, 0, 32 << 10), pattern(2, 32 << 10));
    assert_eq!(parity_mismatch(&rig.vm, &rig.vol), None);
    for i in 0..2 {
        err_state(&rig.e, rig.copy_bdev(i)).clear();
    }
    rig.shutdown();
}

#[test]
fn raid5_writers_on_two_reactors_share_the_log() {
    let e = Engine::start(&[0, 1], crate::reactor::PollMode::Adaptive).expect("engine");
    let req = VolumeCreate {
        layout: "raid5".into(),
        ncol: Some(3),
        stripe_unit_kb: Some(16),
        nlog: Some(0),
        ..Default::default()
    };
    let rig = Rig::with(e, req, 3, 5, [3, 4], NO_CLEAR_MS);
    let before = log_writes(&rig);
    for i in 0..2 {
        err_state(&rig.e, rig.copy_bdev(i))
            .inject(InjectTarget::Write, &Arming::new(ErrorKind::Hold, 1))
            .unwrap();
    }
    // Both reactors write into one clean region (the same rows, so under the stripe lock).
    let writes: Vec<PendingIo> = (0..8u64)
        .map(|k| rig.start_write_on((k % 2) as usize, 9, k * 4096, &pattern(k, 4096)))
        .collect();
    wait_until("the log write to be held on both copies", || {
        (0..2).all(|i| armed(&rig.e, rig.copy_bdev(i), "write") == 0)
    });
    for w in &writes {
        assert!(still_running(w), "a write went on before its region's bit");
    }
    for i in 0..2 {
        err_state(&rig.e, rig.copy_bdev(i)).clear();
    }
    for w in &writes {
        w.wait(Duration::from_secs(10)).unwrap();
    }
    assert_eq!(
        log_writes(&rig),
        [before[0] + 1, before[1] + 1],
        "writers on two reactors into one clean region made more than one log write"
    );
    assert_eq!(rig.on_disk(&[0]), vec![9]);
    assert_eq!(rig.on_disk(&[1]), vec![9]);
    for k in 0..8u64 {
        assert_eq!(rig.read(9, k * 4096, 4096), pattern(k, 4096));
    }
    assert_eq!(parity_mismatch(&rig.vm, &rig.vol), None);
    rig.shutdown();
}
