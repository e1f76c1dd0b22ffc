"""ketch: a container engine and runc-compatible OCI runtime written in Python."""

__version__ = "0.1.0"
