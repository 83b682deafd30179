//! `harvester-csi-driver cloud-config`: makes a guest cluster's identity on the
//! Harvester host and writes its cloud-config, as upstream's
//! `generate_addon_csi.sh` does with bash, kubectl and jq. The host calls and
//! object shapes are in `host::credentials`; this is the command around them:
//! flags, the order of steps, the report, and the file.

use std::io::Write;
use std::path::Path;

use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::time::Instant;

use crate::config::CloudConfigArgs;
use crate::error::{Error, Result};
use crate::host::credentials::kubeconfig::{check_server, host_endpoint, is_rancher_proxy, render_cloud_config};
use crate::host::credentials::ops::{self, Outcome};
use crate::host::credentials::{permission_error, render_dry_run, GuestIdentity};

/// Runs the command; progress and the dry-run YAML go to `out` (never the token).
pub async fn execute(args: &CloudConfigArgs, out: &mut (dyn Write + Send)) -> Result<()> {
    let id = GuestIdentity::new(&args.namespace, &args.service_account)?;
    let path = &args.host_kubeconfig;
    let kubeconfig = Kubeconfig::read_from(path)
        .map_err(|e| Error::InvalidArgument(format!("host kubeconfig {}: {e}", path.display())))?;
    let endpoint = host_endpoint(&kubeconfig, path)?;
    let server = match &args.server {
        Some(s) => s.clone(),
        None if is_rancher_proxy(&endpoint.server) => {
            return Err(Error::InvalidArgument(format!(
                "the host kubeconfig's server {} goes through Rancher's proxy, which a host ServiceAccount token \
                 cannot use: pass --server https://<Harvester VIP>:6443",
                endpoint.server
            )))
        }
        None => endpoint.server.clone(),
    };
    check_server(&server)?;

    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| Error::InvalidArgument(format!("host kubeconfig {}: {e}", path.display())))?;
    let client = kube::Client::try_from(config)
        .map_err(|e| Error::InvalidArgument(format!("host kubeconfig {}: {e}", path.display())))?;

    let inspection = ops::inspect(&client, &id).await?;
    let missing = ops::missing_permissions(&client, &inspection).await?.unwrap_or_default();
    let output = args.output.display().to_string();
    if args.dry_run {
        write_out(out, &render_dry_run(&inspection, &output))?;
        return if missing.is_empty() { Ok(()) } else { Err(permission_error(&missing, None)) };
    }
    if !missing.is_empty() {
        return Err(permission_error(&missing, None));
    }
    for role in &inspection.missing_roles {
        write_out(
            out,
            &format!(
                "warning: ClusterRole {role} does not exist on this host; its binding grants nothing until it does\n"
            ),
        )?;
    }

    let outcomes = ops::apply(&client, &inspection).await?;
    for (kind, outcome) in &outcomes {
        let what = match outcome {
            Outcome::Created => "created",
            Outcome::Unchanged => "exists, left as is",
        };
        write_out(out, &format!("{}: {what}\n", kind.describe(&id)))?;
    }
    let token = ops::wait_for_token(&client, &id, Instant::now() + args.timeout).await?;
    let (ca, ca_source) = match (&token.ca_pem, &endpoint.ca_pem) {
        (Some(ca), _) => (Some(ca.as_slice()), "the token Secret's ca.crt"),
        (None, Some(ca)) => (Some(ca.as_slice()), "the host kubeconfig"),
        (None, None) => (None, "none: the host's certificate must be publicly trusted"),
    };
    let text = render_cloud_config(&server, ca, &token.token, &id)?;
    let changed = write_private(&args.output, &text)?;
    let created = outcomes.iter().any(|(_, o)| *o == Outcome::Created);
    write_out(
        out,
        &format!(
            "{} {output} (mode 0600): server {server}, namespace {}, CA from {ca_source}{}\n",
            if changed { "wrote" } else { "unchanged:" },
            id.namespace,
            if created || changed { "" } else { "; nothing changed" }
        ),
    )?;
    Ok(())
}

fn write_out(out: &mut (dyn Write + Send), text: &str) -> Result<()> {
    out.write_all(text.as_bytes()).map_err(|source| Error::File { op: "writing", path: "output".into(), source })
}

/// Writes `text` to `path` with mode 0600 (atomically: a temporary file in the
/// same directory, renamed). Returns whether the content or mode changed.
pub fn write_private(path: &Path, text: &str) -> Result<bool> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let shown = path.display().to_string();
    let err = |op: &'static str| {
        let path = shown.clone();
        move |source| Error::File { op, path, source }
    };
    if let Ok(meta) = std::fs::metadata(path) {
        let same_mode = meta.permissions().mode() & 0o777 == 0o600;
        if same_mode && std::fs::read(path).map_err(err("reading"))? == text.as_bytes() {
            return Ok(false);
        }
    }
    let file_name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    if file_name.is_empty() {
        return Err(Error::InvalidArgument(format!("output {shown} is not a file path")));
    }
    let tmp = path.with_file_name(format!(".{file_name}.tmp-{}", std::process::id()));
    let written = (|| {
        let mut f =
            std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(err("creating"))?;
        f.write_all(text.as_bytes()).map_err(err("writing"))?;
        f.sync_all().map_err(err("syncing"))?;
        std::fs::rename(&tmp, path).map_err(err("replacing"))
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.map(|()| true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777
    }

    #[test]
    fn the_cloud_config_is_private_and_rewritten_only_when_it_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cloud-provider-config");
        assert!(write_private(&path, "a: 1\n").expect("first write"));
        assert_eq!((mode(&path), std::fs::read_to_string(&path).expect("read").as_str()), (0o600, "a: 1\n"));
        assert!(!write_private(&path, "a: 1\n").expect("same content"), "nothing to change");
        assert!(write_private(&path, "a: 2\n").expect("new content"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(write_private(&path, "a: 2\n").expect("same content, too open"), "a readable file is replaced");
        assert_eq!(mode(&path), 0o600);
        let leftovers: Vec<_> =
            std::fs::read_dir(dir.path()).expect("dir").map(|e| e.expect("entry").file_name()).collect();
        assert_eq!(leftovers, ["cloud-provider-config"], "no temporary files stay behind");
    }

    #[test]
    fn a_directory_is_not_an_output_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = write_private(&dir.path().join(".."), "x").expect_err("not a file path");
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
        let e = write_private(dir.path(), "x").expect_err("a directory");
        assert!(e.to_string().contains(&dir.path().display().to_string()), "{e}");
    }
}
