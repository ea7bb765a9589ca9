//! The Dockerfile agrees with the manifests: user id, Rust version, what it copies, the tag.

use super::*;

#[test]
fn the_image_runs_as_the_user_the_deployment_expects() {
    let dockerfile = read("Dockerfile");
    let last_stage = dockerfile.rsplit("\nFROM ").next().expect("a FROM");
    assert!(
        !last_stage.starts_with("rust"),
        "the runtime image is the toolchain image"
    );
    let user = last_stage
        .lines()
        .filter_map(|l| l.strip_prefix("USER "))
        .next_back()
        .expect("a USER in the final stage");
    let (uid, gid) = user.trim().split_once(':').expect("USER uid:gid");
    let pod = pod_spec(&deployment())
        .security_context
        .expect("pod securityContext");
    assert_eq!(
        uid.parse::<i64>().ok(),
        pod.run_as_user,
        "Dockerfile USER vs runAsUser"
    );
    assert_eq!(
        gid.parse::<i64>().ok(),
        pod.run_as_group,
        "Dockerfile USER vs runAsGroup"
    );

    // The toolchain is new enough for the crate's rust-version.
    let version = |s: &str| -> Vec<u32> { s.split('.').filter_map(|n| n.parse().ok()).collect() };
    let toolchain = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("FROM rust:"))
        .and_then(|l| l.split('-').next())
        .expect("FROM rust:VERSION-…");
    assert!(
        version(toolchain) >= version(env!("CARGO_PKG_RUST_VERSION")),
        "Rust {toolchain} is too old"
    );

    // What the build copies exists and is in the allow-listed build context.
    let allowed = read(".dockerignore");
    for line in dockerfile
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        let words: Vec<_> = line.split_whitespace().collect();
        for src in &words[1..words.len() - 1] {
            assert!(
                root().join(src).exists(),
                "Dockerfile copies {src}, which does not exist"
            );
            let src = src.trim_end_matches('/');
            assert!(
                allowed
                    .lines()
                    .any(|l| l.trim_end_matches('/') == format!("!{src}")),
                ".dockerignore leaves out {src}"
            );
        }
    }

    // The tag kustomize deploys is this version.
    let images = yaml("deploy/kustomization.yaml")["images"].clone();
    assert_eq!(
        images[0]["name"],
        container(&deployment()).image.unwrap_or_default().as_str()
    );
    assert_eq!(images[0]["newTag"], env!("CARGO_PKG_VERSION"));
}
