#!/usr/bin/env bash
# The system programs the tests use, installed from Debian's packages when missing (as root; a user
# who is not root is told what to install). `make test` and `.ci/run` call this; it is quick when all
# are there. Add a line per program: "command package".
set -uo pipefail
NEEDED="
strace strace
chromium chromium
"
missing=()
while read -r cmd pkg; do
    [ -z "${cmd:-}" ] && continue
    command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
done <<< "$NEEDED"
# PostgreSQL's server (initdb, pg_ctl): the tests start a throwaway server of their own. Debian keeps
# the binaries off PATH, under /usr/lib/postgresql/VERSION/bin; its package must not make and start
# a cluster of its own (createcluster.conf), we need only the programs.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then
    missing+=(postgresql)
fi
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "system-deps: installing ${missing[*]}"
    if [[ " ${missing[*]} " == *" postgresql "* ]]; then
        mkdir -p /etc/postgresql-common
        grep -qs "^create_main_cluster" /etc/postgresql-common/createcluster.conf ||
            echo "create_main_cluster = false" >> /etc/postgresql-common/createcluster.conf
    fi
    (apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1 ||
     { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; }) ||
        echo "system-deps: could not install ${missing[*]}; the tests that need them will fail" >&2
else
    echo "system-deps: please install ${missing[*]} (Debian packages); the tests that need them will fail" >&2
fi
exit 0
