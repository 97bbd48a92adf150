//! The byte format of a VM disk's private region: labels and configuration-copy slots.
//!
//! Every bdev placed under volume-manager control starts with a *private region* (two label
//! copies, a reserved log area, and the configuration-database slots) followed by the *public
//! region* that subdisks are allocated from. This module is pure encode/decode over byte
//! slices; reading and writing goes through [`super::disk`]. All integers are little-endian and
//! every record carries a crc32c. The format is specified in `docs/on-disk-format.md`.
//!
//! Decoding never panics, whatever the input: damage is reported as a [`LabelError`] or a
//! [`ConfigCopyError`] saying what was found (blank, foreign, damaged, too new, inconsistent).
//! A successful decode is *canonical*: encoding the decoded value gives back the same bytes.

use uuid::Uuid;

/// Magic at byte 0 of a label.
pub const LABEL_MAGIC: [u8; 8] = *b"PLEXDVM\0";
/// Magic at byte 0 of a configuration-slot header.
pub const CONFIG_MAGIC: [u8; 8] = *b"PLEXDCF\0";
/// The on-disk format version this code reads and writes.
pub const FORMAT_VERSION: u32 = 1;
/// Size in bytes of one label copy.
pub const LABEL_SIZE: usize = 4096;
/// Size in bytes of the header block at the start of each configuration slot.
pub const SLOT_HEADER_SIZE: usize = 4096;
/// Longest disk-group or disk name, in bytes of UTF-8.
pub const NAME_MAX: usize = 31;
/// Longest host name, in bytes of UTF-8.
pub const HOST_MAX: usize = 63;
/// Smallest public region a disk may have (1 MiB).
pub const MIN_PUBLIC_LEN: u64 = MIB;
/// Granule of the format: every offset and length in a layout is a multiple of it.
pub const FORMAT_ALIGN: u64 = 4096;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// Default start of the log area.
const DEFAULT_LOG_OFFSET: u64 = 64 * KIB;
/// Default start of configuration slot 0.
const DEFAULT_CONFIG_OFFSET: u64 = MIB;
/// Default length of one configuration slot (header block + payload).
const DEFAULT_SLOT_LEN: u64 = 3 * MIB / 2;
/// Default number of configuration slots.
const DEFAULT_SLOTS: u32 = 2;
/// Default private-region length (and start of the public region).
const DEFAULT_PRIVATE_LEN: u64 = 4 * MIB;

/// Offset of the crc32c in a label or slot header (it covers every byte before it).
const CRC_OFFSET: usize = 4092;

/// crc32c (Castagnoli) of `data`, hardware-accelerated where available.
pub fn crc32c(data: &[u8]) -> u32 {
    ::crc32c::crc32c(data)
}

/// Errors from building a layout or encoding a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OnDiskError {
    /// The bdev cannot hold the private region plus the minimum public region.
    #[error(
        "the bdev is too small to be a VM disk: it has {have} bytes but needs at least {need} \
         bytes (the private region plus 1 MiB of public region); use a larger bdev"
    )]
    TooSmall {
        /// Bytes needed.
        need: u64,
        /// Bytes the bdev has.
        have: u64,
    },
    /// A name is longer than its on-disk field allows.
    #[error("{field} is {len} bytes long, but at most {max} bytes of UTF-8 are allowed; choose a shorter name")]
    NameTooLong {
        /// Which field (`dg_name`, `disk_name`, `hostname`).
        field: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The maximum length in bytes.
        max: usize,
    },
    /// A label field cannot be written as given (NUL in a name, group fields that contradict
    /// the state, a version this code does not write).
    #[error("cannot write the label: {0}")]
    InvalidField(String),
    /// The configuration payload does not fit in a slot.
    #[error(
        "configuration payload of {len} bytes does not fit in a slot (at most {max} bytes); \
         the disk group has too many objects for its disks' private regions"
    )]
    PayloadTooLarge {
        /// Payload length in bytes.
        len: u64,
        /// Largest payload a slot holds.
        max: u64,
    },
    /// The region layout is inconsistent or the block size is unsupported.
    #[error("invalid private-region layout: {0}")]
    InvalidLayout(String),
}

/// Why a label copy could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    /// The buffer is shorter than a label.
    #[error("buffer of {0} bytes is too short for a label ({LABEL_SIZE} bytes needed)")]
    TooShort(usize),
    /// Every byte is zero: the bdev was never initialised.
    #[error("not a plexd VM disk (blank); initialise it with dg_create/dg_add_disk")]
    Blank,
    /// Something other than a plexd label is there.
    #[error(
        "not a plexd VM disk: it holds something else (magic {}); refusing to overwrite it \
         unless forced",
        show_magic(.magic)
    )]
    Foreign {
        /// The first eight bytes found.
        magic: [u8; 8],
    },
    /// The checksum does not match: the label copy is damaged.
    #[error(
        "label checksum mismatch (stored {stored:#010x}, computed {computed:#010x}): this label \
         copy is damaged; the other copy is used if valid, else re-initialise the disk"
    )]
    Corrupt {
        /// crc32c stored in the label.
        stored: u32,
        /// crc32c computed over the label.
        computed: u32,
    },
    /// A plexd label in a format version this code cannot read.
    #[error("{}", version_message("label", *.found, *.supported))]
    UnsupportedVersion {
        /// Version found on disk.
        found: u32,
        /// Version this code supports.
        supported: u32,
    },
    /// The checksum matches but the fields are inconsistent (bad layout, bad UTF-8, unknown
    /// state, …).
    #[error(
        "the label is inconsistent: {0}; the other copy is used if valid, else re-initialise \
         the disk"
    )]
    Invalid(String),
}

/// Why a configuration-slot copy could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigCopyError {
    /// The buffer is shorter than a slot header.
    #[error(
        "buffer of {0} bytes is too short for a slot header ({SLOT_HEADER_SIZE} bytes needed)"
    )]
    TooShort(usize),
    /// Every header byte is zero: the slot was never written.
    #[error("configuration slot is empty (never written)")]
    Empty,
    /// Something other than a plexd configuration copy is in the slot.
    #[error(
        "configuration slot holds something else (magic {}); it is not a plexd configuration \
         copy and will be overwritten by the next commit",
        show_magic(.magic)
    )]
    Foreign {
        /// The first eight bytes found.
        magic: [u8; 8],
    },
    /// The header checksum does not match: the header is damaged (e.g. a torn write).
    #[error(
        "configuration slot header checksum mismatch (stored {stored:#010x}, computed \
         {computed:#010x}): this copy is damaged; another copy is used"
    )]
    Corrupt {
        /// crc32c stored in the header.
        stored: u32,
        /// crc32c computed over the header.
        computed: u32,
    },
    /// The payload checksum does not match: the payload is damaged (e.g. a torn write).
    #[error(
        "configuration payload checksum mismatch (stored {stored:#010x}, computed \
         {computed:#010x}): this copy is damaged; another copy is used"
    )]
    PayloadCorrupt {
        /// crc32c stored in the header.
        stored: u32,
        /// crc32c computed over the payload.
        computed: u32,
    },
    /// A plexd configuration copy in a format version this code cannot read.
    #[error("{}", version_message("configuration copy", *.found, *.supported))]
    UnsupportedVersion {
        /// Version found on disk.
        found: u32,
        /// Version this code supports.
        supported: u32,
    },
    /// The header checksum matches but the fields are inconsistent.
    #[error("the configuration copy is inconsistent: {0}; another copy is used")]
    Invalid(String),
}

/// The eight magic bytes as an escaped string, for messages.
fn show_magic(magic: &[u8; 8]) -> String {
    format!("\"{}\"", magic.escape_ascii())
}

/// The message of an `UnsupportedVersion` error, saying whether the record is older or newer.
fn version_message(what: &str, found: u32, supported: u32) -> String {
    if found > supported {
        format!(
            "{what} format version {found} is newer than this plexd supports ({supported}); \
             upgrade plexd to use this disk (it is not overwritten unless forced)"
        )
    } else {
        format!(
            "{what} format version {found} is older than any this plexd can read (it supports \
             {supported}); it is not overwritten unless forced"
        )
    }
}

/// Where the parts of a VM disk's private and public regions lie, in bytes from the start of
/// the disk. Recorded in the label so that a future format can change it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RegionLayout {
    /// Offsets of the primary and backup label copies.
    pub label_offsets: [u64; 2],
    /// Start of the log area (dirty-region log / operation intent; zeroed at init).
    pub log_offset: u64,
    /// Length of the log area.
    pub log_len: u64,
    /// Start of configuration slot 0; the slots follow one another.
    pub config_offset: u64,
    /// Length of one configuration slot, header block included.
    pub config_slot_len: u64,
    /// Number of configuration slots.
    pub config_slots: u32,
    /// Length of the private region.
    pub private_len: u64,
    /// Start of the public region.
    pub public_offset: u64,
    /// Length of the public region.
    pub public_len: u64,
}

/// The smallest block size VM disks support.
pub const MIN_BLOCK_SIZE: u32 = 512;
/// The largest block size VM disks support.
pub const MAX_BLOCK_SIZE: u32 = 65536;

/// Whether VM disks support `block_size`: a power of two from [`MIN_BLOCK_SIZE`] to
/// [`MAX_BLOCK_SIZE`].
pub fn block_size_supported(block_size: u32) -> bool {
    block_size.is_power_of_two() && (MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&block_size)
}

/// Whether VM disks support `block_size`: a power of two from 512 to 65536.
fn check_block_size(block_size: u32) -> Result<(), String> {
    if !block_size_supported(block_size) {
        return Err(format!(
            "block size {block_size} is not supported for VM disks: it must be a power of two \
             between 512 and 65536"
        ));
    }
    Ok(())
}

/// Greatest common divisor.
fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// The offsets at which a reader looks for the primary and backup labels of a bdev with this
/// block size, before it knows the layout: 0, and 4096 or one block in (whichever is larger),
/// so that the two copies never share a block.
pub fn label_probe_offsets(block_size: u32) -> [u64; 2] {
    [0, FORMAT_ALIGN.max(u64::from(block_size))]
}

impl RegionLayout {
    /// The default layout for a disk of `disk_len` bytes and `block_size`-byte blocks: labels
    /// at [`label_probe_offsets`], log area up to 1 MiB, two 1.5 MiB configuration slots from
    /// 1 MiB, a 4 MiB private region, and a public region from 4 MiB to the end of the disk
    /// rounded down to a multiple of 4096 and of the block size.
    pub fn for_disk(disk_len: u64, block_size: u32) -> Result<RegionLayout, OnDiskError> {
        check_block_size(block_size).map_err(OnDiskError::InvalidLayout)?;
        let bs = u64::from(block_size);
        let unit = FORMAT_ALIGN / gcd(FORMAT_ALIGN, bs) * bs;
        let label_offsets = label_probe_offsets(block_size);
        let log_offset = DEFAULT_LOG_OFFSET.max(label_offsets[1] + unit);
        let public_offset = DEFAULT_PRIVATE_LEN;
        let need = public_offset + MIN_PUBLIC_LEN;
        let public_end = disk_len - disk_len % unit;
        if public_end < need {
            return Err(OnDiskError::TooSmall {
                need,
                have: disk_len,
            });
        }
        let layout = RegionLayout {
            label_offsets,
            log_offset,
            log_len: DEFAULT_CONFIG_OFFSET - log_offset,
            config_offset: DEFAULT_CONFIG_OFFSET,
            config_slot_len: DEFAULT_SLOT_LEN,
            config_slots: DEFAULT_SLOTS,
            private_len: DEFAULT_PRIVATE_LEN,
            public_offset,
            public_len: public_end - public_offset,
        };
        layout.validate()?;
        layout.check_block_size(block_size)?;
        Ok(layout)
    }

    /// Offset of configuration slot `slot` (`config_offset + slot * config_slot_len`). `slot`
    /// should be below `config_slots`; the arithmetic saturates rather than overflowing.
    pub fn slot_offset(&self, slot: u32) -> u64 {
        self.config_offset
            .saturating_add(u64::from(slot).saturating_mul(self.config_slot_len))
    }

    /// The largest configuration payload a slot holds (`config_slot_len - SLOT_HEADER_SIZE`).
    pub fn max_payload(&self) -> u64 {
        self.config_slot_len.saturating_sub(SLOT_HEADER_SIZE as u64)
    }

    /// Checks that the layout is consistent: every offset and length a multiple of 4096; the
    /// primary label at 0; labels, log area and configuration slots in that order, without
    /// overlap, inside the private region; at least one slot, each longer than its header;
    /// the public region after the private region, at least [`MIN_PUBLIC_LEN`] long.
    pub fn validate(&self) -> Result<(), OnDiskError> {
        self.check().map_err(OnDiskError::InvalidLayout)
    }

    /// Checks that `block_size` is supported for VM disks and that every boundary of the layout
    /// is a multiple of it (so that the public region and each record start on a block).
    pub fn check_block_size(&self, block_size: u32) -> Result<(), OnDiskError> {
        self.check_block_alignment(block_size)
            .map_err(OnDiskError::InvalidLayout)
    }

    /// The named offsets and lengths, for alignment checks and messages.
    fn fields(&self) -> [(&'static str, u64); 10] {
        [
            ("label_offsets[0]", self.label_offsets[0]),
            ("label_offsets[1]", self.label_offsets[1]),
            ("log_offset", self.log_offset),
            ("log_len", self.log_len),
            ("config_offset", self.config_offset),
            ("config_slot_len", self.config_slot_len),
            ("private_len", self.private_len),
            ("public_offset", self.public_offset),
            ("public_len", self.public_len),
            (
                "public_end",
                self.public_offset.saturating_add(self.public_len),
            ),
        ]
    }

    fn check(&self) -> Result<(), String> {
        for (name, value) in self.fields() {
            if !value.is_multiple_of(FORMAT_ALIGN) {
                return Err(format!(
                    "{name} = {value} is not a multiple of {FORMAT_ALIGN}"
                ));
            }
        }
        let overflow = |what: &str| format!("{what} overflows a 64-bit offset");
        if self.label_offsets[0] != 0 {
            return Err(format!(
                "the primary label is at {}, but it must be at offset 0",
                self.label_offsets[0]
            ));
        }
        let label0_end = LABEL_SIZE as u64;
        if self.label_offsets[1] < label0_end {
            return Err(format!(
                "the backup label at {} overlaps the primary label (which ends at {label0_end})",
                self.label_offsets[1]
            ));
        }
        let label1_end = self.label_offsets[1]
            .checked_add(LABEL_SIZE as u64)
            .ok_or_else(|| overflow("the backup label"))?;
        if self.log_offset < label1_end {
            return Err(format!(
                "the log area at {} overlaps the backup label (which ends at {label1_end})",
                self.log_offset
            ));
        }
        let log_end = self
            .log_offset
            .checked_add(self.log_len)
            .ok_or_else(|| overflow("the log area"))?;
        if self.config_offset < log_end {
            return Err(format!(
                "the configuration slots at {} overlap the log area (which ends at {log_end})",
                self.config_offset
            ));
        }
        if self.config_slots == 0 {
            return Err("there are no configuration slots (config_slots = 0)".to_string());
        }
        if self.config_slot_len <= SLOT_HEADER_SIZE as u64 {
            return Err(format!(
                "config_slot_len = {} leaves no room for a payload after the {SLOT_HEADER_SIZE}-byte header",
                self.config_slot_len
            ));
        }
        let config_end = u64::from(self.config_slots)
            .checked_mul(self.config_slot_len)
            .and_then(|len| len.checked_add(self.config_offset))
            .ok_or_else(|| overflow("the configuration slots"))?;
        if config_end > self.private_len {
            return Err(format!(
                "the configuration slots end at {config_end}, beyond the private region \
                 ({} bytes)",
                self.private_len
            ));
        }
        if self.public_offset < self.private_len {
            return Err(format!(
                "the public region at {} starts inside the private region ({} bytes)",
                self.public_offset, self.private_len
            ));
        }
        if self.public_len < MIN_PUBLIC_LEN {
            return Err(format!(
                "the public region is {} bytes, less than the minimum {MIN_PUBLIC_LEN}",
                self.public_len
            ));
        }
        self.public_offset
            .checked_add(self.public_len)
            .ok_or_else(|| overflow("the public region"))?;
        Ok(())
    }

    fn check_block_alignment(&self, block_size: u32) -> Result<(), String> {
        check_block_size(block_size)?;
        let bs = u64::from(block_size);
        for (name, value) in self.fields() {
            if !value.is_multiple_of(bs) {
                return Err(format!(
                    "{name} = {value} is not a multiple of the block size {block_size}"
                ));
            }
        }
        Ok(())
    }
}

/// Where a VM disk stands with respect to disk groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum DiskState {
    /// Initialised, in no disk group (stored as 0).
    Free,
    /// Member of a disk group that is (or was last) imported (stored as 1).
    Imported,
    /// Member of a disk group that was deported (stored as 2).
    Deported,
}

impl DiskState {
    /// The on-disk code of the state.
    pub fn to_u32(self) -> u32 {
        match self {
            DiskState::Free => 0,
            DiskState::Imported => 1,
            DiskState::Deported => 2,
        }
    }

    /// The state with on-disk code `code`, if there is one.
    pub fn from_u32(code: u32) -> Option<DiskState> {
        match code {
            0 => Some(DiskState::Free),
            1 => Some(DiskState::Imported),
            2 => Some(DiskState::Deported),
            _ => None,
        }
    }
}

/// A VM disk's label: its identity, its group membership and the layout of its regions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    /// Format version; [`FORMAT_VERSION`] when written by this code.
    pub version: u32,
    /// The bdev's block size when the disk was initialised.
    pub block_size: u32,
    /// Identity of the disk, chosen at initialisation.
    pub disk_id: Uuid,
    /// Identity of the disk group; nil when in no group.
    pub dg_id: Uuid,
    /// Name of the disk group; empty when in no group.
    pub dg_name: String,
    /// Name of the disk in its group (e.g. `disk01`); empty when free.
    pub disk_name: String,
    /// Group membership state.
    pub state: DiskState,
    /// The configuration serial the disk actually carries (split-brain detection).
    pub serial: u64,
    /// Host that imported the disk last.
    pub hostname: String,
    /// Unix time (seconds) of initialisation.
    pub created: u64,
    /// Layout of the private and public regions.
    pub layout: RegionLayout,
}

// Label field offsets.
const L_VERSION: usize = 8;
const L_HEADER_LEN: usize = 12;
const L_BLOCK_SIZE: usize = 16;
const L_STATE: usize = 20;
const L_DISK_ID: usize = 24;
const L_DG_ID: usize = 40;
const L_SERIAL: usize = 56;
const L_CREATED: usize = 64;
const L_PRIVATE_LEN: usize = 72;
const L_PUBLIC_OFFSET: usize = 80;
const L_PUBLIC_LEN: usize = 88;
const L_LOG_OFFSET: usize = 96;
const L_LOG_LEN: usize = 104;
const L_CONFIG_OFFSET: usize = 112;
const L_CONFIG_SLOT_LEN: usize = 120;
const L_CONFIG_SLOTS: usize = 128;
const L_RESERVED: usize = 132;
const L_LABEL_OFFSET0: usize = 136;
const L_LABEL_OFFSET1: usize = 144;
const L_DG_NAME: usize = 152;
const L_DISK_NAME: usize = 184;
const L_HOSTNAME: usize = 216;
/// First byte after the last label field; zeros from here to the crc.
const L_END: usize = 280;

// Config-slot header field offsets.
const C_VERSION: usize = 8;
const C_RESERVED: usize = 12;
const C_DG_ID: usize = 16;
const C_SEQ: usize = 32;
const C_COMMIT_ID: usize = 40;
const C_PAYLOAD_LEN: usize = 56;
const C_PAYLOAD_CRC: usize = 64;
/// First byte after the last header field; zeros from here to the crc.
const C_END: usize = 68;

type Block = [u8; 4096];

fn put_u32(b: &mut Block, at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(b: &mut Block, at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn put_bytes(b: &mut Block, at: usize, v: &[u8]) {
    b[at..at + v.len()].copy_from_slice(v);
}

fn get_u32(b: &Block, at: usize) -> u32 {
    let mut a = [0; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn get_u64(b: &Block, at: usize) -> u64 {
    let mut a = [0; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn get_array<const N: usize>(b: &Block, at: usize) -> [u8; N] {
    let mut a = [0; N];
    a.copy_from_slice(&b[at..at + N]);
    a
}

fn get_uuid(b: &Block, at: usize) -> Uuid {
    Uuid::from_bytes(get_array(b, at))
}

/// The first 4096 bytes of `buf`, if it has that many.
fn first_block(buf: &[u8]) -> Option<&Block> {
    buf.get(..4096).and_then(|b| b.try_into().ok())
}

/// The crc stored at [`CRC_OFFSET`] and the one computed over the bytes before it.
fn crcs(b: &Block) -> (u32, u32) {
    (get_u32(b, CRC_OFFSET), crc32c(&b[..CRC_OFFSET]))
}

/// Checks that a name fits its field (at most `max` bytes, no NUL).
fn check_name(field: &'static str, name: &str, max: usize) -> Result<(), OnDiskError> {
    if name.len() > max {
        return Err(OnDiskError::NameTooLong {
            field,
            len: name.len(),
            max,
        });
    }
    if name.contains('\0') {
        return Err(OnDiskError::InvalidField(format!(
            "{field} {name:?} contains a NUL byte"
        )));
    }
    Ok(())
}

/// Decodes a NUL-padded name field: the bytes before the first NUL, which must exist and be
/// followed only by NULs, and must be UTF-8.
fn get_name(field: &str, bytes: &[u8]) -> Result<String, String> {
    let Some(end) = bytes.iter().position(|&c| c == 0) else {
        return Err(format!("{field} is not NUL-terminated"));
    };
    if bytes[end..].iter().any(|&c| c != 0) {
        return Err(format!("{field} has bytes after its terminating NUL"));
    }
    String::from_utf8(bytes[..end].to_vec()).map_err(|_| format!("{field} is not valid UTF-8"))
}

/// Checks that group fields agree with the state: a free disk names no group; a member
/// names its group (non-nil id, non-empty name) and its own disk name.
fn check_membership(
    state: DiskState,
    dg_id: Uuid,
    dg_name: &str,
    disk_name: &str,
) -> Result<(), String> {
    match state {
        DiskState::Free => {
            if !dg_id.is_nil() || !dg_name.is_empty() || !disk_name.is_empty() {
                return Err(format!(
                    "the disk is free but names a disk group (dg_id {dg_id}, dg_name \
                     {dg_name:?}, disk_name {disk_name:?})"
                ));
            }
        }
        DiskState::Imported | DiskState::Deported => {
            if dg_id.is_nil() || dg_name.is_empty() || disk_name.is_empty() {
                return Err(format!(
                    "the disk is in state {state:?} but its group is incomplete (dg_id \
                     {dg_id}, dg_name {dg_name:?}, disk_name {disk_name:?})"
                ));
            }
        }
    }
    Ok(())
}

impl Label {
    /// Encodes the label into exactly [`LABEL_SIZE`] bytes. Fails if a name is too long or
    /// contains NUL, if the group fields contradict the state, if the version is not
    /// [`FORMAT_VERSION`], or if the layout is invalid for the block size.
    pub fn encode(&self) -> Result<Vec<u8>, OnDiskError> {
        if self.version != FORMAT_VERSION {
            return Err(OnDiskError::InvalidField(format!(
                "version {} cannot be written: this plexd writes format version {FORMAT_VERSION}",
                self.version
            )));
        }
        check_name("dg_name", &self.dg_name, NAME_MAX)?;
        check_name("disk_name", &self.disk_name, NAME_MAX)?;
        check_name("hostname", &self.hostname, HOST_MAX)?;
        check_membership(self.state, self.dg_id, &self.dg_name, &self.disk_name)
            .map_err(OnDiskError::InvalidField)?;
        self.layout.validate()?;
        self.layout.check_block_size(self.block_size)?;

        let l = &self.layout;
        let mut b: Block = [0; 4096];
        put_bytes(&mut b, 0, &LABEL_MAGIC);
        put_u32(&mut b, L_VERSION, self.version);
        put_u32(&mut b, L_HEADER_LEN, LABEL_SIZE as u32);
        put_u32(&mut b, L_BLOCK_SIZE, self.block_size);
        put_u32(&mut b, L_STATE, self.state.to_u32());
        put_bytes(&mut b, L_DISK_ID, self.disk_id.as_bytes());
        put_bytes(&mut b, L_DG_ID, self.dg_id.as_bytes());
        put_u64(&mut b, L_SERIAL, self.serial);
        put_u64(&mut b, L_CREATED, self.created);
        put_u64(&mut b, L_PRIVATE_LEN, l.private_len);
        put_u64(&mut b, L_PUBLIC_OFFSET, l.public_offset);
        put_u64(&mut b, L_PUBLIC_LEN, l.public_len);
        put_u64(&mut b, L_LOG_OFFSET, l.log_offset);
        put_u64(&mut b, L_LOG_LEN, l.log_len);
        put_u64(&mut b, L_CONFIG_OFFSET, l.config_offset);
        put_u64(&mut b, L_CONFIG_SLOT_LEN, l.config_slot_len);
        put_u32(&mut b, L_CONFIG_SLOTS, l.config_slots);
        put_u64(&mut b, L_LABEL_OFFSET0, l.label_offsets[0]);
        put_u64(&mut b, L_LABEL_OFFSET1, l.label_offsets[1]);
        put_bytes(&mut b, L_DG_NAME, self.dg_name.as_bytes());
        put_bytes(&mut b, L_DISK_NAME, self.disk_name.as_bytes());
        put_bytes(&mut b, L_HOSTNAME, self.hostname.as_bytes());
        let crc = crc32c(&b[..CRC_OFFSET]);
        put_u32(&mut b, CRC_OFFSET, crc);
        Ok(b.to_vec())
    }

    /// Decodes a label from the first [`LABEL_SIZE`] bytes of `buf` (further bytes are
    /// ignored). Checks, in order: length, blank, magic, version, checksum, fields. Never
    /// panics.
    pub fn decode(buf: &[u8]) -> Result<Label, LabelError> {
        let b = first_block(buf).ok_or(LabelError::TooShort(buf.len()))?;
        if b.iter().all(|&c| c == 0) {
            return Err(LabelError::Blank);
        }
        let magic: [u8; 8] = get_array(b, 0);
        if magic != LABEL_MAGIC {
            return Err(LabelError::Foreign { magic });
        }
        let version = get_u32(b, L_VERSION);
        if version != FORMAT_VERSION {
            return Err(LabelError::UnsupportedVersion {
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        let (stored, computed) = crcs(b);
        if stored != computed {
            return Err(LabelError::Corrupt { stored, computed });
        }
        Self::decode_fields(b).map_err(LabelError::Invalid)
    }

    fn decode_fields(b: &Block) -> Result<Label, String> {
        let header_len = get_u32(b, L_HEADER_LEN);
        if header_len != LABEL_SIZE as u32 {
            return Err(format!("header_len is {header_len}, expected {LABEL_SIZE}"));
        }
        let reserved = get_u32(b, L_RESERVED);
        if reserved != 0 {
            return Err(format!(
                "reserved field at byte {L_RESERVED} is {reserved}, not 0"
            ));
        }
        if b[L_END..CRC_OFFSET].iter().any(|&c| c != 0) {
            return Err(format!("reserved bytes {L_END}..{CRC_OFFSET} are not zero"));
        }
        let code = get_u32(b, L_STATE);
        let state = DiskState::from_u32(code).ok_or_else(|| format!("unknown state {code}"))?;
        let block_size = get_u32(b, L_BLOCK_SIZE);
        let layout = RegionLayout {
            label_offsets: [get_u64(b, L_LABEL_OFFSET0), get_u64(b, L_LABEL_OFFSET1)],
            log_offset: get_u64(b, L_LOG_OFFSET),
            log_len: get_u64(b, L_LOG_LEN),
            config_offset: get_u64(b, L_CONFIG_OFFSET),
            config_slot_len: get_u64(b, L_CONFIG_SLOT_LEN),
            config_slots: get_u32(b, L_CONFIG_SLOTS),
            private_len: get_u64(b, L_PRIVATE_LEN),
            public_offset: get_u64(b, L_PUBLIC_OFFSET),
            public_len: get_u64(b, L_PUBLIC_LEN),
        };
        layout.check()?;
        layout.check_block_alignment(block_size)?;
        let dg_name = get_name("dg_name", &b[L_DG_NAME..L_DISK_NAME])?;
        let disk_name = get_name("disk_name", &b[L_DISK_NAME..L_HOSTNAME])?;
        let hostname = get_name("hostname", &b[L_HOSTNAME..L_END])?;
        let dg_id = get_uuid(b, L_DG_ID);
        check_membership(state, dg_id, &dg_name, &disk_name)?;
        Ok(Label {
            version: get_u32(b, L_VERSION),
            block_size,
            disk_id: get_uuid(b, L_DISK_ID),
            dg_id,
            dg_name,
            disk_name,
            state,
            serial: get_u64(b, L_SERIAL),
            hostname,
            created: get_u64(b, L_CREATED),
            layout,
        })
    }
}

/// The header block of a configuration-slot copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigHeader {
    /// Format version.
    pub version: u32,
    /// The disk group whose configuration this is.
    pub dg_id: Uuid,
    /// Sequence number of the configuration; each commit adds one.
    pub seq: u64,
    /// Random identity of the commit (tells apart two copies with the same `seq`).
    pub commit_id: Uuid,
    /// Length in bytes of the payload that follows the header block.
    pub payload_len: u64,
    /// crc32c of the payload.
    pub payload_crc: u32,
}

impl ConfigHeader {
    /// Checks that the payload fits in a slot of `layout` (the header alone cannot know).
    pub fn check_fits(&self, layout: &RegionLayout) -> Result<(), ConfigCopyError> {
        let max = layout.max_payload();
        if self.payload_len > max {
            return Err(ConfigCopyError::Invalid(format!(
                "payload_len {} is larger than a slot holds ({max} bytes)",
                self.payload_len
            )));
        }
        Ok(())
    }

    /// Bytes of the copy after the header block: `payload_len` rounded up to 4096. Saturates on
    /// absurd lengths to the largest multiple of 4096 (which [`ConfigHeader::check_fits`] rejects).
    pub fn padded_payload_len(&self) -> u64 {
        self.payload_len
            .checked_next_multiple_of(FORMAT_ALIGN)
            .unwrap_or(u64::MAX - (FORMAT_ALIGN - 1))
    }
}

/// Encodes a configuration copy: the header block followed by `payload`, padded with zeros to
/// a multiple of 4096. Fails if the payload does not fit in a slot of `layout`, or if the
/// layout is invalid.
pub fn encode_config_copy(
    dg_id: Uuid,
    seq: u64,
    commit_id: Uuid,
    payload: &[u8],
    layout: &RegionLayout,
) -> Result<Vec<u8>, OnDiskError> {
    layout.validate()?;
    let len = payload.len() as u64;
    let max = layout.max_payload();
    if len > max {
        return Err(OnDiskError::PayloadTooLarge { len, max });
    }
    let mut h: Block = [0; 4096];
    put_bytes(&mut h, 0, &CONFIG_MAGIC);
    put_u32(&mut h, C_VERSION, FORMAT_VERSION);
    put_bytes(&mut h, C_DG_ID, dg_id.as_bytes());
    put_u64(&mut h, C_SEQ, seq);
    put_bytes(&mut h, C_COMMIT_ID, commit_id.as_bytes());
    put_u64(&mut h, C_PAYLOAD_LEN, len);
    put_u32(&mut h, C_PAYLOAD_CRC, crc32c(payload));
    let crc = crc32c(&h[..CRC_OFFSET]);
    put_u32(&mut h, CRC_OFFSET, crc);

    let padded = payload.len().div_ceil(SLOT_HEADER_SIZE) * SLOT_HEADER_SIZE;
    let mut out = Vec::with_capacity(SLOT_HEADER_SIZE + padded);
    out.extend_from_slice(&h);
    out.extend_from_slice(payload);
    out.resize(SLOT_HEADER_SIZE + padded, 0);
    Ok(out)
}

/// Decodes the header of a configuration copy from the first [`SLOT_HEADER_SIZE`] bytes of
/// `buf` (further bytes are ignored). Checks, in order: length, empty, magic, version,
/// checksum, fields. Does not know the slot length: use [`ConfigHeader::check_fits`]. Never
/// panics.
pub fn decode_config_header(buf: &[u8]) -> Result<ConfigHeader, ConfigCopyError> {
    let b = first_block(buf).ok_or(ConfigCopyError::TooShort(buf.len()))?;
    if b.iter().all(|&c| c == 0) {
        return Err(ConfigCopyError::Empty);
    }
    let magic: [u8; 8] = get_array(b, 0);
    if magic != CONFIG_MAGIC {
        return Err(ConfigCopyError::Foreign { magic });
    }
    let version = get_u32(b, C_VERSION);
    if version != FORMAT_VERSION {
        return Err(ConfigCopyError::UnsupportedVersion {
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    let (stored, computed) = crcs(b);
    if stored != computed {
        return Err(ConfigCopyError::Corrupt { stored, computed });
    }
    let reserved = get_u32(b, C_RESERVED);
    if reserved != 0 {
        return Err(ConfigCopyError::Invalid(format!(
            "reserved field at byte {C_RESERVED} is {reserved}, not 0"
        )));
    }
    if b[C_END..CRC_OFFSET].iter().any(|&c| c != 0) {
        return Err(ConfigCopyError::Invalid(format!(
            "reserved bytes {C_END}..{CRC_OFFSET} are not zero"
        )));
    }
    Ok(ConfigHeader {
        version,
        dg_id: get_uuid(b, C_DG_ID),
        seq: get_u64(b, C_SEQ),
        commit_id: get_uuid(b, C_COMMIT_ID),
        payload_len: get_u64(b, C_PAYLOAD_LEN),
        payload_crc: get_u32(b, C_PAYLOAD_CRC),
    })
}

/// Checks `payload` (exactly `h.payload_len` bytes, without padding) against the header's
/// length and checksum.
pub fn verify_config_payload(h: &ConfigHeader, payload: &[u8]) -> Result<(), ConfigCopyError> {
    if payload.len() as u64 != h.payload_len {
        return Err(ConfigCopyError::Invalid(format!(
            "payload is {} bytes but the header says {}",
            payload.len(),
            h.payload_len
        )));
    }
    let computed = crc32c(payload);
    if computed != h.payload_crc {
        return Err(ConfigCopyError::PayloadCorrupt {
            stored: h.payload_crc,
            computed,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const DISK_64M: u64 = 64 * MIB;

    fn member_label() -> Label {
        Label {
            version: FORMAT_VERSION,
            block_size: 512,
            disk_id: Uuid::from_u128(0x1111_2222_3333_4444_5555_6666_7777_8888),
            dg_id: Uuid::from_u128(0x9999_aaaa_bbbb_cccc_dddd_eeee_ffff_0000),
            dg_name: "datadg".to_string(),
            disk_name: "disk01".to_string(),
            state: DiskState::Imported,
            serial: 42,
            hostname: "host-a.example".to_string(),
            created: 1_700_000_000,
            layout: RegionLayout::for_disk(DISK_64M, 512).expect("64 MiB is enough"),
        }
    }

    /// Rewrites the crc of a label or header block after a deliberate change.
    fn reseal(buf: &mut [u8]) {
        let crc = crc32c(&buf[..CRC_OFFSET]);
        buf[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
    }

    fn set_u64(buf: &mut [u8], at: usize, v: u64) {
        buf[at..at + 8].copy_from_slice(&v.to_le_bytes());
    }

    fn set_u32(buf: &mut [u8], at: usize, v: u32) {
        buf[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }

    #[test]
    fn label_round_trip() {
        let label = member_label();
        let bytes = label.encode().expect("encodes");
        assert_eq!(bytes.len(), LABEL_SIZE);
        assert_eq!(&bytes[..8], &LABEL_MAGIC);
        assert_eq!(Label::decode(&bytes), Ok(label.clone()));
        // Longer buffers: only the first block counts.
        let mut long = bytes.clone();
        long.extend_from_slice(&[0xAB; 100]);
        assert_eq!(Label::decode(&long), Ok(label));
    }

    #[test]
    fn free_label_round_trip() {
        let label = Label {
            dg_id: Uuid::nil(),
            dg_name: String::new(),
            disk_name: String::new(),
            state: DiskState::Free,
            block_size: 4096,
            layout: RegionLayout::for_disk(DISK_64M, 4096).expect("layout"),
            ..member_label()
        };
        let bytes = label.encode().expect("encodes");
        assert_eq!(Label::decode(&bytes), Ok(label));
    }

    #[test]
    fn label_field_offsets() {
        let label = member_label();
        let b = label.encode().expect("encodes");
        assert_eq!(&b[0..8], b"PLEXDVM\0");
        assert_eq!(b[8..12], 1u32.to_le_bytes());
        assert_eq!(b[12..16], 4096u32.to_le_bytes());
        assert_eq!(b[16..20], 512u32.to_le_bytes());
        assert_eq!(b[20..24], 1u32.to_le_bytes());
        assert_eq!(&b[24..40], label.disk_id.as_bytes());
        assert_eq!(&b[40..56], label.dg_id.as_bytes());
        assert_eq!(b[56..64], 42u64.to_le_bytes());
        assert_eq!(b[64..72], 1_700_000_000u64.to_le_bytes());
        assert_eq!(b[72..80], (4 * MIB).to_le_bytes());
        assert_eq!(b[80..88], (4 * MIB).to_le_bytes());
        assert_eq!(b[88..96], (60 * MIB).to_le_bytes());
        assert_eq!(b[96..104], (64 * KIB).to_le_bytes());
        assert_eq!(b[104..112], (960 * KIB).to_le_bytes());
        assert_eq!(b[112..120], MIB.to_le_bytes());
        assert_eq!(b[120..128], (3 * MIB / 2).to_le_bytes());
        assert_eq!(b[128..132], 2u32.to_le_bytes());
        assert_eq!(b[136..144], 0u64.to_le_bytes());
        assert_eq!(b[144..152], 4096u64.to_le_bytes());
        assert_eq!(&b[152..158], b"datadg");
        assert_eq!(&b[184..190], b"disk01");
        assert_eq!(&b[216..230], b"host-a.example");
        assert!(b[230..4092].iter().all(|&c| c == 0));
        assert_eq!(b[4092..], crc32c(&b[..4092]).to_le_bytes());
    }

    #[test]
    fn default_layout_64m_bs512() {
        let l = RegionLayout::for_disk(DISK_64M, 512).expect("layout");
        assert_eq!(l.label_offsets, [0, 4096]);
        assert_eq!(l.log_offset, 64 * KIB);
        assert_eq!(l.log_len, 960 * KIB);
        assert_eq!(l.config_offset, MIB);
        assert_eq!(l.config_slot_len, 3 * MIB / 2);
        assert_eq!(l.config_slots, 2);
        assert_eq!(l.slot_offset(0), MIB);
        assert_eq!(l.slot_offset(1), 5 * MIB / 2);
        assert_eq!(l.max_payload(), 3 * MIB / 2 - 4096);
        assert_eq!(l.private_len, 4 * MIB);
        assert_eq!(l.public_offset, 4 * MIB);
        assert_eq!(l.public_len, 60 * MIB);
        // A length that is not a multiple of 4096 is rounded down.
        let odd = RegionLayout::for_disk(DISK_64M + 512, 512).expect("layout");
        assert_eq!(odd.public_len, 60 * MIB);
    }

    #[test]
    fn default_layout_64m_bs4096() {
        let l = RegionLayout::for_disk(DISK_64M, 4096).expect("layout");
        let l512 = RegionLayout::for_disk(DISK_64M, 512).expect("layout");
        assert_eq!(l, l512);
        let odd = RegionLayout::for_disk(DISK_64M + 4095, 4096).expect("layout");
        assert_eq!(odd.public_len, 60 * MIB);
    }

    #[test]
    fn large_blocks_keep_labels_apart() {
        for bs in [8192u32, 16384, 32768, 65536] {
            let l = RegionLayout::for_disk(DISK_64M + 4096, bs).expect("layout");
            assert_eq!(l.label_offsets, [0, u64::from(bs)]);
            assert_eq!(l.label_offsets, label_probe_offsets(bs));
            assert!(l.log_offset >= 2 * u64::from(bs));
            assert_eq!(l.log_offset + l.log_len, MIB);
            assert_eq!(l.public_len, 60 * MIB, "bs {bs}");
            l.check_block_size(bs).expect("aligned");
        }
        assert_eq!(label_probe_offsets(512), [0, 4096]);
    }

    #[test]
    fn unsupported_block_sizes() {
        for bs in [0u32, 256, 1536, 131072] {
            assert!(
                matches!(
                    RegionLayout::for_disk(DISK_64M, bs),
                    Err(OnDiskError::InvalidLayout(_))
                ),
                "bs {bs}"
            );
        }
    }

    #[test]
    fn disk_too_small() {
        let err = RegionLayout::for_disk(5 * MIB - 1, 512).unwrap_err();
        assert_eq!(
            err,
            OnDiskError::TooSmall {
                need: 5 * MIB,
                have: 5 * MIB - 1
            }
        );
        assert!(err.to_string().contains("at least 5242880 bytes"));
        let l = RegionLayout::for_disk(5 * MIB, 512).expect("exactly enough");
        assert_eq!(l.public_len, MIB);
        assert!(matches!(
            RegionLayout::for_disk(0, 512),
            Err(OnDiskError::TooSmall { .. })
        ));
    }

    #[test]
    fn names_of_31_bytes_ok_32_rejected() {
        let mut label = member_label();
        label.dg_name = "a".repeat(NAME_MAX);
        label.disk_name = "é".repeat(15) + "x"; // 31 bytes of UTF-8
        label.hostname = "h".repeat(HOST_MAX);
        let bytes = label.encode().expect("maximal names fit");
        assert_eq!(Label::decode(&bytes), Ok(label.clone()));

        let mut long = label.clone();
        long.dg_name = "a".repeat(32);
        assert_eq!(
            long.encode(),
            Err(OnDiskError::NameTooLong {
                field: "dg_name",
                len: 32,
                max: NAME_MAX
            })
        );
        let mut long = label.clone();
        long.disk_name = "é".repeat(16); // 32 bytes
        assert!(matches!(
            long.encode(),
            Err(OnDiskError::NameTooLong {
                field: "disk_name",
                ..
            })
        ));
        let mut long = label.clone();
        long.hostname = "h".repeat(64);
        assert!(matches!(
            long.encode(),
            Err(OnDiskError::NameTooLong {
                field: "hostname",
                ..
            })
        ));
        let mut nul = label;
        nul.disk_name = "di\0sk".to_string();
        assert!(matches!(nul.encode(), Err(OnDiskError::InvalidField(_))));
    }

    #[test]
    fn encode_rejects_inconsistent_labels() {
        let mut free_with_group = member_label();
        free_with_group.state = DiskState::Free;
        assert!(matches!(
            free_with_group.encode(),
            Err(OnDiskError::InvalidField(_))
        ));
        let mut member_without_id = member_label();
        member_without_id.dg_id = Uuid::nil();
        assert!(matches!(
            member_without_id.encode(),
            Err(OnDiskError::InvalidField(_))
        ));
        let mut v2 = member_label();
        v2.version = 2;
        assert!(matches!(v2.encode(), Err(OnDiskError::InvalidField(_))));
        let mut bad_layout = member_label();
        bad_layout.layout.config_slots = 0;
        assert!(matches!(
            bad_layout.encode(),
            Err(OnDiskError::InvalidLayout(_))
        ));
    }

    #[test]
    fn label_too_short() {
        let bytes = member_label().encode().expect("encodes");
        assert_eq!(
            Label::decode(&bytes[..4095]),
            Err(LabelError::TooShort(4095))
        );
        assert_eq!(Label::decode(&[]), Err(LabelError::TooShort(0)));
    }

    #[test]
    fn label_blank() {
        let err = Label::decode(&[0; LABEL_SIZE]).unwrap_err();
        assert_eq!(err, LabelError::Blank);
        assert!(err.to_string().contains("blank"));
    }

    #[test]
    fn label_foreign() {
        let mut bytes = member_label().encode().expect("encodes");
        bytes[..8].copy_from_slice(b"XFSB\0\0\0\0");
        let err = Label::decode(&bytes).unwrap_err();
        assert_eq!(
            err,
            LabelError::Foreign {
                magic: *b"XFSB\0\0\0\0"
            }
        );
        assert!(err.to_string().contains("unless forced"));
        // Something non-zero anywhere but the magic is still foreign, not blank.
        let mut other = [0u8; LABEL_SIZE];
        other[100] = 1;
        assert!(matches!(
            Label::decode(&other),
            Err(LabelError::Foreign { magic }) if magic == [0; 8]
        ));
    }

    #[test]
    fn label_corrupt() {
        let good = member_label().encode().expect("encodes");
        for at in [20, 60, 153, 300, 4091, 4092, 4095] {
            let mut bytes = good.clone();
            bytes[at] ^= 0x10;
            assert!(
                matches!(Label::decode(&bytes), Err(LabelError::Corrupt { .. })),
                "byte {at}"
            );
        }
    }

    #[test]
    fn label_unsupported_version() {
        for (found, word) in [(2u32, "newer"), (0, "older")] {
            let mut bytes = member_label().encode().expect("encodes");
            set_u32(&mut bytes, L_VERSION, found);
            // Without resealing: the version is reported, not the checksum.
            let err = Label::decode(&bytes).unwrap_err();
            assert_eq!(
                err,
                LabelError::UnsupportedVersion {
                    found,
                    supported: FORMAT_VERSION
                }
            );
            assert!(err.to_string().contains(word), "{err}");
            reseal(&mut bytes);
            assert_eq!(Label::decode(&bytes), Err(err));
        }
        // The version field is only trusted behind the right magic.
        let mut bytes = member_label().encode().expect("encodes");
        set_u32(&mut bytes, L_VERSION, 2);
        bytes[0] = b'Q';
        assert!(matches!(
            Label::decode(&bytes),
            Err(LabelError::Foreign { .. })
        ));
    }

    /// A named, deliberate change to a label.
    type Damage = (&'static str, fn(&mut [u8]));

    #[test]
    fn label_invalid_fields_with_good_crc() {
        let good = member_label().encode().expect("encodes");
        let cases: &[Damage] = &[
            ("log overlaps labels", |b| set_u64(b, L_LOG_OFFSET, 0)),
            ("unaligned", |b| set_u64(b, L_CONFIG_OFFSET, MIB + 1)),
            ("no slots", |b| set_u32(b, L_CONFIG_SLOTS, 0)),
            ("slot too short", |b| set_u64(b, L_CONFIG_SLOT_LEN, 4096)),
            ("slots past private", |b| set_u32(b, L_CONFIG_SLOTS, 3)),
            ("public inside private", |b| {
                set_u64(b, L_PUBLIC_OFFSET, 3 * MIB)
            }),
            ("public too short", |b| set_u64(b, L_PUBLIC_LEN, 4096)),
            ("public overflows", |b| {
                set_u64(b, L_PUBLIC_LEN, u64::MAX - 4095)
            }),
            ("slot overflow", |b| {
                set_u64(b, L_CONFIG_SLOT_LEN, u64::MAX - 4095)
            }),
            ("primary not at 0", |b| set_u64(b, L_LABEL_OFFSET0, 4096)),
            ("backup overlaps", |b| set_u64(b, L_LABEL_OFFSET1, 0)),
            ("header_len", |b| set_u32(b, L_HEADER_LEN, 512)),
            ("state", |b| set_u32(b, L_STATE, 3)),
            ("block size", |b| set_u32(b, L_BLOCK_SIZE, 1000)),
            ("block align", |b| set_u32(b, L_BLOCK_SIZE, 65536)),
            ("reserved", |b| set_u32(b, L_RESERVED, 1)),
            ("tail", |b| b[4000] = 1),
            ("utf8", |b| b[L_DG_NAME] = 0xFF),
            ("no nul", |b| b[L_DG_NAME..L_DISK_NAME].fill(b'a')),
            ("after nul", |b| b[L_DISK_NAME + 20] = b'z'),
            ("free with group", |b| set_u32(b, L_STATE, 0)),
            ("member without name", |b| {
                b[L_DISK_NAME..L_HOSTNAME].fill(0)
            }),
        ];
        for &(what, damage) in cases {
            let mut bytes = good.clone();
            damage(&mut bytes);
            reseal(&mut bytes);
            let err = Label::decode(&bytes).unwrap_err();
            assert!(matches!(err, LabelError::Invalid(_)), "{what}: {err:?}");
        }
    }

    #[test]
    fn config_copy_round_trip() {
        let layout = RegionLayout::for_disk(DISK_64M, 512).expect("layout");
        let dg = Uuid::new_v4();
        let commit = Uuid::new_v4();
        let payload = br#"{"dg":"datadg","disks":[]}"#;
        let copy = encode_config_copy(dg, 7, commit, payload, &layout).expect("encodes");
        assert_eq!(copy.len(), 2 * SLOT_HEADER_SIZE);
        assert_eq!(&copy[..8], &CONFIG_MAGIC);
        assert_eq!(copy[4092..4096], crc32c(&copy[..4092]).to_le_bytes());
        let h = decode_config_header(&copy).expect("header");
        assert_eq!(
            h,
            ConfigHeader {
                version: FORMAT_VERSION,
                dg_id: dg,
                seq: 7,
                commit_id: commit,
                payload_len: payload.len() as u64,
                payload_crc: crc32c(payload),
            }
        );
        h.check_fits(&layout).expect("fits");
        assert_eq!(h.padded_payload_len(), 4096);
        let body = &copy[SLOT_HEADER_SIZE..SLOT_HEADER_SIZE + payload.len()];
        verify_config_payload(&h, body).expect("payload");
        assert!(copy[SLOT_HEADER_SIZE + payload.len()..]
            .iter()
            .all(|&c| c == 0));

        // Empty payload: header block only.
        let empty = encode_config_copy(dg, 1, commit, &[], &layout).expect("encodes");
        assert_eq!(empty.len(), SLOT_HEADER_SIZE);
        let h = decode_config_header(&empty).expect("header");
        verify_config_payload(&h, &[]).expect("empty payload");
    }

    #[test]
    fn config_payload_corrupt() {
        let layout = RegionLayout::for_disk(DISK_64M, 512).expect("layout");
        let payload = b"{\"volumes\":[1,2,3]}".to_vec();
        let copy = encode_config_copy(Uuid::new_v4(), 3, Uuid::new_v4(), &payload, &layout)
            .expect("encodes");
        let h = decode_config_header(&copy).expect("header");
        let mut bad = payload.clone();
        bad[5] ^= 1;
        assert!(matches!(
            verify_config_payload(&h, &bad),
            Err(ConfigCopyError::PayloadCorrupt { stored, computed })
                if stored == crc32c(&payload) && computed == crc32c(&bad)
        ));
        assert!(matches!(
            verify_config_payload(&h, &payload[..payload.len() - 1]),
            Err(ConfigCopyError::Invalid(_))
        ));
    }

    #[test]
    fn config_payload_too_large() {
        let layout = RegionLayout::for_disk(DISK_64M, 512).expect("layout");
        let max = layout.max_payload();
        let fits = vec![b' '; max as usize];
        let copy = encode_config_copy(Uuid::new_v4(), 1, Uuid::new_v4(), &fits, &layout)
            .expect("max payload fits");
        assert_eq!(copy.len() as u64, layout.config_slot_len);
        let big = vec![b' '; max as usize + 1];
        assert_eq!(
            encode_config_copy(Uuid::new_v4(), 1, Uuid::new_v4(), &big, &layout),
            Err(OnDiskError::PayloadTooLarge { len: max + 1, max })
        );
        // A header claiming more than the slot holds (crc correct) is rejected by check_fits.
        let mut hdr = copy[..SLOT_HEADER_SIZE].to_vec();
        set_u64(&mut hdr, C_PAYLOAD_LEN, max + 1);
        reseal(&mut hdr);
        let h = decode_config_header(&hdr).expect("header alone is fine");
        assert!(matches!(
            h.check_fits(&layout),
            Err(ConfigCopyError::Invalid(_))
        ));
        set_u64(&mut hdr, C_PAYLOAD_LEN, u64::MAX);
        reseal(&mut hdr);
        let h = decode_config_header(&hdr).expect("header alone is fine");
        assert_eq!(h.padded_payload_len(), u64::MAX - 4095);
        assert!(h.check_fits(&layout).is_err());
    }

    #[test]
    fn config_header_errors() {
        let layout = RegionLayout::for_disk(DISK_64M, 512).expect("layout");
        let copy =
            encode_config_copy(Uuid::new_v4(), 9, Uuid::new_v4(), b"{}", &layout).expect("encodes");
        assert_eq!(
            decode_config_header(&copy[..100]),
            Err(ConfigCopyError::TooShort(100))
        );
        assert_eq!(
            decode_config_header(&[0; SLOT_HEADER_SIZE]),
            Err(ConfigCopyError::Empty)
        );
        let mut foreign = copy.clone();
        foreign[0] = b'X';
        assert!(matches!(
            decode_config_header(&foreign),
            Err(ConfigCopyError::Foreign { .. })
        ));
        let mut v2 = copy.clone();
        set_u32(&mut v2, C_VERSION, 2);
        assert_eq!(
            decode_config_header(&v2),
            Err(ConfigCopyError::UnsupportedVersion {
                found: 2,
                supported: FORMAT_VERSION
            })
        );
        let mut torn = copy.clone();
        torn[C_SEQ] ^= 1;
        assert!(matches!(
            decode_config_header(&torn),
            Err(ConfigCopyError::Corrupt { .. })
        ));
        let mut reserved = copy.clone();
        set_u32(&mut reserved, C_RESERVED, 5);
        reseal(&mut reserved);
        assert!(matches!(
            decode_config_header(&reserved),
            Err(ConfigCopyError::Invalid(_))
        ));
        let mut tail = copy;
        tail[1000] = 1;
        reseal(&mut tail);
        assert!(matches!(
            decode_config_header(&tail),
            Err(ConfigCopyError::Invalid(_))
        ));
    }

    #[test]
    fn error_messages_are_actionable() {
        let newer = LabelError::UnsupportedVersion {
            found: 2,
            supported: 1,
        };
        assert!(newer.to_string().contains("upgrade plexd"));
        let foreign = LabelError::Foreign {
            magic: *b"EFI PART",
        };
        assert!(foreign.to_string().contains("\"EFI PART\""), "{foreign}");
        let older = ConfigCopyError::UnsupportedVersion {
            found: 0,
            supported: 1,
        };
        assert!(older.to_string().contains("older"));
    }

    fn name(max: usize) -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![Just('a'), Just('Z'), Just('-'), Just('é'), Just('漢')],
            0..=max,
        )
        .prop_map(move |chars| {
            let mut s = String::new();
            for c in chars {
                if s.len() + c.len_utf8() > max {
                    break;
                }
                s.push(c);
            }
            s
        })
    }

    fn any_label() -> impl Strategy<Value = Label> {
        (
            any::<u128>(),
            any::<u128>(),
            name(NAME_MAX),
            name(NAME_MAX),
            name(HOST_MAX),
            any::<u64>(),
            any::<u64>(),
            prop_oneof![Just(512u32), Just(4096), Just(65536)],
            (5 * MIB..1 << 50, 0u8..3),
        )
            .prop_map(
                |(disk, dg, dg_name, disk_name, hostname, serial, created, bs, (len, st))| {
                    let state = DiskState::from_u32(u32::from(st)).unwrap_or(DiskState::Free);
                    let member = state != DiskState::Free;
                    let nonempty = |s: String| if s.is_empty() { "x".to_string() } else { s };
                    Label {
                        version: FORMAT_VERSION,
                        block_size: bs,
                        disk_id: Uuid::from_u128(disk),
                        dg_id: if member {
                            Uuid::from_u128(dg | 1)
                        } else {
                            Uuid::nil()
                        },
                        dg_name: if member {
                            nonempty(dg_name)
                        } else {
                            String::new()
                        },
                        disk_name: if member {
                            nonempty(disk_name)
                        } else {
                            String::new()
                        },
                        state,
                        serial,
                        hostname,
                        created,
                        layout: RegionLayout::for_disk(len.max(5 * MIB + 65536), bs)
                            .unwrap_or_else(|e| panic!("layout for {len}: {e}")),
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn decode_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..5000)) {
            let _ = Label::decode(&bytes);
            let _ = decode_config_header(&bytes);
        }

        #[test]
        fn decode_magic_prefixed_bytes_never_panics(
            tail in proptest::collection::vec(any::<u8>(), 4088),
            version in prop_oneof![Just(1u32), any::<u32>()],
        ) {
            // Past the magic and version checks, with and without a correct crc.
            for magic in [LABEL_MAGIC, CONFIG_MAGIC] {
                let mut bytes = magic.to_vec();
                bytes.extend_from_slice(&tail);
                set_u32(&mut bytes, 8, version);
                let _ = Label::decode(&bytes);
                let _ = decode_config_header(&bytes);
                reseal(&mut bytes);
                if let Ok(label) = Label::decode(&bytes) {
                    prop_assert_eq!(label.encode().ok(), Some(bytes.clone()));
                }
                let _ = decode_config_header(&bytes);
            }
        }

        #[test]
        fn label_round_trips(label in any_label()) {
            let bytes = label.encode().map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(bytes.len(), LABEL_SIZE);
            prop_assert_eq!(Label::decode(&bytes), Ok(label));
        }

        #[test]
        fn any_single_byte_change_is_detected(label in any_label(), at in 0..LABEL_SIZE, flip in 1u8..=255) {
            let mut bytes = label.encode().map_err(|e| TestCaseError::fail(e.to_string()))?;
            bytes[at] ^= flip;
            prop_assert!(Label::decode(&bytes).is_err(), "byte {} ^ {:#x} undetected", at, flip);
        }

        #[test]
        fn any_burst_of_four_bytes_is_detected(label in any_label(), at in 0..=LABEL_SIZE - 4, flip in any::<[u8; 4]>()) {
            prop_assume!(flip != [0; 4]);
            let mut bytes = label.encode().map_err(|e| TestCaseError::fail(e.to_string()))?;
            for (i, f) in flip.iter().enumerate() {
                bytes[at + i] ^= f;
            }
            prop_assert!(Label::decode(&bytes).is_err());
        }

        #[test]
        fn random_mutations_never_panic(
            label in any_label(),
            edits in proptest::collection::vec((0..LABEL_SIZE, any::<u8>()), 1..16),
            cut in 0..LABEL_SIZE + 10,
        ) {
            let mut bytes = label.encode().map_err(|e| TestCaseError::fail(e.to_string()))?;
            for (at, v) in edits {
                bytes[at] = v;
            }
            if let Ok(decoded) = Label::decode(&bytes) {
                // A decode that succeeds is canonical.
                prop_assert_eq!(decoded.encode().ok(), Some(bytes.clone()));
            }
            let _ = Label::decode(&bytes[..cut.min(bytes.len())]);
        }

        #[test]
        fn config_header_single_byte_change_is_detected(
            seq in any::<u64>(),
            payload in proptest::collection::vec(any::<u8>(), 0..10000),
            at in 0..SLOT_HEADER_SIZE,
            flip in 1u8..=255,
        ) {
            let layout = RegionLayout::for_disk(DISK_64M, 512).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let mut copy = encode_config_copy(Uuid::new_v4(), seq, Uuid::new_v4(), &payload, &layout)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let h = decode_config_header(&copy).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(h.payload_len, payload.len() as u64);
            prop_assert!(verify_config_payload(&h, &copy[SLOT_HEADER_SIZE..SLOT_HEADER_SIZE + payload.len()]).is_ok());
            copy[at] ^= flip;
            prop_assert!(decode_config_header(&copy).is_err());
        }
    }
}
