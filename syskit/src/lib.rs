//! Host plumbing that the driver's mount code and the simulator's device code
//! both need, kept in one place so they behave the same: running admin tools
//! (losetup, mount, mkfs, ...) with a deadline, and reading the kernel's mount
//! table.

pub mod command;
pub mod mountinfo;

pub use command::{find_program, Cmd, CommandError, Output};
pub use mountinfo::{MountInfo, MountinfoError};
