"""Support shared by the tests and the bench: ports, a throwaway PKI, unbound configs and
processes, dnsperf output, the bench zone. Not part of the wheel (pyproject's setuptools
``include`` is ``stubresolver*``); tests and bench import it from the repository root."""
