//! A hostile or buggy guest cannot crash plexd, reach memory it does not own, or stop other
//! devices.
//!
//! One plexd (two reactors) exports several malloc bdevs on vhost-user-blk controllers. For
//! each case a fresh client connects to a controller and misbehaves; afterwards a
//! well-behaved client on controller B (whose queue shares reactor 0 with A's) must still
//! write and read back, and plexd must still answer `bdev_get_bdevs`.
//!
//! For every rejected request the test checks the status byte (IOERR, or untouched when no
//! status byte can be located), the used length (at most the status byte), and that no guest
//! byte outside the request's device-writable buffers changed: request buffers come from a
//! heap pre-filled with a pattern, and the descriptor table and available ring are compared
//! before and after.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use plexd_tests::vhost_client::*;
use plexd_tests::Plexd;
use serde_json::json;

/// Sectors of the 512-byte-block bdevs (8 MiB).
const SECTORS: u64 = 16384;
/// How long a rejected request may take to come back.
const REJECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long to watch for a completion that must not come.
const QUIET: Duration = Duration::from_millis(500);

struct Env {
    plexd: Plexd,
    sockets: tempfile::TempDir,
    b: Client,
    b_round: u64,
    a_next: u64,
}

fn ensure(cond: bool, msg: impl FnOnce() -> String) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(msg())
    }
}

impl Env {
    fn start() -> Env {
        let sockets = tempfile::tempdir().expect("socket dir");
        let dir = sockets.path().display().to_string();
        let plexd = Plexd::start_args(&["-m", "0x3", "-S", &dir]);
        for (name, bs, blocks) in [
            ("MallocA", 512, SECTORS),
            ("MallocB", 512, SECTORS),
            ("Malloc4k", 4096, SECTORS / 8),
            ("MallocRO", 512, SECTORS),
            ("MallocS", 512, SECTORS),
        ] {
            plexd.call(
                "bdev_malloc_create",
                json!({"name": name, "block_size": bs, "num_blocks": blocks}),
            );
        }
        plexd.call(
            "bdev_delay_create",
            json!({"name": "SlowS", "base_bdev_name": "MallocS",
                   "avg_read_latency": 20000, "p99_read_latency": 20000,
                   "avg_write_latency": 20000, "p99_write_latency": 20000}),
        );
        for (ctrlr, bdev, ro) in [
            ("A", "MallocA", false),
            ("B", "MallocB", false),
            ("K4", "Malloc4k", false),
            ("RO", "MallocRO", true),
            ("SLOW", "SlowS", false),
        ] {
            plexd.call(
                "vhost_create_blk_controller",
                json!({"ctrlr": ctrlr, "dev_name": bdev, "readonly": ro}),
            );
        }
        let b = Client::connect(&sockets.path().join("B"), &ClientOpts::default())
            .unwrap_or_else(|e| panic!("well-behaved client on B: {e}"));
        Env {
            plexd,
            sockets,
            b,
            b_round: 0,
            a_next: 0,
        }
    }

    fn sock(&self, ctrlr: &str) -> PathBuf {
        self.sockets.path().join(ctrlr)
    }

    fn connect(&self, ctrlr: &str) -> Result<Client, String> {
        self.connect_with(ctrlr, &ClientOpts::default())
    }

    fn connect_with(&self, ctrlr: &str, opts: &ClientOpts) -> Result<Client, String> {
        Client::connect(&self.sock(ctrlr), opts).map_err(|e| format!("connect to {ctrlr}: {e}"))
    }

    /// `n` fresh sectors of A (no earlier case touched them).
    fn a_sectors(&mut self, n: u64) -> u64 {
        let s = self.a_next;
        self.a_next += n;
        assert!(
            self.a_next < SECTORS - 64,
            "A is full: use fewer sectors per case"
        );
        s
    }

    fn alive(&mut self) -> Result<(), String> {
        if let Ok(Some(st)) = self.plexd.child.try_wait() {
            let log = self.plexd.stderr();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(3)..];
            return Err(format!("plexd exited ({st}); its log ends: {tail:?}"));
        }
        Ok(())
    }

    /// The witness: B writes and reads back, plexd answers RPCs.
    fn witness(&mut self) -> Result<(), String> {
        self.alive()?;
        self.b_round += 1;
        let sector = (self.b_round * 8) % (SECTORS - 8);
        let data = data_pattern(self.b_round, 4096);
        self.b
            .write_read_check(sector, &data)
            .map_err(|e| format!("controller B stopped serving: {e}"))?;
        let bdevs = self
            .plexd
            .client()
            .call("bdev_get_bdevs", Some(json!({})))
            .map_err(|e| format!("bdev_get_bdevs failed: {e}"))?;
        ensure(bdevs.as_array().is_some_and(|a| a.len() == 6), || {
            format!("bdev_get_bdevs: {bdevs}")
        })
    }

    fn sessions(&self, ctrlr: &str) -> usize {
        let v = self
            .plexd
            .call("vhost_get_controllers", json!({"name": ctrlr}));
        v[0]["sessions"].as_array().map_or(0, Vec::len)
    }

    fn wait_disconnected(&self, ctrlr: &str) -> Result<(), String> {
        let end = Instant::now() + Duration::from_secs(40);
        while self.sessions(ctrlr) > 0 {
            if Instant::now() > end {
                return Err(format!(
                    "{ctrlr} still reports a session 40 s after disconnect"
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

/// Publishes `head` and snapshots the driver area (which the device must never write).
fn submit(a: &mut Client, head: u16) -> Vec<u8> {
    a.vq.push(&a.mem, head);
    a.vq.driver_area(&a.mem)
}

fn check_memory(a: &Client, writable: &[(u64, u64)], driver_area: &[u8]) -> Result<(), String> {
    a.heap.check(&a.mem, writable)?;
    ensure(a.vq.driver_area(&a.mem) == driver_area, || {
        "the device wrote the descriptor table or the available ring".into()
    })
}

/// A malformed request must come back with at most a status byte written (IOERR, or
/// untouched when none can be located), and nothing outside its writable buffers changed.
fn expect_rejected(
    a: &mut Client,
    head: u16,
    status: Option<u64>,
    writable: &[(u64, u64)],
    driver_area: &[u8],
) -> Result<(), String> {
    expect_rejected_as(a, head, status, false, writable, driver_area)
}

/// As [`expect_rejected`]; with `reachable`, the status byte is a valid device-writable byte
/// at the end of the chain, so it must say IOERR (a driver that pre-zeroes the status would
/// take an untouched one for success).
fn expect_rejected_as(
    a: &mut Client,
    head: u16,
    status: Option<u64>,
    reachable: bool,
    writable: &[(u64, u64)],
    driver_area: &[u8],
) -> Result<(), String> {
    let u =
        a.vq.wait_used(&a.mem, REJECT_TIMEOUT)
            .ok_or("the malformed request was never returned to the driver")?;
    ensure(u.id == head as u32, || {
        format!("used element for descriptor {} instead of {head}", u.id)
    })?;
    ensure(u.len <= 1, || {
        format!(
            "used length {}: the device executed a malformed request",
            u.len
        )
    })?;
    if let Some(st) = status {
        let b = a.mem.byte(st);
        ensure(b == pattern(st) || b == VIRTIO_BLK_S_IOERR, || {
            format!("status byte {b:#04x}: want IOERR ({VIRTIO_BLK_S_IOERR}) or untouched")
        })?;
        ensure(
            !reachable || (b == VIRTIO_BLK_S_IOERR && u.len == 1),
            || {
                format!(
                    "status byte {b:#04x}, used length {}: the status byte was reachable, want \
                 IOERR and used length 1",
                    u.len
                )
            },
        )?;
    }
    check_memory(a, writable, driver_area)
}

/// Expects one completion of `head` with `status` and used length `len`.
fn expect_status(a: &mut Client, head: u16, st: u64, want: u8, len: u32) -> Result<(), String> {
    let u =
        a.vq.wait_used(&a.mem, REJECT_TIMEOUT)
            .ok_or("no completion")?;
    ensure(u.id == head as u32, || {
        format!("used element for descriptor {} instead of {head}", u.id)
    })?;
    let got = a.mem.byte(st);
    ensure(got == want, || {
        format!("status {got:#04x}, want {want:#04x}")
    })?;
    ensure(u.len == len, || {
        format!("used length {}, want {len}", u.len)
    })
}

/// The queue still serves well-formed requests.
fn still_serves(env: &mut Env, a: &mut Client) -> Result<(), String> {
    let sector = env.a_sectors(8);
    a.write_read_check(sector, &data_pattern(sector + 1000, 4096))
        .map_err(|e| format!("the queue stopped serving after the malformed request: {e}"))
}

/// Reads `n` sectors through a well-formed request.
fn read_sectors(a: &mut Client, sector: u64, n: usize) -> Result<Vec<u8>, String> {
    let mut buf = vec![0u8; n * 512];
    let (st, _) = a.io(VIRTIO_BLK_T_IN, sector, &mut buf)?;
    ensure(st == VIRTIO_BLK_S_OK, || format!("read status {st}"))?;
    Ok(buf)
}

/// Runs a malformed request built by `build` (which returns head, status GPA, writable
/// buffers); checks it is rejected, the queue still serves, and (for writes) that the target
/// sectors did not change.
fn malformed(
    env: &mut Env,
    opts: &ClientOpts,
    build: impl FnOnce(&mut Client, u64) -> (u16, Option<u64>, Vec<(u64, u64)>),
) -> Result<(), String> {
    malformed_as(env, opts, false, build)
}

/// As [`malformed`]; `reachable`: see [`expect_rejected_as`].
fn malformed_as(
    env: &mut Env,
    opts: &ClientOpts,
    reachable: bool,
    build: impl FnOnce(&mut Client, u64) -> (u16, Option<u64>, Vec<(u64, u64)>),
) -> Result<(), String> {
    let mut a = env.connect_with("A", opts)?;
    let sector = env.a_sectors(16);
    let baseline = read_sectors(&mut a, sector, 16)?;
    let (head, status, writable) = build(&mut a, sector);
    let area = submit(&mut a, head);
    expect_rejected_as(&mut a, head, status, reachable, &writable, &area)?;
    ensure(read_sectors(&mut a, sector, 16)? == baseline, || {
        "a malformed write reached the disk".into()
    })?;
    still_serves(env, &mut a)
}

fn hdr(a: &mut Client, t: u32, sector: u64) -> u64 {
    a.heap.put(&a.mem, &blk_header(t, sector))
}

// ---- descriptor chains that never end -------------------------------------------------

fn loop_back_to_header(env: &mut Env) -> Result<(), String> {
    malformed(env, &ClientOpts::default(), |a, sector| {
        let h = hdr(a, VIRTIO_BLK_T_IN, sector);
        let (d, st) = (a.heap.alloc(512), a.heap.alloc(1));
        let mut c = link(&[Desc::ro(h, 16), Desc::wo(d, 512), Desc::wo(st, 1)], 0, 16);
        c[2].flags |= VIRTQ_DESC_F_NEXT;
        c[2].next = 0;
        for (i, x) in c.iter().enumerate() {
            a.vq.set_desc(&a.mem, i as u16, *x);
        }
        (0, Some(st), vec![(d, 512), (st, 1)])
    })
}

fn loop_on_status(env: &mut Env) -> Result<(), String> {
    // header -> status (self loop). 15 visits of a 239-byte buffer minus the status byte are
    // exactly 7 sectors: cut at the queue size, the loop looks like a valid 7-sector read.
    malformed(env, &ClientOpts::default(), |a, sector| {
        let h = hdr(a, VIRTIO_BLK_T_IN, sector);
        let st = a.heap.alloc(239);
        a.vq.set_desc(
            &a.mem,
            0,
            Desc {
                addr: h,
                len: 16,
                flags: VIRTQ_DESC_F_NEXT,
                next: 1,
            },
        );
        a.vq.set_desc(
            &a.mem,
            1,
            Desc {
                addr: st,
                len: 239,
                flags: VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT,
                next: 1,
            },
        );
        (0, None, vec![(st, 239)])
    })
}

fn chain_longer_than_queue(env: &mut Env) -> Result<(), String> {
    // All 16 descriptors: header, 14 data, status -- and the status still says NEXT -> 0.
    malformed(env, &ClientOpts::default(), |a, sector| {
        let h = hdr(a, VIRTIO_BLK_T_IN, sector);
        let d = a.heap.alloc(14 * 512);
        let st = a.heap.alloc(1);
        let mut descs = vec![Desc::ro(h, 16)];
        descs.extend((0..14).map(|i| Desc::wo(d + i * 512, 512)));
        descs.push(Desc::wo(st, 1));
        let mut c = link(&descs, 0, 16);
        c[15].flags |= VIRTQ_DESC_F_NEXT;
        c[15].next = 0;
        for (i, x) in c.iter().enumerate() {
            a.vq.set_desc(&a.mem, i as u16, *x);
        }
        (0, Some(st), vec![(d, 14 * 512), (st, 1)])
    })
}

fn indirect_longer_than_max_segments(env: &mut Env) -> Result<(), String> {
    // An indirect table of 2000 entries (queue size 16, plexd takes at most 1024 pieces).
    malformed(env, &ClientOpts::default(), |a, sector| {
        let h = hdr(a, VIRTIO_BLK_T_IN, sector);
        let d = a.heap.alloc(512);
        let st = a.heap.alloc(1);
        let mut descs = vec![Desc::ro(h, 16)];
        descs.extend((0..1998).map(|_| Desc::wo(d, 512)));
        descs.push(Desc::wo(st, 1));
        let table = a.heap.put_table(&a.mem, &link(&descs, 0, u16::MAX));
        a.vq.set_desc(&a.mem, 0, Desc::indirect(table, descs.len() as u32));
        (0, Some(st), vec![(d, 512), (st, 1)])
    })
}

fn nested_indirect(env: &mut Env) -> Result<(), String> {
    malformed(env, &ClientOpts::default(), |a, sector| {
        let h = hdr(a, VIRTIO_BLK_T_IN, sector);
        // 513 bytes: were the chain cut at the nested table, header + this buffer would
        // look like a valid one-sector read with its status in the last byte.
        let d = a.heap.alloc(513);
        let st = a.heap.alloc(1);
        let inner = a.heap.put_table(&a.mem, &[Desc::wo(st, 1)]);
        let outer = a.heap.put_table(
            &a.mem,
            &link(
                &[Desc::ro(h, 16), Desc::wo(d, 513), Desc::indirect(inner, 1)],
                0,
                3,
            ),
        );
        a.vq.set_desc(&a.mem, 0, Desc::indirect(outer, 3));
        (0, Some(st), vec![(d, 513), (st, 1)])
    })
}

fn indirect_with_loop(env: &mut Env) -> Result<(), String> {
    malformed(env, &ClientOpts::default(), |a, sector| {
        let h = hdr(a, VIRTIO_BLK_T_IN, sector);
        let d = a.heap.alloc(512);
        let st = a.heap.alloc(1);
        let mut t = link(&[Desc::ro(h, 16), Desc::wo(d, 512), Desc::wo(st, 1)], 0, 3);
        t[2].flags |= VIRTQ_DESC_F_NEXT;
        t[2].next = 0;
        let table = a.heap.put_table(&a.mem, &t);
        a.vq.set_desc(&a.mem, 0, Desc::indirect(table, 3));
        (0, Some(st), vec![(d, 512), (st, 1)])
    })
}

fn next_index_out_of_range(env: &mut Env) -> Result<(), String> {
    // header -> data -> status, status says NEXT -> 200 (queue size 16).
    malformed(env, &ClientOpts::default(), |a, sector| {
        let h = hdr(a, VIRTIO_BLK_T_IN, sector);
        let d = a.heap.alloc(512);
        let st = a.heap.alloc(1);
        let mut c = link(&[Desc::ro(h, 16), Desc::wo(d, 512), Desc::wo(st, 1)], 0, 16);
        c[2].flags |= VIRTQ_DESC_F_NEXT;
        c[2].next = 200;
        for (i, x) in c.iter().enumerate() {
            a.vq.set_desc(&a.mem, i as u16, *x);
        }
        (0, Some(st), vec![(d, 512), (st, 1)])
    })
}

fn indirect_table_outside_memory(env: &mut Env) -> Result<(), String> {
    malformed(env, &ClientOpts::default(), |a, _| {
        let end = a.mem.end();
        a.vq.set_desc(&a.mem, 0, Desc::indirect(end - 16, 4));
        (0, None, vec![])
    })?;
    malformed(env, &ClientOpts::default(), |a, sector| {
        // A table whose length is not a multiple of 16.
        let h = hdr(a, VIRTIO_BLK_T_IN, sector);
        let st = a.heap.alloc(1);
        let table = a
            .heap
            .put_table(&a.mem, &link(&[Desc::ro(h, 16), Desc::wo(st, 1)], 0, 2));
        a.vq.set_desc(
            &a.mem,
            0,
            Desc {
                addr: table,
                len: 33,
                flags: VIRTQ_DESC_F_INDIRECT,
                next: 0,
            },
        );
        (0, Some(st), vec![(st, 1)])
    })
}

// ---- addresses and lengths ---------------------------------------------------------------

/// A read or write whose header, data or status descriptor is replaced by `bad`.
fn with_bad_descriptor(
    env: &mut Env,
    t: u32,
    which: usize,
    bad: impl Fn(&Client) -> Desc,
) -> Result<(), String> {
    // Only a bad status descriptor leaves no status byte to answer in.
    malformed_as(env, &ClientOpts::default(), which != 2, |a, sector| {
        let h = hdr(a, t, sector);
        let d = a.heap.put(&a.mem, &data_pattern(sector, 1024));
        let st = a.heap.alloc(1);
        let data = if t == VIRTIO_BLK_T_IN {
            Desc::wo(d, 1024)
        } else {
            Desc::ro(d, 1024)
        };
        let mut descs = [Desc::ro(h, 16), data, Desc::wo(st, 1)];
        let flags = descs[which].flags;
        descs[which] = bad(a);
        if which != 0 {
            descs[which].flags |= flags;
        }
        a.vq.set_chain(&a.mem, 0, &descs);
        let mut writable = vec![(st, 1)];
        if t == VIRTIO_BLK_T_IN {
            writable.push((d, 1024));
        }
        (0, Some(st), writable)
    })
}

fn addresses_outside_guest_memory(env: &mut Env) -> Result<(), String> {
    for t in [VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT] {
        for which in 0..3 {
            let len = if which == 0 {
                16
            } else if which == 1 {
                1024
            } else {
                1
            };
            // Below guest memory (GPA 0), past its end, and straddling its end.
            with_bad_descriptor(env, t, which, |_| Desc::ro(0x1000, len))
                .map_err(|e| format!("type {t}, descriptor {which} at GPA 0x1000: {e}"))?;
            with_bad_descriptor(env, t, which, |a| Desc::ro(a.mem.end() + 4096, len))
                .map_err(|e| format!("type {t}, descriptor {which} past the end: {e}"))?;
            with_bad_descriptor(env, t, which, |a| Desc::ro(a.mem.end() - 8, len + 8))
                .map_err(|e| format!("type {t}, descriptor {which} straddling the end: {e}"))?;
        }
    }
    Ok(())
}

fn lengths_that_overflow(env: &mut Env) -> Result<(), String> {
    for t in [VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT] {
        for which in 0..3 {
            // addr + len wraps past 2^64.
            with_bad_descriptor(env, t, which, |_| Desc::ro(u64::MAX - 7, 4096))
                .map_err(|e| format!("type {t}, descriptor {which} wrapping: {e}"))?;
            // A valid address with a 4 GiB - 1 length.
            with_bad_descriptor(env, t, which, |a| Desc::ro(a.heap.start, u32::MAX))
                .map_err(|e| format!("type {t}, descriptor {which} of 4 GiB: {e}"))?;
        }
    }
    // A chain of more than 4 GiB in total (64 MiB descriptors aliasing the same memory).
    let opts = ClientOpts {
        mem_size: 72 << 20,
        ..ClientOpts::default()
    };
    malformed(env, &opts, |a, sector| {
        let h = hdr(a, VIRTIO_BLK_T_IN, sector);
        let st = a.heap.alloc(1);
        let bulk = a.heap.end;
        let mut descs = vec![Desc::ro(h, 16)];
        descs.extend((0..64).map(|_| Desc::wo(bulk, 64 << 20)));
        descs.push(Desc::wo(st, 1));
        let table = a.heap.put_table(&a.mem, &link(&descs, 0, u16::MAX));
        a.vq.set_desc(&a.mem, 0, Desc::indirect(table, descs.len() as u32));
        (0, Some(st), vec![(st, 1)])
    })
    .map_err(|e| format!("chain over 4 GiB: {e}"))?;
    // Exactly 4 GiB of device-writable bytes, the status being the last of them: a read of
    // 4 GiB - 1 bytes whose used length (data + status) does not fit in a u32.
    malformed(env, &opts, |a, sector| {
        let h = hdr(a, VIRTIO_BLK_T_IN, sector);
        let bulk = a.heap.end;
        let mut descs = vec![Desc::ro(h, 16)];
        descs.extend((0..64).map(|_| Desc::wo(bulk, 64 << 20)));
        let table = a.heap.put_table(&a.mem, &link(&descs, 0, u16::MAX));
        a.vq.set_desc(&a.mem, 0, Desc::indirect(table, descs.len() as u32));
        let st = bulk + (64 << 20) - 1;
        a.mem.write(st, &[pattern(st)]);
        (0, Some(st), vec![])
    })
    .map_err(|e| format!("read of 4 GiB - 1 bytes: {e}"))
}

fn missing_status_byte(env: &mut Env) -> Result<(), String> {
    // A write whose every descriptor is device-readable.
    malformed(env, &ClientOpts::default(), |a, sector| {
        let h = hdr(a, VIRTIO_BLK_T_OUT, sector);
        let d = a.heap.put(&a.mem, &data_pattern(7, 4096));
        a.vq.set_chain(&a.mem, 0, &[Desc::ro(h, 16), Desc::ro(d, 4096)]);
        (0, None, vec![])
    })?;
    // A read with only its header.
    malformed(env, &ClientOpts::default(), |a, sector| {
        let h = hdr(a, VIRTIO_BLK_T_IN, sector);
        a.vq.set_chain(&a.mem, 0, &[Desc::ro(h, 16)]);
        (0, None, vec![])
    })
}

fn status_in_readable_descriptor(env: &mut Env) -> Result<(), String> {
    for t in [VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT] {
        malformed(env, &ClientOpts::default(), |a, sector| {
            let h = hdr(a, t, sector);
            let d = a.heap.put(&a.mem, &data_pattern(9, 512));
            let st = a.heap.alloc(1);
            let data = if t == VIRTIO_BLK_T_IN {
                Desc::wo(d, 512)
            } else {
                Desc::ro(d, 512)
            };
            a.vq.set_chain(&a.mem, 0, &[Desc::ro(h, 16), data, Desc::ro(st, 1)]);
            // The device may not write the readable status byte: it is not "writable".
            let writable = if t == VIRTIO_BLK_T_IN {
                vec![(d, 512)]
            } else {
                vec![]
            };
            (0, Some(st), writable)
        })
        .map_err(|e| format!("type {t}: {e}"))?;
    }
    Ok(())
}

fn header_in_writable_descriptor(env: &mut Env) -> Result<(), String> {
    malformed(env, &ClientOpts::default(), |a, sector| {
        let h = hdr(a, VIRTIO_BLK_T_IN, sector);
        let d = a.heap.alloc(512);
        let st = a.heap.alloc(1);
        a.vq.set_chain(
            &a.mem,
            0,
            &[Desc::wo(h, 16), Desc::wo(d, 512), Desc::wo(st, 1)],
        );
        (0, Some(st), vec![(h, 16), (d, 512), (st, 1)])
    })
}

fn data_in_wrong_direction(env: &mut Env) -> Result<(), String> {
    // A write whose data is device-writable (the device would read guest-writable memory
    // fine, but the request is malformed) and a read whose data is device-readable.
    for t in [VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT] {
        malformed(env, &ClientOpts::default(), |a, sector| {
            let h = hdr(a, t, sector);
            let d = a.heap.put(&a.mem, &data_pattern(11, 512));
            let st = a.heap.alloc(1);
            let data = if t == VIRTIO_BLK_T_IN {
                Desc::ro(d, 512)
            } else {
                Desc::wo(d, 512)
            };
            a.vq.set_chain(&a.mem, 0, &[Desc::ro(h, 16), data, Desc::wo(st, 1)]);
            let mut w = vec![(st, 1)];
            if t == VIRTIO_BLK_T_OUT {
                w.push((d, 512));
            }
            (0, Some(st), w)
        })
        .map_err(|e| format!("type {t}: {e}"))?;
    }
    Ok(())
}

// ---- valid but unusual layouts -----------------------------------------------------------

fn header_split_over_three_descriptors(env: &mut Env) -> Result<(), String> {
    let mut a = env.connect("A")?;
    let sector = env.a_sectors(2);
    let data = data_pattern(31, 1024);
    for t in [VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_IN] {
        a.heap.reset(&a.mem);
        let h = blk_header(t, sector);
        let h1 = a.heap.put(&a.mem, &h[..5]);
        let h2 = a.heap.put(&a.mem, &h[5..11]);
        let h3 = a.heap.put(&a.mem, &h[11..]);
        let d = if t == VIRTIO_BLK_T_OUT {
            a.heap.put(&a.mem, &data)
        } else {
            a.heap.alloc(1024)
        };
        let st = a.heap.alloc(1);
        let dd = if t == VIRTIO_BLK_T_OUT {
            Desc::ro(d, 1024)
        } else {
            Desc::wo(d, 1024)
        };
        let head = a.vq.set_chain(
            &a.mem,
            0,
            &[
                Desc::ro(h1, 5),
                Desc::ro(h2, 6),
                Desc::ro(h3, 5),
                dd,
                Desc::wo(st, 1),
            ],
        );
        let area = submit(&mut a, head);
        let used = if t == VIRTIO_BLK_T_IN { 1025 } else { 1 };
        expect_status(&mut a, head, st, VIRTIO_BLK_S_OK, used)
            .map_err(|e| format!("type {t}: {e}"))?;
        let writable = if t == VIRTIO_BLK_T_IN {
            vec![(d, 1024), (st, 1)]
        } else {
            vec![(st, 1)]
        };
        check_memory(&a, &writable, &area)?;
        if t == VIRTIO_BLK_T_IN {
            ensure(a.mem.read_vec(d, 1024) == data, || {
                "read returned other data than written".into()
            })?;
        }
    }
    Ok(())
}

fn shared_descriptors(env: &mut Env) -> Result<(), String> {
    let mut a = env.connect("A")?;
    let sector = env.a_sectors(8);
    let data = data_pattern(37, 4096);
    // Write: header and data in one readable descriptor, status alone.
    let mut hd = blk_header(VIRTIO_BLK_T_OUT, sector).to_vec();
    hd.extend_from_slice(&data);
    let hd = a.heap.put(&a.mem, &hd);
    let st = a.heap.alloc(1);
    let head =
        a.vq.set_chain(&a.mem, 0, &[Desc::ro(hd, 16 + 4096), Desc::wo(st, 1)]);
    let area = submit(&mut a, head);
    expect_status(&mut a, head, st, VIRTIO_BLK_S_OK, 1).map_err(|e| format!("write: {e}"))?;
    check_memory(&a, &[(st, 1)], &area)?;
    // Read: header readable; data and status share one writable descriptor.
    a.heap.reset(&a.mem);
    let h = hdr(&mut a, VIRTIO_BLK_T_IN, sector);
    let ds = a.heap.alloc(4096 + 1);
    let head =
        a.vq.set_chain(&a.mem, 0, &[Desc::ro(h, 16), Desc::wo(ds, 4097)]);
    let area = submit(&mut a, head);
    expect_status(&mut a, head, ds + 4096, VIRTIO_BLK_S_OK, 4097)
        .map_err(|e| format!("read: {e}"))?;
    check_memory(&a, &[(ds, 4097)], &area)?;
    ensure(a.mem.read_vec(ds, 4096) == data, || {
        "read into a shared data+status descriptor returned other data".into()
    })?;
    // The same read through an indirect table.
    a.heap.reset(&a.mem);
    let h = hdr(&mut a, VIRTIO_BLK_T_IN, sector);
    let ds = a.heap.alloc(4096 + 1);
    let table = a
        .heap
        .put_table(&a.mem, &link(&[Desc::ro(h, 16), Desc::wo(ds, 4097)], 0, 2));
    a.vq.set_desc(&a.mem, 0, Desc::indirect(table, 2));
    let area = submit(&mut a, 0);
    expect_status(&mut a, 0, ds + 4096, VIRTIO_BLK_S_OK, 4097)
        .map_err(|e| format!("indirect read: {e}"))?;
    check_memory(&a, &[(ds, 4097)], &area)?;
    ensure(a.mem.read_vec(ds, 4096) == data, || {
        "indirect read returned other data".into()
    })
}

// ---- the available ring --------------------------------------------------------------------

fn avail_index_far_ahead(env: &mut Env) -> Result<(), String> {
    let mut a = env.connect("A")?;
    still_serves(env, &mut a)?;
    let served = a.vq.avail_idx();
    let idx = served.wrapping_add(5000);
    a.vq.set_avail_idx(&a.mem, idx);
    let area = a.vq.driver_area(&a.mem);
    std::thread::sleep(QUIET);
    ensure(a.vq.pop_used(&a.mem).is_none(), || {
        "the device consumed an available ring whose index is 5000 ahead".into()
    })?;
    check_memory(&a, &[], &area)?;
    // The queue has stopped, but can still be stopped cleanly (and the next connection works).
    let base = a.stop_queue()?;
    ensure(base == served as u32, || {
        format!("GET_VRING_BASE {base}, want {served}")
    })
}

/// A head index >= the queue size names no descriptor: there is nothing to answer (a used
/// element with that id would break the driver's ring). Like QEMU and libvhost-user, the
/// device stops the queue there ("needs reset"): no used element, nothing after it in the
/// ring is fetched, the front-end's error eventfd is signalled, GET_VRING_BASE reports the
/// bad entry's position, and a new connection (a reset) serves again.
fn head_index_out_of_range(env: &mut Env) -> Result<(), String> {
    for head in [16u16, 0xFFFF] {
        let mut a = env.connect("A")?;
        still_serves(env, &mut a)?;
        let _ = a.vq.err.read();
        let base = a.vq.avail_idx();
        a.heap.reset(&a.mem);
        let sector = env.a_sectors(8);
        let h = hdr(&mut a, VIRTIO_BLK_T_IN, sector);
        let d = a.heap.alloc(4096);
        let st = a.heap.alloc(1);
        let good = a.vq.set_chain(
            &a.mem,
            0,
            &[Desc::ro(h, 16), Desc::wo(d, 4096), Desc::wo(st, 1)],
        );
        a.vq.push_many(&a.mem, &[head, good]);
        let area = a.vq.driver_area(&a.mem);
        std::thread::sleep(QUIET);
        if let Some(u) = a.vq.pop_used(&a.mem) {
            return Err(format!(
                "used element {u:?} after head {head} (queue size 16): the queue went on"
            ));
        }
        check_memory(&a, &[], &area)?;
        ensure(a.vq.err.read().is_ok(), || {
            format!("head {head}: the error eventfd was not signalled")
        })?;
        let got = a.stop_queue()?;
        ensure(got == base as u32, || {
            format!("head {head}: GET_VRING_BASE {got}, want {base} (the bad entry)")
        })?;
        drop(a);
        let mut b = env.connect("A")?;
        still_serves(env, &mut b)?;
    }
    Ok(())
}

fn head_reused_while_in_flight(env: &mut Env) -> Result<(), String> {
    let mut a = env.connect("SLOW")?;
    let h = hdr(&mut a, VIRTIO_BLK_T_IN, 0);
    let d = a.heap.alloc(4096);
    let st = a.heap.alloc(1);
    let head = a.vq.set_chain(
        &a.mem,
        0,
        &[Desc::ro(h, 16), Desc::wo(d, 4096), Desc::wo(st, 1)],
    );
    a.vq.push_many(&a.mem, &[head, head]);
    let area = a.vq.driver_area(&a.mem);
    let u =
        a.vq.wait_used(&a.mem, REJECT_TIMEOUT)
            .ok_or("the first request never completed")?;
    ensure(u == Used { id: 0, len: 4097 }, || {
        format!("first completion {u:?}, want id 0 len 4097")
    })?;
    ensure(a.mem.byte(st) == VIRTIO_BLK_S_OK, || {
        format!("status {}", a.mem.byte(st))
    })?;
    // Whatever happens to the duplicate, it is not completed as a second success.
    std::thread::sleep(QUIET);
    if let Some(u) = a.vq.pop_used(&a.mem) {
        ensure(u.len <= 1, || {
            format!("the duplicate head completed: {u:?}")
        })?;
    }
    check_memory(&a, &[(d, 4096), (st, 1)], &area)
}

// ---- request semantics -------------------------------------------------------------------

/// One request with separate header / data / status descriptors; returns (status, used
/// length), and checks memory outside the data (device-writable for reads) and status.
fn one_request(a: &mut Client, t: u32, sector: u64, data_len: u32) -> Result<(u8, u32), String> {
    a.heap.reset(&a.mem);
    let h = hdr(a, t, sector);
    let d = a.heap.put(&a.mem, &data_pattern(sector, data_len as usize));
    let st = a.heap.alloc(1);
    let mut descs = vec![Desc::ro(h, 16)];
    let dev_writes = matches!(t, VIRTIO_BLK_T_IN | VIRTIO_BLK_T_GET_ID);
    if data_len > 0 {
        descs.push(if dev_writes {
            Desc::wo(d, data_len)
        } else {
            Desc::ro(d, data_len)
        });
    }
    descs.push(Desc::wo(st, 1));
    let head = a.vq.set_chain(&a.mem, 0, &descs);
    let area = submit(a, head);
    let u =
        a.vq.wait_used(&a.mem, REJECT_TIMEOUT)
            .ok_or_else(|| format!("type {t} sector {sector}: no completion"))?;
    let mut writable = vec![(st, 1)];
    if dev_writes {
        writable.push((d, data_len as u64));
    }
    check_memory(a, &writable, &area)?;
    Ok((a.mem.byte(st), u.len))
}

fn expect_ioerr(a: &mut Client, t: u32, sector: u64, len: u32) -> Result<(), String> {
    let (st, used) = one_request(a, t, sector, len)?;
    ensure(st == VIRTIO_BLK_S_IOERR && used == 1, || {
        format!("type {t}, sector {sector}, {len} bytes: status {st}, used {used}; want IOERR, 1")
    })
}

fn read_beyond_end_of_disk(env: &mut Env) -> Result<(), String> {
    let mut a = env.connect("A")?;
    for t in [VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT] {
        expect_ioerr(&mut a, t, SECTORS, 512)?;
        expect_ioerr(&mut a, t, SECTORS - 1, 1024)?;
        expect_ioerr(&mut a, t, u64::MAX / 512 + 1, 512)?;
        expect_ioerr(&mut a, t, u64::MAX, 512)?;
    }
    // Discard / write-zeroes ranges past the end.
    for t in [VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_WRITE_ZEROES] {
        for (sector, n) in [(SECTORS - 4, 8u32), (u64::MAX - 1, 8), (0, u32::MAX)] {
            a.heap.reset(&a.mem);
            let h = hdr(&mut a, t, 0);
            let mut seg = [0u8; 16];
            seg[0..8].copy_from_slice(&sector.to_le_bytes());
            seg[8..12].copy_from_slice(&n.to_le_bytes());
            let sg = a.heap.put(&a.mem, &seg);
            let st = a.heap.alloc(1);
            let head = a.vq.set_chain(
                &a.mem,
                0,
                &[Desc::ro(h, 16), Desc::ro(sg, 16), Desc::wo(st, 1)],
            );
            let area = submit(&mut a, head);
            expect_status(&mut a, head, st, VIRTIO_BLK_S_IOERR, 1)
                .map_err(|e| format!("type {t} range ({sector}, {n}): {e}"))?;
            check_memory(&a, &[(st, 1)], &area)?;
        }
    }
    // A read ending exactly at the end succeeds.
    let (st, used) = one_request(&mut a, VIRTIO_BLK_T_IN, SECTORS - 2, 1024)?;
    ensure(st == VIRTIO_BLK_S_OK && used == 1025, || {
        format!("last two sectors: status {st}, used {used}")
    })
}

fn unaligned_on_4k_disk(env: &mut Env) -> Result<(), String> {
    let mut a = env.connect("K4")?;
    for t in [VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT] {
        expect_ioerr(&mut a, t, 1, 4096)?;
        expect_ioerr(&mut a, t, 8, 512)?;
        expect_ioerr(&mut a, t, 7, 8192)?;
    }
    let (st, used) = one_request(&mut a, VIRTIO_BLK_T_IN, 8, 4096)?;
    ensure(st == VIRTIO_BLK_S_OK && used == 4097, || {
        format!("aligned 4 KiB read: status {st}, used {used}")
    })
}

fn unknown_request_type(env: &mut Env) -> Result<(), String> {
    let mut a = env.connect("A")?;
    for t in [2u32, 3, 7, 10, 14, 16, 0x8000_0000, u32::MAX] {
        for len in [0u32, 512] {
            let (st, used) = one_request(&mut a, t, 0, len)?;
            ensure(st == VIRTIO_BLK_S_UNSUPP && used == 1, || {
                format!(
                    "type {t:#x} with {len} data bytes: status {st}, used {used}; want UNSUPP, 1"
                )
            })?;
        }
    }
    Ok(())
}

fn get_id_returns_bdev_name(env: &mut Env) -> Result<(), String> {
    let mut a = env.connect("A")?;
    a.heap.reset(&a.mem);
    let h = hdr(&mut a, VIRTIO_BLK_T_GET_ID, 0);
    let id = a.heap.alloc(20);
    let st = a.heap.alloc(1);
    let head = a.vq.set_chain(
        &a.mem,
        0,
        &[Desc::ro(h, 16), Desc::wo(id, 20), Desc::wo(st, 1)],
    );
    let area = submit(&mut a, head);
    expect_status(&mut a, head, st, VIRTIO_BLK_S_OK, 21)?;
    check_memory(&a, &[(id, 20), (st, 1)], &area)?;
    let got = a.mem.read_vec(id, 20);
    let mut want = b"MallocA".to_vec();
    want.resize(20, 0);
    ensure(got == want, || {
        format!("GET_ID returned {:?}", String::from_utf8_lossy(&got))
    })
}

fn write_on_readonly_controller(env: &mut Env) -> Result<(), String> {
    let mut a = env.connect("RO")?;
    ensure(a.readonly(), || "RO does not offer VIRTIO_BLK_F_RO".into())?;
    let before = read_sectors(&mut a, 0, 8)?;
    expect_ioerr(&mut a, VIRTIO_BLK_T_OUT, 0, 4096)?;
    for t in [VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_WRITE_ZEROES] {
        a.heap.reset(&a.mem);
        let h = hdr(&mut a, t, 0);
        let mut seg = [0u8; 16];
        seg[8..12].copy_from_slice(&8u32.to_le_bytes());
        let sg = a.heap.put(&a.mem, &seg);
        let st = a.heap.alloc(1);
        let head = a.vq.set_chain(
            &a.mem,
            0,
            &[Desc::ro(h, 16), Desc::ro(sg, 16), Desc::wo(st, 1)],
        );
        let area = submit(&mut a, head);
        expect_status(&mut a, head, st, VIRTIO_BLK_S_IOERR, 1)
            .map_err(|e| format!("type {t} on a read-only export: {e}"))?;
        check_memory(&a, &[(st, 1)], &area)?;
    }
    ensure(read_sectors(&mut a, 0, 8)? == before, || {
        "a write on a read-only controller changed the disk".into()
    })
}

fn bad_ring_setup(env: &mut Env) -> Result<(), String> {
    // Ring addresses outside every region, and invalid sizes: refused, connection lives on.
    let mut a = env.connect("A")?;
    a.stop_queue()?;
    for num in [0u16, 3, 2048] {
        ensure(a.fe_set_vring_num(num).is_err(), || {
            format!("SET_VRING_NUM {num} accepted")
        })?;
    }
    let bad = VringAddrs {
        desc: a.mem.user_addr() + a.mem.size() as u64 + 4096,
        avail: a.mem.vva(a.vq.avail),
        used: a.mem.vva(a.vq.used),
    };
    a.fe_set_vring_num(16)
        .map_err(|e| format!("SET_VRING_NUM 16: {e}"))?;
    let started = a.fe_start_with_addrs(&bad);
    ensure(started.is_err(), || {
        "a ring whose descriptor table lies outside guest memory was started".into()
    })?;
    // Descriptor table running off the end of guest memory.
    let edge = VringAddrs {
        desc: a.mem.vva(a.mem.end() - 64),
        avail: a.mem.vva(a.vq.avail),
        used: a.mem.vva(a.vq.used),
    };
    a.fe_set_vring_enable(false)?;
    ensure(a.fe_start_with_addrs(&edge).is_err(), || {
        "a ring whose descriptor table runs past guest memory was started".into()
    })?;
    Ok(())
}

// ---- memory tables and connections -----------------------------------------------------

fn memory_region_past_end_of_file(env: &mut Env) -> Result<(), String> {
    // A (buggy) front-end describes a region twice as large as the memfd behind it. Touching
    // the part past the end of the file would raise SIGBUS in plexd: the table must be
    // refused, or requests pointing there must fail without plexd touching it.
    let mut a = env.connect("A")?;
    let size = a.mem.size() as u64;
    let accepted = a.set_mem_table(a.mem.user_addr(), 2 * size).is_ok();
    let sector = env.a_sectors(8);
    a.heap.reset(&a.mem);
    let h = hdr(&mut a, VIRTIO_BLK_T_IN, sector);
    let st = a.heap.alloc(1);
    let past_eof = a.mem.end() + 4096;
    let head = a.vq.set_chain(
        &a.mem,
        0,
        &[Desc::ro(h, 16), Desc::wo(past_eof, 4096), Desc::wo(st, 1)],
    );
    let area = submit(&mut a, head);
    let r = expect_rejected(&mut a, head, Some(st), &[(st, 1)], &area);
    env.alive()?;
    r.map_err(|e| {
        format!(
            "(table {}): {e}",
            if accepted { "accepted" } else { "refused" }
        )
    })
}

fn inflight_area_past_end_of_file(env: &mut Env) -> Result<(), String> {
    // A (buggy) front-end hands back an inflight area (SET_INFLIGHT_FD) whose mmap_size is
    // larger than the file behind it. plexd reads and writes the area as soon as the ring
    // starts: it must refuse the area rather than touch pages past the end of the file.
    use vhost::vhost_user::message::{VhostUserInflight, VhostUserProtocolFeatures};
    use vhost::vhost_user::VhostUserFrontend;
    // 256 entries: the area spans two pages, so its second page lies wholly past the end of
    // the file (the first page of a short file is readable).
    let opts = ClientOpts {
        extra_protocol: VhostUserProtocolFeatures::INFLIGHT_SHMFD,
        queue_size: 256,
        ..ClientOpts::default()
    };
    let mut a = env.connect_with("A", &opts)?;
    ensure(
        a.protocol
            .contains(VhostUserProtocolFeatures::INFLIGHT_SHMFD),
        || "INFLIGHT_SHMFD not negotiated".into(),
    )?;
    a.stop_queue()?;
    let small = tempfile::tempfile().map_err(|e| format!("temp file: {e}"))?;
    small
        .set_len(64)
        .map_err(|e| format!("size temp file: {e}"))?;
    let area = VhostUserInflight {
        mmap_size: 8192,
        mmap_offset: 0,
        num_queues: 1,
        queue_size: a.vq.size,
    };
    use std::os::fd::AsRawFd;
    let refused = a.fe.set_inflight_fd(&area, small.as_raw_fd()).is_err();
    // Start the ring: with the area accepted, plexd recovers from it and marks requests in it.
    let started = a.start_queue();
    env.alive()?;
    ensure(refused, || {
        "SET_INFLIGHT_FD with an area larger than its file was accepted".into()
    })?;
    started?;
    still_serves(env, &mut a)
}

/// Writes in flight.
struct InFlight {
    /// Status bytes of the writes.
    statuses: Vec<(u64, u64)>,
    /// Every buffer the device may write (statuses and the fence's).
    writable: Vec<(u64, u64)>,
    /// Writes completed before the fence.
    done: usize,
}

/// Pushes `n` writes of 4 KiB (descriptor triples 0.., sectors `sector`, +8, ...) and a
/// GET_ID fence in one publication, and waits for the fence: requests are fetched in ring
/// order, so once it completed every write has been fetched and is in flight (the SLOW bdev
/// holds each for 20 ms).
fn push_writes(a: &mut Client, n: u16, sector: u64, seed: u64) -> Result<InFlight, String> {
    let mut f = InFlight {
        statuses: Vec::new(),
        writable: Vec::new(),
        done: 0,
    };
    let mut heads = Vec::new();
    for i in 0..n {
        let s = sector + i as u64 * 8;
        let h = hdr(a, VIRTIO_BLK_T_OUT, s);
        let d = a.heap.put(&a.mem, &data_pattern(seed + i as u64, 4096));
        let st = a.heap.alloc(1);
        heads.push(a.vq.set_chain(
            &a.mem,
            i * 3,
            &[Desc::ro(h, 16), Desc::ro(d, 4096), Desc::wo(st, 1)],
        ));
        f.statuses.push((st, 1));
    }
    let h = hdr(a, VIRTIO_BLK_T_GET_ID, 0);
    let id = a.heap.alloc(20);
    let st = a.heap.alloc(1);
    let fence = a.vq.set_chain(
        &a.mem,
        n * 3,
        &[Desc::ro(h, 16), Desc::wo(id, 20), Desc::wo(st, 1)],
    );
    heads.push(fence);
    f.writable = f.statuses.clone();
    f.writable.extend([(id, 20), (st, 1)]);
    a.vq.push_many(&a.mem, &heads);
    loop {
        let u =
            a.vq.wait_used(&a.mem, Duration::from_secs(10))
                .ok_or("the GET_ID fence never completed")?;
        if u.id == fence as u32 {
            return Ok(f);
        }
        ensure(u.len == 1 && u.id % 3 == 0, || format!("completion {u:?}"))?;
        f.done += 1;
    }
}

fn wait_all_ok(a: &mut Client, f: &InFlight) -> Result<(), String> {
    for _ in f.done..f.statuses.len() {
        let u =
            a.vq.wait_used(&a.mem, Duration::from_secs(10))
                .ok_or("a request in flight never completed")?;
        ensure(u.len == 1 && u.id % 3 == 0, || format!("completion {u:?}"))?;
    }
    for (st, _) in &f.statuses {
        let b = a.mem.byte(*st);
        ensure(b == VIRTIO_BLK_S_OK, || format!("status {b:#04x}"))?;
    }
    Ok(())
}

fn verify_writes(a: &mut Client, n: u16, sector: u64, seed: u64) -> Result<(), String> {
    for i in 0..n {
        let got = read_sectors(a, sector + i as u64 * 8, 8)?;
        ensure(got == data_pattern(seed + i as u64, 4096), || {
            format!("write {i} did not land")
        })?;
    }
    Ok(())
}

fn memory_table_replaced_with_io_in_flight(env: &mut Env) -> Result<(), String> {
    let opts = ClientOpts {
        queue_size: 64,
        ..ClientOpts::default()
    };
    let mut a = env.connect_with("SLOW", &opts)?;
    // Same memory, mapped again at another front-end address, while 16 writes are in flight.
    for round in 0..3u64 {
        a.heap.reset(&a.mem);
        let sector = 1024 * round;
        let f = push_writes(&mut a, 16, sector, 100 * round)?;
        let user = a.mem.remap();
        a.set_mem_table(user, a.mem.size() as u64)?;
        wait_all_ok(&mut a, &f).map_err(|e| format!("round {round}: {e}"))?;
        a.heap.check(&a.mem, &f.writable)?;
        verify_writes(&mut a, 16, sector, 100 * round)?;
    }
    // A smaller table (the heap's second half removed) while writes from there are in
    // flight: they complete (the old mapping stays alive until they do); new requests using
    // removed memory are refused; requests inside it still work.
    a.heap.reset(&a.mem);
    let half = (a.heap.start + a.heap.end) / 2;
    while a.heap.alloc(0) < half {}
    let f = push_writes(&mut a, 8, 4096, 900)?;
    a.set_mem_table(a.mem.user_addr(), half - a.mem.start())?;
    wait_all_ok(&mut a, &f).map_err(|e| format!("after shrinking: {e}"))?;
    let h = hdr(&mut a, VIRTIO_BLK_T_IN, 4096);
    let d = a.heap.alloc(4096);
    let s2 = a.heap.alloc(1);
    let head = a.vq.set_chain(
        &a.mem,
        0,
        &[Desc::ro(h, 16), Desc::wo(d, 4096), Desc::wo(s2, 1)],
    );
    let area = submit(&mut a, head);
    expect_rejected(&mut a, head, Some(s2), &f.writable, &area)
        .map_err(|e| format!("request in removed memory: {e}"))?;
    verify_writes(&mut a, 8, 4096, 900)?;
    a.set_mem_table(a.mem.user_addr(), a.mem.size() as u64)?;
    verify_writes(&mut a, 8, 4096, 900)
}

fn disconnect_with_io_in_flight(env: &mut Env) -> Result<(), String> {
    let opts = ClientOpts {
        queue_size: 64,
        ..ClientOpts::default()
    };
    let a = env.connect_with("SLOW", &opts)?;
    let (code, _) = env
        .plexd
        .call_err("vhost_delete_controller", json!({"ctrlr": "SLOW"}));
    ensure(code == -16, || {
        format!("delete while connected: code {code}, want -16 (EBUSY)")
    })?;
    let mut a = a;
    let f = push_writes(&mut a, 16, 8192, 500)?;
    // Close the connection while the writes are in flight; keep the guest memory.
    let Client { fe, mem, heap, .. } = a;
    drop(fe);
    env.wait_disconnected("SLOW")?;
    heap.check(&mem, &f.writable)?;
    // Reconnecting works and serves; delete is refused while connected.
    let mut a = env.connect_with("SLOW", &opts)?;
    a.write_read_check(8192 + 16 * 8, &data_pattern(77, 4096))?;
    let (code, _) = env
        .plexd
        .call_err("vhost_delete_controller", json!({"ctrlr": "SLOW"}));
    ensure(code == -16, || format!("delete while connected: {code}"))?;
    drop(a);
    env.wait_disconnected("SLOW")?;
    env.plexd
        .client()
        .call("vhost_delete_controller", Some(json!({"ctrlr": "SLOW"})))
        .map_err(|e| format!("delete after disconnect: {e}"))?;
    ensure(!env.sock("SLOW").exists(), || "socket left behind".into())?;
    // The bdev's claim was released: it can be exported again.
    env.plexd
        .client()
        .call(
            "vhost_create_blk_controller",
            Some(json!({"ctrlr": "SLOW2", "dev_name": "SlowS"})),
        )
        .map_err(|e| format!("re-export after delete: {e}"))?;
    let mut a = env.connect_with("SLOW2", &opts)?;
    a.write_read_check(0, &data_pattern(78, 4096))
}

type Case = fn(&mut Env) -> Result<(), String>;

#[test]
fn hostile_guest_cannot_hurt_plexd_or_other_devices() {
    let cases: &[(&str, Case)] = &[
        ("descriptor loop back to the header", loop_back_to_header),
        ("descriptor loop on the status buffer", loop_on_status),
        ("chain longer than the queue", chain_longer_than_queue),
        (
            "indirect table over 1024 entries",
            indirect_longer_than_max_segments,
        ),
        ("nested indirect tables", nested_indirect),
        ("indirect table with a loop", indirect_with_loop),
        ("next index past the queue", next_index_out_of_range),
        (
            "indirect table outside memory / bad length",
            indirect_table_outside_memory,
        ),
        (
            "addresses outside guest memory",
            addresses_outside_guest_memory,
        ),
        ("lengths that overflow", lengths_that_overflow),
        ("missing status byte", missing_status_byte),
        (
            "status in a readable descriptor",
            status_in_readable_descriptor,
        ),
        (
            "header in a writable descriptor",
            header_in_writable_descriptor,
        ),
        ("data in the wrong direction", data_in_wrong_direction),
        (
            "header split over 3 descriptors (valid)",
            header_split_over_three_descriptors,
        ),
        (
            "data and status sharing a descriptor (valid)",
            shared_descriptors,
        ),
        ("avail index 5000 ahead", avail_index_far_ahead),
        ("head index >= queue size", head_index_out_of_range),
        ("head reused while in flight", head_reused_while_in_flight),
        (
            "read/write beyond the end of the disk",
            read_beyond_end_of_disk,
        ),
        ("unaligned on a 4096-byte-block disk", unaligned_on_4k_disk),
        ("unknown request types", unknown_request_type),
        ("GET_ID", get_id_returns_bdev_name),
        (
            "write on a read-only controller",
            write_on_readonly_controller,
        ),
        ("bad ring set-up", bad_ring_setup),
        (
            "memory region past the end of its file",
            memory_region_past_end_of_file,
        ),
        (
            "inflight area past the end of its file",
            inflight_area_past_end_of_file,
        ),
        (
            "memory table replaced with I/O in flight",
            memory_table_replaced_with_io_in_flight,
        ),
        (
            "disconnect with I/O in flight, delete",
            disconnect_with_io_in_flight,
        ),
    ];
    let start = Instant::now();
    let mut env = Env::start();
    let mut failures = Vec::new();
    for (name, case) in cases {
        let t = Instant::now();
        let r = case(&mut env);
        let w = env.witness();
        let verdict = match (&r, &w) {
            (Ok(()), Ok(())) => "ok".to_string(),
            (Err(e), Ok(())) => format!("FAILED: {e}"),
            (Ok(()), Err(e)) => format!("FAILED (witness): {e}"),
            (Err(e), Err(w)) => format!("FAILED: {e}; witness: {w}"),
        };
        eprintln!("{name:<48} {:>6} ms  {verdict}", t.elapsed().as_millis());
        if r.is_err() || w.is_err() {
            failures.push(format!("{name}: {verdict}"));
        }
        if w.is_err() {
            // plexd no longer serves other devices: the remaining cases would only time out.
            // Stop it and show why (a panic message, if any).
            let _ = env.plexd.child.kill();
            let _ = env.plexd.child.wait();
            let log = env.plexd.stderr();
            let lines: Vec<&str> = log.lines().collect();
            let why: Vec<&str> = (0..lines.len())
                .filter(|&i| {
                    lines[i].contains("panicked")
                        || lines[i].contains("ERROR")
                        || (i > 0 && lines[i - 1].contains("panicked"))
                })
                .take(6)
                .map(|i| lines[i])
                .collect();
            failures.push(format!(
                "plexd stopped serving; remaining cases skipped. Its log says:\n  {}",
                why.join("\n  ")
            ));
            break;
        }
    }
    eprintln!("{} cases in {:?}", cases.len(), start.elapsed());
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A front-end that shrinks the shared memfd after SET_MEM_TABLE must not kill plexd when a
/// request points past the new end of the file (QEMU seals its memfds, but hugetlbfs files
/// and libblkio buffers are not sealed): the request still comes back, plexd lives on and
/// other controllers keep serving.
#[test]
fn front_end_truncating_guest_memory_does_not_kill_plexd() {
    let env = Env::start();
    let mut a = env.connect("A").expect("connect");
    let size = a.mem.size() as u64;
    a.mem.truncate(size * 3 / 4);
    let h = hdr(&mut a, VIRTIO_BLK_T_IN, 0);
    let st = a.heap.alloc(1);
    let past = a.mem.start() + size * 7 / 8;
    let head = a.vq.set_chain(
        &a.mem,
        0,
        &[Desc::ro(h, 16), Desc::wo(past, 4096), Desc::wo(st, 1)],
    );
    a.vq.push(&a.mem, head);
    let used = a.vq.wait_used(&a.mem, REJECT_TIMEOUT);
    let mut env = env;
    env.alive().expect("plexd survives a truncated memfd");
    assert_eq!(
        used.map(|u| u.id),
        Some(head as u32),
        "the request into truncated memory never came back"
    );
    // The status byte is in live memory (the heap is below the new end): nothing was read
    // into the lost buffer, so the guest must not be told "success".
    let status = a.mem.byte(st);
    assert_eq!(
        status, VIRTIO_BLK_S_IOERR,
        "a read into truncated guest memory completed with status {status}, want IOERR"
    );
    // Later requests through the poisoned memory table fail too, until a new table.
    let h2 = hdr(&mut a, VIRTIO_BLK_T_IN, 0);
    let d2 = a.heap.alloc(512);
    let st2 = a.heap.alloc(1);
    let head2 = a.vq.set_chain(
        &a.mem,
        0,
        &[Desc::ro(h2, 16), Desc::wo(d2, 512), Desc::wo(st2, 1)],
    );
    a.vq.push(&a.mem, head2);
    let used2 = a.vq.wait_used(&a.mem, REJECT_TIMEOUT);
    if let Some(u) = used2 {
        assert_eq!(u.id, head2 as u32);
        let status2 = a.mem.byte(st2);
        assert_eq!(
            status2, VIRTIO_BLK_S_IOERR,
            "a request through poisoned guest memory completed with status {status2}, want IOERR"
        );
    }
    env.witness().expect("B still serves");
    // The controller serves a new connection.
    drop(a);
    env.wait_disconnected("A").expect("A disconnects");
    let mut a2 = env.connect("A").expect("reconnect");
    still_serves(&mut env, &mut a2).expect("A serves a new connection");
    // Stop plexd to read its whole log.
    let _ = env.plexd.child.kill();
    let _ = env.plexd.child.wait();
    let log = env.plexd.stderr();
    assert!(
        log.contains("shrank shared memory"),
        "the fault was not logged"
    );
}
