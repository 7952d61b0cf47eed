"""The leak guard: an nftables table of our own that stops every other program's DNS from
leaving outside the tunnel (ruleset.py renders it, nftables.py applies it)."""
