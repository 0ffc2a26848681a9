"""Evaluate a checkpoint (one process, or under torchrun):

python eval.py --logdir runs/quickstart eval.num_clips=2 eval.num_crops=3 eval.save_attention=true
"""

from stabn.commands.eval import main as eval_main

if __name__ == "__main__":
    eval_main()
