"""The site manager (data services manager) of one site: event-sourced sites, protection groups and
operations on tapstream.events, a Postgres projection, the REST API, and the recovery operations."""
