"""URL prefixes of the API, in one place."""

API_PREFIX = "/api/v1/ai"
