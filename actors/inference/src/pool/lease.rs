//! A worker on a GPU holds a lease on its device's memory from the node's GPU manager, so the
//! manager's accounting (`GET /v1/devices`, `memory_leased`) shows what inference occupies and
//! refuses a model that does not fit before it is loaded.

use std::time::Duration;

use abi_protocol::ActorPath;
use abi_protocol::gpu::{Lease, MANAGER_PATH, Release};
use abi_runtime::{AskError, Node};

use crate::device::DeviceSpec;

const ASK: Duration = Duration::from_secs(5);

/// Room for activations, KV cache and CUDA's own workspace on top of the weights.
const HEADROOM: u64 = 512 << 20;

/// Where a worker runs, and whom it leases the device from.
#[derive(Clone)]
pub struct Placement {
    /// The configured device.
    pub device: DeviceSpec,
    /// The node (whose GPU manager leases) and the pool's path (the lease's holder, so the
    /// manager releases it if the pool is gone). `None` in unit tests without a node.
    pub leaser: Option<(Node, ActorPath)>,
}

/// A granted lease; dropping it (worker stopped, failed or restarted) gives it back.
pub struct DeviceLease {
    node: Node,
    manager: ActorPath,
    id: u64,
}

impl Drop for DeviceLease {
    fn drop(&mut self) {
        // The manager's sweep also releases leases of vanished holders; this frees the memory
        // at once when only this worker goes.
        let _ = self.node.tell(&self.manager, Release { lease_id: self.id });
    }
}

/// Leases `bytes` of weights (plus headroom) on `placement.device` when it is a GPU and the
/// node runs a GPU manager. A node without a manager runs the model unaccounted.
pub async fn acquire(placement: &Placement, bytes: u64) -> Result<Option<DeviceLease>, String> {
    let (Some((node, holder)), Some((backend, index))) =
        (&placement.leaser, placement.device.backend())
    else {
        return Ok(None);
    };
    let manager = node.path(MANAGER_PATH).map_err(|e| e.to_string())?;
    let lease = Lease {
        holder: holder.clone(),
        backend: Some(backend.to_string()),
        device: Some(index),
        memory: bytes.saturating_add(HEADROOM),
    };
    match node.ask(&manager, lease, ASK).await {
        Ok(Ok(grant)) => {
            tracing::info!(device = %placement.device, lease = grant.lease_id, name = %grant.device, "leased GPU memory");
            Ok(Some(DeviceLease {
                node: node.clone(),
                manager,
                id: grant.lease_id,
            }))
        }
        Ok(Err(e)) => Err(format!(
            "the GPU manager cannot lease {}: {e}",
            placement.device
        )),
        Err(AskError::NoSuchActor(_)) => {
            tracing::warn!(device = %placement.device, "no GPU manager on this node: device memory is not accounted");
            Ok(None)
        }
        Err(e) => Err(format!(
            "leasing {} from the GPU manager: {e}",
            placement.device
        )),
    }
}
