//! Random operations on every layout against a flat in-memory model.

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
                            let want =
                                &model[(block * 512) as usize..((block + blocks) * 512) as usize];
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
