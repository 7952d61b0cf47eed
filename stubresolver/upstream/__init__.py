"""Upstream transports (DESIGN.md, "Upstreams").

One small interface (`Upstream`: ``exchange(query, state) -> response`` and ``close()``) and
one factory (`stubresolver.upstream.factory.make_upstream`, a single switch on the URL
scheme). This package deliberately imports nothing but the interface, so that a transport
module may import from the package without an import cycle through the factory.
"""

from stubresolver.upstream.base import Upstream

__all__ = ["Upstream"]
