"""The OCI runtime library: create, start, signal and delete containers from a bundle."""
