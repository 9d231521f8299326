# Two commands: `make demo` (the main job) and `make test` (the test suite).
# Both create or reuse .venv and install what they need.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONUNBUFFERED := 1

DEMO := runs/demo
DEMO_SIZE := 64

.PHONY: install demo android-assets arm64-runtime test test-large clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,jax]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m kerasseg.train --model unet_edge --model-args '{"base_filters": 12}' --dataset shapes \
		--image-size $(DEMO_SIZE) --batch-size 16 --epochs 5 --lr 5e-3 --loss ce+dice --augment flip --seed 0 --output $(DEMO) --overwrite
	$(PY) -m export.tflite $(DEMO)/model.keras --quantize int8 --output $(DEMO)/unet_edge_int8.tflite --latency
	$(PY) -m export.tflite $(DEMO)/model.keras --quantize float16 --output $(DEMO)/unet_edge_float16.tflite --latency
	$(PY) -m export.onnx $(DEMO)/model.keras --output $(DEMO)/unet_edge.onnx --latency
	$(PY) -m export.android $(DEMO)/model.keras --output $(DEMO)/android --latency
	$(PY) -m export.summary $(DEMO) --min-miou 0.90 --min-int8-agreement 0.99

# the committed Android / Coral bundle, regenerated from the demo run (make demo first)
android-assets: $(STAMP)
	$(PY) -m export.android $(DEMO)/model.keras --output android_demo_assets --latency

# the aarch64 LiteRT under qemu-user for `export.agreement --target arm64` (needs Debian's qemu-user), kept in
# ~/.cache/kerasseg/arm64 (KERASSEG_ARM64): fetched once, offline afterwards
arm64-runtime: $(STAMP)
	$(PY) -m export.arm64

# two test processes (pytest-xdist), one per core of CI's two: much of a test's time is one thread
# (Python, tracing, conversion, a subprocess starting), so two at once finish sooner than one after another.
# make test: every feature, under 25 minutes on CI's 2 cores; make test-large: the slow end-to-end cases marked
# `large` (kills, locks, a full disk, two workers, full-size and third-party models, a 24 MP photo, the wider
# matrices) and the classifiers on JAX. CI (.ci/run) runs both.
PYTEST := $(PY) -m pytest -q -n 2 --dist worksteal
test: $(STAMP)
	$(PYTEST) -m "not large" --durations=30 tests
	@echo "--- the segmenters again on the JAX backend, and exporting from it ---"
	KERAS_BACKEND=jax $(PYTEST) -m "not large" --durations=10 tests/test_models.py tests/test_backends.py \
		"tests/test_streaming.py::test_kerasseg_data_dataset_gives_the_runs_pixels_and_model_fit_learns_from_it"

test-large: $(STAMP)
	$(PYTEST) -m large --durations=20 tests
	@echo "--- the classifiers on the JAX backend ---"
	KERAS_BACKEND=jax $(PYTEST) --durations=10 tests/test_classifiers.py

clean:
	rm -rf runs .pytest_cache
