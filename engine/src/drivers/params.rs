//! Parameter pieces shared by driver RPCs.

use plexd_control::api::drivers::DeleteParams;
use plexd_control::RpcError;

/// Parses an optional uuid parameter.
pub(crate) fn parse_uuid(u: Option<&str>) -> Result<Option<uuid::Uuid>, RpcError> {
    match u {
        None => Ok(None),
        Some(s) => uuid::Uuid::parse_str(s)
            .map(Some)
            .map_err(|e| RpcError::invalid_params(format!("invalid uuid '{s}': {e}"))),
    }
}

/// Rejects metadata/DIF options plexd does not implement (accepting 0 / false, as SPDK's
/// saved configs carry them).
pub(crate) fn reject_metadata(md_size: Option<u32>, dif_type: Option<u32>) -> Result<(), RpcError> {
    if md_size.unwrap_or(0) != 0 || dif_type.unwrap_or(0) != 0 {
        return Err(RpcError::errno(
            libc::ENOTSUP,
            "separate metadata and DIF are not supported by plexd; use md_size 0 and dif_type 0",
        ));
    }
    Ok(())
}

/// The default name `<prefix><n>` not taken yet.
pub(crate) fn default_name(engine: &crate::Engine, prefix: &str) -> String {
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .find(|n| engine.bdevs().check_free(n).is_ok())
        .unwrap_or_else(|| prefix.to_string())
}

/// `bdev_<driver>_delete {name}`: deletes a bdev of the driver whose product name is
/// `product` and answers `true` (SPDK's shape for every delete method).
pub(crate) fn delete_bdev(
    engine: &crate::Engine,
    p: DeleteParams,
    product: &str,
) -> Result<bool, RpcError> {
    engine.delete_bdev(&p.name, Some(product))?;
    Ok(true)
}
