"""Report files of an evaluation: terminal table data, PNG plots, one auditable HTML page."""
