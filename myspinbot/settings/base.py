"""Settings shared by every environment. Every value comes from the environment
through the typed helpers in ``env``; a bad value stops the process at start-up."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from myspinbot.settings.broker import is_rabbitmq, task_queues
from myspinbot.settings.env import env_bool, env_float, env_int, env_list, env_str, env_url

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = Path(env_str("VAR_DIR", str(BASE_DIR / "var"))).resolve()

DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "ninja",
    "django_prometheus",
    "apps.capabilities",
    "apps.graphs",
    "apps.jobs",
    "apps.web",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "myspinbot.middleware.ApiErrorShapeMiddleware",  # sees every error response
    "myspinbot.middleware.ContentSecurityPolicyMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "apps.web.static_files.StaticFilesMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "myspinbot.signin_throttle.SignInThrottleMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "myspinbot.urls"
WSGI_APPLICATION = "myspinbot.wsgi.application"
ASGI_APPLICATION = "myspinbot.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "myspinbot" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "myspinbot.operations.links",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------
# DATABASE_URL switches between PostgreSQL (tests, production) and the SQLite
# file under var/ that one machine uses by default.
DATABASE_CONNECT_TIMEOUT = env_int("DATABASE_CONNECT_TIMEOUT", 3, min_value=1, max_value=60)
# Seconds a process keeps a database connection open between requests or tasks. The
# ASGI server forces 0 (myspinbot/asgi.py): it runs every request on a thread of its
# own, and a connection kept past its request outlives the thread that could reuse it.
DATABASE_CONN_MAX_AGE = env_int("DATABASE_CONN_MAX_AGE", 60, min_value=0)
# Connections a process keeps in a pool (psycopg's, through Django) on PostgreSQL; 0 means
# no pool. The ASGI server sets it (myspinbot/asgi.py): a request's connection goes back
# to the pool when the request ends, whichever thread ran it, so a request neither opens
# a connection of its own nor leaves one behind.
DATABASE_POOL_MAX_SIZE = env_int("DATABASE_POOL_MAX_SIZE", 0, min_value=0, max_value=100)


def database_from_url(url: str) -> dict[str, Any]:
    """Django DATABASES entry for ``url`` with a connect timeout on PostgreSQL."""
    config: dict[str, Any] = dict(dj_database_url.parse(url, conn_max_age=DATABASE_CONN_MAX_AGE))
    if config["ENGINE"] == "django.db.backends.postgresql":
        config["CONN_HEALTH_CHECKS"] = True
        config.setdefault("OPTIONS", {})["connect_timeout"] = DATABASE_CONNECT_TIMEOUT
        if DATABASE_POOL_MAX_SIZE:
            config["CONN_MAX_AGE"] = 0  # the pool keeps the connections instead
            config["OPTIONS"]["pool"] = {
                "min_size": 1,
                "max_size": DATABASE_POOL_MAX_SIZE,
                # A request waits this long for a free connection (or for the database
                # to come back), then fails as a database error would.
                "timeout": DATABASE_CONNECT_TIMEOUT,
            }
    elif config["ENGINE"] == "django.db.backends.sqlite3":
        config["CONN_MAX_AGE"] = 0
        config.setdefault("OPTIONS", {}).update(
            {
                "timeout": 20,
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL;",
            }
        )
    # The same backends, counting connections, queries and their durations (/metrics).
    config["ENGINE"] = config["ENGINE"].replace("django.db.", "django_prometheus.db.", 1)
    return config


DATABASE_URL = env_url(
    "DATABASE_URL",
    f"sqlite:///{VAR_DIR / 'myspinbot.sqlite3'}",
    schemes=("postgres", "postgresql", "sqlite"),
)
assert DATABASE_URL is not None
DATABASES = {"default": database_from_url(DATABASE_URL)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: Channels layer, Celery results (and the default broker) --------
REDIS_URL = env_url("REDIS_URL", "redis://127.0.0.1:6379/0", schemes=("redis", "rediss", "unix"))
REDIS_TIMEOUT_SECONDS = env_float("REDIS_TIMEOUT_SECONDS", 2.0, min_value=0.1, max_value=60)


def channel_layers(redis_url: str) -> dict[str, Any]:
    """Redis pub/sub layer: one PUBLISH per event, fanned out in each server process.

    It can drop a message while a connection is down; WebSocket consumers fill such gaps
    from the database. The read timeout must exceed the layer's 5 s blocking read.
    """
    host = {
        "address": redis_url,
        "socket_timeout": 15,
        "socket_connect_timeout": REDIS_TIMEOUT_SECONDS,
    }
    return {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [host]},
        }
    }


assert REDIS_URL is not None
CHANNEL_LAYERS = channel_layers(REDIS_URL)

# --- Object storage ----------------------------------------------------------
# S3_ENDPOINT_URL (or S3_BUCKET alone, for AWS) switches artifacts to S3; unset,
# they live in a local folder.
S3_ENDPOINT_URL = env_url("S3_ENDPOINT_URL", None, schemes=("http", "https"))
S3_BUCKET = env_str("S3_BUCKET", "")
S3_REGION = env_str("S3_REGION", "us-east-1")
S3_ACCESS_KEY_ID = env_str("S3_ACCESS_KEY_ID", "")
S3_SECRET_ACCESS_KEY = env_str("S3_SECRET_ACCESS_KEY", "")
# Download links: signed for the host browsers reach (default the endpoint above) and by a
# signing identity that can only read (default the identity above; production warns).
S3_PUBLIC_ENDPOINT_URL = env_url(
    "S3_PUBLIC_ENDPOINT_URL", S3_ENDPOINT_URL, schemes=("http", "https")
)
S3_SIGNING_ACCESS_KEY_ID = env_str("S3_SIGNING_ACCESS_KEY_ID", "")
S3_SIGNING_SECRET_ACCESS_KEY = env_str("S3_SIGNING_SECRET_ACCESS_KEY", "")
if bool(S3_SIGNING_ACCESS_KEY_ID) != bool(S3_SIGNING_SECRET_ACCESS_KEY):
    raise ImproperlyConfigured(
        "S3_SIGNING_ACCESS_KEY_ID and S3_SIGNING_SECRET_ACCESS_KEY are set together or not at all"
    )
S3_TIMEOUT_SECONDS = env_float("S3_TIMEOUT_SECONDS", 5.0, min_value=0.1, max_value=300)
if S3_ENDPOINT_URL and not S3_BUCKET:
    raise ImproperlyConfigured("S3_BUCKET must be set when S3_ENDPOINT_URL is set")
ARTIFACT_ROOT = Path(env_str("ARTIFACT_ROOT", str(VAR_DIR / "artifacts"))).resolve()
ARTIFACT_URL_TTL_SECONDS = env_int("ARTIFACT_URL_TTL_SECONDS", 300, min_value=10, max_value=86400)

# --- Celery --------------------------------------------------------------------
# Queue names are settings so one broker can serve several deployments.
CELERY_CPU_QUEUE = env_str("CELERY_CPU_QUEUE", "cpu")
CELERY_GPU_QUEUE = env_str("CELERY_GPU_QUEUE", "gpu")
if CELERY_CPU_QUEUE == CELERY_GPU_QUEUE:
    raise ImproperlyConfigured("CELERY_CPU_QUEUE and CELERY_GPU_QUEUE must differ")

# The broker: Redis (the default, the same server as the Channels layer) or RabbitMQ
# (``amqp://``; quorum queues, publisher confirms). Results and Channels stay on Redis.
CELERY_BROKER_URL = env_url(
    "CELERY_BROKER_URL", REDIS_URL, schemes=("redis", "rediss", "unix", "amqp", "amqps")
)
assert CELERY_BROKER_URL is not None
CELERY_RESULT_BACKEND = REDIS_URL
CELERY_RESULT_EXPIRES = 3600
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
# Quorum queues on a topic exchange on RabbitMQ, plain lists on Redis (settings.broker).
CELERY_TASK_QUEUES = task_queues(CELERY_BROKER_URL, CELERY_CPU_QUEUE, CELERY_GPU_QUEUE)
CELERY_TASK_DEFAULT_QUEUE = CELERY_CPU_QUEUE
# Imported by every worker at start: its answer to capability queries (a remote-control
# command) and the GPU report hooks.
CELERY_IMPORTS = ["apps.capabilities.worker_report"]
CELERY_TASK_DEFAULT_EXCHANGE = CELERY_TASK_QUEUES[0].exchange.name
CELERY_TASK_DEFAULT_EXCHANGE_TYPE = CELERY_TASK_QUEUES[0].exchange.type
CELERY_TASK_DEFAULT_ROUTING_KEY = CELERY_CPU_QUEUE
CELERY_TASK_CREATE_MISSING_QUEUES = False
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Keep a worker's database connection across tasks (Celery closes it after every
# task otherwise, costing a new PostgreSQL connection per node).
CELERY_DB_REUSE_MAX = env_int("CELERY_DB_REUSE_MAX", 1000, min_value=0)
CELERY_WORKER_SEND_TASK_EVENTS = True
CELERY_TASK_SEND_SENT_EVENT = True
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 3600, min_value=1)
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 3900, min_value=1)
# Redis redelivers an unacknowledged message after this long; it must exceed the
# longest task or a running task would be handed to a second worker. lora.train may
# run 14,400 s (plus the hard-limit grace); the check jobs.E001 compares this with
# every service's limit.
CELERY_VISIBILITY_TIMEOUT = env_int("CELERY_VISIBILITY_TIMEOUT", 21600, min_value=60)
if CELERY_TASK_SOFT_TIME_LIMIT >= CELERY_TASK_TIME_LIMIT:
    raise ImproperlyConfigured("CELERY_TASK_SOFT_TIME_LIMIT must be below CELERY_TASK_TIME_LIMIT")
if CELERY_VISIBILITY_TIMEOUT <= CELERY_TASK_TIME_LIMIT:
    raise ImproperlyConfigured(
        f"CELERY_VISIBILITY_TIMEOUT ({CELERY_VISIBILITY_TIMEOUT}s) must exceed "
        f"CELERY_TASK_TIME_LIMIT ({CELERY_TASK_TIME_LIMIT}s)"
    )
# RabbitMQ closes the channel of a consumer that has not acknowledged a delivery after
# the server's ``consumer_timeout`` and hands the message to another worker: it must
# exceed the longest task too. The server owns that value (rabbitmq.conf
# ``consumer_timeout`` in ms; ``python -m myspinbot.devservices rabbitmq`` sets it on
# this machine's server); this setting says what it is, and jobs.E002 refuses a
# value below a service's limit.
CELERY_CONSUMER_TIMEOUT = env_int("CELERY_CONSUMER_TIMEOUT", 21600, min_value=60)
if CELERY_CONSUMER_TIMEOUT <= CELERY_TASK_TIME_LIMIT:
    raise ImproperlyConfigured(
        f"CELERY_CONSUMER_TIMEOUT ({CELERY_CONSUMER_TIMEOUT}s) must exceed "
        f"CELERY_TASK_TIME_LIMIT ({CELERY_TASK_TIME_LIMIT}s)"
    )
BROKER_CONNECT_TIMEOUT_SECONDS = env_float(
    "BROKER_CONNECT_TIMEOUT_SECONDS", 4.0, min_value=0.1, max_value=60
)


def broker_transport_options(broker_url: str) -> dict[str, Any]:
    """Kombu's options for the broker: publisher confirms on RabbitMQ (a send returns
    once the broker has the message, so the outbox marks it sent only then), the
    visibility timeout and socket timeouts on Redis."""
    if is_rabbitmq(broker_url):
        return {"confirm_publish": True, "connect_timeout": BROKER_CONNECT_TIMEOUT_SECONDS}
    return {
        "visibility_timeout": CELERY_VISIBILITY_TIMEOUT,
        "socket_timeout": REDIS_TIMEOUT_SECONDS * 5,
        "socket_connect_timeout": REDIS_TIMEOUT_SECONDS,
    }


CELERY_BROKER_TRANSPORT_OPTIONS = broker_transport_options(CELERY_BROKER_URL)
# A worker whose host vanishes (no TCP reset) is noticed by RabbitMQ after two missed
# heartbeats; its unacknowledged message then goes to another worker.
CELERY_BROKER_HEARTBEAT = env_int("CELERY_BROKER_HEARTBEAT", 30, min_value=0)
CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_VISIBILITY_TIMEOUT}

# --- Services (capabilities) ------------------------------------------------------
MYSPINBOT_DEBUG_SERVICES = env_bool("MYSPINBOT_DEBUG_SERVICES", False)
MYSPINBOT_CAPABILITY_DIRS: list[str] = env_list("MYSPINBOT_CAPABILITY_DIRS", [])
MYSPINBOT_MAX_GRAPH_NODES = env_int(
    "MYSPINBOT_MAX_GRAPH_NODES", 500, min_value=1, max_value=100_000
)

# --- The engine -------------------------------------------------------------------
# A running node writes a heartbeat every third of this; a node silent for longer is
# taken from its (dead) worker and dispatched again as a new attempt.
MYSPINBOT_HEARTBEAT_TIMEOUT = env_float("MYSPINBOT_HEARTBEAT_TIMEOUT", 30.0, min_value=1.0)
MYSPINBOT_SWEEP_INTERVAL = env_float("MYSPINBOT_SWEEP_INTERVAL", 5.0, min_value=0.2)
# A queued node whose message may have been lost (broker restarted without
# persistence) is sent again after this long; a duplicate message is harmless.
MYSPINBOT_REDISPATCH_AFTER = env_float("MYSPINBOT_REDISPATCH_AFTER", 600.0, min_value=5.0)
# A queued node whose message was never handed to the broker (publish failed, the
# process died right after commit) is sent by the sweeper once it is this old.
MYSPINBOT_UNSENT_RESEND_AFTER = env_float("MYSPINBOT_UNSENT_RESEND_AFTER", 5.0, min_value=0.5)
MYSPINBOT_MAX_LOST_ATTEMPTS = env_int("MYSPINBOT_MAX_LOST_ATTEMPTS", 3, min_value=0)
MYSPINBOT_RETRY_BACKOFF = env_float("MYSPINBOT_RETRY_BACKOFF", 1.0, min_value=0.0)
MYSPINBOT_RETRY_BACKOFF_MAX = env_float("MYSPINBOT_RETRY_BACKOFF_MAX", 60.0, min_value=0.0)
MYSPINBOT_CANCEL_GRACE = env_float("MYSPINBOT_CANCEL_GRACE", 10.0, min_value=0.0)
# Seconds between the soft time limit (the handler is asked to stop) and the hard one.
MYSPINBOT_HARD_TIMEOUT_GRACE = env_int("MYSPINBOT_HARD_TIMEOUT_GRACE", 30, min_value=1)
MYSPINBOT_PROGRESS_EVENT_INTERVAL = env_float(
    "MYSPINBOT_PROGRESS_EVENT_INTERVAL", 0.5, min_value=0.0
)

# --- Media services ----------------------------------------------------------------
# Ollama's base URL (e.g. http://127.0.0.1:11434); unset, scripts come from the
# deterministic template writer and say so (provider "template").
MYSPINBOT_LLM_URL = env_url("MYSPINBOT_LLM_URL", None, schemes=("http", "https"))
MYSPINBOT_LLM_MODEL = env_str("MYSPINBOT_LLM_MODEL", "llama3.1:8b")
MYSPINBOT_LLM_TIMEOUT = env_float("MYSPINBOT_LLM_TIMEOUT", 120.0, min_value=1.0)
MYSPINBOT_LLM_MAX_REASKS = env_int("MYSPINBOT_LLM_MAX_REASKS", 2, min_value=0, max_value=10)
# POST /api/plan asks the LLM for a graph: at most this many plans per user per window.
MYSPINBOT_PLANS_PER_WINDOW = env_int("MYSPINBOT_PLANS_PER_WINDOW", 10, min_value=1)
MYSPINBOT_PLAN_WINDOW_SECONDS = env_int("MYSPINBOT_PLAN_WINDOW_SECONDS", 60, min_value=1)
# How many ComfyUI workflows one user may keep as templates.
MYSPINBOT_MAX_WORKFLOW_TEMPLATES = env_int("MYSPINBOT_MAX_WORKFLOW_TEMPLATES", 50, min_value=1)
# ComfyUI servers for comfyui.workflow (comma-separated base URLs); a node runs on the
# one with the shortest queue. Empty: the service fails with comfyui_not_configured.
MYSPINBOT_COMFYUI_URLS = [
    env_url(
        f"MYSPINBOT_COMFYUI_URLS[{i}]",
        schemes=("http", "https"),
        environ={f"MYSPINBOT_COMFYUI_URLS[{i}]": url},
    )
    for i, url in enumerate(env_list("MYSPINBOT_COMFYUI_URLS", []))
]
# Seconds for one HTTP request to a ComfyUI server, and the longest silence on its
# WebSocket while a prompt runs before the server counts as gone.
MYSPINBOT_COMFYUI_TIMEOUT = env_float("MYSPINBOT_COMFYUI_TIMEOUT", 30.0, min_value=0.1)
MYSPINBOT_COMFYUI_SILENCE = env_float("MYSPINBOT_COMFYUI_SILENCE", 600.0, min_value=0.1)
# Voice samples: shortest and longest accepted (seconds of audio).
MYSPINBOT_MIN_VOICE_SECONDS = env_float("MYSPINBOT_MIN_VOICE_SECONDS", 3.0, min_value=0.1)
MYSPINBOT_MAX_VOICE_SECONDS = env_float("MYSPINBOT_MAX_VOICE_SECONDS", 300.0, min_value=1.0)
# Images a composition accepts (pixels on the shorter and longer side).
MYSPINBOT_MAX_IMAGE_SIDE = env_int("MYSPINBOT_MAX_IMAGE_SIDE", 8192, min_value=64)

# --- GPU services (gpu_tasks/) -------------------------------------------------------
# Models are diffusers folders under the model root (or absolute paths), or hub ids
# fetched into the model root where the machine has network and HF_HUB_OFFLINE is false.
# The models of the manifest (myspinbot/models_manifest.json) are fetched and verified by
# `python manage.py models fetch|verify`; until then their pipelines are offered as
# unavailable, with that command.
MYSPINBOT_MODEL_ROOT = Path(env_str("MYSPINBOT_MODEL_ROOT", str(VAR_DIR / "models"))).resolve()
# The talking head's face detector and mesh (.tflite files; see
# apps/capabilities/media/face_models.py); empty: share/myspinbot/face in the Python
# environment, where `make` and the image install them.
MYSPINBOT_FACE_MODEL_DIR = env_str("MYSPINBOT_FACE_MODEL_DIR", "")
# HF_HUB_OFFLINE: nothing is downloaded (`models fetch` refuses and says so; loaders use
# only installed folders). HF_ENDPOINT: the hub (or a mirror) `models fetch` reads.
HF_HUB_OFFLINE = env_bool("HF_HUB_OFFLINE", False)
HF_ENDPOINT = env_str("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
# The model manifest; empty: the one in the repository.
MYSPINBOT_MODEL_MANIFEST = env_str("MYSPINBOT_MODEL_MANIFEST", "")
# The manifest's SD-1.5 (`models fetch sd-1.5` installs it in this folder under the root).
MYSPINBOT_BASE_MODEL = env_str(
    "MYSPINBOT_BASE_MODEL", "stable-diffusion-v1-5/stable-diffusion-v1-5"
)
# AnimateDiff motion adapter and Stable Video Diffusion model; empty: backend unavailable.
MYSPINBOT_MOTION_ADAPTER = env_str("MYSPINBOT_MOTION_ADAPTER", "")
MYSPINBOT_SVD_MODEL = env_str("MYSPINBOT_SVD_MODEL", "")
# The F5-TTS cloning engine of tts.clone (gpu_tasks/cloning.py): a folder under the model
# root holding F5TTS_v1_Base/ (model_*.safetensors, vocab.txt) and vocos-mel-24khz/
# (config.yaml, pytorch_model.bin); absent: no cloning engine, tts.speak on the CPU.
MYSPINBOT_F5_TTS_MODEL = env_str("MYSPINBOT_F5_TTS_MODEL", "f5-tts")
# Flow-matching steps per sentence (F5-TTS's own default is 32).
MYSPINBOT_F5_TTS_STEPS = env_int("MYSPINBOT_F5_TTS_STEPS", 32, min_value=1)
# Bytes of loaded models a GPU worker keeps; 0: 80 % of the device's memory.
MYSPINBOT_MODEL_CACHE_BYTES = env_int("MYSPINBOT_MODEL_CACHE_BYTES", 0, min_value=0)

# --- API limits ---------------------------------------------------------------------
MYSPINBOT_MAX_JOBS_IN_FLIGHT = env_int("MYSPINBOT_MAX_JOBS_IN_FLIGHT", 20, min_value=1)
MYSPINBOT_SUBMISSIONS_PER_MINUTE = env_int("MYSPINBOT_SUBMISSIONS_PER_MINUTE", 60, min_value=1)
# Per-user quotas (apps.jobs.quotas); 0 turns one off. Storage counts every artifact a
# user owns (uploads and results); GPU-seconds count the last 24 hours of gpu-queue runs.
MYSPINBOT_QUOTA_STORAGE_BYTES = env_int("MYSPINBOT_QUOTA_STORAGE_BYTES", 20 * 1024**3, min_value=0)
MYSPINBOT_QUOTA_GPU_SECONDS_PER_DAY = env_int(
    "MYSPINBOT_QUOTA_GPU_SECONDS_PER_DAY", 4 * 3600, min_value=0
)
MYSPINBOT_MAX_GPU_NODES_PER_JOB = env_int("MYSPINBOT_MAX_GPU_NODES_PER_JOB", 16, min_value=0)
# Uploads no job has named for this many days (and no profile holds) are deleted.
MYSPINBOT_UPLOAD_EXPIRE_DAYS = env_int("MYSPINBOT_UPLOAD_EXPIRE_DAYS", 30, min_value=0)
# How often a worker's sweeper looks for expired uploads, in seconds.
MYSPINBOT_UPLOAD_EXPIRE_EVERY = env_float("MYSPINBOT_UPLOAD_EXPIRE_EVERY", 3600.0, min_value=1.0)
# Upload kinds: the content types sniffed from the bytes that each accepts, and its size cap.
MYSPINBOT_UPLOAD_KINDS: dict[str, dict[str, Any]] = {
    "image": {
        "types": ["image/png", "image/jpeg", "image/webp"],
        "max_bytes": env_int("MYSPINBOT_MAX_IMAGE_BYTES", 20 * 1024 * 1024, min_value=1),
    },
    "audio": {
        # (browsers record voice as WebM with Opus; filetype calls any WebM video/webm)
        "types": [
            "audio/x-wav",
            "audio/mpeg",
            "audio/x-flac",
            "audio/ogg",
            "audio/mp4",
            "video/webm",
        ],
        "max_bytes": env_int("MYSPINBOT_MAX_AUDIO_BYTES", 50 * 1024 * 1024, min_value=1),
    },
}
# Request bodies, counted by the ASGI app before Django spools them (myspinbot/
# request_limits.py): the upload routes may carry one image and one audio file plus the
# multipart framing; every other route takes JSON or a small form.
MYSPINBOT_MAX_UPLOAD_BYTES = env_int(
    "MYSPINBOT_MAX_UPLOAD_BYTES",
    MYSPINBOT_UPLOAD_KINDS["image"]["max_bytes"]
    + MYSPINBOT_UPLOAD_KINDS["audio"]["max_bytes"]
    + 1024 * 1024,
    min_value=1024,
)
MYSPINBOT_MAX_JSON_BYTES = env_int("MYSPINBOT_MAX_JSON_BYTES", 1024 * 1024, min_value=1024)
# Images are decoded to check them; this many pixels at most (decompression bombs).
MYSPINBOT_MAX_IMAGE_PIXELS = env_int("MYSPINBOT_MAX_IMAGE_PIXELS", 40_000_000, min_value=1)
# Audio anyone supplied (apps/capabilities/media/probe.py): at most this long, and at most
# this many samples (seconds x rate x channels), checked from the header and again while
# decoding; opening (and each read) and decoding each have a wall-clock limit.
MYSPINBOT_MAX_AUDIO_SECONDS = env_float("MYSPINBOT_MAX_AUDIO_SECONDS", 600.0, min_value=1.0)
MYSPINBOT_MAX_AUDIO_SAMPLES = env_int("MYSPINBOT_MAX_AUDIO_SAMPLES", 600 * 48_000 * 2, min_value=1)
MYSPINBOT_MEDIA_OPEN_SECONDS = env_float("MYSPINBOT_MEDIA_OPEN_SECONDS", 5.0, min_value=0.1)
MYSPINBOT_MEDIA_DECODE_SECONDS = env_float("MYSPINBOT_MEDIA_DECODE_SECONDS", 120.0, min_value=0.1)
MYSPINBOT_WS_PING_INTERVAL = env_float("MYSPINBOT_WS_PING_INTERVAL", 20.0, min_value=0.1)
# An open WebSocket checks its token or session again this often (s), besides on every
# subscribe and at once when a revocation, deactivation or logout is announced.
MYSPINBOT_WS_AUTH_RECHECK = env_float("MYSPINBOT_WS_AUTH_RECHECK", 5.0, min_value=0.1)
# Failed sign-ins (web and admin forms) per client address and per user name within the
# window; past it, sign-in posts are answered 429 until the window ends.
MYSPINBOT_SIGNIN_MAX_FAILURES = env_int("MYSPINBOT_SIGNIN_MAX_FAILURES", 10, min_value=1)
MYSPINBOT_SIGNIN_WINDOW_SECONDS = env_int("MYSPINBOT_SIGNIN_WINDOW_SECONDS", 900, min_value=1)
# Flash messages live in the session (server side), never in a cookie: the admin's
# message with a new token's clear text must not travel in the browser's cookies.
MESSAGE_STORAGE = "django.contrib.messages.storage.session.SessionStorage"
# Open WebSockets per user, across the web processes; one more is closed with 4429.
MYSPINBOT_WS_MAX_PER_USER = env_int("MYSPINBOT_WS_MAX_PER_USER", 20, min_value=1)
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int(
    "DATA_UPLOAD_MAX_MEMORY_SIZE", 5 * 1024 * 1024, min_value=1024
)

# --- Metrics and operations ---------------------------------------------------------
# /metrics (web) and each worker's exporter answer these networks, or a bearer token.
METRICS_ALLOWED_NETWORKS = env_list("METRICS_ALLOWED_NETWORKS", ["127.0.0.0/8", "::1/128"])
for _network in METRICS_ALLOWED_NETWORKS:
    try:
        ipaddress.ip_network(_network, strict=False)
    except ValueError:
        raise ImproperlyConfigured(
            f"METRICS_ALLOWED_NETWORKS: {_network!r} is not a network (e.g. 10.0.0.0/8)"
        ) from None
METRICS_TOKEN = env_str("METRICS_TOKEN", "")
# A worker serves its metrics on this port (0: it does not); see myspinbot.metrics.
MYSPINBOT_WORKER_METRICS_PORT = env_int(
    "MYSPINBOT_WORKER_METRICS_PORT", 0, min_value=0, max_value=65535
)
MYSPINBOT_WORKER_METRICS_ADDR = env_str("MYSPINBOT_WORKER_METRICS_ADDR", "127.0.0.1")
FLOWER_URL = env_str("FLOWER_URL", "http://127.0.0.1:5555/")

# --- Auth, i18n, static ----------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
# The web UI's front-end packages, installed from package-lock.json by `npm ci`.
STATICFILES_DIRS = [
    ("vendor/htmx", BASE_DIR / "node_modules" / "htmx.org" / "dist"),
    ("vendor/dagre", BASE_DIR / "node_modules" / "@dagrejs" / "dagre" / "dist"),
]
# WhiteNoise (apps.web.static_files) serves static files in every process, uvicorn too,
# straight from the app and package folders, so `make run` needs no collectstatic.
WHITENOISE_USE_FINDERS = True
LOGIN_URL = "web:login"
LOGIN_REDIRECT_URL = "web:jobs"
LOGOUT_REDIRECT_URL = "web:login"

# --- Logging: Django owns it; Celery workers use the same configuration -----------
LOG_LEVEL = env_str("LOG_LEVEL", "INFO").upper()
if LOG_LEVEL not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
    raise ImproperlyConfigured(f"LOG_LEVEL={LOG_LEVEL!r} is not a logging level")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django": {"level": LOG_LEVEL, "propagate": True},
        "celery": {"level": LOG_LEVEL, "propagate": True},
        "botocore": {"level": "WARNING"},
        "urllib3": {"level": "WARNING"},
    },
}
