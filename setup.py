"""Packaging for scratchformers: every field comes from settings.ini (nbdev 2's
config)."""

from configparser import ConfigParser

from setuptools import find_packages, setup

cfg = ConfigParser(delimiters=["="])
cfg.read("settings.ini", encoding="utf-8")
cfg = cfg["DEFAULT"]

# the trove statuses by their number: settings.ini's `status = 3` is "3 -
# Alpha", as in nbdev's template
STATUSES = {
    int(s[0]): s
    for s in [
        "1 - Planning",
        "2 - Pre-Alpha",
        "3 - Alpha",
        "4 - Beta",
        "5 - Production/Stable",
        "6 - Mature",
        "7 - Inactive",
    ]
}
# the package index shows README.md down to this marker: what the library is,
# how to install and use it (the contributors' part below it, the make commands,
# is for a checkout)
README_END = "<!-- end of the package description -->"


def long_description() -> str:
    text = open("README.md", encoding="utf-8").read()
    return text.split(README_END)[0].rstrip() + "\n"


requirements = cfg["requirements"].split()
train = cfg["train_requirements"].split()

setup(
    name=cfg["lib_name"],
    version=cfg["version"],
    description=cfg["description"],
    long_description=long_description(),
    long_description_content_type="text/markdown",
    author=cfg["author"],
    author_email=cfg["author_email"],
    url=cfg["git_url"],
    license={"apache2": "Apache-2.0"}[cfg["license"]],
    license_files=["LICENSE"],
    keywords=cfg["keywords"].split(),
    classifiers=[
        f"Development Status :: {STATUSES[int(cfg['status'])]}",
        f"Intended Audience :: {cfg['audience'].title()}",
        "Natural Language :: English",
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
    packages=find_packages(include=[cfg["lib_path"], cfg["lib_path"] + ".*"]),
    include_package_data=True,
    python_requires=">=" + cfg["min_python"],
    install_requires=requirements,
    extras_require={
        "train": train,
        "dev": train + cfg["dev_requirements"].split(),
    },
    entry_points={
        "console_scripts": cfg["console_scripts"].split(),
        "nbdev": [f"{cfg['lib_path']}={cfg['lib_path']}._modidx:d"],
    },
    zip_safe=False,
)
