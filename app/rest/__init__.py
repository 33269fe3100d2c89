"""REST plumbing shared by the domains' routes: JSON and `{"error", "status", "code"}` responses, the authorised
caller, and downloads of stored files. It sits below the domains (they import it) and above the runtime."""
