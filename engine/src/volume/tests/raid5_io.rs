//! RAID-5 volumes through their bdev: data against a flat model with the parity checked on
//! the disks after every step, degraded service after a column fails, a second failure taking
//! the volume offline, read errors answered by reconstruction.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use super::*;
use crate::drivers::error::InjectTarget;

/// Creates RAID-5 volume `name` of group dg01 with `ncol` columns of `su_kb` KiB units and
/// `size` bytes.
pub(crate) fn raid5(vm: &VolumeManager, name: &str, size: u64, ncol: u32, su_kb: u64) -> Arc<Bdev> {
    create_req(
        vm,
        &VolumeCreate {
            dg: "dg01".into(),
            name: name.into(),
            size,
            layout: "raid5".into(),
            ncol: Some(ncol),
            stripe_unit_kb: Some(su_kb),
            ..Default::default()
        },
    )
}

/// Makes the volume `req` asks for; its bdev.
pub(crate) fn create_req(vm: &VolumeManager, req: &VolumeCreate) -> Arc<Bdev> {
    let bdev = vm
        .volume_create(req)
        .unwrap_or_else(|e| panic!("volume_create {}: {e}", req.layout));
    vm.engine().bdevs().get(&bdev).unwrap()
}

/// Reads every row of `vol`'s RAID-5 plex straight from the disks of its present columns;
/// returns the first row whose units do not XOR to zero (only meaningful when no column is
/// missing).
pub(crate) fn parity_mismatch(vm: &VolumeManager, vol: &Bdev) -> Option<u64> {
    mismatching_rows(vm, vol).first().copied()
}

/// Every row of `vol`'s RAID-5 plex whose units (read from the disks) do not XOR to zero.
pub(crate) fn mismatching_rows(vm: &VolumeManager, vol: &Bdev) -> Vec<u64> {
    let shared = crate::volume::io::driver::shared_of(vol).expect("volume");
    let map = shared.map();
    let r5 = map.raid5.as_ref().expect("a RAID-5 map");
    let g = &r5.geometry;
    let bs = vol.block_size() as u64;
    let su = g.stripe_unit();
    // One column at a time over every row: a read per extent.
    let mut acc = vec![0u8; (g.rows() * su * bs) as usize];
    for c in 0..g.ncol() {
        for row in 0..g.rows() {
            g.locate(row, c, 0, su, |p| {
                let d = &map.disks[p.target as usize];
                let data = read(vm.engine(), d, p.target_offset * bs, p.len * bs).unwrap();
                let at = ((row * su + p.piece_offset) * bs) as usize;
                crate::volume::io::raid5::parity::xor_into(&mut acc[at..at + data.len()], &data);
            });
        }
    }
    let unit = (su * bs) as usize;
    acc.chunks(unit)
        .enumerate()
        .filter(|(_, u)| u.iter().any(|&b| b != 0))
        .map(|(r, _)| r as u64)
        .collect()
}

/// Runs one request without data and checks it succeeded.
fn io(e: &Engine, vol: &Arc<Bdev>, t: crate::bdev::IoType, offset: u64, len: u64) {
    crate::bdev::blocking::run_io(
        e,
        0,
        vol,
        t,
        offset,
        len,
        None,
        std::time::Duration::from_secs(10),
    )
    .unwrap_or_else(|err| panic!("{t:?} {offset}+{len}: {err}"));
}

#[derive(Debug, Clone)]
enum Op {
    Write { block: u64, blocks: u64, seed: u64 },
    Read { block: u64, blocks: u64 },
    Zero { block: u64, blocks: u64 },
    Flush,
}

/// Random writes (every size and alignment: sub-block-of-a-unit, partial rows, full rows,
/// several rows), reads, write-zeroes and flushes on a RAID-5 volume agree with a flat model,
/// and after every step the parity on the disks is the XOR of the data.
#[test]
fn raid5_matches_a_flat_model_and_parity_holds_on_disk() {
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    let d = disks(&e, 5, 16);
    vm.dg_create("dg01", &d, false).unwrap();
    for (ncol, su_kb) in [(3u32, 4u64), (4, 8), (5, 4)] {
        // Not a whole number of rows: the last row is partly beyond the volume.
        let vol_blocks: u64 = 2000;
        let row = (ncol as u64 - 1) * su_kb * 2;
        let range = (0..vol_blocks)
            .prop_flat_map(move |b| (Just(b), 1..=(vol_blocks - b).min(row * 3 + 5)));
        let op = prop_oneof![
            5 => (range.clone(), any::<u64>()).prop_map(|((block, blocks), seed)| Op::Write { block, blocks, seed }),
            3 => range.clone().prop_map(|(block, blocks)| Op::Read { block, blocks }),
            1 => range.prop_map(|(block, blocks)| Op::Zero { block, blocks }),
            1 => Just(Op::Flush),
        ];
        let mut runner = TestRunner::new(Config {
            cases: 8,
            failure_persistence: None,
            ..Config::default()
        });
        let n = std::cell::Cell::new(0);
        runner
            .run(&proptest::collection::vec(op, 1..30), |ops| {
                n.set(n.get() + 1);
                let name = format!("r{ncol}-{}", n.get());
                let vol = raid5(&vm, &name, vol_blocks * 512, ncol, su_kb);
                let mut model = vec![0u8; (vol.num_blocks() * 512) as usize];
                for op in &ops {
                    match *op {
                        Op::Write {
                            block,
                            blocks,
                            seed,
                        } => {
                            let data = pattern(seed, (blocks * 512) as usize);
                            write(&e, &vol, block * 512, &data).unwrap();
                            model[(block * 512) as usize..((block + blocks) * 512) as usize]
                                .copy_from_slice(&data);
                        }
                        Op::Read { block, blocks } => {
                            let got = read(&e, &vol, block * 512, blocks * 512).unwrap();
                            prop_assert!(
                                got == model
                                    [(block * 512) as usize..((block + blocks) * 512) as usize],
                                "read {block}+{blocks} differs from the model"
                            );
                        }
                        Op::Zero { block, blocks } => {
                            io(
                                &e,
                                &vol,
                                crate::bdev::IoType::WriteZeroes,
                                block * 512,
                                blocks * 512,
                            );
                            model[(block * 512) as usize..((block + blocks) * 512) as usize]
                                .fill(0);
                        }
                        Op::Flush => io(&e, &vol, crate::bdev::IoType::Flush, 0, 0),
                    }
                    prop_assert_eq!(parity_mismatch(&vm, &vol), None, "after {:?}", op);
                }
                let all = read(&e, &vol, 0, vol.num_blocks() * 512).unwrap();
                prop_assert!(all == model, "the whole volume differs from the model");
                drop(vol);
                vm.volume_delete("dg01", &name).unwrap();
                Ok(())
            })
            .unwrap();
    }
    vm.shutdown();
    e.shutdown();
}

/// The column of `vol`'s RAID-5 plex (`r5-01`) on disk `disk_bdev`, if it holds one.
pub(crate) fn column_on(vm: &VolumeManager, disk_bdev: &str) -> Option<u32> {
    let (cfg, _) = vm.config("dg01").unwrap();
    let members = vm.member_bdevs("dg01").unwrap();
    let dname = members
        .iter()
        .find(|(_, b)| b.as_str() == disk_bdev)
        .map(|(n, _)| n.clone())?;
    cfg.subdisks_of("r5-01")
        .iter()
        .find(|s| s.disk == dname)
        .map(|s| s.column)
}

/// The stale columns of volume `vol`'s first plex (its RAID-5 plex), in failure order.
pub(crate) fn stale_columns(vm: &VolumeManager, vol: &str) -> Vec<u32> {
    let (cfg, _) = vm.config("dg01").unwrap();
    cfg.plexes_of(vol)[0].stale_columns.clone()
}

/// A column whose disk fails a write is recorded stale before the write is acknowledged; the
/// volume serves every block from the others (reads of the lost column reconstructed, writes
/// keeping the parity right), also after a re-import. A second column failing takes the
/// volume offline: requests fail, never returning wrong data.
#[test]
fn raid5_survives_one_column_and_goes_offline_on_the_second() {
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    // Four columns and a log on the fifth disk (with it, a crash while degraded restarts).
    let d = error_disks(&e, 5, 16);
    vm.dg_create("dg01", &d, false).unwrap();
    let vol = raid5(&vm, "r5", 6 << 20, 4, 16);
    let len = vol.num_blocks() * 512;
    let mut model = pattern(1, len as usize);
    write(&e, &vol, 0, &model).unwrap();
    assert_eq!(parity_mismatch(&vm, &vol), None);

    // Disk 2 fails every write from now on: the next write touching its column detaches it.
    // Two disks holding columns (one of the five holds the log).
    let holders: Vec<&String> = d.iter().filter(|b| column_on(&vm, b).is_some()).collect();
    assert_eq!(holders.len(), 4);
    let col = column_on(&vm, holders[2]).unwrap();
    inject(&e, holders[2], InjectTarget::Write, 1_000_000);
    let bs = 512u64;
    let data = pattern(2, (2 << 20) as usize);
    write(&e, &vol, 5 * bs, &data).expect("the write survives one column");
    model[(5 * bs) as usize..(5 * bs) as usize + data.len()].copy_from_slice(&data);
    assert_eq!(stale_columns(&vm, "r5"), vec![col]);
    assert!(read(&e, &vol, 0, len).unwrap() == model, "degraded reads");
    // Degraded writes of every kind: small (read-modify-write), spanning rows, unaligned.
    for (i, (off, n)) in [
        (0u64, 512u64),
        (4096, 20 << 10),
        (100 << 10, 300 << 10),
        (len - 1024, 1024),
    ]
    .into_iter()
    .enumerate()
    {
        let w = pattern(10 + i as u64, n as usize);
        write(&e, &vol, off, &w).unwrap();
        model[off as usize..(off + n) as usize].copy_from_slice(&w);
        assert!(
            read(&e, &vol, 0, len).unwrap() == model,
            "after degraded write {i}"
        );
    }

    // Re-import: still degraded, same data.
    drop(vol);
    vm.crash();
    let vm = VolumeManager::new(e.clone());
    vm.dg_import(Some("dg01"), None, None).unwrap();
    assert_eq!(stale_columns(&vm, "r5"), vec![col]);
    let vol = e.bdevs().get("dg01/r5").unwrap();
    assert!(
        read(&e, &vol, 0, len).unwrap() == model,
        "degraded after re-import"
    );

    // A second column fails: offline, nothing returned.
    inject(&e, holders[0], InjectTarget::Write, 1_000_000);
    let other = column_on(&vm, holders[0]).unwrap();
    // A full-row write touches every column.
    let err = write(&e, &vol, 0, &pattern(3, (3 * 16) << 10));
    assert!(err.is_err(), "a write that lost two columns fails");
    assert_eq!(
        stale_columns(&vm, "r5"),
        vec![col, other],
        "in failure order"
    );
    assert!(
        read(&e, &vol, 0, 4096).is_err(),
        "an offline volume returns nothing"
    );

    // It starts again only by force, trusting the column that failed last (its disk works
    // again): every row but the one the failed write tore reads back as written.
    drop(vol);
    vm.volume_stop("dg01", "r5").unwrap();
    err_state(&e, holders[0]).clear();
    let refused = vm.volume_start("dg01", "r5").unwrap_err().to_string();
    assert!(
        refused.contains("columns without current data"),
        "{refused}"
    );
    vm.volume_start_with("dg01", "r5", true).unwrap();
    assert_eq!(stale_columns(&vm, "r5"), vec![col]);
    let vol = e.bdevs().get("dg01/r5").unwrap();
    let row = (3 * 16) << 10;
    assert!(
        read(&e, &vol, row as u64, len - row as u64).unwrap() == model[row..],
        "forced back, degraded"
    );
    drop(vol);
    vm.shutdown();
    e.shutdown();
}

/// A read error on one column is answered with the data reconstructed from the others; the
/// column is not detached for it.
#[test]
fn raid5_read_errors_are_reconstructed() {
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    let d = error_disks(&e, 3, 16);
    vm.dg_create("dg01", &d, false).unwrap();
    let vol = raid5(&vm, "r5", 4 << 20, 3, 8);
    let len = vol.num_blocks() * 512;
    let model = pattern(4, len as usize);
    write(&e, &vol, 0, &model).unwrap();
    let shared = crate::volume::io::driver::shared_of(&vol).unwrap();
    inject(&e, &d[1], InjectTarget::Read, 3);
    assert!(read(&e, &vol, 0, len).unwrap() == model);
    assert!(shared.read_errors() >= 1);
    assert_eq!(stale_columns(&vm, "r5"), Vec::<u32>::new());
    drop(vol);
    vm.shutdown();
    e.shutdown();
}

/// Two reactors writing different units of the same rows at once (each a read-modify-write
/// of its unit and the row's parity): the per-stripe lock orders them, so every row's parity
/// is the XOR of its data afterwards and each unit holds its last write. Without the lock the
/// two updates of one parity interleave and one is lost.
#[test]
fn two_reactors_writing_one_stripe_keep_its_parity() {
    let e = Engine::start(&[0, 1], crate::reactor::PollMode::Adaptive).expect("engine");
    let vm = VolumeManager::new(e.clone());
    let d = disks(&e, 4, 16);
    vm.dg_create("dg01", &d, false).unwrap();
    // 4 columns of 4 KiB units: a 4 KiB write is one unit of three (read-modify-write).
    let vol = raid5(&vm, "r5", 2 << 20, 4, 4);
    let rows = 8u64;
    let row_bytes = 3 * 4096u64;
    let threads: Vec<_> = (0..2usize)
        .map(|r| {
            let (e, vol) = (e.clone(), vol.clone());
            std::thread::spawn(move || {
                for i in 0..2000u64 {
                    let row = i % rows;
                    // Reactor r writes unit r of the row.
                    let off = row * row_bytes + r as u64 * 4096;
                    let data = pattern(i * 2 + r as u64 + 1, 4096);
                    crate::bdev::blocking::run_io(
                        &e,
                        r,
                        &vol,
                        crate::bdev::IoType::Write,
                        off,
                        4096,
                        Some(&data),
                        std::time::Duration::from_secs(30),
                    )
                    .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(parity_mismatch(&vm, &vol), None);
    // The last write of each reactor to each row is what the row holds.
    for row in 0..rows {
        for r in 0..2u64 {
            let last = (0..2000u64).filter(|i| i % rows == row).max().unwrap();
            let got = read(&e, &vol, row * row_bytes + r * 4096, 4096).unwrap();
            assert!(got == pattern(last * 2 + r + 1, 4096), "row {row} unit {r}");
        }
    }
    drop(vol);
    vm.shutdown();
    e.shutdown();
}
