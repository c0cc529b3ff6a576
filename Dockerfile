# taskrun: one image, three ways to start it (the container's command):
#   serve   web and one worker cluster together, SQLite in /app/var (default)
#   web     gunicorn only; migrates first, under a lock
#   worker  one worker cluster (qcluster); waits for the migrations
# Mount points: /app/tasks (the scripts) and /app/var (SQLite database,
# generated secret key, caches, logs). See docker-compose.yml and README.md.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# tini as PID 1 reaps the orphans a script may leave and passes SIGTERM to
# the main process only: django-q2 drains on it, and a signal to the whole
# group would kill the running scripts at once.
# Not pinned: each rebuild should bring Debian's security updates.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/*

# uid 1000 by default, the usual owner of a bind-mounted folder on a host.
ARG TASKRUN_UID=1000
RUN groupadd --system --gid "${TASKRUN_UID}" taskrun \
    && useradd --system --uid "${TASKRUN_UID}" --gid taskrun --home-dir /app \
        --no-create-home --shell /usr/sbin/nologin taskrun

WORKDIR /app

# Dependencies in a layer of their own: a code change does not reinstall them.
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY . .

ENV DATA_DIR=/app/var \
    TASKS_DIR=/app/tasks \
    STATIC_ROOT=/app/staticfiles \
    HOST=0.0.0.0 \
    PORT=8000

# Static files collected once, at build time, outside the /app/var volume so
# that each new image brings its own manifest. A throwaway key and data folder:
# nothing secret is baked into the image. Bytecode compiled now, since the
# app user may not write next to the code.
RUN SECRET_KEY=collectstatic-only DATA_DIR=/tmp/build python manage.py collectstatic --noinput -v 0 \
    && python -m compileall -q manage.py taskrun runs monitor \
    && rm -rf /tmp/build \
    && mkdir -p /app/var \
    && chown -R taskrun:taskrun /app/var /app/tasks \
    && chmod +x /app/docker/entrypoint.sh

# Numeric, so that a platform can verify "not root" without the passwd file.
USER ${TASKRUN_UID}:${TASKRUN_UID}
VOLUME ["/app/tasks", "/app/var"]
EXPOSE 8000

# The same checks as /health: database, broker and a live worker cluster.
HEALTHCHECK --interval=30s --timeout=15s --start-period=60s --retries=3 \
    CMD ["python", "manage.py", "health"]

ENTRYPOINT ["/usr/bin/tini", "--", "/app/docker/entrypoint.sh"]
CMD ["serve"]
