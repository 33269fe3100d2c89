"""REST API v1 tests (a package, so that module names such as test_policies do not collide with other folders')."""
