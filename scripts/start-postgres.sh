#!/usr/bin/env bash
# Makes sure PostgreSQL answers on 127.0.0.1:5432 with a database `test` (trust auth), starting
# or installing it when needed. Exits non-zero when it cannot: projections need a real database.
set -euo pipefail

ready() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }

if ! ready; then
  if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    echo "PostgreSQL is not installed; installing Debian's package" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  fi
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 1 30); do ready && break; sleep 1; done
fi
ready || { echo "PostgreSQL does not answer on 127.0.0.1:5432" >&2; exit 1; }

psql_as() { psql -h 127.0.0.1 -U "$1" -d postgres -tAc "$2"; }
user=postgres
psql_as "$user" 'select 1' >/dev/null 2>&1 || user=root
if [ "$(psql_as "$user" "select 1 from pg_database where datname = 'test'")" != "1" ]; then
  psql_as "$user" 'create database test' >/dev/null
fi
psql -h 127.0.0.1 -U "$user" -d test -tAc 'select 1' >/dev/null
echo "PostgreSQL ready on 127.0.0.1:5432, database test"
