//! `plexctl disk ...`: the disks (member bdevs) of disk groups.

use std::collections::HashMap;

use clap::{ArgGroup, Subcommand};
use plexd_control::api::dg::{DgList, DgListParams};
use plexd_control::api::disk::{DiskInfo, DiskList, DiskSet, DiskSetParams};
use plexd_control::api::RpcMethod;
use serde_json::Value;

use crate::plan::{Output, Request};
use crate::render::{blocks_size, cell, opt_cell, pretty, rows, MISSING};
use crate::table::Table;

/// `plexctl disk ...`
#[derive(Debug, Subcommand)]
pub enum DiskCommand {
    /// List the disks of imported disk groups (disk_list).
    List {
        /// Only the disks of this disk group.
        #[arg(long, value_name = "DG")]
        dg: Option<String>,
    },
    /// Set a disk's flags (disk_set).
    #[command(group(ArgGroup::new("flags").required(true).multiple(true)))]
    Set {
        /// The disk group.
        dg: String,
        /// The disk (e.g. disk02).
        disk: String,
        /// Keep the disk as a hot spare: new volumes are not allocated on it.
        #[arg(long, value_name = "BOOL", group = "flags")]
        spare: Option<bool>,
        /// Do not use the disk for hot relocation.
        #[arg(long, value_name = "BOOL", group = "flags")]
        nohotuse: Option<bool>,
    },
}

pub(crate) fn plan(command: &DiskCommand) -> Request {
    match command {
        DiskCommand::List { dg } => Request::typed::<DiskList>(
            &DgListParams {
                dg: dg.clone(),
                name: None,
            },
            Output::Disks,
        )
        .with_lookup(DgList::METHOD, None),
        DiskCommand::Set {
            dg,
            disk,
            spare,
            nohotuse,
        } => Request::typed::<DiskSet>(
            &DiskSetParams {
                dg: dg.clone(),
                name: disk.clone(),
                spare: *spare,
                nohotuse: *nohotuse,
            },
            Output::Silent,
        ),
    }
}

/// `disk_list`: one row per disk; sizes need the group's block size (from `dg_list`).
pub(crate) fn disks(result: &Value, block_sizes: &HashMap<String, u64>) -> String {
    let Some(list) = rows::<DiskInfo>(result, "") else {
        return pretty(result);
    };
    let mut t =
        Table::new(&["DG", "NAME", "DEVICE", "CONDITION", "SIZE", "FREE", "FLAGS"]).right(&[4, 5]);
    for d in list {
        let bs = d.dg.get().and_then(|g| block_sizes.get(g).copied());
        let flags: Vec<&str> = [(&d.spare, "spare"), (&d.nohotuse, "nohotuse")]
            .into_iter()
            .filter(|(flag, _)| flag.copied() == Some(true))
            .map(|(_, name)| name)
            .collect();
        t.row(vec![
            cell(&d.dg),
            cell(&d.name),
            opt_cell(&d.device),
            cell(&d.condition),
            blocks_size(d.public_blocks.copied(), bs),
            blocks_size(d.free_blocks.copied(), bs),
            if flags.is_empty() {
                MISSING.to_string()
            } else {
                flags.join(",")
            },
        ]);
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::plan::testing::{check, plan_of};
    use crate::plan::{Lookup, Output, Plan};
    use crate::render::{render, render_with};

    #[test]
    fn disks_and_their_flags() {
        let Ok(Plan::Call(r)) = plan_of("disk list --dg dg01") else {
            panic!("disk list is one call");
        };
        assert_eq!(
            (r.method.as_str(), r.params, r.output, r.lookup),
            (
                "disk_list",
                Some(json!({"dg": "dg01"})),
                Output::Disks,
                Some(Lookup {
                    method: "dg_list",
                    params: None
                })
            )
        );
        check("disk list", "disk_list", None, Output::Disks);
        check(
            "disk set dg01 disk03 --spare true",
            "disk_set",
            Some(json!({"dg": "dg01", "name": "disk03", "spare": true})),
            Output::Silent,
        );
        check(
            "disk set dg01 disk03 --spare false --nohotuse true",
            "disk_set",
            Some(json!({"dg": "dg01", "name": "disk03", "spare": false, "nohotuse": true})),
            Output::Silent,
        );
    }

    #[test]
    fn disk_table_takes_block_sizes_from_dg_list() {
        let reply = json!([
            {"dg": "dg01", "name": "disk01", "device": "M0", "condition": "OK",
             "spare": false, "nohotuse": false, "public_blocks": 57344, "free_blocks": 36864},
            {"dg": "dg01", "name": "disk03", "device": null, "condition": "NODEVICE",
             "spare": true, "nohotuse": true, "public_blocks": 57344, "free_blocks": 57344}
        ]);
        let groups = json!([{"name": "dg01", "block_size": 512}]);
        assert_eq!(
            render_with(Output::Disks, &reply, Some(&groups)),
            "DG    NAME    DEVICE  CONDITION    SIZE    FREE  FLAGS\n\
             dg01  disk01  M0      OK         28 MiB  18 MiB  -\n\
             dg01  disk03  -       NODEVICE   28 MiB  28 MiB  spare,nohotuse\n"
        );
        // Without the lookup the sizes are unknown.
        let out = render(Output::Disks, &reply);
        let row: Vec<&str> = out
            .lines()
            .nth(1)
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        assert_eq!(
            row,
            vec!["dg01", "disk01", "M0", "OK", "-", "-", "-"],
            "{out}"
        );
    }
}
