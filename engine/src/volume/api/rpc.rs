//! The volume manager's JSON-RPC methods: `dg_*`, `disk_*`, `volume_*`, `plex_*`,
//! `subdisk_move`, `vm_print`, `task_list`, `task_wait` (and, from [`super::raid`],
//! `bdev_raid_*`). Their params and results are the `plexd_control::api` types (`dg`, `disk`,
//! `volume`, `plex`, `task`), so names and shapes are fixed for scripts and `plexctl` alike
//! (see `docs/rpc.md`).

use std::sync::Arc;
use std::time::Duration;

use plexd_control::api::dg::{
    DgAddDisk, DgCreate, DgDeport, DgDestroy, DgImport, DgList, DgRemoveDisk, DgSet,
};
use plexd_control::api::disk::{DiskList, DiskSet};
use plexd_control::api::plex::{PlexAttach, PlexDetach, SubdiskMove};
use plexd_control::api::task::{TaskList, TaskStarted, TaskWait};
use plexd_control::api::volume::{
    Resized, Size, VmPrint, VolumeAddlog, VolumeCheck, VolumeCreate, VolumeDelete, VolumeList,
    VolumeRecover, VolumeResize, VolumeSet, VolumeStart, VolumeStop,
};
use plexd_control::{MethodTable, RpcError};

use crate::volume::copy::task::TaskState;
use crate::volume::manager::VolumeManager;
use crate::volume::manager::{ops, settings};

/// A size in bytes, or the invalid-params error naming it.
fn bytes(size: &Size) -> Result<u64, RpcError> {
    size.bytes()
        .map_err(|e| RpcError::invalid_params(format!("size: {e}")))
}

/// Registers the volume manager's methods (and SPDK's `bdev_raid_*`, which map onto it).
pub fn register(t: &mut MethodTable, vm: &Arc<VolumeManager>) {
    super::raid::register(t, vm);
    let m = vm.clone();
    t.runtime_typed::<DgCreate, _>(move |p| {
        m.dg_create(&p.name, &p.disks, p.force)?;
        if let Some(n) = p.nconfig {
            m.dg_set(&p.name, n)?;
        }
        Ok(true)
    });
    let m = vm.clone();
    t.runtime_typed::<DgSet, _>(move |p| {
        m.dg_set(&p.name, p.nconfig)?;
        Ok(true)
    });
    let m = vm.clone();
    t.runtime_typed::<DgAddDisk, _>(move |p| {
        Ok(m.dg_add_disk(&p.dg, &p.disk, p.name.as_deref(), p.force)?)
    });
    let m = vm.clone();
    t.runtime_typed::<DgRemoveDisk, _>(move |p| {
        m.dg_remove_disk(&p.dg, &p.name)?;
        Ok(true)
    });
    let m = vm.clone();
    t.runtime_typed::<DgDeport, _>(move |p| {
        m.dg_deport(&p.name)?;
        Ok(true)
    });
    let m = vm.clone();
    t.runtime_typed::<DgDestroy, _>(move |p| {
        m.dg_destroy(&p.name)?;
        Ok(true)
    });
    let m = vm.clone();
    t.runtime_typed::<DgImport, _>(move |p| {
        Ok(m.dg_import(
            p.name.as_deref(),
            p.disks.as_deref(),
            p.select_copy.as_deref(),
        )?)
    });
    let m = vm.clone();
    t.runtime_typed::<DgList, _>(move |p| Ok(m.dg_list(p.name.as_deref().or(p.dg.as_deref()))?));
    let m = vm.clone();
    t.runtime_typed::<DiskList, _>(move |p| Ok(m.disk_list(p.dg.as_deref())?));
    let m = vm.clone();
    t.runtime_typed::<DiskSet, _>(move |p| {
        m.disk_set(&p.dg, &p.name, p.spare, p.nohotuse)?;
        Ok(true)
    });
    let m = vm.clone();
    t.runtime_typed::<VolumeCreate, _>(move |p| {
        let req = ops::VolumeCreate {
            size: bytes(&p.size)?,
            dg: p.dg,
            name: p.name,
            layout: p.layout.unwrap_or_else(|| "concat".into()),
            ncol: p.ncol,
            nmirror: p.nmirror,
            stripe_unit_kb: p.stripe_unit_kb,
            read_policy: p.read_policy,
            prefer_plex: p.prefer_plex,
            alloc: p.alloc,
            nlog: p.nlog,
            log_failure: p.log_failure,
            skip_copy: p.skip_copy,
        };
        Ok(m.volume_create(&req)?)
    });
    let m = vm.clone();
    t.runtime_typed::<VolumeDelete, _>(move |p| {
        m.volume_delete(&p.dg, &p.name)?;
        Ok(true)
    });
    let m = vm.clone();
    t.runtime_typed::<VolumeResize, _>(move |p| {
        let blocks = m.volume_resize(&p.dg, &p.name, bytes(&p.size)?)?;
        Ok(Resized {
            num_blocks: blocks.into(),
        })
    });
    let m = vm.clone();
    t.runtime_typed::<SubdiskMove, _>(move |p| {
        let id = m.subdisk_move(
            &p.dg,
            &p.subdisk,
            p.disk.as_deref(),
            Duration::from_millis(p.delay_ms.unwrap_or(0)),
        )?;
        Ok(TaskStarted { task: id.into() })
    });
    let m = vm.clone();
    t.runtime_typed::<VolumeStart, _>(move |p| {
        m.volume_start_with(&p.dg, &p.name, p.force)?;
        Ok(true)
    });
    let m = vm.clone();
    t.runtime_typed::<VolumeRecover, _>(move |p| {
        let id = m.volume_recover(
            &p.dg,
            &p.name,
            p.disk.as_deref(),
            Duration::from_millis(p.delay_ms.unwrap_or(0)),
        )?;
        Ok(TaskStarted { task: id.into() })
    });
    let m = vm.clone();
    t.runtime_typed::<VolumeAddlog, _>(move |p| {
        Ok(m.log_attach(&p.dg, &p.name, p.alloc.as_deref())?)
    });
    let m = vm.clone();
    t.runtime_typed::<VolumeCheck, _>(move |p| {
        let id = m.volume_check(&p.dg, &p.name, p.repair)?;
        Ok(TaskStarted { task: id.into() })
    });
    let m = vm.clone();
    t.runtime_typed::<VolumeSet, _>(move |p| {
        let set = settings::VolumeSet {
            skip_copy: p.skip_copy,
        };
        m.volume_set(&p.dg, &p.name, &set)?;
        Ok(true)
    });
    let m = vm.clone();
    t.runtime_typed::<VolumeStop, _>(move |p| {
        m.volume_stop(&p.dg, &p.name)?;
        Ok(true)
    });
    let m = vm.clone();
    t.runtime_typed::<VolumeList, _>(move |p| {
        Ok(m.volume_list(p.dg.as_deref(), p.name.as_deref())?)
    });
    let m = vm.clone();
    t.runtime_typed::<PlexAttach, _>(move |p| {
        let id = m.plex_attach(
            &p.dg,
            &p.volume,
            p.plex.as_deref(),
            p.alloc.as_deref(),
            Duration::from_millis(p.delay_ms.unwrap_or(0)),
        )?;
        Ok(TaskStarted { task: id.into() })
    });
    let m = vm.clone();
    t.runtime_typed::<PlexDetach, _>(move |p| {
        m.plex_detach(&p.dg, &p.plex, p.dissociate)?;
        Ok(true)
    });
    let m = vm.clone();
    t.runtime_typed::<VmPrint, _>(move |p| Ok(m.vm_print(p.dg.as_deref())?));
    let m = vm.clone();
    t.runtime_typed::<TaskList, _>(move |_p| {
        Ok(m.tasks()
            .list()
            .iter()
            .map(|t| super::task::info(t))
            .collect())
    });
    let m = vm.clone();
    t.runtime_typed::<TaskWait, _>(move |p| {
        let timeout = Duration::from_millis(p.timeout_ms.unwrap_or(600_000));
        let task = m
            .tasks()
            .wait(p.id, timeout)
            .ok_or_else(|| RpcError::errno(libc::ENOENT, format!("no task {}", p.id)))?;
        if task.state() == TaskState::Running {
            return Err(RpcError::errno(
                libc::ETIMEDOUT,
                format!("task {} is still running after {timeout:?}", p.id),
            ));
        }
        Ok(super::task::info(&task))
    });
}

#[cfg(test)]
mod tests {
    use plexd_control::size::parse_size;

    #[test]
    fn sizes() {
        let p = |s: &str| parse_size(s).ok();
        assert_eq!(p("4096"), Some(4096));
        assert_eq!(p("64K"), Some(65536));
        assert_eq!(p("1G"), Some(1 << 30));
        assert_eq!(p("1.5GiB"), Some(3 << 29));
        assert_eq!(p("2 t"), Some(2 << 40));
        assert_eq!(p("100MB"), Some(100_000_000));
        assert_eq!(p("x"), None);
        assert_eq!(p("1Q"), None);
        assert_eq!(p("99999999999999999999T"), None);
    }
}
