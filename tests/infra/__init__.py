"""Tests of the stand-in (devsupport/standin), the registry helpers and scripts/."""
