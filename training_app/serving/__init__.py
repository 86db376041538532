"""Serving a channel's live version: a separate model-server process (`manage.py
serve_models`) loads base + adapter with torch; the web process only talks HTTP to it
(`client`), so it never imports torch."""
