//! Volume manager tests over RAM bdevs in one process: layouts against a flat model, failures,
//! persistence through re-import, split brain, attach under writes.

use std::sync::Arc;

use super::manager::VolumeManager;
use super::ops::VolumeCreate;
use crate::bdev::blocking::{read, write};
use crate::bdev::{Bdev, BdevSpec, IoTypeSet};
use crate::drivers::malloc::MallocBdev;
use crate::reactor::PollMode;
use crate::Engine;

pub(crate) fn engine() -> Arc<Engine> {
    Engine::start(&[0], PollMode::Adaptive).expect("engine")
}

pub(crate) fn malloc(engine: &Engine, name: &str, mib: u64) -> Arc<Bdev> {
    let spec = BdevSpec {
        name: name.into(),
        aliases: vec![],
        uuid: None,
        block_size: 512,
        num_blocks: mib * 2048,
        io_types: IoTypeSet::all(),
    };
    engine
        .add_bdev(spec, Box::new(MallocBdev::new(mib << 20).expect("ram")))
        .expect("malloc")
}

pub(crate) fn disks(engine: &Engine, n: usize, mib: u64) -> Vec<String> {
    (0..n)
        .map(|i| {
            let name = format!("M{i}");
            malloc(engine, &name, mib);
            name
        })
        .collect()
}

pub(crate) fn create(vm: &VolumeManager, name: &str, size: u64, layout: &str) -> Arc<Bdev> {
    let bdev = vm
        .volume_create(&VolumeCreate {
            dg: "dg01".into(),
            name: name.into(),
            size,
            layout: layout.into(),
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("volume_create {layout}: {e}"));
    vm.engine().bdevs().get(&bdev).expect("volume bdev")
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn every_layout_reads_back_what_was_written() {
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    let d = disks(&e, 4, 32);
    vm.dg_create("dg01", &d, false).unwrap();
    for (i, layout) in [
        "concat",
        "stripe",
        "mirror",
        "mirror-stripe",
        "stripe-mirror",
    ]
    .iter()
    .enumerate()
    {
        let v = create(&vm, &format!("v{i}"), 8 << 20, layout);
        assert_eq!(v.num_blocks(), 8 << 11);
        // A write across stripe units and a small unaligned-to-stripe write.
        let a = pattern(i as u64 + 1, 300 << 10);
        write(&e, &v, 4096 * 7, &a).unwrap();
        let b = pattern(i as u64 + 100, 512);
        write(&e, &v, (8 << 20) - 512, &b).unwrap();
        assert_eq!(
            read(&e, &v, 4096 * 7, a.len() as u64).unwrap(),
            a,
            "{layout}"
        );
        assert_eq!(read(&e, &v, (8 << 20) - 512, 512).unwrap(), b, "{layout}");
    }
    let listing = vm.vm_print(Some("dg01")).unwrap();
    assert!(listing.contains("pl v3-02"), "{listing}");
    vm.shutdown();
    e.shutdown();
}

/// Reads `len` blocks at `offset` of plex `plex` of a started volume straight from its disks.
pub(crate) fn plex_read(
    vm: &VolumeManager,
    vol: &Bdev,
    plex: &str,
    offset: u64,
    len: u64,
) -> Vec<u8> {
    let shared = super::driver::shared_of(vol).expect("volume");
    let map = shared.map();
    let i = map
        .plexes
        .iter()
        .position(|p| p.name == plex)
        .unwrap_or_else(|| panic!("plex {plex} not in the map"));
    let bs = vol.block_size() as u64;
    let mut out = vec![0u8; (len * bs) as usize];
    let mut segs = Vec::new();
    map.plexes[i]
        .geometry
        .map(offset, len, |s| segs.push(s))
        .unwrap();
    for s in segs {
        let d = &map.disks[s.target as usize];
        let data = read(vm.engine(), d, s.target_offset * bs, s.len * bs).unwrap();
        out[(s.req_offset * bs) as usize..((s.req_offset + s.len) * bs) as usize]
            .copy_from_slice(&data);
    }
    out
}

fn plex_names(vm: &VolumeManager, dg: &str, vol: &str) -> Vec<String> {
    let (cfg, _) = vm.config(dg).unwrap();
    cfg.plexes_of(vol).iter().map(|p| p.name.clone()).collect()
}

mod model {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        Write { block: u64, blocks: u64, seed: u64 },
        Read { block: u64, blocks: u64 },
        Flush,
        Zero { block: u64, blocks: u64 },
    }

    const VOL_BLOCKS: u64 = 4096; // 2 MiB

    fn op() -> impl Strategy<Value = Op> {
        let range = (0..VOL_BLOCKS).prop_flat_map(|b| (Just(b), 1..=(VOL_BLOCKS - b).min(300)));
        prop_oneof![
            4 => (range.clone(), any::<u64>()).prop_map(|((block, blocks), seed)| Op::Write { block, blocks, seed }),
            3 => range.clone().prop_map(|(block, blocks)| Op::Read { block, blocks }),
            1 => Just(Op::Flush),
            1 => range.prop_map(|(block, blocks)| Op::Zero { block, blocks }),
        ]
    }

    /// Random writes, reads, flushes and write-zeroes through every layout agree with a flat
    /// in-memory model, and every plex of a mirror holds the model's bytes afterwards.
    #[test]
    fn every_layout_matches_a_flat_model() {
        let e = engine();
        let vm = VolumeManager::new(e.clone());
        let d = disks(&e, 4, 16);
        vm.dg_create("dg01", &d, false).unwrap();
        for layout in [
            "concat",
            "stripe",
            "mirror",
            "mirror-stripe",
            "stripe-mirror",
        ] {
            let mut runner = TestRunner::new(Config {
                cases: 12,
                failure_persistence: None,
                ..Config::default()
            });
            let n = std::cell::Cell::new(0);
            runner
                .run(&proptest::collection::vec(op(), 1..40), |ops| {
                    n.set(n.get() + 1);
                    let name = format!("m{}", n.get());
                    let bdev = vm
                        .volume_create(&VolumeCreate {
                            dg: "dg01".into(),
                            name: name.clone(),
                            size: VOL_BLOCKS * 512,
                            layout: layout.into(),
                            stripe_unit_kb: Some(4),
                            ncol: layout.contains("stripe").then_some(2),
                            ..Default::default()
                        })
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    let vol = e.bdevs().get(&bdev).unwrap();
                    let mut model = vec![0u8; (VOL_BLOCKS * 512) as usize];
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
                                let want = &model
                                    [(block * 512) as usize..((block + blocks) * 512) as usize];
                                prop_assert!(
                                    got == want,
                                    "{layout}: read {block}+{blocks} differs from the model"
                                );
                            }
                            Op::Flush => {
                                crate::bdev::blocking::run_io(
                                    &e,
                                    0,
                                    &vol,
                                    crate::bdev::IoType::Flush,
                                    0,
                                    0,
                                    None,
                                    std::time::Duration::from_secs(10),
                                )
                                .unwrap();
                            }
                            Op::Zero { block, blocks } => {
                                crate::bdev::blocking::run_io(
                                    &e,
                                    0,
                                    &vol,
                                    crate::bdev::IoType::WriteZeroes,
                                    block * 512,
                                    blocks * 512,
                                    None,
                                    std::time::Duration::from_secs(10),
                                )
                                .unwrap();
                                model[(block * 512) as usize..((block + blocks) * 512) as usize]
                                    .fill(0);
                            }
                        }
                    }
                    prop_assert_eq!(read(&e, &vol, 0, VOL_BLOCKS * 512).unwrap(), model.clone());
                    for p in plex_names(&vm, "dg01", &name) {
                        let got = plex_read(&vm, &vol, &p, 0, VOL_BLOCKS);
                        prop_assert!(got == model, "{layout}: plex {p} differs from the model");
                    }
                    drop(vol);
                    vm.volume_delete("dg01", &name)
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    Ok(())
                })
                .unwrap_or_else(|e| panic!("{layout}: {e}"));
        }
        vm.shutdown();
        e.shutdown();
    }
}

mod failures {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::drivers::error::{self, Arming, CrashMode, ErrorKind, InjectTarget};
    use crate::volume::objects::{KernelState, PlexState, VolumeState};

    /// `n` malloc bdevs each under an error bdev; returns the error bdevs' names.
    fn error_disks(e: &Engine, n: usize, mib: u64) -> Vec<String> {
        disks(e, n, mib)
            .iter()
            .map(|m| error::create(e, m, None).unwrap().name().to_string())
            .collect()
    }

    fn err_state(e: &Engine, name: &str) -> Arc<error::ErrorState> {
        error::state_of(&e.bdevs().get(name).unwrap()).unwrap()
    }

    fn plex_state(vm: &VolumeManager, plex: &str) -> (PlexState, KernelState) {
        let (cfg, _) = vm.config("dg01").unwrap();
        let p = cfg.plex(plex).unwrap();
        (p.state, p.kstate)
    }

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
        // Which plex lives on the second disk?
        let (cfg, _) = vm.config("dg01").unwrap();
        let victim = cfg
            .subdisks
            .iter()
            .find(|s| s.disk == "disk02")
            .and_then(|s| s.plex.clone())
            .unwrap();
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
        assert_eq!(t.state(), super::super::task::TaskState::Done);
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
        assert_eq!(t.state(), super::super::task::TaskState::Done);
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
        assert_eq!(t.state(), super::super::task::TaskState::Done);
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
}

mod raid {
    use std::time::Duration;

    use super::*;
    use crate::volume::raid::RaidLevel;
    use crate::volume::task::TaskState;

    #[test]
    fn raid_levels_map_onto_volumes_and_reassemble_from_their_disks() {
        let e = engine();
        let vm = VolumeManager::new(e.clone());
        let d = disks(&e, 7, 16);
        vm.raid_create("R0", RaidLevel::Raid0, &d[0..2], Some(64), None)
            .unwrap();
        vm.raid_create("R1", RaidLevel::Raid1, &d[2..4], None, None)
            .unwrap();
        vm.raid_create("C", RaidLevel::Concat, &d[4..6], None, None)
            .unwrap();
        let public = 12 * 2048; // 16 MiB minus the 4 MiB private region, in blocks
        for (name, blocks) in [("R0", 2 * public), ("R1", public), ("C", 2 * public)] {
            let b = e.bdevs().get(name).unwrap();
            assert_eq!(b.num_blocks(), blocks, "{name}");
            let data = pattern(b.num_blocks(), 1 << 20);
            write(&e, &b, (b.num_blocks() * 512) - (1 << 20), &data).unwrap();
            assert_eq!(
                read(&e, &b, (b.num_blocks() * 512) - (1 << 20), 1 << 20).unwrap(),
                data
            );
        }
        let list = vm.raid_list("all").unwrap();
        assert_eq!(list.as_array().unwrap().len(), 3);
        let saved = super::super::raid::saved_config(vm.lock().get("R1").unwrap(), "R1");
        assert_eq!(
            saved.unwrap()["params"]["base_bdevs"],
            serde_json::json!(["M2", "M3"])
        );

        // raid1: remove a base bdev, keep serving, add another one back (rebuilt).
        let r1 = e.bdevs().get("R1").unwrap();
        let data = pattern(3, 64 << 10);
        write(&e, &r1, 0, &data).unwrap();
        vm.raid_remove_base("M3").unwrap();
        assert!(e.bdevs().get("M3").unwrap().claimed_by().is_none());
        assert_eq!(read(&e, &r1, 0, 64 << 10).unwrap(), data);
        let id = vm.raid_add_base("R1", "M6").unwrap();
        let t = vm.tasks().wait(id, Duration::from_secs(60)).unwrap();
        assert_eq!(t.state(), TaskState::Done);
        let list = vm.raid_list("online").unwrap();
        let r1_info = list
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "R1")
            .unwrap()
            .clone();
        assert_eq!(r1_info["num_base_bdevs_operational"], 2);
        for p in plex_names(&vm, "R1", "R1") {
            assert_eq!(plex_read(&vm, &r1, &p, 0, 128), data, "plex {p} rebuilt");
        }
        drop(r1);

        // Crash, then the saved config's bdev_raid_create re-assembles R0 with its data.
        let r0 = e.bdevs().get("R0").unwrap();
        let data = pattern(9, 256 << 10);
        write(&e, &r0, 1 << 20, &data).unwrap();
        let uuid = r0.uuid();
        drop(r0);
        vm.crash();
        let vm2 = VolumeManager::new(e.clone());
        vm2.raid_create("R0", RaidLevel::Raid0, &d[0..2], Some(64), Some(uuid))
            .unwrap();
        let r0 = e.bdevs().get("R0").unwrap();
        assert_eq!(r0.uuid(), uuid);
        assert_eq!(read(&e, &r0, 1 << 20, 256 << 10).unwrap(), data);
        drop(r0);
        // Delete frees the disks: they can form a new raid at once.
        vm2.raid_delete("R0").unwrap();
        assert!(e.bdevs().get("R0").is_err());
        vm2.raid_create("R0b", RaidLevel::Raid1, &d[0..2], None, None)
            .unwrap();
        // Bad input changes nothing.
        assert!(vm2
            .raid_create("X", RaidLevel::Raid1, &d[0..1], None, None)
            .is_err());
        assert!(RaidLevel::parse("raid5f").is_err());
        assert!(vm2.raid_delete("nope").is_err());
        vm2.shutdown();
        e.shutdown();
    }
}

mod reshape {
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
}

mod read_errors {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::drivers::error::{self, Arming, ErrorKind, InjectTarget};
    use crate::volume::objects::{KernelState, PlexState};
    use crate::volume::resync::READ_ERROR_BUDGET;

    fn setup() -> (
        Arc<Engine>,
        Arc<VolumeManager>,
        Vec<String>,
        Arc<Bdev>,
        String,
    ) {
        let e = engine();
        let vm = VolumeManager::new(e.clone());
        let d: Vec<String> = disks(&e, 2, 16)
            .iter()
            .map(|m| error::create(&e, m, None).unwrap().name().to_string())
            .collect();
        vm.dg_create("dg01", &d, false).unwrap();
        let vol = create(&vm, "vol01", 4 << 20, "mirror");
        let (cfg, _) = vm.config("dg01").unwrap();
        let victim = cfg
            .subdisks
            .iter()
            .find(|s| s.disk == "disk02")
            .and_then(|s| s.plex.clone())
            .unwrap();
        (e, vm, d, vol, victim)
    }

    fn inject(e: &Engine, name: &str, t: InjectTarget, n: u64) {
        error::state_of(&e.bdevs().get(name).unwrap())
            .unwrap()
            .inject(t, &Arming::new(ErrorKind::Failure, n))
            .unwrap();
    }

    fn errors_of(vm: &VolumeManager, plex: &str) -> u64 {
        let list = vm.volume_list(Some("dg01"), Some("vol01")).unwrap();
        list[0]["plexes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == plex)
            .map_or(0, |p| p["read_errors"].as_u64().unwrap())
    }

    fn wait_until(what: &str, f: impl Fn() -> bool) {
        let end = Instant::now() + Duration::from_secs(20);
        while !f() {
            assert!(Instant::now() < end, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn plex_state(vm: &VolumeManager, plex: &str) -> (PlexState, KernelState) {
        let (cfg, _) = vm.config("dg01").unwrap();
        let p = cfg.plex(plex).unwrap();
        (p.state, p.kstate)
    }

    /// Scenario 1: a read error on one mirror is served from the other, the block is rewritten
    /// on the failing plex, which stays in with its error count raised.
    #[test]
    fn a_read_error_is_served_from_the_other_mirror_and_repaired() {
        let (e, vm, d, vol, victim) = setup();
        let data = pattern(1, 64 << 10);
        write(&e, &vol, 0, &data).unwrap();
        let raw = e.bdevs().get(&d[1]).unwrap();
        let writes_before = raw.iostat().num_write_ops;
        // The next read on disk02 fails: it is retried on the other plex.
        inject(&e, &d[1], InjectTarget::Read, 1);
        for _ in 0..4 {
            assert_eq!(read(&e, &vol, 0, 64 << 10).unwrap(), data);
        }
        wait_until("the repair", || errors_of(&vm, &victim) == 1);
        assert_eq!(
            plex_state(&vm, &victim),
            (PlexState::Active, KernelState::Enabled)
        );
        assert!(
            raw.iostat().num_write_ops > writes_before,
            "the range was rewritten"
        );
        assert_eq!(plex_read(&vm, &vol, &victim, 0, 128), data);
        drop(vol);
        vm.shutdown();
        e.shutdown();
    }

    /// Scenario 2: the rewrite fails too: the plex is detached and the volume keeps serving.
    #[test]
    fn a_read_error_whose_rewrite_fails_detaches_the_plex() {
        let (e, vm, d, vol, victim) = setup();
        let data = pattern(2, 8192);
        write(&e, &vol, 4096, &data).unwrap();
        inject(&e, &d[1], InjectTarget::All, 1000);
        for _ in 0..4 {
            assert_eq!(read(&e, &vol, 4096, 8192).unwrap(), data);
        }
        wait_until("the detach", || {
            plex_state(&vm, &victim).1 == KernelState::Detached
        });
        assert_eq!(plex_state(&vm, &victim).0, PlexState::Iofail);
        assert_eq!(read(&e, &vol, 4096, 8192).unwrap(), data);
        let more = pattern(3, 4096);
        write(&e, &vol, 0, &more).unwrap();
        assert_eq!(read(&e, &vol, 0, 4096).unwrap(), more);
        drop(vol);
        vm.shutdown();
        e.shutdown();
    }

    /// Past the read-error budget the plex is detached even though each repair worked.
    #[test]
    fn a_plex_past_its_read_error_budget_is_detached() {
        let (e, vm, d, vol, victim) = setup();
        let data = pattern(4, 4096);
        write(&e, &vol, 0, &data).unwrap();
        for i in 0..=READ_ERROR_BUDGET {
            if plex_state(&vm, &victim).1 == KernelState::Detached {
                break;
            }
            inject(&e, &d[1], InjectTarget::Read, 1);
            // Read until the failing plex has been hit and repaired.
            wait_until("a repaired read error", || {
                assert_eq!(read(&e, &vol, 0, 4096).unwrap(), data);
                errors_of(&vm, &victim) > i as u64
                    || plex_state(&vm, &victim).1 == KernelState::Detached
            });
        }
        wait_until("the detach", || {
            plex_state(&vm, &victim).1 == KernelState::Detached
        });
        assert_eq!(read(&e, &vol, 0, 4096).unwrap(), data);
        drop(vol);
        vm.shutdown();
        e.shutdown();
    }
}

mod layered {
    use std::time::Duration;

    use super::*;
    use crate::drivers::error::{self, Arming, ErrorKind, InjectTarget};
    use crate::volume::objects::{KernelState, PlexState, VolumeState};
    use crate::volume::task::TaskState;

    /// A stripe-mirror volume loses only the failed disk's column mirror: the other column
    /// keeps both copies, data stays intact, and sub-volumes cannot be handled on their own.
    #[test]
    fn a_failed_disk_costs_stripe_mirror_only_its_column_mirror() {
        let e = engine();
        let vm = VolumeManager::new(e.clone());
        let d: Vec<String> = disks(&e, 4, 16)
            .iter()
            .map(|m| error::create(&e, m, None).unwrap().name().to_string())
            .collect();
        vm.dg_create("dg01", &d, false).unwrap();
        let vol = vm
            .volume_create(&VolumeCreate {
                dg: "dg01".into(),
                name: "vol01".into(),
                size: 8 << 20,
                layout: "stripe-mirror".into(),
                ncol: Some(2),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(vol, "dg01/vol01");
        let vol = e.bdevs().get(&vol).unwrap();
        let data = pattern(7, 8 << 20);
        write(&e, &vol, 0, &data).unwrap();
        let (cfg, _) = vm.config("dg01").unwrap();
        assert_eq!(
            cfg.volume("vol01-L01").unwrap().parent.as_deref(),
            Some("vol01")
        );
        let print = vm.vm_print(Some("dg01")).unwrap();
        assert!(print.contains("sv vol01-S01"), "{print}");
        // Sub-volumes belong to their parent.
        for r in [
            vm.volume_stop("dg01", "vol01-L01"),
            vm.volume_delete("dg01", "vol01-L01"),
        ] {
            assert!(r.unwrap_err().to_string().contains("sub-volume"));
        }
        let sub = e.bdevs().get("dg01/vol01-L01").unwrap();
        assert!(sub.claimed_by().is_some(), "the parent claims its columns");
        drop(sub);
        // disk02's writes fail: one mirror of one column goes.
        let victim_plex = cfg
            .subdisks
            .iter()
            .find(|s| s.disk == "disk02")
            .and_then(|s| s.plex.clone())
            .unwrap();
        let victim_sv = cfg.plex(&victim_plex).unwrap().volume.clone().unwrap();
        error::state_of(&e.bdevs().get(&d[1]).unwrap())
            .unwrap()
            .inject(InjectTarget::All, &Arming::new(ErrorKind::Failure, 100_000))
            .unwrap();
        let more = pattern(8, 1 << 20);
        write(&e, &vol, 0, &more).unwrap();
        let mut want = data.clone();
        want[..1 << 20].copy_from_slice(&more);
        assert_eq!(read(&e, &vol, 0, 8 << 20).unwrap(), want);
        let (cfg, _) = vm.config("dg01").unwrap();
        for p in &cfg.plexes {
            let vol_of = p.volume.clone().unwrap();
            let expect_failed = p.name == victim_plex;
            assert_eq!(
                p.state == PlexState::Iofail,
                expect_failed,
                "plex {} of {vol_of}: {:?}",
                p.name,
                p.state
            );
        }
        let other_sv = if victim_sv == "vol01-L01" {
            "vol01-L02"
        } else {
            "vol01-L01"
        };
        assert!(cfg
            .plexes_of(other_sv)
            .iter()
            .all(|p| p.state == PlexState::Active && p.kstate == KernelState::Enabled));
        error::state_of(&e.bdevs().get(&d[1]).unwrap())
            .unwrap()
            .clear();
        // Crash: every column resyncs on its own; the layered volume comes back whole.
        drop(vol);
        vm.crash();
        let vm2 = VolumeManager::new(e.clone());
        vm2.dg_import(Some("dg01"), None, None).unwrap();
        let vol = e.bdevs().get("dg01/vol01").unwrap();
        assert_eq!(read(&e, &vol, 0, 8 << 20).unwrap(), want);
        for t in vm2.tasks().list() {
            let t = vm2.tasks().wait(t.id, Duration::from_secs(60)).unwrap();
            assert_eq!(t.state(), TaskState::Done, "{}", t.kind);
        }
        // The failed mirror comes back with plex attach on its sub-volume.
        let id = vm2
            .plex_attach("dg01", &victim_sv, Some(&victim_plex), None, Duration::ZERO)
            .unwrap();
        assert_eq!(
            vm2.tasks()
                .wait(id, Duration::from_secs(60))
                .unwrap()
                .state(),
            TaskState::Done
        );
        let (cfg, _) = vm2.config("dg01").unwrap();
        assert!(cfg.plexes.iter().all(|p| p.state == PlexState::Active));
        assert!(cfg.volumes.iter().all(|v| v.state == VolumeState::Active));
        assert!(vm2
            .plex_attach("dg01", "vol01", None, None, Duration::ZERO)
            .is_err());
        drop(vol);
        vm2.volume_delete("dg01", "vol01").unwrap();
        let (cfg, _) = vm2.config("dg01").unwrap();
        assert!(cfg.volumes.is_empty() && cfg.subdisks.is_empty() && cfg.plexes.is_empty());
        assert!(e.bdevs().get("dg01/vol01-L01").is_err());
        vm2.shutdown();
        e.shutdown();
    }
}

/// With nconfig 1 only one disk holds config copies; the group still imports from it, and a
/// disk holding none is no source.
#[test]
fn nconfig_limits_the_disks_holding_copies() {
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    let d = disks(&e, 3, 16);
    vm.dg_create("dg01", &d, false).unwrap();
    vm.dg_set("dg01", 1).unwrap();
    create(&vm, "v", 1 << 20, "concat");
    let (_, seq) = vm.config("dg01").unwrap();
    vm.crash();
    let vm2 = VolumeManager::new(e.clone());
    // Only disk01 (first by name) holds the newest copy: importing from the others alone
    // finds an older one at best.
    let newest_on = |bdev: &str| {
        let b = e.bdevs().get(bdev).unwrap();
        let l = super::disk::read_label(&e, &b).unwrap();
        super::disk::read_copies(&e, &b, &l)
            .into_iter()
            .filter_map(|(_, c)| c.ok())
            .map(|c| c.header.seq)
            .max()
            .unwrap_or(0)
    };
    assert_eq!(newest_on(&d[0]), seq);
    assert!(newest_on(&d[1]) < seq && newest_on(&d[2]) < seq);
    vm2.dg_import(Some("dg01"), None, None).unwrap();
    assert!(vm2.config("dg01").unwrap().0.volume("v").is_some());
    vm2.shutdown();
    e.shutdown();
}

mod copy_safety {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::drivers::delay::{self, Latencies};
    use crate::volume::driver::VolumeEvent;
    use crate::volume::objects::{KernelState, VolumeState};
    use crate::volume::task::TaskState;

    /// `n` malloc bdevs behind delay bdevs (each request takes `ms`), so copies run long
    /// enough to act on them midway.
    fn slow_disks(e: &Engine, n: usize, mib: u64, ms: u64) -> Vec<String> {
        let us = ms * 1000;
        disks(e, n, mib)
            .iter()
            .map(|m| {
                let name = format!("D_{m}");
                let l = Latencies {
                    avg_read: us,
                    p99_read: us,
                    avg_write: us,
                    p99_write: us,
                };
                delay::create(e, &name, m, l, None).unwrap();
                name
            })
            .collect()
    }

    fn sd_offset(vm: &VolumeManager, plex: &str) -> (String, u64) {
        let (cfg, _) = vm.config("dg01").unwrap();
        let sd = cfg.subdisks_of(plex)[0].clone();
        let d = cfg.disk(&sd.disk).unwrap();
        (d.device.clone(), (d.public_offset + sd.disk_offset) * 512)
    }

    fn wait_until(what: &str, f: impl Fn() -> bool) {
        let end = Instant::now() + Duration::from_secs(60);
        while !f() {
            assert!(Instant::now() < end, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Detaching the plex a resync copies from stops that copy before the map changes, and
    /// the resync goes on from another plex: writes made after the detach are never
    /// overwritten with the detached plex's older data.
    #[test]
    fn detaching_the_resync_source_restarts_the_resync_elsewhere() {
        let e = engine();
        let vm = VolumeManager::new(e.clone());
        let d = slow_disks(&e, 3, 16, 10);
        vm.dg_create("dg01", &d, false).unwrap();
        let vol = vm
            .volume_create(&VolumeCreate {
                dg: "dg01".into(),
                name: "vol01".into(),
                size: 12 << 20,
                layout: "mirror".into(),
                nmirror: Some(3),
                ..Default::default()
            })
            .unwrap();
        let vol = e.bdevs().get(&vol).unwrap();
        let mut model = pattern(1, 12 << 20);
        write(&e, &vol, 0, &model).unwrap();
        let plexes = plex_names(&vm, "dg01", "vol01");
        drop(vol);
        vm.crash();
        let vm2 = VolumeManager::new(e.clone());
        vm2.dg_import(Some("dg01"), None, None).unwrap();
        let vol = e.bdevs().get("dg01/vol01").unwrap();
        let resync = vm2
            .tasks()
            .list()
            .into_iter()
            .find(|t| t.kind == "resync")
            .unwrap();
        assert_eq!(resync.source.as_deref(), Some(plexes[0].as_str()));
        // While it copies: new data at the end, then the source leaves.
        let tail = pattern(2, 1 << 20);
        write(&e, &vol, 11 << 20, &tail).unwrap();
        model[11 << 20..].copy_from_slice(&tail);
        vm2.plex_detach("dg01", &plexes[0], false).unwrap();
        assert_eq!(
            vm2.tasks()
                .wait(resync.id, Duration::from_secs(60))
                .unwrap()
                .state(),
            TaskState::Cancelled
        );
        let again = vm2
            .tasks()
            .list()
            .into_iter()
            .find(|t| t.kind == "resync" && t.id != resync.id)
            .expect("the resync restarts from another plex");
        assert_ne!(again.source.as_deref(), Some(plexes[0].as_str()));
        assert_eq!(
            vm2.tasks()
                .wait(again.id, Duration::from_secs(60))
                .unwrap()
                .state(),
            TaskState::Done
        );
        assert!(read(&e, &vol, 0, 12 << 20).unwrap() == model);
        for p in &plexes[1..] {
            assert!(plex_read(&vm2, &vol, p, 0, 12 << 11) == model, "plex {p}");
        }
        drop(vol);
        vm2.shutdown();
        e.shutdown();
    }

    /// A crash while a resync runs restarts it from the beginning: what the first resync
    /// had already made equal may differ again (a write torn by the second crash).
    #[test]
    fn a_crash_during_resync_restarts_it_from_the_beginning() {
        let e = engine();
        let vm = VolumeManager::new(e.clone());
        let d = slow_disks(&e, 2, 24, 60);
        vm.dg_create("dg01", &d, false).unwrap();
        let vol = create(&vm, "vol01", 20 << 20, "mirror");
        let data = pattern(3, 20 << 20);
        write(&e, &vol, 0, &data).unwrap();
        let plexes = plex_names(&vm, "dg01", "vol01");
        let (dev, off) = sd_offset(&vm, &plexes[1]);
        drop(vol);
        vm.crash();
        let vm2 = VolumeManager::new(e.clone());
        vm2.dg_import(Some("dg01"), None, None).unwrap();
        wait_until("a resync checkpoint", || {
            vm2.config("dg01")
                .unwrap()
                .0
                .volume("vol01")
                .unwrap()
                .resync_offset
                .unwrap_or(0)
                > 0
        });
        vm2.crash();
        // The second crash tore a write in the already-resynced start: plex 2 differs there.
        let raw = e.bdevs().get(&dev).unwrap();
        write(&e, &raw, off, &[0x5a; 4096]).unwrap();
        let vm3 = VolumeManager::new(e.clone());
        vm3.dg_import(Some("dg01"), None, None).unwrap();
        let (cfg, _) = vm3.config("dg01").unwrap();
        assert_eq!(
            cfg.volume("vol01").unwrap().resync_offset,
            Some(0),
            "starts over"
        );
        let t = vm3
            .tasks()
            .list()
            .into_iter()
            .find(|t| t.kind == "resync")
            .unwrap();
        assert_eq!(
            vm3.tasks()
                .wait(t.id, Duration::from_secs(120))
                .unwrap()
                .state(),
            TaskState::Done
        );
        let vol = e.bdevs().get("dg01/vol01").unwrap();
        assert_eq!(
            plex_read(&vm3, &vol, &plexes[1], 0, 8),
            plex_read(&vm3, &vol, &plexes[0], 0, 8)
        );
        drop(vol);
        vm3.shutdown();
        e.shutdown();
    }

    /// Failures that would leave no in-sync plex take the volume offline instead (sticky
    /// until it is restarted); the last good plex is never detached.
    #[test]
    fn losing_every_plex_disables_the_volume_until_restarted() {
        let e = engine();
        let vm = VolumeManager::new(e.clone());
        let d = disks(&e, 2, 16);
        vm.dg_create("dg01", &d, false).unwrap();
        let vol = create(&vm, "vol01", 4 << 20, "mirror");
        let shared = crate::volume::driver::shared_of(&vol).unwrap();
        let map = shared.map();
        let id = shared
            .next_event
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        vm.events
            .send(VolumeEvent::WriteFailed {
                volume: shared.clone(),
                map,
                plexes: 0b11,
                id,
            })
            .unwrap();
        wait_until("the volume to go offline", || !shared.map().enabled);
        assert!(read(&e, &vol, 0, 4096).is_err(), "no I/O while disabled");
        let (cfg, _) = vm.config("dg01").unwrap();
        assert!(
            cfg.plexes.iter().all(|p| p.kstate == KernelState::Enabled),
            "nothing detached"
        );
        drop(vol);
        vm.volume_stop("dg01", "vol01").unwrap();
        vm.volume_start("dg01", "vol01").unwrap();
        let vol = e.bdevs().get("dg01/vol01").unwrap();
        assert!(read(&e, &vol, 0, 4096).is_ok());
        assert_eq!(
            vm.config("dg01").unwrap().0.volume("vol01").unwrap().state,
            VolumeState::Active
        );
        drop(vol);
        vm.shutdown();
        e.shutdown();
    }
}

/// A write that fails on a subdisk move's new place (the shadow) abandons the move: the
/// subdisk stays where it was, with every acknowledged write, and the new space is freed.
#[test]
fn a_failing_move_destination_abandons_the_move() {
    use crate::drivers::delay::{self, Latencies};
    use crate::drivers::error::{self, Arming, ErrorKind, InjectTarget};
    use std::time::Duration;
    let e = engine();
    let vm = VolumeManager::new(e.clone());
    // disk01 is slow (the copy takes a while), disk02 fails writes on demand.
    let m = disks(&e, 2, 16);
    let slow = Latencies {
        avg_read: 20_000,
        p99_read: 20_000,
        avg_write: 20_000,
        p99_write: 20_000,
    };
    delay::create(&e, "D0", &m[0], slow, None).unwrap();
    let ee = error::create(&e, &m[1], None).unwrap().name().to_string();
    vm.dg_create("dg01", &["D0".to_string(), ee.clone()], false)
        .unwrap();
    let vol = vm
        .volume_create(&VolumeCreate {
            dg: "dg01".into(),
            name: "vol01".into(),
            size: 8 << 20,
            layout: "concat".into(),
            alloc: Some(vec!["disk01".into()]),
            ..Default::default()
        })
        .unwrap();
    let vol = e.bdevs().get(&vol).unwrap();
    let data = pattern(6, 8 << 20);
    write(&e, &vol, 0, &data).unwrap();
    let (cfg, _) = vm.config("dg01").unwrap();
    let sd = cfg.subdisks_of("vol01-01")[0].clone();
    assert_eq!(sd.disk, "disk01");
    let id = vm
        .subdisk_move("dg01", &sd.name, Some("disk02"), Duration::from_millis(20))
        .unwrap();
    // Once the copy is past the first MiB, one write to the new place fails: a guest write
    // into the part already copied.
    let task = vm.tasks().get(id).unwrap();
    let end = std::time::Instant::now() + Duration::from_secs(30);
    while task.done() < 2048 + 2048 {
        assert!(std::time::Instant::now() < end, "the copy does not advance");
        std::thread::sleep(Duration::from_millis(2));
    }
    error::state_of(&e.bdevs().get(&ee).unwrap())
        .unwrap()
        .inject(InjectTarget::Write, &Arming::new(ErrorKind::Failure, 1))
        .unwrap();
    let late = pattern(7, 4096);
    write(&e, &vol, 0, &late).expect("the real plex took the write");
    let t = vm.tasks().wait(id, Duration::from_secs(60)).unwrap();
    assert_ne!(t.state(), crate::volume::task::TaskState::Done);
    let (cfg, _) = vm.config("dg01").unwrap();
    assert_eq!(cfg.subdisks.len(), 1, "the new place is freed");
    assert_eq!(cfg.subdisks[0].name, sd.name, "the subdisk did not move");
    let mut want = data;
    want[..4096].copy_from_slice(&late);
    assert!(read(&e, &vol, 0, 8 << 20).unwrap() == want);
    drop(vol);
    vm.shutdown();
    e.shutdown();
}
