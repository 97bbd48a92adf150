//! The object model as stored in a disk group's configuration database: VM disks, subdisks,
//! plexes and volumes with their states (after VxVM). Lengths and offsets are in blocks of the
//! group's block size; subdisk offsets are relative to the disk's public region.
//!
//! This is the JSON payload of every config copy (see `docs/on-disk-format.md`), so field
//! names are part of the on-disk format: add fields with `#[serde(default)]`, never rename.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The most plexes a volume may have.
pub const MAX_PLEXES: usize = 32;

/// Default stripe unit: 64 KiB.
pub const DEFAULT_STRIPE_UNIT_BYTES: u64 = 64 * 1024;

/// Default stripe unit of a RAID-5 plex: 16 KiB, as in VxVM.
pub const DEFAULT_RAID5_STRIPE_UNIT_BYTES: u64 = 16 * 1024;

/// A plex's administrative state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum PlexState {
    /// Never written: contents undefined.
    Empty,
    /// In sync and the volume was stopped cleanly.
    Clean,
    /// In sync (or being kept in sync) while the volume runs.
    Active,
    /// Missed writes: must be resynchronised before it serves reads.
    Stale,
    /// Taken offline by the administrator.
    Offline,
    /// Detached after an I/O failure.
    Iofail,
    /// A log-only plex (a RAID-5 volume's log).
    Log,
    /// A log plex whose disk failed a write: the volume runs without its protection.
    Badlog,
    /// Being attached (copy in progress); removed again if the operation is abandoned.
    Temp,
    /// Being removed.
    Temprm,
    /// Being removed together with its subdisks.
    Temprmsd,
}

impl PlexState {
    /// The name `vxprint` shows.
    pub fn as_str(self) -> &'static str {
        match self {
            PlexState::Empty => "EMPTY",
            PlexState::Clean => "CLEAN",
            PlexState::Active => "ACTIVE",
            PlexState::Stale => "STALE",
            PlexState::Offline => "OFFLINE",
            PlexState::Iofail => "IOFAIL",
            PlexState::Log => "LOG",
            PlexState::Badlog => "BADLOG",
            PlexState::Temp => "TEMP",
            PlexState::Temprm => "TEMPRM",
            PlexState::Temprmsd => "TEMPRMSD",
        }
    }

    /// Whether the plex holds the volume's current data (a source for reads and copies).
    pub fn is_in_sync(self) -> bool {
        matches!(self, PlexState::Clean | PlexState::Active)
    }
}

/// Kernel (I/O) state of a plex or volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum KernelState {
    /// I/O flows.
    Enabled,
    /// No reads or writes go there; administrative operations are allowed.
    Detached,
    /// Not accessible.
    Disabled,
}

impl KernelState {
    /// The name `vxprint` shows.
    pub fn as_str(self) -> &'static str {
        match self {
            KernelState::Enabled => "ENABLED",
            KernelState::Detached => "DETACHED",
            KernelState::Disabled => "DISABLED",
        }
    }
}

/// A volume's administrative state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum VolumeState {
    /// Created, never started.
    Empty,
    /// Stopped cleanly: every in-sync plex holds the same data.
    Clean,
    /// Started (also what a crash leaves behind: then the mirrors need a resync).
    Active,
    /// Read-writeback resynchronisation running.
    Sync,
    /// Needs a resync before it is consistent.
    Needsync,
}

impl VolumeState {
    /// The name `vxprint` shows.
    pub fn as_str(self) -> &'static str {
        match self {
            VolumeState::Empty => "EMPTY",
            VolumeState::Clean => "CLEAN",
            VolumeState::Active => "ACTIVE",
            VolumeState::Sync => "SYNC",
            VolumeState::Needsync => "NEEDSYNC",
        }
    }
}

/// Why a VM disk cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum DiskCondition {
    /// Present and usable.
    Ok,
    /// Its bdev was not found at import.
    Nodevice,
    /// I/O to it failed; it takes no new allocations and its plexes are detached.
    Failed,
    /// Removed from the group while still referenced (kept so its plexes stay explained).
    Removed,
}

/// How a plex lays out its subdisks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "type")]
pub enum PlexLayout {
    /// Subdisks end to end.
    Concat,
    /// `ncol` columns interleaved in units of `stripe_unit` blocks.
    Stripe {
        /// Number of columns.
        ncol: u32,
        /// Stripe unit in blocks.
        stripe_unit: u64,
    },
    /// RAID-5: `ncol` columns, stripe units of `stripe_unit` blocks, one unit per row holding
    /// the parity of the others (left-symmetric rotation, see `model::raid5`).
    Raid5 {
        /// Number of columns (at least 3).
        ncol: u32,
        /// Stripe unit in blocks (a power of two).
        stripe_unit: u64,
    },
}

impl PlexLayout {
    /// Number of columns (1 for concat).
    pub fn ncol(&self) -> u32 {
        match self {
            PlexLayout::Concat => 1,
            PlexLayout::Stripe { ncol, .. } | PlexLayout::Raid5 { ncol, .. } => *ncol,
        }
    }

    /// The stripe unit in blocks, `None` for concat.
    pub fn stripe_unit(&self) -> Option<u64> {
        match self {
            PlexLayout::Concat => None,
            PlexLayout::Stripe { stripe_unit, .. } | PlexLayout::Raid5 { stripe_unit, .. } => {
                Some(*stripe_unit)
            }
        }
    }

    /// The name `vxprint` shows.
    pub fn as_str(&self) -> &'static str {
        match self {
            PlexLayout::Concat => "CONCAT",
            PlexLayout::Stripe { .. } => "STRIPE",
            PlexLayout::Raid5 { .. } => "RAID",
        }
    }
}

/// Which plex serves a read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase", tag = "policy", content = "plex")]
pub enum ReadPolicy {
    /// Alternate between in-sync plexes.
    Round,
    /// Always the named plex while it is usable.
    Prefer(String),
    /// Automatic: round-robin (striped plexes are preferred over concat ones when mixed).
    #[default]
    Select,
}

impl ReadPolicy {
    /// The name `vxprint` shows.
    pub fn as_str(&self) -> &'static str {
        match self {
            ReadPolicy::Round => "ROUND",
            ReadPolicy::Prefer(_) => "PREFER",
            ReadPolicy::Select => "SELECT",
        }
    }
}

/// A VM disk: a bdev in the group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskRecord {
    /// Name in the group (`disk01`).
    pub name: String,
    /// The id written in the disk's label.
    pub disk_id: Uuid,
    /// The bdev it was last seen on (informational; disks are found by id).
    pub device: String,
    /// The serial this configuration expects the disk's label to carry.
    pub expected_serial: u64,
    /// Length of the public region in blocks.
    pub public_len: u64,
    /// Where the public region starts, in blocks from the start of the bdev.
    pub public_offset: u64,
    /// Reserved for hot-relocation.
    #[serde(default)]
    pub spare: bool,
    /// Never used by hot-relocation.
    #[serde(default)]
    pub nohotuse: bool,
    /// Whether it is usable.
    pub condition: DiskCondition,
}

/// A subdisk: a contiguous extent of a disk's public region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubdiskRecord {
    /// Name (`disk01-01`).
    pub name: String,
    /// The disk (by name in the group).
    pub disk: String,
    /// First block in the disk's public region.
    pub disk_offset: u64,
    /// Length in blocks.
    pub len: u64,
    /// The plex it belongs to, if associated.
    pub plex: Option<String>,
    /// Column within a striped plex (0 for concat).
    pub column: u32,
    /// Offset of this subdisk within its column (concat: within the plex).
    pub column_offset: u64,
    /// For a layered volume's top plex: the sub-volume this piece is (then `disk` is empty
    /// and `disk_offset` is the offset in the sub-volume).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subvolume: Option<String>,
}

/// A plex: one copy of a volume's data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlexRecord {
    /// Name (`vol01-01`).
    pub name: String,
    /// The volume it belongs to, if associated.
    pub volume: Option<String>,
    /// Layout.
    pub layout: PlexLayout,
    /// Administrative state.
    pub state: PlexState,
    /// Kernel state.
    pub kstate: KernelState,
    /// Copy checkpoint of an attach or resync in progress: blocks below it are in sync.
    #[serde(default)]
    pub sync_offset: Option<u64>,
    /// RAID-5: the columns whose contents are not current (their disk failed or is missing,
    /// or they are being rebuilt), in the order they failed. One such column leaves the plex
    /// degraded (reads reconstruct it from the others); two take it offline (a forced start
    /// then trusts the last one to fail, which missed no write before the volume stopped).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stale_columns: Vec<u32>,
    /// RAID-5: the generation of the volume's log entries, bumped at every start; entries of
    /// other generations are ignored (see `model::raid5_log`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub log_epoch: u64,
    /// DRL (FastResync): the plex stopped taking writes while its volume's missed-writes map
    /// (M) was kept, so a return may copy only the regions in M ∪ D. Absent: a return copies
    /// everything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drl_missed: Option<DrlMissed>,
    /// What the attach copy checkpointed in `sync_offset` copies (`full` when absent).
    #[serde(default, skip_serializing_if = "SyncMode::is_full")]
    pub sync_mode: SyncMode,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// A volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRecord {
    /// Name (`vol01`); the bdev is `<dg>/<name>`.
    pub name: String,
    /// The bdev's uuid (stable across restarts and imports).
    pub uuid: Uuid,
    /// Length in blocks.
    pub len: u64,
    /// Administrative state.
    pub state: VolumeState,
    /// Kernel state.
    pub kstate: KernelState,
    /// Read policy.
    pub read_policy: ReadPolicy,
    /// The layout it was created with (`concat`, `stripe`, `mirror`, `mirror-stripe`, ...).
    pub layout: String,
    /// Whether it is started at import (set by volume_start, cleared by volume_stop).
    pub autostart: bool,
    /// Resync checkpoint after a crash: blocks below it are known identical on every plex.
    #[serde(default)]
    pub resync_offset: Option<u64>,
    /// The bdev name when it is not `<dg>/<name>` (volumes made by `bdev_raid_create`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bdev_name: Option<String>,
    /// The SPDK raid level of a volume made by `bdev_raid_create` (raid0, raid1, concat).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raid_level: Option<String>,
    /// For a raid bdev: how many base bdevs it was built with (a removed one leaves an empty
    /// slot, as in SPDK).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raid_slots: Option<u32>,
    /// For a sub-volume of a layered volume (stripe-mirror): the volume it is a column of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// RAID-5: what the volume does once no log plex works any more.
    #[serde(default, skip_serializing_if = "LogFailure::is_default")]
    pub log_failure: LogFailure,
    /// RAID-5: full-stripe writes compute parity from the client's buffers and write the
    /// columns from them, without first copying the data into the operation's row buffer
    /// (Linux md's `skip_copy`). By default every write is copied, because a client (a guest)
    /// may change a buffer while its write is in flight, and parity computed from memory that
    /// changed could then disagree with the data the columns got; the row stays inconsistent
    /// until the next resync and a later reconstruction of it returns wrong data. Only for
    /// clients that never change a buffer while its write is in flight. Partial-stripe writes
    /// are always copied, and the setting is ignored while the volume has a working log plex.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skip_copy: bool,
    /// The volume's dirty region log, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drl: Option<DrlRecord>,
    /// What the resync checkpointed in `resync_offset` copies (`full` when absent).
    #[serde(default, skip_serializing_if = "ResyncMode::is_full")]
    pub resync_mode: ResyncMode,
}

/// A volume's dirty region log (DRL): the volume is cut into regions of `region_blocks`
/// blocks, and a bitmap of them is kept in the log areas of two disks (see
/// `docs/on-disk-format.md`). Each copy holds a header page, then the `pages` pages of the
/// dirty map D (regions that may differ between the plexes after a crash), then the `pages`
/// pages of the missed-writes map M (regions written while some plex with
/// [`PlexRecord::drl_missed`] was away).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrlRecord {
    /// Volume blocks per region (a power of two; for RAID-5 a power-of-two number of rows).
    pub region_blocks: u64,
    /// How dirty regions are cleared.
    pub mode: DrlMode,
    /// Sequential mode: how many regions may stay dirty at once (a target, not a limit).
    pub max_dirty: u32,
    /// A region is cleared after being quiet for between one and two of these intervals, in
    /// milliseconds.
    pub clear_ms: u32,
    /// Generation of the map: in every copy's header and D page. A new map (enabled again,
    /// new region size, resize, copy relocated after a loss) gets an epoch no earlier map of
    /// the volume had, so stale pages never count.
    pub epoch: u64,
    /// Generation of the M pages, raised each time M is reset (no plex tracked any more); an
    /// M page of an older generation reads as empty.
    pub m_epoch: u64,
    /// Whether M is kept up to date: some plex has [`PlexRecord::drl_missed`] or a delta copy
    /// runs. While it is, no region leaves D before it is in M.
    pub tracking: bool,
    /// False once every copy failed: the map is not trusted, a crash then resyncs the whole
    /// volume, and no plex is tracked, until DRL is enabled again.
    pub valid: bool,
    /// Pages per bitmap (D and M each); a copy spans `1 + 2 × pages` pages.
    pub pages: u32,
    /// Where the copies are, normally two on different disks.
    pub copies: Vec<DrlCopyRecord>,
}

impl DrlRecord {
    /// Log-area pages one copy takes: the header and both bitmaps.
    pub fn copy_pages(&self) -> u64 {
        1 + 2 * u64::from(self.pages)
    }
}

/// Where one copy of a volume's dirty region log is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrlCopyRecord {
    /// The disk (by name in the group) whose log area holds it.
    pub disk: String,
    /// Its first page (the header), in pages from the start of the disk's log area.
    pub page: u32,
}

/// How a dirty region log clears its regions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DrlMode {
    /// A region is cleared once quiet for a clear interval.
    #[default]
    Normal,
    /// VxVM's sequential DRL, for log-style volumes: besides, the oldest regions are cleared
    /// as soon as more than `max_dirty` are dirty.
    Sequential,
}

impl DrlMode {
    /// The name the RPC and listings use.
    pub fn as_str(self) -> &'static str {
        match self {
            DrlMode::Normal => "normal",
            DrlMode::Sequential => "sequential",
        }
    }

    /// Parses the RPC's name (`normal`, `sequential`).
    pub fn parse(s: &str) -> Option<DrlMode> {
        match s {
            "normal" => Some(DrlMode::Normal),
            "sequential" => Some(DrlMode::Sequential),
            _ => None,
        }
    }
}

/// What a volume's crash resync copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResyncMode {
    /// Every region (no usable dirty region log).
    #[default]
    Full,
    /// Only the regions in the dirty map D.
    Drl,
}

impl ResyncMode {
    fn is_full(&self) -> bool {
        *self == ResyncMode::Full
    }

    /// The name the RPC and listings use.
    pub fn as_str(self) -> &'static str {
        match self {
            ResyncMode::Full => "full",
            ResyncMode::Drl => "drl",
        }
    }
}

/// What a plex's attach copy copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    /// Every region.
    #[default]
    Full,
    /// FastResync: only the regions the plex missed (M ∪ D).
    Delta,
}

impl SyncMode {
    fn is_full(&self) -> bool {
        *self == SyncMode::Full
    }

    /// The name the RPC and listings use.
    pub fn as_str(self) -> &'static str {
        match self {
            SyncMode::Full => "full",
            SyncMode::Delta => "delta",
        }
    }
}

/// What a plex looked like when it stopped taking writes while its volume's missed-writes map
/// was kept: a return may copy only M ∪ D if nothing here changed meanwhile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrlMissed {
    /// The volume's [`DrlRecord::m_epoch`] then; M has been reset since if it differs.
    pub m_epoch: u64,
    /// The volume's length then, in blocks.
    pub len: u64,
    /// The plex's disks then, each once, in the order of its subdisks.
    pub disks: Vec<MissedDisk>,
    /// The plex's subdisks then; a move or grow since changes them.
    pub subdisks: Vec<SubdiskRecord>,
}

/// A disk of a plex that left, as the configuration knew it then.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MissedDisk {
    /// The disk's name in the group.
    pub disk: String,
    /// The id in its label.
    pub disk_id: Uuid,
    /// The label serial the configuration expected of it.
    pub serial: u64,
}

impl DrlMissed {
    /// The record for plex `plex` of `cfg` leaving now, with the volume's missed-writes map at
    /// generation `m_epoch`; `None` if the plex has no volume. Subdisks that are pieces of a
    /// sub-volume name no disk.
    pub fn capture(cfg: &DgConfig, plex: &str, m_epoch: u64) -> Option<DrlMissed> {
        let vol = cfg.volume(cfg.plex(plex)?.volume.as_deref()?)?;
        let subdisks: Vec<SubdiskRecord> = cfg.subdisks_of(plex).into_iter().cloned().collect();
        let mut disks: Vec<MissedDisk> = Vec::new();
        for sd in subdisks.iter().filter(|s| s.subvolume.is_none()) {
            if disks.iter().any(|d| d.disk == sd.disk) {
                continue;
            }
            if let Some(d) = cfg.disk(&sd.disk) {
                disks.push(MissedDisk {
                    disk: d.name.clone(),
                    disk_id: d.disk_id,
                    serial: d.expected_serial,
                });
            }
        }
        Some(DrlMissed {
            m_epoch,
            len: vol.len,
            disks,
            subdisks,
        })
    }
}

/// What a RAID-5 volume with log plexes does when the last of them fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFailure {
    /// Keeps taking writes, without write-hole protection (an alert is logged).
    #[default]
    Continue,
    /// Refuses writes (EROFS) until a log plex is added; reads go on.
    Readonly,
}

impl LogFailure {
    fn is_default(&self) -> bool {
        *self == LogFailure::Continue
    }

    /// Parses the RPC's name (`continue`, `readonly`).
    pub fn parse(s: &str) -> Option<LogFailure> {
        match s {
            "continue" => Some(LogFailure::Continue),
            "readonly" => Some(LogFailure::Readonly),
            _ => None,
        }
    }
}

impl VolumeRecord {
    /// The volume's bdev name in group `dg`.
    pub fn bdev(&self, dg: &str) -> String {
        self.bdev_name
            .clone()
            .unwrap_or_else(|| format!("{dg}/{}", self.name))
    }
}

/// The whole configuration of a disk group (the config database's payload).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DgConfig {
    /// Group name.
    pub name: String,
    /// Group id (also in every member's label).
    pub id: Uuid,
    /// Block size of every member disk and volume.
    pub block_size: u32,
    /// How many disks hold config copies (0: every disk).
    pub nconfig: u32,
    /// VM disks.
    pub disks: Vec<DiskRecord>,
    /// Subdisks.
    pub subdisks: Vec<SubdiskRecord>,
    /// Plexes.
    pub plexes: Vec<PlexRecord>,
    /// Volumes.
    pub volumes: Vec<VolumeRecord>,
}

impl DgConfig {
    /// A disk by name.
    pub fn disk(&self, name: &str) -> Option<&DiskRecord> {
        self.disks.iter().find(|d| d.name == name)
    }

    /// A disk by name, mutably.
    pub fn disk_mut(&mut self, name: &str) -> Option<&mut DiskRecord> {
        self.disks.iter_mut().find(|d| d.name == name)
    }

    /// A volume by name.
    pub fn volume(&self, name: &str) -> Option<&VolumeRecord> {
        self.volumes.iter().find(|v| v.name == name)
    }

    /// A volume by name, mutably.
    pub fn volume_mut(&mut self, name: &str) -> Option<&mut VolumeRecord> {
        self.volumes.iter_mut().find(|v| v.name == name)
    }

    /// A plex by name.
    pub fn plex(&self, name: &str) -> Option<&PlexRecord> {
        self.plexes.iter().find(|p| p.name == name)
    }

    /// A plex by name, mutably.
    pub fn plex_mut(&mut self, name: &str) -> Option<&mut PlexRecord> {
        self.plexes.iter_mut().find(|p| p.name == name)
    }

    /// The plexes of a volume, in name order.
    pub fn plexes_of(&self, volume: &str) -> Vec<&PlexRecord> {
        let mut v: Vec<&PlexRecord> = self
            .plexes
            .iter()
            .filter(|p| p.volume.as_deref() == Some(volume))
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// The subdisks of a plex, ordered by column then offset in the column.
    pub fn subdisks_of(&self, plex: &str) -> Vec<&SubdiskRecord> {
        let mut v: Vec<&SubdiskRecord> = self
            .subdisks
            .iter()
            .filter(|s| s.plex.as_deref() == Some(plex))
            .collect();
        v.sort_by_key(|s| (s.column, s.column_offset));
        v
    }

    /// The subdisks on a disk, ordered by offset.
    pub fn subdisks_on(&self, disk: &str) -> Vec<&SubdiskRecord> {
        let mut v: Vec<&SubdiskRecord> = self.subdisks.iter().filter(|s| s.disk == disk).collect();
        v.sort_by_key(|s| s.disk_offset);
        v
    }

    /// Free extents `(offset, len)` of a disk's public region, in blocks, sorted.
    pub fn free_space(&self, disk: &str) -> Vec<(u64, u64)> {
        let Some(d) = self.disk(disk) else {
            return Vec::new();
        };
        let mut free = Vec::new();
        let mut at = 0;
        for sd in self.subdisks_on(disk) {
            if sd.disk_offset > at {
                free.push((at, sd.disk_offset - at));
            }
            at = at.max(sd.disk_offset + sd.len);
        }
        if d.public_len > at {
            free.push((at, d.public_len - at));
        }
        free
    }

    /// The next free name `<prefix>NN` (two digits at least), as VxVM numbers objects.
    pub fn next_name(&self, prefix: &str, taken: impl Fn(&str) -> bool) -> String {
        (1..)
            .map(|i| format!("{prefix}{i:02}"))
            .find(|n| !taken(n))
            .unwrap_or_else(|| format!("{prefix}x"))
    }

    /// Adds a plex of `volume` (named `<volume>-NN`) whose columns are the given extents
    /// `(disk, offset, len)`, each column's extents end to end, as subdisks `<disk>-NN`.
    /// Returns the plex's name.
    pub fn add_plex(
        &mut self,
        volume: &str,
        layout: PlexLayout,
        state: PlexState,
        kstate: KernelState,
        columns: &[Vec<(String, u64, u64)>],
    ) -> String {
        let pname = self.next_name(&format!("{volume}-"), |n| self.name_taken(n));
        for (col, extents) in columns.iter().enumerate() {
            let mut at = 0;
            for (disk, off, len) in extents {
                let name = self.next_name(&format!("{disk}-"), |n| self.name_taken(n));
                self.subdisks.push(SubdiskRecord {
                    name,
                    disk: disk.clone(),
                    disk_offset: *off,
                    len: *len,
                    plex: Some(pname.clone()),
                    column: col as u32,
                    column_offset: at,
                    subvolume: None,
                });
                at += len;
            }
        }
        self.plexes.push(PlexRecord {
            name: pname.clone(),
            volume: Some(volume.to_string()),
            layout,
            state,
            kstate,
            sync_offset: None,
            stale_columns: Vec::new(),
            log_epoch: 0,
            drl_missed: None,
            sync_mode: SyncMode::Full,
        });
        pname
    }

    /// Whether any object (disk, subdisk, plex, volume) already has `name`.
    pub fn name_taken(&self, name: &str) -> bool {
        self.disks.iter().any(|d| d.name == name)
            || self.subdisks.iter().any(|s| s.name == name)
            || self.plexes.iter().any(|p| p.name == name)
            || self.volumes.iter().any(|v| v.name == name)
    }

    /// Checks internal consistency: unique names, subdisks inside their disks and never
    /// overlapping, references that resolve, at most [`MAX_PLEXES`] plexes per volume.
    pub fn validate(&self) -> Result<(), String> {
        let mut names = std::collections::BTreeSet::new();
        for n in self
            .disks
            .iter()
            .map(|d| &d.name)
            .chain(self.subdisks.iter().map(|s| &s.name))
            .chain(self.plexes.iter().map(|p| &p.name))
            .chain(self.volumes.iter().map(|v| &v.name))
        {
            if !names.insert(n.as_str()) {
                return Err(format!("two objects are named '{n}'"));
            }
        }
        for d in &self.disks {
            let sds = self.subdisks_on(&d.name);
            let mut end = 0;
            for sd in sds {
                if sd.len == 0 {
                    return Err(format!("subdisk {} has no blocks", sd.name));
                }
                if sd.disk_offset < end {
                    return Err(format!("subdisk {} overlaps another subdisk", sd.name));
                }
                end = sd.disk_offset.saturating_add(sd.len);
                if end > d.public_len {
                    return Err(format!("subdisk {} ends beyond disk {}", sd.name, d.name));
                }
            }
        }
        for sd in &self.subdisks {
            if let Some(sv) = &sd.subvolume {
                if self.volume(sv).is_none_or(|v| v.parent.is_none()) {
                    return Err(format!(
                        "subdisk {} refers to unknown sub-volume {sv}",
                        sd.name
                    ));
                }
            } else if self.disk(&sd.disk).is_none() {
                return Err(format!(
                    "subdisk {} is on unknown disk {}",
                    sd.name, sd.disk
                ));
            }
            if let Some(p) = &sd.plex {
                let Some(pl) = self.plex(p) else {
                    return Err(format!("subdisk {} is in unknown plex {p}", sd.name));
                };
                if sd.column >= pl.layout.ncol() {
                    return Err(format!("subdisk {} is in a column plex {p} lacks", sd.name));
                }
            }
        }
        for p in &self.plexes {
            if let Some(v) = &p.volume {
                if self.volume(v).is_none() {
                    return Err(format!("plex {} is in unknown volume {v}", p.name));
                }
            }
        }
        for v in &self.volumes {
            if self.plexes_of(&v.name).len() > MAX_PLEXES {
                return Err(format!(
                    "volume {} has more than {MAX_PLEXES} plexes",
                    v.name
                ));
            }
        }
        self.validate_drl()
    }

    /// The dirty region logs' part of [`DgConfig::validate`]: regions and pages not empty,
    /// copies on known disks, a map's copies on different disks, and no two copies sharing a
    /// log-area page.
    fn validate_drl(&self) -> Result<(), String> {
        let mut placed: Vec<(&str, u64, u64, &str)> = Vec::new();
        for v in &self.volumes {
            let Some(drl) = &v.drl else { continue };
            if drl.region_blocks == 0 || drl.pages == 0 {
                return Err(format!(
                    "the region log of volume {} has no regions",
                    v.name
                ));
            }
            for (i, c) in drl.copies.iter().enumerate() {
                if self.disk(&c.disk).is_none() {
                    return Err(format!(
                        "the region log of volume {} has a copy on unknown disk {}",
                        v.name, c.disk
                    ));
                }
                if drl.copies[..i].iter().any(|o| o.disk == c.disk) {
                    return Err(format!(
                        "the region log of volume {} has two copies on disk {}",
                        v.name, c.disk
                    ));
                }
                let first = u64::from(c.page);
                placed.push((&c.disk, first, first + drl.copy_pages(), &v.name));
            }
        }
        placed.sort_unstable();
        for w in placed.windows(2) {
            if w[0].0 == w[1].0 && w[1].1 < w[0].2 {
                return Err(format!(
                    "the region logs of volumes {} and {} overlap on disk {}",
                    w[0].3, w[1].3, w[0].0
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> DgConfig {
        DgConfig {
            name: "dg01".into(),
            id: Uuid::nil(),
            block_size: 512,
            nconfig: 0,
            disks: vec![DiskRecord {
                name: "disk01".into(),
                disk_id: Uuid::nil(),
                device: "Malloc0".into(),
                expected_serial: 1,
                public_len: 1000,
                public_offset: 8192,
                spare: false,
                nohotuse: false,
                condition: DiskCondition::Ok,
            }],
            subdisks: vec![
                SubdiskRecord {
                    name: "disk01-01".into(),
                    disk: "disk01".into(),
                    disk_offset: 100,
                    len: 100,
                    plex: None,
                    column: 0,
                    column_offset: 0,
                    subvolume: None,
                },
                SubdiskRecord {
                    name: "disk01-02".into(),
                    disk: "disk01".into(),
                    disk_offset: 300,
                    len: 50,
                    plex: None,
                    column: 0,
                    column_offset: 0,
                    subvolume: None,
                },
            ],
            plexes: vec![],
            volumes: vec![],
        }
    }

    #[test]
    fn free_space_is_the_gaps() {
        assert_eq!(
            cfg().free_space("disk01"),
            vec![(0, 100), (200, 100), (350, 650)]
        );
    }

    #[test]
    fn validate_catches_overlap_and_duplicates() {
        let mut c = cfg();
        assert!(c.validate().is_ok());
        c.subdisks[1].disk_offset = 150;
        assert!(c.validate().unwrap_err().contains("overlaps"));
        let mut c = cfg();
        c.subdisks[1].name = "disk01".into();
        assert!(c.validate().unwrap_err().contains("two objects"));
        let mut c = cfg();
        c.subdisks[1].disk_offset = 990;
        assert!(c.validate().unwrap_err().contains("beyond"));
    }

    #[test]
    fn names_count_up() {
        let c = cfg();
        assert_eq!(c.next_name("disk01-", |n| c.name_taken(n)), "disk01-03");
    }

    #[test]
    fn json_field_names_are_stable() {
        let p = PlexRecord {
            name: "vol01-01".into(),
            volume: Some("vol01".into()),
            layout: PlexLayout::Stripe {
                ncol: 2,
                stripe_unit: 128,
            },
            state: PlexState::Iofail,
            kstate: KernelState::Detached,
            sync_offset: None,
            stale_columns: Vec::new(),
            log_epoch: 0,
            drl_missed: None,
            sync_mode: SyncMode::Full,
        };
        let j = serde_json::to_value(&p).unwrap();
        assert_eq!(j["layout"]["type"], "stripe");
        assert_eq!(j["state"], "IOFAIL");
        assert_eq!(j["kstate"], "DETACHED");
        let back: PlexRecord = serde_json::from_value(j).unwrap();
        assert_eq!(back, p);
        let rp = serde_json::to_value(ReadPolicy::Prefer("vol01-02".into())).unwrap();
        assert_eq!(
            rp,
            serde_json::json!({"policy": "prefer", "plex": "vol01-02"})
        );
    }

    fn drl_volume(name: &str, copies: &[(&str, u32)]) -> VolumeRecord {
        let mut v: VolumeRecord = serde_json::from_value(serde_json::json!({"name": name,
            "uuid": Uuid::nil(), "len": 2048, "state": "ACTIVE", "kstate": "ENABLED",
            "read_policy": {"policy": "select"}, "layout": "mirror", "autostart": true,
            "resync_offset": null}))
        .unwrap();
        v.drl = Some(DrlRecord {
            region_blocks: 128,
            mode: DrlMode::Normal,
            max_dirty: 4,
            clear_ms: 5000,
            epoch: 3,
            m_epoch: 1,
            tracking: false,
            valid: true,
            pages: 1,
            copies: copies
                .iter()
                .map(|&(disk, page)| DrlCopyRecord {
                    disk: disk.into(),
                    page,
                })
                .collect(),
        });
        v
    }

    /// A configuration written before DRL existed loads without it, and one without DRL is
    /// written without the new fields (the same bytes as before).
    #[test]
    fn drl_fields_are_absent_unless_used() {
        let old_vol = serde_json::json!({"name": "vol01", "uuid": Uuid::nil(), "len": 2048,
            "state": "ACTIVE", "kstate": "ENABLED", "read_policy": {"policy": "select"},
            "layout": "mirror", "autostart": true, "resync_offset": 1024});
        let v: VolumeRecord = serde_json::from_value(old_vol.clone()).unwrap();
        assert_eq!((v.drl.clone(), v.resync_mode), (None, ResyncMode::Full));
        assert_eq!(serde_json::to_value(&v).unwrap(), old_vol);
        let old_plex = serde_json::json!({"name": "vol01-02", "volume": "vol01",
            "layout": {"type": "concat"}, "state": "STALE", "kstate": "ENABLED",
            "sync_offset": 64});
        let p: PlexRecord = serde_json::from_value(old_plex.clone()).unwrap();
        assert_eq!((p.drl_missed.clone(), p.sync_mode), (None, SyncMode::Full));
        assert_eq!(serde_json::to_value(&p).unwrap(), old_plex);
    }

    /// The DRL fields' JSON names are part of the on-disk format.
    #[test]
    fn drl_json_field_names_are_stable() {
        let mut v = drl_volume("vol01", &[("disk01", 0), ("disk02", 3)]);
        v.resync_mode = ResyncMode::Drl;
        let j = serde_json::to_value(&v).unwrap();
        assert_eq!(
            j["drl"],
            serde_json::json!({"region_blocks": 128, "mode": "normal", "max_dirty": 4,
                "clear_ms": 5000, "epoch": 3, "m_epoch": 1, "tracking": false, "valid": true,
                "pages": 1, "copies": [{"disk": "disk01", "page": 0},
                {"disk": "disk02", "page": 3}]})
        );
        assert_eq!(j["resync_mode"], "drl");
        assert_eq!(serde_json::from_value::<VolumeRecord>(j).unwrap(), v);

        let mut c = cfg();
        c.volumes.push(drl_volume("vol01", &[("disk01", 0)]));
        let pname = c.add_plex(
            "vol01",
            PlexLayout::Concat,
            PlexState::Stale,
            KernelState::Enabled,
            &[vec![("disk01".into(), 500, 100)]],
        );
        let missed = DrlMissed::capture(&c, &pname, 7).unwrap();
        let plex = c.plex_mut(&pname).unwrap();
        plex.drl_missed = Some(missed);
        plex.sync_mode = SyncMode::Delta;
        let j = serde_json::to_value(&*plex).unwrap();
        assert_eq!(j["sync_mode"], "delta");
        assert_eq!(j["drl_missed"]["m_epoch"], 7);
        assert_eq!(j["drl_missed"]["len"], 2048);
        assert_eq!(
            j["drl_missed"]["disks"],
            serde_json::json!([{"disk": "disk01", "disk_id": Uuid::nil(), "serial": 1}])
        );
        assert_eq!(j["drl_missed"]["subdisks"][0]["disk_offset"], 500);
        assert_eq!(serde_json::from_value::<PlexRecord>(j).unwrap(), *plex);
        assert_eq!(DrlMode::parse("sequential"), Some(DrlMode::Sequential));
        assert_eq!(DrlMode::parse("seq"), None);
    }

    #[test]
    fn drl_missed_records_each_disk_once() {
        let mut c = cfg();
        c.disks.push(DiskRecord {
            name: "disk02".into(),
            disk_id: Uuid::from_u128(2),
            expected_serial: 9,
            ..c.disks[0].clone()
        });
        c.volumes.push(drl_volume("vol01", &[]));
        let pname = c.add_plex(
            "vol01",
            PlexLayout::Concat,
            PlexState::Active,
            KernelState::Enabled,
            &[vec![
                ("disk02".into(), 0, 10),
                ("disk01".into(), 500, 10),
                ("disk02".into(), 20, 10),
            ]],
        );
        let m = DrlMissed::capture(&c, &pname, 1).unwrap();
        let disks: Vec<(&str, u64)> = m
            .disks
            .iter()
            .map(|d| (d.disk.as_str(), d.serial))
            .collect();
        assert_eq!(disks, vec![("disk02", 9), ("disk01", 1)]);
        assert_eq!(m.disks[0].disk_id, Uuid::from_u128(2));
        assert_eq!(m.subdisks.len(), 3);
        assert!(DrlMissed::capture(&c, "nosuch", 1).is_none());
    }

    #[test]
    fn validate_checks_region_log_placement() {
        let mut c = cfg();
        c.disks.push(DiskRecord {
            name: "disk02".into(),
            ..c.disks[0].clone()
        });
        // Copies of 3 pages: vol02 starting at page 3 of disk01 just fits after vol01.
        c.volumes
            .push(drl_volume("vol01", &[("disk01", 0), ("disk02", 0)]));
        c.volumes
            .push(drl_volume("vol02", &[("disk01", 3), ("disk02", 10)]));
        assert!(c.validate().is_ok());
        c.volumes[1].drl.as_mut().unwrap().copies[0].page = 2;
        assert_eq!(
            c.validate().unwrap_err(),
            "the region logs of volumes vol01 and vol02 overlap on disk disk01"
        );
        c.volumes[1].drl.as_mut().unwrap().copies[0].disk = "disk02".into();
        assert!(c
            .validate()
            .unwrap_err()
            .contains("two copies on disk disk02"));
        c.volumes[1].drl.as_mut().unwrap().copies[0].disk = "disk09".into();
        assert!(c.validate().unwrap_err().contains("unknown disk disk09"));
        c.volumes[1].drl.as_mut().unwrap().copies[0].disk = "disk01".into();
        c.volumes[1].drl.as_mut().unwrap().copies[0].page = 3;
        c.volumes[1].drl.as_mut().unwrap().pages = 0;
        assert!(c.validate().unwrap_err().contains("has no regions"));
    }

    /// A configuration written before `skip_copy` existed loads with it off, and a volume
    /// with it off is written without the field (the same bytes as before); on, it is
    /// written and read back.
    #[test]
    fn skip_copy_is_absent_unless_on() {
        let old = serde_json::json!({"name": "r5", "uuid": Uuid::nil(), "len": 2048,
            "state": "CLEAN", "kstate": "DISABLED", "read_policy": {"policy": "select"},
            "layout": "raid5", "autostart": false, "resync_offset": null});
        let mut v: VolumeRecord = serde_json::from_value(old.clone()).unwrap();
        assert!(!v.skip_copy);
        assert_eq!(serde_json::to_value(&v).unwrap(), old);
        v.skip_copy = true;
        let j = serde_json::to_value(&v).unwrap();
        assert_eq!(j["skip_copy"], true);
        assert_eq!(serde_json::from_value::<VolumeRecord>(j).unwrap(), v);
    }
}
