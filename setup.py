"""viewbox: build and install. `pip install .` compiles the C core (csrc/) with cffi."""
from setuptools import setup

setup(
    name="viewbox",
    version="0.1.0",
    description="A system-call sandbox: every process its own view of the world",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.11",
    packages=["viewbox", "viewbox.policy", "viewbox.views", "viewbox.policies"],
    # The shipped policies live in policies/ at the top of the tree and are
    # installed as the package viewbox.policies.
    package_dir={"viewbox.policies": "policies"},
    package_data={"viewbox": ["py.typed"], "viewbox.policies": ["*.toml"]},
    include_package_data=False,
    setup_requires=["cffi>=1.15"],
    cffi_modules=["viewbox/_build.py:ffibuilder"],
    # pyroute2: netlink (links, addresses, routes, nftables) for [net] mode "private";
    # dnspython: the sandbox's resolver for [net].allow's names (DNS messages, upstream queries)
    install_requires=["cffi>=1.15", "pyroute2>=0.9", "dnspython>=2.4"],
    extras_require={"test": ["pytest>=7", "mypy>=1.5"]},
    entry_points={"console_scripts": ["viewbox = viewbox.cli:console_main"]},
    classifiers=[
        "Operating System :: POSIX :: Linux",
        "Programming Language :: Python :: 3",
        "Programming Language :: C",
        "Topic :: Security",
    ],
)
