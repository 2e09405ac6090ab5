"""Maps the top-level modules/ and grammar/ folders into the routescript namespace.

Everything else about the distribution is declared in pyproject.toml.
"""

from setuptools import find_packages, setup

packages = find_packages(include=["routescript", "routescript.*"])
packages += ["routescript.modules"] + [f"routescript.modules.{p}" for p in find_packages("modules")]
packages += ["routescript.grammar"]

setup(
    packages=packages,
    package_dir={"routescript.modules": "modules", "routescript.grammar": "grammar"},
)
