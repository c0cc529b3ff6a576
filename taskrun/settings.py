"""taskrun settings: every value comes from the environment, with a default that
works on a laptop (SQLite in ./var, scripts in ./tasks, no other service)."""

import secrets
import socket
from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DEBUG", default=False)
DATA_DIR = Path(env.str("DATA_DIR", default=str(BASE_DIR / "var"))).resolve()
TASKS_DIR = Path(env.str("TASKS_DIR", default=str(BASE_DIR / "tasks"))).resolve()
LOGS_DIR = Path(env.str("LOGS_DIR", default=str(DATA_DIR / "logs"))).resolve()
for _folder in (DATA_DIR, LOGS_DIR):
    _folder.mkdir(parents=True, exist_ok=True)


def _secret_key() -> str:
    """SECRET_KEY from the environment, else one generated once into DATA_DIR."""
    key = env.str("SECRET_KEY", default="")
    if key:
        return key
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
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

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
DATABASES = {
    "default": env.db(
        "DATABASE_URL", default=f"sqlite:///{DATA_DIR / 'taskrun.sqlite3'}"
    )
}
_db = DATABASES["default"]
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
                "PRAGMA journal_mode=WAL;"
                "PRAGMA synchronous=NORMAL;"
                "PRAGMA busy_timeout=30000;"
            ),
        }
    )
    # The test database is a real file, so that test subprocesses (clusters,
    # commands) can open it and locking behaves as in production.
    _db["TEST"] = {"NAME": str(DATA_DIR / "test-taskrun.sqlite3")}
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
STATIC_ROOT = DATA_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
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
DRAIN_SECONDS = env.float("DRAIN_SECONDS", default=30)
# Between SIGTERM and SIGKILL when a script is stopped.
KILL_GRACE_SECONDS = env.float("KILL_GRACE_SECONDS", default=5)
# How often the supervisor writes new output and checks the cancel flag.
LOG_FLUSH_SECONDS = env.float("LOG_FLUSH_SECONDS", default=0.5)
SCRIPT_ENV_PASSTHROUGH = env.list("SCRIPT_ENV_PASSTHROUGH", default=[])
RUN_AS_USER = env.str("RUN_AS_USER", default="")
RUN_MEMORY_MB = env.int("RUN_MEMORY_MB", default=None)
RUN_CPU_SECONDS = env.int("RUN_CPU_SECONDS", default=None)
RUN_OUTPUT_MB = env.float("RUN_OUTPUT_MB", default=None)
WORKER_HOST = env.str("WORKER_HOST", default=socket.gethostname())
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
    "catch_up": False,
    "label": "Task queue",
}
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"

# --- logging --------------------------------------------------------------
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO").upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {
            "format": "%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s"
        },
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain"},
        "file": {
            "class": "logging.handlers.WatchedFileHandler",
            "filename": str(LOGS_DIR / "app.log"),
            "formatter": "plain",
        },
    },
    "root": {"handlers": ["console", "file"], "level": LOG_LEVEL},
    "loggers": {
        "django_q": {"level": LOG_LEVEL, "propagate": True},
    },
}
