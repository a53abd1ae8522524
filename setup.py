"""Ships the repository's top-level ``data/`` folder inside the wheel as ``flowsteer/_data``.

Everything else is declared in pyproject.toml, which cannot map a folder from outside the package while also
finding the packages itself. `flowsteer.resources.data_dir` reads ``flowsteer/_data`` in an installed wheel and
``data/`` itself in a checkout (editable installs included).
"""

from setuptools import find_namespace_packages, find_packages, setup

DATA = ["flowsteer._data", *(f"flowsteer._data.{name}" for name in find_namespace_packages(where="data"))]

setup(
    packages=[*find_packages(include=["flowsteer", "flowsteer.*"]), *DATA],
    package_dir={"flowsteer._data": "data"},
    package_data={"flowsteer": ["py.typed"], **{package: ["*"] for package in DATA}},
)
