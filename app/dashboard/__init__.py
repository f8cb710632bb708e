"""The web dashboard: static pages at /ui that call the JSON API from the browser."""
