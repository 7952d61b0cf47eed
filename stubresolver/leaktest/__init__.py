"""`stubresolver leaktest`: does any DNS leave this host outside the tunnel? System checks
(systemcheck.py), probes (probes.py) sent while every other interface is sniffed
(sniff.py, frames.py), the guard, and a verdict (report.py); run.py drives them."""
