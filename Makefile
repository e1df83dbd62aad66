# Two commands for readers: `make reproduce` (every notebook, default profile) and `make test`.
# Both create .venv on first use and install the pinned environment (requirements.lock).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROFILE ?= toy

.PHONY: env reproduce rehearsal test test-slow lint clean-build

env: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "== installing the pinned environment into $(VENV) (requirements.lock)"
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(PY) -c "from cff_lib.torchvision_cpu_fix import install_pth; print('== wrote', install_pth())"
	$(PY) -m ipykernel install --sys-prefix --name cff --display-name "cff (.venv)" >/dev/null
	$(PY) -c "import cff_lib, open_clip, lpips, torchmetrics, diffusers, transformers, insightface; print('== environment ok')"
	@touch $@

reproduce: env
	@case "$(PROFILE)" in *rehearsal*) $(PY) -m cff_lib.cli rehearse build --profile $(PROFILE);; esac
	$(PY) -m cff_lib.cli weights verify --profile $(PROFILE)
	$(PY) -m cff_lib.cli reproduce --profile $(PROFILE)

# the paper world in miniature (random weights of the true architectures; build/rehearsal/, docs/paper_world.md)
rehearsal: env
	$(PY) -m cff_lib.cli rehearse build --profile paper_rehearsal

test: env
	$(PY) -m cff_lib.cli weights verify --profile toy
	$(PY) -m pytest

test-slow: env
	$(PY) -m pytest -m slow

lint: env
	$(VENV)/bin/ruff check .

clean-build:
	rm -rf build/
