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
	$(PY) -m pip install -e '.[dev,prep,explain,export]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

# The tests that need no training run and no extra processes: under a minute.
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow and not distributed" tests

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

# Synthetic data -> its check (stabn-check) -> ST-ABN trained with torchrun (2 CPU
# processes, or one per GPU) -> evaluation with attention images and explanation metrics, all
# under runs/quickstart/.
QUICKSTART_EVAL := eval.num_clips=2 eval.num_crops=3 eval.save_attention=true eval.explain_metrics=true

.PHONY: quickstart
quickstart: $(STAMP)
	test -f data/synthetic/ground_truth.json || $(VENV)/bin/stabn-synthetic --out data/synthetic
	$(VENV)/bin/stabn-check --config configs/synthetic.yaml
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

# The explanation benchmark at a fair scale (docs/EXPLANATIONS.md): synthetic data at 128 px
# (seed 1: no option was tuned on it), then, each on 2 CPU processes or one per GPU, the
# ST-ABN of configs/synthetic_explain.yaml, the original ST-ABN and a 3D ResNet-18 on the same
# data, then every explainer on the same 200 validation clips, and a picture of one clip.
# About 60 to 75 minutes on 2 CPU cores (three trainings of 13 to 16 minutes each, the benchmark 16 to 36).
# Trained models are reused when their checkpoint exists.
EXPLAIN_DATA := data/synthetic128
EXPLAIN_RUNS := runs/explain
EXPLAIN_TRAIN := $(PY) -m torch.distributed.run --standalone \
    --nproc_per_node=$$($(PY) -c "import torch; print(torch.cuda.device_count() or 2)") \
    train_ddp.py --config configs/synthetic_explain.yaml
# The original architecture and loss, everything else as in synthetic_explain.yaml.
EXPLAIN_ORIGINAL := model.attention.spatial_gate=residual model.attention.fusion=concat \
    model.attention.norm=none model.attention.temporal=mlp train.spatial_sparsity=0 train.temporal_sparsity=0

.PHONY: explain-benchmark
explain-benchmark: $(STAMP)
	test -f $(EXPLAIN_DATA)/ground_truth.json || $(VENV)/bin/stabn-synthetic --out $(EXPLAIN_DATA) --size 128 --seed 1
	test -f $(EXPLAIN_RUNS)/stabn/checkpoint-final.pt || $(EXPLAIN_TRAIN) logdir=$(EXPLAIN_RUNS)/stabn
	test -f $(EXPLAIN_RUNS)/original/checkpoint-final.pt || \
	    $(EXPLAIN_TRAIN) logdir=$(EXPLAIN_RUNS)/original $(EXPLAIN_ORIGINAL)
	test -f $(EXPLAIN_RUNS)/resnet18/checkpoint-final.pt || \
	    $(EXPLAIN_TRAIN) logdir=$(EXPLAIN_RUNS)/resnet18 model.name=resnet18 $(EXPLAIN_ORIGINAL)
	$(VENV)/bin/stabn-bench explain --checkpoint $(EXPLAIN_RUNS)/stabn/checkpoint-final.pt \
	    --reference-checkpoint $(EXPLAIN_RUNS)/original/checkpoint-final.pt \
	    --baseline-checkpoint $(EXPLAIN_RUNS)/resnet18/checkpoint-final.pt \
	    --data $(EXPLAIN_DATA) --steps 8 --out $(EXPLAIN_RUNS)/benchmark --pictures 4 \
	    --picture-explainers stabn_attention,reference_stabn_attention,gradcam_layer3,baseline_gradcam_layer3
	@echo "Tables: $(EXPLAIN_RUNS)/benchmark/explain.md; pictures: $(EXPLAIN_RUNS)/benchmark/pictures/"
