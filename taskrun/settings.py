"""taskrun settings: every value comes from the environment, with a default that
works on a laptop (SQLite in ./var, scripts in ./tasks, no other service)."""

import os
import secrets
import socket
import sys
import warnings
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


class _Env(environ.Env):
    def get_value(self, var, cast=None, default=environ.Env.NOTSET, parse_default=False):
        try:
            return super().get_value(var, cast=cast, default=default, parse_default=parse_default)
        except ValueError as exc:
            # django-environ's own message does not say which variable it was.
            raise ImproperlyConfigured(
                f"{var}={self.ENVIRON.get(var, '')!r} is not valid ({exc})"
            ) from None


env = _Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DEBUG", default=False)
DATA_DIR = Path(env.str("DATA_DIR", default=str(BASE_DIR / "var"))).resolve()
TASKS_DIR = Path(env.str("TASKS_DIR", default=str(BASE_DIR / "tasks"))).resolve()
LOGS_DIR = Path(env.str("LOGS_DIR", default=str(DATA_DIR / "logs"))).resolve()


def _unwritable(folder: Path) -> str | None:
    """Why this process cannot write into ``folder`` (created if missing), or None."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return exc.strerror or exc.__class__.__name__
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"no write permission for uid {os.getuid()}"
    return None


def _secret_key() -> str:
    """SECRET_KEY from the environment, else one generated once into DATA_DIR."""
    key = env.str("SECRET_KEY", default="")
    if key:
        return key
    # One readable line, not a traceback: the first thing a container with a
    # read-only or wrongly owned volume prints.
    problem = _unwritable(DATA_DIR)
    if problem:
        raise ImproperlyConfigured(
            f"SECRET_KEY is not set and DATA_DIR {DATA_DIR} is not writable to keep a "
            f"generated one ({problem}): set SECRET_KEY or make DATA_DIR writable."
        )
    key_file = DATA_DIR / "secret_key"
    if not key_file.exists():
        # O_EXCL: when several processes start together only one key is written.
        try:
            fd = key_file.open("x")
        except FileExistsError:
            pass
        else:
            with fd:
                fd.write(secrets.token_urlsafe(50))
            key_file.chmod(0o600)
    return key_file.read_text().strip()


SECRET_KEY = _secret_key()
for _name, _folder in (("DATA_DIR", DATA_DIR), ("LOGS_DIR", LOGS_DIR)):
    if _problem := _unwritable(_folder):
        raise ImproperlyConfigured(
            f"{_name} {_folder} is not writable ({_problem}): it holds "
            + ("the application log." if _name == "LOGS_DIR" else "the database and caches.")
        )
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1"])
# Full origins ("https://taskrun.example.com"); needed only when the browser's
# origin differs from the host Django sees (a proxy that rewrites Host or port).
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# --- production: HTTPS and proxies ------------------------------------------
# Behind a proxy that terminates TLS, trust its X-Forwarded-Proto (the proxy
# must set it and drop the client's own), so that request.is_secure() is true.
if env.bool("BEHIND_PROXY", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
HTTPS = env.bool("HTTPS", default=False)
if HTTPS:
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    # Health probes come over plain HTTP from inside the container or host.
    SECURE_REDIRECT_EXEMPT = [r"^health$"]
    SECURE_HSTS_SECONDS = env.int("HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("HSTS_INCLUDE_SUBDOMAINS", default=True)
    SECURE_HSTS_PRELOAD = env.bool("HSTS_PRELOAD", default=False)
    if not SECURE_HSTS_PRELOAD:
        # Preloading binds the whole registrable domain and is asked for on
        # hstspreload.org; that is the domain owner's call, not a default.
        SILENCED_SYSTEM_CHECKS = ["security.W021"]

INSTALLED_APPS = [
    # runs comes before django_q so that its qcluster command (which adds the
    # graceful drain) wraps django-q2's own.
    "runs",
    "monitor",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django_q",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "taskrun.urls"
WSGI_APPLICATION = "taskrun.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- database -------------------------------------------------------------
with warnings.catch_warnings():
    # An unknown scheme is reported just below, in one line.
    warnings.simplefilter("ignore")
    DATABASES = {
        "default": env.db("DATABASE_URL", default=f"sqlite:///{DATA_DIR / 'taskrun.sqlite3'}")
    }
_db = DATABASES["default"]
if not _db.get("ENGINE"):
    raise ImproperlyConfigured(
        "DATABASE_URL is not a database URL: use postgres://user:password@host:5432/name "
        "or sqlite:////absolute/path.sqlite3"
    )
if _db["ENGINE"] == "django.db.backends.sqlite3":
    # select_for_update does nothing on SQLite: IMMEDIATE transactions take the
    # write lock at BEGIN, so two starts of one task are serialised; WAL lets
    # readers work beside the writer; the busy timeout makes writers wait
    # instead of failing with "database is locked".
    _db.setdefault("OPTIONS", {}).update(
        {
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
            "init_command": (
                "PRAGMA journal_mode=WAL;PRAGMA synchronous=NORMAL;PRAGMA busy_timeout=30000;"
            ),
        }
    )
    # The test database is a real file, so that test subprocesses (clusters,
    # commands) can open it and locking behaves as in production.
    _db["TEST"] = {"NAME": str(DATA_DIR / "test-taskrun.sqlite3")}
    # Reopening the file and running the PRAGMAs costs about a millisecond,
    # which django-q2's pusher and workers would pay on every poll and job.
    _db["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
else:
    # Persistent connections halve django-q2's broker cost on PostgreSQL;
    # health checks make a connection dropped by a restart reconnect.
    _db["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
    _db["CONN_HEALTH_CHECKS"] = True
    _db.setdefault("OPTIONS", {}).setdefault("connect_timeout", 5)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- caches: cluster stats need a cache every process shares ---------------
REDIS_URL = env.str("REDIS_URL", default="")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
        }
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(DATA_DIR / "cache"),
        }
    }

# --- auth, i18n, static ---------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# The Docker image collects static files at build time, outside the DATA_DIR
# volume (which would hide them and keep an old manifest across upgrades).
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(DATA_DIR / "static"))).resolve()
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

# --- runs -----------------------------------------------------------------
MAX_TASK_WORKERS = env.int("MAX_TASK_WORKERS", default=5)
TASK_TIMEOUT = env.int("TASK_TIMEOUT", default=3600)
# The longest timeout a task may ask for; django-q2's retry is set above it.
TASK_TIMEOUT_MAX = env.int("TASK_TIMEOUT_MAX", default=max(TASK_TIMEOUT, 86400))
PROCESS_CHECK_INTERVAL = env.float("PROCESS_CHECK_INTERVAL", default=10)
LEASE_SECONDS = env.float("LEASE_SECONDS", default=3 * PROCESS_CHECK_INTERVAL)
if _db["ENGINE"] != "django.db.backends.sqlite3":
    # Across a network partition a query hangs until TCP gives up (minutes):
    # past a third of a lease of unacknowledged data it fails instead, and the
    # worker reconnects or fences itself. A session that a frozen or cut-off
    # worker leaves idle inside a transaction would keep its row locks — and
    # stall the reaper that must declare its run lost — until it came back:
    # PostgreSQL ends it after a lease (at least 10 s).
    _db["OPTIONS"].setdefault("tcp_user_timeout", int(LEASE_SECONDS / 3 * 1000))
    _db["OPTIONS"].setdefault(
        "options", f"-c idle_in_transaction_session_timeout={int(max(LEASE_SECONDS, 10) * 1000)}"
    )
DRAIN_SECONDS = env.float("DRAIN_SECONDS", default=30)
# Between SIGTERM and SIGKILL when a script is stopped.
KILL_GRACE_SECONDS = env.float("KILL_GRACE_SECONDS", default=5)
# How often the supervisor writes new output and checks the cancel flag.
LOG_FLUSH_SECONDS = env.float("LOG_FLUSH_SECONDS", default=0.5)
SCRIPT_ENV_PASSTHROUGH = env.list("SCRIPT_ENV_PASSTHROUGH", default=[])
RUN_AS_USER = env.str("RUN_AS_USER", default="")
# The interpreter scripts run with: taskrun's own by default, or another
# virtualenv's python that holds the scripts' own dependencies.
SCRIPT_PYTHON = env.str("SCRIPT_PYTHON", default=sys.executable)
RUN_MEMORY_MB = env.int("RUN_MEMORY_MB", default=None)
RUN_CPU_SECONDS = env.int("RUN_CPU_SECONDS", default=None)
RUN_OUTPUT_MB = env.float("RUN_OUTPUT_MB", default=None)
# Safe defaults of their own: processes in one run's tree, open files each.
RUN_MAX_PROCESSES = env.int("RUN_MAX_PROCESSES", default=256)
RUN_OPEN_FILES = env.int("RUN_OPEN_FILES", default=1024)
WORKER_HOST = env.str("WORKER_HOST", default=socket.gethostname())
# How often each cluster fires due schedules and releases delayed runs: a
# schedule or delay starts at most about this late.
SCHEDULER_INTERVAL = env.float("SCHEDULER_INTERVAL", default=2)
# Lets Prometheus scrape /metrics with "Authorization: Bearer <token>";
# unset, only logged-in staff see it.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
# Encrypts stored secrets; derived from SECRET_KEY when unset. Old keys still
# decrypt while `rotate_secrets_key` moves everything to the new one.
SECRETS_KEY = env.str("SECRETS_KEY", default="")
SECRETS_OLD_KEYS = env.list("SECRETS_OLD_KEYS", default=[])

Q_CLUSTER = {
    "name": "taskrun",
    "workers": MAX_TASK_WORKERS,
    # The executor enforces each run's timeout itself; django-q2's timeout
    # only catches an executor that hangs, and retry (redelivery of a job
    # whose worker died) must come after it. A redelivered job is a no-op:
    # the run is no longer queued, and the reaper has already dealt with it.
    "timeout": TASK_TIMEOUT_MAX + 600,
    "retry": TASK_TIMEOUT_MAX + 1200,
    "max_attempts": 1,
    "ack_failures": True,
    # Small prefetch: a job waiting in a busy cluster's queue is a run that an
    # idle cluster could have started.
    "queue_limit": 2,
    "recycle": 500,
    "poll": env.float("Q_POLL", default=0.2),
    "save_limit": 100,
    "cache": "default",
    # A slot missed while no cluster ran fires once when one comes back, not
    # once per missed slot.
    "catch_up": False,
    # The sentinel would run the scheduler only every 30 s; each cluster's
    # clock (runs.schedules.Clock) runs it every SCHEDULER_INTERVAL instead.
    "scheduler": False,
    "label": "Task queue",
}
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"
    # The ORM broker, but a job enqueued on this host wakes the clusters of
    # this host at once instead of waiting for their next poll (runs.broker).
    if env.bool("Q_WAKE", default=True):
        Q_CLUSTER["broker_class"] = "runs.broker.WakingORM"

# --- notifications ----------------------------------------------------------
# EMAIL_URL such as smtp+tls://user:password@smtp.example.com:587 (or
# smtp+ssl://…); unset, mails are written to the console log.
globals().update(
    {
        key: value
        for key, value in env.email_url("EMAIL_URL", default="consolemail://").items()
        if value not in (None, "")
    }
)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="taskrun@localhost")
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=10)
# The address people reach taskrun at, for links in notifications.
SITE_URL = env.str("SITE_URL", default="http://127.0.0.1:8000").rstrip("/")
WEBHOOK_TIMEOUT = env.float("WEBHOOK_TIMEOUT", default=5)
# A failed delivery is tried again after WEBHOOK_RETRY_SECONDS, then twice
# that, and so on, WEBHOOK_ATTEMPTS times in all.
WEBHOOK_ATTEMPTS = env.int("WEBHOOK_ATTEMPTS", default=5)
WEBHOOK_RETRY_SECONDS = env.float("WEBHOOK_RETRY_SECONDS", default=10)

# --- logging --------------------------------------------------------------
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO").upper()
# The servers (gunicorn; qcluster, serve, web, worker) log to stdout, where a
# container runtime collects it. Other commands keep stdout for what they
# print (a run id, JSON, a script's log) and log to stderr, as Django does.
_SERVERS = {"qcluster", "serve", "web", "worker", "runserver"}
_serving = "gunicorn" in sys.argv[0] or (
    Path(sys.argv[0]).name == "manage.py" and sys.argv[1:2] and sys.argv[1] in _SERVERS
)
# concurrent_log_handler's file locking (portalocker) imports the redis
# client, about 20 MB in every process, for a Redis lock taskrun never uses;
# without that module portalocker keeps a placeholder. (With REDIS_URL the
# broker and the cache import redis anyway.)
sys.modules.setdefault("portalocker.redis", None)
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stdout" if _serving else "ext://sys.stderr",
            "formatter": "plain",
        },
        # Many processes write app.log (gunicorn workers, cluster workers,
        # several containers on one volume). RotatingFileHandler would let each
        # of them rotate on its own and lose lines; this one rotates under a
        # lock file shared by all of them, and reopens after a fork.
        "file": {
            "class": "concurrent_log_handler.ConcurrentRotatingFileHandler",
            "filename": str(LOGS_DIR / "app.log"),
            "maxBytes": int(env.float("LOG_MAX_MB", default=10) * (1 << 20)),
            "backupCount": env.int("LOG_BACKUPS", default=5),
            "formatter": "plain",
        },
    },
    "root": {"handlers": ["console", "file"], "level": LOG_LEVEL},
    "loggers": {
        "django_q": {"level": LOG_LEVEL, "propagate": True},
    },
}
