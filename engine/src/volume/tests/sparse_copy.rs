//! Sparse copies (a copy given a todo of regions, as dirty region logging will start them):
//! over a 2-plex mirror whose plexes differ in known regions, exactly the todo regions are
//! copied and the other differences stay (so they were skipped); the counters, the progress
//! and the checkpoints say so. The same for a RAID-5 parity resync and check by rows.
//!
//! Nothing in the manager starts a sparse copy yet, so the tests run the copy engine on a
//! started volume's barrier and plexes themselves, as `manager::resync` does.

use std::sync::Mutex;
use std::time::Duration;

use super::raid5_io::{mismatching_rows, raid5};
use super::*;
use crate::volume::copy::raid5::{run_rows, Mismatches, RowPlex, RowWork};
use crate::volume::copy::sparse::{CopyTodo, SparseMode};
use crate::volume::copy::task::{self, CopyIo, CopyPlex, HookPoint, Task, TaskSpec, TaskState};
use crate::volume::model::region_set::{RegionGeometry, RegionSet};

const MIB: u64 = 1 << 20;

/// Writes `data` at block `offset` of plex `plex` straight to its disks (behind the volume's
/// back: the plexes then differ there).
fn plex_write(vm: &VolumeManager, vol: &Bdev, plex: &str, offset: u64, data: &[u8]) {
    let shared = crate::volume::io::driver::shared_of(vol).expect("volume");
    let map = shared.map();
    let i = map.plexes.iter().position(|p| p.name == plex).unwrap();
    let bs = vol.block_size() as u64;
    let mut segs = Vec::new();
    map.plexes[i]
        .geometry
        .map(offset, data.len() as u64 / bs, |s| segs.push(s))
        .unwrap();
    for s in segs {
        let d = &map.disks[s.target as usize];
        let from = (s.req_offset * bs) as usize;
        write(
            vm.engine(),
            d,
            s.target_offset * bs,
            &data[from..from + (s.len * bs) as usize],
        )
        .unwrap();
    }
}

/// The copy plex of `plex` in `vol`'s map.
fn copy_plex(vol: &Bdev, plex: &str) -> CopyPlex {
    let shared = crate::volume::io::driver::shared_of(vol).expect("volume");
    let map = shared.map();
    let p = map.plexes.iter().find(|p| p.name == plex).unwrap();
    CopyPlex {
        geometry: p.geometry.clone(),
        disks: map.disks.clone(),
    }
}

/// A todo of `regions` over `vol` in regions of `region_blocks`.
fn todo(vol: &Bdev, region_blocks: u64, regions: &[u64], mode: SparseMode) -> CopyTodo {
    let g = RegionGeometry::new(region_blocks, vol.num_blocks()).unwrap();
    let mut s = RegionSet::new(g.nregions());
    for &r in regions {
        s.insert(r);
    }
    CopyTodo::new(Arc::new(s), g, mode).unwrap()
}

/// A mirror `vol01` of `mib` MiB over 2 fresh disks, filled through the volume (both plexes
/// equal); returns it and its plexes.
fn mirror(vm: &VolumeManager, mib: u64) -> (Arc<Bdev>, String, String) {
    let e = vm.engine();
    let d = disks(e, 2, mib + 8);
    vm.dg_create("dg01", &d, false).unwrap();
    let vol = create(vm, "vol01", mib * MIB, "mirror");
    write(e, &vol, 0, &pattern(7, (mib * MIB) as usize)).unwrap();
    let p = plex_names(vm, "dg01", "vol01");
    (vol, p[0].clone(), p[1].clone())
}

/// Registers a copy task of `kind` on vol01 writing `target` from `source`.
fn add_task(
    vm: &VolumeManager,
    kind: &'static str,
    source: &str,
    target: &str,
    start: u64,
    total: u64,
    todo: Option<CopyTodo>,
) -> Arc<Task> {
    let targets = [target.to_string()];
    let attach = kind == "plex_attach";
    vm.tasks().add(TaskSpec {
        kind,
        dg: "dg01",
        volume: "vol01",
        plex: attach.then_some(target),
        targets: if attach { &[] } else { &targets },
        source: Some(source),
        start,
        total,
        todo,
        why_full: None,
    })
}

/// Runs `task` as a copy of vol01 from `source` to `target` with `delay` between chunks;
/// returns the checkpoints it made.
fn run_copy(
    vm: &VolumeManager,
    vol: &Bdev,
    task: &Task,
    (source, target): (&str, &str),
    delay: Duration,
) -> Vec<u64> {
    let shared = crate::volume::io::driver::shared_of(vol).unwrap();
    let checkpoints = Mutex::new(Vec::new());
    let r = task::copy(
        &CopyIo {
            engine: vm.engine(),
            task,
            barrier: shared.barrier(),
            block_size: vol.block_size() as u64,
        },
        &copy_plex(vol, source),
        &[copy_plex(vol, target)],
        vol.num_blocks(),
        delay,
        |off| checkpoints.lock().unwrap().push(off),
        |_, e| panic!("copy write failed: {e}"),
    );
    assert_eq!(r, Ok(true), "the copy completes");
    task.set_state(TaskState::Done);
    checkpoints.into_inner().unwrap()
}

/// Whether plexes `a` and `b` hold the same data in `[offset, offset + len)`.
fn same(vm: &VolumeManager, vol: &Bdev, (a, b): (&str, &str), offset: u64, len: u64) -> bool {
    plex_read(vm, vol, a, offset, len) == plex_read(vm, vol, b, offset, len)
}

/// Regions of 64 KiB (16 to a 1 MiB barrier chunk): the plexes differ in regions
/// {0, 3, 17, 40, 100, 127} (in region 17 only a few blocks in its middle); a resync with the
/// todo {3, 17, 18, 100, 127} makes exactly those equal and leaves regions 0 and 40 as they
/// were; it counts 5 regions and their blocks copied, the rest skipped.
#[test]
fn a_sparse_resync_copies_only_the_todo_regions() {
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    let (vol, p1, p2) = mirror(&vm, 8);
    let (len, rb) = (vol.num_blocks(), 128);
    for (i, r) in [0u64, 3, 40, 100, 127].iter().enumerate() {
        plex_write(
            &vm,
            &vol,
            &p2,
            r * rb,
            &pattern(100 + i as u64, (rb * 512) as usize),
        );
    }
    plex_write(&vm, &vol, &p2, 17 * rb + 50, &pattern(99, 3 * 512));
    for r in [0u64, 3, 17, 40, 100, 127] {
        assert!(
            !same(&vm, &vol, (&p1, &p2), r * rb, rb),
            "region {r} differs before"
        );
    }
    // Tasks take the hook when they are added.
    let ats = Arc::new(Mutex::new(Vec::new()));
    let seen = ats.clone();
    set_hook(&vm, move |p| {
        if let HookPoint::Chunk { task, at } = p {
            seen.lock().unwrap().push((at, task.done()));
        }
    });
    let todo_regions = [3u64, 17, 18, 100, 127];
    let t = add_task(
        &vm,
        "resync",
        &p1,
        &p2,
        0,
        len,
        Some(todo(&vol, rb, &todo_regions, SparseMode::Drl)),
    );
    assert_eq!((t.regions_total(), t.regions_copied()), (Some(5), Some(0)));
    run_copy(&vm, &vol, &t, (&p1, &p2), Duration::ZERO);
    for r in todo_regions {
        assert!(
            same(&vm, &vol, (&p1, &p2), r * rb, rb),
            "todo region {r} copied"
        );
    }
    for r in [0u64, 40] {
        assert!(
            !same(&vm, &vol, (&p1, &p2), r * rb, rb),
            "region {r} was skipped"
        );
        assert_eq!(
            plex_read(&vm, &vol, &p2, r * rb, rb),
            pattern(100 + if r == 0 { 0 } else { 2 }, (rb * 512) as usize),
            "region {r} of the target kept its own data"
        );
    }
    assert!(
        same(&vm, &vol, (&p1, &p2), rb, 2 * rb),
        "regions 1-2 were equal and stay so"
    );
    // The copy raised only chunks that hold todo regions, each at the progress it jumped to:
    // regions 3, 17-18 (chunk 1, from region 16) and 100, 127 (chunks 6 and 7).
    let ats = ats.lock().unwrap().clone();
    assert_eq!(
        ats,
        vec![
            (3 * rb, 3 * rb),
            (17 * rb, 17 * rb),
            (100 * rb, 100 * rb),
            (127 * rb, 127 * rb)
        ],
        "chunks raised (block, progress then)"
    );
    let copied = 5 * rb;
    assert_eq!(t.copied_blocks(), copied);
    assert_eq!(t.skipped_blocks(), len - copied);
    assert_eq!((t.regions_total(), t.regions_copied()), (Some(5), Some(5)));
    assert_eq!((t.done(), t.mode(), t.why_full()), (len, "drl", None));
    let info = crate::volume::api::task::info(&t);
    assert_eq!(info.mode.as_deref(), Some("drl"));
    assert_eq!(info.skipped_blocks, Some(len - copied));
    assert_eq!(
        (info.regions_total, info.regions_copied),
        (Some(5), Some(5))
    );
    assert_eq!((info.done_blocks, info.percent), (len, 100.0.into()));
    assert_eq!(
        info.result,
        Some(serde_json::json!({"regions": [[3, 4], [17, 19], [100, 101], [127, 128]]}))
    );
    vm.shutdown();
    e.shutdown();
}

/// Without a todo a copy is full, as before: every difference is copied, nothing skipped,
/// and the task says `full` without region counts.
#[test]
fn a_copy_without_a_todo_copies_everything() {
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    let (vol, p1, p2) = mirror(&vm, 4);
    let len = vol.num_blocks();
    for (i, at) in [0u64, 3000, len - 8].iter().enumerate() {
        plex_write(&vm, &vol, &p2, *at, &pattern(200 + i as u64, 8 * 512));
    }
    let t = add_task(&vm, "resync", &p1, &p2, 0, len, None);
    run_copy(&vm, &vol, &t, (&p1, &p2), Duration::ZERO);
    assert!(same(&vm, &vol, (&p1, &p2), 0, len), "every block copied");
    assert_eq!((t.copied_blocks(), t.skipped_blocks()), (len, 0));
    assert_eq!(
        (t.regions_total(), t.regions_copied(), t.mode()),
        (None, None, "full")
    );
    let info = crate::volume::api::task::info(&t);
    assert_eq!(info.mode.as_deref(), Some("full"));
    assert_eq!((info.skipped_blocks, info.regions_total), (None, None));
    vm.shutdown();
    e.shutdown();
}

/// Regions of 3 MiB (each over several barrier chunks, the last one cut short at the
/// volume's end): an attach resumed from the middle of region 1 with the todo {1, 3, 5}
/// copies the rest of region 1, region 3 and the short region 5, not the first half of
/// region 1 (below its start) nor regions 0, 2 and 4; its progress and checkpoints only move
/// forward, and its rate counts the blocks it copied.
#[test]
fn a_sparse_attach_resumes_mid_region_with_monotonic_checkpoints() {
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    let (vol, p1, p2) = mirror(&vm, 16);
    let (len, rb) = (vol.num_blocks(), 6144);
    assert_eq!(len, 32768, "regions 0-4 whole, region 5 of 2048 blocks");
    for r in 0..6u64 {
        let n = rb.min(len - r * rb);
        plex_write(
            &vm,
            &vol,
            &p2,
            r * rb,
            &pattern(300 + r, (n * 512) as usize),
        );
    }
    let progress = Arc::new(Mutex::new(Vec::new()));
    let seen = progress.clone();
    set_hook(&vm, move |p| {
        if let HookPoint::Chunk { task, at } = p {
            seen.lock().unwrap().push(at);
            assert_eq!(task.done(), at, "the chunk starts at the progress");
        }
    });
    let start = rb + rb / 2;
    let t = add_task(
        &vm,
        "plex_attach",
        &p1,
        &p2,
        start,
        len,
        Some(todo(&vol, rb, &[1, 3, 5], SparseMode::Delta)),
    );
    assert_eq!((t.regions_total(), t.mode()), (Some(3), "delta"));
    // Region 1's second half (3072 blocks: 2 chunks of 2048 blocks), region 3 (3 chunks)
    // and region 5 (1 chunk), 600 ms apart: checkpoints on the way.
    let cks = run_copy(&vm, &vol, &t, (&p1, &p2), Duration::from_millis(600));
    assert!(
        same(&vm, &vol, (&p1, &p2), start, rb / 2),
        "region 1 from the start on"
    );
    assert!(same(&vm, &vol, (&p1, &p2), 3 * rb, rb), "region 3");
    assert!(
        same(&vm, &vol, (&p1, &p2), 5 * rb, len - 5 * rb),
        "the short region 5"
    );
    assert!(
        !same(&vm, &vol, (&p1, &p2), rb, rb / 2),
        "region 1 below the start"
    );
    for r in [0u64, 2, 4] {
        assert!(
            !same(&vm, &vol, (&p1, &p2), r * rb, rb),
            "region {r} skipped"
        );
    }
    let ats = progress.lock().unwrap().clone();
    let r3 = 3 * rb;
    assert_eq!(
        ats,
        vec![start, start + 1024, r3, r3 + 2048, r3 + 4096, 5 * rb],
        "chunks raised"
    );
    assert!(cks.len() >= 2, "checkpoints within the copy: {cks:?}");
    assert!(
        cks.windows(2).all(|w| w[0] < w[1]),
        "checkpoints only move on: {cks:?}"
    );
    assert!(cks.iter().all(|&c| c > start && c <= len), "{cks:?}");
    let copied = rb / 2 + rb + (len - 5 * rb);
    assert_eq!(t.copied_blocks(), copied);
    assert_eq!(t.skipped_blocks(), len - start - copied);
    assert_eq!(t.regions_copied(), Some(3));
    assert_eq!(
        t.region_ranges_copied(),
        Some(vec![(1, 2), (3, 4), (5, 6)]),
        "region 1 counts: it was finished from the start on"
    );
    let rep = t.progress_report();
    let rate = copied as f64 / rep.elapsed_secs;
    assert!(
        (rep.rate - rate).abs() < 1.0,
        "the rate counts copied blocks: {rep:?}"
    );
    assert_eq!(rep.done, len);
    vm.shutdown();
    e.shutdown();
}

/// Overwrites the parity unit of `row` of `vol`'s RAID-5 plex on its disk, so the row's
/// parity no longer matches its data.
fn spoil_parity(vm: &VolumeManager, vol: &Bdev, row: u64) {
    let shared = crate::volume::io::driver::shared_of(vol).unwrap();
    let map = shared.map();
    let g = &map.raid5.as_ref().unwrap().geometry;
    let bs = vol.block_size() as u64;
    let data = pattern(500 + row, (g.stripe_unit() * bs) as usize);
    let mut pieces = Vec::new();
    g.locate(row, g.parity_column(row), 0, g.stripe_unit(), |p| {
        pieces.push(p)
    });
    for p in pieces {
        let at = (p.piece_offset * bs) as usize;
        let end = at + (p.len * bs) as usize;
        write(
            vm.engine(),
            &map.disks[p.target as usize],
            p.target_offset * bs,
            &data[at..end],
        )
        .unwrap();
    }
}

/// Runs row task `work` over all of RAID-5 volume `vol` with `todo`; returns the task, its
/// result and what it found.
fn run_row_task(
    vm: &VolumeManager,
    vol: &Bdev,
    work: RowWork,
    todo: Option<CopyTodo>,
) -> (Arc<Task>, Result<bool, String>, Mismatches) {
    let shared = crate::volume::io::driver::shared_of(vol).unwrap();
    let map = shared.map();
    let r5 = map.raid5.as_ref().unwrap();
    let plex = RowPlex::new(r5.geometry.clone(), &map.disks).unwrap();
    let rows = r5.geometry.rows();
    let total = rows * r5.geometry.row_blocks();
    let t = vm.tasks().add(TaskSpec {
        kind: "resync",
        dg: "dg01",
        volume: "r5",
        plex: Some(&r5.plex),
        targets: &[],
        source: None,
        start: 0,
        total,
        todo,
        why_full: None,
    });
    let io = CopyIo {
        engine: vm.engine(),
        task: &t,
        barrier: shared.barrier(),
        block_size: vol.block_size() as u64,
    };
    let mut found = Mismatches::default();
    let r = run_rows(&io, &plex, work, rows, Duration::ZERO, &mut found, |_| {});
    t.set_state(TaskState::Done);
    (t, r, found)
}

/// A RAID-5 volume of 3 columns with 8 KiB units (rows of 32 blocks) in regions of 4 rows,
/// with spoiled parity in rows 5, 40, 41, 300 and 511 (regions 1, 10, 10, 75, 127): a check
/// limited to the regions {1, 10} finds rows 5, 40 and 41 only; a parity resync with the
/// todo {10, 127} fixes rows 40, 41 and 511 and leaves rows 5 and 300 as they were; both
/// count the rows of their regions as copied and the others as skipped. A rebuild is never
/// sparse.
#[test]
fn a_sparse_raid5_resync_fixes_only_the_todo_rows() {
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    let d = disks(&e, 3, 16);
    vm.dg_create("dg01", &d, false).unwrap();
    let vol = raid5(&vm, "r5", 8 * MIB, 3, 8);
    let len = vol.num_blocks();
    write(&e, &vol, 0, &pattern(9, (8 * MIB) as usize)).unwrap();
    assert_eq!(mismatching_rows(&vm, &vol), Vec::<u64>::new());
    for row in [5, 40, 41, 300, 511] {
        spoil_parity(&vm, &vol, row);
    }
    assert_eq!(mismatching_rows(&vm, &vol), vec![5, 40, 41, 300, 511]);
    let region = 4 * 32;

    let check = RowWork::Check { repair: false };
    let (t, r, found) = run_row_task(
        &vm,
        &vol,
        check,
        Some(todo(&vol, region, &[1, 10], SparseMode::Drl)),
    );
    assert_eq!(r, Ok(true));
    assert_eq!(
        found.ranges,
        vec![(5, 6), (40, 42)],
        "only rows of the todo are checked"
    );
    let info = crate::volume::api::task::info(&t);
    assert_eq!(
        info.result,
        Some(serde_json::json!({"regions": [[1, 2], [10, 11]]}))
    );
    assert_eq!(
        (t.copied_blocks(), t.skipped_blocks()),
        (2 * region, len - 2 * region)
    );

    let todo_rows = todo(&vol, region, &[10, 127], SparseMode::Drl);
    let (t, r, _) = run_row_task(&vm, &vol, RowWork::Resync, Some(todo_rows));
    assert_eq!(r, Ok(true));
    assert_eq!(
        mismatching_rows(&vm, &vol),
        vec![5, 300],
        "rows outside the todo are skipped"
    );
    assert_eq!((t.regions_total(), t.regions_copied()), (Some(2), Some(2)));
    assert_eq!(
        (t.copied_blocks(), t.skipped_blocks()),
        (2 * region, len - 2 * region)
    );
    assert_eq!((t.done(), t.mode()), (len, "drl"));

    let some = todo(&vol, region, &[1], SparseMode::Drl);
    let (_, r, _) = run_row_task(&vm, &vol, RowWork::Rebuild(0), Some(some));
    let err = r.unwrap_err();
    assert!(err.contains("cannot be limited"), "{err}");
    assert_eq!(
        mismatching_rows(&vm, &vol),
        vec![5, 300],
        "the refused rebuild wrote nothing"
    );

    // Without a todo the resync fixes every row, as before.
    let (t, r, _) = run_row_task(&vm, &vol, RowWork::Resync, None);
    assert_eq!(r, Ok(true));
    assert_eq!(mismatching_rows(&vm, &vol), Vec::<u64>::new());
    assert_eq!(
        (t.copied_blocks(), t.skipped_blocks(), t.mode()),
        (len, 0, "full")
    );
    vm.shutdown();
    e.shutdown();
}

/// A 3-way mirror whose two targets differ from the source in regions 2 and 5 (two runs of
/// one chunk) and 20 (the next chunk); the first copy write to the second plex fails: that
/// target is handed over once, gets nothing more (not even the chunk's second run), and the
/// chunk is copied again to the third plex, which ends equal in every todo region. The
/// failed chunk is not counted twice.
#[test]
fn a_sparse_copy_drops_a_failing_target_within_a_chunk() {
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    let d = error_disks(&e, 3, 16);
    vm.dg_create("dg01", &d, false).unwrap();
    let name = vm
        .volume_create(&VolumeCreate {
            dg: "dg01".into(),
            name: "vol01".into(),
            size: 4 * MIB,
            layout: "mirror".into(),
            nmirror: Some(3),
            ..Default::default()
        })
        .unwrap();
    let vol = e.bdevs().get(&name).unwrap();
    let (len, rb) = (vol.num_blocks(), 128);
    write(&e, &vol, 0, &pattern(11, (4 * MIB) as usize)).unwrap();
    let p = plex_names(&vm, "dg01", "vol01");
    let (p1, p2, p3) = (p[0].clone(), p[1].clone(), p[2].clone());
    let shared = crate::volume::io::driver::shared_of(&vol).unwrap();
    for t in [&p2, &p3] {
        for r in [2u64, 5, 20] {
            plex_write(&vm, &vol, t, r * rb, &pattern(600 + r, (rb * 512) as usize));
        }
    }
    // The bdev under p2 (one disk: a 4 MiB plex fits on one subdisk).
    let bad_disk = {
        let (map, mut target) = (shared.map(), None);
        let i = map.plexes.iter().position(|x| x.name == p2).unwrap();
        map.plexes[i]
            .geometry
            .map(0, 1, |s| target = Some(s.target))
            .unwrap();
        map.disks[target.unwrap() as usize].name().to_string()
    };
    let raised = Arc::new(Mutex::new(Vec::new()));
    let seen = raised.clone();
    set_hook(&vm, move |p| {
        if let HookPoint::Chunk { at, .. } = p {
            seen.lock().unwrap().push(at);
        }
    });
    let targets = [p2.clone(), p3.clone()];
    let t = vm.tasks().add(TaskSpec {
        kind: "resync",
        dg: "dg01",
        volume: "vol01",
        plex: None,
        targets: &targets,
        source: Some(&p1),
        start: 0,
        total: len,
        todo: Some(todo(&vol, rb, &[2, 5, 20], SparseMode::Drl)),
        why_full: None,
    });
    inject(&e, &bad_disk, crate::drivers::error::InjectTarget::Write, 1);
    let handed = Mutex::new(Vec::new());
    let r = task::copy(
        &CopyIo {
            engine: vm.engine(),
            task: &t,
            barrier: shared.barrier(),
            block_size: 512,
        },
        &copy_plex(&vol, &p1),
        &[copy_plex(&vol, &p2), copy_plex(&vol, &p3)],
        len,
        Duration::ZERO,
        |_| {},
        |i, _| {
            handed.lock().unwrap().push(i);
            true
        },
    );
    t.set_state(TaskState::Done);
    assert_eq!(r, Ok(true));
    assert_eq!(
        handed.into_inner().unwrap(),
        vec![0],
        "the failing target, once"
    );
    for r in [2u64, 5, 20] {
        assert!(
            same(&vm, &vol, (&p1, &p3), r * rb, rb),
            "region {r} copied to {p3}"
        );
        assert!(
            !same(&vm, &vol, (&p1, &p2), r * rb, rb),
            "region {r} not on {p2}"
        );
    }
    assert_eq!(
        raised.lock().unwrap().clone(),
        vec![2 * rb, 2 * rb, 20 * rb],
        "the chunk of regions 2 and 5 copied again"
    );
    assert_eq!(
        (t.copied_blocks(), t.skipped_blocks()),
        (3 * rb, len - 3 * rb)
    );
    assert_eq!(t.regions_copied(), Some(3));
    vm.shutdown();
    e.shutdown();
}
