# The README's two set-up commands live here: `make demo` and `make test`.
# Both create (or reuse) the virtual environment in .venv and install what they need.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
OUT ?= robaudit-demo
STAMP := $(VENV)/.robaudit-installed

.PHONY: demo test test-slow venv wheel-check lint

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch/torchvision as described in the developers' guide (taken from local disk where available)
	$(PIP) install -q torch==2.14.1 torchvision==0.29.1
	$(PIP) install -q -e '.[test]'
	# test-only reference tools whose pins would downgrade other packages: installed without their deps
	$(PIP) install -q --no-deps torchattacks==3.5.1 imagecorruptions==1.1.2
	touch $(STAMP)

demo: venv
	$(VENV)/bin/robaudit demo --out $(OUT)

test: venv
	command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium) || echo "chromium unavailable: browser tests will skip"
	$(PY) -m pytest -q
	$(MAKE) wheel-check

# Long checks (full ONNX exporter matrix, paper-grade budgets): `make test-slow`.
test-slow: venv
	$(PY) -m pytest -q -m slow

# Build the wheel, install it into a clean virtual environment and import every package.
wheel-check: venv
	rm -rf build dist /tmp/robaudit-wheel-venv
	$(PIP) wheel -q --no-deps --no-build-isolation . -w dist
	$(PYTHON) -m venv /tmp/robaudit-wheel-venv
	/tmp/robaudit-wheel-venv/bin/pip install -q --no-deps dist/robaudit-*.whl
	# dependencies come from .venv (path only: its editable robaudit finder is not activated)
	$(PY) -c "import site; print(site.getsitepackages()[0])" > $$(/tmp/robaudit-wheel-venv/bin/python -c "import site; print(site.getsitepackages()[0])")/deps.pth
	cd /tmp && /tmp/robaudit-wheel-venv/bin/python -c "import robaudit, robaudit.attacks, robaudit.certify, robaudit.reports, robaudit.cli; assert '/tmp/robaudit-wheel-venv/' in robaudit.attacks.__file__, robaudit.attacks.__file__; print('wheel OK:', robaudit.__version__, robaudit.attacks.__file__)"
	cd /tmp && /tmp/robaudit-wheel-venv/bin/robaudit --version

lint: venv
	$(VENV)/bin/ruff check robaudit attacks certify reports tests
