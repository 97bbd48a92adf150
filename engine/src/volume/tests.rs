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
    for (i, layout) in ["concat", "stripe", "mirror", "mirror-stripe"]
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
        for layout in ["concat", "stripe", "mirror", "mirror-stripe"] {
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
