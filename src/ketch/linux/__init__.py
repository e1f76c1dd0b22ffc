"""The kernel seam: the only package that calls libc through ctypes."""
