#!/bin/sh
# The container's command chooses how taskrun starts:
#   serve   web and one worker cluster together (one box, SQLite) - the default
#   web     migrate under a lock, then gunicorn only
#   worker  wait for the migrations, then one worker cluster (qcluster)
# Anything else runs as given: `docker compose run --rm web python manage.py shell`.
# Every branch ends in exec, so the process that `docker stop` signals (through
# tini) is the one that knows how to drain.
set -eu

cd "$(dirname "$0")/.."

command="${1:-serve}"
[ "$#" -gt 0 ] && shift

case "$command" in
    serve)
        # The image collected the static files at build time; outside an image
        # (no manifest yet) serve collects them itself.
        if [ -f "${STATIC_ROOT:-/nonexistent}/staticfiles.json" ]; then
            set -- --no-collectstatic "$@"
        fi
        exec python manage.py serve --host "${HOST:-0.0.0.0}" --port "${PORT:-8000}" "$@"
        ;;
    web)
        exec python manage.py web "$@"
        ;;
    worker)
        exec python manage.py worker "$@"
        ;;
    *)
        exec "$command" "$@"
        ;;
esac
