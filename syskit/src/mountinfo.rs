//! Parser for `/proc/self/mountinfo` (see proc(5)).
//!
//! Line layout:
//! `36 35 98:0 /root /mnt/point rw,noatime shared:1 master:2 - ext4 /dev/sda1 rw,errors=continue`
//! i.e. mount id, parent id, major:minor, root, mount point, per-mount
//! options, zero or more optional fields, a lone `-`, fs type, source,
//! superblock options. Whitespace and backslashes inside fields are written as
//! octal escapes (`\040` for a space), which is what lets us split on spaces.

use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// This process's view of the mount table.
pub const MOUNTINFO_PATH: &str = "/proc/self/mountinfo";

#[derive(Debug, thiserror::Error)]
pub enum MountinfoError {
    #[error("read {MOUNTINFO_PATH}: {source}")]
    Read {
        #[source]
        source: io::Error,
    },

    /// A line that does not have the documented shape.
    #[error("unexpected output from {MOUNTINFO_PATH}: {detail}")]
    Malformed { detail: String },
}

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    /// Mount source as the kernel reports it (a device path, or e.g. "tmpfs").
    pub source: String,
    /// Mount point, unescaped.
    pub target: PathBuf,
    pub fs_type: String,
    /// Per-mount options followed by the superblock options not already
    /// present; contains "ro" if either level is read-only.
    pub options: Vec<String>,
    /// Path inside the source filesystem that is mounted here ("/" unless
    /// this is a bind mount of a subdirectory or file).
    pub root: String,
    /// `major:minor` of the mounted filesystem; for filesystems on a single
    /// block device (ext4, xfs) this is the device's number.
    pub major_minor: String,
}

impl MountInfo {
    pub fn is_read_only(&self) -> bool {
        self.options.iter().any(|o| o == "ro")
    }
}

/// The raw text of [`MOUNTINFO_PATH`], for [`parse`] and [`find_at`].
pub fn read() -> Result<Vec<u8>, MountinfoError> {
    std::fs::read(MOUNTINFO_PATH).map_err(|source| MountinfoError::Read { source })
}

/// A parsed line plus the ids needed to tell stacked mounts apart; kept out
/// of [`MountInfo`] because most callers have no use for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub mount_id: u64,
    pub parent_id: u64,
    pub info: MountInfo,
}

pub fn parse(text: &[u8]) -> Result<Vec<Entry>, MountinfoError> {
    lines(text).map(parse_line).collect()
}

/// The topmost mount at `target`. Only lines whose mount point matches are
/// fully parsed, so this stays cheap on nodes with thousands of mounts and an
/// odd line elsewhere cannot make it fail.
pub fn find_at(text: &[u8], target: &Path) -> Result<Option<MountInfo>, MountinfoError> {
    let want = target.as_os_str().as_bytes();
    let mut matching = Vec::new();
    for line in lines(text) {
        if line.split(|&b| b == b' ').nth(4).is_some_and(|mp| unescape(mp) == want) {
            matching.push(parse_line(line)?);
        }
    }
    Ok(topmost(matching).map(|e| e.info))
}

/// Among mounts sharing one mount point, the one nothing else is stacked on.
///
/// File order alone is not trusted: mount moves and propagation can list a
/// lower mount after an upper one, but the parent links are authoritative.
pub fn topmost(entries: Vec<Entry>) -> Option<Entry> {
    let covered: Vec<u64> = entries.iter().map(|e| e.parent_id).collect();
    let mut uncovered: Vec<Entry> = entries.iter().filter(|e| !covered.contains(&e.mount_id)).cloned().collect();
    // A cycle cannot happen; if it somehow does, the latest mount is the best guess.
    uncovered.pop().or_else(|| entries.into_iter().last())
}

fn lines(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    text.split(|&b| b == b'\n').filter(|l| !l.is_empty())
}

pub fn parse_line(line: &[u8]) -> Result<Entry, MountinfoError> {
    let malformed =
        |why: &str| MountinfoError::Malformed { detail: format!("{why} in line {:?}", String::from_utf8_lossy(line)) };
    let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    if fields.len() < 10 {
        return Err(malformed("too few fields"));
    }
    let sep = fields[6..].iter().position(|f| *f == b"-").map(|p| p + 6).ok_or_else(|| malformed("no separator"))?;
    let [fs_type, source, super_opts] = [sep + 1, sep + 2, sep + 3].map(|i| fields.get(i).copied());
    let (Some(fs_type), Some(source), Some(super_opts)) = (fs_type, source, super_opts) else {
        return Err(malformed("too few fields after separator"));
    };
    let id = |field: &[u8], name: &str| {
        std::str::from_utf8(field).ok().and_then(|s| s.parse::<u64>().ok()).ok_or_else(|| malformed(name))
    };
    Ok(Entry {
        mount_id: id(fields[0], "bad mount id")?,
        parent_id: id(fields[1], "bad parent id")?,
        info: MountInfo {
            source: lossy(source),
            target: PathBuf::from(OsString::from_vec(unescape(fields[4]))),
            fs_type: lossy(fs_type),
            options: merge_options(fields[5], super_opts),
            root: lossy(fields[3]),
            major_minor: lossy(fields[2]),
        },
    })
}

fn lossy(field: &[u8]) -> String {
    String::from_utf8_lossy(&unescape(field)).into_owned()
}

/// Decodes the kernel's `\ooo` escapes; anything else is taken literally.
pub fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\' {
            if let Some(byte) = field.get(i + 1..i + 4).and_then(octal_byte) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(field[i]);
        i += 1;
    }
    out
}

fn octal_byte(digits: &[u8]) -> Option<u8> {
    digits.iter().try_fold(0u8, |acc, &d| match d {
        b'0'..=b'7' => acc.checked_mul(8).and_then(|v| v.checked_add(d - b'0')),
        _ => None,
    })
}

/// Per-mount options first, then superblock options not already listed.
///
/// The mount is read-only if either level says so, and callers should only
/// have to look for "ro", so a read-only superblock turns the per-mount "rw"
/// into "ro" instead of listing both.
fn merge_options(mount_opts: &[u8], super_opts: &[u8]) -> Vec<String> {
    let split =
        |opts: &[u8]| -> Vec<String> { opts.split(|&b| b == b',').filter(|o| !o.is_empty()).map(lossy).collect() };
    let mut merged = split(mount_opts);
    let supers = split(super_opts);
    if supers.iter().any(|o| o == "ro") {
        merged.retain(|o| o != "rw");
        if !merged.iter().any(|o| o == "ro") {
            merged.insert(0, "ro".to_owned());
        }
    }
    for opt in supers {
        if opt != "ro" && opt != "rw" && !merged.contains(&opt) {
            merged.push(opt);
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 252:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw,errors=remount-ro
35 22 0:30 / /var/lib/kubelet/pods/a\\040b/volumes rw,nosuid,nodev shared:9 master:3 - tmpfs tmpfs rw,size=1024k
36 35 7:3 / /var/lib/kubelet/pods/a\\040b/volumes ro,relatime - xfs /dev/loop3 rw,attr2,inode64
40 22 7:4 /sub/dir /mnt/bind rw,relatime - ext4 /dev/loop4 ro
";

    fn entries() -> Vec<Entry> {
        parse(SAMPLE.as_bytes()).expect("sample parses")
    }

    #[test]
    fn parses_all_fields() {
        let e = &entries()[0];
        assert_eq!((e.mount_id, e.parent_id), (22, 1));
        assert_eq!(
            e.info,
            MountInfo {
                source: "/dev/vda1".into(),
                target: "/".into(),
                fs_type: "ext4".into(),
                options: vec!["rw".into(), "relatime".into(), "errors=remount-ro".into()],
                root: "/".into(),
                major_minor: "252:1".into(),
            }
        );
    }

    #[test]
    fn decodes_space_escapes_and_skips_optional_fields() {
        let e = &entries()[1];
        assert_eq!(e.info.target, Path::new("/var/lib/kubelet/pods/a b/volumes"));
        assert_eq!(e.info.fs_type, "tmpfs");
        assert_eq!(e.info.source, "tmpfs");
        assert_eq!(e.info.options, ["rw", "nosuid", "nodev", "size=1024k"]);
    }

    #[test]
    fn line_without_optional_fields() {
        let e = &entries()[3];
        assert_eq!(e.info.root, "/sub/dir");
        assert_eq!(e.info.major_minor, "7:4");
    }

    #[test]
    fn read_only_superblock_makes_the_mount_read_only() {
        assert_eq!(entries()[3].info.options, ["ro", "relatime"]);
        assert!(entries()[3].info.is_read_only());
        assert_eq!(merge_options(b"ro,nosuid", b"ro,data=ordered"), ["ro", "nosuid", "data=ordered"]);
        assert_eq!(merge_options(b"rw", b"rw,noquota"), ["rw", "noquota"]);
    }

    #[test]
    fn topmost_of_stacked_mounts() {
        let at = find_at(SAMPLE.as_bytes(), Path::new("/var/lib/kubelet/pods/a b/volumes")).expect("parses");
        let top = at.expect("something is mounted there");
        assert_eq!(top.source, "/dev/loop3");
        assert!(top.is_read_only());
    }

    #[test]
    fn topmost_ignores_file_order() {
        let mut all = entries();
        let upper = all.remove(2);
        let lower = all.remove(1);
        assert_eq!(topmost(vec![upper.clone(), lower.clone()]), Some(upper.clone()));
        assert_eq!(topmost(vec![lower, upper.clone()]), Some(upper));
        assert_eq!(topmost(Vec::new()), None);
    }

    #[test]
    fn find_at_requires_an_exact_match() {
        let text = SAMPLE.as_bytes();
        assert!(find_at(text, Path::new("/var/lib/kubelet/pods/a")).expect("parses").is_none());
        assert!(find_at(text, Path::new("/mnt")).expect("parses").is_none());
        assert_eq!(find_at(text, Path::new("/mnt/bind")).expect("parses").map(|m| m.root), Some("/sub/dir".into()));
    }

    #[test]
    fn find_at_tolerates_unrelated_garbage() {
        let text = format!("garbage line\n{SAMPLE}");
        assert!(find_at(text.as_bytes(), Path::new("/mnt/bind")).expect("garbage is skipped").is_some());
        assert!(parse(text.as_bytes()).is_err());
    }

    #[test]
    fn unescape_handles_all_kernel_escapes_and_leaves_the_rest() {
        assert_eq!(unescape(br"a\040b\011c\012d\134e"), b"a b\tc\nd\\e");
        assert_eq!(unescape(br"tail\04"), br"tail\04");
        assert_eq!(unescape(br"not\999octal"), br"not\999octal");
        assert_eq!(unescape(br"\777"), br"\777", "out of byte range stays literal");
        assert_eq!(unescape(b"plain"), b"plain");
    }

    #[test]
    fn non_utf8_mount_points_survive() {
        let line = b"50 22 0:40 / /mnt/caf\xe9 rw - tmpfs tmpfs rw";
        let e = parse_line(line).expect("parses");
        assert_eq!(e.info.target.as_os_str().as_bytes(), b"/mnt/caf\xe9");
    }

    #[test]
    fn malformed_lines_are_errors() {
        for bad in [
            &b"1 2 3"[..],
            b"x 1 0:1 / /a rw shared:1 - ext4 /dev/a rw",
            b"1 1 0:1 / /a rw shared:1 ext4 /dev/a rw more",
            b"1 1 0:1 / /a rw shared:1 x y z -",
        ] {
            assert!(
                matches!(parse_line(bad), Err(MountinfoError::Malformed { .. })),
                "{:?} should be rejected",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn parses_this_process_mount_table() {
        let text = read().expect("procfs is mounted");
        let all = parse(&text).expect("the kernel's own output parses");
        assert!(all.iter().any(|e| e.info.target == Path::new("/")));
    }

    #[test]
    fn read_only_detection() {
        let mut info = entries()[0].info.clone();
        assert!(!info.is_read_only());
        info.options[0] = "ro".into();
        assert!(info.is_read_only());
    }

    #[test]
    fn errors_name_the_file() {
        let err = parse_line(b"1 2 3").expect_err("too short");
        assert!(err.to_string().starts_with("unexpected output from /proc/self/mountinfo: too few fields"), "{err}");
    }
}
