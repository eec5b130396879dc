//! Heartbeat pings, healthchecks.io style: GET the URL with `/start` when a job starts, the
//! URL itself when it succeeds, `/fail` when it fails. A monitoring service outside the school
//! then notices a NAS that has stopped running backups at all.

/// The moments a job reports.
#[derive(Clone, Copy, Debug)]
pub enum Beat {
    Start,
    Success,
    Failure,
}

/// Ping, without letting a slow or dead monitoring service hold up the job.
pub async fn ping(url: &str, beat: Beat) {
    let url = match beat {
        Beat::Start => format!("{}/start", url.trim_end_matches('/')),
        Beat::Success => url.to_string(),
        Beat::Failure => format!("{}/fail", url.trim_end_matches('/')),
    };
    let client = match reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "heartbeat client");
            return;
        }
    };
    if let Err(e) = client
        .get(&url)
        .send()
        .await
        .and_then(|r| r.error_for_status())
    {
        // The URL can carry a secret token: log the host only.
        let host = reqwest::Url::parse(&url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_default();
        tracing::warn!(%host, error = %e.without_url(), "heartbeat ping failed");
    }
}
