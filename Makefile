# Few-shot keyword spotting: every workflow is one target. `make help` lists them.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
QUICK ?=
CONFIG := $(if $(QUICK),configs/quick.toml,configs/default.toml)
RUN := $(if $(QUICK),runs/quick,runs/default)
MODEL_OUT := $(if $(QUICK),build/quick/encoder.tflite,firmware_models/encoder.tflite)
SYNTH_OUT := $(if $(QUICK),data_cache/synth_quick,data_cache/synth)
SYNTH_ARGS := $(if $(QUICK),--quick,)
KOKORO_OUT := $(if $(QUICK),data_cache/kokoro_speech_quick,data_cache/kokoro_speech)

.PHONY: help install install-system install-device test lint format data voices train export export-second-cycle export-third-cycle install-peer install-localwake baselines baseline-classification ablation eval bench demo pi-check crash-test

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-20s %s\n", $$1, $$2}'
	@echo "  QUICK=1 makes data/train/export a minutes-long smoke run (build/quick/, not firmware_models/)"

STAMP := $(VENV)/.installed

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: install-system $(STAMP) ## everything: apt packages, then .venv with runtime, trainer and dev tools

install-system: ## apt packages: PortAudio, offline TTS voices, qemu (only what is missing; root or sudo)
	bash scripts/install_system.sh

install-device: ## a device-only venv (no TensorFlow), as on a Raspberry Pi (DEVICE_ARGS='--venv DIR ...')
	bash scripts/install_device.sh $(DEVICE_ARGS)

lint: $(STAMP) ## ruff lint + format check
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(STAMP) ## apply ruff fixes and formatting
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

test: install lint ## install what is missing, lint, then the whole test suite
	$(PY) -m pytest -q

data: $(STAMP) ## speak the training vocabulary with every installed TTS voice, then the neural voices (cached)
	bash scripts/install_tts.sh
	$(PY) -m trainer.synth --out $(SYNTH_OUT) $(SYNTH_ARGS)
	$(if $(QUICK),,$(MAKE) voices)

voices: $(STAMP) ## neural voices: Kokoro-82M blends speak the synth vocabulary (~35 min on 2 idle cores; cached)
	bash scripts/install_kokoro.sh
	$(PY) -m trainer.kokoro_voices --out $(KOKORO_OUT) $(SYNTH_ARGS)

train: ## meta-train the encoder (resumes from the run folder)
	$(PY) -m trainer.cli train --config $(CONFIG) --run $(RUN)

export: ## train (resuming) and export the int8 encoder + manifest (QUICK=1: smoke run)
	$(if $(QUICK),$(MAKE) data QUICK=1,)
	$(PY) -m trainer.cli all --config $(CONFIG) --run $(RUN) --out $(MODEL_OUT)

export-second-cycle: ## after `make export`: one more training session from its weights (warm restart, 85 min), exported over it
	$(PY) -m trainer.cli all --config configs/second_cycle.toml --run runs/second_cycle --out firmware_models/encoder.tflite

export-third-cycle: ## after `make export-second-cycle`: a third session from its weights (warm restart, 80 min), exported over it
	$(PY) -m trainer.cli all --config configs/third_cycle.toml --run runs/third_cycle --out firmware_models/encoder.tflite

install-peer: ## EfficientWord-Net (the peer baseline) in .eval_venvs/efficientword; apt portaudio19-dev (root or sudo)
	bash scripts/install_peer.sh

install-localwake: ## local-wake (speech embedding + DTW baseline) in .eval_venvs/localwake: torch==2.13.0 (CPU) first, then local-wake==0.1.2
	bash scripts/install_localwake.sh

baselines: ## export the random-weights baseline encoder (same architecture, untrained) for `make eval`
	$(PY) -m trainer.cli export --random-weights --config $(CONFIG) --run $(RUN) --out build/baselines/random/encoder.tflite

baseline-classification: ## train + export the plain-classification baseline (same data and time as the default)
	$(PY) -m trainer.cli all --config configs/classification.toml --run runs/classification \
		--out build/baselines/classification/encoder.tflite

ABLATION_ROWS := $(sort $(basename $(notdir $(wildcard configs/ablation/[0-9]*.toml))))
ABLATION_MODELS := $(foreach row,$(ABLATION_ROWS),build/ablation/$(row)/encoder.tflite)
build/ablation/%/encoder.tflite: configs/ablation/%.toml configs/ablation/_short.toml
	$(PY) -m trainer.cli all --config $< --run runs/ablation/$* --out $@

ablation: $(ABLATION_MODELS) ## train the ablation rows (configs/ablation, 1200 episodes each; ~8 min a row) and compare them with the shipped encoder and the teacher
	$(PY) -m trainer.evaluation all --negative-minutes 0 --model firmware_models/encoder.tflite --results docs/ablation \
		--write-benchmarks $(foreach row,$(ABLATION_ROWS),--also $(row)=build/ablation/$(row)/encoder.tflite)

eval: ## few-shot and streaming evaluation vs baselines; updates BENCHMARKS.md
	$(PY) -m trainer.evaluation all --model firmware_models/encoder.tflite --results docs/eval --write-benchmarks --update-model-card \
		$(if $(wildcard build/baselines/random/encoder.tflite),--also random-weights=build/baselines/random/encoder.tflite,) \
		$(if $(wildcard build/baselines/classification/encoder.tflite),--also classification=build/baselines/classification/encoder.tflite,)

bench: ## speed, memory, size and latency benchmarks; updates BENCHMARKS.md
	$(PY) -m trainer.bench --model firmware_models/encoder.tflite --write-benchmarks

pi-check: ## prove the device runtime on emulated Pi CPUs (qemu, aarch64) gives x86's answers
	$(PY) scripts/pi_check.py

crash-test: $(STAMP) ## SIGKILL a process enrolling/adding/removing/re-embedding 300 times; check the keyword store (~3 min)
	$(PY) scripts/crash_test.py --kills 300

demo: install ## enroll a wake word from a few takes and detect it in a noisy stream
	$(PY) scripts/demo.py
