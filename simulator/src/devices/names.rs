//! Validation of the names and values that end up as path components or
//! one-line sysfs files in a VM's fake root.

use super::error::{DeviceError, Result};

/// Kubernetes object names (DNS subdomains) are at most 253 bytes.
const MAX_NAME_LEN: usize = 253;

/// Validates a name used as a single path component (volume, vm, link, nic).
///
/// `..` is rejected anywhere in the name, not only as the whole name, which also
/// lets the manager use names containing `..` for its own temporary files without
/// any chance of colliding with a caller's name.
pub fn check_name(kind: &str, name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        Some("must not be empty")
    } else if name.len() > MAX_NAME_LEN {
        Some("must be at most 253 bytes")
    } else if name.contains('/') {
        Some("must not contain '/'")
    } else if name.contains("..") {
        Some("must not contain '..'")
    } else if name == "." {
        Some("must not be '.'")
    } else if name.chars().any(char::is_control) {
        Some("must not contain NUL or control characters")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(DeviceError::InvalidName { kind: kind.to_owned(), name: name.to_owned(), reason }),
        None => Ok(()),
    }
}

/// Values written as one-line sysfs files must stay one line.
pub(super) fn check_line_value(what: &'static str, value: &str) -> Result<()> {
    let reason = if value.is_empty() {
        Some("must not be empty")
    } else if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("must not contain whitespace or control characters")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(DeviceError::InvalidValue { what, value: value.to_owned(), reason }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_name_rejects_bad_names() {
        for bad in ["", "../x", "a/b", "..", ".", "a..b", "a\0b", "a\nb"] {
            assert!(
                matches!(check_name("volume", bad), Err(DeviceError::InvalidName { .. })),
                "{bad:?} should be rejected"
            );
        }
        assert!(check_name("volume", &"x".repeat(254)).is_err());
        assert!(check_name("volume", &"x".repeat(253)).is_ok());
        assert!(check_name("volume", "pvc-0b6e4a1c-2f3d.img").is_ok());
        let msg = check_name("vm", "a/b").unwrap_err().to_string();
        assert!(msg.contains("vm") && msg.contains("a/b"), "{msg}");
    }

    #[test]
    fn line_values_stay_one_line() {
        assert!(check_line_value("mac address", "52:54:00:aa:bb:01").is_ok());
        for bad in ["", "two\nlines", "a b", "tab\t"] {
            assert!(matches!(check_line_value("uuid", bad), Err(DeviceError::InvalidValue { .. })), "{bad:?}");
        }
    }
}
