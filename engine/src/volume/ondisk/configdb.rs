//! Choosing the configuration to import from the copies found on a group's disks.
//!
//! "Newest sequence number wins" alone is unsafe: if two halves of a group were imported and
//! changed separately, each half's newest copy looks fine on its own. So every config records
//! the serial it expects each member disk's label to carry, and every commit raises the labels
//! of the disks it wrote. The newest valid copy is imported only if no present disk carries a
//! serial newer than that copy expects (that disk moved on without this copy knowing: serial
//! split brain), and no other valid copy has the same sequence number but a different commit.
//! Otherwise the import is refused until the administrator selects a copy.

use uuid::Uuid;

use crate::volume::model::objects::DgConfig;
use crate::volume::ondisk::format::Label;

/// A valid config copy found on a disk.
#[derive(Debug, Clone)]
pub struct FoundCopy {
    /// The bdev it was read from.
    pub bdev: String,
    /// The slot.
    pub slot: u32,
    /// Sequence number.
    pub seq: u64,
    /// Commit id.
    pub commit_id: Uuid,
    /// The configuration.
    pub config: DgConfig,
}

/// A member disk as found by a scan.
#[derive(Debug, Clone)]
pub struct FoundDisk {
    /// The bdev it is on.
    pub bdev: String,
    /// Its label.
    pub label: Label,
}

/// What the import will use.
#[derive(Debug, Clone)]
pub struct Chosen {
    /// The copy.
    pub copy: FoundCopy,
    /// Disks carrying an older serial than the copy expects (missed commits).
    pub lagging: Vec<String>,
}

/// Why no copy can be imported automatically.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChooseError {
    /// No disk holds a valid copy.
    #[error("no valid configuration copy was found for disk group '{0}'; every copy is missing or corrupt")]
    NoCopy(String),
    /// The group's halves changed independently.
    #[error("serial split brain in disk group '{group}': {detail}. Import refused; choose the copy to keep with dg_import select_copy=<bdev> (candidates: {candidates})")]
    SplitBrain {
        /// Group name.
        group: String,
        /// What disagrees.
        detail: String,
        /// Bdevs whose copies can be selected.
        candidates: String,
    },
    /// The disks carry a newer configuration than any copy found.
    #[error("disk group '{group}': its disks were last changed by configuration {serial}, but the newest copy found is {newest}; the disks holding the current copies are missing. Attach them, or import the older configuration with dg_import select_copy=<bdev> (candidates: {candidates})")]
    CurrentCopyMissing {
        /// Group name.
        group: String,
        /// The newest serial a present disk carries.
        serial: u64,
        /// The newest copy found.
        newest: u64,
        /// Bdevs whose copies can be selected.
        candidates: String,
    },
    /// `select_copy` named a bdev without a valid copy.
    #[error("bdev '{0}' holds no valid configuration copy of this disk group")]
    NoSuchCopy(String),
}

/// Picks the configuration to import. `select` names a bdev whose newest copy the
/// administrator chose (skips split-brain checks).
pub fn choose(
    group: &str,
    disks: &[FoundDisk],
    copies: &[FoundCopy],
    select: Option<&str>,
) -> Result<Chosen, ChooseError> {
    let pick = |cands: Vec<&FoundCopy>| -> Option<FoundCopy> {
        cands.into_iter().max_by_key(|c| c.seq).cloned()
    };
    if let Some(b) = select {
        let copy = pick(copies.iter().filter(|c| c.bdev == b).collect())
            .ok_or_else(|| ChooseError::NoSuchCopy(b.to_string()))?;
        let lagging = lagging(&copy, disks);
        return Ok(Chosen { copy, lagging });
    }
    let newest = pick(copies.iter().collect()).ok_or_else(|| ChooseError::NoCopy(group.into()))?;
    let candidates = || {
        let mut v: Vec<String> = copies
            .iter()
            .map(|c| format!("{} (seq {})", c.bdev, c.seq))
            .collect();
        v.sort();
        v.dedup();
        v.join(", ")
    };
    if let Some(other) = copies
        .iter()
        .find(|c| c.seq == newest.seq && c.commit_id != newest.commit_id)
    {
        return Err(ChooseError::SplitBrain {
            group: group.into(),
            detail: format!(
                "copies on '{}' and '{}' both have sequence {} but record different changes",
                newest.bdev, other.bdev, newest.seq
            ),
            candidates: candidates(),
        });
    }
    let mut ahead = Vec::new();
    for d in disks {
        let expected = newest
            .config
            .disks
            .iter()
            .find(|r| r.disk_id == d.label.disk_id)
            .map(|r| r.expected_serial);
        if let Some(exp) = expected {
            if d.label.serial > exp {
                ahead.push(format!(
                    "{} ({} carries serial {}, the newest copy expects {})",
                    d.bdev, d.label.disk_name, d.label.serial, exp
                ));
            }
        }
    }
    // Disks ahead of every copy present: the disks that held the current configuration are
    // missing (fewer config copies than disks), not two halves that each moved on.
    let max_serial = disks.iter().map(|d| d.label.serial).max().unwrap_or(0);
    if !ahead.is_empty() && copies.iter().all(|c| c.seq < max_serial) {
        return Err(ChooseError::CurrentCopyMissing {
            group: group.into(),
            serial: max_serial,
            newest: newest.seq,
            candidates: candidates(),
        });
    }
    if !ahead.is_empty() {
        return Err(ChooseError::SplitBrain {
            group: group.into(),
            detail: format!(
                "the newest copy (seq {} on '{}') does not know the changes recorded on {}",
                newest.seq,
                newest.bdev,
                ahead.join(", ")
            ),
            candidates: candidates(),
        });
    }
    let lagging = lagging(&newest, disks);
    Ok(Chosen {
        copy: newest,
        lagging,
    })
}

fn lagging(copy: &FoundCopy, disks: &[FoundDisk]) -> Vec<String> {
    disks
        .iter()
        .filter(|d| {
            copy.config
                .disks
                .iter()
                .find(|r| r.disk_id == d.label.disk_id)
                .is_some_and(|r| d.label.serial < r.expected_serial)
        })
        .map(|d| d.bdev.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::model::objects::{DiskCondition, DiskRecord};
    use crate::volume::ondisk::format::{DiskState, RegionLayout};

    fn label(id: Uuid, serial: u64) -> Label {
        Label {
            version: 1,
            block_size: 512,
            disk_id: id,
            dg_id: Uuid::nil(),
            dg_name: "dg".into(),
            disk_name: "d".into(),
            state: DiskState::Imported,
            serial,
            hostname: String::new(),
            created: 0,
            layout: RegionLayout::for_disk(64 << 20, 512).unwrap(),
        }
    }

    fn config(ids: &[Uuid], expected: &[u64]) -> DgConfig {
        DgConfig {
            name: "dg".into(),
            id: Uuid::nil(),
            block_size: 512,
            nconfig: 0,
            disks: ids
                .iter()
                .zip(expected)
                .enumerate()
                .map(|(i, (id, e))| DiskRecord {
                    name: format!("disk{i:02}"),
                    disk_id: *id,
                    device: String::new(),
                    expected_serial: *e,
                    public_len: 1,
                    public_offset: 0,
                    spare: false,
                    nohotuse: false,
                    condition: DiskCondition::Ok,
                })
                .collect(),
            subdisks: vec![],
            plexes: vec![],
            volumes: vec![],
        }
    }

    fn found(bdev: &str, id: Uuid, serial: u64) -> FoundDisk {
        FoundDisk {
            bdev: bdev.into(),
            label: label(id, serial),
        }
    }

    fn copy(bdev: &str, seq: u64, commit: u128, cfg: DgConfig) -> FoundCopy {
        FoundCopy {
            bdev: bdev.into(),
            slot: 0,
            seq,
            commit_id: Uuid::from_u128(commit),
            config: cfg,
        }
    }

    #[test]
    fn newest_wins_and_laggards_are_named() {
        let ids = [Uuid::from_u128(1), Uuid::from_u128(2)];
        let disks = vec![found("a", ids[0], 5), found("b", ids[1], 4)];
        let copies = vec![
            copy("a", 5, 5, config(&ids, &[5, 5])),
            copy("b", 4, 4, config(&ids, &[4, 4])),
        ];
        let c = choose("dg", &disks, &copies, None).unwrap();
        assert_eq!(c.copy.seq, 5);
        assert_eq!(c.lagging, vec!["b".to_string()]);
    }

    #[test]
    fn halves_changed_independently_is_split_brain() {
        let ids = [Uuid::from_u128(1), Uuid::from_u128(2)];
        // Side a committed seq 7 without b (expects b at 3); side b committed seq 5 alone.
        let disks = vec![found("a", ids[0], 7), found("b", ids[1], 5)];
        let copies = vec![
            copy("a", 7, 7, config(&ids, &[7, 3])),
            copy("b", 5, 50, config(&ids, &[3, 5])),
        ];
        let e = choose("dg", &disks, &copies, None).unwrap_err();
        assert!(matches!(e, ChooseError::SplitBrain { .. }), "{e}");
        assert!(e.to_string().contains("select_copy"));
        // The administrator picks b: imported, a is not lagging (it is ahead) but b's copy wins.
        let c = choose("dg", &disks, &copies, Some("b")).unwrap();
        assert_eq!(c.copy.seq, 5);
        assert!(matches!(
            choose("dg", &disks, &copies, Some("zz")),
            Err(ChooseError::NoSuchCopy(_))
        ));
    }

    #[test]
    fn only_one_side_changed_is_not_split_brain() {
        let ids = [Uuid::from_u128(1), Uuid::from_u128(2)];
        let disks = vec![found("a", ids[0], 7), found("b", ids[1], 3)];
        let copies = vec![
            copy("a", 7, 7, config(&ids, &[7, 3])),
            copy("b", 3, 3, config(&ids, &[3, 3])),
        ];
        let c = choose("dg", &disks, &copies, None).unwrap();
        assert_eq!(c.copy.seq, 7);
        assert!(c.lagging.is_empty());
    }

    #[test]
    fn same_seq_different_commit_is_split_brain() {
        let ids = [Uuid::from_u128(1), Uuid::from_u128(2)];
        let disks = vec![];
        let copies = vec![
            copy("a", 4, 1, config(&ids, &[4, 3])),
            copy("b", 4, 2, config(&ids, &[3, 4])),
        ];
        assert!(matches!(
            choose("dg", &disks, &copies, None),
            Err(ChooseError::SplitBrain { .. })
        ));
        assert!(matches!(
            choose("dg", &[], &[], None),
            Err(ChooseError::NoCopy(_))
        ));
    }

    #[test]
    fn missing_copy_holders_are_not_called_split_brain() {
        // nconfig 1: only "a" held current copies (seq 9); b and c were relabelled at 9 but
        // carry copies from seq 4. Without "a" the import is refused, and says why.
        let ids = [Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3)];
        let disks = vec![found("b", ids[1], 9), found("c", ids[2], 9)];
        let copies = vec![
            copy("b", 4, 4, config(&ids, &[4, 4, 4])),
            copy("c", 4, 4, config(&ids, &[4, 4, 4])),
        ];
        let e = choose("dg", &disks, &copies, None).unwrap_err();
        assert!(
            matches!(
                e,
                ChooseError::CurrentCopyMissing {
                    serial: 9,
                    newest: 4,
                    ..
                }
            ),
            "{e}"
        );
        assert!(choose("dg", &disks, &copies, Some("b")).is_ok());
    }
}
