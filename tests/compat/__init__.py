"""Tests of the compat package: static sources, live clusters, the gate and the guard."""
