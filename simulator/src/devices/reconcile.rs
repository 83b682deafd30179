//! Bringing attachments back after a simulator or host restart, from the
//! attachments the API objects say should exist.

use tracing::warn;

use super::error::Result;
use super::{DeviceManager, DeviceMode};

impl DeviceManager {
    /// Brings the wanted `(vm, volume, link)` attachments back after a simulator or
    /// host restart: re-attaches where the loop device is gone, fixes stale links,
    /// then releases loop devices of those volumes that nothing links to. Keeps going
    /// past failures so one broken volume does not block the rest; returns the first
    /// error.
    pub async fn reconcile(&self, wanted: &[(String, String, String)]) -> Result<()> {
        let mut first_error = None;
        let mut volumes = Vec::new();
        for (vm, volume, link) in wanted {
            match self.attach(vm, volume, link).await {
                Ok(_) => {
                    if !volumes.contains(volume) {
                        volumes.push(volume.clone());
                    }
                }
                Err(e) => {
                    warn!(vm, volume, link, error = %e, "reconcile: attach failed");
                    first_error.get_or_insert(e);
                }
            }
        }
        if self.mode == DeviceMode::Loop {
            for volume in &volumes {
                let _guard = self.lock_volume(volume).await;
                if let Err(e) = self.release_orphans_locked(volume).await {
                    warn!(volume, error = %e, "reconcile: releasing unlinked loop devices failed");
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}
