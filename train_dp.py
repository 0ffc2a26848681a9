"""Single-process training: DataParallel over the visible GPUs, or the CPU.

python train_dp.py --config configs/ssv2/abn_resnet50.yaml [key=value ...]
"""

from stabn.commands.train import main as train_main

if __name__ == "__main__":
    train_main("dp")
