"""Pure unit tests: no Docker, no network, no stand-in."""
