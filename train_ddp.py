"""Distributed training under torchrun: one process per GPU (or CPU process with Gloo).

torchrun --nproc_per_node=8 train_ddp.py --config configs/ssv2/abn_resnet50.yaml [key=value ...]
"""

from stabn.commands.train import main as train_main

if __name__ == "__main__":
    train_main("ddp")
