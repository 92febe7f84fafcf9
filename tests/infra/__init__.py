"""Tests of the stand-in (buildtool/standin), the registry helpers and scripts/."""
