"""Install zsm-tf: `pip install -e .` (add `[convert]` to read the authors' `.pth` checkpoint)."""
from setuptools import find_packages, setup

setup(
    name="zsm-tf",
    version="0.1.0",
    description="Zooming Slow-Mo (CVPR 2020) space-time video super-resolution in TensorFlow / Keras 3",
    packages=find_packages(include=["zsm_tf", "zsm_tf.*"]),
    package_data={"zsm_tf": ["weights/*.h5", "weights/*.json", "custom_ops_src/*"]},
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
    ],
    extras_require={
        "convert": ["torch"],
        "serving": ["tensorflow-serving-api"],
        "test": ["pytest"],
    },
    entry_points={"console_scripts": ["zsm-tf=zsm_tf.cli:main"]},
)
