"""Background jobs seen from the user's side: live status updates of their exports and reports."""
