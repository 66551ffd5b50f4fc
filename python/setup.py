"""Builds the nanochat package with CMake: the pybind11 module over the C++ library, plus the
default model and the model registry in the package's own share/nanochat/.

    python -m venv --system-site-packages .venv
    .venv/bin/pip install ./python --no-build-isolation --no-index

The library is built in <repo>/build/python-pip (Release) unless NANOCHAT_BUILD_DIR names a
configured build folder to reuse (absolute, or relative to the repository; only the module target
is built there).
"""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def version():
    text = (REPO / "CMakeLists.txt").read_text()
    m = re.search(r"project\(\s*nanochat\s+VERSION\s+([0-9.]+)", text)
    if not m:
        raise RuntimeError("setup.py: cannot find the version in CMakeLists.txt")
    return m.group(1)


class CMakeBuild(build_ext):
    def build_extension(self, ext):
        build_dir = os.environ.get("NANOCHAT_BUILD_DIR")
        if build_dir:
            build = Path(build_dir)
            if not build.is_absolute():  # pip runs this from python/: relative to the repository
                build = REPO / build
            if not (build / "CMakeCache.txt").is_file():
                raise RuntimeError(f"NANOCHAT_BUILD_DIR={build_dir}: not a configured CMake build")
        else:
            build = REPO / "build" / "python-pip"
            subprocess.run(["cmake", "-S", str(REPO), "-B", str(build), "-G", "Ninja",
                            "-DCMAKE_BUILD_TYPE=Release", "-DNANOCHAT_BUILD_TESTS=OFF",
                            "-DNANOCHAT_BUILD_BENCH=OFF", f"-DPython_EXECUTABLE={sys.executable}"],
                           check=True)
        jobs = str(os.cpu_count() or 2)
        subprocess.run(["cmake", "--build", str(build), "--target", "_nanochat", "-j", jobs],
                       check=True)
        built = list((build / "python" / "nanochat").glob("_nanochat*.so"))
        if len(built) != 1:
            raise RuntimeError(f"setup.py: expected one _nanochat*.so in {build}/python/nanochat")
        target = Path(self.get_ext_fullpath(ext.name))
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(built[0], target)
        # The default model and the registry, where nanochat/__init__.py looks first.
        models = target.parent / "share" / "nanochat" / "models"
        models.mkdir(parents=True, exist_ok=True)
        for name in ("nanochat-rust.gguf", "registry.toml", "README.md"):
            if (REPO / "models" / name).is_file():
                shutil.copy2(REPO / "models" / name, models / name)


setup(
    version=version(),
    packages=["nanochat"],
    package_dir={"nanochat": "nanochat"},
    package_data={"nanochat": ["py.typed", "__init__.pyi"]},
    ext_modules=[Extension("nanochat._nanochat", sources=[])],
    cmdclass={"build_ext": CMakeBuild},
    zip_safe=False,
)
