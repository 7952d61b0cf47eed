"""`stubresolver demo`: a throwaway netns world (real WireGuard tunnel, a logging ISP
resolver, the VPN's DNS) that shows the stub keeping its promise; the end-to-end tests build
the same world from here."""
