"""Front ends: argument parsing and output formatting only."""
