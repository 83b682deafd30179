//! The YAML end-to-end scenario runner. Filled by the scenarios issue.
