# syntax=docker/dockerfile:1
#
# backup-remediator container image.
#   docker build -t backup-remediator:0.1.0 .
#   docker run --rm backup-remediator:0.1.0 --version
#
# Two stages: the Rust toolchain builds a release binary; a slim Debian runs it as an unprivileged
# user. The runtime needs no writable directory when DATABASE_URL points to PostgreSQL, so it
# runs with a read-only root filesystem (deploy/deployment.yaml mounts only a small /tmp).

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
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

# Slim Debian rather than distroless: restore tests run the real pg_restore, so the PostgreSQL client is here.
# pg_restore reads archives from its own major version and older, never newer: the runbook's
# backups are made by postgres:16 images, and Debian bookworm's own client is 15. So the client
# comes from the PostgreSQL project's apt repository (apt.postgresql.org), version PG_MAJOR,
# which must be at least the major version of the pg_dump that makes your backups.
FROM debian:${DEBIAN_RELEASE}-slim AS runtime
ARG PG_MAJOR=17
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
ENTRYPOINT ["/usr/local/bin/backup-remediator"]
CMD ["serve"]
