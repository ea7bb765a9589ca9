//! CustomResourceDefinitions the test cluster serves beyond Kubernetes' own, installed once per
//! test process by the first test that needs them (server-side apply as the admin, then waiting
//! until the API server reports each Established). The YAML is in `crds/` (see its README).

use std::time::Duration;

use serde_json::Value;
use tokio::sync::OnceCell;

use super::Cluster;

static CLOUDNATIVEPG: OnceCell<()> = OnceCell::const_new();

/// CloudNativePG's `Cluster`, `Backup` and `ScheduledBackup` (postgresql.cnpg.io/v1), served.
pub async fn cloudnativepg(cluster: &Cluster) {
    CLOUDNATIVEPG
        .get_or_init(|| install(cluster, "cloudnativepg.yaml"))
        .await;
}

async fn install(cluster: &Cluster, file: &str) {
    let admin = cluster.admin().await;
    let path = format!(
        "{}/tests/it/support/cluster/crds/{file}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let base = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";
    let mut names = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let crd: Value = serde::Deserialize::deserialize(doc).unwrap();
        let name = crd["metadata"]["name"].as_str().unwrap().to_owned();
        let req = http::Request::patch(format!(
            "{base}/{name}?fieldManager=backup-remediator-tests&force=true"
        ))
        .header("content-type", "application/apply-patch+yaml")
        .body(serde_json::to_vec(&crd).unwrap())
        .unwrap();
        admin
            .request::<Value>(req)
            .await
            .unwrap_or_else(|e| panic!("applying CRD {name}: {e}"));
        names.push(name);
    }
    for name in names {
        let mut established = false;
        for _ in 0..300 {
            let req = http::Request::get(format!("{base}/{name}"))
                .body(Vec::new())
                .unwrap();
            let crd: Value = admin.request(req).await.unwrap();
            established = crd["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Established" && c["status"] == "True");
            if established {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(established, "CRD {name} not Established within 30 s");
    }
}
