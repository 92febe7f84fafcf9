"""pytest + testinfra checks that `buildtool test` runs against a built image pair."""
