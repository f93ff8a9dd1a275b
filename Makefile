# The few commands a person types. Everything installs into .venv; nothing global.
VENV ?= .venv
PYTHON ?= python3.11
BIN := $(VENV)/bin
# torch is pinned: 2.13.0 is a local CPU wheel on these machines; anything else pulls GBs of CUDA.
TORCH_PIN := torch==2.13.0
DEFAULT_BUNDLE := models/digits-vae/1

.PHONY: setup browser-deps java-deps bench-tools test lint docs docs-serve docs-check check train serve image smoke clean help bench bench-peers bench-choices bench-score profile soak quality k8s-validate replicas-smoke

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(BIN)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_PIN)"
	$(BIN)/python -m pip install --quiet -e ".[train,serve,score,spark,dev,deploy]"
	touch $@

setup: $(BIN)/.installed  ## create .venv with training, serving and test dependencies

test: setup browser-deps java-deps bench-tools  ## run the whole test suite
	$(BIN)/pytest

bench-tools:  ## Debian's h2load (nghttp2-client) and libb64: the gRPC bench's clients, and h2load for the test that leaves gRPC streams as a load generator does; valgrind for bench.monitor_instructions (installs only when missing)
	scripts/bench-tools.sh

java-deps:  ## Debian's Java 17 for Spark's local mode in the batch-scoring tests (installs only when missing)
	scripts/java-deps.sh

browser-deps:  ## Debian's chromium for the web page's browser test (installs only when missing; needs root or sudo)
	scripts/browser-deps.sh

lint: setup  ## ruff and mypy, as CI runs them
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy bundle training service batch_scoring tests scripts docker bench

docs: setup  ## build the documentation site (docs/, MkDocs) into site/; a broken link fails it (CI runs it)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

docs-serve: setup  ## serve the documentation site on http://127.0.0.1:8002 while you edit it (8001 is gRPC's)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --dev-addr 127.0.0.1:8002

docs-check: setup  ## run every example in README.md and docs/ against a real server, as a reader would (CI runs it)
	$(BIN)/python scripts/check_docs.py

check: test lint  ## everything CI runs

train: setup  ## (re)train the default bundle on digits; writes $(DEFAULT_BUNDLE)
	$(BIN)/vae-train --dataset digits --out $(DEFAULT_BUNDLE) --overwrite

$(DEFAULT_BUNDLE)/model.json:
	$(MAKE) train

serve: setup $(DEFAULT_BUNDLE)/model.json  ## serve models/ on http://127.0.0.1:8000 (trains the default bundle if missing)
	$(BIN)/vae-serve --model-repository models --host 127.0.0.1 --port 8000

image:  ## build the serving image vae-service:latest (docker, else podman)
	engine=$$(scripts/container-engine.sh); test -n "$$engine" || { echo "no container engine" >&2; exit 1; }; \
	  $$engine build --target serve -t vae-service:latest .

smoke:  ## build the image, run it and call every endpoint; then the same through compose, then as replicas
	scripts/container-smoke.sh
	scripts/compose-smoke.sh
	scripts/replicas-smoke.sh

k8s-validate: setup  ## render deploy/k8s (base, overlays) with kubectl kustomize; validate strictly against the Kubernetes schemas and our invariants
	$(BIN)/python scripts/k8s_validate.py

replicas-smoke:  ## 3 replicas behind nginx (compose, 127.0.0.1:18082 or a free port): spread, a SIGKILL and a graceful stop under load, 0 failed requests (~1.5 min)
	scripts/replicas-smoke.sh

clean:  ## remove caches (keeps .venv and models/)
	rm -rf .pytest_cache .mypy_cache .ruff_cache build *.egg-info

bench: setup bench-tools  ## benchmark vae-serve vs KServe, MLServer, Triton, BentoML, Ray Serve, FastAPI and the ceilings, then gRPC vs Triton's (~30 min; the peers' venvs are built on first use); writes bench/RESULTS.md and bench/GRPC.md
	$(BIN)/python -m bench.http_bench
	$(BIN)/python -m bench.grpc_bench

bench-peers: setup  ## build (or check) each peer's own pinned venv under bench/out/venvs/, as make bench does on first use
	$(BIN)/python -m bench.peers.venvs

bench-choices: setup  ## measure each serving default against its alternative (~2 min); writes bench/CHOICES.md
	$(BIN)/python -m bench.choices

bench-score: setup  ## vae-score on 10M generated rows against in-process onnxruntime and vae-serve (~4 min); figures for bench/BATCH_SCORING.md
	$(BIN)/python -m bench.score_offline

profile: setup  ## where a JSON request's time goes, in-process (pyinstrument); writes bench/PROFILE.md
	$(BIN)/python -m bench.profile_paths

SOAK_SECONDS ?= 120
SOAK_ARGS ?=
soak: setup  ## SOAK_SECONDS (120) of mixed valid, invalid and hostile requests, slow clients beside, against vae-serve; fails on a 5xx, a dropped request, a lost worker or growing RSS; writes bench/SOAK.md
	$(BIN)/python -m bench.soak --seconds $(SOAK_SECONDS) $(SOAK_ARGS)

QUALITY_ARGS ?=
quality: setup  ## our default models vs PyOD's detectors and the classic VAE on scikit-learn data and mnist-5k, seeds 0-2 (~1.5-2.5 h on 2 cores, about half of it mnist; QUALITY_ARGS='--tasks tables|digits|mnist' runs a part); writes bench/QUALITY.md; fails on a missed target
	$(BIN)/python -m pip install --quiet -e ".[quality]"
	$(BIN)/python -m bench.quality $(QUALITY_ARGS)
