//! Certificates and keys while serving: replacing the management API's TLS certificate
//! without a restart (SIGHUP, `vouchd serve`'s signal handler), and rotating the
//! token-signing key with a grace period for the tokens the old key signed.

use super::AppState;
use crate::jwt::{KeyInfo, Signer};
use crate::tls::CertificateInfo;

/// Reads the API's certificate and key files again and serves them to new connections
/// (connections already open keep the certificate they began with). A pair that does not
/// parse, whose key is not the certificate's, or that is not valid now is refused: the
/// certificate in service stays. Either way an event records it: `tls.reloaded` or
/// `tls.reload_failed`.
pub async fn reload_tls(state: &AppState) -> Result<CertificateInfo, String> {
    let Some(live) = &state.tls else {
        return Err("this vouchd serves no TLS certificate".into());
    };
    let old = live.current();
    match live.reload(crate::now()) {
        Ok(info) => {
            tracing::info!(
                fingerprint = %info.fingerprint,
                serial = %info.serial,
                not_after = info.not_after,
                "the API's TLS certificate was reloaded; new connections get it"
            );
            let detail = serde_json::json!({
                "fingerprint": info.fingerprint,
                "serial": info.serial,
                "not_after": info.not_after,
                "previous_fingerprint": old.map(|o| o.fingerprint),
            });
            super::events::record(state, "tls.reloaded", "api", detail).await;
            Ok(info)
        }
        Err(e) => {
            let reason = e.to_string();
            tracing::error!(
                error = %reason,
                "the API's TLS certificate was NOT reloaded: the old certificate stays in service; fix the files and send SIGHUP again"
            );
            let detail = serde_json::json!({
                "error": reason,
                "fingerprint_in_service": old.map(|o| o.fingerprint),
            });
            super::events::record(state, "tls.reload_failed", "api", detail).await;
            Err(reason)
        }
    }
}

/// How often a vouchd reads the token-signing keys from the database: the bound on how long a
/// rotation made through another replica takes to reach this one.
pub const SIGNING_KEYS_PERIOD: std::time::Duration = std::time::Duration::from_secs(2);

/// The database's token-signing keys: the current one, and the previous one with when it was
/// retired.
pub async fn stored_signing_keys(
    store: &std::sync::Arc<dyn crate::store::Store>,
) -> Result<(Signer, Option<(Signer, i64)>), String> {
    let keys = crate::store::run(store, |s| s.signing_keys())
        .await
        .map_err(|e| format!("cannot read the signing keys: {e}"))?;
    let signer = |hex_key: &str| -> Result<Signer, String> {
        let pkcs8 = zeroize::Zeroizing::new(
            hex::decode(hex_key).map_err(|_| "a stored signing key is not hex".to_owned())?,
        );
        Signer::from_pkcs8(&pkcs8).map_err(|e| format!("a stored signing key: {e}"))
    };
    let mut current = None;
    let mut previous = None;
    for key in keys {
        match key.retired_at {
            None => current = Some(signer(&key.pkcs8_hex)?),
            Some(at) => previous = Some((signer(&key.pkcs8_hex)?, at)),
        }
    }
    let current = current.ok_or_else(|| "the database holds no signing key".to_owned())?;
    Ok((current, previous))
}

/// Takes the database's signing keys into use if they differ from the ones in use; returns
/// whether they did.
pub async fn reload_signing_keys(state: &AppState) -> Result<bool, String> {
    let (current, previous) = stored_signing_keys(&state.store).await?;
    let stored = (
        current.kid().to_owned(),
        previous.as_ref().map(|(s, _)| s.kid().to_owned()),
    );
    if stored == state.signer.kids() {
        return Ok(false);
    }
    tracing::info!(kid = %stored.0, previous = ?stored.1, "token-signing keys loaded from the database");
    state.signer.replace(current, previous);
    Ok(true)
}

/// Reloads the token-signing keys every [`SIGNING_KEYS_PERIOD`] until `state.shutdown` is
/// cancelled, so that a rotation made through any replica reaches this one.
pub async fn follow_signing_keys(state: AppState) {
    let mut tick = tokio::time::interval(SIGNING_KEYS_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = state.shutdown.cancelled() => return,
        }
        if let Err(e) = reload_signing_keys(&state).await {
            tracing::error!(error = %e, "cannot reload the token-signing keys; the ones in use stay");
        }
    }
}

/// Rotates the token-signing key: a new key signs from now on, on every replica within
/// [`SIGNING_KEYS_PERIOD`]; the previous one stays in the JWKS, and its tokens verify, for
/// `signing_key_grace_secs`. Refused while an earlier rotation's previous key is still in its
/// grace period. Records `signing_key.rotated`. Returns the keys now in use.
pub async fn rotate_signing_key(state: &AppState, by: &str) -> super::Result<Vec<KeyInfo>> {
    let candidate = zeroize::Zeroizing::new(crate::hex(
        zeroize::Zeroizing::new(
            crate::jwt::generate_pkcs8().map_err(|e| super::Error::Internal(e.to_string()))?,
        )
        .as_slice(),
    ));
    let now = crate::now();
    let grace = i64::try_from(state.config.signing_key_grace_secs()).unwrap_or(i64::MAX);
    crate::store::run(&state.store, move |s| {
        s.rotate_signing_key(&candidate, now, grace)
    })
    .await
    .map_err(|e| match e {
        // The store's sentence says why (the previous key's grace period).
        crate::store::StoreError::Conflict(why) => super::Error::Conflict(why),
        other => other.into(),
    })?;
    reload_signing_keys(state)
        .await
        .map_err(super::Error::Internal)?;
    let keys = state.signer.describe();
    let detail = serde_json::json!({ "by": by, "keys": keys });
    super::events::record(state, "signing_key.rotated", &state.signer.kid(), detail).await;
    Ok(keys)
}
