"""Google Workspace: Calendar API v3 events for ERP schedules, service-account auth with domain-wide delegation."""
