"""Reports: PDF, JSON or CSV documents of an organisation's compliance, activity, policy changes and
audit integrity over a time window, built in the background by an arq job."""
