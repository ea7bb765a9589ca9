//! Clients of the outside world, without policy: AWS (S3, IAM), Kubernetes (and backup Jobs),
//! Prometheus, pgBackRest (its `info` and `check` commands), and the openssl-compatible encryption
//! format.

pub mod aws;
pub mod crypto;
pub mod jobs;
pub mod kube;
pub mod pgbackrest;
pub mod prometheus;
pub mod s3;
