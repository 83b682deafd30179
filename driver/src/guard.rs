//! One operation per volume at a time: a second concurrent call gets ABORTED
//! (the CSI spec's answer for "operation pending"), it does not queue.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};

#[derive(Debug, Default, Clone)]
pub struct VolumeLocks {
    inflight: Arc<Mutex<HashSet<String>>>,
}

/// Held for the duration of one operation; released on drop.
#[derive(Debug)]
pub struct VolumeGuard {
    key: String,
    locks: VolumeLocks,
}

impl VolumeLocks {
    pub fn try_lock(&self, key: &str) -> Result<VolumeGuard> {
        let mut set = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        if !set.insert(key.to_string()) {
            return Err(Error::Aborted(format!("an operation on {key} is already in progress")));
        }
        Ok(VolumeGuard { key: key.to_string(), locks: self.clone() })
    }

    pub fn in_flight(&self) -> usize {
        self.inflight.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

impl Drop for VolumeGuard {
    fn drop(&mut self) {
        self.locks.inflight.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_aborted_until_the_first_is_dropped() {
        let locks = VolumeLocks::default();
        let g = locks.try_lock("v").unwrap();
        assert!(matches!(locks.try_lock("v"), Err(Error::Aborted(_))));
        assert!(locks.try_lock("w").is_ok());
        drop(g);
        assert!(locks.try_lock("v").is_ok());
    }
}
