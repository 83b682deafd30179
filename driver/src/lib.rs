//! The Harvester CSI driver (Identity, Controller, Node). Filled by the CSI driver issue.
