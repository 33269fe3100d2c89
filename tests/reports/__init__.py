"""Report tests (a package, so that its helper module has a unique name: `reports.helpers`)."""
