//! Certificates while serving: replacing the management API's TLS certificate without a
//! restart (SIGHUP, `vouchd serve`'s signal handler).

use super::AppState;
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
