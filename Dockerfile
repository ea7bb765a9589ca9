# syntax=docker/dockerfile:1
#
# backup-remediator container images.
#   docker build -t backup-remediator:0.1.0 .                      # the service (last stage)
#   docker build --target backup-tools -t backup-remediator-backup-tools:0.1.0 .
#   docker run --rm backup-remediator:0.1.0 --version
#
# Three stages: the Rust toolchain builds a release binary (no debug info: Cargo.toml's
# [profile.release]); a slim Debian runs it as an unprivileged user; `backup-tools` is the image
# of the manual backup Job (pg_dump, openssl, aws CLI), also unprivileged. The service needs no
# writable directory when DATABASE_URL points to PostgreSQL, so it runs with a read-only root
# filesystem (deploy/deployment.yaml mounts only a small /tmp); so does the backup Job.
#
# Base images are pinned to exact versions (the three FROM lines), not floating tags. Pin them by
# digest as well where you build (a tag can be moved to other content, a digest cannot): look
# each digest up, e.g.
#   docker buildx imagetools inspect debian:12.11-slim --format '{{json .Manifest.Digest}}'
#   (or `crane digest debian:12.11-slim`)
# and append it to the FROM line: `FROM debian:12.11-slim@sha256:<digest> AS runtime`. The
# digests are not written here because the development machine cannot reach a registry, and a
# digest must be looked up, never made up. To update: bump the version, look its digest up
# again, rebuild and run the tests (Renovate's and Dependabot's docker managers do the bump and
# the digest together). tests/it/deploy/ checks the Rust version against Cargo.toml.

# PostgreSQL client major version in both runtime images. pg_dump must be at least the primary's
# major version (the runbook's is 16), and pg_restore reads archives of its own major version
# and older, never newer: so one version for the dumps (backup-tools) and the restore tests.
ARG PG_MAJOR=17

FROM rust:1.95.0-bookworm AS build
WORKDIR /src
# Only what the binary is built from (see .dockerignore).
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY migrations migrations
COPY config config
COPY benches benches
# The registry and target caches survive between builds (BuildKit); the binary is copied out of
# the cached target directory because cache mounts are not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin backup-remediator \
    && install -D -m 0755 target/release/backup-remediator /out/backup-remediator

# The manual backup Job's image (config manual_backup.image): the runbook's tools installed at
# build time, because the Job runs as uid 10001 on a read-only root filesystem and cannot
# `apk add` at run time as the runbook's script did. HOME is /tmp, the Job's emptyDir.
FROM alpine:3.22.1 AS backup-tools
ARG PG_MAJOR
# Alpine keeps one build of each package per release branch, so the pinned base image pins
# these too (a version pin here would break on every security update of the branch).
# hadolint ignore=DL3018
RUN apk add --no-cache "postgresql${PG_MAJOR}-client" openssl aws-cli \
    && addgroup -S -g 10001 backup \
    && adduser -S -D -H -u 10001 -G backup -h /tmp -s /sbin/nologin backup \
    && pg_dump --version && openssl version && aws --version
ENV HOME=/tmp
USER 10001:10001
CMD ["pg_dump", "--version"]

# Slim Debian rather than distroless: restore tests run the real pg_restore, so the PostgreSQL
# client is here, from the PostgreSQL project's apt repository (apt.postgresql.org), version
# PG_MAJOR: Debian bookworm's own client is 15, older than the runbook's postgres:16 backups.
FROM debian:12.11-slim AS runtime
ARG PG_MAJOR
# apt.postgresql.org keeps only the newest minor release of each major, so pinning an exact
# package version would break the build at its next security release; the major is pinned.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates postgresql-common \
    && /usr/share/postgresql-common/pgdg/apt.postgresql.org.sh -y \
    && apt-get install -y --no-install-recommends "postgresql-client-${PG_MAJOR}" \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 backup-remediator \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin backup-remediator
ENV PATH="/usr/lib/postgresql/${PG_MAJOR}/bin:${PATH}"
COPY --from=build /out/backup-remediator /usr/local/bin/backup-remediator
# Fails the build if the binary cannot start here (a missing shared library, say).
RUN ["/usr/local/bin/backup-remediator", "--version"]
# Numeric, so Kubernetes can verify runAsNonRoot (deploy/deployment.yaml runs as the same ids).
USER 10001:10001
EXPOSE 9095
# Kubernetes ignores an image's HEALTHCHECK; deploy/deployment.yaml probes /healthz and /readyz.
HEALTHCHECK NONE
ENTRYPOINT ["/usr/local/bin/backup-remediator"]
CMD ["serve"]
