"""Pure data types of the OCI specifications."""
