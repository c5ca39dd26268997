"""Settings, read from the environment (a `.env` file is optional, never required).

Every variable has a documented default in README.md; a malformed value stops the process at
start-up instead of being silently ignored.
"""

import os
import tempfile
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def _load_dotenv(path: Path) -> None:
    """Read KEY=VALUE lines from an optional .env file; the real environment wins."""
    if not path.is_file():
        return
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        os.environ.setdefault(key.strip(), value.strip().strip("\"'"))


_load_dotenv(BASE_DIR / ".env")


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false), not {raw!r}")


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, not {raw!r}") from None


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in env_str(name, default).split(",") if item.strip()]


DEBUG = env_bool("DJANGO_DEBUG", False)

DEV_SECRET_KEY = "django-insecure-dev-key-only-for-local-development-never-in-production"
SECRET_KEY = env_str("DJANGO_SECRET_KEY", DEV_SECRET_KEY)
if not DEBUG and SECRET_KEY == DEV_SECRET_KEY:
    raise ImproperlyConfigured(
        "DJANGO_SECRET_KEY must be set when DJANGO_DEBUG=0 (the development key is refused)."
    )

ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "knox",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "billing",
    "users",
    "events",
    "customers",
    "invoices",
    "payments",
    "delivery",
    "django_tasks",
    "django_tasks_db",
]

MIDDLEWARE = [
    "billing.middleware.RequestLogMiddleware",
    "billing.middleware.RequestSizeLimitMiddleware",
    "billing.middleware.RequestCharsetMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Django's own session, user and messages middleware, run only under SESSION_PATH_PREFIXES.
    "billing.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "billing.middleware.AuthenticationMiddleware",
    "billing.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
# The paths that log in with a session cookie (the admin, its login page included). The API, the
# docs and the hosted invoice pages use no session: their requests skip its middleware.
SESSION_PATH_PREFIXES = ["/admin/"]

ROOT_URLCONF = "billing.urls"
WSGI_APPLICATION = "billing.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
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

# Database: SQLite file by default, anything dj-database-url understands through DATABASE_URL.
DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
        conn_max_age=env_int("DB_CONN_MAX_AGE", 60),
        # Off by default: the check is one extra round trip on every request, a visible share of a
        # cheap request's time (bench/README.md). Without it, the first request on a connection the
        # database has dropped (say, after a restart) fails and the connection is replaced.
        conn_health_checks=env_bool("DB_CONN_HEALTH_CHECKS", False),
    )
}
# PostgreSQL: the statements the hot paths keep compiled (billing.db) are prepared once per
# connection and then executed with their values, so the server does not parse and plan them on
# every request. Off behind a pooler in transaction mode (PgBouncer's default), which hands a
# client a different server connection from one transaction to the next.
DATABASE_PREPARED_STATEMENTS = env_bool("DATABASE_PREPARED_STATEMENTS", True)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets readers run beside the one writer; IMMEDIATE takes the write lock when a
    # transaction starts, so two writers queue instead of failing with "database is locked"
    # halfway through (the SQLite stand-in for PostgreSQL's row locks).
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;",
    }
    # A file, not :memory:, so that tests with real threads share one database; one per test
    # process, so that two runs on one machine never share it.
    DATABASES["default"]["TEST"] = {
        "NAME": str(Path(tempfile.gettempdir()) / f"billing_test_{os.getpid()}.sqlite3")
    }
    # The summary's covering index (Invoice.Meta.indexes "invoice_org_summary", include=[...])
    # is PostgreSQL-only on purpose: SQLite builds it on the key columns alone, which is the
    # fallback we want, so its warning about the ignored INCLUDE columns says nothing to act on.
    # Silenced only here: on PostgreSQL every check still reports.
    SILENCED_SYSTEM_CHECKS = ["models.W040"]

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
if not env_bool("PASSWORD_VALIDATION", True):
    AUTH_PASSWORD_VALIDATORS = []

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Serve straight from the apps' static folders as well, so the admin and Swagger UI work even
# before `collectstatic` has run (`make serve` still collects, for compressed files).
WHITENOISE_USE_FINDERS = True

# Requests: a billing request is small; anything larger is refused before it is parsed.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("MAX_REQUEST_BYTES", 1024 * 1024)
DATA_UPLOAD_MAX_NUMBER_FIELDS = 2000

# Security. The defaults are safe behind TLS; `manage.py check --deploy` is clean when
# DJANGO_SECURE_SSL_REDIRECT=1 and DJANGO_SECURE_HSTS_SECONDS are set (see README).
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG
SESSION_COOKIE_HTTPONLY = True
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", False)
SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HSTS_SECONDS > 0
SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", False)
# How many proxies in front of the app append the address they received a request from to
# X-Forwarded-For. 0: the header is the client's to write, so the client is REMOTE_ADDR.
TRUSTED_PROXIES = env_int("DJANGO_TRUSTED_PROXIES", 0)
if TRUSTED_PROXIES < 0:
    raise ImproperlyConfigured(f"DJANGO_TRUSTED_PROXIES must be 0 or more, not {TRUSTED_PROXIES}")
if env_bool("DJANGO_BEHIND_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    USE_X_FORWARDED_HOST = True
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", "")
# The health check must answer plain HTTP from a load balancer even when HTTPS is enforced.
SECURE_REDIRECT_EXEMPT = [r"^api/health/$"]

# Domain settings.
DEFAULT_CURRENCY = env_str("DEFAULT_CURRENCY", "USD").upper()
REGISTRATION_OPEN = env_bool("REGISTRATION_OPEN", True)
LOGIN_THROTTLE_RATE = env_str("LOGIN_THROTTLE_RATE", "10/min")
TOKEN_TTL_HOURS = env_int("TOKEN_TTL_HOURS", 720)
IDEMPOTENCY_KEY_TTL_HOURS = env_int("IDEMPOTENCY_KEY_TTL_HOURS", 24)

REST_FRAMEWORK = {
    # An organization's API key (sk_...) or a member's login token, both as "Token <key>" or
    # "Bearer <key>"; then the role of that credential (users.roles) decides what it may do.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "users.auth.ApiKeyAuthentication",
        "users.auth.ExpiringTokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["users.permissions.RolePermission"],
    # DRF's JSONRenderer output byte for byte, written by orjson (billing.renderers).
    "DEFAULT_RENDERER_CLASSES": ["billing.renderers.FastJSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["billing.parsers.JSONParser"],
    "DEFAULT_PAGINATION_CLASS": "billing.pagination.PageNumberPagination",
    # One backend, the strict one: every list declares a filterset_class whose filters refuse what
    # they do not understand (billing.filters); DRF's SearchFilter and OrderingFilter, which ignore
    # an unknown ordering, are not used.
    "DEFAULT_FILTER_BACKENDS": ["billing.filters.FilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "billing.schema.BillingAutoSchema",
    "EXCEPTION_HANDLER": "billing.errors.exception_handler",
    "DEFAULT_THROTTLE_RATES": {"login": LOGIN_THROTTLE_RATE},
    # The same trust for DRF's own client identity (LoginRateThrottle has its own, from TRUSTED_PROXIES):
    # unset, DRF would take the whole X-Forwarded-For header, which the client writes, as the identity.
    "NUM_PROXIES": TRUSTED_PROXIES,
    "COERCE_DECIMAL_TO_STRING": True,
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
if DEBUG:
    REST_FRAMEWORK["DEFAULT_RENDERER_CLASSES"].append("rest_framework.renderers.BrowsableAPIRenderer")

AUTH_USER_MODEL = "users.User"
# knox's own migration creates its AuthToken table even when the model is swapped (a table no model
# knows, with a foreign key to users, which a test database's flush cannot empty): not migrated.
MIGRATION_MODULES = {"knox": None}
# knox's tokens, each bound to one membership (users.models.MemberToken).
KNOX_TOKEN_MODEL = "users.MemberToken"
REST_KNOX = {
    "TOKEN_TTL": timedelta(hours=TOKEN_TTL_HOURS),
    "AUTH_HEADER_PREFIX": "Token",
    "AUTO_REFRESH": False,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Billing API",
    "DESCRIPTION": (
        "Customers, invoices with line items, partial payments and revenue summaries. "
        "Authenticate with `Authorization: Bearer <key>` or, the same credential, "
        "`Authorization: Token <key>` (the key from `POST /api/login/`; in Swagger UI's Authorize, "
        "paste the key alone). Money travels as strings with its currency's decimal places; dates as "
        "ISO 8601. Errors are `FieldErrors` (`{field: [message]}`) or `Error` (`{detail, code}`). "
        "`GET /api/` lists the entry points."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Nothing loads from another host: the UIs' assets are the sidecar's, Swagger UI validates no
    # spec online, and ReDoc's page is the project's (no web fonts, no remote logo).
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
    "REDOC_DIST": "SIDECAR",
    "REDOC_UI_SETTINGS": {"hideLoading": True},
    # An API key travels in the same header as a member's token: one scheme (tokenAuth) says both.
    "AUTHENTICATION_WHITELIST": ["users.auth.ExpiringTokenAuthentication"],
    "ENUM_NAME_OVERRIDES": {
        "CurrencyEnum": "billing.currencies.CURRENCY_CHOICES",
        "InvoiceStatusEnum": "invoices.models.InvoiceStatus",
        "ErrorCodeEnum": "billing.schema.ERROR_CODES",
        "RoleEnum": "users.models.Role",
        "CreatedByTypeEnum": "invoices.serializers.CREATED_BY_TYPES",
        "ApiKeyRoleEnum": "users.models.API_KEY_ROLE_CHOICES",
    },
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "billing.schema.postprocess_schema",
    ],
}

# The default cache is per process. Nothing shared lives in a cache: the login throttle's counts are
# rows of users.ThrottleCounter, shared by every worker and every app server.
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# Logs go to stderr: JSON records (one per line, for a log pipeline) unless LOG_FORMAT=plain;
# `make run` (DJANGO_DEBUG=1) defaults to plain. Request records come from RequestLogMiddleware
# and never carry headers or bodies.
LOG_FORMAT = env_str("LOG_FORMAT", "plain" if DEBUG else "json")
if LOG_FORMAT not in {"json", "plain"}:
    raise ImproperlyConfigured(f"LOG_FORMAT must be json or plain, not {LOG_FORMAT!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        },
    },
    # stderr, written by a thread of the handler's own: a slow log stream never holds up a request.
    "handlers": {"console": {"class": "billing.logs.BackgroundStreamHandler", "formatter": LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {
        # Our request log has one record per request; Django keeps only the 5xx tracebacks.
        "django.request": {"level": "ERROR"},  # tracebacks of 5xx, not 4xx warnings
        "django.server": {"level": "WARNING"},
        # The PDF engine narrates every render at INFO; its warnings (a font missing) still show.
        "weasyprint": {"level": "WARNING"},
        "fontTools": {"level": "WARNING"},
    },
}

# --- Delivery: documents, the email outbox, the background worker (delivery app) -------------------

# Jobs are django.tasks tasks on the database backend (django-tasks-db's, its job's INSERT kept
# compiled: billing.tasks): a job is a row written in the transaction that needs it. Another
# django.tasks backend is a setting away (TASKS_BACKEND).
TASKS = {
    "default": {
        "BACKEND": env_str("TASKS_BACKEND", "billing.tasks.DatabaseBackend"),
        "QUEUES": ["default"],
    }
}
# Stored PDFs: Django's default storage, MEDIA_ROOT on disk; or, with S3_BUCKET set, an S3-compatible
# object store (AWS S3, MinIO, Ceph, R2, ...: S3_ENDPOINT_URL) through django-storages, which every web
# server and worker of a deployment on several machines shares. The files are never public: the API
# and the hosted page stream them (no presigned URLs, no ACLs).
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(BASE_DIR / "media")))
MEDIA_URL = "media/"
S3_BUCKET = env_str("S3_BUCKET", "")
if S3_BUCKET:
    STORAGES["default"] = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": S3_BUCKET,
            "location": env_str("S3_PREFIX", "").strip("/"),
            "endpoint_url": env_str("S3_ENDPOINT_URL", "") or None,
            "region_name": env_str("S3_REGION", "") or None,
            # Unset: boto3's own chain (AWS_* variables, an instance role, ~/.aws).
            "access_key": env_str("S3_ACCESS_KEY_ID", "") or None,
            "secret_key": env_str("S3_SECRET_ACCESS_KEY", "") or None,
            "default_acl": None,
            "querystring_auth": True,
            # Each version's name carries its digest: never overwritten, so no check before a write.
            "file_overwrite": True,
        },
    }
# The base of links in emails (the hosted invoice page).
PUBLIC_URL = env_str("PUBLIC_URL", "http://127.0.0.1:8000").rstrip("/")
# SMTP from EMAIL_URL (smtp://user:pass@host:587?tls=1, smtps://..., console:, locmem:). Unset: the
# console backend with DJANGO_DEBUG=1; with DJANGO_DEBUG=0 no backend, and emails stay queued
# (`manage.py check` warns) while the rest of the app serves.
EMAIL_URL = env_str("EMAIL_URL", "console:" if DEBUG else "")
EMAIL_CONFIGURED = bool(EMAIL_URL)
if EMAIL_URL:
    import dj_email_url

    try:
        _email = dj_email_url.parse(EMAIL_URL)
    except Exception as exc:
        raise ImproperlyConfigured(f"EMAIL_URL is not a valid email URL: {exc}") from None
    EMAIL_BACKEND = _email["EMAIL_BACKEND"]
    EMAIL_HOST, EMAIL_PORT = _email["EMAIL_HOST"] or "localhost", _email["EMAIL_PORT"] or 25
    EMAIL_HOST_USER, EMAIL_HOST_PASSWORD = (
        _email["EMAIL_HOST_USER"] or "",
        _email["EMAIL_HOST_PASSWORD"] or "",
    )
    EMAIL_USE_TLS, EMAIL_USE_SSL = _email["EMAIL_USE_TLS"], _email["EMAIL_USE_SSL"]
    EMAIL_TIMEOUT = _email.get("EMAIL_TIMEOUT") or 30
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "billing@localhost")
# A claimed outbox row is another worker's to take after this long (the worker died).
DELIVERY_LEASE_SECONDS = env_int("DELIVERY_LEASE_SECONDS", 300)
# Seconds between a failed attempt and the next: 6 tries over 1 h 51 min, then `failed`.
DELIVERY_RETRY_SCHEDULE = [int(s) for s in env_list("DELIVERY_RETRY_SCHEDULE", "60,300,900,1800,3600")]
# A PDF rendered on a request (a draft's, or one not stored yet) under gevent workers: laid out on
# one OS thread of the worker's own (billing.cooperative), at most this many running or waiting in a
# worker (each holds a request slot, GUNICORN_REQUEST_SLOTS, 4), more refused with 503 `pdf_busy`
# and Retry-After; and a request waits at most this long for its render (503 `pdf_busy` then too).
PDF_RENDERS_PER_WORKER = env_int("PDF_RENDERS_PER_WORKER", 2)
PDF_RENDER_TIMEOUT_SECONDS = env_int("PDF_RENDER_TIMEOUT_SECONDS", 60)
if PDF_RENDERS_PER_WORKER < 1 or PDF_RENDER_TIMEOUT_SECONDS < 1:
    raise ImproperlyConfigured("PDF_RENDERS_PER_WORKER and PDF_RENDER_TIMEOUT_SECONDS must be at least 1")
# The hosted invoice page and its PDF, per client address (DRF's rate syntax).
HOSTED_PAGE_THROTTLE_RATE = env_str("HOSTED_PAGE_THROTTLE_RATE", "120/min")
# How often the worker's scheduler sweeps expired leases and sends the reminders due.
DELIVERY_TICK_SECONDS = env_int("DELIVERY_TICK_SECONDS", 60)

# --- events and webhooks (API.md: Events and webhooks) ---
# Events are kept at least this many days; `manage.py purge_events` deletes older ones.
EVENT_RETENTION_DAYS = env_int("EVENT_RETENTION_DAYS", 30)
# Webhook endpoints on loopback, private or link-local addresses are refused at connect time unless set.
WEBHOOKS_ALLOW_PRIVATE_NETWORKS = env_bool("WEBHOOKS_ALLOW_PRIVATE_NETWORKS", False)
# Seconds after each failed attempt (jittered, Retry-After honoured): 5 s, 5 min, 30 min, 2 h, 5 h, 10 h,
# 14 h, 20 h, 24 h, then `failed`.
WEBHOOK_RETRY_SCHEDULE = [
    int(s) for s in env_list("WEBHOOK_RETRY_SCHEDULE", "5,300,1800,7200,18000,36000,50400,72000,86400")
]
WEBHOOK_TIMEOUT_SECONDS = env_int("WEBHOOK_TIMEOUT_SECONDS", 15)
# A claimed delivery's lease: longer than the timeout, so a live worker never loses its row.
WEBHOOK_LEASE_SECONDS = env_int("WEBHOOK_LEASE_SECONDS", 60)
# An endpoint failing without a success for this long is disabled (and the organization's admins told).
WEBHOOK_DISABLE_AFTER_SECONDS = env_int("WEBHOOK_DISABLE_AFTER_SECONDS", 3 * 24 * 3600)
# Keys that encrypt the stored webhook secrets (comma-separated; the first encrypts, all decrypt, so a
# key is rotated by putting the new one first). Unset: derived from DJANGO_SECRET_KEY.
WEBHOOK_SECRET_KEYS = env_list("WEBHOOK_SECRET_KEYS", "")
