"""Weight importers: every format against an independent reference."""
