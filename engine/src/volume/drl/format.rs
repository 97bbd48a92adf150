//! The byte format of a dirty-region log map: its header page and its bitmap pages.
//!
//! One copy of a volume's map is `1 + 2P` contiguous pages of a disk's log area: page 0 is the
//! header ([`DrlHeader`]), pages `1..=P` the D bitmap ([`PageKind::Dirty`]) and pages
//! `P+1..=2P` the M bitmap ([`PageKind::Missed`]). A page is `max(4096, block_size)` bytes;
//! a bitmap page holds [`bits_per_page`] bits and ends in a [`TRAILER_LEN`]-byte trailer
//! ([`PageTrailer`]) whose crc32c covers the whole page. Region `r` of a page is byte `r / 8`,
//! bit `r % 8` from the least significant ([`get_bit`]); that is also bit `r % 64` of the
//! page's little-endian `u64` number `r / 64`, so an in-memory image kept as `u64` words goes
//! to a page with `to_le_bytes`. The format is specified in `docs/on-disk-format.md` ("Dirty
//! region log").
//!
//! This module is pure: encode, check and merge over byte slices, no I/O, and no allocation
//! except in the message of an error. Nothing here panics, whatever the input: damage is
//! reported as a [`DrlFormatError`]. A header that decodes is canonical (encoding it gives back
//! the same 4096 bytes).
//!
//! Reading a map is conservative ([`merge_pages`]): a page is the OR of its valid copies, a
//! page valid on no copy reads as all ones (more to resync, never less), and an M page of an
//! older epoch reads as zero (the M map was reset since it was written).

use std::fmt;

use uuid::Uuid;

/// Magic at byte 0 of a map's header page.
pub const DRL_MAGIC: [u8; 8] = *b"PLEXDRL\0";
/// The map format version this code reads and writes.
pub const DRL_VERSION: u32 = 1;
/// Size in bytes of the header record at the start of page 0 (the rest of the page is zero).
pub const HEADER_LEN: usize = 4096;
/// Offset of the header's crc32c, which covers every header byte before it.
pub const HEADER_CRC_OFFSET: usize = 4092;
/// Magic at the start of every bitmap page's trailer.
pub const PAGE_MAGIC: [u8; 4] = *b"DRLP";
/// Size in bytes of the trailer at the end of every bitmap page (the model's constant, which
/// the log-area allocator counts pages with).
pub const TRAILER_LEN: usize = crate::volume::model::drl_space::PAGE_TRAILER_BYTES as usize;
/// Smallest page: the 4096-byte record unit of the private region.
pub const MIN_PAGE_SIZE: usize = 4096;
/// Largest page: the largest block size a VM disk supports.
pub const MAX_PAGE_SIZE: usize = 65536;
/// Copies of a map: header copy indexes are `0..COPIES`.
pub const COPIES: u32 = 2;
/// Header flag: the volume uses sequential DRL (only a few regions dirty at a time).
pub const FLAG_SEQUENTIAL: u32 = 1;

// Header fields (offsets into page 0).
const H_VERSION: usize = 8;
const H_HEADER_LEN: usize = 12;
const H_DG_ID: usize = 16;
const H_VOLUME: usize = 32;
const H_EPOCH: usize = 48;
const H_REGION_BLOCKS: usize = 56;
const H_VOLUME_BLOCKS: usize = 64;
const H_NREGIONS: usize = 72;
const H_PAGE_SIZE: usize = 76;
const H_PAGES: usize = 80;
const H_BITS_PER_PAGE: usize = 84;
const H_COPY: usize = 88;
const H_FLAGS: usize = 92;
const H_CREATED: usize = 96;
/// End of the header's fields; bytes from here to the crc are reserved (zero).
const H_END: usize = 104;

// Trailer fields (offsets into the trailer, which starts at `page - TRAILER_LEN`).
const T_KIND: usize = 4;
const T_INDEX: usize = 8;
const T_EPOCH: usize = 16;
const T_CRC: usize = 28;
/// The trailer bytes that must be zero: (offset, length).
const T_ZERO: [(usize, usize); 3] = [(5, 3), (12, 4), (24, 4)];

/// crc32c (Castagnoli) of `data`, as everywhere in the private region.
fn crc32c(data: &[u8]) -> u32 {
    ::crc32c::crc32c(data)
}

/// Why a map's header or page could not be used, or a value could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DrlFormatError {
    /// A buffer is shorter than the record it should hold.
    #[error("buffer of {len} bytes is too short for a region log {what} ({need} bytes needed)")]
    TooShort {
        /// What the buffer should hold ("header", "header page").
        what: &'static str,
        /// Its length.
        len: usize,
        /// The length needed.
        need: usize,
    },
    /// Every header byte is zero: no map was ever written there.
    #[error(
        "no region log here (the header is blank): the map was never written to this place; \
         the other copy is used if valid, else the volume gets a full resync"
    )]
    Blank,
    /// Something other than a map header is where the header should be.
    #[error(
        "not a region log header (magic \"{}\"): the log area holds something else here; the \
         other copy is used if valid, else the volume gets a full resync",
        .found.escape_ascii()
    )]
    BadMagic {
        /// The first eight bytes found.
        found: [u8; 8],
    },
    /// A map header in a format version this code cannot read.
    #[error("{}", version_message(*.found, *.supported))]
    UnsupportedVersion {
        /// Version found on disk.
        found: u32,
        /// Version this code supports.
        supported: u32,
    },
    /// The header's checksum does not match: this copy of the header is damaged.
    #[error(
        "region log header checksum mismatch (stored {stored:#010x}, computed \
         {computed:#010x}): this copy is damaged; the other copy is used if valid, else the \
         volume gets a full resync"
    )]
    HeaderCorrupt {
        /// crc32c stored in the header.
        stored: u32,
        /// crc32c computed over the header.
        computed: u32,
    },
    /// The header's checksum matches but its fields contradict each other.
    #[error(
        "the region log header is inconsistent: {0}; this copy is ignored (the other copy is \
         used if valid, else the volume gets a full resync)"
    )]
    HeaderInvalid(String),
    /// The header is valid but belongs to another disk group or volume.
    #[error(
        "the region log copy belongs to another {what} ({found}, expected {expected}): the \
         configuration points at a place that was reused; this copy is ignored"
    )]
    WrongOwner {
        /// "disk group" or "volume".
        what: &'static str,
        /// The id in the header.
        found: Uuid,
        /// The id the configuration expects.
        expected: Uuid,
    },
    /// The header is valid but does not describe the map the configuration expects.
    #[error(
        "the region log copy does not match the configuration: its {field} is {found}, \
         expected {expected} (an older map, or one made for other settings); this copy is \
         ignored"
    )]
    Mismatch {
        /// The field that differs (`epoch`, `region_blocks`, `volume_blocks`, `page_size`,
        /// `copy`, `flags`).
        field: &'static str,
        /// Its value in the header.
        found: u64,
        /// The value the configuration expects.
        expected: u64,
    },
    /// A region size, volume length and page size that make no map.
    #[error("invalid region log geometry: {0}")]
    BadGeometry(String),
    /// A header copy index other than 0 or 1.
    #[error("region log copy index {0} is out of range: a map has copies 0 and 1")]
    BadCopy(u32),
    /// A page buffer whose length is not a page size.
    #[error(
        "{0} bytes is not a region log page size (a power of two from 4096 to 65536 bytes, \
         the larger of 4096 and the disk's block size)"
    )]
    BadPageSize(usize),
    /// The trailer of a bitmap page does not start with its magic.
    #[error(
        "not a region log page (trailer magic \"{}\"): the page was never written or holds \
         something else; its regions are resynced unless another copy is valid",
        .found.escape_ascii()
    )]
    PageBadMagic {
        /// The four bytes found.
        found: [u8; 4],
    },
    /// The checksum of a bitmap page does not match: the page is torn or damaged.
    #[error(
        "region log page checksum mismatch (stored {stored:#010x}, computed {computed:#010x}): \
         the page is torn or damaged; its regions are resynced unless another copy is valid"
    )]
    PageCorrupt {
        /// crc32c stored in the trailer.
        stored: u32,
        /// crc32c computed over the page.
        computed: u32,
    },
    /// The checksum of a bitmap page matches but its trailer is malformed.
    #[error(
        "the region log page trailer is inconsistent: {0}; its regions are resynced unless \
         another copy is valid"
    )]
    PageInvalid(String),
    /// A valid bitmap page, but not the one expected at this place.
    #[error(
        "the region log page is {found}, expected {expected}; its regions are resynced unless \
         another copy is valid"
    )]
    PageMismatch {
        /// What the page's trailer says it is.
        found: PageTrailer,
        /// What the caller expected.
        expected: PageTrailer,
    },
}

/// The message of an `UnsupportedVersion` error, saying whether the map is older or newer.
fn version_message(found: u32, supported: u32) -> String {
    let age = if found > supported {
        "newer than this plexd supports"
    } else {
        "older than any this plexd can read"
    };
    format!(
        "region log format version {found} is {age} (it supports {supported}); the map is not \
         used, so the volume gets a full resync after a crash"
    )
}

/// Whether `len` is a page size: a power of two from [`MIN_PAGE_SIZE`] to [`MAX_PAGE_SIZE`].
pub const fn is_page_size(len: usize) -> bool {
    len.is_power_of_two() && len >= MIN_PAGE_SIZE && len <= MAX_PAGE_SIZE
}

/// Bits (regions) one bitmap page of `page_size` bytes holds: `(page_size − 32) × 8`; 0 for a
/// buffer no larger than its trailer.
pub const fn bits_per_page(page_size: usize) -> usize {
    page_size.saturating_sub(TRAILER_LEN) * 8
}

/// The geometry of a map: how many regions it has and how its bitmaps are laid out in pages.
///
/// Built only through [`DrlGeometry::new`], so every value is consistent: at least one region,
/// `nregions = ⌈volume_blocks / region_blocks⌉` fits in 32 bits, and the page size is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrlGeometry {
    region_blocks: u64,
    volume_blocks: u64,
    page_size: u32,
    nregions: u32,
    pages: u32,
}

impl DrlGeometry {
    /// The geometry of a map of a volume of `volume_blocks` blocks, in regions of
    /// `region_blocks` blocks, with pages of `page_size` bytes.
    pub fn new(
        region_blocks: u64,
        volume_blocks: u64,
        page_size: u32,
    ) -> Result<DrlGeometry, DrlFormatError> {
        if region_blocks == 0 {
            return Err(DrlFormatError::BadGeometry(
                "the region size is 0 blocks".to_string(),
            ));
        }
        if volume_blocks == 0 {
            return Err(DrlFormatError::BadGeometry(
                "the volume is 0 blocks long".to_string(),
            ));
        }
        let page = usize::try_from(page_size).unwrap_or(usize::MAX);
        if !is_page_size(page) {
            return Err(DrlFormatError::BadPageSize(page));
        }
        let n = volume_blocks.div_ceil(region_blocks);
        let nregions = u32::try_from(n).map_err(|_| {
            DrlFormatError::BadGeometry(format!(
                "{volume_blocks} blocks in regions of {region_blocks} blocks make {n} regions, \
                 more than a map can have ({}); use a larger region size",
                u32::MAX
            ))
        })?;
        // bits_per_page ≥ 32,512, so pages < 2^17 and 1 + 2 × pages cannot overflow.
        let bpp = bits_per_page(page) as u32;
        let pages = nregions.div_ceil(bpp);
        Ok(DrlGeometry {
            region_blocks,
            volume_blocks,
            page_size,
            nregions,
            pages,
        })
    }

    /// Volume blocks per region.
    pub fn region_blocks(&self) -> u64 {
        self.region_blocks
    }

    /// The volume length, in blocks, the map was made for.
    pub fn volume_blocks(&self) -> u64 {
        self.volume_blocks
    }

    /// Page size in bytes.
    pub fn page_size(&self) -> u32 {
        self.page_size
    }

    /// Regions in the volume: bits in each bitmap.
    pub fn nregions(&self) -> u32 {
        self.nregions
    }

    /// Pages of one bitmap (P).
    pub fn pages(&self) -> u32 {
        self.pages
    }

    /// Pages of one copy of the map: the header and both bitmaps, `1 + 2P`.
    pub fn map_pages(&self) -> u32 {
        1 + 2 * self.pages
    }

    /// Bits one bitmap page holds.
    pub fn bits_per_page(&self) -> u32 {
        // At most 524,032 (64 KiB pages).
        bits_per_page(self.page_size as usize) as u32
    }

    /// Page of a bitmap, counted from the map's header page, that holds page `index` of
    /// bitmap `kind`: `1 + index` for D, `1 + P + index` for M.
    pub fn page_offset(&self, kind: PageKind, index: u32) -> u32 {
        match kind {
            PageKind::Dirty => 1 + index,
            PageKind::Missed => 1 + self.pages + index,
        }
    }

    /// Regions held by bitmap page `index`: `bits_per_page` for every page but the last,
    /// the rest for the last, 0 past the end.
    pub fn regions_in_page(&self, index: u32) -> usize {
        let bpp = u64::from(self.bits_per_page());
        let first = u64::from(index) * bpp;
        let n = u64::from(self.nregions).saturating_sub(first).min(bpp);
        n as usize
    }

    /// The bitmap page holding `region`, and its bit within that page; `None` past the last
    /// region.
    pub fn locate(&self, region: u32) -> Option<(u32, usize)> {
        if region >= self.nregions {
            return None;
        }
        let bpp = self.bits_per_page();
        Some((region / bpp, (region % bpp) as usize))
    }
}

/// A map's header: what the map is of and its geometry. One per copy, in page 0 of the copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrlHeader {
    /// The disk group the volume is in.
    pub dg_id: Uuid,
    /// The volume's uuid (`VolumeRecord.uuid`).
    pub volume: Uuid,
    /// The map's epoch: a new map (enabled, region size changed, resized, relocated after a
    /// loss) has a new one, and D pages carry it.
    pub epoch: u64,
    /// Regions and pages.
    pub geometry: DrlGeometry,
    /// Which copy of the map this is, `0..COPIES`.
    pub copy: u32,
    /// Sequential DRL ([`FLAG_SEQUENTIAL`]).
    pub sequential: bool,
    /// When the map was made, in Unix seconds.
    pub created: u64,
}

impl DrlHeader {
    /// Writes the header into `page`, one page of the map's page size: the 4096-byte record,
    /// then zeros to the end of the page. Bytes of `page` past the page size are not touched.
    pub fn encode(&self, page: &mut [u8]) -> Result<(), DrlFormatError> {
        if self.copy >= COPIES {
            return Err(DrlFormatError::BadCopy(self.copy));
        }
        let page_size = self.geometry.page_size as usize;
        let len = page.len();
        let Some(page) = page.get_mut(..page_size) else {
            return Err(DrlFormatError::TooShort {
                what: "header page",
                len,
                need: page_size,
            });
        };
        page.fill(0);
        let g = &self.geometry;
        page[..8].copy_from_slice(&DRL_MAGIC);
        put(page, H_VERSION, &DRL_VERSION.to_le_bytes());
        put(page, H_HEADER_LEN, &(HEADER_LEN as u32).to_le_bytes());
        put(page, H_DG_ID, self.dg_id.as_bytes());
        put(page, H_VOLUME, self.volume.as_bytes());
        put(page, H_EPOCH, &self.epoch.to_le_bytes());
        put(page, H_REGION_BLOCKS, &g.region_blocks.to_le_bytes());
        put(page, H_VOLUME_BLOCKS, &g.volume_blocks.to_le_bytes());
        put(page, H_NREGIONS, &g.nregions.to_le_bytes());
        put(page, H_PAGE_SIZE, &g.page_size.to_le_bytes());
        put(page, H_PAGES, &g.pages.to_le_bytes());
        put(page, H_BITS_PER_PAGE, &g.bits_per_page().to_le_bytes());
        put(page, H_COPY, &self.copy.to_le_bytes());
        put(page, H_FLAGS, &self.flags().to_le_bytes());
        put(page, H_CREATED, &self.created.to_le_bytes());
        let crc = crc32c(&page[..HEADER_CRC_OFFSET]);
        put(page, HEADER_CRC_OFFSET, &crc.to_le_bytes());
        Ok(())
    }

    /// Reads a header from the first 4096 bytes of `page`. Checks, in this order: length,
    /// blank, magic, version (before the crc, so that another version is reported as such),
    /// crc, then every field (reserved bytes zero, known flags, copy index, a geometry that is
    /// consistent and agrees with the stored `nregions`, `pages` and `bits_per_page`).
    pub fn decode(page: &[u8]) -> Result<DrlHeader, DrlFormatError> {
        let Some(h) = page.get(..HEADER_LEN) else {
            return Err(DrlFormatError::TooShort {
                what: "header",
                len: page.len(),
                need: HEADER_LEN,
            });
        };
        if h.iter().all(|&b| b == 0) {
            return Err(DrlFormatError::Blank);
        }
        let magic: [u8; 8] = get(h, 0);
        if magic != DRL_MAGIC {
            return Err(DrlFormatError::BadMagic { found: magic });
        }
        let version = u32::from_le_bytes(get(h, H_VERSION));
        if version != DRL_VERSION {
            return Err(DrlFormatError::UnsupportedVersion {
                found: version,
                supported: DRL_VERSION,
            });
        }
        let stored = u32::from_le_bytes(get(h, HEADER_CRC_OFFSET));
        let computed = crc32c(&h[..HEADER_CRC_OFFSET]);
        if stored != computed {
            return Err(DrlFormatError::HeaderCorrupt { stored, computed });
        }
        Self::decode_fields(h).map_err(DrlFormatError::HeaderInvalid)
    }

    fn decode_fields(h: &[u8]) -> Result<DrlHeader, String> {
        let u32_at = |at| u32::from_le_bytes(get(h, at));
        let u64_at = |at| u64::from_le_bytes(get(h, at));
        let header_len = u32_at(H_HEADER_LEN);
        if header_len != HEADER_LEN as u32 {
            return Err(format!("header_len is {header_len}, expected {HEADER_LEN}"));
        }
        if h[H_END..HEADER_CRC_OFFSET].iter().any(|&b| b != 0) {
            return Err(format!(
                "reserved bytes {H_END}..{HEADER_CRC_OFFSET} are not zero"
            ));
        }
        let flags = u32_at(H_FLAGS);
        if flags & !FLAG_SEQUENTIAL != 0 {
            return Err(format!("unknown flags {flags:#x}"));
        }
        let copy = u32_at(H_COPY);
        if copy >= COPIES {
            return Err(format!("copy index {copy}, expected 0 or 1"));
        }
        let geometry = DrlGeometry::new(
            u64_at(H_REGION_BLOCKS),
            u64_at(H_VOLUME_BLOCKS),
            u32_at(H_PAGE_SIZE),
        )
        .map_err(|e| e.to_string())?;
        for (field, at, derived) in [
            ("nregions", H_NREGIONS, geometry.nregions),
            ("pages", H_PAGES, geometry.pages),
            ("bits_per_page", H_BITS_PER_PAGE, geometry.bits_per_page()),
        ] {
            let stored = u32_at(at);
            if stored != derived {
                return Err(format!(
                    "{field} is {stored}, but the region size, volume length and page size \
                     make {derived}"
                ));
            }
        }
        Ok(DrlHeader {
            dg_id: Uuid::from_bytes(get(h, H_DG_ID)),
            volume: Uuid::from_bytes(get(h, H_VOLUME)),
            epoch: u64_at(H_EPOCH),
            geometry,
            copy,
            sequential: flags & FLAG_SEQUENTIAL != 0,
            created: u64_at(H_CREATED),
        })
    }

    /// Whether a decoded header is the one the configuration expects: the same disk group,
    /// volume, epoch, geometry, copy index and flags (`created` is not compared). A copy
    /// counts for reading a map only if this holds.
    pub fn check_matches(&self, expected: &DrlHeader) -> Result<(), DrlFormatError> {
        for (what, found, expected) in [
            ("disk group", self.dg_id, expected.dg_id),
            ("volume", self.volume, expected.volume),
        ] {
            if found != expected {
                return Err(DrlFormatError::WrongOwner {
                    what,
                    found,
                    expected,
                });
            }
        }
        let (g, e) = (&self.geometry, &expected.geometry);
        for (field, found, expected) in [
            ("epoch", self.epoch, expected.epoch),
            ("region_blocks", g.region_blocks, e.region_blocks),
            ("volume_blocks", g.volume_blocks, e.volume_blocks),
            ("page_size", g.page_size.into(), e.page_size.into()),
            ("copy", self.copy.into(), expected.copy.into()),
            ("flags", self.flags().into(), expected.flags().into()),
        ] {
            if found != expected {
                return Err(DrlFormatError::Mismatch {
                    field,
                    found,
                    expected,
                });
            }
        }
        Ok(())
    }

    fn flags(&self) -> u32 {
        if self.sequential {
            FLAG_SEQUENTIAL
        } else {
            0
        }
    }
}

/// Which bitmap a page belongs to. The two differ in how a page of another epoch reads
/// ([`merge_pages`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageKind {
    /// D, the dirty map: regions that may differ between plexes after a crash. Its pages carry
    /// the map's `epoch`; a page of any other epoch is invalid.
    Dirty,
    /// M, the missed map: regions some detached or stale plex missed. Its pages carry
    /// `m_epoch`; a valid page of an *older* epoch reads as zero (M was reset since), one of
    /// a newer epoch is invalid.
    Missed,
}

impl PageKind {
    fn code(self) -> u8 {
        match self {
            PageKind::Dirty => 0,
            PageKind::Missed => 1,
        }
    }

    fn from_code(code: u8) -> Option<PageKind> {
        match code {
            0 => Some(PageKind::Dirty),
            1 => Some(PageKind::Missed),
            _ => None,
        }
    }
}

impl fmt::Display for PageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PageKind::Dirty => "D",
            PageKind::Missed => "M",
        })
    }
}

/// What a bitmap page says it is: which bitmap, which of its pages, of which epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageTrailer {
    /// The bitmap.
    pub kind: PageKind,
    /// The page's index within its bitmap, `0..P`.
    pub index: u32,
    /// The epoch it was written in: the map's `epoch` for D, `m_epoch` for M.
    pub epoch: u64,
}

impl fmt::Display for PageTrailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} page {} of epoch {}",
            self.kind, self.index, self.epoch
        )
    }
}

/// Writes `trailer` and the page's crc32c into the last [`TRAILER_LEN`] bytes of `page` (a
/// whole page of a page size), after its bits.
pub fn seal_page(page: &mut [u8], trailer: &PageTrailer) -> Result<(), DrlFormatError> {
    let len = page.len();
    if !is_page_size(len) {
        return Err(DrlFormatError::BadPageSize(len));
    }
    let t = len - TRAILER_LEN;
    page[t..].fill(0);
    put(page, t, &PAGE_MAGIC);
    page[t + T_KIND] = trailer.kind.code();
    put(page, t + T_INDEX, &trailer.index.to_le_bytes());
    put(page, t + T_EPOCH, &trailer.epoch.to_le_bytes());
    let crc = crc32c(&page[..t + T_CRC]);
    put(page, t + T_CRC, &crc.to_le_bytes());
    Ok(())
}

/// Reads the trailer of a bitmap page (a whole page of a page size). Checks, in this order:
/// length, magic, crc, then the trailer's fields (known kind, zero bytes zero).
pub fn read_trailer(page: &[u8]) -> Result<PageTrailer, DrlFormatError> {
    let len = page.len();
    if !is_page_size(len) {
        return Err(DrlFormatError::BadPageSize(len));
    }
    let t = len - TRAILER_LEN;
    let tr = &page[t..];
    let magic: [u8; 4] = get(tr, 0);
    if magic != PAGE_MAGIC {
        return Err(DrlFormatError::PageBadMagic { found: magic });
    }
    let stored = u32::from_le_bytes(get(tr, T_CRC));
    let computed = crc32c(&page[..t + T_CRC]);
    if stored != computed {
        return Err(DrlFormatError::PageCorrupt { stored, computed });
    }
    let kind = PageKind::from_code(tr[T_KIND])
        .ok_or_else(|| DrlFormatError::PageInvalid(format!("unknown kind {}", tr[T_KIND])))?;
    for (at, n) in T_ZERO {
        if tr[at..at + n].iter().any(|&b| b != 0) {
            return Err(DrlFormatError::PageInvalid(format!(
                "reserved trailer bytes {at}..{} are not zero",
                at + n
            )));
        }
    }
    Ok(PageTrailer {
        kind,
        index: u32::from_le_bytes(get(tr, T_INDEX)),
        epoch: u64::from_le_bytes(get(tr, T_EPOCH)),
    })
}

/// Checks that `page` is a valid bitmap page and exactly the one `expected` names (kind,
/// index and epoch). This is the strict test: [`merge_pages`] additionally reads an M page
/// of an older epoch as zero.
pub fn check_page(page: &[u8], expected: &PageTrailer) -> Result<(), DrlFormatError> {
    let found = read_trailer(page)?;
    if found != *expected {
        return Err(DrlFormatError::PageMismatch {
            found,
            expected: *expected,
        });
    }
    Ok(())
}

/// Bit `i` of a bitmap page (`page` is the whole page; region `i` of the page is byte
/// `i / 8`, bit `i % 8` from the least significant). False for `i` at or past
/// [`bits_per_page`], which would be the trailer.
pub fn get_bit(page: &[u8], i: usize) -> bool {
    if i >= bits_per_page(page.len()) {
        return false;
    }
    page[i / 8] & (1 << (i % 8)) != 0
}

/// Sets bit `i` of a bitmap page to `on`. Returns false, changing nothing, for `i` at or past
/// [`bits_per_page`] (the trailer is never touched).
pub fn set_bit(page: &mut [u8], i: usize, on: bool) -> bool {
    if i >= bits_per_page(page.len()) {
        return false;
    }
    let mask = 1 << (i % 8);
    if on {
        page[i / 8] |= mask;
    } else {
        page[i / 8] &= !mask;
    }
    true
}

/// Where the bits of a merged page came from ([`merge_pages`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MergeSource {
    /// The OR of the copies that are valid and of the expected epoch.
    Copies,
    /// All zeros: no copy is of the expected epoch, but at least one is a valid M page of an
    /// older epoch (M was reset since it was written).
    Reset,
    /// All ones: no copy is valid (torn or damaged everywhere, or no copy at all); every
    /// region of the page is assumed to need a copy.
    Torn,
}

/// What [`merge_pages`] found among the copies of one page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MergeOutcome {
    /// Where the merged bits came from.
    pub source: MergeSource,
    /// Copies valid and of the expected epoch (OR-ed into the result).
    pub current: usize,
    /// Valid M copies of an older epoch (read as zero).
    pub reset: usize,
    /// Copies that failed their checks: wrong length, magic, crc, trailer, kind, index or
    /// epoch.
    pub invalid: usize,
}

/// Merges the copies of one bitmap page into `out` (a page of the map's page size): what
/// recovery must assume that page holds.
///
/// A copy is *current* when it passes [`check_page`] for `expected` (its kind, index and
/// epoch). The result is:
/// - the **OR** of the current copies, when there is at least one (a copy that missed a
///   clear has extra bits; a copy that missed a set is covered by the other, because a set
///   counts as durable once one copy wrote and flushed it);
/// - for [`PageKind::Missed`] only: **all zeros** when no copy is current but at least one
///   is a valid M page of an *older* epoch (the map was reset since). For
///   [`PageKind::Dirty`] a page of another epoch is invalid like any other damage;
/// - **all ones** when no copy is valid, or there is no copy at all.
///
/// Bits past the map's last region are zero in every case, and `out`'s trailer bytes are
/// zeroed: [`seal_page`] it before writing it anywhere. Errors only for arguments that
/// contradict `geometry` (`out` not a page of its page size, `expected.index` not a page of
/// it); damaged copies are what this function is for and never an error.
pub fn merge_pages<'a, I>(
    geometry: &DrlGeometry,
    expected: &PageTrailer,
    copies: I,
    out: &mut [u8],
) -> Result<MergeOutcome, DrlFormatError>
where
    I: IntoIterator<Item = &'a [u8]>,
{
    let page_size = geometry.page_size as usize;
    if out.len() != page_size {
        return Err(DrlFormatError::BadPageSize(out.len()));
    }
    if expected.index >= geometry.pages {
        return Err(DrlFormatError::BadGeometry(format!(
            "{} page {} does not exist: the map has {} pages per bitmap",
            expected.kind, expected.index, geometry.pages
        )));
    }
    out.fill(0);
    let bits = page_size - TRAILER_LEN;
    let mut outcome = MergeOutcome {
        source: MergeSource::Torn,
        current: 0,
        reset: 0,
        invalid: 0,
    };
    for copy in copies {
        let found = if copy.len() == page_size {
            read_trailer(copy).ok()
        } else {
            None
        };
        match found {
            Some(t) if t == *expected => {
                outcome.current += 1;
                for (o, c) in out[..bits].iter_mut().zip(&copy[..bits]) {
                    *o |= c;
                }
            }
            Some(t)
                if t.kind == PageKind::Missed
                    && t.kind == expected.kind
                    && t.index == expected.index
                    && t.epoch < expected.epoch =>
            {
                outcome.reset += 1;
            }
            _ => outcome.invalid += 1,
        }
    }
    outcome.source = if outcome.current > 0 {
        MergeSource::Copies
    } else if outcome.reset > 0 {
        MergeSource::Reset
    } else {
        out[..bits].fill(0xff);
        MergeSource::Torn
    };
    // Nothing past the last region: the bits of its last, partial byte, then whole bytes.
    let regions = geometry.regions_in_page(expected.index);
    let (full, rem) = (regions / 8, regions % 8);
    if rem > 0 {
        out[full] &= (1u8 << rem) - 1;
    }
    out[regions.div_ceil(8)..bits].fill(0);
    Ok(outcome)
}

/// Copies `bytes` into `buf` at `at`. Every caller's offset is a constant inside the record.
fn put(buf: &mut [u8], at: usize, bytes: &[u8]) {
    buf[at..at + bytes.len()].copy_from_slice(bytes);
}

/// The `N` bytes of `buf` at `at`. Every caller's offset is a constant inside a buffer whose
/// length was checked.
fn get<const N: usize>(buf: &[u8], at: usize) -> [u8; N] {
    let mut a = [0; N];
    a.copy_from_slice(&buf[at..at + N]);
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    const DG: Uuid = Uuid::from_u128(0x1111_2222_3333_4444_5555_6666_7777_8888);
    const VOL: Uuid = Uuid::from_u128(0x9999_aaaa_bbbb_cccc_dddd_eeee_ffff_0001);

    /// A small deterministic generator (xorshift64*), so failures reproduce.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn fill(&mut self, buf: &mut [u8]) {
            for b in buf {
                *b = self.next() as u8;
            }
        }
    }

    /// A 4 GiB volume of 512-byte blocks in 64 KiB regions: 65,536 regions, 3 pages a bitmap.
    fn geometry() -> DrlGeometry {
        DrlGeometry::new(128, 8 << 20, 4096).unwrap()
    }

    fn header(geometry: DrlGeometry) -> DrlHeader {
        DrlHeader {
            dg_id: DG,
            volume: VOL,
            epoch: 0x0102_0304_0506_0708,
            geometry,
            copy: 1,
            sequential: true,
            created: 1_764_000_000,
        }
    }

    fn encoded(h: &DrlHeader) -> Vec<u8> {
        let mut page = vec![0xa5; h.geometry.page_size() as usize];
        h.encode(&mut page).unwrap();
        page
    }

    /// Recomputes the header's crc after a test changed a field.
    fn reseal(page: &mut [u8]) {
        let crc = crc32c(&page[..HEADER_CRC_OFFSET]);
        page[HEADER_CRC_OFFSET..HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
    }

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }

    fn u64_at(b: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
    }

    fn d_page(index: u32, epoch: u64) -> PageTrailer {
        PageTrailer {
            kind: PageKind::Dirty,
            index,
            epoch,
        }
    }

    fn m_page(index: u32, epoch: u64) -> PageTrailer {
        PageTrailer {
            kind: PageKind::Missed,
            index,
            epoch,
        }
    }

    /// A sealed page of `size` bytes with the given regions set.
    fn page_with(size: usize, trailer: &PageTrailer, regions: &[usize]) -> Vec<u8> {
        let mut p = vec![0; size];
        for &r in regions {
            assert!(set_bit(&mut p, r, true));
        }
        seal_page(&mut p, trailer).unwrap();
        p
    }

    fn set_regions(page: &[u8]) -> Vec<usize> {
        (0..bits_per_page(page.len()))
            .filter(|&i| get_bit(page, i))
            .collect()
    }

    #[test]
    fn geometry_gives_the_documented_sizes() {
        // The examples of docs/on-disk-format.md, 512-byte blocks.
        let g = geometry();
        assert_eq!(
            (g.nregions(), g.pages(), g.map_pages(), g.bits_per_page()),
            (65_536, 3, 7, 32_512)
        );
        let g16 = DrlGeometry::new(128, 32 << 20, 4096).unwrap();
        assert_eq!(
            (g16.nregions(), g16.pages(), g16.map_pages()),
            (262_144, 9, 19)
        );
        let small = DrlGeometry::new(128, 512 << 10, 4096).unwrap();
        assert_eq!(
            (small.nregions(), small.pages(), small.map_pages()),
            (4096, 1, 3)
        );
        assert_eq!(bits_per_page(8192), 65_280);
        assert_eq!(bits_per_page(65_536), 524_032);
        assert_eq!(bits_per_page(16), 0);
        // A partial last region still counts.
        assert_eq!(DrlGeometry::new(128, 129, 4096).unwrap().nregions(), 2);

        // Page 2 of 3 holds what is left after two full pages.
        assert_eq!(g.regions_in_page(0), 32_512);
        assert_eq!(g.regions_in_page(2), 65_536 - 2 * 32_512);
        assert_eq!(g.regions_in_page(3), 0);
        assert_eq!(g.regions_in_page(u32::MAX), 0);
        assert_eq!(g.locate(0), Some((0, 0)));
        assert_eq!(g.locate(32_512), Some((1, 0)));
        assert_eq!(g.locate(65_535), Some((2, 65_535 - 65_024)));
        assert_eq!(g.locate(65_536), None);
        assert_eq!(g.page_offset(PageKind::Dirty, 0), 1);
        assert_eq!(g.page_offset(PageKind::Missed, 0), 4);
        assert_eq!(g.page_offset(PageKind::Missed, 2), 6);
    }

    #[test]
    fn geometry_refuses_what_makes_no_map() {
        let bad = |r, v, p| DrlGeometry::new(r, v, p).unwrap_err();
        let says = |e: DrlFormatError, word: &str| {
            assert!(
                matches!(&e, DrlFormatError::BadGeometry(m) if m.contains(word)),
                "{e}"
            );
        };
        says(bad(0, 100, 4096), "region size");
        says(bad(128, 0, 4096), "0 blocks long");
        for p in [0, 512, 2048, 3000, 6144, 131_072] {
            assert_eq!(bad(128, 100, p), DrlFormatError::BadPageSize(p as usize));
        }
        let e = bad(1, u64::from(u32::MAX) + 1, 4096);
        assert!(e.to_string().contains("use a larger region size"), "{e}");
        assert!(DrlGeometry::new(1, u64::from(u32::MAX), 65_536).is_ok());
    }

    #[test]
    fn header_round_trips_and_is_canonical() {
        for page_size in [4096, 8192, 65_536] {
            for (copy, sequential) in [(0, false), (1, true)] {
                let g = DrlGeometry::new(1 << 11, 3 << 30, page_size).unwrap();
                let h = DrlHeader {
                    copy,
                    sequential,
                    ..header(g)
                };
                let page = encoded(&h);
                assert_eq!(DrlHeader::decode(&page), Ok(h));
                assert!(
                    page[HEADER_LEN..].iter().all(|&b| b == 0),
                    "rest of the page is zero"
                );
                let mut again = vec![0; page.len()];
                DrlHeader::decode(&page)
                    .unwrap()
                    .encode(&mut again)
                    .unwrap();
                assert_eq!(again, page);
            }
        }
    }

    #[test]
    fn header_fields_are_at_their_documented_offsets() {
        let h = header(geometry());
        let p = encoded(&h);
        assert_eq!(&p[0..8], b"PLEXDRL\0");
        assert_eq!(u32_at(&p, 8), 1, "version");
        assert_eq!(u32_at(&p, 12), 4096, "header_len");
        assert_eq!(&p[16..32], DG.as_bytes());
        assert_eq!(&p[32..48], VOL.as_bytes());
        assert_eq!(u64_at(&p, 48), 0x0102_0304_0506_0708, "epoch");
        assert_eq!(u64_at(&p, 56), 128, "region_blocks");
        assert_eq!(u64_at(&p, 64), 8 << 20, "volume_blocks");
        assert_eq!(u32_at(&p, 72), 65_536, "nregions");
        assert_eq!(u32_at(&p, 76), 4096, "page_size");
        assert_eq!(u32_at(&p, 80), 3, "pages");
        assert_eq!(u32_at(&p, 84), 32_512, "bits_per_page");
        assert_eq!(u32_at(&p, 88), 1, "copy");
        assert_eq!(u32_at(&p, 92), 1, "flags: sequential");
        assert_eq!(u64_at(&p, 96), 1_764_000_000, "created");
        assert!(p[104..4092].iter().all(|&b| b == 0), "reserved");
        assert_eq!(u32_at(&p, 4092), crc32c(&p[..4092]), "crc");
        let normal = encoded(&DrlHeader {
            sequential: false,
            ..h
        });
        assert_eq!(u32_at(&normal, 92), 0, "flags: normal");
    }

    #[test]
    fn encode_refuses_a_short_page_and_a_bad_copy_index() {
        let h = header(DrlGeometry::new(128, 1 << 20, 8192).unwrap());
        let mut short = vec![0; 4096];
        assert_eq!(
            h.encode(&mut short),
            Err(DrlFormatError::TooShort {
                what: "header page",
                len: 4096,
                need: 8192
            })
        );
        assert!(short.iter().all(|&b| b == 0), "nothing written");
        let mut page = vec![0; 8192];
        assert_eq!(
            DrlHeader { copy: 2, ..h }.encode(&mut page),
            Err(DrlFormatError::BadCopy(2))
        );
        // A larger buffer: only the page is written.
        let mut big = vec![7u8; 3 * 8192];
        h.encode(&mut big).unwrap();
        assert!(big[8192..].iter().all(|&b| b == 7));
    }

    #[test]
    fn every_damaged_header_byte_is_detected() {
        let page = encoded(&header(geometry()));
        for i in 0..HEADER_LEN {
            for bit in [0x01, 0x80] {
                let mut p = page.clone();
                p[i] ^= bit;
                let err = DrlHeader::decode(&p).unwrap_err();
                match i {
                    0..=7 => assert!(matches!(err, DrlFormatError::BadMagic { .. }), "{i}: {err}"),
                    8..=11 => assert!(
                        matches!(err, DrlFormatError::UnsupportedVersion { .. }),
                        "{i}: {err}"
                    ),
                    _ => assert!(
                        matches!(err, DrlFormatError::HeaderCorrupt { .. }),
                        "{i}: {err}"
                    ),
                }
            }
        }
        // Past the record the page is not covered by the crc (and is written as zeros).
        let mut p = encoded(&header(DrlGeometry::new(128, 8 << 20, 8192).unwrap()));
        p[HEADER_LEN] = 1;
        assert!(DrlHeader::decode(&p).is_ok());
    }

    #[test]
    fn decode_says_what_it_found() {
        let page = encoded(&header(geometry()));
        assert_eq!(
            DrlHeader::decode(&page[..4095]),
            Err(DrlFormatError::TooShort {
                what: "header",
                len: 4095,
                need: 4096
            })
        );
        assert_eq!(DrlHeader::decode(&[0; 4096]), Err(DrlFormatError::Blank));
        let mut foreign = page.clone();
        foreign[..8].copy_from_slice(b"PLEXDVM\0");
        let e = DrlHeader::decode(&foreign).unwrap_err();
        assert!(e.to_string().contains("PLEXDVM"), "{e}");
        for (v, word) in [(2, "newer"), (0, "older")] {
            let mut p = page.clone();
            p[8..12].copy_from_slice(&u32::to_le_bytes(v));
            reseal(&mut p);
            let e = DrlHeader::decode(&p).unwrap_err();
            assert_eq!(
                e,
                DrlFormatError::UnsupportedVersion {
                    found: v,
                    supported: 1
                }
            );
            assert!(e.to_string().contains(word), "{e}");
        }
    }

    #[test]
    fn decode_refuses_inconsistent_fields_even_with_a_good_crc() {
        let page = encoded(&header(geometry()));
        let cases: [(usize, &[u8], &str); 11] = [
            (12, &2048u32.to_le_bytes(), "header_len"),
            (104, &[1], "reserved"),
            (4091, &[1], "reserved"),
            (92, &2u32.to_le_bytes(), "flags"),
            (88, &2u32.to_le_bytes(), "copy index"),
            (72, &65_535u32.to_le_bytes(), "nregions"),
            (80, &4u32.to_le_bytes(), "pages"),
            (84, &32_768u32.to_le_bytes(), "bits_per_page"),
            (56, &0u64.to_le_bytes(), "region size"),
            (64, &0u64.to_le_bytes(), "0 blocks long"),
            (76, &3000u32.to_le_bytes(), "page size"),
        ];
        for (at, bytes, word) in cases {
            let mut p = page.clone();
            p[at..at + bytes.len()].copy_from_slice(bytes);
            reseal(&mut p);
            match DrlHeader::decode(&p) {
                Err(DrlFormatError::HeaderInvalid(m)) => assert!(m.contains(word), "{at}: {m}"),
                other => panic!("byte {at}: {other:?}"),
            }
        }
    }

    #[test]
    fn check_matches_names_the_field_that_differs() {
        let h = header(geometry());
        assert_eq!(h.check_matches(&h), Ok(()));
        assert_eq!(
            h.check_matches(&DrlHeader { created: 1, ..h }),
            Ok(()),
            "created is not compared"
        );
        let other = Uuid::from_u128(5);
        assert_eq!(
            h.check_matches(&DrlHeader { dg_id: other, ..h }),
            Err(DrlFormatError::WrongOwner {
                what: "disk group",
                found: DG,
                expected: other
            })
        );
        assert!(matches!(
            h.check_matches(&DrlHeader { volume: other, ..h }),
            Err(DrlFormatError::WrongOwner { what: "volume", .. })
        ));
        let expect = |e: DrlHeader, field: &str| match h.check_matches(&e) {
            Err(DrlFormatError::Mismatch { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        };
        expect(DrlHeader { epoch: 3, ..h }, "epoch");
        let g = |r, v, p| DrlGeometry::new(r, v, p).unwrap();
        expect(
            DrlHeader {
                geometry: g(256, 8 << 20, 4096),
                ..h
            },
            "region_blocks",
        );
        expect(
            DrlHeader {
                geometry: g(128, 9 << 20, 4096),
                ..h
            },
            "volume_blocks",
        );
        expect(
            DrlHeader {
                geometry: g(128, 8 << 20, 8192),
                ..h
            },
            "page_size",
        );
        expect(DrlHeader { copy: 0, ..h }, "copy");
        expect(
            DrlHeader {
                sequential: false,
                ..h
            },
            "flags",
        );
        let e = h.check_matches(&DrlHeader { epoch: 3, ..h }).unwrap_err();
        assert!(
            e.to_string()
                .contains("epoch is 72623859790382856, expected 3"),
            "{e}"
        );
    }

    #[test]
    fn page_trailer_is_at_its_documented_offsets() {
        let p = page_with(4096, &m_page(2, 0x1122_3344_5566_7788), &[0, 9]);
        let t = &p[4064..];
        assert_eq!(&t[0..4], b"DRLP");
        assert_eq!(t[4], 1, "kind M");
        assert_eq!(u32_at(t, 8), 2, "index");
        assert_eq!(u64_at(t, 16), 0x1122_3344_5566_7788, "epoch");
        assert!(t[5..8]
            .iter()
            .chain(&t[12..16])
            .chain(&t[24..28])
            .all(|&b| b == 0));
        assert_eq!(
            u32_at(t, 28),
            crc32c(&p[..4092]),
            "crc of the page before it"
        );
        assert_eq!(p[0], 0b1, "region 0: byte 0, bit 0");
        assert_eq!(p[1], 0b10, "region 9: byte 1, bit 1");
        let d = page_with(4096, &d_page(0, 1), &[]);
        assert_eq!(d[4064 + 4], 0, "kind D");
    }

    #[test]
    fn pages_round_trip_at_every_page_size() {
        for size in [4096, 8192, 16_384, 65_536] {
            let last = bits_per_page(size) - 1;
            let t = d_page(7, 42);
            let p = page_with(size, &t, &[0, 1, 63, last]);
            assert_eq!(read_trailer(&p), Ok(t));
            assert_eq!(check_page(&p, &t), Ok(()));
            assert_eq!(set_regions(&p), vec![0, 1, 63, last]);
        }
    }

    #[test]
    fn every_damaged_page_byte_is_detected() {
        let t = d_page(1, 9);
        let page = page_with(4096, &t, &[3, 100, 32_511]);
        for i in 0..page.len() {
            let mut p = page.clone();
            p[i] ^= 0x10;
            assert!(check_page(&p, &t).is_err(), "byte {i}");
        }
        // The largest page: every 61st byte and the whole trailer.
        let big = page_with(65_536, &t, &[5]);
        for i in (0..big.len()).step_by(61).chain(65_504..65_536) {
            let mut p = big.clone();
            p[i] ^= 0x01;
            assert!(check_page(&p, &t).is_err(), "byte {i}");
        }
    }

    #[test]
    fn check_page_says_what_is_wrong() {
        let t = d_page(1, 9);
        let page = page_with(4096, &t, &[]);
        for other in [m_page(1, 9), d_page(2, 9), d_page(1, 8)] {
            let e = check_page(&page, &other).unwrap_err();
            assert_eq!(
                e,
                DrlFormatError::PageMismatch {
                    found: t,
                    expected: other
                }
            );
        }
        let e = check_page(&page, &d_page(1, 10)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the region log page is D page 1 of epoch 9, expected D page 1 of epoch 10; its \
             regions are resynced unless another copy is valid"
        );
        assert!(matches!(
            check_page(&[0; 4096], &t),
            Err(DrlFormatError::PageBadMagic {
                found: [0, 0, 0, 0]
            })
        ));
        assert_eq!(
            check_page(&page[..4095], &t),
            Err(DrlFormatError::BadPageSize(4095))
        );
        let mut torn = page.clone();
        torn[..2048].fill(0xff);
        assert!(matches!(
            check_page(&torn, &t),
            Err(DrlFormatError::PageCorrupt { .. })
        ));
        // A good crc over a malformed trailer: unknown kind, reserved bytes set.
        for (at, v) in [
            (4064 + 4, 2u8),
            (4064 + 6, 1),
            (4064 + 13, 1),
            (4064 + 25, 1),
        ] {
            let mut p = page.clone();
            p[at] = v;
            let crc = crc32c(&p[..4092]);
            p[4092..].copy_from_slice(&crc.to_le_bytes());
            assert!(
                matches!(read_trailer(&p), Err(DrlFormatError::PageInvalid(_))),
                "byte {at}"
            );
        }
        assert_eq!(
            seal_page(&mut [0; 100], &t),
            Err(DrlFormatError::BadPageSize(100))
        );
    }

    #[test]
    fn bits_are_numbered_from_the_least_significant_and_never_reach_the_trailer() {
        let mut p = vec![0; 4096];
        assert!(set_bit(&mut p, 10, true));
        assert_eq!(p[1], 0b100);
        assert!(get_bit(&p, 10) && !get_bit(&p, 9) && !get_bit(&p, 11));
        assert!(set_bit(&mut p, 10, false));
        assert!(p.iter().all(|&b| b == 0));
        let bpp = bits_per_page(4096);
        assert!(set_bit(&mut p, bpp - 1, true));
        assert_eq!(p[4063], 0x80);
        assert!(!set_bit(&mut p, bpp, true), "the trailer's first bit");
        assert!(!set_bit(&mut p, usize::MAX, true));
        assert!(p[4064..].iter().all(|&b| b == 0));
        p[4064] = 0xff;
        assert!(!get_bit(&p, bpp));
        assert!(!get_bit(&[], 0));
    }

    #[test]
    fn a_page_is_its_little_endian_u64_words() {
        let words: [u64; 3] = [1 << 63 | 1, 0, 1 << 5];
        let mut p = vec![0; 4096];
        for (i, w) in words.iter().enumerate() {
            p[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
        }
        assert_eq!(set_regions(&p), vec![0, 63, 2 * 64 + 5]);
    }

    /// Merges `copies` of page `index` into a fresh page and returns it with the outcome.
    fn merge(g: &DrlGeometry, t: &PageTrailer, copies: &[&[u8]]) -> (Vec<u8>, MergeOutcome) {
        let mut out = vec![0x5a; g.page_size() as usize];
        let o = merge_pages(g, t, copies.iter().copied(), &mut out).unwrap();
        assert!(
            out[out.len() - TRAILER_LEN..].iter().all(|&b| b == 0),
            "trailer zeroed"
        );
        (out, o)
    }

    fn ones(g: &DrlGeometry, index: u32) -> Vec<usize> {
        (0..g.regions_in_page(index)).collect()
    }

    #[test]
    fn merge_ors_the_current_copies() {
        let g = geometry();
        let t = d_page(0, 5);
        let a = page_with(4096, &t, &[1, 2, 700]);
        let b = page_with(4096, &t, &[2, 3, 32_511]);
        let (out, o) = merge(&g, &t, &[&a, &b]);
        assert_eq!(set_regions(&out), vec![1, 2, 3, 700, 32_511]);
        assert_eq!(
            (o.source, o.current, o.reset, o.invalid),
            (MergeSource::Copies, 2, 0, 0)
        );

        // A torn copy does not count; the other copy alone is the result.
        let mut torn = b.clone();
        torn[10] ^= 0xff;
        let (out, o) = merge(&g, &t, &[&torn, &a]);
        assert_eq!(set_regions(&out), vec![1, 2, 700]);
        assert_eq!(
            (o.source, o.current, o.invalid),
            (MergeSource::Copies, 1, 1)
        );

        // Copies of another page, kind or epoch, or of the wrong length, do not count.
        let wrong: Vec<Vec<u8>> = vec![
            page_with(4096, &d_page(1, 5), &[9]),
            page_with(4096, &m_page(0, 5), &[9]),
            page_with(4096, &d_page(0, 4), &[9]),
            page_with(4096, &d_page(0, 6), &[9]),
            page_with(8192, &t, &[9]),
        ];
        for w in &wrong {
            let (out, o) = merge(&g, &t, &[&a, w]);
            assert_eq!(set_regions(&out), vec![1, 2, 700]);
            assert_eq!((o.current, o.invalid), (1, 1));
        }
    }

    #[test]
    fn a_page_valid_on_no_copy_reads_as_all_ones() {
        let g = geometry();
        for t in [d_page(0, 5), m_page(0, 5)] {
            let mut torn = page_with(4096, &t, &[1]);
            torn[4000] ^= 1;
            for copies in [vec![&torn[..], &torn[..]], vec![&[0u8; 4096][..]], vec![]] {
                let (out, o) = merge(&g, &t, &copies);
                assert_eq!(o.source, MergeSource::Torn);
                assert_eq!(o.current + o.reset, 0);
                assert_eq!(o.invalid, copies.len());
                assert_eq!(set_regions(&out), ones(&g, 0), "{t}");
            }
        }
        // A D page of an older epoch is not a reset: it is as bad as a torn one.
        let old = page_with(4096, &d_page(0, 4), &[]);
        let (out, o) = merge(&g, &d_page(0, 5), &[&old]);
        assert_eq!((o.source, o.invalid), (MergeSource::Torn, 1));
        assert_eq!(set_regions(&out).len(), 32_512);
    }

    #[test]
    fn an_m_page_of_an_older_epoch_reads_as_zero() {
        let g = geometry();
        let t = m_page(1, 5);
        let old = page_with(4096, &m_page(1, 4), &[6, 7]);
        let mut torn = page_with(4096, &t, &[8]);
        torn[0] ^= 1;
        let (out, o) = merge(&g, &t, &[&old, &torn]);
        assert_eq!(
            (o.source, o.current, o.reset, o.invalid),
            (MergeSource::Reset, 0, 1, 1)
        );
        assert!(set_regions(&out).is_empty());
        // With a current copy beside it, the current copy's bits are the result.
        let cur = page_with(4096, &t, &[8]);
        let (out, o) = merge(&g, &t, &[&old, &cur]);
        assert_eq!((o.source, o.current, o.reset), (MergeSource::Copies, 1, 1));
        assert_eq!(set_regions(&out), vec![8]);
        // A newer M epoch than expected is not trusted.
        let newer = page_with(4096, &m_page(1, 6), &[]);
        let (_, o) = merge(&g, &t, &[&newer]);
        assert_eq!((o.source, o.invalid), (MergeSource::Torn, 1));
    }

    #[test]
    fn merge_keeps_nothing_past_the_last_region() {
        // 65,536 regions: the last of 3 pages holds 512 of its 32,512 bits; a map of 13
        // regions, 13 bits of one page (a partial byte).
        for (g, index) in [
            (geometry(), 2),
            (DrlGeometry::new(8, 100, 4096).unwrap(), 0),
        ] {
            let t = d_page(index, 1);
            let n = g.regions_in_page(index);
            let stray = page_with(4096, &t, &[0, n - 1, n, n + 1, 32_511]);
            let (out, _) = merge(&g, &t, &[&stray]);
            assert_eq!(set_regions(&out), vec![0, n - 1]);
            let (out, o) = merge(&g, &t, &[]);
            assert_eq!(o.source, MergeSource::Torn);
            assert_eq!(set_regions(&out), ones(&g, index));
        }
    }

    #[test]
    fn merge_refuses_arguments_that_contradict_the_geometry() {
        let g = geometry();
        let mut small = vec![0; 2048];
        assert_eq!(
            merge_pages(&g, &d_page(0, 1), [], &mut small),
            Err(DrlFormatError::BadPageSize(2048))
        );
        let mut out = vec![0; 4096];
        let e = merge_pages(&g, &d_page(3, 1), [], &mut out).unwrap_err();
        assert!(
            e.to_string().contains("the map has 3 pages per bitmap"),
            "{e}"
        );
    }

    /// Truncated, garbage and half-valid input never panics, whatever function reads it.
    #[test]
    fn garbage_never_panics() {
        let g = geometry();
        let t = m_page(1, 3);
        let header = encoded(&header(g));
        let page = page_with(4096, &t, &[1, 2, 3]);
        let mut out = vec![0; 4096];
        // Every truncation of a valid header and a valid page.
        for n in 0..=4096 {
            assert!(DrlHeader::decode(&header[..n]).is_err() || n == 4096);
            let _ = read_trailer(&page[..n]);
            let _ = get_bit(&page[..n], n * 4);
            merge_pages(&g, &t, [&page[..n]], &mut out).unwrap();
        }
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let sizes = [0, 1, 31, 32, 33, 4095, 4096, 4097, 8192, 65_536];
        let mut buf = vec![0; 65_536 + 1];
        for round in 0..3000 {
            let len = if round % 2 == 0 {
                sizes[rng.below(sizes.len())]
            } else {
                rng.below(buf.len())
            };
            let b = &mut buf[..len];
            rng.fill(b);
            if round % 3 == 0 && len >= HEADER_LEN {
                // Right magic and version and crc, random fields: reaches the field checks.
                b[..8].copy_from_slice(&DRL_MAGIC);
                b[8..12].copy_from_slice(&DRL_VERSION.to_le_bytes());
                reseal(b);
            }
            if round % 3 == 1 && is_page_size(len) {
                // Right magic and crc, random trailer fields.
                b[len - 32..len - 28].copy_from_slice(&PAGE_MAGIC);
                let crc = crc32c(&b[..len - 4]);
                b[len - 4..].copy_from_slice(&crc.to_le_bytes());
            }
            if let Ok(h) = DrlHeader::decode(b) {
                let mut again = vec![0; h.geometry.page_size() as usize];
                h.encode(&mut again).unwrap();
                assert_eq!(
                    &again[..HEADER_LEN],
                    &b[..HEADER_LEN],
                    "decode is canonical"
                );
                let _ = h.check_matches(&header_of(&header));
            }
            let _ = read_trailer(b);
            let _ = check_page(b, &t);
            let i = rng.below(len * 8 + 64);
            let _ = get_bit(b, i);
            let _ = set_bit(b, i, true);
            let o = merge_pages(&g, &t, [&b[..], &page[..]], &mut out).unwrap();
            assert!(o.current >= 1, "the valid copy always counts");
        }
    }

    fn header_of(page: &[u8]) -> DrlHeader {
        DrlHeader::decode(page).unwrap()
    }
}
