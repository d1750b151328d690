#!/usr/bin/env bash
# The local stack without Docker: Postgres, Elasticsearch, Kratos and kratos-hooks on 127.0.0.1, from the
# same scripts the tests use and the configuration in kratos/.
#
#   scripts/stack.sh up       start everything (make up)
#   scripts/stack.sh demo     register users through Kratos and show what kratos-hooks made of them (make demo)
#   scripts/stack.sh status   what is running
#   scripts/stack.sh down     stop everything (make down); data stays in the stack folder
#   scripts/stack.sh env      print the environment of the running stack, for `eval`
#
# Ports (override with the variables): KH_PG_PORT 55432, KH_ES_PORT 59200, KH_KRATOS_PUBLIC_PORT 4433,
# KH_KRATOS_ADMIN_PORT 4434, KH_PORT 8080, KH_MAIL_PORT 1025. State lives in $KRATOS_HOOKS_CACHE/stack.
#
# The stack shows the product off: registration is invite-only (KH_REGISTRATION_MODE=open to change that),
# Kratos's courier sends SMS to kratos-hooks's development sink (GET /dev/sms) and e-mail to a small SMTP
# sink whose messages land in $STACK/mail.log.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$KH_ROOT"

STACK="${KH_STACK_DIR:-$KRATOS_HOOKS_CACHE/stack}"
PG_PORT="${KH_PG_PORT:-55432}"
ES_PORT="${KH_ES_PORT:-59200}"
KRATOS_PUBLIC_PORT="${KH_KRATOS_PUBLIC_PORT:-4433}"
KRATOS_ADMIN_PORT="${KH_KRATOS_ADMIN_PORT:-4434}"
HOOKS_PORT="${KH_PORT:-8080}"
MAIL_PORT="${KH_MAIL_PORT:-1025}"
REGISTRATION_MODE="${KH_REGISTRATION_MODE:-invite}"

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

stop_pid() {
  local f=$1 pid
  pid_alive "$f" || { rm -f "$f"; return 0; }
  pid="$(cat "$f")"
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$f"
}

write_env() {
  local pg_url=$1
  local db_url="${pg_url%/postgres\?*}/kratos_hooks?sslmode=disable"
  local kratos_dsn="${pg_url%/postgres\?*}/kratos?sslmode=disable"
  local key
  if [ -f "$STACK/env" ]; then key="$(sed -n 's/^export HOOKS_API_KEY=//p' "$STACK/env")"; fi
  [ -n "${key:-}" ] || key="$(head -c 24 /dev/urandom | base64 | tr -d '/+=')"
  cat >"$STACK/env" <<EOF
export DATABASE_URL=$db_url
export KRATOS_DSN=$kratos_dsn
export KRATOS_ADMIN_URL=http://127.0.0.1:$KRATOS_ADMIN_PORT
export KRATOS_PUBLIC_URL=http://127.0.0.1:$KRATOS_PUBLIC_PORT
export ELASTICSEARCH_URL=http://127.0.0.1:$ES_PORT
export HOOKS_API_KEY=$key
export ADMIN_API_TOKEN=$key-admin
export KRATOS_HOOKS_URL=http://127.0.0.1:$HOOKS_PORT
export LISTEN_ADDR=127.0.0.1:$HOOKS_PORT
export REGISTRATION_MODE=$REGISTRATION_MODE
export DEV_SMS_SINK=true
EOF
  chmod 600 "$STACK/env"
}

cmd_up() {
  mkdir -p "$STACK"
  chmod 755 "$STACK"
  ensure_service_user
  ensure_postgres
  ensure_elasticsearch
  ensure_kratos

  local pg_url
  if [ -f "$STACK/pg/data/postmaster.pid" ]; then
    stop_postgres "$STACK/pg"
  fi
  pg_url="$(start_postgres "$STACK/pg" "$PG_PORT" on)"
  write_env "$pg_url"
  # shellcheck disable=SC1091
  source "$STACK/env"
  for db in kratos_hooks kratos; do
    psql -q "$pg_url" -tc "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1 ||
      psql -q "$pg_url" -c "CREATE DATABASE $db" >/dev/null
  done

  if ! curl -sf "http://127.0.0.1:$ES_PORT/_cluster/health" >/dev/null 2>&1; then
    start_elasticsearch "$STACK/es" "$ES_PORT" >/dev/null
  fi

  log "building kratos-hooks"
  go build -o "$STACK/kratos-hooks" ./cmd/kratos-hooks

  # Kratos: the shipped kratos/kratos.yml, filled by `kratos-hooks kratos-config`; ports and DSN from a
  # second file and the environment.
  "$STACK/kratos-hooks" kratos-config -o "$STACK/kratos.yml"
  cat >"$STACK/kratos.local.yml" <<EOF
serve:
  public: {base_url: "http://127.0.0.1:$KRATOS_PUBLIC_PORT/", host: 127.0.0.1, port: $KRATOS_PUBLIC_PORT}
  admin: {base_url: "http://127.0.0.1:$KRATOS_ADMIN_PORT/", host: 127.0.0.1, port: $KRATOS_ADMIN_PORT}
courier:
  smtp: {connection_uri: "smtp://127.0.0.1:$MAIL_PORT/?disable_starttls=true"}
EOF
  start_mail_sink
  DSN="$KRATOS_DSN" "$KRATOS_BIN" migrate sql -e --yes -c "$STACK/kratos.yml" >"$STACK/kratos-migrate.log" 2>&1 ||
    { cat "$STACK/kratos-migrate.log" >&2; die "kratos migrate failed"; }
  stop_pid "$STACK/kratos.pid"
  # --watch-courier: Kratos sends its e-mail and SMS from this process.
  DSN="$KRATOS_DSN" setsid "$KRATOS_BIN" serve -c "$STACK/kratos.yml" -c "$STACK/kratos.local.yml" --dev --sqa-opt-out --watch-courier \
    >"$STACK/kratos.log" 2>&1 </dev/null &
  echo $! >"$STACK/kratos.pid"
  wait_for 60 "kratos on 127.0.0.1:$KRATOS_PUBLIC_PORT (admin $KRATOS_ADMIN_PORT)" \
    curl -sf "http://127.0.0.1:$KRATOS_ADMIN_PORT/admin/health/ready" || { tail -20 "$STACK/kratos.log" >&2; die "kratos did not start"; }

  stop_pid "$STACK/kratos-hooks.pid"
  LOG_FORMAT=text setsid "$STACK/kratos-hooks" serve --migrate >"$STACK/kratos-hooks.log" 2>&1 </dev/null &
  echo $! >"$STACK/kratos-hooks.pid"
  wait_for 60 "kratos-hooks on 127.0.0.1:$HOOKS_PORT" curl -sf "http://127.0.0.1:$HOOKS_PORT/health/ready" ||
    { tail -20 "$STACK/kratos-hooks.log" >&2; die "kratos-hooks did not start"; }

  cat <<EOF

The stack is up:
  kratos-hooks   http://127.0.0.1:$HOOKS_PORT   ($(curl -s "http://127.0.0.1:$HOOKS_PORT/health/ready"))
  Kratos         public http://127.0.0.1:$KRATOS_PUBLIC_PORT, admin http://127.0.0.1:$KRATOS_ADMIN_PORT
  Postgres       $(echo "$DATABASE_URL" | sed -E 's#//[^@]*@#//postgres:***@#')   (password in $STACK/env)
  Elasticsearch  http://127.0.0.1:$ES_PORT
Logs and data are in $STACK.

Registration mode: $REGISTRATION_MODE (KH_REGISTRATION_MODE). SMS go to GET http://127.0.0.1:$HOOKS_PORT/dev/sms (Bearer \$ADMIN_API_TOKEN),
e-mail to $STACK/mail.log. Invite someone: $STACK/kratos-hooks invites create --email someone@example.com
(after the eval below).

Next:
  make demo                      invite, register and log in people through Kratos; see profiles and search
  eval "\$(scripts/stack.sh env)"  use the stack's settings in this shell (psql "\$DATABASE_URL", …)
  make down                      stop everything
EOF
}

# start_mail_sink: a throwaway SMTP server for Kratos's e-mail (Python's smtpd, where the machine's Python
# still has it), writing every message to mail.log. Without it the stack works; e-mail stays queued in Kratos.
start_mail_sink() {
  stop_pid "$STACK/mail.pid"
  if python3 -c 'import smtpd' >/dev/null 2>&1; then
    setsid python3 -W ignore -u -m smtpd -n -c DebuggingServer "127.0.0.1:$MAIL_PORT" >>"$STACK/mail.log" 2>&1 </dev/null &
    echo $! >"$STACK/mail.pid"
  else
    log "no SMTP sink (this Python has no smtpd module): Kratos's e-mail stays queued in its courier_messages table"
  fi
}

cmd_down() {
  stop_pid "$STACK/kratos-hooks.pid"
  stop_pid "$STACK/kratos.pid"
  stop_pid "$STACK/mail.pid"
  stop_elasticsearch "$STACK/es"
  stop_postgres "$STACK/pg"
  log "stack stopped (data kept in $STACK; remove it to start from scratch)"
}

cmd_status() {
  for svc in kratos-hooks kratos; do
    if pid_alive "$STACK/$svc.pid"; then echo "$svc: running (pid $(cat "$STACK/$svc.pid"))"; else echo "$svc: stopped"; fi
  done
  if [ -f "$STACK/pg/data/postmaster.pid" ]; then echo "postgres: running"; else echo "postgres: stopped"; fi
  if pid_alive "$STACK/es/es.pid"; then echo "elasticsearch: running"; else echo "elasticsearch: stopped"; fi
}

cmd_env() {
  [ -f "$STACK/env" ] || die "the stack has never been started: make up"
  cat "$STACK/env"
}

cmd_demo() {
  [ -f "$STACK/env" ] || die "the stack is not up: make up"
  # shellcheck disable=SC1091
  source "$STACK/env"
  curl -sf "$KRATOS_HOOKS_URL/health/ready" >/dev/null || die "kratos-hooks is not running: make up"
  go run ./internal/demo
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) cmd_env ;;
  demo) cmd_demo ;;
  *) echo "usage: scripts/stack.sh up|demo|status|env|down" >&2; exit 2 ;;
esac
