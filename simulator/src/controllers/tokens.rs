//! Keeps the token authenticator in step with ServiceAccount token Secrets.

use std::sync::Arc;

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::Ctx;

pub async fn run(ctx: Arc<Ctx>, shutdown: CancellationToken) {
    let mut events = ctx.api.store.subscribe();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            e = events.recv() => match e {
                Ok(e) if e.key.group.is_empty() && e.key.plural == "secrets" => {}
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            },
        }
        ctx.server.authn.sync_service_account_tokens(&ctx.admin_token, &ctx.api.list("", "secrets", None));
    }
}
