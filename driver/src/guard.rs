//! One operation per volume at a time: a second concurrent call gets ABORTED
//! (the CSI spec's answer for "operation pending"), it does not queue.
//!
//! The one exception is publishing an RWX export: enabling it for a second VM
//! does not conflict with enabling it for a first (both ask for the same
//! state), so such publishes share the volume and only exclude everything
//! else (an unpublish that may disable the export, a delete, an expansion).
//!
//! A caller may look at the host before taking a guard (to refuse early without
//! holding it) and reuse what it saw once it holds the guard, if no operation on
//! that volume ran in between: [`VolumeLocks::quiet`] and [`VolumeLocks::still_quiet`].

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Holders {
    Exclusive,
    /// How many shared holders there are (at least one).
    Shared(usize),
}

/// Release counters are kept per bucket of keys, not per key, so they stay bounded
/// however many volumes come and go; two keys sharing a bucket only make a
/// quiet check answer "not quiet" more often, never wrongly "quiet".
const RELEASE_BUCKETS: usize = 1024;

#[derive(Debug)]
struct State {
    held: HashMap<String, Holders>,
    releases: Vec<u64>,
}

#[derive(Debug, Clone)]
pub struct VolumeLocks {
    inflight: Arc<Mutex<State>>,
}

impl Default for VolumeLocks {
    fn default() -> Self {
        let state = State { held: HashMap::new(), releases: vec![0; RELEASE_BUCKETS] };
        Self { inflight: Arc::new(Mutex::new(state)) }
    }
}

/// No guard was held on a key when this was taken, and how many guards on keys of
/// its bucket had been released by then.
#[derive(Debug, Clone, Copy)]
pub struct Quiet {
    bucket: usize,
    releases: u64,
}

fn bucket_of(key: &str) -> usize {
    // A fixed-key hasher: the same key always lands in the same bucket.
    let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(key);
    (hash % RELEASE_BUCKETS as u64) as usize
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
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inflight.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Taken before looking at the host for `key`; `None` while an operation holds it.
    pub fn quiet(&self, key: &str) -> Option<Quiet> {
        let state = self.state();
        let bucket = bucket_of(key);
        (!state.held.contains_key(key)).then(|| Quiet { bucket, releases: state.releases[bucket] })
    }

    /// Whether no guard on a key of `quiet`'s bucket was released since it was taken.
    /// Asked while holding the guard on that key: then no operation on the key ran
    /// between the two (one still running would have kept the guard from being taken),
    /// so what was seen after `quiet` is as current as a fresh look would be.
    pub fn still_quiet(&self, quiet: &Quiet) -> bool {
        self.state().releases[quiet.bucket] == quiet.releases
    }

    pub fn try_lock(&self, key: &str) -> Result<VolumeGuard> {
        let mut state = self.state();
        let held = &mut state.held;
        if held.contains_key(key) {
            return Err(busy(key));
        }
        held.insert(key.to_string(), Holders::Exclusive);
        Ok(VolumeGuard { key: key.to_string(), locks: self.clone() })
    }

    /// The volume together with other shared holders, or ABORTED while an
    /// exclusive operation holds it.
    pub fn try_lock_shared(&self, key: &str) -> Result<VolumeGuard> {
        let mut state = self.state();
        let held = &mut state.held;
        let next = match held.get(key) {
            None => Holders::Shared(1),
            Some(Holders::Shared(n)) => Holders::Shared(n + 1),
            Some(Holders::Exclusive) => return Err(busy(key)),
        };
        held.insert(key.to_string(), next);
        Ok(VolumeGuard { key: key.to_string(), locks: self.clone() })
    }

    pub fn in_flight(&self) -> usize {
        self.state().held.len()
    }
}

impl Drop for VolumeGuard {
    fn drop(&mut self) {
        let mut state = self.locks.state();
        match state.held.get(&self.key).copied() {
            Some(Holders::Shared(n)) if n > 1 => {
                state.held.insert(self.key.clone(), Holders::Shared(n - 1));
            }
            _ => {
                state.held.remove(&self.key);
            }
        }
        state.releases[bucket_of(&self.key)] += 1;
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

    #[test]
    fn quiet_holds_until_an_operation_on_the_key_ends() {
        let locks = VolumeLocks::default();
        let q = locks.quiet("v").expect("nothing holds v");
        let other = locks.try_lock("w").expect("w");
        assert!(locks.still_quiet(&q), "a guard still held on another key changes nothing");
        let g = locks.try_lock("v").expect("v");
        assert!(locks.still_quiet(&q), "the caller's own guard");
        drop(g);
        assert!(!locks.still_quiet(&q), "an operation on v ended since");
        drop(other);
    }

    #[test]
    fn no_quiet_while_the_key_is_held() {
        let locks = VolumeLocks::default();
        let g = locks.try_lock_shared("v").expect("v");
        assert!(locks.quiet("v").is_none());
        drop(g);
        assert!(locks.quiet("v").is_some());
    }

    #[test]
    fn an_operation_started_and_ended_in_between_is_seen() {
        let locks = VolumeLocks::default();
        let q = locks.quiet("v").expect("nothing holds v");
        drop(locks.try_lock_shared("v").expect("a publish of v"));
        assert!(!locks.still_quiet(&q));
        let q = locks.quiet("v").expect("nothing holds v");
        let _mine = locks.try_lock("v").expect("v");
        assert!(locks.still_quiet(&q));
    }
}
