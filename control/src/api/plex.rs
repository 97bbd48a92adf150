//! Plexes and subdisks: `plex_attach`, `plex_detach`, `subdisk_move`. Attach and move copy
//! in the background and answer the task to follow.

use serde::{Deserialize, Serialize};

use super::task::TaskStarted;
use super::RpcMethod;

method!(
    /// `plex_attach`: add a mirror to a volume, copied in the background.
    PlexAttach, "plex_attach", PlexAttachParams, TaskStarted
);

method!(
    /// `plex_detach`: take a plex out of its volume (and optionally delete it).
    PlexDetach, "plex_detach", PlexDetachParams, bool
);

method!(
    /// `subdisk_move`: move a subdisk to another disk, copied in the background.
    SubdiskMove, "subdisk_move", SubdiskMoveParams, TaskStarted
);

/// Params of `plex_attach`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlexAttachParams {
    /// The group.
    pub dg: String,
    /// The volume.
    pub volume: String,
    /// An existing, dissociated plex to attach; default a new one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plex: Option<String>,
    /// Disks to allocate a new plex from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alloc: Option<Vec<String>>,
    /// Pause between chunks, in ms (for tests and throttling).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
}

/// Params of `plex_detach`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlexDetachParams {
    /// The group.
    pub dg: String,
    /// The plex.
    pub plex: String,
    /// Also delete the plex and free its subdisks.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dissociate: bool,
}

/// Params of `subdisk_move`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubdiskMoveParams {
    /// The group.
    pub dg: String,
    /// The subdisk.
    pub subdisk: String,
    /// The disk to move to; default any with room.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk: Option<String>,
    /// Pause between chunks, in ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::api::golden::assert_shape;

    #[test]
    fn params_shapes() {
        assert_shape(
            &PlexAttachParams {
                dg: "dg01".into(),
                volume: "vol01".into(),
                alloc: Some(vec!["disk03".into()]),
                delay_ms: Some(5),
                ..Default::default()
            },
            json!({"dg": "dg01", "volume": "vol01", "alloc": ["disk03"], "delay_ms": 5}),
        );
        assert_shape(
            &PlexDetachParams {
                dg: "dg01".into(),
                plex: "vol01-02".into(),
                dissociate: false,
            },
            json!({"dg": "dg01", "plex": "vol01-02"}),
        );
        assert_shape(
            &PlexDetachParams {
                dg: "dg01".into(),
                plex: "vol01-02".into(),
                dissociate: true,
            },
            json!({"dg": "dg01", "plex": "vol01-02", "dissociate": true}),
        );
        assert_shape(
            &SubdiskMoveParams {
                dg: "dg01".into(),
                subdisk: "disk01-01".into(),
                disk: Some("disk03".into()),
                delay_ms: None,
            },
            json!({"dg": "dg01", "subdisk": "disk01-01", "disk": "disk03"}),
        );
    }
}
