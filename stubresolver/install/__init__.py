"""`stubresolver install` / `uninstall` (issue 9): the service in one command.

layout.py names the paths, shipped.py renders the files from the package data, probe.py
reads what is there, plan.py turns that into steps (pure: tested as data), steps.py runs a
step, manifest.py records what install created, session.py sequences one run."""
