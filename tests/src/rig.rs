//! A plexd on file disks that outlive it: the rig of the restart and crash tests.
//!
//! [`Rig`] makes sparse 64 MiB files in a temporary directory, each an aio bdev of the same name
//! in a bdev config, and starts plexd on that config (it imports the groups it finds on the
//! disks), so a test can kill plexd (`Plexd::stop(libc::SIGKILL)`), start it again on the same
//! files, with or without some of them, and look at what came back. Volumes are exported over
//! vhost-user-blk and driven with [`crate::vhost_client::Client`]; the pattern helpers write
//! distinct data and check it reads back, and the listing helpers read `volume_list`,
//! `task_list` and the configuration copies on the disk files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::vhost_client::{
    data_pattern, Client, ClientOpts, VIRTIO_BLK_S_OK, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
};
use crate::{write_bdev_config, Plexd, PlexdOpts};

/// Bytes of each disk file (sparse).
pub const DISK_BYTES: u64 = 64 << 20;
/// The disks' block size.
pub const SECTOR: u64 = 512;
/// Bytes per [`write_patterns`] write: crosses several 64 KiB stripe units.
pub const CHUNK: usize = 192 << 10;

/// Files, sockets and the config that recreates the file bdevs.
pub struct Rig {
    /// The temporary directory: disk files, `vhost/` sockets, configs.
    pub dir: tempfile::TempDir,
    /// The bdev config with every disk.
    pub cfg: PathBuf,
    /// Each disk's `bdev_aio_create` entry, in the order given to [`Rig::new`].
    entries: Vec<(String, Value)>,
}

impl Rig {
    /// `disks` files of [`DISK_BYTES`], each an aio bdev of the same name in the config.
    pub fn new(disks: &[&str]) -> Rig {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("vhost")).expect("vhost socket dir");
        let mut entries = Vec::new();
        for d in disks {
            let f = dir.path().join(format!("{d}.img"));
            std::fs::File::create(&f)
                .and_then(|h| h.set_len(DISK_BYTES))
                .expect("backing file");
            entries.push((
                d.to_string(),
                json!({"method": "bdev_aio_create",
                    "params": {"name": d, "filename": f, "block_size": 512}}),
            ));
        }
        let all: Vec<Value> = entries.iter().map(|(_, e)| e.clone()).collect();
        let cfg = write_bdev_config(dir.path(), "bdevs.json", &all);
        Rig { dir, cfg, entries }
    }

    /// The directory of the vhost-user sockets.
    pub fn sockets(&self) -> PathBuf {
        self.dir.path().join("vhost")
    }

    /// The backing file of `disk`.
    pub fn file(&self, disk: &str) -> PathBuf {
        self.dir.path().join(format!("{disk}.img"))
    }

    /// plexd with the bdev config (it imports the groups it finds on the disks).
    pub fn start(&self) -> Plexd {
        self.start_with_config(&self.cfg)
    }

    /// plexd with the bdev config minus the disks in `missing`: they are not there at start-up
    /// (as if pulled while plexd was down), their files untouched.
    pub fn start_without(&self, missing: &[&str]) -> Plexd {
        let some: Vec<Value> = self
            .entries
            .iter()
            .filter(|(d, _)| !missing.contains(&d.as_str()))
            .map(|(_, e)| e.clone())
            .collect();
        assert_eq!(
            some.len() + missing.len(),
            self.entries.len(),
            "start_without({missing:?}): a name that is not a disk of the rig"
        );
        let cfg = write_bdev_config(self.dir.path(), "bdevs-some.json", &some);
        self.start_with_config(&cfg)
    }

    /// plexd with the config `cfg`.
    pub fn start_with_config(&self, cfg: &Path) -> Plexd {
        Plexd::start_with(PlexdOpts {
            args: vec![
                "-S".into(),
                self.sockets().display().to_string(),
                "--config".into(),
                cfg.display().to_string(),
            ],
            ..Default::default()
        })
    }

    /// plexd without a config: no bdevs, so nothing to import at start-up.
    pub fn start_bare(&self) -> Plexd {
        Plexd::start_args(&["-S", &self.sockets().display().to_string()])
    }

    /// Exports `bdev` on controller `ctrlr` and connects a client to it.
    pub fn export(&self, plexd: &Plexd, ctrlr: &str, bdev: &str) -> Client {
        plexd.call(
            "vhost_create_blk_controller",
            json!({"ctrlr": ctrlr, "dev_name": bdev}),
        );
        self.connect(ctrlr)
    }

    /// Disconnects `c` from controller `ctrlr`, waits until plexd has seen the disconnect and
    /// deletes the controller (which releases the bdev).
    pub fn unexport(&self, plexd: &Plexd, ctrlr: &str, c: Client) {
        drop(c);
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            let v = plexd.call("vhost_get_controllers", json!({"name": ctrlr}));
            if v[0]["sessions"].as_array().is_none_or(Vec::is_empty) {
                break;
            }
            assert!(
                Instant::now() < end,
                "{ctrlr} still has a session 20 s after the client left: {v}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        plexd.call("vhost_delete_controller", json!({"ctrlr": ctrlr}));
    }

    /// A client on the existing controller `ctrlr`.
    pub fn connect(&self, ctrlr: &str) -> Client {
        Client::connect(&self.sockets().join(ctrlr), &ClientOpts::default())
            .unwrap_or_else(|e| panic!("vhost client on {ctrlr}: {e}"))
    }
}

/// What a test wrote to one volume: (sector, bytes).
pub type Written = Vec<(u64, Vec<u8>)>;

/// Writes distinct data (from `seed`) at the start, the end and two unaligned places of a
/// volume of `bytes`, checking each write completes.
pub fn write_patterns(c: &mut Client, seed: u64, bytes: u64) -> Written {
    let sectors = bytes / SECTOR;
    let chunk = CHUNK as u64 / SECTOR;
    let at = [0, sectors / 3 + 7, sectors / 2 + 129, sectors - chunk];
    let mut out = Vec::new();
    for (i, s) in at.into_iter().enumerate() {
        let mut data = data_pattern(seed * 16 + i as u64, CHUNK);
        let (st, _) = c
            .io(VIRTIO_BLK_T_OUT, s, &mut data)
            .unwrap_or_else(|e| panic!("write at sector {s}: {e}"));
        assert_eq!(st, VIRTIO_BLK_S_OK, "write at sector {s}: status {st}");
        out.push((s, data));
    }
    out
}

/// Reads back what [`write_patterns`] wrote and asserts it is there.
pub fn check_patterns(c: &mut Client, what: &str, written: &Written) {
    for (s, data) in written {
        let mut r = vec![0u8; data.len()];
        let (st, _) = c
            .io(VIRTIO_BLK_T_IN, *s, &mut r)
            .unwrap_or_else(|e| panic!("{what}: read at sector {s}: {e}"));
        assert_eq!(
            st, VIRTIO_BLK_S_OK,
            "{what}: read at sector {s}: status {st}"
        );
        assert!(
            &r == data,
            "{what}: sector {s}: the data read back is not what was written"
        );
    }
}

/// `volume_list` by volume name, without the fields a restart may legitimately change (the
/// volume's state and resync checkpoint).
pub fn volumes_sans_state(plexd: &Plexd, dg: &str) -> BTreeMap<String, Value> {
    let list = plexd.call("volume_list", json!({"dg": dg}));
    list.as_array()
        .unwrap_or_else(|| panic!("volume_list is not an array: {list}"))
        .iter()
        .map(|v| {
            let mut v = v.clone();
            let o = v.as_object_mut().expect("volume object");
            o.remove("state");
            o.remove("resync_offset");
            (o["name"].as_str().expect("name").to_string(), v)
        })
        .collect()
}

/// Each volume's `state` in group `dg`, by volume name.
pub fn volume_states(plexd: &Plexd, dg: &str) -> BTreeMap<String, String> {
    let list = plexd.call("volume_list", json!({"dg": dg}));
    list.as_array()
        .expect("volume_list array")
        .iter()
        .map(|v| {
            (
                v["name"].as_str().expect("name").to_string(),
                v["state"].as_str().expect("state").to_string(),
            )
        })
        .collect()
}

/// The ids of the tasks of `kind` (`task_list`), by volume name.
pub fn tasks_of(plexd: &Plexd, kind: &str) -> BTreeMap<String, u64> {
    let list = plexd.call("task_list", json!({}));
    list.as_array()
        .unwrap_or_else(|| panic!("task_list is not an array: {list}"))
        .iter()
        .filter(|t| t["kind"] == kind)
        .map(|t| {
            (
                t["volume"].as_str().expect("task volume").to_string(),
                t["id"].as_u64().expect("task id"),
            )
        })
        .collect()
}

/// The newest configuration copy (highest `seq`) on a disk file, parsed
/// (docs/on-disk-format.md: two 1.5 MiB slots from 1 MiB, a 4096-byte header, JSON payload).
pub fn newest_config_on_disk(file: &Path) -> Value {
    let bytes = std::fs::read(file).expect("read disk file");
    let mut best: Option<(u64, Value)> = None;
    for slot in 0..2u64 {
        let off = (1 << 20) + slot * (3 << 19);
        let h = &bytes[off as usize..off as usize + 4096];
        if &h[0..8] != b"PLEXDCF\0" {
            continue;
        }
        let seq = u64::from_le_bytes(h[32..40].try_into().expect("seq"));
        let len = u64::from_le_bytes(h[56..64].try_into().expect("payload_len")) as usize;
        let start = off as usize + 4096;
        let cfg: Value = serde_json::from_slice(&bytes[start..start + len])
            .unwrap_or_else(|e| panic!("config payload of {} slot {slot}: {e}", file.display()));
        if best.as_ref().is_none_or(|(s, _)| seq > *s) {
            best = Some((seq, cfg));
        }
    }
    best.unwrap_or_else(|| panic!("no configuration copy on {}", file.display()))
        .1
}
