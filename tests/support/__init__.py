"""Test and development infrastructure: local base images, a real conda channel, the registry."""
