#!/usr/bin/env bash
# Make sure PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379) answer, starting the
# local services when they are installed but stopped. Exits non-zero with a clear message
# when one is absent or will not start.
set -euo pipefail

PGHOST=${PGHOST:-127.0.0.1}
PGPORT=${PGPORT:-5432}
REDIS_HOST=${REDIS_HOST:-127.0.0.1}
REDIS_PORT=${REDIS_PORT:-6379}

pg_up() { pg_isready -q -h "$PGHOST" -p "$PGPORT" >/dev/null 2>&1; }
redis_up() {
  if command -v redis-cli >/dev/null 2>&1; then
    [ "$(redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping 2>/dev/null)" = "PONG" ]
  else
    (exec 3<>"/dev/tcp/$REDIS_HOST/$REDIS_PORT" && printf 'PING\r\n' >&3 && read -r -t 2 reply <&3 \
      && [[ "$reply" == +PONG* ]]) 2>/dev/null
  fi
}
wait_for() { # name check-function seconds
  local i
  for i in $(seq 1 "$3"); do "$2" && return 0; sleep 1; done
  return 1
}

if ! command -v pg_isready >/dev/null 2>&1; then
  echo "ensure-services: PostgreSQL client tools are not installed (apt-get install postgresql)" >&2
  exit 3
fi
if ! pg_up; then
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    version=$(ls /etc/postgresql | sort -V | tail -n 1)
    echo "ensure-services: starting PostgreSQL $version" >&2
    pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  fi
  wait_for postgresql pg_up 30 || {
    echo "ensure-services: PostgreSQL does not answer on $PGHOST:$PGPORT (is it installed? apt-get install postgresql)" >&2
    exit 3
  }
fi

if ! redis_up; then
  if command -v redis-server >/dev/null 2>&1; then
    echo "ensure-services: starting Redis" >&2
    mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" --save "" \
      --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
  fi
  wait_for redis redis_up 15 || {
    echo "ensure-services: Redis does not answer on $REDIS_HOST:$REDIS_PORT (is it installed? apt-get install redis-server)" >&2
    exit 3
  }
fi
echo "ensure-services: PostgreSQL $PGHOST:$PGPORT and Redis $REDIS_HOST:$REDIS_PORT answer"
