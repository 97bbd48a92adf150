//! Memory slots are a per-controller limit: plexd offers `MAX_MEM_SLOTS` (32) with
//! CONFIGURE_MEM_SLOTS, and a front-end that adds more regions with ADD_MEM_REG is refused
//! without disturbing the regions it holds. Every mapped region takes an entry in plexd's
//! process-wide SIGBUS guard table, so without the limit one hostile or buggy front-end could
//! fill that table and make every other controller's memory table fail.

use plexd_tests::vhost_client::*;
use plexd_tests::Plexd;
use serde_json::json;
use vhost::vhost_user::VhostUserFrontend;
use vhost::VhostUserMemoryRegionInfo;

/// Slots plexd offers (GET_MAX_MEM_SLOTS).
const MAX_MEM_SLOTS: u64 = 32;
/// More regions than plexd's SIGBUS guard table holds (4096 entries, shared by all
/// controllers).
const FLOOD: u64 = 4200;
/// Where the added regions start (above the 8 MiB of the connection's first region).
const ADDED_GPA: u64 = 0x1000_0000;

struct Env {
    /// Kept so that plexd runs for the whole test (stopped on drop).
    _plexd: Plexd,
    sockets: tempfile::TempDir,
}

impl Env {
    fn start() -> Env {
        let sockets = tempfile::tempdir().expect("socket dir");
        let dir = sockets.path().display().to_string();
        let plexd = Plexd::start_args(&["-m", "0x1", "-S", &dir]);
        for (ctrlr, bdev) in [("A", "MallocA"), ("B", "MallocB")] {
            plexd.call(
                "bdev_malloc_create",
                json!({"name": bdev, "block_size": 512, "num_blocks": 16384}),
            );
            plexd.call(
                "vhost_create_blk_controller",
                json!({"ctrlr": ctrlr, "dev_name": bdev}),
            );
        }
        Env {
            _plexd: plexd,
            sockets,
        }
    }

    fn connect(&self, ctrlr: &str) -> Client {
        Client::connect(&self.sockets.path().join(ctrlr), &ClientOpts::default())
            .unwrap_or_else(|e| panic!("connect to {ctrlr}: {e}"))
    }
}

/// Reads 4 KiB at `sector` straight into `region` (an added region) and returns it.
fn read_into(c: &mut Client, region: &GuestMem, sector: u64) -> Result<Vec<u8>, String> {
    let mem = c.mem.clone();
    c.heap.reset(&mem);
    region.fill(region.start(), 4096, 0xCC);
    let h = c.heap.put(&mem, &blk_header(VIRTIO_BLK_T_IN, sector));
    let s = c.heap.alloc(1);
    mem.write(s, &[0xEE]);
    let head = c.vq.set_chain(
        &mem,
        0,
        &[
            Desc::ro(h, 16),
            Desc::wo(region.start(), 4096),
            Desc::wo(s, 1),
        ],
    );
    c.vq.push(&mem, head);
    let u = c.vq.wait_used(&mem, IO_TIMEOUT);
    let status = mem.byte(s);
    if u.map(|u| (u.id, u.len)) != Some((head as u32, 4097)) || status != VIRTIO_BLK_S_OK {
        return Err(format!("read into an added region: {u:?}, status {status}"));
    }
    Ok(region.read_vec(region.start(), 4096))
}

/// A front-end holding 32 regions (its SET_MEM_TABLE region and 31 added ones) is refused
/// the 33rd; its device keeps serving I/O into the regions it holds, and a region freed with
/// REM_MEM_REG can be added again.
#[test]
fn add_mem_region_beyond_max_slots_is_refused() {
    let env = Env::start();
    let mut a = env.connect("A");
    let regions: Vec<GuestMem> = (0..MAX_MEM_SLOTS)
        .map(|i| GuestMem::new_at(64 << 10, ADDED_GPA + i * (1 << 20)))
        .collect();
    for (i, r) in regions[..MAX_MEM_SLOTS as usize - 1].iter().enumerate() {
        a.add_mem_region(r)
            .unwrap_or_else(|e| panic!("region {} of {MAX_MEM_SLOTS}: {e}", i + 2));
    }
    let extra = &regions[MAX_MEM_SLOTS as usize - 1];
    let r = a.add_mem_region(extra);
    assert!(
        r.is_err(),
        "region {} was accepted although plexd offers {MAX_MEM_SLOTS} memory slots",
        MAX_MEM_SLOTS + 1
    );
    // The device still serves, through the first region and the added ones.
    let data = data_pattern(33, 4096);
    a.write_read_check(0, &data)
        .expect("I/O through the first region after the refusal");
    for r in [&regions[0], &regions[MAX_MEM_SLOTS as usize - 2]] {
        let got = read_into(&mut a, r, 0).expect("read into an added region");
        assert!(
            got == data,
            "a read into an added region returned other data"
        );
    }
    // Removing a region frees its slot.
    a.remove_mem_region(&regions[0]).expect("REM_MEM_REG");
    a.add_mem_region(extra)
        .expect("a region added after REM_MEM_REG freed a slot");
    let got = read_into(&mut a, extra, 0).expect("read into the region added last");
    assert!(
        got == data,
        "a read into the region added last returned other data"
    );
}

/// One front-end adding regions until plexd refuses (without the slot limit: until plexd's
/// process-wide SIGBUS guard table, 4096 entries, is full), then a few more that must be
/// refused too, must not stop another controller's front-end from setting its memory table
/// and doing I/O, nor stop its own device.
#[test]
fn many_add_mem_region_do_not_starve_other_controllers() {
    let env = Env::start();
    let mut a = env.connect("A");
    // One 4 KiB memfd, added over and over at different guest addresses.
    let page = GuestMem::new_at(4096, ADDED_GPA);
    let region = |i: u64| nth_page_region(&page, i);
    let mut accepted = 0u64;
    while accepted < FLOOD && a.fe.add_mem_region(&region(accepted)).is_ok() {
        accepted += 1;
    }
    // A few more attempts (fewer than the 64 refusals in a row that drop a connection):
    // each must be refused and leave nothing behind.
    for i in 0..16 {
        let r = a.fe.add_mem_region(&region(FLOOD + i));
        assert!(r.is_err(), "ADD_MEM_REG accepted after a refusal");
    }
    let mut b = Client::connect(&env.sockets.path().join("B"), &ClientOpts::default())
        .unwrap_or_else(|e| {
            panic!("B cannot connect after A added {accepted} regions with ADD_MEM_REG: {e}")
        });
    b.write_read_check(8, &data_pattern(7, 4096))
        .unwrap_or_else(|e| panic!("B after A added {accepted} regions: {e}"));
    a.write_read_check(16, &data_pattern(8, 4096))
        .unwrap_or_else(|e| panic!("A after it added {accepted} regions: {e}"));
    assert_eq!(
        accepted,
        MAX_MEM_SLOTS - 1,
        "ADD_MEM_REG accepted beyond the {MAX_MEM_SLOTS} slots offered"
    );
}

/// Regions removed with REM_MEM_REG give back their SIGBUS guard-table entries: a front-end
/// that adds and removes its 31 spare slots over and over (more additions in all than the
/// 4096-entry table holds) is never refused, and another controller still connects.
#[test]
fn removed_regions_free_their_guard_entries() {
    let env = Env::start();
    let mut a = env.connect("A");
    let page = GuestMem::new_at(4096, ADDED_GPA);
    let region = |i: u64| nth_page_region(&page, i);
    let rounds = FLOOD / (MAX_MEM_SLOTS - 1) + 1;
    for round in 0..rounds {
        for i in 0..MAX_MEM_SLOTS - 1 {
            a.fe.add_mem_region(&region(i)).unwrap_or_else(|e| {
                panic!("round {round}: ADD_MEM_REG of slot {} refused: {e}", i + 2)
            });
        }
        for i in 0..MAX_MEM_SLOTS - 1 {
            a.fe.remove_mem_region(&region(i))
                .unwrap_or_else(|e| panic!("round {round}: REM_MEM_REG: {e}"));
        }
    }
    a.write_read_check(0, &data_pattern(9, 4096))
        .expect("A after adding and removing regions");
    let mut b = env.connect("B");
    b.write_read_check(0, &data_pattern(10, 4096))
        .expect("B after A added and removed regions");
}

/// The one-page memfd `page` mapped as guest page `i` above `ADDED_GPA` (the same memory may
/// back many regions at different guest addresses).
fn nth_page_region(page: &GuestMem, i: u64) -> VhostUserMemoryRegionInfo {
    let mut r = page.region(page.user_addr(), 4096);
    r.guest_phys_addr = ADDED_GPA + i * 4096;
    r
}
