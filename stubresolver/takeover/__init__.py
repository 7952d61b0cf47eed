"""Taking over the system's DNS (issue 9): each backend is an apply/restore pair rendered as
data (plan.py), executed by one thin runner (runner.py), recorded in a journal first
(journal.py). session.py is the one place that sequences them; app.py starts and stops it."""
