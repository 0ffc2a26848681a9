# `make test` and `make quickstart` work on a fresh clone: the virtual environment is
# created on first use and refreshed when setup.py changes.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.stabn-installed

.PHONY: test test-fast lint venv

venv: $(STAMP)

$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -e '.[dev,prep,explain]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

# The tests that need no training run and no extra processes: under a minute.
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow and not distributed" tests

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

# Synthetic data -> ST-ABN trained with torchrun (2 CPU processes, or one per GPU) ->
# evaluation with attention images and explanation metrics, all under runs/quickstart/.
QUICKSTART_EVAL := eval.num_clips=2 eval.num_crops=3 eval.save_attention=true eval.explain_metrics=true

.PHONY: quickstart
quickstart: $(STAMP)
	test -f data/synthetic/ground_truth.json || $(PY) -m stabn.data.synthetic --out data/synthetic
	$(PY) -m torch.distributed.run --standalone \
	    --nproc_per_node=$$($(PY) -c "import torch; print(torch.cuda.device_count() or 2)") \
	    train_ddp.py --config configs/synthetic.yaml
	$(PY) eval.py --logdir runs/quickstart $(QUICKSTART_EVAL)
	@echo
	@echo "Quick start done. In runs/quickstart/:"
	@echo "  checkpoint-best.pt, checkpoint-final.pt   trained ST-ABN (stabn.load_pretrained)"
	@echo "  config.yaml, args.json, history.json       resolved config and per-epoch figures"
	@echo "  eval/results.json                          Top-1/Top-5 of both branches, explanation metrics"
	@echo "  eval/per_class.csv, eval/confusion.png     per-class accuracy, confusion matrix"
	@echo "  eval/attention/*.png                       attention images"
	@echo "TensorBoard: $(PY) -m tensorboard.main --logdir runs/quickstart"
