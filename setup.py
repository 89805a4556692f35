"""Build hook only (the project is declared in pyproject.toml).

Non-editable installs (wheels) get a copy of custom_ops/ as ``zsm_tf/custom_ops_src``, so the
deformable op can still be compiled on first use; an editable install reads custom_ops/ in place.
"""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPyWithOpSources(build_py):
    """``build_py`` that also copies custom_ops/* into ``zsm_tf/custom_ops_src``."""

    def run(self):
        super().run()
        src = Path(__file__).parent / "custom_ops"
        dst = Path(self.build_lib) / "zsm_tf" / "custom_ops_src"
        if src.is_dir():
            dst.mkdir(parents=True, exist_ok=True)
            for f in src.iterdir():
                if f.is_file():
                    shutil.copy2(f, dst / f.name)


setup(cmdclass={"build_py": BuildPyWithOpSources})
