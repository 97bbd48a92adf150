//! The mirror write path with a dirty region log (`io::drl_port`), over a hand-built map (the
//! manager does not make maps yet): a 2-way mirror of 8 MiB in 64 KiB regions (128 regions, one
//! page per bitmap), its map's two copies made with `drl::store` in two disks' log areas and
//! published with the volume's map. What is on disk is read back with `store::read_map`.

use std::sync::Arc;
use std::time::Duration;

use crate::bdev::blocking::{read, run_io, start_io, write, BlockingIoError, PendingIo};
use crate::bdev::{Bdev, IoType};
use crate::drivers::error::{Arming, ErrorKind, InjectTarget, MAX_NUM};
use crate::reactor::tsc;
use crate::volume::drl::format::DrlGeometry;
use crate::volume::drl::regions::{Drl, Geometry};
use crate::volume::drl::store::{self, CopyDisk, MapSpec};
use crate::volume::io::driver::{shared_of, DrlCopy, DrlMap, VolumeMap};
use crate::volume::manager::ops::VolumeCreate;
use crate::volume::manager::VolumeManager;
use crate::volume::model::drl_space;
use crate::volume::model::objects::{DrlCopyRecord, DrlMode, DrlRecord};
use crate::volume::model::region_set::RegionSet;
use crate::volume::ondisk::disk;
use crate::volume::ondisk::format::Label;
use crate::volume::tests::{engine, err_state, error_disks, inject, pattern, wait_until};
use crate::Engine;

/// Bytes per region (128 blocks of 512 bytes).
pub(super) const REGION: u64 = 64 << 10;
/// The volume: 128 regions.
pub(super) const VOL_BYTES: u64 = 8 << 20;

/// A started volume (a mirror, or what [`Rig::with`] asks for) with a region log published
/// in its map.
pub(super) struct Rig {
    pub(super) e: Arc<Engine>,
    pub(super) vm: Arc<VolumeManager>,
    pub(super) vol: Arc<Bdev>,
    /// The error bdevs of the group's disks, the volume's data disks first.
    pub(super) disks: Vec<String>,
    /// Which of `disks` hold the map's copies (copy 0, copy 1).
    copy_on: [usize; 2],
    spec: MapSpec,
    bdevs: Vec<Arc<Bdev>>,
    labels: Vec<Label>,
    names: Vec<String>,
    pub(super) drl: Arc<Drl>,
}

impl Rig {
    /// Four disks, the mirror on the first two; the map's copies on the data disks
    /// (`on_data`) or on the other two (whose writes are then all log writes). A region is
    /// cleared after `clear_ms` of quiet.
    fn new(on_data: bool, clear_ms: u64) -> Rig {
        Rig::on(engine(), on_data, clear_ms)
    }

    /// As [`Rig::new`], on the reactors of `e`.
    fn on(e: Arc<Engine>, on_data: bool, clear_ms: u64) -> Rig {
        let req = VolumeCreate {
            layout: "mirror".into(),
            ..Default::default()
        };
        Rig::with(
            e,
            req,
            2,
            4,
            if on_data { [0, 1] } else { [2, 3] },
            clear_ms,
        )
    }

    /// `ndisks` disks of 32 MiB, volume vol01 of [`VOL_BYTES`] as `req` asks (its group, name,
    /// size and disks are set here) on the first `data` of them, the map's copies on disks
    /// `copy_on`; a region is cleared after `clear_ms` of quiet.
    pub(super) fn with(
        e: Arc<Engine>,
        req: VolumeCreate,
        data: usize,
        ndisks: usize,
        copy_on: [usize; 2],
        clear_ms: u64,
    ) -> Rig {
        let vm = VolumeManager::new(e.clone());
        let disks = error_disks(&e, ndisks, 32);
        vm.dg_create("dg01", &disks, false).unwrap();
        let bdev = vm
            .volume_create(&VolumeCreate {
                dg: "dg01".into(),
                name: "vol01".into(),
                size: VOL_BYTES,
                alloc: Some(disks[..data].to_vec()),
                ..req
            })
            .unwrap();
        let vol = e.bdevs().get(&bdev).unwrap();
        let (mut cfg, _) = vm.config("dg01").unwrap();
        let name_of = |bdev: &str| {
            cfg.disks
                .iter()
                .find(|d| d.device == bdev)
                .map(|d| d.name.clone())
                .unwrap()
        };
        let names: Vec<String> = copy_on.iter().map(|&i| name_of(&disks[i])).collect();
        let len = vol.num_blocks();
        let page = drl_space::page_bytes(cfg.block_size) as u32;
        let geometry = DrlGeometry::new(REGION / 512, len, page).unwrap();
        cfg.volumes
            .iter_mut()
            .find(|v| v.name == "vol01")
            .unwrap()
            .drl = Some(DrlRecord {
            region_blocks: REGION / 512,
            mode: DrlMode::Normal,
            max_dirty: 4,
            clear_ms: clear_ms as u32,
            epoch: 7,
            m_epoch: 2,
            tracking: false,
            valid: true,
            pages: geometry.pages(),
            copies: names
                .iter()
                .map(|n| DrlCopyRecord {
                    disk: n.clone(),
                    page: 0,
                })
                .collect(),
        });
        let spec = MapSpec::new(&cfg, "vol01").unwrap();
        let bdevs: Vec<Arc<Bdev>> = copy_on
            .iter()
            .map(|&i| e.bdevs().get(&disks[i]).unwrap())
            .collect();
        let labels: Vec<Label> = bdevs
            .iter()
            .map(|b| disk::read_label(&e, b).unwrap())
            .collect();
        let n = u64::from(geometry.nregions());
        let mut rig = Rig {
            e,
            vm,
            vol,
            disks,
            copy_on,
            spec,
            bdevs,
            labels,
            names,
            drl: Arc::new(
                Drl::new(
                    Geometry {
                        regions: geometry.nregions(),
                        bits_per_page: geometry.bits_per_page(),
                    },
                    tsc::duration_to_ticks(Duration::from_millis(clear_ms)),
                )
                .unwrap(),
            ),
        };
        store::init_all(
            &rig.e,
            &rig.spec,
            &rig.copy_disks(&[0, 1]),
            &RegionSet::new(n),
            &RegionSet::new(n),
        )
        .unwrap();
        // No copy runs on the volume: every region may be cleared.
        rig.drl.unpin();
        rig.publish(geometry);
        rig
    }

    /// Publishes the volume's map with the region log added (its copy disks added to the
    /// map's disks if they are not data disks).
    fn publish(&mut self, geometry: DrlGeometry) {
        let shared = shared_of(&self.vol).unwrap();
        let old = shared.map();
        let mut disks = old.disks.clone();
        let mut copies = Vec::new();
        for (i, b) in self.bdevs.iter().enumerate() {
            let target = match disks.iter().position(|d| Arc::ptr_eq(d, b)) {
                Some(t) => t,
                None => {
                    disks.push(b.clone());
                    disks.len() - 1
                }
            };
            let offset = store::copy_offset(&self.spec, &self.copy_disks(&[0, 1]), i).unwrap();
            copies.push(DrlCopy {
                target: target as u32,
                first_block: offset / u64::from(b.block_size()),
            });
        }
        let map = DrlMap::new(
            self.drl.clone(),
            geometry,
            copies,
            self.vol.block_size(),
            self.spec.record().epoch,
            self.spec.record().m_epoch,
        )
        .unwrap();
        shared.publish(VolumeMap {
            // Far from the manager's own generations, so neither is mistaken for the other.
            generation: old.generation + 1_000_000,
            disks,
            plexes: old.plexes.clone(),
            read_policy: old.read_policy,
            read_source: old.read_source,
            enabled: old.enabled,
            raid5: old.raid5.clone(),
            drl: Some(map),
        });
    }

    fn copy_disks(&self, which: &[usize]) -> Vec<CopyDisk<'_>> {
        which
            .iter()
            .map(|&i| CopyDisk {
                name: &self.names[i],
                bdev: &self.bdevs[i],
                label: &self.labels[i],
            })
            .collect()
    }

    /// The D regions on disk, merged from copies `which` (the others treated as absent).
    pub(super) fn on_disk(&self, which: &[usize]) -> Vec<u64> {
        let m = store::read_map(&self.e, &self.spec, &self.copy_disks(which));
        assert!(m.usable(), "{:?}", m.messages());
        m.d.iter().collect()
    }

    /// The error bdev of copy `i`.
    pub(super) fn copy_bdev(&self, i: usize) -> &str {
        &self.disks[self.copy_on[i]]
    }

    /// Writes completed on the bdev of copy `i` (all log writes when the copies are not on
    /// the data disks).
    pub(super) fn writes_on_copy(&self, i: usize) -> u64 {
        self.bdevs[i].iostat().num_write_ops
    }

    /// Writes `data` into region `r`, `at` bytes into it.
    pub(super) fn write(&self, r: u64, at: u64, data: &[u8]) {
        write(&self.e, &self.vol, r * REGION + at, data).unwrap();
    }

    /// Starts a write of `data` into region `r`, `at` bytes into it, on reactor 0.
    pub(super) fn start_write(&self, r: u64, at: u64, data: &[u8]) -> PendingIo {
        self.start_write_on(0, r, at, data)
    }

    /// Starts a write of `data` into region `r`, `at` bytes into it, on reactor `reactor`.
    pub(super) fn start_write_on(&self, reactor: usize, r: u64, at: u64, data: &[u8]) -> PendingIo {
        start_io(
            &self.e,
            reactor,
            &self.vol,
            IoType::Write,
            r * REGION + at,
            data.len() as u64,
            Some(data),
        )
        .unwrap()
    }

    pub(super) fn read(&self, r: u64, at: u64, len: u64) -> Vec<u8> {
        read(&self.e, &self.vol, r * REGION + at, len).unwrap()
    }

    pub(super) fn shutdown(self) {
        self.vm.shutdown();
        self.e.shutdown();
    }
}

/// Requests of `kind` still armed on error bdev `name`.
pub(super) fn armed(e: &Engine, name: &str, kind: &str) -> u64 {
    let b = e.bdevs().get(name).unwrap();
    let (_, info) = b.driver().driver_specific().unwrap();
    info["injections"][kind]["remaining"].as_u64().unwrap_or(0)
}

pub(super) fn still_running(p: &PendingIo) -> bool {
    matches!(
        p.wait(Duration::from_millis(300)),
        Err(BlockingIoError::TimedOut(_))
    )
}

/// An hour: no region is cleared during the test.
pub(super) const NO_CLEAR_MS: u64 = 3_600_000;

#[test]
fn writes_mark_exactly_their_regions_on_both_copies() {
    let rig = Rig::new(true, NO_CLEAR_MS);
    let a = pattern(1, 4096);
    rig.write(3, 0, &a);
    let b = pattern(2, 8192);
    rig.write(17, 512, &b);
    // Across the border of regions 40 and 41.
    let c = pattern(3, 4096);
    rig.write(40, REGION - 2048, &c);
    let zeroes_at = 100 * REGION + 4096;
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
    let want = vec![3, 17, 40, 41, 100];
    assert_eq!(rig.on_disk(&[0]), want, "copy 0");
    assert_eq!(rig.on_disk(&[1]), want, "copy 1");
    assert_eq!(rig.drl.dirty(), 5);
    assert_eq!(rig.read(3, 0, 4096), a);
    assert_eq!(rig.read(17, 512, 8192), b);
    assert_eq!(rig.read(40, REGION - 2048, 4096), c);
    assert_eq!(
        read(&rig.e, &rig.vol, zeroes_at, 4096).unwrap(),
        vec![0u8; 4096]
    );
    rig.shutdown();
}

#[test]
fn a_region_already_dirty_is_not_logged_again() {
    let rig = Rig::new(false, NO_CLEAR_MS);
    let before = [rig.writes_on_copy(0), rig.writes_on_copy(1)];
    rig.write(5, 0, &pattern(1, 4096));
    let after_first = [rig.writes_on_copy(0), rig.writes_on_copy(1)];
    assert_eq!(after_first, [before[0] + 1, before[1] + 1]);
    for k in 1..10u64 {
        rig.write(5, k * 4096, &pattern(k, 4096));
    }
    assert_eq!(
        [rig.writes_on_copy(0), rig.writes_on_copy(1)],
        after_first,
        "writes into a region whose bit is durable wrote the log"
    );
    rig.write(6, 0, &pattern(11, 4096));
    assert_eq!(
        [rig.writes_on_copy(0), rig.writes_on_copy(1)],
        [after_first[0] + 1, after_first[1] + 1]
    );
    assert_eq!(rig.on_disk(&[0, 1]), vec![5, 6]);
    for k in 1..10u64 {
        assert_eq!(rig.read(5, k * 4096, 4096), pattern(k, 4096));
    }
    rig.shutdown();
}

#[test]
fn writers_waiting_for_one_clean_region_share_one_log_write() {
    let rig = Rig::new(false, NO_CLEAR_MS);
    let before = [rig.writes_on_copy(0), rig.writes_on_copy(1)];
    for i in 0..2 {
        err_state(&rig.e, rig.copy_bdev(i))
            .inject(InjectTarget::Write, &Arming::new(ErrorKind::Hold, 1))
            .unwrap();
    }
    let writes: Vec<PendingIo> = (0..16u64)
        .map(|k| rig.start_write(9, k * 4096, &pattern(100 + k, 4096)))
        .collect();
    assert!(
        still_running(&writes[0]),
        "a write went on before its region's bit was written"
    );
    wait_until("the log write to be held on both copies", || {
        (0..2).all(|i| armed(&rig.e, rig.copy_bdev(i), "write") == 0)
    });
    for w in &writes {
        assert!(still_running(w), "a write went on before its bit");
    }
    for i in 0..2 {
        err_state(&rig.e, rig.copy_bdev(i)).clear();
    }
    for w in &writes {
        w.wait(Duration::from_secs(10)).unwrap();
    }
    assert_eq!(
        [rig.writes_on_copy(0), rig.writes_on_copy(1)],
        [before[0] + 1, before[1] + 1],
        "16 writers into one clean region made more than one log write per copy"
    );
    assert_eq!(rig.on_disk(&[0]), vec![9]);
    assert_eq!(rig.on_disk(&[1]), vec![9]);
    for k in 0..16u64 {
        assert_eq!(rig.read(9, k * 4096, 4096), pattern(100 + k, 4096));
    }
    rig.shutdown();
}

#[test]
fn quiet_regions_are_cleared_on_disk_and_a_write_during_the_pass_keeps_its_bit() {
    let rig = Rig::new(false, 500);
    rig.write(2, 0, &pattern(1, 4096));
    rig.write(7, 0, &pattern(2, 4096));
    assert_eq!(rig.on_disk(&[0, 1]), vec![2, 7]);
    // Hold the data disks' flush of the next clear pass: the pass is then under way.
    for d in &rig.disks[..2] {
        err_state(&rig.e, d)
            .inject(InjectTarget::Flush, &Arming::new(ErrorKind::Hold, 1))
            .unwrap();
    }
    wait_until("a clear pass to flush the data disks", || {
        rig.disks[..2]
            .iter()
            .all(|d| armed(&rig.e, d, "flush") == 0)
    });
    // A write into region 2 while its clear is armed: it must keep its bit.
    rig.write(2, 8192, &pattern(3, 4096));
    for d in &rig.disks[..2] {
        err_state(&rig.e, d).clear();
    }
    wait_until("region 7 to be cleared on disk and region 2 kept", || {
        rig.on_disk(&[0, 1]) == vec![2]
    });
    assert_eq!(rig.on_disk(&[0]), vec![2]);
    assert_eq!(rig.on_disk(&[1]), vec![2]);
    // Quiet from now on: region 2 is cleared too.
    wait_until("every region to be cleared on disk", || {
        rig.on_disk(&[0, 1]).is_empty()
    });
    assert_eq!(rig.drl.dirty(), 0);
    assert_eq!(rig.read(2, 0, 4096), pattern(1, 4096));
    assert_eq!(rig.read(2, 8192, 4096), pattern(3, 4096));
    assert_eq!(rig.read(7, 0, 4096), pattern(2, 4096));
    // A region cleared is marked again by its next write.
    rig.write(7, 4096, &pattern(4, 4096));
    assert_eq!(rig.on_disk(&[0, 1]), vec![7]);
    rig.shutdown();
}

#[test]
fn a_failing_log_copy_is_left_out_and_the_other_keeps_the_bits() {
    let rig = Rig::new(false, NO_CLEAR_MS);
    inject(&rig.e, rig.copy_bdev(0), InjectTarget::Write, MAX_NUM);
    rig.write(4, 0, &pattern(1, 4096));
    assert_eq!(rig.on_disk(&[1]), vec![4], "copy 1 lacks the bit");
    assert_eq!(rig.on_disk(&[0]), Vec::<u64>::new());
    let dead = shared_of(&rig.vol)
        .unwrap()
        .map()
        .drl
        .as_ref()
        .unwrap()
        .shared
        .dead_copies
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(dead, 1, "copy 0 is not recorded dead");
    // The dead copy is not written any more, even once it works again.
    err_state(&rig.e, rig.copy_bdev(0)).clear();
    let copy0 = rig.writes_on_copy(0);
    rig.write(8, 0, &pattern(2, 4096));
    assert_eq!(rig.writes_on_copy(0), copy0);
    assert_eq!(rig.on_disk(&[1]), vec![4, 8]);
    assert_eq!(rig.read(4, 0, 4096), pattern(1, 4096));
    assert_eq!(rig.read(8, 0, 4096), pattern(2, 4096));
    rig.shutdown();
}

#[test]
fn writes_wait_while_every_log_copy_fails_and_go_on_once_one_works() {
    let rig = Rig::new(false, NO_CLEAR_MS);
    rig.write(1, 0, &pattern(1, 4096));
    for i in 0..2 {
        inject(&rig.e, rig.copy_bdev(i), InjectTarget::Write, MAX_NUM);
    }
    let a = rig.start_write(11, 0, &pattern(2, 4096));
    let b = rig.start_write(11, 4096, &pattern(3, 4096));
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
    assert_eq!(rig.read(11, 4096, 4096), pattern(3, 4096));
    assert_eq!(rig.read(1, 4096, 4096), pattern(4, 4096));
    rig.shutdown();
}

/// Holds the next log write on both copies (the copies are not on the data disks).
fn hold_log_writes(rig: &Rig) {
    for i in 0..2 {
        err_state(&rig.e, rig.copy_bdev(i))
            .inject(InjectTarget::Write, &Arming::new(ErrorKind::Hold, 1))
            .unwrap();
    }
    wait_until("nothing else to be held", || {
        (0..2).all(|i| armed(&rig.e, rig.copy_bdev(i), "write") == 1)
    });
}

fn release_log_writes(rig: &Rig) {
    wait_until("the log write to be held on both copies", || {
        (0..2).all(|i| armed(&rig.e, rig.copy_bdev(i), "write") == 0)
    });
    for i in 0..2 {
        err_state(&rig.e, rig.copy_bdev(i)).clear();
    }
}

#[test]
fn writers_on_two_reactors_are_served_by_whichever_holds_the_log() {
    let e = Engine::start(&[0, 1], crate::reactor::PollMode::Adaptive).expect("engine");
    let rig = Rig::on(e, false, NO_CLEAR_MS);
    let before = [rig.writes_on_copy(0), rig.writes_on_copy(1)];
    // One clean region written from both reactors: one log write covers both.
    hold_log_writes(&rig);
    let mut writes: Vec<PendingIo> = (0..8u64)
        .map(|k| rig.start_write_on((k % 2) as usize, 9, k * 4096, &pattern(k, 4096)))
        .collect();
    assert!(still_running(&writes[1]), "a write went on before its bit");
    release_log_writes(&rig);
    for w in &writes {
        w.wait(Duration::from_secs(10)).unwrap();
    }
    assert_eq!(
        [rig.writes_on_copy(0), rig.writes_on_copy(1)],
        [before[0] + 1, before[1] + 1]
    );
    // A region requested on one reactor while the other holds the log for another region:
    // both are made durable (one more batch each, or one for both).
    hold_log_writes(&rig);
    writes.clear();
    writes.push(rig.start_write_on(0, 20, 0, &pattern(20, 4096)));
    release_log_writes_later(&rig, &mut writes);
    for w in &writes {
        w.wait(Duration::from_secs(10)).unwrap();
    }
    assert_eq!(rig.on_disk(&[0]), vec![9, 20, 21]);
    assert_eq!(rig.on_disk(&[1]), vec![9, 20, 21]);
    for k in 0..8u64 {
        assert_eq!(rig.read(9, k * 4096, 4096), pattern(k, 4096));
    }
    assert_eq!(rig.read(20, 0, 4096), pattern(20, 4096));
    assert_eq!(rig.read(21, 0, 4096), pattern(21, 4096));
    rig.shutdown();
}

/// Waits until reactor 0's batch is held, starts a write into region 21 on reactor 1 (which
/// cannot take the log's token now), then lets the held batch go.
fn release_log_writes_later(rig: &Rig, writes: &mut Vec<PendingIo>) {
    wait_until("the log write to be held on both copies", || {
        (0..2).all(|i| armed(&rig.e, rig.copy_bdev(i), "write") == 0)
    });
    writes.push(rig.start_write_on(1, 21, 0, &pattern(21, 4096)));
    assert!(still_running(&writes[1]), "a write went on before its bit");
    for i in 0..2 {
        err_state(&rig.e, rig.copy_bdev(i)).clear();
    }
}

#[test]
fn waiters_go_on_without_the_log_once_a_map_without_it_is_published() {
    let rig = Rig::new(false, NO_CLEAR_MS);
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
    rig.write(13, 0, &pattern(2, 4096));
    assert_eq!(rig.read(13, 0, 4096), pattern(2, 4096));
    for i in 0..2 {
        err_state(&rig.e, rig.copy_bdev(i)).clear();
    }
    rig.shutdown();
}

#[test]
fn while_a_plex_is_tracked_writes_mark_the_missed_map_too() {
    let rig = Rig::new(true, NO_CLEAR_MS);
    rig.write(3, 0, &pattern(1, 4096));
    // A plex leaves: regions dirty now are put into M by the next batch, and every write
    // from now on needs its M bit as well.
    assert_eq!(rig.drl.start_tracking(), 1);
    rig.write(30, 0, &pattern(2, 4096));
    let m = store::read_map(&rig.e, &rig.spec, &rig.copy_disks(&[0, 1]));
    assert!(m.usable(), "{:?}", m.messages());
    assert!(m.messages().is_empty(), "{:?}", m.messages());
    assert_eq!(m.d.iter().collect::<Vec<_>>(), vec![3, 30]);
    assert_eq!(m.m.iter().collect::<Vec<_>>(), vec![3, 30]);
    assert_eq!(rig.read(30, 0, 4096), pattern(2, 4096));
    rig.shutdown();
}
