"""What a notebook does with a trained model: predictions and attention overlays.

make quickstart                       # trains runs/quickstart/ on data/synthetic
.venv/bin/python examples/notebook.py  # writes examples_output/
"""

from pathlib import Path

import stabn

run, data = Path("runs/quickstart"), Path("data/synthetic")
model = stabn.load_pretrained(run / "checkpoint-best.pt")
names = (data / "classes.txt").read_text().splitlines()
video = data / "frames" / "000801"  # the first validation video

prediction = stabn.predict(model, video, topk=3, class_names=names)
for name, prob in zip(prediction.names, prediction.probs):
    print(f"{prob:.3f}  {name}")

explanation = stabn.explain(model, video, class_names=names)
print("frame of peak temporal attention:", int(explanation.temporal.argmax()))
out = Path("examples_output")
out.mkdir(exist_ok=True)
explanation.image.save(out / "attention.png")
print("attention image:", out / "attention.png")
