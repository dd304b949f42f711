# clara-wf: one-command set-up, demo and tests on a fresh machine.
#   make setup   create .venv, install the project and its tools (helm, kubectl; bubblewrap, podman,
#                mmdebstrap, dcmtk, orthanc and dicom3tools from Debian when root); fast when done
#   make demo    setup, then run the main job (clara-wf test ct: DICOM in, DICOM SEG out, PNG overlays)
#   make test    setup, then the whole suite (chart and CLI tests again under the other Helm major)
# HELM_MAJOR=3 selects Helm v3.19.0 instead of the default v4.1.4.

PYTHON ?= python3
VENV := .venv
HELM_MAJOR ?= 4
OTHER_MAJOR := $(if $(filter 3,$(HELM_MAJOR)),4,3)
STAMP := $(VENV)/.installed-stamp

.PHONY: setup demo test bench clean

setup: $(STAMP)
	@$(VENV)/bin/python tools/install_tools.py --major $(HELM_MAJOR)
	@sh tools/install_bwrap.sh
	@sh tools/install_podman.sh
	@sh tools/install_dicom_tools.sh
	@$(VENV)/bin/python tools/stage_envs.py

# Reinstall only when the project's requirements change.
$(STAMP): pyproject.toml
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e '.[test,local,dicom]'
	@touch $@

# The main job, DICOM in -> DICOM out: the guide's `ct` workflow on the phantom CT series
# (dicom-reader -> recon -> ai-vnet on a local Triton -> dicom-writer), then a picture of each SEG.
demo: setup
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/clara-wf test ct
	$(VENV)/bin/python tools/seg_overlay.py

test: setup
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/python -m pytest -q
	@echo "--- chart and CLI tests again under Helm $(OTHER_MAJOR)"
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" CLARA_WF_HELM="$(CURDIR)/$(VENV)/tools/helm-v$(OTHER_MAJOR)/helm" \
		$(VENV)/bin/python -m pytest -q -m helm

bench: setup
	@for b in bench/cli_latency bench/handoff bench/local_run bench/render_scale bench/dicom_adapter; do \
		echo "== $$b"; $(VENV)/bin/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .clara-wf
