"""Upstream transports (DESIGN.md, "Upstreams").

One small interface, in `base`: `Upstream`, the callback form the resolver drives, and
`Exchanger`, the awaitable form transports write. One factory
(`stubresolver.upstream.factory.make_upstream`, a single switch on the URL scheme). This
package deliberately imports nothing but the interface, so that a transport module may
import from the package without an import cycle through the factory.
"""

from stubresolver.upstream.base import Upstream

__all__ = ["Upstream"]
