//! The driver image recipe: the Dockerfile, the daemonless build and the chart
//! agree on the image's name, labels, version and package list; and
//! `deploy/image/oci-archive.sh` writes an OCI image layout whose digests, sizes
//! and config are right (read back here with Rust's tar, gzip and SHA-256, not
//! with the tools the script uses).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use deploy_checks::{chart_dir, repo_root};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

fn image_dir() -> PathBuf {
    repo_root().join("deploy/image")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `KEY=value` / `KEY="value"` lines of image.env.
fn image_env() -> BTreeMap<String, String> {
    read(&image_dir().join("image.env"))
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('"').to_string()))
        .collect()
}

/// `org.opencontainers.image.KEY="VALUE"` pairs of the Dockerfile's LABEL instruction.
fn dockerfile_labels(dockerfile: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = dockerfile;
    while let Some(start) = rest.find("org.opencontainers.image.") {
        rest = &rest[start + "org.opencontainers.image.".len()..];
        let Some((key, after)) = rest.split_once("=\"") else { break };
        let Some((value, after)) = after.split_once('"') else { break };
        if key.chars().all(|c| c.is_ascii_lowercase() || c == '.') {
            out.insert(key.to_string(), value.to_string());
        }
        rest = after;
    }
    out
}

#[test]
fn dockerfile_daemonless_build_and_chart_name_the_same_image() {
    let env = image_env();
    let dockerfile = read(&image_dir().join("Dockerfile"));
    let labels = dockerfile_labels(&dockerfile);
    assert_eq!(labels.get("title"), env.get("IMAGE_TITLE"));
    assert_eq!(labels.get("description"), env.get("IMAGE_DESCRIPTION"));
    assert_eq!(labels.get("source"), env.get("IMAGE_SOURCE"));
    assert_eq!(labels.get("licenses"), env.get("IMAGE_LICENSES"));
    assert_eq!(labels.get("version").map(String::as_str), Some("${VERSION}"));
    let suite = env.get("DEBIAN_SUITE").expect("DEBIAN_SUITE in image.env");
    assert!(
        dockerfile.contains(&format!("ARG DEBIAN_SUITE={suite}\n")),
        "the Dockerfile's Debian suite is not {suite}"
    );
    assert!(dockerfile.contains(&format!("ARG VERSION={}\n", env!("CARGO_PKG_VERSION"))));
    assert!(dockerfile.contains("ENTRYPOINT [\"/usr/local/bin/harvester-csi-driver\"]"));
    // One package list: the Dockerfile installs packages.txt, it names none itself.
    assert!(dockerfile.contains("COPY deploy/image/packages.txt"), "the Dockerfile does not install packages.txt");
    assert_eq!(env.get("IMAGE_LICENSES").map(String::as_str), Some("Apache-2.0"));

    let values: Value = serde_saphyr::from_str(&read(&chart_dir().join("values.yaml"))).expect("values.yaml parses");
    assert_eq!(
        values.pointer("/image/harvester/csiDriver/repository").and_then(Value::as_str),
        env.get("IMAGE_REPOSITORY").map(String::as_str),
        "the chart's default driver image is not the one the builds make"
    );
    let chart: Value = serde_saphyr::from_str(&read(&chart_dir().join("Chart.yaml"))).expect("Chart.yaml parses");
    assert_eq!(chart["appVersion"], json!(env!("CARGO_PKG_VERSION")), "appVersion must be the driver's version");
}

#[test]
fn the_package_list_names_each_tool_package_once() {
    let text = read(&image_dir().join("packages.txt"));
    let packages: Vec<&str> =
        text.lines().map(|l| l.split('#').next().unwrap_or("").trim()).filter(|l| !l.is_empty()).collect();
    let mut unique = packages.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), packages.len(), "a package is listed twice: {packages:?}");
    for p in &packages {
        assert!(
            p.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c)),
            "{p:?} is not a Debian package name"
        );
    }
    // What the node plugin runs (driver/src/mount) and RWX needs.
    for needed in ["e2fsprogs", "xfsprogs", "btrfs-progs", "util-linux", "mount", "nfs-common", "ca-certificates"] {
        assert!(packages.contains(&needed), "{needed} is missing");
    }
}

// ---- oci-archive.sh ----------------------------------------------------------------

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Every file of a tar archive by path.
fn entries(archive: &[u8]) -> BTreeMap<String, (tar::Header, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut tar = tar::Archive::new(archive);
    for entry in tar.entries().expect("a tar archive") {
        let mut entry = entry.expect("a tar entry");
        let path = entry.path().expect("a path").display().to_string();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).expect("entry data");
        out.insert(path, (entry.header().clone(), data));
    }
    out
}

fn pack(args: &[&str]) -> std::process::Output {
    Command::new(image_dir().join("oci-archive.sh")).args(args).output().expect("oci-archive.sh runs")
}

#[test]
#[ignore = "needs jq, GNU tar and gzip: apt-get install jq"]
fn oci_archive_writes_a_valid_image_layout() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("temp dir");
    let rootfs = dir.path().join("rootfs");
    std::fs::create_dir_all(rootfs.join("usr/bin")).expect("mkdir");
    std::fs::write(rootfs.join("usr/bin/tool"), b"#!/bin/sh\necho tool\n").expect("write");
    std::fs::set_permissions(rootfs.join("usr/bin/tool"), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::os::unix::fs::symlink("usr/bin", rootfs.join("bin")).expect("symlink");
    // A scratch directory's own 0700 mode must not reach the image.
    std::fs::set_permissions(&rootfs, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let out = dir.path().join("out/image.tar");
    let result = pack(&[
        "--ref",
        "docker.io/local/tool:1.2",
        "--out",
        out.to_str().expect("utf-8 path"),
        "--rootfs",
        rootfs.to_str().expect("utf-8 path"),
        "--entrypoint",
        "/bin/sh",
        "--cmd",
        "-c",
        "--cmd",
        "tool \"$X\"",
        "--env",
        "X=a=b",
        "--label",
        "org.opencontainers.image.title=tool",
        "--label",
        "multi=line1\nline2",
        "--arch",
        "arm64",
    ]);
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));

    let archive = std::fs::read(&out).expect("the archive");
    let files = entries(&archive);
    let layout: Value = serde_json::from_slice(&files["oci-layout"].1).expect("oci-layout is JSON");
    assert_eq!(layout, json!({"imageLayoutVersion": "1.0.0"}));
    // Every blob is stored under its own digest.
    for (path, (_, data)) in files.iter().filter(|(p, _)| p.starts_with("blobs/sha256/") && p.len() > 13) {
        assert_eq!(path.trim_start_matches("blobs/sha256/"), sha256_hex(data), "{path}");
    }
    let blob = |descriptor: &Value| -> Vec<u8> {
        let digest = descriptor["digest"].as_str().expect("digest");
        let (_, data) = files
            .get(&format!("blobs/sha256/{}", digest.trim_start_matches("sha256:")))
            .unwrap_or_else(|| panic!("no blob {digest}"));
        assert_eq!(descriptor["size"], json!(data.len()), "size of {digest}");
        data.clone()
    };

    let index: Value = serde_json::from_slice(&files["index.json"].1).expect("index.json");
    assert_eq!(index["schemaVersion"], json!(2));
    assert_eq!(index["mediaType"], json!("application/vnd.oci.image.index.v1+json"));
    let entry = &index["manifests"][0];
    assert_eq!(entry["annotations"]["io.containerd.image.name"], json!("docker.io/local/tool:1.2"));
    assert_eq!(entry["annotations"]["org.opencontainers.image.ref.name"], json!("1.2"));
    assert_eq!(entry["platform"], json!({"architecture": "arm64", "os": "linux"}));

    let manifest: Value = serde_json::from_slice(&blob(entry)).expect("manifest");
    assert_eq!(manifest["mediaType"], json!("application/vnd.oci.image.manifest.v1+json"));
    assert_eq!(manifest["config"]["mediaType"], json!("application/vnd.oci.image.config.v1+json"));
    let config: Value = serde_json::from_slice(&blob(&manifest["config"])).expect("config");
    assert_eq!(config["architecture"], json!("arm64"));
    assert_eq!(config["config"]["Entrypoint"], json!(["/bin/sh"]));
    assert_eq!(config["config"]["Cmd"], json!(["-c", "tool \"$X\""]));
    assert_eq!(
        config["config"]["Env"],
        json!(["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "X=a=b"])
    );
    assert_eq!(config["config"]["Labels"], json!({"org.opencontainers.image.title": "tool", "multi": "line1\nline2"}));

    let layers = manifest["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 1);
    assert_eq!(layers[0]["mediaType"], json!("application/vnd.oci.image.layer.v1.tar+gzip"));
    let mut tar_bytes = Vec::new();
    flate2::read::GzDecoder::new(blob(&layers[0]).as_slice()).read_to_end(&mut tar_bytes).expect("gzip layer");
    assert_eq!(config["rootfs"], json!({"type": "layers", "diff_ids": [format!("sha256:{}", sha256_hex(&tar_bytes))]}));
    let layer = entries(&tar_bytes);
    let paths: Vec<&str> = layer.keys().map(|p| p.trim_end_matches('/')).collect();
    assert_eq!(paths, ["bin", "usr", "usr/bin", "usr/bin/tool"], "no ./ entry, nothing else");
    let (tool, data) = &layer["usr/bin/tool"];
    assert_eq!(data, b"#!/bin/sh\necho tool\n");
    assert_eq!(tool.mode().expect("mode") & 0o777, 0o755);
    assert_eq!(layer["bin"].0.link_name().expect("link").expect("a symlink").display().to_string(), "usr/bin");
}

#[test]
#[ignore = "needs jq, GNU tar and gzip: apt-get install jq"]
fn oci_archive_refuses_a_name_a_runtime_would_not_match() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("x.tar");
    for bad in ["busybox:1", "docker.io/library/busybox", "localhost:5000/busybox"] {
        let result = pack(&[
            "--ref",
            bad,
            "--out",
            out.to_str().expect("utf-8"),
            "--rootfs",
            dir.path().to_str().expect("utf-8"),
        ]);
        assert!(!result.status.success(), "{bad} was accepted");
        assert!(String::from_utf8_lossy(&result.stderr).contains("fully qualified"), "{bad}");
        assert!(!out.exists());
    }
}
