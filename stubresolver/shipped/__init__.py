"""Files `stubresolver install` puts on the system, shipped inside the package so a wheel
alone can install the service. Each entry here is a symlink into packaging/ (or to
config.example.yaml): those stay the one source of truth, and building a wheel or an sdist
copies their bytes in (tests/netns/test_install.py compares the wheel's copies with them).
Read them with importlib.resources, never by path (a zipped install has none)."""
