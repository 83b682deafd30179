//! One operation per volume at a time: a second concurrent call gets ABORTED
//! (the CSI spec's answer for "operation pending"), it does not queue.
//!
//! The one exception is publishing an RWX export: enabling it for a second VM
//! does not conflict with enabling it for a first (both ask for the same
//! state), so such publishes share the volume and only exclude everything
//! else (an unpublish that may disable the export, a delete, an expansion).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Holders {
    Exclusive,
    /// How many shared holders there are (at least one).
    Shared(usize),
}

#[derive(Debug, Default, Clone)]
pub struct VolumeLocks {
    inflight: Arc<Mutex<HashMap<String, Holders>>>,
}

/// Held for the duration of one operation; released on drop.
#[derive(Debug)]
pub struct VolumeGuard {
    key: String,
    locks: VolumeLocks,
}

fn busy(key: &str) -> Error {
    Error::Aborted(format!("an operation on {key} is already in progress"))
}

impl VolumeLocks {
    /// The volume alone, or ABORTED while anything else holds it.
    pub fn try_lock(&self, key: &str) -> Result<VolumeGuard> {
        let mut held = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        if held.contains_key(key) {
            return Err(busy(key));
        }
        held.insert(key.to_string(), Holders::Exclusive);
        Ok(VolumeGuard { key: key.to_string(), locks: self.clone() })
    }

    /// The volume together with other shared holders, or ABORTED while an
    /// exclusive operation holds it.
    pub fn try_lock_shared(&self, key: &str) -> Result<VolumeGuard> {
        let mut held = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        let next = match held.get(key) {
            None => Holders::Shared(1),
            Some(Holders::Shared(n)) => Holders::Shared(n + 1),
            Some(Holders::Exclusive) => return Err(busy(key)),
        };
        held.insert(key.to_string(), next);
        Ok(VolumeGuard { key: key.to_string(), locks: self.clone() })
    }

    pub fn in_flight(&self) -> usize {
        self.inflight.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

impl Drop for VolumeGuard {
    fn drop(&mut self) {
        let mut held = self.locks.inflight.lock().unwrap_or_else(|p| p.into_inner());
        match held.get(&self.key).copied() {
            Some(Holders::Shared(n)) if n > 1 => {
                held.insert(self.key.clone(), Holders::Shared(n - 1));
            }
            _ => {
                held.remove(&self.key);
            }
        }
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

    #[test]
    fn shared_holders_exclude_only_exclusive_ones() {
        let locks = VolumeLocks::default();
        let a = locks.try_lock_shared("v").expect("first shared");
        let b = locks.try_lock_shared("v").expect("second shared");
        assert!(matches!(locks.try_lock("v"), Err(Error::Aborted(_))), "exclusive waits for all shared");
        drop(a);
        assert!(matches!(locks.try_lock("v"), Err(Error::Aborted(_))), "one shared holder left");
        drop(b);
        let x = locks.try_lock("v").expect("exclusive once all are gone");
        assert!(matches!(locks.try_lock_shared("v"), Err(Error::Aborted(_))), "shared waits for exclusive");
        drop(x);
        assert_eq!(locks.in_flight(), 0);
    }
}
