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
