//! Volume manager tests over RAM bdevs in one process: layouts against a flat model, failures,
//! persistence through re-import, split brain, attach under writes.

use std::sync::Arc;

use crate::bdev::blocking::{read, write};
use crate::bdev::{Bdev, BdevSpec, IoTypeSet};
use crate::drivers::malloc::MallocBdev;
use crate::reactor::PollMode;
use crate::volume::manager::ops::VolumeCreate;
use crate::volume::manager::VolumeManager;
use crate::Engine;

mod copy_safety;
mod drl_port;
mod drl_raid5;
mod durability;
mod edges;
mod failures;
mod layered;
mod model;
mod raid;
mod raid5_create;
mod raid5_io;
mod raid5_log;
mod raid5_skip_copy;
mod raid5_tasks;
mod raid5f;
mod read_errors;
mod request_types;
mod reshape;
mod sparse_copy;

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

/// `n` malloc bdevs each under an error bdev (fault injection); returns the error bdevs.
pub(crate) fn error_disks(e: &Engine, n: usize, mib: u64) -> Vec<String> {
    disks(e, n, mib)
        .iter()
        .map(|m| {
            crate::drivers::error::create(e, m, None)
                .unwrap()
                .name()
                .to_string()
        })
        .collect()
}

/// The injection state of error bdev `name`.
pub(crate) fn err_state(e: &Engine, name: &str) -> Arc<crate::drivers::error::ErrorState> {
    crate::drivers::error::state_of(&e.bdevs().get(name).unwrap()).unwrap()
}

/// Makes the next `n` requests of kind `t` on error bdev `name` fail.
pub(crate) fn inject(e: &Engine, name: &str, t: crate::drivers::error::InjectTarget, n: u64) {
    use crate::drivers::error::{Arming, ErrorKind};
    err_state(e, name)
        .inject(t, &Arming::new(ErrorKind::Failure, n))
        .unwrap();
}

/// The plex of group dg01 with a subdisk on `disk`.
pub(crate) fn plex_on(vm: &VolumeManager, disk: &str) -> String {
    let (cfg, _) = vm.config("dg01").unwrap();
    cfg.subdisks
        .iter()
        .find(|s| s.disk == disk)
        .and_then(|s| s.plex.clone())
        .unwrap_or_else(|| panic!("no plex on {disk}"))
}

/// Plex state and kernel state of plex `plex` of group dg01.
pub(crate) fn plex_state(
    vm: &VolumeManager,
    plex: &str,
) -> (
    crate::volume::model::objects::PlexState,
    crate::volume::model::objects::KernelState,
) {
    let (cfg, _) = vm.config("dg01").unwrap();
    let p = cfg.plex(plex).unwrap();
    (p.state, p.kstate)
}

/// The task of `kind` the manager lists (panics if there is none).
pub(crate) fn task_of_kind(vm: &VolumeManager, kind: &str) -> Arc<crate::volume::copy::task::Task> {
    vm.tasks()
        .list()
        .into_iter()
        .find(|t| t.kind == kind)
        .unwrap_or_else(|| panic!("no {kind} task is listed"))
}

/// Polls `f` every 5 ms for up to 60 s; fails the test naming `what` if it never holds.
pub(crate) fn wait_until(what: &str, f: impl Fn() -> bool) {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !f() {
        assert!(
            std::time::Instant::now() < end,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

pub(crate) fn pattern(seed: u64, len: usize) -> Vec<u8> {
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

/// Reads `len` blocks at `offset` of plex `plex` straight from its disks. Written apart from
/// `task::plex_io` on purpose: the tests check the copy engine with it.
pub(crate) fn plex_read(
    vm: &VolumeManager,
    vol: &Bdev,
    plex: &str,
    offset: u64,
    len: u64,
) -> Vec<u8> {
    let shared = crate::volume::io::driver::shared_of(vol).expect("volume");
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

pub(crate) fn plex_names(vm: &VolumeManager, dg: &str, vol: &str) -> Vec<String> {
    let (cfg, _) = vm.config(dg).unwrap();
    cfg.plexes_of(vol).iter().map(|p| p.name.clone()).collect()
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
        let l = crate::volume::ondisk::disk::read_label(&e, &b).unwrap();
        crate::volume::ondisk::disk::read_copies(&e, &b, &l)
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
    assert_ne!(t.state(), crate::volume::copy::task::TaskState::Done);
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

/// A point where a test holds a thread (a copy, the event thread) until it lets it go: the
/// held thread calls [`Gate::block`], the test waits for it with [`Gate::wait_reached`] and
/// releases it with [`Gate::open`]. Once open, `block` returns at once.
#[derive(Default)]
pub(crate) struct Gate {
    st: std::sync::Mutex<(bool, bool)>,
    cv: std::sync::Condvar,
}

impl Gate {
    pub(crate) fn new() -> Arc<Gate> {
        Arc::new(Gate::default())
    }

    /// Marks the gate reached and waits until it is open.
    pub(crate) fn block(&self) {
        let mut st = self.st.lock().unwrap();
        st.0 = true;
        self.cv.notify_all();
        while !st.1 {
            st = self.cv.wait(st).unwrap();
        }
    }

    /// Waits (up to 60 s) until a thread reached the gate.
    pub(crate) fn wait_reached(&self, what: &str) {
        let st = self.st.lock().unwrap();
        let (st, _) = self
            .cv
            .wait_timeout_while(st, std::time::Duration::from_secs(60), |s| !s.0)
            .unwrap();
        assert!(st.0, "timed out waiting for {what}");
    }

    /// Lets every blocked thread go, now and later.
    pub(crate) fn open(&self) {
        self.st.lock().unwrap().1 = true;
        self.cv.notify_all();
    }
}

/// Sets the test hook of `vm` (see [`crate::volume::copy::task::HookPoint`]).
pub(crate) fn set_hook(
    vm: &VolumeManager,
    f: impl Fn(crate::volume::copy::task::HookPoint<'_>) + Send + Sync + 'static,
) {
    *vm.tasks().hook.lock().unwrap() = Some(Arc::new(f));
}

/// Holds every resync of `vm` before it copies the chunk at or past block `at` (once).
pub(crate) fn hold_resync_at(vm: &VolumeManager, at: u64) -> Arc<Gate> {
    hold_task_at(vm, "resync", at)
}

/// Like [`hold_resync_at`] for tasks of kind `kind` (`parity_resync`, `rebuild`, ...).
pub(crate) fn hold_task_at(vm: &VolumeManager, kind: &'static str, at: u64) -> Arc<Gate> {
    let gate = Gate::new();
    let g = gate.clone();
    set_hook(vm, move |p| {
        if let crate::volume::copy::task::HookPoint::Chunk { task, at: a } = p {
            if task.kind == kind && a >= at {
                g.block();
            }
        }
    });
    gate
}
