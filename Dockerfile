# syntax=docker/dockerfile:1
# Two images from one file:
#   serve (default, last stage): service/ + bundle/ + onnxruntime and the web stack; no torch,
#          no compilers; the default bundle baked in at /models, a mounted repository replaces it.
#   train: vae-train with torch 2.13.0 (CPU), for deploy/compose/docker-compose.train.yml.

# ---------------------------------------------------------------------------------------------
FROM python:3.11-slim AS serve-deps
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /build
COPY pyproject.toml docker/serve-requirements.py ./
# Wheels only: the final stage has no compiler, so nothing may need one.
RUN python -m venv /opt/venv \
 && python serve-requirements.py pyproject.toml > requirements.txt \
 && /opt/venv/bin/pip install --only-binary=:all: -r requirements.txt \
 && /opt/venv/bin/pip uninstall --yes pip setuptools  # installers are not needed at run time

# ---------------------------------------------------------------------------------------------
FROM python:3.11-slim AS train
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
# The CPU wheel of torch: from PyTorch's CPU index, or a local wheel folder mounted at build
# time (`--build-arg TORCH_FIND_LINKS=/wheels` with the folder mounted there).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_FIND_LINKS=""
WORKDIR /app
COPY pyproject.toml README.md ./
COPY bundle ./bundle
COPY service ./service
COPY training ./training
RUN python -m venv /opt/venv \
 && if [ -n "$TORCH_FIND_LINKS" ]; then \
      /opt/venv/bin/pip install --find-links "$TORCH_FIND_LINKS" "torch==2.13.0"; \
    else \
      /opt/venv/bin/pip install --index-url "$TORCH_INDEX_URL" "torch==2.13.0"; \
    fi \
 && /opt/venv/bin/pip install ".[train]" \
 && useradd --create-home --uid 10001 trainer
ENV PATH=/opt/venv/bin:$PATH
USER trainer
ENTRYPOINT ["vae-train"]
CMD ["--help"]

# ---------------------------------------------------------------------------------------------
FROM python:3.11-slim AS serve
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    VAE_MODEL_REPOSITORY=/models \
    VAE_HOST=0.0.0.0 \
    VAE_PORT=8000
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin vae
COPY --from=serve-deps /opt/venv /opt/venv
WORKDIR /app
COPY bundle ./bundle
COPY service ./service
COPY models/digits-vae /models/digits-vae
USER vae
# HTTP, and the Open Inference Protocol over gRPC (VAE_GRPC_PORT; 0 turns it off)
EXPOSE 8000 8001
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-m", "service.server.healthcheck", "/healthz"]
# Exec form: python is PID 1 and receives SIGTERM, so uvicorn drains and exits cleanly.
CMD ["python", "-m", "service.server.cli"]
