"""ketch: the Docker-style front end (the engine's verbs arrive with the engine issue)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["--version"], ["version"], ["-v"]):
        from ketch import __version__

        print(f"ketch version {__version__}")
        return 0
    if not argv or argv[0] in ("-h", "--help", "help"):
        print("usage: ketch COMMAND\n\nThe engine's commands (run, ps, images...) are not built yet;")
        print("the OCI runtime is available as ketch-oci.")
        return 0
    sys.stderr.write(f"ketch: unknown command {argv[0]!r}; see 'ketch --help'\n")
    return 125


if __name__ == "__main__":
    sys.exit(main())
