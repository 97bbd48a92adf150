//! The guest's memory as the front-end describes it (SET_MEM_TABLE, ADD/REM_MEM_REG): each
//! region is mmapped from the fd QEMU passes, and front-end virtual addresses (used for the
//! ring addresses) are translated to guest physical addresses.

use std::fs::File;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use vm_memory::{FileOffset, GuestAddress, GuestMemoryMmap, GuestRegionMmap, MmapRegion};

use super::sigbus::{self, Registered};

/// One mapped region.
#[derive(Clone)]
pub struct Region {
    /// Guest physical address of the first byte.
    pub gpa: u64,
    /// Size in bytes.
    pub size: u64,
    /// The front-end's virtual address of the first byte.
    pub user_addr: u64,
    /// The mapping, registered with the SIGBUS guard (a front-end may shrink the file).
    pub mapping: Arc<Registered<GuestRegionMmap>>,
}

/// Errors building guest memory.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// mmap of a region failed.
    #[error("cannot map guest memory region at {gpa:#x} ({size} bytes): {reason}")]
    Map {
        /// Guest physical address.
        gpa: u64,
        /// Size.
        size: u64,
        /// What failed.
        reason: String,
    },
    /// Regions overlap or are empty.
    #[error("invalid guest memory layout: {0}")]
    Layout(String),
}

/// The memory table of one connection.
#[derive(Default, Clone)]
pub struct MemoryTable {
    regions: Vec<Region>,
    /// SIGBUS faults survived in this table's regions (shared by every region mapped since the
    /// last SET_MEM_TABLE): requests that saw it move lost guest memory and answer IOERR.
    faults: Arc<AtomicU64>,
}

impl MemoryTable {
    /// Maps one region from `file` at `mmap_offset`; faults in it are counted on `faults`.
    pub fn map_region(
        gpa: u64,
        size: u64,
        user_addr: u64,
        mmap_offset: u64,
        file: File,
        faults: &Arc<AtomicU64>,
    ) -> Result<Region, MemoryError> {
        let err = |reason: String| MemoryError::Map { gpa, size, reason };
        let len = usize::try_from(size).map_err(|_| err("size too large".into()))?;
        if len == 0 {
            return Err(err("empty region".into()));
        }
        gpa.checked_add(size)
            .ok_or_else(|| err("address overflow".into()))?;
        user_addr
            .checked_add(size)
            .ok_or_else(|| err("address overflow".into()))?;
        // A mapping may extend past the end of its file, but the first access there kills
        // plexd with SIGBUS: refuse such a region (memfd and hugetlbfs files are regular
        // files with a size).
        let meta = file
            .metadata()
            .map_err(|e| err(format!("cannot stat the region's file: {e}")))?;
        let end = mmap_offset
            .checked_add(size)
            .ok_or_else(|| err("file offset overflow".into()))?;
        if meta.file_type().is_file() && end > meta.len() {
            return Err(err(format!(
                "the region ends past the end of its file ({} bytes)",
                meta.len()
            )));
        }
        sigbus::sweep();
        let mmap = MmapRegion::from_file(FileOffset::new(file, mmap_offset), len)
            .map_err(|e| err(e.to_string()))?;
        // The file may still shrink later (an unsealed memfd, a hugetlbfs or tmpfs file):
        // register the mapping so that touching a page past the new end cannot kill plexd.
        let guard = sigbus::register(mmap.as_ptr(), len, Some(faults.clone()))
            .map_err(|e| err(e.to_string()))?;
        let mapping = GuestRegionMmap::new(mmap, GuestAddress(gpa))
            .ok_or_else(|| err("region does not fit the address space".into()))?;
        Ok(Region {
            gpa,
            size,
            user_addr,
            mapping: Arc::new(Registered::new(Arc::new(mapping), guard)),
        })
    }

    /// Replaces every region; `faults` is the counter they were mapped with (a fresh one:
    /// a new table is not poisoned by faults in the old one).
    pub fn set(&mut self, regions: Vec<Region>, faults: Arc<AtomicU64>) {
        self.regions = regions;
        self.faults = faults;
    }

    /// The fault counter of this table's regions (map added regions with it).
    pub fn faults(&self) -> &Arc<AtomicU64> {
        &self.faults
    }

    /// Adds a region.
    pub fn add(&mut self, r: Region) {
        self.regions.push(r);
    }

    /// Removes the region starting at `gpa` with `size`; returns whether one was removed.
    pub fn remove(&mut self, gpa: u64, size: u64) -> bool {
        let before = self.regions.len();
        self.regions.retain(|r| !(r.gpa == gpa && r.size == size));
        self.regions.len() != before
    }

    /// Number of mapped regions (memory slots in use).
    pub fn len(&self) -> usize {
        self.regions.len()
    }

    /// Whether no region is mapped.
    pub fn is_empty(&self) -> bool {
        self.regions.is_empty()
    }

    /// Builds the guest memory object handed to the reactors (an immutable snapshot).
    pub fn snapshot(&self) -> Result<Arc<GuestMemoryMmap>, MemoryError> {
        // vm-memory wants regions in guest-address order; front-ends may add them in any order.
        let mut sorted: Vec<&Region> = self.regions.iter().collect();
        sorted.sort_by_key(|r| r.gpa);
        let regions: Vec<Arc<GuestRegionMmap>> =
            sorted.iter().map(|r| r.mapping.get().clone()).collect();
        GuestMemoryMmap::from_arc_regions(regions)
            .map(Arc::new)
            .map_err(|e| MemoryError::Layout(e.to_string()))
    }

    /// Translates a front-end virtual address to a guest physical address.
    pub fn vva_to_gpa(&self, vva: u64) -> Option<u64> {
        self.regions
            .iter()
            .find(|r| vva >= r.user_addr && vva - r.user_addr < r.size)
            .map(|r| r.gpa + (vva - r.user_addr))
    }
}
