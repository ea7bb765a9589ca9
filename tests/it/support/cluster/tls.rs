//! HTTPS on loopback with the test cluster's serving certificate (CA-signed, for 127.0.0.1):
//! the node agent's kubelet endpoint and the API proxy serve this way.

use std::path::Path;
use std::sync::Arc;

/// Serves `app` over HTTPS (HTTP/1.1) on a free loopback port until the returned task is
/// aborted or the runtime ends; the port and the task.
pub async fn serve(
    dir: &Path,
    app: axum::Router,
) -> Result<(u16, tokio::task::JoinHandle<()>), String> {
    use rustls::pki_types::pem::PemObject;
    backup_remediator::install_crypto_provider();
    let certs = rustls::pki_types::CertificateDer::pem_file_iter(dir.join("server.crt"))
        .map_err(|e| e.to_string())?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(dir.join("server.key"))
        .map_err(|e| e.to_string())?;
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| e.to_string())?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    let task = tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, app) = (acceptor.clone(), app.clone());
            // In the set: aborting the server ends its connections too.
            connections.spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper_util::service::TowerToHyperService::new(app);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
            while connections.try_join_next().is_some() {}
        }
    });
    Ok((port, task))
}
