//! Objects for the test cluster, shaped as a real installation has them: what the server
//! validates and admits (the `restricted` Pod Security Standard, deploy/'s admission policy).

use serde_json::{json, Value};

/// The backup image of the runbook's CronJob, one of the images deploy/'s admission policy
/// allows (the node agent runs the command on the host; the image is not pulled).
pub const IMAGE: &str = "postgres:16-alpine";

/// A pod spec that passes the `restricted` Pod Security Standard, running `script` with
/// `/bin/sh -c` and the backup Secret's keys as its environment.
pub fn pod_spec(script: &str) -> Value {
    json!({
        "restartPolicy": "Never",
        "serviceAccountName": "backup-remediator-manual-backup",
        "automountServiceAccountToken": false,
        "securityContext": {"runAsNonRoot": true, "runAsUser": 70, "runAsGroup": 70,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{
            "name": "backup",
            "image": IMAGE,
            "command": ["/bin/sh", "-c", script],
            "envFrom": [{"secretRef": {"name": "postgres-backup-secret"}}],
            "env": [{"name": "JOB_NAME",
                     "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['batch.kubernetes.io/job-name']"}}}],
            "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}
        }]
    })
}

/// The backup CronJob `postgres-backup`, its Jobs running `script` (the test cluster runs no
/// CronJob controller: only the service and the test start its Jobs).
pub fn cronjob(script: &str) -> Value {
    cronjob_with(script, IMAGE, false)
}

/// [`cronjob`] with the backup container's `image`, suspended or not.
pub fn cronjob_with(script: &str, image: &str, suspend: bool) -> Value {
    let mut spec = pod_spec(script);
    spec["containers"][0]["image"] = json!(image);
    json!({"apiVersion": "batch/v1", "kind": "CronJob",
           "metadata": {"name": "postgres-backup"},
           "spec": {"schedule": "0 2 * * *", "concurrencyPolicy": "Forbid", "suspend": suspend,
                    "jobTemplate": {
                        "metadata": {"labels": {"app": "postgres-backup"}, "annotations": {"team": "platform"}},
                        "spec": {"backoffLimit": 0, "activeDeadlineSeconds": 3600,
                                 "template": {"metadata": {"labels": {"app": "postgres-backup"}},
                                              "spec": spec}}}}})
}

/// A backup Job (label app=postgres-backup) running `script`, as the CronJob would have
/// created it.
pub fn job(name: &str, script: &str) -> Value {
    json!({"apiVersion": "batch/v1", "kind": "Job",
           "metadata": {"name": name, "labels": {"app": "postgres-backup"}},
           "spec": {"backoffLimit": 0,
                    "template": {"metadata": {"labels": {"app": "postgres-backup"}},
                                 "spec": pod_spec(script)}}})
}

/// The backup Secret with `data` (plain text; the server stores it base64).
pub fn secret(data: &[(&str, &str)]) -> Value {
    let data: serde_json::Map<String, Value> = data
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!(v)))
        .collect();
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "postgres-backup-secret"},
           "type": "Opaque", "stringData": data})
}

/// A StorageClass (cluster-wide: give each test its own name).
pub fn storage_class(name: &str, expandable: bool) -> Value {
    json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": name},
           "provisioner": "ebs.csi.aws.com", "allowVolumeExpansion": expandable})
}

/// The primary's data volume claim of `size` in `class`, bound (its status written as the
/// persistent-volume controller would) or not.
pub fn pvc(name: &str, class: &str, size: &str, bound: bool) -> Value {
    let mut claim = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name},
           "spec": {"storageClassName": class, "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": size}}}});
    if bound {
        claim["spec"]["volumeName"] = json!(format!("pv-{name}"));
        claim["status"] = json!({"phase": "Bound", "accessModes": ["ReadWriteOnce"],
                                 "capacity": {"storage": size}});
    }
    claim
}

/// The primary's StatefulSet with `ready` replicas ready (its status written as the StatefulSet
/// controller would; none runs in the test cluster).
pub fn statefulset(ready: i32) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "postgres-primary"},
           "spec": {"replicas": 1, "serviceName": "postgres-primary",
                    "selector": {"matchLabels": {"app": "postgres-primary"}},
                    "template": {"metadata": {"labels": {"app": "postgres-primary"}},
                                 "spec": primary_pod_spec()}},
           "status": {"replicas": 1, "readyReplicas": ready, "availableReplicas": ready}})
}

fn primary_pod_spec() -> Value {
    json!({"securityContext": {"runAsNonRoot": true, "runAsUser": 999,
                               "seccompProfile": {"type": "RuntimeDefault"}},
           "containers": [{"name": "postgres", "image": "postgres:16",
                           "securityContext": {"allowPrivilegeEscalation": false,
                                               "capabilities": {"drop": ["ALL"]}}}]})
}

/// The primary's pod, on a database node (not the node agent's: it is never run here), its
/// status as that node's kubelet would report it.
pub fn primary_pod(ready: bool) -> Value {
    let mut spec = primary_pod_spec();
    spec["nodeName"] = json!("db-node-1");
    let ready = if ready { "True" } else { "False" };
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "postgres-primary-0", "labels": {"app": "postgres-primary"}},
           "spec": spec,
           "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": ready}]}})
}

/// The primary Service's Endpoints with `addresses` ready.
pub fn endpoints(addresses: &[&str]) -> Value {
    let subsets = if addresses.is_empty() {
        json!([])
    } else {
        json!([{"addresses": addresses.iter().map(|a| json!({"ip": a})).collect::<Vec<_>>(),
                "ports": [{"port": 5432}]}])
    };
    json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "postgres-primary"},
           "subsets": subsets})
}
