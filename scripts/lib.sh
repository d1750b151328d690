# shellcheck shell=bash
# Shared by scripts/test.sh and scripts/stack.sh: fetch, build and run the real services this project
# talks to (PostgreSQL, Elasticsearch, Ory Kratos) on 127.0.0.1, without Docker.
#
# Everything downloaded or built lands in one cache folder outside the clone, so a fresh clone (and CI)
# reuses it:
#   KRATOS_HOOKS_CACHE   default ${XDG_CACHE_HOME:-$HOME/.cache}/kratos-hooks
# Versions:
#   KRATOS_VERSION       default v1.3.1
#   ES_VERSION           default 8.19.9 (Maven Central: org.elasticsearch.distribution.integ-test-zip)

set -euo pipefail

KH_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KRATOS_HOOKS_CACHE="${KRATOS_HOOKS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kratos-hooks}"
KRATOS_VERSION="${KRATOS_VERSION:-v1.3.1}"
ES_VERSION="${ES_VERSION:-8.19.9}"
# Postgres and Elasticsearch both refuse to run as root; when we are root they run as this user.
KH_SERVICE_USER="${KH_SERVICE_USER:-kratos-hooks}"

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# as_service_user CMD...: run CMD as the unprivileged service user when we are root, else as ourselves.
as_service_user() {
  if [ "$(id -u)" -eq 0 ]; then
    # From /: the service user may not be allowed into the caller's directory (a private clone), and
    # Postgres's tools complain when they cannot change back to it.
    (cd / && runuser -u "$KH_SERVICE_USER" -- "$@")
  else
    "$@"
  fi
}

ensure_service_user() {
  [ "$(id -u)" -eq 0 ] || return 0
  if ! id "$KH_SERVICE_USER" >/dev/null 2>&1; then
    log "creating system user $KH_SERVICE_USER to run Postgres and Elasticsearch (both refuse root)"
    useradd --system --no-create-home --shell /usr/sbin/nologin "$KH_SERVICE_USER"
  fi
  # The service user must reach the Elasticsearch distribution inside the cache. Grant traverse (x) only,
  # not listing, on each parent folder.
  local d="$KRATOS_HOOKS_CACHE"
  mkdir -p "$d"
  while [ "$d" != "/" ]; do
    chmod o+x "$d" 2>/dev/null || true
    d="$(dirname "$d")"
  done
}

apt_install() {
  [ "$(id -u)" -eq 0 ] || die "$* is missing and installing it needs root: apt-get install $*"
  log "installing $* from Debian's packages"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

wait_for() { # wait_for SECONDS DESCRIPTION CMD...
  local secs=$1 what=$2; shift 2
  local deadline=$(( $(date +%s) + secs ))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || return 1
    sleep 0.2
  done
  log "$what is up"
}

# --- PostgreSQL --------------------------------------------------------------------------------------

pg_bindir() {
  local d
  if command -v pg_config >/dev/null 2>&1; then
    d="$(pg_config --bindir)"
    [ -x "$d/initdb" ] && [ -x "$d/postgres" ] && { echo "$d"; return; }
  fi
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    [ -x "$d/initdb" ] && [ -x "$d/postgres" ] && { echo "$d"; return; }
  done
  return 1
}

ensure_postgres() {
  pg_bindir >/dev/null && return 0
  # Debian's package would create and start a cluster on 5432; we run our own, so ask it not to.
  mkdir -p /etc/postgresql-common
  grep -qs '^create_main_cluster' /etc/postgresql-common/createcluster.conf ||
    echo 'create_main_cluster = false' >>/etc/postgresql-common/createcluster.conf
  apt_install postgresql
  pg_bindir >/dev/null || die "postgresql installed but initdb/postgres not found"
}

# start_postgres DIR PORT [fsync on|off]: a fresh cluster in DIR, on 127.0.0.1:PORT only, password auth.
# Prints the superuser URL.
start_postgres() {
  local dir=$1 port=$2 fsync=${3:-on} bin pw
  bin="$(pg_bindir)"
  mkdir -p "$dir"
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    pw="$(head -c 18 /dev/urandom | base64 | tr -d '/+=')"
    printf '%s\n' "$pw" >"$dir/pwfile"
    chmod 600 "$dir/pwfile"
    [ "$(id -u)" -eq 0 ] && chown -R "$KH_SERVICE_USER" "$dir"
    as_service_user "$bin/initdb" -D "$dir/data" -U postgres --pwfile="$dir/pwfile" \
      --auth-local=scram-sha-256 --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 ||
      { cat "$dir/initdb.log" >&2; die "initdb failed"; }
  fi
  pw="$(cat "$dir/pwfile")"
  as_service_user "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 start -o \
    "-c listen_addresses=127.0.0.1 -p $port -k $dir -c max_connections=400 -c shared_buffers=256MB -c fsync=$fsync -c log_min_messages=warning" \
    >/dev/null || { tail -20 "$dir/postgres.log" >&2; die "postgres did not start"; }
  log "postgres is up on 127.0.0.1:$port (data in $dir/data)"
  echo "postgres://postgres:${pw}@127.0.0.1:${port}/postgres?sslmode=disable"
}

stop_postgres() {
  local dir=$1 bin
  bin="$(pg_bindir)" || return 0
  [ -f "$dir/data/postmaster.pid" ] || return 0
  as_service_user "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
}

# --- Elasticsearch ------------------------------------------------------------------------------------

es_java_home() {
  local j v
  if [ -n "${ES_JAVA_HOME:-}" ]; then echo "$ES_JAVA_HOME"; return; fi
  for j in /usr/lib/jvm/*; do
    [ -x "$j/bin/java" ] || continue
    v="$("$j/bin/java" -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1)"
    [ -n "$v" ] && [ "$v" -ge 17 ] && { echo "$j"; return; }
  done
  return 1
}

ensure_elasticsearch() {
  local dir="$KRATOS_HOOKS_CACHE/elasticsearch" zip
  ES_HOME="$dir/elasticsearch-$ES_VERSION"
  if [ ! -x "$ES_HOME/bin/elasticsearch" ]; then
    es_java_home >/dev/null || apt_install openjdk-17-jre-headless
    command -v mvn >/dev/null || apt_install maven
    mkdir -p "$dir"
    zip="$dir/elasticsearch-$ES_VERSION.zip"
    if [ ! -f "$zip" ]; then
      log "fetching Elasticsearch $ES_VERSION (integ-test-zip) from Maven Central"
      mvn -q -B -Dstyle.color=never dependency:copy \
        -Dartifact="org.elasticsearch.distribution.integ-test-zip:elasticsearch:$ES_VERSION:zip" \
        -DoutputDirectory="$dir" >&2
    fi
    rm -rf "$ES_HOME.tmp" && mkdir -p "$ES_HOME.tmp"
    (cd "$ES_HOME.tmp" && unzip -q "$zip")
    mv "$ES_HOME.tmp/elasticsearch-$ES_VERSION" "$ES_HOME" && rm -rf "$ES_HOME.tmp"
  fi
  es_java_home >/dev/null || apt_install openjdk-17-jre-headless
  chmod -R o+rX "$dir"
}

# start_elasticsearch DIR PORT: single node, security off, 512m heap, 127.0.0.1 only. Prints the URL.
start_elasticsearch() {
  local dir=$1 port=$2 tport
  tport="$(free_port)"
  mkdir -p "$dir/data" "$dir/logs"
  rm -rf "$dir/config" && cp -r "$ES_HOME/config" "$dir/config"
  cat >"$dir/config/elasticsearch.yml" <<EOF
cluster.name: kratos-hooks
node.name: kratos-hooks-1
discovery.type: single-node
network.host: 127.0.0.1
http.port: $port
transport.port: $tport
path.data: $dir/data
path.logs: $dir/logs
xpack.security.enabled: false
action.destructive_requires_name: false
# A nearly full disk must not turn indices read-only halfway through a test run.
cluster.routing.allocation.disk.threshold_enabled: false
EOF
  [ "$(id -u)" -eq 0 ] && chown -R "$KH_SERVICE_USER" "$dir"
  # The test distribution has no root "GET /" endpoint: readiness is _cluster/health.
  as_service_user env ES_PATH_CONF="$dir/config" ES_JAVA_HOME="$(es_java_home)" \
    ES_JAVA_OPTS="-Xms512m -Xmx512m" "$ES_HOME/bin/elasticsearch" -d -p "$dir/es.pid" \
    >"$dir/stdout.log" 2>&1 || { tail -30 "$dir/stdout.log" >&2; die "elasticsearch did not start"; }
  wait_for 120 "elasticsearch on 127.0.0.1:$port" \
    curl -sf "http://127.0.0.1:$port/_cluster/health?wait_for_status=yellow&timeout=1s" ||
    { tail -30 "$dir/logs/kratos-hooks.log" >&2 || true; die "elasticsearch did not become healthy"; }
  echo "http://127.0.0.1:$port"
}

stop_elasticsearch() {
  local dir=$1 pid
  [ -f "$dir/es.pid" ] || return 0
  pid="$(cat "$dir/es.pid")"
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.2; done
  kill -9 "$pid" 2>/dev/null || true
}

# --- Ory Kratos -----------------------------------------------------------------------------------------

# ensure_kratos: builds Kratos from its Go module once (about two minutes) and caches the binary.
# `go install` refuses the module because of its replace directives, so build inside a copy of it.
ensure_kratos() {
  KRATOS_BIN="$KRATOS_HOOKS_CACHE/kratos-$KRATOS_VERSION"
  [ -x "$KRATOS_BIN" ] && return 0
  local src
  log "building Ory Kratos $KRATOS_VERSION from its Go module (about 2 minutes, once)"
  src="$(go mod download -json "github.com/ory/kratos@$KRATOS_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')"
  [ -d "$src" ] || die "go mod download github.com/ory/kratos@$KRATOS_VERSION failed"
  rm -rf "$KRATOS_HOOKS_CACHE/kratos-src" && mkdir -p "$KRATOS_HOOKS_CACHE"
  cp -r "$src" "$KRATOS_HOOKS_CACHE/kratos-src" && chmod -R u+w "$KRATOS_HOOKS_CACHE/kratos-src"
  (cd "$KRATOS_HOOKS_CACHE/kratos-src" && GOFLAGS=-mod=mod go build -tags sqlite,json1 -o "$KRATOS_BIN.tmp" .)
  mv "$KRATOS_BIN.tmp" "$KRATOS_BIN"
  rm -rf "$KRATOS_HOOKS_CACHE/kratos-src"
}

# --- docker-compose (only to validate docker-compose.yml; no Docker engine is needed for that) ----------

ensure_docker_compose() {
  command -v docker-compose >/dev/null 2>&1 && return 0
  if [ "$(id -u)" -eq 0 ]; then
    apt_install docker-compose
  else
    log "docker-compose is missing; the compose validation test will fail (apt-get install docker-compose)"
  fi
}
