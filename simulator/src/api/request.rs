//! Parsing a request path into what the apiserver calls RequestInfo.

use super::error::{ApiError, ApiResult};

/// What a resource request addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceRequest {
    pub group: String,
    pub version: String,
    pub resource: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Version,
    CoreVersions,
    Groups,
    Group(String),
    GroupVersion { group: String, version: String },
    OpenApi,
    Health,
    Resource(ResourceRequest),
}

fn decode(segment: &str) -> ApiResult<String> {
    let s = percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .map_err(|_| ApiError::bad_request("path is not valid UTF-8"))?
        .into_owned();
    if s.is_empty() || s == "." || s == ".." || s.contains('/') {
        return Err(ApiError::bad_request(format!("invalid path segment {segment:?}")));
    }
    Ok(s)
}

/// `is_namespaced_plural(group, version, plural)` tells `/api/v1/namespaces/x/<plural>`
/// (a list in namespace x) from `/api/v1/namespaces/x/status` (the namespace's own subresource).
pub fn parse(path: &str, is_namespaced_plural: impl Fn(&str, &str, &str) -> bool) -> ApiResult<Route> {
    let trimmed = path.trim_end_matches('/');
    let segs: Vec<&str> = trimmed.split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, rest): (String, String, &[&str]) = match segs.as_slice() {
        ["version"] => return Ok(Route::Version),
        ["healthz" | "livez" | "readyz", ..] => return Ok(Route::Health),
        ["openapi", ..] => return Ok(Route::OpenApi),
        ["api"] => return Ok(Route::CoreVersions),
        ["apis"] => return Ok(Route::Groups),
        ["apis", g] => return Ok(Route::Group(decode(g)?)),
        ["api", v] => return Ok(Route::GroupVersion { group: String::new(), version: decode(v)? }),
        ["apis", g, v] => return Ok(Route::GroupVersion { group: decode(g)?, version: decode(v)? }),
        ["api", v, rest @ ..] => (String::new(), decode(v)?, rest),
        ["apis", g, v, rest @ ..] => (decode(g)?, decode(v)?, rest),
        _ => return Err(ApiError::unknown_route(path)),
    };
    let mut req = ResourceRequest { group, version, ..Default::default() };
    let rest: Vec<String> = rest.iter().map(|s| decode(s)).collect::<ApiResult<_>>()?;
    // As the apiserver's RequestInfo resolver: `namespaces/<ns>/<x>` is a request in
    // namespace <ns> unless <x> is one of the namespace's own subresources.
    let namespace_subresource = |plural: &str| {
        req.group.is_empty()
            && matches!(plural, "status" | "finalize")
            && !is_namespaced_plural(&req.group, &req.version, plural)
    };
    let tail: &[String] = match rest.as_slice() {
        [ns_kw, ns, plural, tail @ ..] if ns_kw == "namespaces" && !namespace_subresource(plural) => {
            req.namespace = Some(ns.clone());
            req.resource = plural.clone();
            tail
        }
        [plural, tail @ ..] => {
            req.resource = plural.clone();
            tail
        }
        [] => return Err(ApiError::unknown_route(path)),
    };
    match tail {
        [] => {}
        [name] => req.name = Some(name.clone()),
        [name, sub] => {
            req.name = Some(name.clone());
            req.subresource = Some(sub.clone());
        }
        _ => return Err(ApiError::unknown_route(path)),
    }
    Ok(Route::Resource(req))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns_plural(_g: &str, _v: &str, p: &str) -> bool {
        matches!(p, "pods" | "persistentvolumeclaims" | "virtualmachines")
    }

    #[test]
    fn parses_namespaced_and_cluster_paths() {
        let r = parse("/api/v1/namespaces/default/pods/p1/status", ns_plural).unwrap();
        let Route::Resource(r) = r else { panic!() };
        assert_eq!(
            (r.namespace.as_deref(), r.resource.as_str(), r.name.as_deref(), r.subresource.as_deref()),
            (Some("default"), "pods", Some("p1"), Some("status"))
        );
        let Route::Resource(r) = parse("/api/v1/namespaces/default/status", ns_plural).unwrap() else { panic!() };
        assert_eq!(
            (r.resource.as_str(), r.name.as_deref(), r.subresource.as_deref()),
            ("namespaces", Some("default"), Some("status"))
        );
        let Route::Resource(r) = parse("/apis/kubevirt.io/v1/virtualmachines", ns_plural).unwrap() else { panic!() };
        assert_eq!((r.group.as_str(), r.namespace, r.resource.as_str()), ("kubevirt.io", None, "virtualmachines"));
        let Route::Resource(r) =
            parse("/apis/rbac.authorization.k8s.io/v1/clusterroles/harvesterhci.io%3Acsi-driver", ns_plural).unwrap()
        else {
            panic!()
        };
        assert_eq!(r.name.as_deref(), Some("harvesterhci.io:csi-driver"));
    }

    #[test]
    fn rejects_traversal_and_garbage() {
        assert!(parse("/api/v1/namespaces/%2e%2e/pods", ns_plural).is_err());
        assert!(parse("/api/v1/pods/a/b/c/d", ns_plural).is_err());
        assert!(parse("/nope", ns_plural).is_err());
    }
}
