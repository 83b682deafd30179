//! Sizes as Kubernetes writes them: quantities and a claim's granted capacity.
//! Shared by the steps and the emulated components, so it sits below both.

/// Bytes a claim has been given (`status.capacity.storage`), 0 while it has none.
pub fn capacity_of(pvc: &k8s_openapi::api::core::v1::PersistentVolumeClaim) -> u64 {
    pvc.status
        .as_ref()
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.get("storage"))
        .and_then(|q| quantity(&q.0))
        .unwrap_or(0)
}

/// Bytes of a Kubernetes quantity (sizes only).
pub fn quantity(s: &str) -> Option<u64> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    let mult: u64 = match unit {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "k" => 1000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        _ => return None,
    };
    n.checked_mul(mult)
}
