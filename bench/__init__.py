"""Benchmarks of the gateway against the sandbox upstreams (`make bench`).

Nothing here is imported by the service; it only starts it as a subprocess and measures it
from the outside, the way a caller would see it.
"""
