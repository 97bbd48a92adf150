//! Connect / ADD_MEM_REG / read rounds across SIGKILL and restart of the real plexd, as the
//! soak that found issue 10 item 12 ran them: a mirror volume over two uring file bdevs,
//! exported over vhost-user-blk; each round kills plexd (the volume is ACTIVE, so the next
//! start runs a crash resync), restarts it with the same config, connects a fresh front-end
//! that maps its data buffer with ADD_MEM_REG after the queue started, and reads 64 KiB into
//! it at once, while the resync keeps the single reactor busy. Every read must complete with
//! status OK, the full used length and the data written before the first kill.

use std::path::Path;

use plexd_tests::vhost_client::*;
use plexd_tests::Plexd;
use serde_json::json;

const DISK: u64 = 32 << 20;
const VOL: u64 = 16 << 20;
const CHUNK: usize = 65536;
const CHUNKS: u64 = 16;

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn config(dir: &Path, with_export: bool) -> std::path::PathBuf {
    let bdevs: Vec<serde_json::Value> = (0..2)
        .map(|i| {
            json!({"method": "bdev_uring_create", "params": {
                "name": format!("U{i}"),
                "filename": path_str(&dir.join(format!("u{i}.img"))),
                "block_size": 512}})
        })
        .collect();
    let mut subsystems = vec![json!({"subsystem": "bdev", "config": bdevs})];
    if with_export {
        subsystems.push(json!({"subsystem": "vhost_blk", "config": [
            {"method": "vhost_create_blk_controller",
             "params": {"ctrlr": "soak", "dev_name": "dg1/v"}}]}));
    }
    let path = dir.join(if with_export {
        "full.json"
    } else {
        "bdevs.json"
    });
    std::fs::write(
        &path,
        serde_json::to_vec_pretty(&json!({"subsystems": subsystems})).expect("json"),
    )
    .expect("write config");
    path
}

fn opts() -> ClientOpts {
    ClientOpts {
        mem_size: 2 << 20,
        ..ClientOpts::default()
    }
}

/// One round's read: ADD_MEM_REG, then at once a 64 KiB read of chunk `i` into the region.
fn read_round(c: &mut Client, i: u64, round: u32) -> Result<Vec<u8>, String> {
    let gpa = c.mem.end() + (1 << 20) + (round as u64 % 8) * (1 << 20);
    let region = GuestMem::new_at(128 << 10, gpa);
    c.add_mem_region(&region)?;
    let mem = c.mem.clone();
    region.fill(region.start(), CHUNK, 0);
    let h = c
        .heap
        .put(&mem, &blk_header(VIRTIO_BLK_T_IN, i * CHUNK as u64 / 512));
    let s = c.heap.alloc(1);
    mem.write(s, &[VIRTIO_BLK_S_OK]);
    let head = c.vq.set_chain(
        &mem,
        0,
        &[
            Desc::ro(h, 16),
            Desc::wo(region.start(), CHUNK as u32),
            Desc::wo(s, 1),
        ],
    );
    c.vq.push(&mem, head);
    let u = c.vq.wait_used(&mem, IO_TIMEOUT);
    let status = mem.byte(s);
    let want = Some(Used {
        id: head as u32,
        len: CHUNK as u32 + 1,
    });
    if u != want || status != VIRTIO_BLK_S_OK {
        return Err(format!("completion {u:?} (want {want:?}), status {status}"));
    }
    Ok(region.read_vec(region.start(), CHUNK))
}

fn rounds(n: u32) {
    let dir = tempfile::tempdir().expect("tempdir");
    let sockets = tempfile::tempdir().expect("socket dir");
    for i in 0..2 {
        let f = std::fs::File::create(dir.path().join(format!("u{i}.img"))).expect("disk file");
        f.set_len(DISK).expect("size disk file");
    }
    let data: Vec<Vec<u8>> = (0..CHUNKS).map(|i| data_pattern(500 + i, CHUNK)).collect();
    {
        let bdevs = config(dir.path(), false);
        let mut p = Plexd::start_args(&[
            "-m",
            "0x1",
            "-S",
            path_str(sockets.path()),
            "--config",
            path_str(&bdevs),
        ]);
        p.call("dg_create", json!({"name": "dg1", "disks": ["U0", "U1"]}));
        p.call(
            "volume_create",
            json!({"dg": "dg1", "name": "v", "size": VOL, "layout": "mirror", "nmirror": 2}),
        );
        p.call(
            "vhost_create_blk_controller",
            json!({"ctrlr": "soak", "dev_name": "dg1/v"}),
        );
        let mut c = Client::connect(&sockets.path().join("soak"), &opts()).expect("connect");
        for (i, d) in data.iter().enumerate() {
            c.write_read_check(i as u64 * CHUNK as u64 / 512, d)
                .expect("write the data");
        }
        drop(c);
        // Killed, not stopped: the volume stays ACTIVE and the next start resyncs it.
        p.stop(libc::SIGKILL);
    }
    let full = config(dir.path(), true);
    for round in 0..n {
        let mut p = Plexd::start_args(&[
            "-m",
            "0x1",
            "-S",
            path_str(sockets.path()),
            "--config",
            path_str(&full),
        ]);
        let i = round as u64 % CHUNKS;
        let r = Client::connect(&sockets.path().join("soak"), &opts())
            .and_then(|mut c| read_round(&mut c, i, round));
        let verdict = match r {
            Ok(got) if got == data[i as usize] => Ok(()),
            Ok(got) => Err(format!(
                "chunk {i} read back {}",
                if got.iter().all(|&b| b == 0) {
                    "all zero"
                } else {
                    "other data"
                }
            )),
            Err(e) => Err(e),
        };
        p.stop(libc::SIGKILL);
        if let Err(e) = verdict {
            panic!("round {round}: {e}\nplexd log:\n{}", p.stderr());
        }
    }
}

/// Short version (runs by default): 40 kill / restart / map / read rounds (a few seconds).
#[test]
fn memory_region_read_across_sigkill_restarts() {
    rounds(40);
}

/// Long soak: `PLEXD_SOAK_ROUNDS` rounds (default 1000).
#[test]
#[ignore = "soak: several minutes"]
fn memory_region_read_across_sigkill_restarts_long() {
    let n = std::env::var("PLEXD_SOAK_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    rounds(n);
}
