"""Registry access over the OCI distribution API: `client` (Registry), `auth` (credentials, tokens), `transport`."""
