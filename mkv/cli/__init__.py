"""Command-line entry points: ``mkv`` (the server) and ``mkvctl`` (admin and data)."""
