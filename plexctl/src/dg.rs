//! `plexctl dg ...`: disk groups of the volume manager.

use std::collections::HashMap;

use clap::Subcommand;
use plexd_control::api::dg::{
    DgAddDisk, DgAddDiskParams, DgCreate, DgCreateParams, DgDeport, DgDestroy, DgDiskParams,
    DgImport, DgImportParams, DgInfo, DgList, DgListParams, DgNameParams, DgRemoveDisk,
};
use serde_json::Value;

use crate::plan::{Output, Request};
use crate::render::{blocks_size, cell, len_cell, pretty, rows};
use crate::table::Table;

/// `plexctl dg ...`
#[derive(Debug, Subcommand)]
pub enum DgCommand {
    /// Create a disk group from bdevs (dg_create); each becomes a disk named diskNN.
    ///
    /// Every bdev is initialised (a label and a private region at its start) and claimed by
    /// the group. The bdevs must share one block size.
    Create {
        /// Name of the new disk group.
        name: String,
        /// The bdevs to use as its disks.
        #[arg(value_name = "BDEV", required = true)]
        bdevs: Vec<String>,
        /// Initialise bdevs even if they hold another group's disk, a foreign or corrupt label.
        #[arg(long)]
        force: bool,
    },
    /// Add a bdev to a disk group as a new disk (dg_add_disk); prints the disk's name.
    AddDisk {
        /// The disk group.
        dg: String,
        /// The bdev to add.
        bdev: String,
        /// Name for the disk; default the next free diskNN.
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
        /// Initialise the bdev even if it holds a label.
        #[arg(long)]
        force: bool,
    },
    /// Remove a disk that holds no subdisks from its group (dg_remove_disk).
    RemoveDisk {
        /// The disk group.
        dg: String,
        /// The disk (e.g. disk02), not the bdev.
        disk: String,
    },
    /// Stop a disk group's volumes and release its disks (dg_deport), so that another plexd
    /// can import it.
    Deport {
        /// The disk group.
        name: String,
    },
    /// Import disk groups found on bdevs (dg_import); prints the groups imported.
    Import {
        /// Only this disk group; default every group found.
        name: Option<String>,
        /// Scan only this bdev (repeatable); default every unclaimed bdev.
        #[arg(long = "disk", value_name = "BDEV")]
        disks: Vec<String>,
        /// Trust the configuration copy on this bdev when the copies disagree (split brain).
        #[arg(long, value_name = "BDEV")]
        select_copy: Option<String>,
    },
    /// List imported disk groups, or show one (dg_list).
    List {
        /// Only this disk group.
        name: Option<String>,
    },
    /// Destroy a disk group that has no volumes (dg_destroy).
    ///
    /// Every disk's label is reset to a free disk and its bdev released, so the bdevs can be
    /// used again (by `dg create` without --force, for instance).
    Destroy {
        /// The disk group.
        name: String,
    },
}

pub(crate) fn plan(command: &DgCommand) -> Request {
    let by_name = |name: &String| DgNameParams { name: name.clone() };
    match command {
        DgCommand::Create { name, bdevs, force } => Request::typed::<DgCreate>(
            &DgCreateParams {
                name: name.clone(),
                disks: bdevs.clone(),
                force: *force,
                nconfig: None,
            },
            Output::Silent,
        ),
        DgCommand::AddDisk {
            dg,
            bdev,
            name,
            force,
        } => Request::typed::<DgAddDisk>(
            &DgAddDiskParams {
                dg: dg.clone(),
                disk: bdev.clone(),
                name: name.clone(),
                force: *force,
            },
            Output::Name,
        ),
        DgCommand::RemoveDisk { dg, disk } => Request::typed::<DgRemoveDisk>(
            &DgDiskParams {
                dg: dg.clone(),
                name: disk.clone(),
            },
            Output::Silent,
        ),
        DgCommand::Deport { name } => Request::typed::<DgDeport>(&by_name(name), Output::Silent),
        DgCommand::Import {
            name,
            disks,
            select_copy,
        } => Request::typed::<DgImport>(
            &DgImportParams {
                name: name.clone(),
                disks: (!disks.is_empty()).then(|| disks.clone()),
                select_copy: select_copy.clone(),
            },
            Output::Lines,
        ),
        DgCommand::List { name } => Request::typed::<DgList>(
            &DgListParams {
                dg: None,
                name: name.clone(),
            },
            Output::DiskGroups,
        ),
        DgCommand::Destroy { name } => Request::typed::<DgDestroy>(&by_name(name), Output::Silent),
    }
}

/// `dg_list`: one row per disk group.
pub(crate) fn disk_groups(result: &Value) -> String {
    let Some(list) = rows::<DgInfo>(result, "") else {
        return pretty(result);
    };
    let mut t = Table::new(&["NAME", "DISKS", "VOLUMES", "FREE", "SEQ", "ID"]).right(&[1, 2, 3, 4]);
    for g in list {
        t.row(vec![
            cell(&g.name),
            len_cell(&g.disks),
            len_cell(&g.volumes),
            blocks_size(g.free_blocks.copied(), g.block_size.copied()),
            cell(&g.seq),
            cell(&g.id),
        ]);
    }
    t.render()
}

/// Block size by disk group, from a `dg_list` reply.
pub(crate) fn group_block_sizes(dg_list: Option<&Value>) -> HashMap<String, u64> {
    let list = dg_list
        .and_then(|v| rows::<DgInfo>(v, ""))
        .unwrap_or_default();
    list.into_iter()
        .filter_map(|g| Some((g.name.get()?.clone(), g.block_size.copied()?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::plan::testing::check;
    use crate::plan::Output;
    use crate::render::render;

    #[test]
    fn disk_groups() {
        check(
            "dg create dg01 M0 M1",
            "dg_create",
            Some(json!({"name": "dg01", "disks": ["M0", "M1"]})),
            Output::Silent,
        );
        check(
            "dg create dg01 M0 --force",
            "dg_create",
            Some(json!({"name": "dg01", "disks": ["M0"], "force": true})),
            Output::Silent,
        );
        check(
            "dg add-disk dg01 M2",
            "dg_add_disk",
            Some(json!({"dg": "dg01", "disk": "M2"})),
            Output::Name,
        );
        check(
            "dg add-disk dg01 M2 --name fast01 --force",
            "dg_add_disk",
            Some(json!({"dg": "dg01", "disk": "M2", "name": "fast01", "force": true})),
            Output::Name,
        );
        check(
            "dg remove-disk dg01 disk02",
            "dg_remove_disk",
            Some(json!({"dg": "dg01", "name": "disk02"})),
            Output::Silent,
        );
        check(
            "dg deport dg01",
            "dg_deport",
            Some(json!({"name": "dg01"})),
            Output::Silent,
        );
        check("dg import", "dg_import", None, Output::Lines);
        check(
            "dg import dg01 --disk M0 --disk M1 --select-copy M1",
            "dg_import",
            Some(json!({"name": "dg01", "disks": ["M0", "M1"], "select_copy": "M1"})),
            Output::Lines,
        );
        check(
            "dg destroy dg01",
            "dg_destroy",
            Some(json!({"name": "dg01"})),
            Output::Silent,
        );
        check("dg list", "dg_list", None, Output::DiskGroups);
        check(
            "dg list dg01",
            "dg_list",
            Some(json!({"name": "dg01"})),
            Output::DiskGroups,
        );
    }

    #[test]
    fn disk_group_table() {
        let reply = json!([
            {"name": "dg01", "id": "390e8001-afdb-4789-bf43-ab52e69cb9b6", "seq": 7,
             "block_size": 512, "nconfig": 0, "disks": ["disk01", "disk02", "disk03"],
             "volumes": ["vol01", "vol02"], "free_blocks": 131072}
        ]);
        assert_eq!(
            render(Output::DiskGroups, &reply),
            "NAME  DISKS  VOLUMES    FREE  SEQ  ID\n\
             dg01      3        2  64 MiB    7  390e8001-afdb-4789-bf43-ab52e69cb9b6\n"
        );
    }
}
