"""minidiff: a small, exact diffusion engine in NumPy with autograd gradients."""
from setuptools import find_packages, setup

setup(
    name="minidiff",
    version="0.1.0",
    description="A small, exact, educational diffusion engine in NumPy with autograd gradients",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=find_packages(include=["minidiff", "minidiff.*"]),
    package_data={"minidiff": ["datasets/digits.npz"], "minidiff.lab.study": ["template.md"]},
    install_requires=["numpy>=1.22", "autograd>=1.6", "matplotlib>=3.5", "click>=8.0"],
    extras_require={
        "test": ["pytest>=7", "hypothesis>=6", "dask[distributed]>=2023"],
        "gpu": ["cupy>=12"],
        "cluster": ["dask[distributed]>=2023"],
    },
    entry_points={"console_scripts": ["minidiff=minidiff.cli:main"]},
)
