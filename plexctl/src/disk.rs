//! `plexctl disk ...`: the disks (member bdevs) of disk groups.

use std::collections::HashMap;

use clap::{ArgGroup, Subcommand};
use serde_json::{json, Map, Value};

use crate::plan::{Output, Request};
use crate::render::{blocks_size, field, pretty, u64_field, MISSING};
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
        DiskCommand::List { dg } => Request::new(
            "disk_list",
            dg.as_ref().map(|d| json!({"dg": d})),
            Output::Disks,
        )
        .with_lookup("dg_list", None),
        DiskCommand::Set {
            dg,
            disk,
            spare,
            nohotuse,
        } => {
            let mut p = Map::new();
            p.insert("dg".into(), json!(dg));
            p.insert("name".into(), json!(disk));
            if let Some(s) = spare {
                p.insert("spare".into(), json!(s));
            }
            if let Some(n) = nohotuse {
                p.insert("nohotuse".into(), json!(n));
            }
            Request::new("disk_set", Some(Value::Object(p)), Output::Silent)
        }
    }
}

/// `disk_list`: one row per disk; sizes need the group's block size (from `dg_list`).
pub(crate) fn disks(result: &Value, block_sizes: &HashMap<String, u64>) -> String {
    let Some(list) = result.as_array() else {
        return pretty(result);
    };
    let mut t =
        Table::new(&["DG", "NAME", "DEVICE", "CONDITION", "SIZE", "FREE", "FLAGS"]).right(&[4, 5]);
    for d in list {
        let bs = d
            .get("dg")
            .and_then(Value::as_str)
            .and_then(|g| block_sizes.get(g).copied());
        let flags: Vec<&str> = [("spare", "spare"), ("nohotuse", "nohotuse")]
            .into_iter()
            .filter(|(key, _)| d.get(*key).and_then(Value::as_bool) == Some(true))
            .map(|(_, name)| name)
            .collect();
        t.row(vec![
            field(d, "dg"),
            field(d, "name"),
            field(d, "device"),
            field(d, "condition"),
            blocks_size(u64_field(d, "public_blocks"), bs),
            blocks_size(u64_field(d, "free_blocks"), bs),
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
