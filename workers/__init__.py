"""arq workers: job functions are thin and call the domains' services."""
