//! Object builders for the stand-in Kubernetes API server, in the shape the API server returns them.

use base64::Engine;
use serde_json::{json, Value};

pub const NS: &str = "link-services";

pub fn secret(name: &str, data: &[(&str, &str)]) -> Value {
    let data: serde_json::Map<String, Value> = data
        .iter()
        .map(|(k, v)| {
            (
                (*k).to_owned(),
                json!(base64::engine::general_purpose::STANDARD.encode(v)),
            )
        })
        .collect();
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": NS}, "type": "Opaque", "data": data})
}

/// A backup Job created at `created` (RFC 3339): `state` is succeeded, failed or active.
pub fn job(name: &str, created: &str, state: &str) -> Value {
    let status = match state {
        "succeeded" => json!({"succeeded": 1, "completionTime": created,
            "conditions": [{"type": "Complete", "status": "True"}]}),
        "failed" => json!({"failed": 6, "conditions": [{"type": "Failed", "status": "True",
            "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}]}),
        _ => json!({"active": 1}),
    };
    json!({"apiVersion": "batch/v1", "kind": "Job",
           "metadata": {"name": name, "namespace": NS, "creationTimestamp": created, "labels": {"app": "postgres-backup"}},
           "spec": {"template": {"spec": {"restartPolicy": "OnFailure", "containers": [{"name": "backup", "image": "postgres:16-alpine"}]}}},
           "status": status})
}

/// A pod of a Job; `fate`: ok, error (exit 1), oomkilled, evicted-ephemeral, imagepull.
pub fn job_pod(name: &str, job: &str, created: &str, fate: &str) -> Value {
    let status = match fate {
        "evicted-ephemeral" => json!({"phase": "Failed", "reason": "Evicted",
            "message": "Pod ephemeral local storage usage exceeds the total limit of containers 1Gi."}),
        "oomkilled" => {
            json!({"phase": "Failed", "containerStatuses": [{"name": "backup", "ready": false, "restartCount": 0,
            "image": "postgres:16-alpine", "imageID": "", "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]})
        }
        "imagepull" => {
            json!({"phase": "Pending", "containerStatuses": [{"name": "backup", "ready": false, "restartCount": 0,
            "image": "postgres:16-alpine", "imageID": "", "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}}}]})
        }
        "error" => {
            json!({"phase": "Failed", "containerStatuses": [{"name": "backup", "ready": false, "restartCount": 0,
            "image": "postgres:16-alpine", "imageID": "", "state": {"terminated": {"exitCode": 1, "reason": "Error"}}}]})
        }
        _ => json!({"phase": "Succeeded"}),
    };
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": NS, "creationTimestamp": created, "labels": {"job-name": job}},
           "spec": {"containers": [{"name": "backup", "image": "postgres:16-alpine"}]}, "status": status})
}

pub fn statefulset(name: &str, ready: i32) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": name, "namespace": NS},
           "spec": {"replicas": 1, "serviceName": name, "selector": {"matchLabels": {"app": name}},
                    "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "postgres", "image": "postgres:16"}]}}},
           "status": {"replicas": 1, "readyReplicas": ready}})
}

pub fn primary_pod(name: &str, app: &str, ready: bool) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS, "labels": {"app": app}},
           "spec": {"containers": [{"name": "postgres", "image": "postgres:16"}]},
           "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}})
}

pub fn endpoints(name: &str, addresses: &[&str]) -> Value {
    let subsets = if addresses.is_empty() {
        json!([])
    } else {
        json!([{"addresses": addresses.iter().map(|a| json!({"ip": a})).collect::<Vec<_>>(), "ports": [{"port": 5432}]}])
    };
    json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": name, "namespace": NS}, "subsets": subsets})
}

pub fn pvc(name: &str, class: &str, size: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name, "namespace": NS},
           "spec": {"storageClassName": class, "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}},
           "status": {"phase": "Bound", "capacity": {"storage": size}}})
}

/// The backup CronJob, shaped like the runbook's: its Job template carries labels,
/// an annotation and a pod spec a created Job must copy exactly.
pub fn cronjob(name: &str) -> Value {
    cronjob_with(name, "registry.example/postgres-backup:1.4", false)
}

/// [`cronjob`] with the backup container's `image`, suspended or not.
pub fn cronjob_with(name: &str, image: &str, suspend: bool) -> Value {
    json!({"apiVersion": "batch/v1", "kind": "CronJob",
           "metadata": {"name": name, "namespace": NS, "uid": "3f1c9a52-5d7e-4c11-9d0b-1b2c3d4e5f60"},
           "spec": {"schedule": "0 2 * * *", "concurrencyPolicy": "Forbid", "suspend": suspend,
                    "jobTemplate": {
                        "metadata": {"labels": {"app": "postgres-backup"}, "annotations": {"team": "platform"}},
                        "spec": {"backoffLimit": 2, "activeDeadlineSeconds": 3600,
                                 "template": {"metadata": {"labels": {"app": "postgres-backup"}},
                                              "spec": {"restartPolicy": "OnFailure", "serviceAccountName": "postgres-backup",
                                                       "containers": [{"name": "backup", "image": image,
                                                                       "args": ["--all-databases"],
                                                                       "envFrom": [{"secretRef": {"name": "postgres-backup-secret"}}]}]}}}}}})
}

pub fn storage_class(name: &str, expandable: bool) -> Value {
    json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": name},
           "provisioner": "ebs.csi.aws.com", "allowVolumeExpansion": expandable})
}
