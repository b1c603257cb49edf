//! HTTP(S) for the harness: `/metrics`, the control API, Janus's REST API. reqwest over
//! rustls; the system's trust store, plus certificates the caller adds (a server's own or a
//! development certificate). Proxies from the environment are ignored: the harness talks to
//! the servers it names.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("not an http:// or https:// URL: {0}")]
    Url(String),
    #[error("{0}")]
    Request(#[from] reqwest::Error),
    #[error("no response within {0:?}")]
    Timeout(Duration),
    #[error("cannot use the certificate: {0}")]
    Certificate(String),
}

/// A client trusting the system's roots and `extra_roots` (PEM certificates).
pub fn client(extra_roots: &[&[u8]]) -> Result<reqwest::Client, HttpError> {
    let mut b = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(5));
    for pem in extra_roots {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        // Checked here: reqwest would take a file with no certificate in it silently.
        let n = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| HttpError::Certificate(e.to_string()))?
            .len();
        if n == 0 {
            return Err(HttpError::Certificate(
                "no CERTIFICATE block in the PEM".into(),
            ));
        }
        let cert = reqwest::Certificate::from_pem(pem)
            .map_err(|e| HttpError::Certificate(e.to_string()))?;
        b = b.add_root_certificate(cert);
    }
    Ok(b.build()?)
}

/// Sends one request with `client` and returns the status and body.
pub async fn request_with(
    client: &reqwest::Client,
    method: &str,
    url: &str,
    body: Option<&str>,
    timeout: Duration,
) -> Result<(u16, String), HttpError> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(HttpError::Url(url.to_owned()));
    }
    let method =
        reqwest::Method::from_bytes(method.as_bytes()).map_err(|_| HttpError::Url(url.into()))?;
    let mut req = client.request(method, url).timeout(timeout);
    if let Some(b) = body {
        req = req
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(b.to_owned());
    }
    let fut = async {
        let res = req.send().await?;
        let status = res.status().as_u16();
        Ok::<_, reqwest::Error>((status, res.text().await?))
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(HttpError::Timeout(timeout)),
    }
}

/// Sends one request with a client trusting the system's roots.
pub async fn request(
    method: &str,
    url: &str,
    body: Option<&str>,
    timeout: Duration,
) -> Result<(u16, String), HttpError> {
    request_with(&client(&[])?, method, url, body, timeout).await
}

pub async fn get(url: &str, timeout: Duration) -> Result<(u16, String), HttpError> {
    request("GET", url, None, timeout).await
}

pub async fn post_json(
    url: &str,
    body: &str,
    timeout: Duration,
) -> Result<(u16, String), HttpError> {
    request("POST", url, Some(body), timeout).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refuses_other_schemes_and_reports_a_dead_server() {
        assert!(matches!(
            get("ws://127.0.0.1:1/x", Duration::from_secs(1)).await,
            Err(HttpError::Url(_))
        ));
        // Nothing listens on port 1: an error, not a hang and not a status.
        assert!(
            get("http://127.0.0.1:1/metrics", Duration::from_secs(2))
                .await
                .is_err()
        );
        assert!(client(&[b"not a certificate"]).is_err());
    }
}
