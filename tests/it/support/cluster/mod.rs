//! A real Kubernetes control plane for the tests, one per test process: etcd, kube-apiserver
//! (token authentication, RBAC, the PodSecurity, ValidatingAdmissionPolicy and
//! PersistentVolumeClaimResize admission plugins, an audit log) and kube-controller-manager
//! (the Job, ServiceAccount, garbage-collector, namespace and admission-policy-status
//! controllers), all upstream binaries that `scripts/kube-up.sh` builds from the Go module proxy.
//! deploy/ is applied to it as the cluster's admin, and the service talks to it as its own
//! ServiceAccount (a real token from the TokenRequest API), so what the service may do is what
//! deploy/ grants, asked of the server.
//!
//! The one stand-in left sits at the kubelet's place: [`node`] registers a Node, binds the
//! Jobs' pods to it, runs each pod's first container command on this host and reports back
//! through the API, as a kubelet would (see there for what it cannot do).
//!
//! Each test asks for its own namespace ([`Cluster::namespace`]), labelled to enforce the
//! `restricted` Pod Security Standard and given deploy/'s per-namespace Role, RoleBinding and
//! manual-backup ServiceAccount (deploy/components/targets/per-namespace).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{json, Value};

mod apply;
pub mod crds;
pub mod fixtures;
pub mod node;
mod pki;
pub mod proxy;
mod test_ns;
mod tls;

pub use apply::render;
pub use test_ns::TestNamespace;

/// The namespace of the service's own ServiceAccount in deploy/.
pub const SERVICE_NS: &str = "link-services";
/// The service's ServiceAccount in deploy/.
pub const SERVICE_ACCOUNT: &str = "backup-remediator";

/// The control plane of this test process (started on first use, stopped when the process
/// ends: its daemons die with the thread that started them).
pub struct Cluster {
    /// https://127.0.0.1:PORT
    pub url: String,
    /// Where the kubeconfigs, certificates and logs are.
    pub dir: PathBuf,
    /// A kubeconfig for the service's ServiceAccount (a TokenRequest token), namespace
    /// `link-services`.
    pub service_kubeconfig: PathBuf,
    /// The CA that signed the API server's (and the node agent's) serving certificate, PEM.
    ca_pem: String,
    /// The service's ServiceAccount token.
    service_token: String,
}

static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();

/// The control plane of this test process, started by the first caller (about 10 s).
/// Panics with what to run when the binaries are missing or the cluster does not come up.
pub async fn shared() -> &'static Cluster {
    let got = tokio::task::spawn_blocking(|| CLUSTER.get_or_init(start_blocking))
        .await
        .expect("starting the test cluster");
    match got {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    }
}

/// Binaries the cluster needs, from the environment `scripts/test.sh` sets.
fn binary(var: &str) -> Result<PathBuf, String> {
    let path = std::env::var_os(var).map(PathBuf::from).ok_or_else(|| {
        format!(
            "{var} is not set: run the tests with scripts/test.sh (it builds kube-apiserver and \
             kube-controller-manager from the Go module proxy and installs etcd), or `source \
             scripts/kube-up.sh && kube_build_binaries && kube_find_etcd ~/.cache/backup-remediator/venv`"
        )
    })?;
    if !path.is_file() {
        return Err(format!(
            "{var}={} does not exist: run scripts/kube-up.sh",
            path.display()
        ));
    }
    Ok(path)
}

/// Starts everything on a thread that lives as long as the process: the daemons are started
/// with PR_SET_PDEATHSIG, so they are killed when that thread (the process) ends; the node agent
/// runs on that thread's runtime.
fn start_blocking() -> Result<Cluster, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("test-cluster".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a runtime for the test cluster");
            rt.block_on(async move {
                let mut daemons = Vec::new();
                let started = start(&mut daemons).await;
                let node = match &started {
                    Ok(c) => Some(node::NodeAgent::start(c).await),
                    Err(_) => None,
                };
                let failed = match (started, node) {
                    (Ok(c), Some(Ok(()))) => {
                        let _ = tx.send(Ok(c));
                        false
                    }
                    (Ok(_), Some(Err(e))) | (Err(e), _) => {
                        let _ = tx.send(Err(e));
                        true
                    }
                    (Ok(_), None) => unreachable!(),
                };
                if failed {
                    for d in &mut daemons {
                        let _ = d.kill();
                        let _ = d.wait();
                    }
                    return;
                }
                // The daemons and the node agent live as long as the process.
                std::future::pending::<()>().await;
            });
        })
        .map_err(|e| format!("starting the test-cluster thread: {e}"))?;
    rx.recv()
        .map_err(|_| "the test-cluster thread ended before the cluster was up".to_string())?
}

/// Starts `bin args…` with its output in `dir/NAME.log`, killed when the starting thread ends.
fn daemon(bin: &Path, args: &[String], dir: &Path, name: &str) -> Result<Child, String> {
    use std::os::unix::process::CommandExt;
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).map_err(|e| e.to_string())?;
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log);
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
        .map_err(|e| format!("starting {}: {e}", bin.display()))
}

/// The last lines of a daemon's log, for a failure message.
fn log_tail(dir: &Path, name: &str) -> String {
    let text = std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

fn free_port() -> u16 {
    crate::support::procs::free_port()
}

async fn start(daemons: &mut Vec<Child>) -> Result<Cluster, String> {
    let etcd = binary("ETCD")?;
    let apiserver = binary("KUBE_APISERVER")?;
    let kcm = binary("KUBE_CONTROLLER_MANAGER")?;

    // One directory per process, removed by the next run when its process is gone.
    let root = std::env::temp_dir().join("backup-remediator-kube");
    std::fs::create_dir_all(&root).map_err(|e| e.to_string())?;
    sweep_stale(&root);
    let dir = root.join(std::process::id().to_string());
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;

    let pki = pki::Pki::create(&dir)?;
    let admin_token = uuid::Uuid::new_v4().simple().to_string();
    std::fs::write(
        dir.join("tokens.csv"),
        format!("{admin_token},cluster-admin,cluster-admin-uid,\"system:masters\"\n"),
    )
    .map_err(|e| e.to_string())?;
    // Every request of a ServiceAccount, at Metadata level: who did what to which object.
    std::fs::write(
        dir.join("audit-policy.yaml"),
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n  \
         - level: Metadata\n    userGroups: [\"system:serviceaccounts\"]\n  - level: None\n",
    )
    .map_err(|e| e.to_string())?;

    let (client_port, peer_port) = (free_port(), free_port());
    daemons.push(daemon(
        &etcd,
        &[
            "--name=test".into(),
            "--data-dir=etcd-data".into(),
            format!("--listen-client-urls=http://127.0.0.1:{client_port}"),
            format!("--advertise-client-urls=http://127.0.0.1:{client_port}"),
            format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"),
            format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}"),
            format!("--initial-cluster=test=http://127.0.0.1:{peer_port}"),
            "--unsafe-no-fsync=true".into(),
            "--log-level=warn".into(),
        ],
        &dir,
        "etcd",
    )?);

    let port = free_port();
    let url = format!("https://127.0.0.1:{port}");
    daemons.push(daemon(
        &apiserver,
        &[
            format!("--etcd-servers=http://127.0.0.1:{client_port}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--secure-port={port}"),
            format!("--tls-cert-file={}", pki.server_crt.display()),
            format!("--tls-private-key-file={}", pki.server_key.display()),
            "--token-auth-file=tokens.csv".into(),
            "--authorization-mode=RBAC".into(),
            // As kubeadm and managed clusters run it: privileged pods are for admission to refuse.
            "--allow-privileged=true".into(),
            "--enable-admission-plugins=PodSecurity,ValidatingAdmissionPolicy,PersistentVolumeClaimResize"
                .into(),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            format!("--service-account-key-file={}", pki.sa_pub.display()),
            format!("--service-account-signing-key-file={}", pki.sa_key.display()),
            "--service-cluster-ip-range=10.96.0.0/16".into(),
            "--audit-policy-file=audit-policy.yaml".into(),
            "--audit-log-path=audit.log".into(),
            "--audit-log-mode=blocking".into(),
            // The node agent serves the kubelet endpoint with a certificate of the same CA.
            format!("--kubelet-certificate-authority={}", pki.ca_crt.display()),
            "--kubelet-preferred-address-types=InternalIP".into(),
            "--enable-priority-and-fairness=false".into(),
            "--profiling=false".into(),
            "--endpoint-reconciler-type=none".into(),
            "--v=1".into(),
        ],
        &dir,
        "kube-apiserver",
    )?);

    let http = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).map_err(|e| e.to_string())?,
        )
        .build()
        .map_err(|e| e.to_string())?;
    wait_ready(
        &http,
        &format!("{url}/readyz"),
        &admin_token,
        daemons,
        &dir,
        "kube-apiserver",
    )
    .await?;

    let cluster = Cluster {
        url: url.clone(),
        dir: dir.clone(),
        service_kubeconfig: dir.join("service.kubeconfig"),
        ca_pem: pki.ca_pem.clone(),
        service_token: String::new(),
    };
    std::fs::write(
        dir.join("admin.kubeconfig"),
        cluster.kubeconfig("cluster-admin", &admin_token, "default"),
    )
    .map_err(|e| e.to_string())?;

    daemons.push(daemon(
        &kcm,
        &[
            "--kubeconfig=admin.kubeconfig".into(),
            "--controllers=job-controller,serviceaccount-controller,serviceaccount-token-controller,\
              garbage-collector-controller,namespace-controller,\
              validatingadmissionpolicy-status-controller"
                .into(),
            format!("--service-account-private-key-file={}", pki.sa_key.display()),
            format!("--root-ca-file={}", pki.ca_crt.display()),
            "--leader-elect=false".into(),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={}", free_port()),
            "--v=1".into(),
        ],
        &dir,
        "kube-controller-manager",
    )?);

    let admin = cluster.admin().await;
    apply::deploy(&admin).await?;
    let token = service_account_token(&admin).await?;
    let mut cluster = cluster;
    cluster.service_token = token.clone();
    std::fs::write(
        &cluster.service_kubeconfig,
        cluster.kubeconfig(
            &format!("system:serviceaccount:{SERVICE_NS}:{SERVICE_ACCOUNT}"),
            &token,
            SERVICE_NS,
        ),
    )
    .map_err(|e| e.to_string())?;
    Ok(cluster)
}

/// Removes the directories of earlier test processes that are gone.
fn sweep_stale(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for e in entries.flatten() {
        let pid: Option<u32> = e.file_name().to_str().and_then(|s| s.parse().ok());
        if let Some(pid) = pid {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

async fn wait_ready(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    daemons: &mut [Child],
    dir: &Path,
    name: &str,
) -> Result<(), String> {
    for _ in 0..600 {
        if daemons
            .iter_mut()
            .any(|d| d.try_wait().ok().flatten().is_some())
        {
            break;
        }
        let ok = http
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .map(|r| r.status().is_success())
            .unwrap_or(false);
        if ok {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!(
        "{name} did not become ready at {url} within 60 s; etcd log:\n{}\n{name} log:\n{}",
        log_tail(dir, "etcd"),
        log_tail(dir, name)
    ))
}

/// A token for the service's ServiceAccount, from the TokenRequest API (as a projected token
/// volume gets one), valid for a day.
async fn service_account_token(admin: &kube::Client) -> Result<String, String> {
    let body = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                      "spec": {"expirationSeconds": 86400}});
    let req = http::Request::post(format!(
        "/api/v1/namespaces/{SERVICE_NS}/serviceaccounts/{SERVICE_ACCOUNT}/token"
    ))
    .header("content-type", "application/json")
    .body(serde_json::to_vec(&body).unwrap())
    .unwrap();
    let answer: Value = admin
        .request(req)
        .await
        .map_err(|e| format!("requesting a token for the service's ServiceAccount: {e}"))?;
    answer["status"]["token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("no token in the TokenRequest answer: {answer}"))
}

impl Cluster {
    /// A kubeconfig for `user` with bearer `token`, trusting the cluster's CA.
    fn kubeconfig(&self, user: &str, token: &str, namespace: &str) -> String {
        use base64::Engine;
        let ca = base64::engine::general_purpose::STANDARD.encode(&self.ca_pem);
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {}\n    \
             certificate-authority-data: {ca}\nusers:\n- name: \"{user}\"\n  user:\n    token: {token}\n\
             contexts:\n- name: test\n  context:\n    cluster: test\n    user: \"{user}\"\n    \
             namespace: {namespace}\ncurrent-context: test\n",
            self.url
        )
    }

    async fn client_from(&self, path: &Path) -> kube::Client {
        backup_remediator::install_crypto_provider();
        let file = kube::config::Kubeconfig::read_from(path).expect("reading a test kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(file, &Default::default())
            .await
            .expect("a test kubeconfig");
        kube::Client::try_from(config).expect("a kube client")
    }

    /// A client of the cluster's admin (for the test's own set-up and checks), on the caller's
    /// runtime.
    pub async fn admin(&self) -> kube::Client {
        self.client_from(&self.dir.join("admin.kubeconfig")).await
    }

    /// A fresh namespace for one test: see [`TestNamespace`].
    pub async fn namespace(&'static self) -> TestNamespace {
        TestNamespace::create(self).await
    }

    /// The requests the service's ServiceAccount made in `namespace`, from the API server's
    /// audit log, in order: (verb, resource with subresource, object name, HTTP status). A
    /// long-running request (a watch, a log) is logged when its answer starts and when it ends:
    /// it counts once.
    pub fn service_requests(&self, namespace: &str) -> Vec<(String, String, String, u16)> {
        let text = std::fs::read_to_string(self.dir.join("audit.log")).unwrap_or_default();
        let user = format!("system:serviceaccount:{SERVICE_NS}:{SERVICE_ACCOUNT}");
        let mut seen: std::collections::HashMap<String, usize> = Default::default();
        let mut out: Vec<(String, String, String, u16)> = Vec::new();
        for e in text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        {
            if e["user"]["username"] != user.as_str() || e["objectRef"]["namespace"] != namespace {
                continue;
            }
            let r = &e["objectRef"];
            let mut resource = r["resource"].as_str().unwrap_or_default().to_owned();
            if let Some(sub) = r["subresource"].as_str() {
                resource = format!("{resource}/{sub}");
            }
            let code = e["responseStatus"]["code"].as_u64().unwrap_or(0) as u16;
            let id = e["auditID"].as_str().unwrap_or_default().to_owned();
            match seen.get(&id) {
                Some(&i) => out[i].3 = code,
                None => {
                    seen.insert(id, out.len());
                    out.push((
                        e["verb"].as_str().unwrap_or_default().to_owned(),
                        resource,
                        r["name"].as_str().unwrap_or_default().to_owned(),
                        code,
                    ));
                }
            }
        }
        out
    }
}
