"""Install zsm-tf: `pip install -e .` (add `[convert]` to read the authors' `.pth` checkpoint)."""
import shutil
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py


class BuildPyWithOpSources(build_py):
    """Copies custom_ops/ into the package (zsm_tf/custom_ops_src) for non-editable installs, so
    the deformable op can still be compiled on first use."""

    def run(self):
        super().run()
        src = Path(__file__).parent / "custom_ops"
        dst = Path(self.build_lib) / "zsm_tf" / "custom_ops_src"
        if src.is_dir():
            dst.mkdir(parents=True, exist_ok=True)
            for f in src.iterdir():
                if f.is_file():
                    shutil.copy2(f, dst / f.name)


setup(
    name="zsm-tf",
    version="0.1.0",
    description="Zooming Slow-Mo (CVPR 2020) space-time video super-resolution in TensorFlow / Keras 3",
    packages=find_packages(include=["zsm_tf", "zsm_tf.*"]),
    package_data={"zsm_tf": ["weights/*.h5", "weights/*.json"]},
    cmdclass={"build_py": BuildPyWithOpSources},
    include_package_data=True,
    python_requires=">=3.10",
    install_requires=[
        "tensorflow>=2.21,<2.22",
        "keras>=3.10",
        "numpy",
        "h5py",
        "av",
        "pillow",
        "tqdm",
        "pyyaml",
        "tensorflow-serving-api>=2.21,<2.22",  # warmup-file protos of the export
    ],
    extras_require={
        "convert": ["torch"],
        "gpu": ["tensorflow[and-cuda]>=2.21,<2.22"],
        "test": ["pytest"],
    },
    entry_points={"console_scripts": ["zsm-tf=zsm_tf.cli:main"]},
)
